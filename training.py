"""Training and testing of one split with Chainer's Trainer (SPEC 4, 6).

What is special to this project lives in :class:`MixingUpdater` (pairing, phase shift, gains,
mixing at a random point, KL loss) and :class:`TenCropEvaluator` (10-crop test); the rest is
Chainer's own ``training`` machinery: ``Trainer``, ``LogReport``, ``PlotReport``, ``snapshot``,
``ProgressBar`` and ``observe_lr``.

Files written in the split's folder (``--save``/split{k}):

- ``snapshot.npz`` — the trainer's state (model, optimizer, iterator) after the last finished
  epoch; ``--resume`` continues from it.
- ``log.jsonl`` — one JSON object per epoch (LR, train loss, train error, test error, seconds).
- ``error.png``, ``loss.png``, ``lr.png`` — learning curves (Chainer's PlotReport).
- ``model.npz`` — the final weights (written when training ends).
- ``result.json`` — final error, best error (labelled: chosen on the test fold), epochs, seconds.
"""
import json
import math
import os
import sys
import time

import numpy as np

import compat  # noqa: F401
import chainer
import chainer.functions as F
from chainer import training
from chainer.training import extensions

import dataset
import intermix
import models
import utils

try:  # PlotReport needs a non-interactive backend on machines without a display.
    import matplotlib
    matplotlib.use('Agg')
except ImportError:  # pragma: no cover - matplotlib is in requirements.txt
    pass


# Learning curves per split: (log keys, file, y label, legend names).
PLOTS = [
    (['main/error', 'validation/main/error'], 'error.png', 'error (%)',
     ['train (mixed targets when mixing)', 'test (10-crop)']),
    (['main/loss'], 'loss.png', 'training loss', ['train (KL divergence when mixing)']),
    (['lr'], 'lr.png', 'learning rate', ['learning rate']),
]


def _label_plot(ylabel, legend, log=False):
    """A PlotReport postprocess that names the axes and curves (and uses a log scale for LR)."""
    def postprocess(figure, axes, summary):
        axes.set_xlabel('epoch')
        axes.set_ylabel(ylabel)
        if log:  # the LR is constant within an epoch: draw steps
            axes.set_yscale('log')
            for line in axes.get_lines():
                line.set_drawstyle('steps-mid')
        for line, name in zip(axes.get_lines(), legend):
            line.set_label(name)
        axes.legend(loc='best', fontsize=8)
        figure.tight_layout()
    return postprocess


class NonFiniteLossError(Exception):
    """The training loss became NaN or infinite; the weights were not updated with it."""

    def __init__(self, epoch, iteration, value):
        super().__init__(f'loss is {value} at epoch {epoch}, iteration {iteration}')
        self.epoch = epoch
        self.iteration = iteration
        self.value = value


def learning_rate(opt, epoch):
    """LR of ``epoch`` (1-based) for the reference schedule (SPEC 6).

    ``LR * 0.1**k`` where k counts the fractions f in ``opt.schedule`` with
    ``epoch > f * nEpochs``; during the first ``opt.warmup`` epochs ``LR / 10``.
    """
    decay = sum(epoch > f * opt.nEpochs for f in opt.schedule)
    if epoch <= opt.warmup:
        decay = 1
    return opt.LR * 0.1 ** decay


class LRSchedule(training.Extension):
    """Sets the optimizer's LR at the start of every epoch (and after ``--resume``)."""

    trigger = (1, 'epoch')
    priority = 10  # after the evaluator and the log: they belong to the epoch that just ended

    def __init__(self, opt):
        self.opt = opt

    def _set(self, trainer):
        trainer.updater.get_optimizer('main').lr = learning_rate(self.opt, trainer.updater.epoch + 1)

    def initialize(self, trainer):
        self._set(trainer)

    def __call__(self, trainer):
        self._set(trainer)


class MixingUpdater(training.updaters.StandardUpdater):
    """One optimisation step of standard, BC, SpeechMix or InterMix learning (SPEC 4).

    Standard: a batch of clips, softmax cross-entropy. Mixing: a batch of B pairs (x_i, x_j)
    becomes 2B clips ``[x_i; x_j]``; row k is mixed with row ``partner[k]`` (k +- B) with its own
    ``r ~ U(0, 1)``. InterMix shifts every clip's phase by ``phi ~ U(-pi/2, pi/2)`` first. The
    sound mixing ratio uses the maximum A-weighted gain of each (shifted) input clip, or of the
    hidden tensor with ``gain_source='hidden'``. One mixing point per batch is drawn uniformly from
    ``eligible``; the loss is the KL divergence to ``r y_i + (1 - r) y_j``.

    Reports ``main/loss`` and ``main/error`` (%, argmax of the logits against the argmax of the
    target).
    """

    def __init__(self, iterator, optimizer, opt, device, seed=None):
        super().__init__(iterator, optimizer, device=device)
        self.opt = opt
        self.rng = np.random.default_rng(seed)

    def update_core(self):
        optimizer = self.get_optimizer('main')
        model = optimizer.target
        batch = self.get_iterator('main').next()
        xp = self.device.xp
        if not self.opt.mixing:
            x, y = self.converter(batch, self.device)
            logits = model(x[:, None, None, :])
            loss = F.softmax_cross_entropy(logits, y)
            label = y
        else:
            logits, loss, label = self._mixed_forward(model, batch, xp)
        value = float(loss.array)
        if not math.isfinite(value):
            raise NonFiniteLossError(self.epoch + 1, self.iteration + 1, value)
        error = 100.0 * float((logits.array.argmax(axis=1) != label).mean())
        chainer.report({'loss': loss, 'error': error}, model)
        model.cleargrads()
        loss.backward()
        optimizer.update()

    def _mixed_forward(self, model, batch, xp):
        opt = self.opt
        x_i, x_j, y_i, y_j = self.converter(batch, self.device)
        x = xp.concatenate([x_i, x_j])
        y = xp.concatenate([y_i, y_j])
        n = len(x)
        half = n // 2
        partner = xp.asarray(np.concatenate([np.arange(half, n), np.arange(half)]).astype(np.int32))
        r = xp.asarray(self.rng.uniform(0.0, 1.0, n))
        phase = None
        if opt.combination == 'interference':
            phase = xp.asarray(self.rng.uniform(-np.pi / 2, np.pi / 2, n))
            x = intermix.phase_shift(x, phase)
        point = int(self.rng.choice(opt.eligible))
        gains = None  # None: the Mixer reads gains off the hidden tensor (--gainSource hidden)
        if opt.ratio == 'sound' and (opt.gainSource == 'input' or point == 0):
            gains = intermix.compute_gain(x, opt.fs).max(axis=-1)
        mixer = intermix.Mixer(point, partner, r, combination=opt.combination, ratio=opt.ratio,
                               gains=gains, phase=phase)
        logits = model(x[:, None, None, :], mixer)
        eye = xp.eye(opt.nClasses, dtype=np.float32)
        target = intermix.mix_targets(eye[y], eye[y[partner]], r)
        loss = intermix.kl_divergence(logits, target)
        return logits, loss, target.argmax(axis=1)


class TenCropEvaluator(extensions.Evaluator):
    """10-crop test (SPEC 3): softmax averaged over each clip's crops; reports the error in %.

    Reports ``validation/main/error`` = 100 * (wrong clips / clips), exact over the whole test
    fold, computed in test mode (BN statistics, no dropout) without backprop.
    """

    def evaluate(self):
        iterator = self.get_iterator('main')
        model = self.get_target('main')
        return {'validation/main/error': ten_crop_error(model, iterator, self.converter,
                                                        self.device)}


def ten_crop_error(model, iterator, converter, device):
    """Error (%) of ``model`` over an iterator of ``(crops (nCrops, T), label)`` examples."""
    if hasattr(iterator, 'reset'):
        iterator.reset()
    wrong = total = 0
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for batch in iterator:
            x, y = converter(batch, device)
            b, n_crops, length = x.shape
            wrong += _wrong_clips(model, x.reshape(b * n_crops, 1, 1, length), y, n_crops)
            total += b
    return 100.0 * wrong / total


def fgsm_sign(model, x, y):
    """``sign(grad_x L(theta, x, y))`` for FGSM (Goodfellow et al. 2015; the paper's Table 3).

    L is the softmax cross-entropy of each input with its true label, summed (the sign is the
    same as for the mean, and the sum keeps small gradients away from float underflow), computed
    with the model in test mode (BN statistics, no dropout).

    Args:
        model: a network taking (M, 1, 1, T) inputs.
        x: array (M, 1, 1, T) of normalised crops, on the model's device.
        y: int32 array (M,) of true labels.

    Returns:
        Array shaped like ``x`` with values in {-1, 0, 1}.
    """
    x_var = chainer.Variable(x)
    with chainer.using_config('train', False), chainer.force_backprop_mode():
        loss = F.sum(F.softmax_cross_entropy(model(x_var), y, reduce='no'))
    model.cleargrads()
    loss.backward()
    model.cleargrads()
    xp = chainer.backend.get_array_module(x)
    return xp.sign(x_var.grad)


def fgsm_errors(model, iterator, converter, device, epsilons):
    """10-crop error (%) on clean and FGSM-perturbed test crops, for each epsilon.

    ``x_adv = x + epsilon * sign(grad_x L(theta, x, y))`` on every normalised test crop (SPEC 3),
    one gradient per crop; the perturbed crops are then classified as in the clean test (softmax
    averaged over a clip's crops). With epsilon = 0 the error equals the clean error exactly.

    Args:
        model, iterator, converter, device: as for :func:`ten_crop_error`.
        epsilons: iterable of floats (units of the normalised waveform, full scale 1).

    Returns:
        dict: ``{'clean': error, 'eps=<epsilon>': error, ...}`` in %.
    """
    epsilons = [float(e) for e in epsilons]
    if hasattr(iterator, 'reset'):
        iterator.reset()
    wrong = {e: 0 for e in epsilons}
    wrong_clean = total = 0
    for batch in iterator:
        x, y = converter(batch, device)
        b, n_crops, length = x.shape
        crops = x.reshape(b * n_crops, 1, 1, length)
        labels = device.xp.repeat(y, n_crops)
        sign = fgsm_sign(model, crops, labels)
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            wrong_clean += _wrong_clips(model, crops, y, n_crops)
            for e in epsilons:
                wrong[e] += _wrong_clips(model, (crops + e * sign).astype(crops.dtype), y, n_crops)
        total += b
    result = {'clean': 100.0 * wrong_clean / total}
    result.update({f'eps={e:g}': 100.0 * wrong[e] / total for e in epsilons})
    return result


def _wrong_clips(model, crops, y, n_crops):
    """Number of clips misclassified by the softmax averaged over their crops."""
    prob = F.softmax(model(crops)).array.reshape(len(y), n_crops, -1).mean(axis=1)
    return int((prob.argmax(axis=1) != y).sum())


class JsonLinesLog(training.Extension):
    """Rewrites ``log.jsonl`` (one JSON object per epoch) from LogReport's log, atomically.

    Rewriting the whole file keeps it consistent with the snapshot after ``--resume``.
    """

    trigger = (1, 'epoch')
    priority = 50

    def __init__(self, log_report, path):
        self.log_report = log_report
        self.path = path

    def __call__(self, trainer):
        lines = ''.join(json.dumps(entry, sort_keys=True) + '\n' for entry in self.log_report.log)

        def write(tmp):
            with open(tmp, 'w') as f:
                f.write(lines)
        utils.atomic_write(self.path, write)


class EpochLine(training.Extension):
    """Prints one line per epoch: LR, train loss, train error, test error, time and ETA."""

    trigger = (1, 'epoch')
    priority = 50

    def __init__(self, log_report, n_epochs, out=None):
        self.log_report = log_report
        self.n_epochs = n_epochs
        self.out = out

    def __call__(self, trainer):
        entry = self.log_report.log[-1]
        epoch = entry['epoch']
        elapsed = entry['elapsed_time']
        eta = elapsed / epoch * (self.n_epochs - epoch) if epoch else 0.0
        test = entry.get('validation/main/error')
        test = f'{test:6.2f}%' if test is not None else '    - '
        out = self.out or sys.stdout  # looked up now: stdout may have been redirected since
        out.write(
            f'epoch {epoch:>{len(str(self.n_epochs))}}/{self.n_epochs} | lr {entry.get("lr", 0):.2g}'
            f' | train loss {entry.get("main/loss", float("nan")):.4f}'
            f' | train error {entry.get("main/error", float("nan")):6.2f}%'
            f' | test error {test} | {format_seconds(elapsed)} | ETA {format_seconds(eta)}\n')
        out.flush()


def format_seconds(seconds):
    """'h:mm:ss' for a duration in seconds."""
    seconds = int(round(seconds))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def save_npz_uncompressed(path, target):
    """``chainer.serializers.save_npz`` without zip compression.

    Float weights barely compress, and compressing EnvNet-v2's ~0.8 GB snapshot (weights plus
    momentum) costs tens of seconds per epoch.
    """
    chainer.serializers.save_npz(path, target, compression=False)


def build_model(opt, device):
    """A new network of ``opt.netType`` for ``opt.nClasses`` classes, on ``device``."""
    model = models.archs[opt.netType](opt.nClasses)
    model.to_device(device)
    return model


def test_iterator(opt, test_sounds, test_labels):
    """The deterministic 10-crop test iterator (no shuffle, no repeat)."""
    pre = dataset.Preprocessor(opt.inputLength, n_crops=opt.nCrops)
    test_set = dataset.TestDataset(test_sounds, test_labels, pre)
    return chainer.iterators.SerialIterator(test_set, opt.testBatchSize, repeat=False, shuffle=False)


def train_split(opt, split, split_dir, train_data, test_data, device, seed, resume=False):
    """Train one model on ``train_data`` and test it on ``test_data``; write the split's files.

    Returns the dict written to ``result.json``. Raises :class:`NonFiniteLossError` if the loss
    stops being finite (the last snapshot is kept).
    """
    (train_sounds, train_labels), (test_sounds, test_labels) = train_data, test_data
    chainer.config.train = True
    np.random.seed(seed % 2 ** 32)
    if device.xp is not np:
        device.xp.random.seed(seed % 2 ** 32)
    model = build_model(opt, device)
    optimizer = chainer.optimizers.NesterovAG(lr=opt.LR, momentum=opt.momentum)
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(opt.weightDecay))

    pre = dataset.Preprocessor(opt.inputLength, strong_augment=opt.strongAugment)
    if opt.mixing:
        train_set = dataset.PairDataset(train_sounds, train_labels, pre, seed=seed + 1)
    else:
        train_set = dataset.TrainDataset(train_sounds, train_labels, pre, seed=seed + 1)
    order = chainer.iterators.ShuffleOrderSampler(np.random.RandomState(seed % 2 ** 32))
    if opt.nWorkers > 0:  # preprocessing in worker processes, overlapping the training step
        train_iter = chainer.iterators.MultiprocessIterator(
            train_set, opt.batchSize, order_sampler=order, n_processes=opt.nWorkers,
            n_prefetch=2)
    else:
        train_iter = chainer.iterators.SerialIterator(train_set, opt.batchSize,
                                                      order_sampler=order)
    test_iter = test_iterator(opt, test_sounds, test_labels)

    updater = MixingUpdater(train_iter, optimizer, opt, device, seed=seed + 2)
    trainer = training.Trainer(updater, (opt.nEpochs, 'epoch'), out=split_dir)

    def test_now(tr):
        epoch = tr.updater.epoch
        return tr.updater.is_new_epoch and (epoch % opt.testEvery == 0 or epoch >= opt.nEpochs)

    trainer.extend(TenCropEvaluator(test_iter, model, device=device), trigger=test_now)
    trainer.extend(extensions.observe_lr(), trigger=(1, 'iteration'))
    log_report = extensions.LogReport(trigger=(1, 'epoch'), log_name=None)  # log.jsonl instead
    trainer.extend(log_report)
    trainer.extend(JsonLinesLog(log_report, os.path.join(split_dir, 'log.jsonl')))
    trainer.extend(EpochLine(log_report, opt.nEpochs))
    trainer.extend(LRSchedule(opt))
    if extensions.PlotReport.available():
        for keys, name, ylabel, legend in PLOTS:
            trainer.extend(extensions.PlotReport(
                keys, 'epoch', filename=name, marker=None,
                postprocess=_label_plot(ylabel, legend, log=name == 'lr.png')))
    trainer.extend(extensions.snapshot(filename='snapshot.npz', savefun=save_npz_uncompressed),
                   trigger=(1, 'epoch'))
    if sys.stdout.isatty():
        trainer.extend(extensions.ProgressBar(update_interval=1))

    snapshot = os.path.join(split_dir, 'snapshot.npz')
    if resume and os.path.isfile(snapshot):
        chainer.serializers.load_npz(snapshot, trainer)
        print(f'resumed from {snapshot} at epoch {updater.epoch} of {opt.nEpochs}', flush=True)

    start = time.time()
    try:
        trainer.run()
    finally:
        if hasattr(train_iter, 'finalize'):
            train_iter.finalize()
    seconds = time.time() - start

    log = log_report.log
    tested = [e for e in log if 'validation/main/error' in e]
    final = tested[-1]
    best = min(tested, key=lambda e: e['validation/main/error'])
    utils.atomic_write(os.path.join(split_dir, 'model.npz'),
                       lambda tmp: save_npz_uncompressed(tmp, model), suffix='.npz')
    result = {
        'dataset': opt.dataset, 'netType': opt.netType, 'learning': opt.learning, 'split': split,
        'final_error': final['validation/main/error'], 'final_epoch': final['epoch'],
        'best_error_on_test_fold': {
            'error': best['validation/main/error'], 'epoch': best['epoch'],
            'note': 'best epoch chosen on the test fold; optimistic, not the reported error'},
        'epochs': opt.nEpochs, 'seconds_this_run': round(seconds, 1),
        'seconds_total': round(log[-1]['elapsed_time'], 1) if log else None,
        'train_clips': len(train_sounds), 'test_clips': len(test_sounds), 'seed': seed,
        'settings': settings_of(opt),
    }
    utils.write_json(os.path.join(split_dir, 'result.json'), result)
    return result


def settings_of(opt):
    """The options that define a run, as a JSON-able dict (recorded in result.json)."""
    keys = ['dataset', 'netType', 'learning', 'mixing', 'eligible', 'combination', 'mixup_type',
            'gainSource', 'strongAugment', 'nEpochs', 'LR', 'schedule', 'warmup', 'batchSize',
            'weightDecay', 'momentum', 'nCrops', 'testEvery', 'testBatchSize', 'fs',
            'inputLength', 'nClasses']
    return {k: getattr(opt, k, None) for k in keys}
