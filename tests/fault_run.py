"""Run ``main.py`` or ``esc_gen.py`` and kill -9 it at a chosen point. Used by ``tests/test_faults.py``
as ``python tests/fault_run.py PROGRAM ARGS...`` with ``FAULT_KILL=POINT:N`` in the environment.

The process sends itself SIGKILL (as ``kill -9 PID`` does: no handler, no ``finally``, no flush)
at the N-th (1-based) occurrence of POINT:

- ``step``: inside training step N, after the backward pass, before the optimizer's update;
- ``snapshot``: while writing the N-th ``snapshot.npz`` (half of Chainer's temporary file written);
- ``test``: in the N-th batch of test clips (counted over every test of the run);
- ``model``: while writing ``model.npz`` (half of its temporary file written);
- ``result``: while writing ``result.json`` (its temporary file complete, not yet renamed);
- ``npz``: (``esc_gen.py``) while writing the N-th dataset file (half written).

With ``FAULT_SIGNAL=TERM`` (or ``INT``) the process sends itself that signal instead, at the
same points of ``step``, ``snapshot`` (before the N-th snapshot's file is written) and ``test``,
and runs on: what the program does with the signal is what is tested.

Without ``FAULT_KILL`` the program runs unchanged.
"""
import os
import signal
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


SIGNAL = {'': None, 'TERM': signal.SIGTERM, 'INT': signal.SIGINT}[os.environ.get('FAULT_SIGNAL', '')]


def die():
    """kill -9 this process (with ``FAULT_SIGNAL``: send that signal, and return)."""
    sys.stdout.flush()
    os.kill(os.getpid(), SIGNAL or signal.SIGKILL)


def countdown(n):
    """A function that returns True on its n-th call."""
    calls = [0]

    def due():
        calls[0] += 1
        return calls[0] == n
    return due


def half_written(path):
    """Cut the file at ``path`` to half its length, as a write stopped midway leaves it."""
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)


def arm(point, n):
    """Patch the program's functions so that the process kills itself at ``point``, n-th time."""
    import compat  # noqa: F401
    import chainer
    import checkpoint
    import evaluation
    import utils
    due = countdown(n)
    if point == 'step':
        real_update = chainer.optimizers.NesterovAG.update

        def update(self, *args, **kwargs):
            if due():
                die()
            return real_update(self, *args, **kwargs)
        chainer.optimizers.NesterovAG.update = update
    elif point in ('snapshot', 'model') and SIGNAL:
        real_save = checkpoint.save_npz_uncompressed

        def save(path, target, where=None):
            is_snapshot = os.path.basename(path) == 'snapshot.npz'
            if is_snapshot == (point == 'snapshot') and due():
                die()
            real_save(path, target, where)
        checkpoint.save_npz_uncompressed = save
    elif point in ('snapshot', 'model'):
        real_save = checkpoint.save_npz_uncompressed

        def save(path, target, where=None):
            real_save(path, target, where)
            is_snapshot = os.path.basename(path) == 'snapshot.npz'
            if is_snapshot == (point == 'snapshot') and due():
                half_written(path)
                die()
        checkpoint.save_npz_uncompressed = save
    elif point == 'test':
        real_probabilities = evaluation.ten_crop_probabilities

        def probabilities(*args):
            if due():
                die()
            return real_probabilities(*args)
        evaluation.ten_crop_probabilities = probabilities
    elif point == 'result':
        real_atomic = utils.atomic_write

        def atomic_write(path, write_fn, suffix=''):
            if os.path.basename(path) != 'result.json' or not due():
                return real_atomic(path, write_fn, suffix)
            return real_atomic(path, lambda tmp: (write_fn(tmp), die()), suffix)
        utils.atomic_write = atomic_write
    elif point == 'npz':
        from datagen import npzio
        real_atomic = npzio.atomic_write

        def atomic_write(path, write_fn, suffix=''):
            if not due():
                return real_atomic(path, write_fn, suffix)
            return real_atomic(path, lambda tmp: (write_fn(tmp), half_written(tmp), die()),
                               suffix)
        npzio.atomic_write = atomic_write
    else:
        raise SystemExit(f'fault_run.py: unknown FAULT_KILL point {point!r}')


def main(argv):
    program, args = argv[0], argv[1:]
    fault = os.environ.get('FAULT_KILL')
    if fault:
        point, _, n = fault.partition(':')
        arm(point, int(n or 1))
    if program == 'main.py':
        import main as entry
    elif program == 'esc_gen.py':
        import esc_gen as entry
    else:
        raise SystemExit(f'fault_run.py: unknown program {program!r}')
    return entry.main(args)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
