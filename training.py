"""Training of one split with Chainer's Trainer (docs/method.md §4, 6): the updater and the wiring.

What is special to this project lives in :class:`MixingUpdater` (pairing, phase shift, gains,
mixing at a random point, KL loss); the rest is Chainer's own ``training`` machinery:
``Trainer``, ``LogReport``, ``PlotReport``, ``snapshot``, ``ProgressBar`` and ``observe_lr``,
with the 10-crop test of ``evaluation.py`` (:class:`evaluation.TenCropEvaluator`) as its
evaluator. The other rooms: ``checkpoint.py`` (the weight and snapshot files), ``runrecord.py``
(record.json), ``distributed.py`` (the ChainerMN plumbing).

Files written in the split's folder (``--save``/split{k}):

- ``snapshot.npz`` — the trainer's state (model, optimizer, iterator) at the end of an epoch:
  the first, then on the schedule of :class:`SnapshotSchedule` (``--snapshotEvery``), and the
  final one; ``--resume`` continues from it.
- ``record.json`` — the run record (:func:`runrecord.run_record`): resolved options, seed, the
  command that reruns it, parameter count, versions, device, git commit, the data file's size
  and SHA-256 and its class names; written when the split starts.
- ``log.jsonl`` — one JSON object per epoch (LR, train loss, train error, test error, seconds);
  ``log.csv`` the same as a table (:class:`CsvLog`).
- ``error.png``, ``loss.png``, ``lr.png`` — learning curves (Chainer's PlotReport, redrawn on
  test epochs: :class:`TestEpochPlotReport`).
- ``model.npz`` — the final weights (written when training ends).
- ``result.json`` — final test error, best test error (labelled: chosen on the test fold),
  per-class test error and confusion matrix of the final test, epochs, seconds (:data:`METRICS`).

Multi-process training (``comm``, a ChainerMN communicator; ``main.py --communicator``): the
training clips are scattered across the ranks (``chainermn.scatter_dataset``, shuffled once with
the split's seed), each rank draws its own crops and pairs from its shard with its own random
streams (:func:`distributed.rank_seed`), gradients are averaged by ChainerMN's multi-node
optimizer (rank 0's initial weights are broadcast explicitly before the first step), and the
10-crop test runs on a scattered test fold whose wrong-clip and clip counts are summed over the
ranks, so the error is exactly that of the whole fold. Only rank 0 writes files and prints the
epoch lines. Setup errors (:func:`distributed.all_ranks_ok`, :func:`distributed.on_root`) are
raised on every rank together as :class:`distributed.AllRanksError`; ``main.py`` ends the job
with ``MPI_Abort`` on any other failure of a rank.
"""
import csv
import io
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np

import compat  # noqa: F401
import chainer
from chainer import training
from chainer.training import extensions

import checkpoint
import dataset
import distributed
import evaluation
import learning
import models
import optimizer as fused_optimizer
import runrecord
import utils
from utils import UserError

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
        _atomic_savefig(figure)
    return postprocess


def _atomic_savefig(figure):
    """Make ``figure.savefig(path, ...)`` write a temporary file renamed over ``path``.

    Chainer's PlotReport saves straight into the plot's file, so a kill mid-save would leave a
    truncated PNG; with this (set from the postprocess, just before PlotReport saves) the file is
    either the previous plot or the new one (:func:`utils.atomic_write`).
    """
    save = figure.savefig

    def savefig(path, **kwargs):
        utils.atomic_write(path, lambda tmp: save(tmp, format='png', **kwargs), suffix='.png')
    figure.savefig = savefig


class TestEpochPlotReport(extensions.PlotReport):
    """Chainer's PlotReport, which records a point every epoch but redraws its PNG only when
    ``draw(trainer)`` holds (a test epoch, the final epoch included).

    Redrawing three figures every epoch cost about as much as a PiczakCNN training epoch's
    optimizer updates; the curves gain a test point only on test epochs, so drawing then loses
    nothing. The recorded points (and the snapshot's copy of them) are PlotReport's own.
    """

    def __init__(self, *args, draw, **kwargs):
        super().__init__(*args, **kwargs)
        self._draw = draw

    def __call__(self, trainer):
        if self._draw(trainer):
            return super().__call__(trainer)  # records this epoch's point and draws
        # PlotReport's recording, without the figure: average the epoch's observations.
        observation = trainer.observation
        self._summary.add({k: observation[k] for k in self._y_keys if k in observation})
        if self._trigger(trainer):
            stats = self._summary.compute_mean()
            x = trainer.updater.epoch if self._x_key == 'epoch' else trainer.updater.iteration
            for k in self._y_keys:
                if k in stats:
                    self._data[k].append((x, float(stats[k])))
            self._init_summary()

    def serialize(self, serializer):
        """PlotReport's points, and (unlike PlotReport) the observations of the epoch under way,
        so that a snapshot written mid-epoch (on a signal, :class:`StopOnSignal`) resumes the
        epoch's average exactly, as LogReport's own summary does."""
        super().serialize(serializer)
        try:
            self._summary.serialize(serializer['_summary'])
        except KeyError:  # a snapshot written before the summary was kept
            pass


class SnapshotSchedule:
    """When the trainer snapshot is written (a Chainer trigger): at the end of the final epoch,
    and either every ``every`` epochs or, with ``every=0``, on a schedule that keeps writing it
    under ``budget`` of the run's wall time.

    The automatic schedule writes after the first epoch this process trains (which also proves
    early that the snapshot fits on the disk), then whenever the time since the last write ended
    has reached ``(1 - budget) / budget`` times that write's duration (49x for 2 %): so the time
    spent writing (the first snapshot aside) is at most ``budget`` of the run, whatever the
    network, disk or machine. The
    duration runs from the trigger firing (Chainer calls an extension right after its trigger)
    to the end of :meth:`timed`'s save, so it includes serialising the trainer. A kill loses at
    most the work since the last snapshot; ``--resume`` from any snapshot repeats the
    uninterrupted run exactly, so which epochs are saved changes no result.
    """

    def __init__(self, every, n_epochs, budget=0.02, clock=time.perf_counter):
        if every < 0 or not 0 < budget < 1:
            raise ValueError(f'every must be >= 0 and budget in (0, 1), got {every}, {budget}')
        self.every, self.n_epochs, self.clock = every, n_epochs, clock
        self.ratio = (1 - budget) / budget
        self.fired = self.last_end = self.last_cost = None
        self.fired_iteration = None  # the iteration whose snapshot was last written

    def __call__(self, trainer):
        updater = trainer.updater
        if not updater.is_new_epoch:
            return False
        if updater.epoch >= self.n_epochs or (self.every and updater.epoch % self.every == 0):
            due = True
        elif self.every:
            due = False
        else:
            due = (self.last_cost is None or
                   self.clock() - self.last_end >= self.ratio * self.last_cost)
        if due:
            self.fire(updater.iteration)
        return due

    def fire(self, iteration):
        """Note that the snapshot of ``iteration`` is being written now (the trigger fired, or a
        stop on a signal writes it out of schedule): :meth:`timed` measures from here."""
        self.fired = self.clock()
        self.fired_iteration = iteration

    def timed(self, save):
        """``save`` (a snapshot savefun), recording when it ended and how long the snapshot took."""
        def savefun(path, target):
            save(path, target)
            self.last_end = self.clock()
            start = self.fired if self.fired is not None else self.last_end
            self.last_cost = self.last_end - start
        return savefun


class StoppedBySignal(Exception):
    """Training stopped on SIGTERM or SIGINT at a step boundary, its snapshot written
    (``signum``, ``epoch``, ``iteration``: where the snapshot is)."""

    def __init__(self, signum, epoch, iteration):
        super().__init__(f'{signal.Signals(signum).name} at epoch {epoch}, iteration {iteration}')
        self.signum, self.epoch, self.iteration = signum, epoch, iteration


class StopSignals:
    """SIGTERM and SIGINT handlers, installed for the duration of a ``with`` block (in the main
    thread only), that ask training to stop at the next step boundary instead of ending the
    process mid-step: ``received`` is then the signal's number. A second signal ends the
    process at once (KeyboardInterrupt: main.py exits 130; the last snapshot stays).

    Schedulers (``timeout``, ``docker stop``, SLURM, Kubernetes) send SIGTERM and wait some
    seconds before SIGKILL; a step and a snapshot take far less on the networks here, a 10-crop
    test that is running finishes first (seconds to tens of seconds on a CPU)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received = 0
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received:
            raise KeyboardInterrupt
        self.received = signum
        os.write(2, f'\n{signal.Signals(signum).name} received: stopping after this step with a '
                    f'snapshot (send it again to stop at once)\n'.encode())

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class StopOnSignal(training.Extension):
    """After every step, when :class:`StopSignals` received one (under MPI: on any rank, so that
    every rank stops at the same step): write the snapshot unless this step's was just written,
    then raise :class:`StoppedBySignal`. Runs after every other extension (the epoch's test,
    logs and scheduled snapshot come first)."""

    trigger = (1, 'iteration')
    priority = -1000

    def __init__(self, signals, snapshot, schedule, comm=None):
        self.signals, self.snapshot, self.schedule, self.comm = signals, snapshot, schedule, comm

    def __call__(self, trainer):
        received = self.signals.received
        if self.comm is not None:
            from mpi4py import MPI
            received = self.comm.mpi_comm.allreduce(received, op=MPI.MAX)
        if not received:
            return
        updater = trainer.updater
        if self.snapshot is not None and self.schedule.fired_iteration != updater.iteration:
            self.schedule.fire(updater.iteration)
            self.snapshot(trainer)
        raise StoppedBySignal(received, updater.epoch, updater.iteration)


def learning_rate(opt, epoch):
    """LR of ``epoch`` (1-based) for the reference schedule (docs/method.md §6).

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
        lr = learning_rate(self.opt, trainer.updater.epoch + 1)
        trainer.updater.get_optimizer('main').lr = lr

    def initialize(self, trainer):
        self._set(trainer)

    def __call__(self, trainer):
        self._set(trainer)


class MixingUpdater(training.updaters.StandardUpdater):
    """One optimisation step of a learning method (docs/method.md §4.11).

    The learning method (``learning.build``: standard, BC, SpeechMix, InterMix, ...) turns the
    converted batch into logits, loss and the labels the error is counted against; the updater
    seeds the step's random streams, checks the loss, reports, runs the backward pass and the
    optimizer, and checks the result. Reports ``main/loss`` and ``main/error`` (%, argmax of the
    logits against those labels).

    Random numbers: step t (``iteration`` t, 0-based) hands the method the Generator
    ``default_rng([seed, t, 0])`` (its draws of r, phases and the mixing point) and reseeds the
    global NumPy stream (and CuPy's on a GPU), which Chainer's dropout draws from, from
    ``(seed, t, 1)`` (:meth:`seed_step`). Every stream of a step is thus a function of the seed
    and the step number, which the snapshot holds, so a run resumed from any epoch's snapshot
    repeats the uninterrupted run exactly (on the CPU), and each MPI rank (its own ``seed``)
    keeps its own streams after a resume.

    After every update the parameters and the optimizer state must be finite; otherwise
    :class:`checkpoint.NonFiniteWeightsError` stops training (as a non-finite loss does, before
    its update).
    """

    def __init__(self, iterator, optimizer, method, device, seed=None, comm=None):
        super().__init__(iterator, optimizer, device=device)
        self.method = method
        self.seed = int(np.random.SeedSequence().entropy if seed is None else seed)
        self.rng = None  # the stream of the current step (seed_step)
        self.comm = comm

    def seed_step(self):
        """Set the random streams of the step about to run (``self.iteration``); returns and
        keeps in ``self.rng`` its ``numpy.random.Generator``."""
        words = np.random.SeedSequence([self.seed, self.iteration, 1]).generate_state(4)
        np.random.seed(words)
        xp = self.device.xp
        if xp is not np:
            xp.random.seed(int(words[0]))
        self.rng = np.random.default_rng([self.seed, self.iteration, 0])
        return self.rng

    def update_core(self):
        optimizer = self.get_optimizer('main')
        model = optimizer.target
        self.seed_step()
        epoch = self.epoch + 1  # the epoch this step belongs to (the iterator may pass its end)
        batch = self.get_iterator('main').next()
        logits, loss, label = self.method(model, self.converter(batch, self.device), self.rng)
        value = float(loss.array)
        if not math.isfinite(value):
            raise checkpoint.NonFiniteLossError(epoch, self.iteration + 1, value)
        error = 100.0 * float((logits.array.argmax(axis=1) != label).mean())
        # Under MPI the loss is reported as a float: ChainerMN's ObservationAggregator, which
        # averages it over the ranks, moves Variables to a ChainerX device (absent here).
        chainer.report({'loss': loss if self.comm is None else value, 'error': error}, model)
        model.cleargrads()
        loss.backward()
        optimizer.update()
        bad = checkpoint.non_finite_arrays(checkpoint.trained_arrays(optimizer))
        if bad:
            raise checkpoint.NonFiniteWeightsError(epoch, self.iteration + 1, bad)


class JsonLinesLog(training.Extension):
    """Rewrites ``log.jsonl`` (one JSON object per epoch) from LogReport's log, atomically.

    Rewriting the whole file keeps it consistent with the snapshot after ``--resume``.
    """

    trigger = (1, 'epoch')
    priority = 50

    def __init__(self, log_report, path):
        self.log_report = log_report
        self.path = path

    def initialize(self, trainer):
        """After ``--resume``: the file as of the snapshot (a killed run may have logged an
        epoch after it, which is about to run again)."""
        if self.log_report.log:
            self(trainer)

    def render(self, log):
        """The file's text for LogReport's ``log`` (a list of per-epoch dicts)."""
        return ''.join(json.dumps(entry, sort_keys=True) + '\n' for entry in log)

    def __call__(self, trainer):
        text = self.render(self.log_report.log)

        def write(tmp):
            with open(tmp, 'w', newline='') as f:
                f.write(text)
        utils.atomic_write(self.path, write)


def _csv_cell(value):
    """A log value as a CSV cell: '' for none, floats to 12 significant digits (0.0001, not
    0.00010000000000000002)."""
    if value is None:
        return ''
    return format(value, '.12g') if isinstance(value, float) else value


class CsvLog(JsonLinesLog):
    """Rewrites ``log.csv``, the per-epoch log as a table a spreadsheet opens, atomically.

    One row per epoch, columns :data:`CSV_COLUMNS` (header row first, comma-separated, RFC 4180
    quoting); the test error cell is empty in epochs without a test (``--testEvery``).
    """

    # (header, LogReport key): what each column holds, named in words and units.
    CSV_COLUMNS = [('epoch', 'epoch'), ('iteration', 'iteration'), ('learning rate', 'lr'),
                   ('train loss', 'main/loss'), ('train error (%)', 'main/error'),
                   ('test error (%)', 'validation/main/error'),
                   ('elapsed time (s)', 'elapsed_time')]

    def render(self, log):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator='\r\n')
        writer.writerow([header for header, _ in self.CSV_COLUMNS])
        for entry in log:
            writer.writerow([_csv_cell(entry.get(key)) for _, key in self.CSV_COLUMNS])
        return buffer.getvalue()


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
            f'epoch {epoch:>{len(str(self.n_epochs))}}/{self.n_epochs}'
            f' | lr {entry.get("lr", 0):.2g}'
            f' | train loss {entry.get("main/loss", float("nan")):.4f}'
            f' | train error {entry.get("main/error", float("nan")):6.2f}%'
            f' | test error {test} | {format_seconds(elapsed)} | ETA {format_seconds(eta)}\n')
        out.flush()


def format_seconds(seconds):
    """'h:mm:ss' for a duration in seconds."""
    seconds = int(round(seconds))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def build_model(opt, device, comm=None):
    """A new network of ``opt.netType`` for ``opt.nClasses`` classes, on ``device``.

    With ``comm`` and ``opt.mnBN``, every ``BatchNormalization`` becomes ChainerMN's
    ``MultiNodeBatchNormalization`` (statistics over the global batch; see
    :func:`distributed.global_batch_normalization_class`). Parameters and persistents keep their
    names, so the saved weights load into the plain network (``--testOnly``).
    """
    model = models.archs[opt.netType](opt.nClasses)
    if comm is not None and getattr(opt, 'mnBN', False):
        import warnings
        import chainermn
        with warnings.catch_warnings():  # "MultiNodeBatchNormalization is experimental"
            warnings.simplefilter('ignore', FutureWarning)
            model = chainermn.links.create_mnbn_model(model, comm)
        cls = distributed.global_batch_normalization_class()
        for link in model.links():
            if type(link) is chainermn.links.MultiNodeBatchNormalization:
                link.__class__ = cls
    model.to_device(device)
    return model


def test_iterator(opt, test_sounds, test_labels):
    """The deterministic 10-crop test iterator (no shuffle, no repeat)."""
    pre = dataset.Preprocessor(opt.inputLength, n_crops=opt.nCrops)
    test_set = dataset.TestDataset(test_sounds, test_labels, pre)
    return chainer.iterators.SerialIterator(test_set, opt.testBatchSize, repeat=False,
                                            shuffle=False)


def _shard(data, index):
    """The clips and labels of ``data`` = (sounds, labels) at ``index``."""
    sounds, labels = data
    return [sounds[i] for i in index], np.asarray(labels, dtype=np.int32)[index]


def setup_split(opt, train_data, test_data, device, seed, comm=None, split='?'):
    """The model, optimizer and iterators of one split, as :func:`train_split` trains them.

    Args:
        opt: resolved options (``opts.parse``).
        train_data, test_data: ``(sounds, labels)`` of the training and test folds
            (``dataset.split_folds``): lists of int16 clips and int32 label arrays.
        device: the Chainer device (``runtime.select_device``).
        seed (int): the split's seed; the initial weights come from it on every rank.
        comm: a ChainerMN communicator, or None for a single process.
        split: the split number, for messages.

    Returns ``(model, optimizer, train_iter, test_iter, rseed)``: the network on ``device``, its
    NesterovAG optimizer with weight decay (ChainerMN's multi-node optimizer under MPI), the
    training iterator (:func:`train_iterator`) and 10-crop test iterator (:func:`test_iterator`)
    of this rank's share of the clips, and this rank's seed (:func:`distributed.rank_seed`), from
    which the updater's stream is ``rseed + 2``. Raises UserError from the datasets (e.g. mixing
    with one class).
    """
    (train_sounds, train_labels), (test_sounds, test_labels) = train_data, test_data
    rank = comm.rank if comm is not None else 0
    rseed = distributed.rank_seed(seed, rank)
    chainer.config.train = True
    np.random.seed(seed % 2 ** 32)  # the same initial weights on every rank (broadcast too)
    if device.xp is not np:
        device.xp.random.seed(seed % 2 ** 32)
    model = build_model(opt, device, comm)
    if rank:  # dropout draws of this rank
        np.random.seed(rseed % 2 ** 32)
        if device.xp is not np:
            device.xp.random.seed(rseed % 2 ** 32)
    optimizer = fused_optimizer.FusedNesterovAG(lr=opt.LR, momentum=opt.momentum,
                                                weight_decay_rate=opt.weightDecay)
    if comm is not None:
        import chainermn
        optimizer = chainermn.create_multi_node_optimizer(optimizer, comm)
    optimizer.setup(model)  # weight decay is fused into the update (optimizer.py)
    if comm is not None:
        # ChainerMN's multi-node optimizer broadcasts rank 0's weights at its first update()
        # *instead of* updating (it has not seen the parameters yet). Broadcast them here and let
        # it see the (already initialised) parameters, so that step 1 is a real step on every
        # rank, as in a single process. bcast_data covers parameters; the BN persistents start
        # equal (0 and 1) on every rank.
        comm.bcast_data(model)
        if all(p.array is not None for p in model.params()):
            optimizer.is_changed(model)

    train_index = test_index = None
    if comm is not None:
        order = None
        if opt.noShuffle:
            order = distributed.interleaved_order(len(train_sounds), opt.batchSize, comm.size)
        train_index = distributed.scatter_indices(len(train_sounds), comm,
                                                  shuffle=not opt.noShuffle, seed=seed,
                                                  order=order, equal_length=True)
        test_index = distributed.scatter_indices(len(test_sounds), comm, equal_length=False)
        train_sounds, train_labels = _shard(train_data, train_index)
        test_sounds, test_labels = _shard(test_data, test_index)

    train_iter = train_iterator(opt, train_sounds, train_labels, rseed, split)
    test_iter = test_iterator(opt, test_sounds, test_labels)
    return model, optimizer, train_iter, test_iter, rseed


def train_iterator(opt, train_sounds, train_labels, rseed, split='?'):
    """The repeating training iterator: batches of ``opt.batchSize`` examples (:func:`batch_size`)
    of :class:`dataset.PairDataset` (mixing) or :class:`dataset.TrainDataset` (standard),
    shuffled each epoch from ``(rseed, epoch)`` by :class:`dataset.EpochOrderSampler` (file order
    with ``opt.noShuffle``), preprocessed in ``opt.nWorkers`` worker processes (Chainer's
    MultiprocessIterator) or in-process when 0; every draw's random stream comes from
    ``(rseed + 1, epoch, index)``, whichever process draws it."""
    pre = dataset.Preprocessor(opt.inputLength, strong_augment=opt.strongAugment)
    if opt.mixing:
        train_set = dataset.PairDataset(train_sounds, train_labels, pre, seed=rseed + 1)
    else:
        train_set = dataset.TrainDataset(train_sounds, train_labels, pre, seed=rseed + 1)
    sampler = dataset.EpochOrderSampler(rseed, shuffle=not getattr(opt, 'noShuffle', False))
    batch = batch_size(opt, len(train_set), split)
    if opt.nWorkers > 0:  # preprocessing in worker processes, overlapping the training step
        return chainer.iterators.MultiprocessIterator(
            train_set, batch, n_processes=opt.nWorkers, n_prefetch=2, order_sampler=sampler)
    return chainer.iterators.SerialIterator(train_set, batch, order_sampler=sampler)


def batch_size(opt, n_examples, split='?'):
    """The training batch: ``opt.batchSize``, or all ``n_examples`` when there are fewer.

    A batch larger than the training set would span several epochs per step (Chainer's iterator
    wraps around), so that epochs, the LR schedule and the ETA would jump; with at most one batch
    of examples an epoch is one step of every example instead. Raises UserError, naming
    ``split``, when there is no example to train on.
    """
    if n_examples < 1:
        unit = 'pairs (mixing needs 2 training clips per pair)' if opt.mixing else 'clips'
        raise UserError(f'--split {split}: no training {unit}; '
                        f'choose another --split or a dataset file with more clips')
    return min(opt.batchSize, n_examples)


def train_split(opt, split, split_dir, train_data, test_data, device, seed, resume=False,
                comm=None, data=None):
    """Train one model on ``train_data`` and test it on ``test_data``; write the split's files.

    Returns the dict written to ``result.json``: the final and best test errors, and the
    per-class errors and confusion matrix of the final 10-crop test
    (:func:`evaluation.per_class_results`, classes named from ``data``, the
    :func:`runrecord.data_record` of the data file, which also goes into the run record,
    record.json, written before training starts, after a resumed snapshot loaded). Raises
    :class:`checkpoint.NonFiniteLossError` if the loss stops being finite (the last snapshot is
    kept).

    With ``comm`` (a ChainerMN communicator) this runs on every rank of the job: the training
    and test clips are scattered across the ranks, ``opt.batchSize`` is per rank, and only rank
    0 writes files and prints; every rank returns the same result.
    """
    (train_sounds, _), (test_sounds, _) = train_data, test_data
    writer = comm is None or comm.rank == 0
    model, optimizer, train_iter, test_iter, rseed = distributed.all_ranks_ok(
        comm, setup_split, opt, train_data, test_data, device, seed, comm, split)
    updater = MixingUpdater(train_iter, optimizer, learning.build(opt), device, seed=rseed + 2,
                            comm=comm)
    trainer = training.Trainer(updater, (opt.nEpochs, 'epoch'), out=split_dir)

    def test_now(tr):
        epoch = tr.updater.epoch
        return tr.updater.is_new_epoch and (epoch % opt.testEvery == 0 or epoch >= opt.nEpochs)

    if comm is not None:
        import chainermn
        for key in ('main/loss', 'main/error'):  # logged over the global batch, not rank 0's
            trainer.extend(chainermn.extensions.ObservationAggregator(comm, key),
                           name=f"aggregate_{key.split('/')[1]}", trigger=(1, "iteration"))
        if not opt.mnBN:  # per-rank BN statistics: average them before testing and saving
            trainer.extend(chainermn.extensions.AllreducePersistent(model, comm), trigger=test_now)
    evaluator = evaluation.TenCropEvaluator(test_iter, model, device=device, comm=comm,
                                 n_classes=opt.nClasses)
    trainer.extend(evaluator, trigger=test_now)
    trainer.extend(extensions.observe_lr(), trigger=(1, 'iteration'))
    trainer.extend(LRSchedule(opt))
    log_report = extensions.LogReport(trigger=(1, 'epoch'), log_name=None)  # log.jsonl instead
    if writer:
        trainer.extend(log_report)
        trainer.extend(JsonLinesLog(log_report, os.path.join(split_dir, 'log.jsonl')))
        trainer.extend(CsvLog(log_report, os.path.join(split_dir, 'log.csv')))
        trainer.extend(EpochLine(log_report, opt.nEpochs))
        if extensions.PlotReport.available():
            for keys, name, ylabel, legend in PLOTS:
                trainer.extend(TestEpochPlotReport(
                    keys, 'epoch', filename=name, marker=None, draw=test_now,
                    postprocess=_label_plot(ylabel, legend, log=name == 'lr.png')))
        schedule = SnapshotSchedule(opt.snapshotEvery, opt.nEpochs)
        snapshot_extension = extensions.snapshot(  # last of the epoch's extensions (-100)
            filename='snapshot.npz', savefun=schedule.timed(lambda path, target: (
                checkpoint.save_npz_uncompressed(
                    path, target, where=(updater.epoch, updater.iteration)))))
        trainer.extend(snapshot_extension, trigger=schedule)
        if sys.stdout.isatty():
            trainer.extend(extensions.ProgressBar(update_interval=1))
    else:
        snapshot_extension = schedule = None
    signals = StopSignals()
    trainer.extend(StopOnSignal(signals, snapshot_extension, schedule, comm))

    snapshot = os.path.join(split_dir, 'snapshot.npz')
    if resume:
        def visible():
            if not os.path.isfile(snapshot):
                raise UserError(f'--resume: {snapshot} is not visible on this rank; --save must '
                                f'be on a file system that every rank shares')
        if comm is not None:
            distributed.all_ranks_ok(comm, visible)
        if os.path.isfile(snapshot):
            # Every rank loads the same snapshot (rank 0's model, optimizer, iterator position).
            distributed.all_ranks_ok(comm, checkpoint.load_snapshot, snapshot, trainer, split)
            if comm is not None and comm.rank > 0:
                distributed.own_order(train_iter)
            if writer:
                print(f'resumed from {snapshot} at epoch {updater.epoch} of {opt.nEpochs}',
                      flush=True)
    if writer:  # after the snapshot loaded: a resume refused changes no file
        for line in runrecord.write_run_record(split_dir, opt, split, model, device, seed, data,
                                            resume):
            print(f'main.py: warning: split {split}: {line}', file=sys.stderr, flush=True)
        checkpoint.remove_stale_temps(split_dir)
        if train_iter.batch_size < opt.batchSize:
            print(f'split {split}: {train_iter.batch_size} training '
                  f'{"pairs" if opt.mixing else "clips"}{" on this rank" * (comm is not None)}, '
                  f'fewer than --batchSize {opt.batchSize}: one batch of {train_iter.batch_size} '
                  f'per epoch', flush=True)

    start = time.time()
    try:
        with signals:
            trainer.run(show_loop_exception_msg=False)  # main.py reports the exception
    finally:
        if hasattr(train_iter, 'finalize'):
            train_iter.finalize()
    seconds = time.time() - start

    if comm is not None:  # rank 0's log, for the result every rank returns
        log = comm.mpi_comm.bcast(log_report.log if writer else None, root=0)
    else:
        log = log_report.log
    if evaluator.confusion is None:  # the snapshot held the final epoch: nothing ran here
        evaluator.evaluate()
    tested = [e for e in log if 'validation/main/error' in e]
    final = tested[-1]
    best = min(tested, key=lambda e: e['validation/main/error'])
    result = {
        'dataset': opt.dataset, 'netType': opt.netType, 'learning': opt.learning, 'split': split,
        'final_error': final['validation/main/error'], 'final_epoch': final['epoch'],
        'best_error_on_test_fold': {
            'error': best['validation/main/error'], 'epoch': best['epoch'],
            'note': 'best epoch chosen on the test fold; optimistic, not the reported error'},
        'epochs': opt.nEpochs, 'seconds_this_run': round(seconds, 1),
        'seconds_total': round(log[-1]['elapsed_time'], 1) if log else None,
        'train_clips': len(train_sounds), 'test_clips': len(test_sounds), 'seed': seed,
        'settings': runrecord.settings_of(opt),
        'metrics': METRICS,
    }
    result.update(evaluation.per_class_results(evaluator.confusion,
                                               runrecord.class_names(data, opt.nClasses)))
    if writer:
        utils.atomic_write(
            os.path.join(split_dir, 'model.npz'), lambda tmp: checkpoint.save_npz_uncompressed(
                tmp, model, where=(updater.epoch, updater.iteration)), suffix='.npz')
        utils.write_json(os.path.join(split_dir, 'result.json'), result)
    return result


# What each number of result.json is, in words (written into it as ``metrics``).
METRICS = {
    'final_error': 'test error (%) of the 10-crop test on the held-out fold at the final epoch: '
                   'the reported number (100 - top-1 accuracy)',
    'best_error_on_test_fold': 'the lowest test error (%) over the tested epochs and its epoch, '
                               'chosen on the test fold: optimistic, not a result',
    'test_error_per_class': 'test error (%) of each true class at the final epoch',
    'confusion_matrix': 'test clips of each true class (row) by predicted class (column) at the '
                        'final epoch',
    'fgsm': 'test error (%) under FGSM attacks (--testOnly --fgsm), clean and per epsilon',
}
