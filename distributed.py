"""Multi-process training plumbing (ChainerMN over MPI; ``main.py --communicator``).

What the ranks of one job share and how they split the work: setup errors raised on every rank
together (:func:`all_ranks_ok`, :func:`on_root`, :class:`AllRanksError`), each rank's own seed
(:func:`rank_seed`), the check that every rank loaded the same data (:func:`data_fingerprint`),
the scatter of the training and test clips (:func:`scatter_indices`, :func:`interleaved_order`),
batch normalisation over the global batch (:func:`global_batch_normalization_class`) and each
rank's own iterator order after a resume (:func:`own_order`). Nothing here imports ChainerMN or
mpi4py until a communicator is used.
"""
import zlib

import numpy as np

import compat  # noqa: F401
import chainer

from utils import UserError


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


