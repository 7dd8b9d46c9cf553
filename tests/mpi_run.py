"""Run ``main.py`` as one process (or one MPI rank), with test-only changes chosen by environment
variables. Used by ``tests/test_mpi.py`` as ``mpiexec -n N python tests/mpi_run.py MAIN-ARGS``.

- ``MPI_TEST_DETERMINISTIC=1``: no dropout (``F.dropout`` is the identity) and the centre crop
  instead of the random training crop, so that standard learning with ``--noShuffle`` sees the
  same examples in the 1-process and the N-rank run (:func:`make_deterministic`).
- ``MPI_TEST_FLOAT64=1``: the network and its inputs in float64 (:func:`use_float64`). In float32
  the 1-process and N-rank runs differ by rounding (BN statistics summed in another order), and
  max pooling turns such differences into a few percent of the update within a few steps (a
  window's maximum moves to another sample); float64 keeps them near 1e-12.
- ``MPI_TEST_BAD_DATA_RANK=r``: rank r gets ``--data`` pointing at a folder that does not exist.
- ``MPI_TEST_FAIL_RANK=r`` and ``MPI_TEST_FAIL_ITERATION=i``: rank r raises ``RuntimeError`` at the
  end of training iteration i (1-based, counted over the whole run), while the other ranks wait
  for it in the next collective operation.

The rank is read from the launcher's environment (Open MPI, MPICH), without importing mpi4py.
"""
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def launcher_rank():
    """This process's MPI rank from the launcher's environment (0 outside MPI)."""
    for key in ('OMPI_COMM_WORLD_RANK', 'PMI_RANK'):
        if os.environ.get(key, '').isdigit():
            return int(os.environ[key])
    return 0


def centre_crop(sound, size, rng):
    """Deterministic stand-in for ``utils.random_crop``: the middle ``size`` samples."""
    start = (len(sound) - size) // 2
    return sound[start:start + size]


def no_dropout(x, ratio=0.5, **kwargs):
    """Stand-in for ``chainer.functions.dropout``: the identity."""
    return x


def make_deterministic():
    """Remove the randomness of standard learning (dropout, the random crop), in this process."""
    import compat  # noqa: F401
    import chainer.functions as F
    import utils
    F.dropout = no_dropout
    utils.random_crop = centre_crop


def use_float64():
    """Parameters (Chainer's default dtype) and preprocessed crops in float64, in this process."""
    import numpy as np
    import compat  # noqa: F401
    import chainer
    import dataset
    chainer.global_config.dtype = np.dtype(np.float64)
    train, test = dataset.Preprocessor.train, dataset.Preprocessor.test
    dataset.Preprocessor.train = lambda self, *a: train(self, *a).astype(np.float64)
    dataset.Preprocessor.test = lambda self, *a: test(self, *a).astype(np.float64)


def inject_failure(fail_iteration):
    """Make this process's training raise RuntimeError in iteration ``fail_iteration``, after its
    update (so after the gradient all-reduce of that iteration: every rank has finished the
    previous epoch, rank 0's snapshot included)."""
    import training
    real = training.MixingUpdater.update_core

    def update_core(self):
        real(self)
        if self.iteration + 1 == fail_iteration:
            raise RuntimeError(f'injected failure in iteration {fail_iteration}')
    training.MixingUpdater.update_core = update_core


def main(argv):
    rank = launcher_rank()
    argv = list(argv)
    if os.environ.get('MPI_TEST_DETERMINISTIC') == '1':
        make_deterministic()
    if os.environ.get('MPI_TEST_FLOAT64') == '1':
        use_float64()
    bad = os.environ.get('MPI_TEST_BAD_DATA_RANK')
    if bad is not None and int(bad) == rank:
        argv[argv.index('--data') + 1] = os.path.join(os.sep, 'nonexistent', f'data-of-rank-{rank}')
    fail = os.environ.get('MPI_TEST_FAIL_RANK')
    if fail is not None and int(fail) == rank:
        inject_failure(int(os.environ.get('MPI_TEST_FAIL_ITERATION', '1')))
    import main as program
    return program.main(argv)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
