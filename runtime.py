"""What a run needs before it trains, shared by ``main.py``, ``bench.py`` and ``predict.py``:
the Chainer device (:func:`select_device`, :func:`setup_device`), the data file loaded and
checked on every rank (:func:`load_data`) and the default number of data worker processes
(:func:`default_workers`).
"""
import os

import numpy as np

import compat  # noqa: F401
import chainer

import dataset
import distributed
from utils import UserError


def _cupy_missing():
    """Why Chainer has no CuPy: 'CuPy is not installed', or 'CuPy is installed but cannot be
    used (its error)' (e.g. a CUDA library it needs is missing)."""
    import importlib.util
    from chainer.backends import cuda
    if importlib.util.find_spec('cupy') is None:
        return 'CuPy is not installed'
    error = getattr(cuda, '_resolution_error', None)
    detail = f': {type(error).__name__}: {" ".join(str(error).split())[:120]}' if error else ''
    return f'CuPy is installed but cannot be used{detail}'


def select_device(gpu, intra_rank=None):
    """The Chainer device for ``--gpu`` (None: GPU 0 when CuPy sees one, else CPU), and a line
    saying which was chosen. Raises UserError if a GPU is asked for and none is usable.

    Under MPI (``intra_rank``, the rank within its node) each rank takes its own GPU: GPU
    ``intra_rank`` by default, ``--gpu G`` + ``intra_rank`` with ``--gpu G``; ``--gpu -1`` the CPU.
    """
    from chainer.backends import cuda
    n_gpus = 0
    if cuda.available:
        try:
            n_gpus = cuda.cupy.cuda.runtime.getDeviceCount()
        except Exception:  # CuPy installed but no driver/device
            n_gpus = 0
    if gpu is None:
        gpu = 0 if n_gpus > 0 else -1
        how = 'default'
    else:
        how = '--gpu'
    if intra_rank is not None and gpu >= 0:
        base, gpu = gpu, gpu + intra_rank
        how += f' {base} + intra-node rank {intra_rank}'
        if gpu >= n_gpus:
            raise UserError(f'--gpu: intra-node rank {intra_rank} would use GPU {gpu}, but CuPy '
                            f'sees {n_gpus} GPU(s) on this node; start at most {n_gpus - base} '
                            f'rank(s) per node, or --gpu -1 for the CPU')
    if gpu < 0:
        reason = '' if how == '--gpu' else ' (CuPy sees no GPU)' if cuda.available else \
            f' ({_cupy_missing()})'
        return chainer.get_device('@numpy'), f'device: CPU (NumPy){reason}'
    if gpu >= n_gpus:
        what = _cupy_missing() if not cuda.available else f'CuPy sees {n_gpus} GPU(s)'
        raise UserError(f'--gpu {gpu}: {what}; use --gpu -1 for the CPU')
    device = chainer.get_device(f'@cupy:{gpu}')
    device.use()
    cudnn = 'with cuDNN' if getattr(cuda, 'cudnn_enabled', False) else 'without cuDNN'
    return device, f'device: GPU {gpu} (CuPy {cuda.cupy.__version__}, {cudnn}; {how})'


def setup_device(opt, comm):
    """``select_device`` on this rank, checked against the communicator; (device, line)."""
    device, line = select_device(opt.gpu, None if comm is None else comm.intra_rank)
    if comm is not None and device.xp is np and opt.communicator != 'naive':
        raise UserError(f'--communicator {opt.communicator} needs a GPU per rank (this rank is on '
                        f'the CPU); on the CPU use --communicator naive')
    return device, line


def load_data(opt, comm):
    """The dataset, loaded on every rank and checked to be the same file content everywhere."""
    soundset = distributed.all_ranks_ok(comm, dataset.load_dataset, opt.data, opt.dataset, opt.fs,
                                     allow_pickle=opt.allowPickle)
    if comm is not None:
        prints = comm.mpi_comm.allgather(distributed.data_fingerprint(soundset))
        differ = [r for r, p in enumerate(prints) if p != prints[0]]
        if differ:
            raise distributed.AllRanksError(
                f'rank{"s" * (len(differ) > 1)} {", ".join(map(str, differ))} loaded other clips '
                f'than rank 0 from --data {opt.data} ({soundset.path}); every rank must read the '
                f'same file')
    return soundset


def default_workers(device, per_node=1):
    """The default of --nWorkers: 0 on the CPU (workers would compete with the layers for the
    cores), else min(8, CPU cores / processes on this node)."""
    return 0 if device.xp is np else min(8, max(1, (os.cpu_count() or 1) // per_node))
