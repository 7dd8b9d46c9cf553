"""The files that hold a split's state: weights and trainer snapshots.

:func:`save_npz_uncompressed` writes them (byte-stable, refusing NaN or infinity:
:class:`NonFiniteWeightsError`); :func:`check_snapshot` and :func:`load_snapshot` check and
load a snapshot for ``--resume``; :func:`remove_stale_temps` removes what a killed run left
half-written. :class:`NonFiniteLossError` is what the updater raises on a non-finite loss.
"""
import os
import shutil
import zipfile

import numpy as np

import compat  # noqa: F401
import chainer

import utils
from utils import UserError


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
    ``DIR/tmpsnapshot.npzXXXX/snapshot.npz`` (-> ``DIR/snapshot.npz``); other paths are returned
    unchanged (:func:`utils.atomic_write` names its own temporary files' errors after the final
    file)."""
    folder, name = os.path.split(path)
    if os.path.basename(folder).startswith('tmp' + name):
        return os.path.join(os.path.dirname(folder), name)
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


def snapshot_epoch(path):
    """The number of epochs the trainer snapshot at ``path`` had finished (the updater's
    ``epoch``, its main iterator's), or None when there is no readable snapshot there."""
    try:
        with np.load(path) as z:
            return int(z['updater/iterator:main/epoch'])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None


def load_snapshot(path, trainer, split):
    """Load ``path`` (a split's ``snapshot.npz``) into ``trainer``; a damaged file or one of
    another run is a UserError saying what to delete."""
    try:
        chainer.serializers.load_npz(path, trainer)
    except Exception as e:  # noqa: BLE001 - zip, npz and key/shape errors alike
        raise _snapshot_error(path, split, f'{type(e).__name__}: {e}') from None


