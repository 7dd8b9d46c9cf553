"""Training and testing of one split with Chainer's Trainer (docs/method.md §4, 6).

What is special to this project lives in :class:`MixingUpdater` (pairing, phase shift, gains,
mixing at a random point, KL loss) and :class:`TenCropEvaluator` (10-crop test); the rest is
Chainer's own ``training`` machinery: ``Trainer``, ``LogReport``, ``PlotReport``, ``snapshot``,
``ProgressBar`` and ``observe_lr``.

Files written in the split's folder (``--save``/split{k}):

- ``snapshot.npz`` — the trainer's state (model, optimizer, iterator) at the end of an epoch:
  the first, then on the schedule of :class:`SnapshotSchedule` (``--snapshotEvery``), and the
  final one; ``--resume`` continues from it.
- ``record.json`` — the run record (:func:`run_record`): resolved options, seed, the command that
  reruns it, parameter count, versions, device, git commit, the data file's size and SHA-256 and
  its class names; written when the split starts.
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
streams (:func:`rank_seed`), gradients are averaged by ChainerMN's multi-node optimizer (rank 0's
initial weights are broadcast explicitly before the first step), and the 10-crop test runs on a
scattered test fold whose wrong-clip and clip counts are summed over the ranks, so the error is
exactly that of the whole fold. Only rank 0 writes files and prints the epoch lines. Setup errors
(:func:`all_ranks_ok`, :func:`on_root`) are raised on every rank together as
:class:`AllRanksError`; ``main.py`` ends the job with ``MPI_Abort`` on any other failure of a rank.
"""
import csv
import datetime
import hashlib
import io
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
import zlib

import numpy as np

import compat  # noqa: F401
import chainer
import chainer.functions as F
from chainer import training
from chainer.training import extensions

import dataset
import intermix
import models
import optimizer as fused_optimizer
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
            self.fired = self.clock()
            self.fired_iteration = updater.iteration
        return due

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
            self.schedule.fired = self.schedule.clock()
            self.schedule.fired_iteration = updater.iteration
            self.snapshot(trainer)
        raise StoppedBySignal(received, updater.epoch, updater.iteration)


class NonFiniteLossError(Exception):
    """The training loss became NaN or infinite; the weights were not updated with it."""

    def __init__(self, epoch, iteration, value):
        super().__init__(f'loss is {value} at epoch {epoch}, iteration {iteration}')
        self.epoch = epoch
        self.iteration = iteration
        self.value = value


class NonFiniteWeightsError(NonFiniteLossError):
    """Weights, optimizer state or BN statistics became NaN or infinite (at the update of
    ``iteration``, or found in what was about to be saved); nothing holding them was saved."""

    def __init__(self, epoch, iteration, names):
        Exception.__init__(self, f'non-finite values in {", ".join(names[:3])}'
                                 f'{" and others" if len(names) > 3 else ""} at epoch {epoch}, '
                                 f'iteration {iteration}')
        self.epoch = epoch
        self.iteration = iteration
        self.value = names


def non_finite_arrays(arrays):
    """Names of the float arrays in ``arrays`` ({name: array}, NumPy or CuPy) holding NaN or
    infinity (any element; found through the array's sum, which is then not finite)."""
    bad = []
    for name, a in arrays.items():
        if a is None or not hasattr(a, 'dtype') or a.dtype.kind not in 'fc':
            continue
        xp = chainer.backend.get_array_module(a)
        if not bool(xp.isfinite(a.sum())):
            bad.append(name)
    return bad


def trained_arrays(optimizer):
    """{name: array} of the parameters of ``optimizer``'s target and of their update rules'
    state (e.g. NesterovAG's velocity), the arrays one update changes."""
    arrays = {}
    for name, param in optimizer.target.namedparams():
        name = name.lstrip('/')
        arrays[name] = param.array
        rule = getattr(param, 'update_rule', None)
        for key, value in (getattr(rule, 'state', None) or {}).items():
            arrays[f'{name}/{key}'] = value
    return arrays


class AllRanksError(UserError):
    """A user error that every rank of an MPI job raises together (after a collective check);
    rank 0 reports it. Without a communicator the original :class:`UserError` is raised."""


def _failure_line(errors, size):
    """One line for ``[(rank, message), ...]`` of the ranks that failed out of ``size``."""
    messages = sorted({m for _, m in errors})
    ranks = [r for r, _ in errors]
    if len(ranks) == size and len(messages) == 1:
        return messages[0]
    first_rank, first = errors[0]
    others = [r for r, m in errors[1:]]
    line = f'rank {first_rank} of {size}: {first}'
    if others:
        line += f' (also failed: rank{"s" * (len(others) > 1)} {", ".join(map(str, others))})'
    return line


def all_ranks_ok(comm, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on every rank; a UserError on any rank stops every rank.

    Without ``comm`` it is a plain call. With a communicator, the ranks exchange their outcome
    (one ``allgather``), so that a rank whose data path or device is wrong does not leave the
    others waiting in a collective operation: all raise :class:`AllRanksError` naming the
    failing rank(s).
    """
    if comm is None:
        return fn(*args, **kwargs)
    try:
        value, error = fn(*args, **kwargs), None
    except UserError as e:
        value, error = None, str(e)
    errors = [(r, e) for r, e in enumerate(comm.mpi_comm.allgather(error)) if e is not None]
    if errors:
        raise AllRanksError(_failure_line(errors, comm.size))
    return value


def on_root(comm, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on rank 0 only, its value (or its UserError) broadcast to all."""
    if comm is None:
        return fn(*args, **kwargs)
    value = error = None
    if comm.rank == 0:
        try:
            value = fn(*args, **kwargs)
        except UserError as e:
            error = str(e)
    value, error = comm.mpi_comm.bcast((value, error), root=0)
    if error is not None:
        raise AllRanksError(error)
    return value


def rank_seed(seed, rank):
    """The seed of rank ``rank``'s own random streams (crops, pairs, mixing, order, dropout).

    Rank 0 keeps ``seed`` (so a 1-rank job draws what a single process draws); rank r > 0 gets
    an independent 32-bit seed derived from ``(seed, r)`` by ``numpy.random.SeedSequence``, so
    that no rank's stream coincides with another rank's (``seed + r`` would give rank 1's
    crops the stream of rank 0's mixing, which uses ``seed + 2``).
    """
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2 ** 32, rank]).generate_state(1)[0])


def data_fingerprint(soundset):
    """(fold, clips, samples, CRC-32 of labels and audio) per fold: equal on every rank that
    loaded the same file."""
    rows = []
    for k in sorted(soundset.folds):
        sounds, labels = soundset.folds[k]
        crc = zlib.crc32(np.ascontiguousarray(labels, dtype=np.int32).tobytes())
        for s in sounds:
            crc = zlib.crc32(np.ascontiguousarray(s).tobytes(), crc)
        rows.append((int(k), len(sounds), int(sum(len(s) for s in sounds)), crc))
    return tuple(rows)


def interleaved_order(n, block, size):
    """Indices 0..n-1 reordered so that contiguous shards of n/size give rank r the examples
    ``[t*size*block + r*block, t*size*block + (r+1)*block)`` for t = 0, 1, ...: step t of rank r
    then holds the r-th part of step t of a 1-process run with batch size x block (exact when n
    is a multiple of size x block)."""
    index = np.arange(n)
    return np.concatenate([index[(index // block) % size == r] for r in range(size)])


def scatter_indices(n, comm, shuffle=False, seed=None, order=None, equal_length=True):
    """This rank's share of the examples 0..n-1, by ``chainermn.scatter_dataset``.

    The indices (not the clips: every rank loaded the same file, checked by
    :func:`data_fingerprint`) are scattered from rank 0, shuffled once with ``seed`` when
    ``shuffle``; ``order`` replaces 0..n-1 before scattering. ``equal_length`` (training) gives
    every rank ceil(n / size) examples, repeating a few when n is not a multiple of the number of
    ranks, so that all ranks take the same number of steps per epoch; without it (testing) the
    shards are disjoint and together hold each example once.
    """
    import chainermn
    index = np.arange(n) if order is None else np.asarray(order)
    shard = chainermn.scatter_dataset(index, comm, shuffle=shuffle,
                                      seed=None if seed is None else seed % 2 ** 32,
                                      force_equal_length=equal_length)
    return np.asarray([shard[i] for i in range(len(shard))], dtype=np.int64)


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
        trainer.updater.get_optimizer('main').lr = learning_rate(self.opt, trainer.updater.epoch + 1)

    def initialize(self, trainer):
        self._set(trainer)

    def __call__(self, trainer):
        self._set(trainer)


class MixingUpdater(training.updaters.StandardUpdater):
    """One optimisation step of standard, BC, SpeechMix or InterMix learning (docs/method.md §4).

    Standard: a batch of clips, softmax cross-entropy. Mixing: a batch of B pairs (x_i, x_j)
    becomes 2B clips ``[x_i; x_j]``; row k is mixed with row ``partner[k]`` (k +- B) with its own
    ``r ~ U(0, 1)``. InterMix shifts every clip's phase by ``phi ~ U(-pi/2, pi/2)`` first. The
    sound mixing ratio uses the maximum A-weighted gain of each (shifted) input clip, or of the
    hidden tensor with ``gain_source='hidden'``. One mixing point per batch is drawn uniformly from
    ``eligible``; the loss is the KL divergence to ``r y_i + (1 - r) y_j``.

    Reports ``main/loss`` and ``main/error`` (%, argmax of the logits against the argmax of the
    target).

    Random numbers: step t (``iteration`` t, 0-based) draws r, phases and the mixing point from
    ``default_rng([seed, t, 0])`` and reseeds the global NumPy stream (and CuPy's on a GPU), which
    Chainer's dropout draws from, from ``(seed, t, 1)`` (:meth:`seed_step`). Every stream of a
    step is thus a function of the seed and the step number, which the snapshot holds, so a run
    resumed from any epoch's snapshot repeats the uninterrupted run exactly (on the CPU), and each
    MPI rank (its own ``seed``) keeps its own streams after a resume.

    After every update the parameters and the optimizer state must be finite; otherwise
    :class:`NonFiniteWeightsError` stops training (as a non-finite loss does, before its update).
    """

    def __init__(self, iterator, optimizer, opt, device, seed=None, comm=None):
        super().__init__(iterator, optimizer, device=device)
        self.opt = opt
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
            raise NonFiniteLossError(epoch, self.iteration + 1, value)
        error = 100.0 * float((logits.array.argmax(axis=1) != label).mean())
        # Under MPI the loss is reported as a float: ChainerMN's ObservationAggregator, which
        # averages it over the ranks, moves Variables to a ChainerX device (absent here).
        chainer.report({'loss': loss if self.comm is None else value, 'error': error}, model)
        model.cleargrads()
        loss.backward()
        optimizer.update()
        bad = non_finite_arrays(trained_arrays(optimizer))
        if bad:
            raise NonFiniteWeightsError(epoch, self.iteration + 1, bad)

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
        if intermix.COMBINATIONS[opt.combination].phase_shift:
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
    """10-crop test (docs/method.md §3): softmax averaged over each clip's crops; reports the error in %.

    Reports ``validation/main/error`` = 100 * (wrong clips / clips), exact over the whole test
    fold, computed in test mode (BN statistics, no dropout) without backprop.

    Multi-node (``comm``): each rank tests its disjoint shard of the fold and the ranks sum their
    confusion matrices with one ``allreduce``, so the error is wrong / total over the whole fold,
    not a mean of per-rank percentages (ChainerMN's ``create_multi_node_evaluator`` averages the
    ranks' results, which is wrong for shards of unequal size).

    ``n_classes`` (the network's outputs) sizes the confusion matrix, which is kept, for the whole
    fold, in ``confusion`` after each test (None before the first).
    """

    def __init__(self, iterator, target, device=None, comm=None, n_classes=None):
        super().__init__(iterator, target, device=device)
        self.comm = comm
        self.n_classes = n_classes
        self.confusion = None  # (C, C) int64 of the latest evaluation, over the whole fold

    def evaluate(self):
        """Test the target on the whole fold; keeps the confusion matrix in ``self.confusion``
        (rows: true class, columns: predicted class) and returns the error in %."""
        iterator = self.get_iterator('main')
        model = self.get_target('main')
        confusion = ten_crop_confusion(model, iterator, self.converter, self.device,
                                       self.n_classes)
        if self.comm is not None:
            confusion = self.comm.mpi_comm.allreduce(confusion)
        self.confusion = confusion
        total = int(confusion.sum())
        wrong = total - int(np.trace(confusion))
        return {'validation/main/error': 100.0 * wrong / total}


def ten_crop_probabilities(model, crops):
    """The output of the 10-crop test for a batch of clips (docs/method.md §3.2).

    Args:
        model: a network taking float32 (M, 1, 1, T) waveforms; called as it is, so the caller
            puts it in test mode (``chainer.using_config('train', False)``, no backprop).
        crops: float32 array (B, nCrops, T) of normalised crops (``dataset.Preprocessor.test``
            of each clip), on the model's device.

    Returns a float32 array (B, C) on that device: the softmax of each crop, averaged over the
    clip's crops (each row sums to 1); its argmax is the predicted class. ``--testOnly``, the
    test during training and ``predict.py`` all classify clips through this function.
    """
    b, n_crops, length = crops.shape
    logits = model(crops.reshape(b * n_crops, 1, 1, length))
    return F.softmax(logits).array.reshape(b, n_crops, -1).mean(axis=1)


def ten_crop_batches(model, iterator, converter, device):
    """The 10-crop test, batch by batch: yields ``(probabilities, labels)`` per batch.

    ``iterator`` yields batches of ``(crops float32 (nCrops, T), label)`` examples
    (:func:`test_iterator`; reset first when it can be), ``converter`` stacks them onto
    ``device``; the model runs in test mode without backprop. ``probabilities`` is the (B, C)
    array of :func:`ten_crop_probabilities` on the device, ``labels`` the (B,) int32 labels.
    Yields nothing for an empty shard.
    """
    if len(getattr(iterator, 'dataset', ())) == 0 and hasattr(iterator, 'dataset'):
        return  # an empty shard (fewer test clips than ranks)
    if hasattr(iterator, 'reset'):
        iterator.reset()
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for batch in iterator:
            x, y = converter(batch, device)
            yield ten_crop_probabilities(model, x), y


def ten_crop_counts(model, iterator, converter, device):
    """(wrong clips, clips) of ``model`` over an iterator of ``(crops (nCrops, T), label)``."""
    wrong = total = 0
    for prob, y in ten_crop_batches(model, iterator, converter, device):
        wrong += int((prob.argmax(axis=1) != y).sum())
        total += len(y)
    return wrong, total


def ten_crop_confusion(model, iterator, converter, device, n_classes=None):
    """Confusion matrix of the 10-crop test over an iterator of ``(crops (nCrops, T), label)``.

    Returns an int64 NumPy array (C, C): entry [i, j] counts the clips of true class i that the
    averaged softmax (:func:`ten_crop_probabilities`) assigns to class j. C is ``n_classes`` when
    given (needed for an empty shard), else the network's number of outputs. Its trace is the
    number of right clips; ``100 * (sum - trace) / sum`` is :func:`ten_crop_error`.
    """
    confusion = None if n_classes is None else np.zeros((n_classes, n_classes), np.int64)
    cpu = chainer.backend.CpuDevice()
    for prob, y in ten_crop_batches(model, iterator, converter, device):
        if confusion is None:
            confusion = np.zeros((prob.shape[1], prob.shape[1]), np.int64)
        np.add.at(confusion, (cpu.send(y), cpu.send(prob.argmax(axis=1))), 1)
    if confusion is None:
        raise ValueError('ten_crop_confusion: no clips and no n_classes')
    return confusion


def per_class_results(confusion, class_names):
    """Per-class test error and the confusion matrix as recorded in result.json.

    Args:
        confusion: int array (C, C), rows true class, columns predicted class
            (:func:`ten_crop_confusion`).
        class_names: the C class names (label order of the data file).

    Returns a JSON-able dict: ``test_error_per_class`` {class name: error % of that class's
    test clips, or None when the fold holds none of them}, ``test_clips_per_class`` {class name:
    clips}, and ``confusion_matrix`` {``class_names``, ``rows``: 'true class', ``columns``:
    'predicted class', ``counts``: C lists of C ints}. Raises ValueError when the sizes differ.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    names = [str(c) for c in class_names]
    if confusion.shape != (len(names), len(names)):
        raise ValueError(f'per_class_results: confusion {confusion.shape} for {len(names)} '
                         f'class names')
    clips = confusion.sum(axis=1)
    errors = {name: (None if n == 0 else 100.0 * (n - confusion[c, c]) / n)
              for c, (name, n) in enumerate(zip(names, clips))}
    return {'test_error_per_class': errors,
            'test_clips_per_class': dict(zip(names, (int(n) for n in clips))),
            'confusion_matrix': {'class_names': names, 'rows': 'true class',
                                 'columns': 'predicted class', 'counts': confusion.tolist()}}


def ten_crop_error(model, iterator, converter, device):
    """Error (%) of ``model`` over an iterator of ``(crops (nCrops, T), label)`` examples."""
    wrong, total = ten_crop_counts(model, iterator, converter, device)
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

    ``x_adv = x + epsilon * sign(grad_x L(theta, x, y))`` on every normalised test crop (docs/method.md §3),
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
    """Number of clips misclassified by the softmax averaged over their crops; ``crops`` are
    (len(y) * n_crops, 1, 1, T)."""
    prob = ten_crop_probabilities(model, crops.reshape(len(y), n_crops, crops.shape[-1]))
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
            f'epoch {epoch:>{len(str(self.n_epochs))}}/{self.n_epochs} | lr {entry.get("lr", 0):.2g}'
            f' | train loss {entry.get("main/loss", float("nan")):.4f}'
            f' | train error {entry.get("main/error", float("nan")):6.2f}%'
            f' | test error {test} | {format_seconds(elapsed)} | ETA {format_seconds(eta)}\n')
        out.flush()


def format_seconds(seconds):
    """'h:mm:ss' for a duration in seconds."""
    seconds = int(round(seconds))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def save_npz_uncompressed(path, target, where=None):
    """``chainer.serializers.save_npz`` without zip compression, refusing non-finite values.

    ``target``: a Link, a Trainer or the dict Chainer's snapshot serialised it to; ``path`` a
    file name (written in place: the callers write to a temporary name and rename it). The
    members are written by :func:`utils.savez_stable`, so equal weights give a byte-identical
    file. Float weights barely compress, and compressing EnvNet-v2's ~0.8 GB snapshot (weights
    plus momentum) costs tens of seconds per epoch.

    Raises :class:`NonFiniteWeightsError` (nothing written) when a float array holds NaN or
    infinity; ``where`` = (epoch, iteration) names the moment in its message.
    """
    arrays = target if isinstance(target, dict) else chainer.serializers.npz.serialize(target)
    bad = non_finite_arrays(arrays)
    if bad:
        epoch, iteration = where or ('?', '?')
        raise NonFiniteWeightsError(epoch, iteration, bad)
    try:
        utils.savez_stable(path, arrays)
    except OSError as e:  # name the file the user knows, and what it needs (a full disk)
        e.filename = _final_name(path)
        e.needed_bytes = sum(int(getattr(a, 'nbytes', 0)) for a in arrays.values())
        raise


def _final_name(path):
    """The file a temporary name stands for: Chainer's snapshot writes
    ``DIR/tmpsnapshot.npzXXXX/snapshot.npz`` (-> ``DIR/snapshot.npz``), :func:`utils.atomic_write`
    ``DIR/.NAME.XXXX.tmp.npz`` (-> ``DIR/NAME``); other paths are returned unchanged."""
    folder, name = os.path.split(path)
    if os.path.basename(folder).startswith('tmp' + name):
        return os.path.join(os.path.dirname(folder), name)
    if name.startswith('.') and '.tmp' in name:
        return os.path.join(folder, name[1:].rsplit('.tmp', 1)[0].rsplit('.', 1)[0])
    return path


def remove_stale_temps(split_dir):
    """Delete what a killed run left half-written in ``split_dir``: Chainer's snapshot folders
    (``tmpsnapshot.npz*``) and :func:`utils.atomic_write`'s temporary files (``.NAME.*.tmp*``).
    Returns the names removed."""
    removed = []
    for name in sorted(os.listdir(split_dir)) if os.path.isdir(split_dir) else []:
        path = os.path.join(split_dir, name)
        if name.startswith('tmpsnapshot.npz') and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith('.') and '.tmp' in name and os.path.isfile(path):
            os.remove(path)
        else:
            continue
        removed.append(name)
    return removed


def _snapshot_error(path, split, what):
    return UserError(f'{path}: cannot resume from it ({" ".join(str(what).split())[:200]}); it is '
                     f'damaged or belongs to another run: delete it to start split {split} again '
                     f'from epoch 0 (run.json keeps the seed)')


def check_snapshot(path, split):
    """Check that ``path`` is a whole trainer snapshot (every zip member's CRC, the updater's
    iteration present) before anything of the split is touched; UserError saying what to
    delete otherwise."""
    try:
        with zipfile.ZipFile(path) as z:
            damaged = z.testzip()
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
        raise _snapshot_error(path, split, f'{type(e).__name__}: {e}') from None
    if damaged is not None:
        raise _snapshot_error(path, split, f'member {damaged} fails its CRC check')
    if 'updater/iteration.npy' not in names:
        raise _snapshot_error(path, split, 'no updater/iteration: not a trainer snapshot')


def load_snapshot(path, trainer, split):
    """Load ``path`` (a split's ``snapshot.npz``) into ``trainer``; a damaged file or one of
    another run is a UserError saying what to delete."""
    try:
        chainer.serializers.load_npz(path, trainer)
    except Exception as e:  # noqa: BLE001 - zip, npz and key/shape errors alike
        raise _snapshot_error(path, split, f'{type(e).__name__}: {e}') from None


_GLOBAL_BN = []


def global_batch_normalization_class():
    """ChainerMN's ``MultiNodeBatchNormalization`` with the running variance unbiased over the
    global batch.

    ChainerMN 7.8.1 normalises with the mean and variance of the global batch, but updates the
    running variance with the per-rank factor m / (m - 1) (m = values per channel on one rank)
    instead of M / (M - 1) for the M = N m values of the global batch. This subclass rescales
    the update so that the running statistics are those of one process with the global batch
    (the difference is about 1 / (2m) relative: small, but visible in the 1-rank/N-rank test).
    All ranks must have batches of the same size (true for the training iterators here).
    """
    if not _GLOBAL_BN:
        import chainermn

        class GlobalBatchNormalization(chainermn.links.MultiNodeBatchNormalization):
            def __call__(self, x, finetune=False):
                train = chainer.config.train and not finetune
                if train:
                    before = self.avg_var.copy()
                y = super().__call__(x, finetune)
                if train:
                    m = x.size // self.avg_mean.size
                    n = m * self.comm.size
                    local, wanted = m / max(m - 1.0, 1.0), n / max(n - 1.0, 1.0)
                    kept = self.decay * before
                    self.avg_var[...] = kept + (self.avg_var - kept) * (wanted / local)
                return y
        _GLOBAL_BN.append(GlobalBatchNormalization)
    return _GLOBAL_BN[0]


def build_model(opt, device, comm=None):
    """A new network of ``opt.netType`` for ``opt.nClasses`` classes, on ``device``.

    With ``comm`` and ``opt.mnBN``, every ``BatchNormalization`` becomes ChainerMN's
    ``MultiNodeBatchNormalization`` (statistics over the global batch; see
    :func:`global_batch_normalization_class`). Parameters and persistents keep their names, so
    the saved weights load into the plain network (``--testOnly``).
    """
    model = models.archs[opt.netType](opt.nClasses)
    if comm is not None and getattr(opt, 'mnBN', False):
        import warnings
        import chainermn
        with warnings.catch_warnings():  # "MultiNodeBatchNormalization is experimental"
            warnings.simplefilter('ignore', FutureWarning)
            model = chainermn.links.create_mnbn_model(model, comm)
        cls = global_batch_normalization_class()
        for link in model.links():
            if type(link) is chainermn.links.MultiNodeBatchNormalization:
                link.__class__ = cls
    model.to_device(device)
    return model


def test_iterator(opt, test_sounds, test_labels):
    """The deterministic 10-crop test iterator (no shuffle, no repeat)."""
    pre = dataset.Preprocessor(opt.inputLength, n_crops=opt.nCrops)
    test_set = dataset.TestDataset(test_sounds, test_labels, pre)
    return chainer.iterators.SerialIterator(test_set, opt.testBatchSize, repeat=False, shuffle=False)


def _shard(data, index):
    """The clips and labels of ``data`` = (sounds, labels) at ``index``."""
    sounds, labels = data
    return [sounds[i] for i in index], np.asarray(labels, dtype=np.int32)[index]


def setup_split(opt, train_data, test_data, device, seed, comm=None):
    """The model, optimizer and iterators of one split, as :func:`train_split` trains them.

    Args:
        opt: resolved options (``opts.parse``).
        train_data, test_data: ``(sounds, labels)`` of the training and test folds
            (``dataset.split_folds``): lists of int16 clips and int32 label arrays.
        device: the Chainer device (``main.select_device``).
        seed (int): the split's seed; the initial weights come from it on every rank.
        comm: a ChainerMN communicator, or None for a single process.

    Returns ``(model, optimizer, train_iter, test_iter, rseed)``: the network on ``device``, its
    NesterovAG optimizer with weight decay (ChainerMN's multi-node optimizer under MPI), the
    training iterator (:func:`train_iterator`) and 10-crop test iterator (:func:`test_iterator`)
    of this rank's share of the clips, and this rank's seed (:func:`rank_seed`), from which the
    updater's stream is ``rseed + 2``. Raises UserError from the datasets (e.g. mixing with one
    class).
    """
    (train_sounds, train_labels), (test_sounds, test_labels) = train_data, test_data
    rank = comm.rank if comm is not None else 0
    rseed = rank_seed(seed, rank)
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
            order = interleaved_order(len(train_sounds), opt.batchSize, comm.size)
        train_index = scatter_indices(len(train_sounds), comm, shuffle=not opt.noShuffle,
                                      seed=seed, order=order, equal_length=True)
        test_index = scatter_indices(len(test_sounds), comm, equal_length=False)
        train_sounds, train_labels = _shard(train_data, train_index)
        test_sounds, test_labels = _shard(test_data, test_index)

    train_iter = train_iterator(opt, train_sounds, train_labels, rseed)
    test_iter = test_iterator(opt, test_sounds, test_labels)
    return model, optimizer, train_iter, test_iter, rseed


def train_iterator(opt, train_sounds, train_labels, rseed):
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
    batch = batch_size(opt, len(train_set))
    if opt.nWorkers > 0:  # preprocessing in worker processes, overlapping the training step
        return chainer.iterators.MultiprocessIterator(
            train_set, batch, n_processes=opt.nWorkers, n_prefetch=2, order_sampler=sampler)
    return chainer.iterators.SerialIterator(train_set, batch, order_sampler=sampler)


def own_order(iterator):
    """Replace the order a training iterator loaded from rank 0's snapshot by this rank's own.

    Under MPI every rank loads rank 0's snapshot, whose iterator order (of the epoch about to
    run) is rank 0's permutation; :class:`dataset.EpochOrderSampler` derives each rank's order
    from its own seed and the epoch, so this rank's order of that epoch is rebuilt from them.
    """
    state = iterator._state
    n = len(state.order)
    order = iterator.order_sampler.order(int(np.max(state.order)) // n, n)
    if isinstance(iterator, chainer.iterators.MultiprocessIterator):
        iterator._reset_state(state.current_position, state.epoch, state.is_new_epoch, order)
    else:
        iterator._state = state._replace(order=order)


def batch_size(opt, n_examples):
    """The training batch: ``opt.batchSize``, or all ``n_examples`` when there are fewer.

    A batch larger than the training set would span several epochs per step (Chainer's iterator
    wraps around), so that epochs, the LR schedule and the ETA would jump; with at most one batch
    of examples an epoch is one step of every example instead. Raises UserError when there is no
    example to train on.
    """
    if n_examples < 1:
        unit = 'pairs (mixing needs 2 training clips per pair)' if opt.mixing else 'clips'
        raise UserError(f'--split {getattr(opt, "split_now", "?")}: no training {unit}; '
                        f'choose another --split or a dataset file with more clips')
    return min(opt.batchSize, n_examples)


def train_split(opt, split, split_dir, train_data, test_data, device, seed, resume=False,
                comm=None, data=None):
    """Train one model on ``train_data`` and test it on ``test_data``; write the split's files.

    Returns the dict written to ``result.json``: the final and best test errors, and the
    per-class errors and confusion matrix of the final 10-crop test (:func:`per_class_results`,
    classes named from ``data``, the :func:`data_record` of the data file, which also goes into
    the run record, record.json, written before training starts, after a resumed snapshot loaded). Raises
    :class:`NonFiniteLossError` if the loss stops being finite (the last snapshot is kept).

    With ``comm`` (a ChainerMN communicator) this runs on every rank of the job: the training
    and test clips are scattered across the ranks, ``opt.batchSize`` is per rank, and only rank
    0 writes files and prints; every rank returns the same result.
    """
    (train_sounds, _), (test_sounds, _) = train_data, test_data
    writer = comm is None or comm.rank == 0
    model, optimizer, train_iter, test_iter, rseed = all_ranks_ok(
        comm, setup_split, opt, train_data, test_data, device, seed, comm)
    updater = MixingUpdater(train_iter, optimizer, opt, device, seed=rseed + 2, comm=comm)
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
    evaluator = TenCropEvaluator(test_iter, model, device=device, comm=comm,
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
                save_npz_uncompressed(path, target, where=(updater.epoch, updater.iteration)))))
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
            all_ranks_ok(comm, visible)
        if os.path.isfile(snapshot):
            # Every rank loads the same snapshot (rank 0's model, optimizer, iterator position).
            all_ranks_ok(comm, load_snapshot, snapshot, trainer, split)
            if comm is not None and comm.rank > 0:
                own_order(train_iter)
            if writer:
                print(f'resumed from {snapshot} at epoch {updater.epoch} of {opt.nEpochs}',
                      flush=True)
    if writer:  # after the snapshot loaded: a resume refused changes no file
        for line in write_run_record(split_dir, opt, split, model, device, seed, data, resume):
            print(f'main.py: warning: split {split}: {line}', file=sys.stderr, flush=True)
        remove_stale_temps(split_dir)
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
        'settings': settings_of(opt),
        'metrics': METRICS,
    }
    result.update(per_class_results(evaluator.confusion, class_names(data, opt.nClasses)))
    if writer:
        utils.atomic_write(os.path.join(split_dir, 'model.npz'), lambda tmp: save_npz_uncompressed(
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


def settings_of(opt):
    """The options that define a run, as a JSON-able dict (recorded in result.json)."""
    keys = ['dataset', 'netType', 'learning', 'mixing', 'eligible', 'combination', 'mixup_type',
            'gainSource', 'strongAugment', 'nEpochs', 'LR', 'schedule', 'warmup', 'batchSize',
            'weightDecay', 'momentum', 'nCrops', 'testEvery', 'testBatchSize', 'fs',
            'inputLength', 'nClasses']
    settings = {k: getattr(opt, k, None) for k in keys}
    # Multi-process runs (recorded so that --resume refuses another number of ranks: the
    # snapshot's iterator position belongs to shards of this size).
    settings.update(ranks=getattr(opt, 'ranks', 1), mnBN=bool(getattr(opt, 'mnBN', False)))
    if getattr(opt, 'noShuffle', False):
        settings['noShuffle'] = True
    return settings


# ---------------------------------------------------------------------------------------------
# The run record: record.json in every split folder, what is needed to rerun the split exactly
# and to tell, later, whether the code or the data has changed since (--testOnly, predict.py).

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
RECORD_FILE = 'record.json'
RECORD_FORMAT = 1
_SHA256 = {}  # (path, size, mtime_ns) -> hex digest, so that each file is hashed once


def file_sha256(path):
    """SHA-256 (hex str) of the file ``path``, read in 1 MiB blocks; computed once per process
    for a given (path, size, modification time). Raises OSError if it cannot be read."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                digest.update(block)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def data_record(soundset):
    """What identifies a run's data file (``datagen.npzio.SoundSet`` as loaded by main.py).

    Returns a JSON-able dict: ``file`` (absolute path), ``bytes``, ``sha256``, ``fs`` (Hz),
    ``class_names`` (label order), ``clips_per_fold`` {fold: clips} and ``legacy_format``.
    """
    path = os.path.abspath(soundset.path)
    return {'file': path, 'bytes': os.path.getsize(path), 'sha256': file_sha256(path),
            'fs': int(soundset.fs), 'class_names': [str(c) for c in soundset.class_names],
            'clips_per_fold': {str(k): len(soundset.folds[k][0]) for k in sorted(soundset.folds)},
            'legacy_format': bool(soundset.legacy)}


def class_names(data, n_classes):
    """The ``n_classes`` names of a network's outputs: those of the data file (``data``, a
    :func:`data_record`, or None), completed with 'class{k}' where it names fewer (a legacy
    pickled file names only the labels it holds, docs/method.md §10.4)."""
    names = [str(c) for c in (data or {}).get('class_names', [])][:n_classes]
    return names + [f'class{k}' for k in range(len(names), n_classes)]


def _git(root, *args):
    return subprocess.run(['git', '-C', root, *args], capture_output=True, check=True,
                          timeout=60).stdout


def code_record(root=REPO_ROOT):
    """The version of the code in ``root`` (the repository holding this file), from git.

    Returns ``{'commit': full hash, 'clean': bool, 'changed': [paths], 'diff_sha256': hex or
    None}``: ``changed`` lists tracked files that differ from the commit and untracked ``.py``
    files (ignored files and other untracked files, such as results, do not count);
    ``diff_sha256`` hashes ``git diff HEAD`` and the untracked ``.py`` files, so that two
    records of the same commit tell whether their uncommitted changes are the same. Outside a
    git checkout, or without git, ``commit`` and ``clean`` are None and ``note`` says why.
    """
    try:
        commit = _git(root, 'rev-parse', 'HEAD').decode().strip()
        status = _git(root, 'status', '--porcelain=v1', '-z', '--untracked-files=all')
        diff = _git(root, 'diff', 'HEAD', '--binary')
    except (OSError, subprocess.SubprocessError):
        return {'commit': None, 'clean': None, 'changed': [], 'diff_sha256': None,
                'note': f'{root} is not a git checkout, or git is not installed'}
    entries = iter(status.decode('utf-8', 'replace').split('\0'))
    changed, untracked = [], []
    for entry in entries:
        if not entry:
            continue
        code, name = entry[:2], entry[3:]
        if code[0] in 'RC':
            next(entries, None)  # the rename's or copy's source path
        if code == '??':
            if name.endswith('.py'):
                untracked.append(name)
            continue
        changed.append(name)
    digest = None
    if changed or untracked:
        h = hashlib.sha256(diff)
        for name in sorted(untracked):
            h.update(name.encode())
            with open(os.path.join(root, name), 'rb') as f:
                h.update(f.read())
        digest = h.hexdigest()
    return {'commit': commit, 'clean': not (changed or untracked),
            'changed': sorted(changed + untracked), 'diff_sha256': digest}


def versions():
    """Versions of Python, NumPy, SciPy, Chainer and CuPy (None when CuPy is not installed)."""
    import scipy
    from chainer.backends import cuda
    return {'python': platform.python_version(), 'numpy': np.__version__,
            'scipy': scipy.__version__, 'chainer': chainer.__version__,
            'cupy': cuda.cupy.__version__ if cuda.available else None}


def device_record(device):
    """The Chainer device a run used: ``chainer_device`` ('@numpy', '@cupy:0'), ``kind`` and, on
    the CPU, the processor, core count, convolution path (fastconv or stock Chainer) and threads
    (``--threads``); on a
    GPU its name and whether cuDNN is used."""
    record = {'chainer_device': str(device)}
    if device.xp is np:
        import fastconv
        record.update(kind='CPU', processor=platform.processor() or platform.machine(),
                      cpus=os.cpu_count(),
                      convolution='fastconv' if fastconv.enabled() else 'stock Chainer',
                      threads=fastconv._threads())
    else:
        from chainer.backends import cuda
        props = cuda.cupy.cuda.runtime.getDeviceProperties(device.device.id)
        record.update(kind='GPU', name=props['name'].decode(errors='replace'),
                      cudnn=bool(getattr(cuda, 'cudnn_enabled', False)))
    return record


def rerun_command(opt, split, seed):
    """The ``main.py`` command that reruns split ``split``: every resolved setting as an
    explicit flag, and ``--seed`` the base from which the split's ``seed`` was derived
    (seed = base + 1000 x split, docs/method.md §6.6), so the same data, settings and random
    draws (every stream is a function of the seed and a counter, whatever ``--nWorkers``; on the
    CPU the weights are byte-identical, on a GPU equal to the kernels' float rounding). Run it
    from the repository root; give another ``--save`` to keep the first run."""
    args = ['--data', opt.data, '--dataset', opt.dataset, '--netType', opt.netType,
            '--learning', opt.learning]
    if opt.mixing:
        args += ['--eligible', *map(str, opt.eligible), '--combination', opt.combination,
                 '--mixup_type', opt.mixup_type, '--gainSource', opt.gainSource]
    if opt.strongAugment:
        args.append('--strongAugment')
    args += ['--nEpochs', str(opt.nEpochs), '--LR', repr(opt.LR),
             '--schedule', *map(repr, opt.schedule), '--warmup', str(opt.warmup),
             '--batchSize', str(opt.batchSize), '--weightDecay', repr(opt.weightDecay),
             '--momentum', repr(opt.momentum), '--nCrops', str(opt.nCrops),
             '--testEvery', str(opt.testEvery), '--testBatchSize', str(opt.testBatchSize),
             '--split', str(split), '--seed', str(seed - 1000 * split), '--save', opt.save]
    for flag in ('gpu', 'nWorkers', 'threads'):
        if getattr(opt, flag, None) is not None:
            args += [f'--{flag}', str(getattr(opt, flag))]
    for flag in ('stockConv', 'allowPickle', 'noShuffle', 'mnBN'):
        if getattr(opt, flag, False):
            args.append(f'--{flag}')
    command = utils.command('main.py', cwd=REPO_ROOT)
    if getattr(opt, 'communicator', None):
        args += ['--communicator', opt.communicator]
        command = f'.venv/bin/mpiexec -n {getattr(opt, "ranks", 1)} {command}'
    return f'{command} {shlex.join(args)}'


def _json_able(value):
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def run_record(opt, split, model, device, seed, data=None):
    """The record of one split's run (written as ``record.json`` by :func:`write_run_record`).

    Args:
        opt: the resolved options of main.py; split (int), seed (int): the split and its seed.
        model: the network (its parameter count is recorded).
        device: the Chainer device.
        data: :func:`data_record` of the data file, or None.

    Returns a JSON-able dict: ``format``, ``written`` (UTC, ISO 8601), ``split``, ``seed``,
    ``command`` (``argv`` as typed, ``cwd``, and ``rerun``, :func:`rerun_command`), ``options``
    (every resolved option), ``network`` (netType, parameters, fs, input_length, n_classes),
    ``class_names``, ``data`` (:func:`data_record` plus ``dataset`` and ``trim``), ``versions``
    (:func:`versions`), ``device`` (:func:`device_record`), ``code`` (:func:`code_record`) and
    ``host`` (platform, CPUs).
    """
    from datagen import registry
    info = registry.get(opt.dataset)
    return {
        'format': RECORD_FORMAT,
        'written': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'split': split, 'seed': seed,
        'command': {'argv': getattr(opt, 'argv', None), 'cwd': os.getcwd(),
                    'rerun': rerun_command(opt, split, seed)},
        'options': {k: v for k, v in sorted(vars(opt).items()) if k != 'argv' and _json_able(v)},
        'network': {'netType': opt.netType,
                    'parameters': int(sum(p.size for p in model.params() if p.array is not None)),
                    'fs': opt.fs, 'input_length': opt.inputLength, 'n_classes': opt.nClasses},
        'class_names': class_names(data, opt.nClasses),
        'data': dict(data or {}, dataset=opt.dataset, trim=info.trim),
        'versions': versions(), 'device': device_record(device), 'code': code_record(),
        'host': {'platform': platform.platform(), 'cpus': os.cpu_count()},
    }


def write_run_record(split_dir, opt, split, model, device, seed, data=None, resume=False):
    """Write ``split_dir``/record.json (:func:`run_record`); returns warning lines (str).

    A new run writes its record. ``--resume`` keeps the record of the run's start, appends the
    resuming process's code, versions, device and command to its ``resumed`` list, and returns
    what differs from the start (:func:`record_differences`); a split without a record (begun
    before records were written) gets one, noting that it was written at a resume.
    """
    path = os.path.join(split_dir, RECORD_FILE)
    record = run_record(opt, split, model, device, seed, data)
    warnings = []
    first = read_run_record(split_dir) if resume else None
    if first is not None:
        warnings = record_differences(first, data=data, now=record)
        first.setdefault('resumed', []).append(
            {key: record[key] for key in ('written', 'command', 'versions', 'device', 'code')})
        record = first
    elif resume:
        record['note'] = 'written when the run was resumed; its start has no record'
    utils.write_json(path, record)
    return warnings


def read_run_record(split_dir):
    """The split's record.json as a dict, or None when it has none (a run from before records
    were written). Raises UserError naming the file when it is not readable JSON."""
    path = os.path.join(split_dir, RECORD_FILE)
    if not os.path.isfile(path):
        return None
    return utils.read_json_object(path, 'restore it from a backup, or delete it (the run then '
                                        'has no record)')


def _code_text(code):
    if not code or code.get('commit') is None:
        return 'no git commit known'
    text = f'commit {code["commit"][:12]}'
    if not code.get('clean'):
        changed = code.get('changed') or []
        text += (f' with uncommitted changes to {", ".join(changed[:3])}'
                 + (f' and {len(changed) - 3} more' if len(changed) > 3 else ''))
    return text


def record_differences(record, data=None, now=None):
    """What differs between a run record and the present, as one-line texts (empty: nothing).

    Args:
        record: a run record (:func:`run_record`, read back from record.json).
        data: :func:`data_record` of the data file in use now, or None (not compared).
        now: the present's record (compared: ``code``, ``versions``); None computes them.

    Compared: the code (git commit and uncommitted changes), the versions of Python, NumPy,
    SciPy, Chainer and CuPy, and, with ``data``, the data file (size and SHA-256; another path
    to the same bytes is not a difference).
    """
    now = now or {'code': code_record(), 'versions': versions()}
    lines = []
    before, current = record.get('code') or {}, now['code']
    if (before.get('commit'), before.get('diff_sha256')) != (current.get('commit'),
                                                              current.get('diff_sha256')):
        lines.append(f'the code differs from the run record: trained with '
                     f'{_code_text(before)}, now {_code_text(current)}; results may differ')
    old_versions = record.get('versions') or {}
    for key, name in (('python', 'Python'), ('numpy', 'NumPy'), ('scipy', 'SciPy'),
                      ('chainer', 'Chainer'), ('cupy', 'CuPy')):
        if key in old_versions and old_versions[key] != now['versions'].get(key):
            lines.append(f'{name} {old_versions[key] or "absent"} when trained, '
                         f'{now["versions"].get(key) or "absent"} now; results may differ')
    old_data = record.get('data') or {}
    if data is not None and old_data.get('sha256') and (
            old_data.get('sha256'), old_data.get('bytes')) != (data['sha256'], data['bytes']):
        lines.append(f'the data differs from the run record: {data["file"]} ({data["bytes"]} '
                     f'bytes, SHA-256 {data["sha256"][:12]}) is not the file trained on '
                     f'({old_data.get("file")}, {old_data.get("bytes")} bytes, SHA-256 '
                     f'{old_data["sha256"][:12]})')
    return lines
