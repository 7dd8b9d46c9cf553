"""Pickle-free dataset files (docs/method.md §2): save and load the per-fold clips of one dataset at one rate.

File layout (an uncompressed ``.npz`` written by ``np.savez``; clips are int16 audio that barely
compresses, so compression would cost time for little space), for each fold ``k`` (1-based):

- ``fold{k}_sounds``:  int16, shape (N_k,), every clip of the fold concatenated (PCM samples,
  full scale +-32768);
- ``fold{k}_offsets``: int64, shape (n_k + 1,), clip ``i`` is ``sounds[offsets[i]:offsets[i+1]]``;
  ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == N_k``;
- ``fold{k}_labels``:  int32, shape (n_k,), class index of each clip, in ``[0, len(class_names))``;

plus ``fs`` (int64 scalar, sample rate in Hz), ``class_names`` (unicode string array, shape (C,),
never an object array) and ``format_version`` (int64 scalar, :data:`FORMAT_VERSION`).

Everything loads with ``np.load(..., allow_pickle=False)``. The legacy format of the BC-learning
reference generators (entries ``fold1``..``foldK`` that are pickled object arrays holding dicts
``{'sounds': [...], 'labels': [...]}``) loads only with ``allow_pickle=True`` (``--allowPickle``),
because unpickling an untrusted file runs arbitrary code.

Every problem with a file raises :class:`utils.UserError` with a one-line message naming the file.
"""
import dataclasses
import os
import re
import zipfile

import numpy as np

from utils import UserError, atomic_write

FORMAT_VERSION = 1

# ``wavNN`` in a legacy file name -> sample rate (Hz).
LEGACY_RATES = {8: 8000, 11: 11025, 16: 16000, 22: 22050, 24: 24000, 32: 32000, 44: 44100,
                48: 48000}

_FOLD_KEY = re.compile(r'^fold(\d+)_(sounds|offsets|labels)$')
_LEGACY_KEY = re.compile(r'^fold(\d+)$')


@dataclasses.dataclass
class SoundSet:
    """One dataset at one sample rate, as loaded by :func:`load_sound_npz`.

    Attributes:
        fs: sample rate in Hz (int).
        class_names: list of C class names (str); label ``c`` names ``class_names[c]``.
        folds: dict {fold number (int, 1-based): (sounds, labels)}, where ``sounds`` is a list of
            1-D int16 arrays (one per clip; views into the fold's concatenated array for the
            current format, so treat them as read-only) and ``labels`` an int32 array of the same
            length.
        path: the file it was loaded from (str).
        legacy: True when it came from a legacy pickled file.
    """
    fs: int
    class_names: list
    folds: dict
    path: str = ''
    legacy: bool = False

    @property
    def n_classes(self):
        """Number of classes C (``len(class_names)``)."""
        return len(self.class_names)

    def fold_numbers(self):
        """Sorted list of the fold numbers present."""
        return sorted(self.folds)


def save_sound_npz(path, folds, fs, class_names):
    """Write one dataset at one rate to ``path`` in the pickle-free format (module docstring).

    Args:
        path: output file name; should end in ``.npz``.
        folds: dict {fold number (int >= 1): (sounds, labels)}; ``sounds`` a sequence of 1-D int16
            arrays (one clip each, samples), ``labels`` a sequence/array of ints in
            ``[0, len(class_names))`` of the same length. Must hold at least one fold.
        fs: sample rate in Hz (positive int).
        class_names: sequence of str, indexed by label.

    The file is written uncompressed (``np.savez``) under a temporary name in the same directory
    and renamed over ``path`` (:func:`utils.atomic_write`): ``path`` is either left as it was or
    holds the complete new file; no temporary file remains, even on error.

    Raises:
        ValueError / TypeError: arguments that do not match the above (a programming error).
        OSError: the file cannot be written (directory not writable, disk full...).
    """
    if not folds:
        raise ValueError('save_sound_npz: no folds to write')
    class_arr = np.array([str(c) for c in class_names], dtype=str)
    if class_arr.ndim != 1:
        raise ValueError('save_sound_npz: class_names must be a 1-D sequence of str')
    n_classes = len(class_arr)
    fs_int = int(fs)
    if fs_int != fs or fs_int <= 0:
        raise ValueError('save_sound_npz: fs must be a positive integer (Hz), got %r' % (fs,))
    arrays = {}
    for k in sorted(folds):
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError('save_sound_npz: fold numbers must be ints >= 1, got %r' % (k,))
        sounds, labels = folds[k]
        sounds = list(sounds)
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(sounds):
            raise ValueError('save_sound_npz: fold %d has %d clips but labels of shape %s'
                             % (k, len(sounds), labels.shape))
        if len(labels) and not np.issubdtype(labels.dtype, np.integer):
            raise TypeError('save_sound_npz: fold %d labels must be integers, got %s'
                            % (k, labels.dtype))
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError('save_sound_npz: fold %d labels outside [0, %d)' % (k, n_classes))
        for i, s in enumerate(sounds):
            if not isinstance(s, np.ndarray) or s.dtype != np.int16 or s.ndim != 1:
                raise TypeError('save_sound_npz: fold %d clip %d must be a 1-D int16 array'
                                % (k, i))
        lengths = np.array([len(s) for s in sounds], dtype=np.int64)
        offsets = np.zeros(len(sounds) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        concatenated = (np.concatenate(sounds) if sounds else np.zeros(0, dtype=np.int16))
        arrays['fold%d_sounds' % k] = concatenated.astype(np.int16, copy=False)
        arrays['fold%d_offsets' % k] = offsets
        arrays['fold%d_labels' % k] = labels.astype(np.int32)
    arrays['fs'] = np.array(fs_int, dtype=np.int64)
    arrays['class_names'] = class_arr
    arrays['format_version'] = np.array(FORMAT_VERSION, dtype=np.int64)

    atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix='.npz')


def load_sound_npz(path, allow_pickle=False):
    """Load a dataset file written by :func:`save_sound_npz` (or a legacy one, see below).

    Args:
        path: the ``.npz`` file.
        allow_pickle: also accept the legacy pickled format of the BC-learning generators
            (entries ``fold{k}`` = pickled ``{'sounds': [...], 'labels': [...]}``). Only for
            trusted files: unpickling runs code. For a legacy file, ``fs`` comes from the file
            name (``wav16.npz`` -> 16000, ``wav44.npz`` -> 44100, ...; see :data:`LEGACY_RATES`)
            and the class names are ``['class0', ..., 'class{C-1}']`` with C = max label + 1.

    Returns:
        :class:`SoundSet`.

    Raises:
        utils.UserError: (one line, naming the file) the file is missing or not an npz, lacks a
            key, has inconsistent offsets or labels, an unknown ``format_version``, or is a legacy
            pickled file and ``allow_pickle`` is False.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError('%s: no such file' % path)
    if os.path.isdir(path):
        raise UserError('%s: is a directory, not an .npz file' % path)
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as e:
        raise UserError('%s: cannot read (%s)' % (path, e)) from None
    if not is_zip:
        raise UserError('%s: not an .npz (zip) file' % path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if 'format_version' not in keys and any(_LEGACY_KEY.match(k) for k in keys):
                legacy = True
            else:
                legacy = False
                return _load_current(path, z, keys)
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise UserError('%s: corrupt .npz file (%s)' % (path, one_line(e))) from None
    if legacy:
        if not allow_pickle:
            raise UserError(
                '%s: legacy pickled dataset file (BC-learning generator format); unpickling an '
                'untrusted file runs code, so it is refused: pass --allowPickle if the file is '
                'trusted, or regenerate it with esc_gen.py' % path)
        return _load_legacy(path)
    raise AssertionError('unreachable')


def one_line(e):
    """An exception's message on one line (for ``UserError`` messages)."""
    return ' '.join(str(e).split()) or type(e).__name__


def _get(path, z, key):
    """Read one entry of an open NpzFile, turning any failure into a UserError."""
    try:
        return z[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise UserError('%s: cannot read entry %r (%s)' % (path, key, one_line(e))) from None


def _scalar_int(path, z, key):
    a = _get(path, z, key)
    if a.shape != () or not np.issubdtype(a.dtype, np.integer):
        raise UserError('%s: %r must be an integer scalar, got dtype %s shape %s'
                        % (path, key, a.dtype, a.shape))
    return int(a)


def _load_current(path, z, keys):
    for key in ('format_version', 'fs', 'class_names'):
        if key not in keys:
            raise UserError('%s: missing key %r (not a dataset file written by esc_gen.py?)'
                            % (path, key))
    version = _scalar_int(path, z, 'format_version')
    if version != FORMAT_VERSION:
        raise UserError('%s: format_version %d is not supported (this program reads version %d)'
                        % (path, version, FORMAT_VERSION))
    fs = _scalar_int(path, z, 'fs')
    if fs <= 0:
        raise UserError('%s: fs must be positive, got %d' % (path, fs))
    names = _get(path, z, 'class_names')
    if names.ndim != 1 or names.dtype.kind != 'U':
        raise UserError('%s: class_names must be a 1-D unicode array, got dtype %s shape %s'
                        % (path, names.dtype, names.shape))
    class_names = [str(c) for c in names]

    fold_numbers = sorted({int(m.group(1)) for m in map(_FOLD_KEY.match, keys) if m})
    if not fold_numbers:
        raise UserError('%s: no folds (no fold{k}_sounds entries)' % path)
    folds = {}
    for k in fold_numbers:
        for part in ('sounds', 'offsets', 'labels'):
            if 'fold%d_%s' % (k, part) not in keys:
                raise UserError('%s: missing key %r' % (path, 'fold%d_%s' % (k, part)))
        sounds = _get(path, z, 'fold%d_sounds' % k)
        offsets = _get(path, z, 'fold%d_offsets' % k)
        labels = _get(path, z, 'fold%d_labels' % k)
        if sounds.ndim != 1 or sounds.dtype != np.int16:
            raise UserError('%s: fold%d_sounds must be 1-D int16, got dtype %s shape %s'
                            % (path, k, sounds.dtype, sounds.shape))
        if offsets.ndim != 1 or not np.issubdtype(offsets.dtype, np.integer) or len(offsets) < 1:
            raise UserError('%s: fold%d_offsets must be a non-empty 1-D integer array'
                            % (path, k))
        offsets = offsets.astype(np.int64, copy=False)
        if offsets[0] != 0 or offsets[-1] != len(sounds) or np.any(np.diff(offsets) < 0):
            raise UserError('%s: fold%d_offsets inconsistent (must start at 0, never decrease and '
                            'end at len(fold%d_sounds) = %d)' % (path, k, k, len(sounds)))
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise UserError('%s: fold%d_labels must be a 1-D integer array' % (path, k))
        if len(labels) != len(offsets) - 1:
            raise UserError('%s: fold%d has %d clips (offsets) but %d labels'
                            % (path, k, len(offsets) - 1, len(labels)))
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise UserError('%s: fold%d_labels outside [0, %d) (len(class_names))'
                            % (path, k, len(class_names)))
        clips = [sounds[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
        folds[k] = (clips, labels.astype(np.int32, copy=False))
    return SoundSet(fs=fs, class_names=class_names, folds=folds, path=path, legacy=False)


def legacy_fs_from_name(path):
    """Sample rate (Hz) of a legacy file from its name ``wavNN.npz``; UserError when unknown."""
    m = re.match(r'^wav(\d+)\.npz$', os.path.basename(path))
    if not m or int(m.group(1)) not in LEGACY_RATES:
        raise UserError('%s: cannot tell the sample rate of a legacy dataset file from its name '
                        '(expected wavNN.npz with NN in %s)'
                        % (path, ', '.join(str(n) for n in sorted(LEGACY_RATES))))
    return LEGACY_RATES[int(m.group(1))]


def _load_legacy(path):
    fs = legacy_fs_from_name(path)
    folds = {}
    try:
        with np.load(path, allow_pickle=True) as z:
            for key in z.files:
                m = _LEGACY_KEY.match(key)
                if not m:
                    continue
                k = int(m.group(1))
                entry = z[key]
                d = entry.item() if entry.dtype == object and entry.shape == () else None
                if not isinstance(d, dict) or 'sounds' not in d or 'labels' not in d:
                    raise UserError("%s: legacy entry %r is not a dict with 'sounds' and 'labels'"
                                    % (path, key))
                sounds = [_legacy_clip(path, key, i, s) for i, s in enumerate(d['sounds'])]
                labels = np.asarray(d['labels'])
                if labels.ndim != 1 or len(labels) != len(sounds) or (
                        len(labels) and not np.issubdtype(labels.dtype, np.integer)):
                    raise UserError('%s: legacy entry %r has %d sounds but labels of shape %s'
                                    % (path, key, len(sounds), labels.shape))
                if len(labels) and labels.min() < 0:
                    raise UserError('%s: legacy entry %r has negative labels' % (path, key))
                folds[k] = (sounds, labels.astype(np.int32))
    except UserError:
        raise
    except Exception as e:  # unpickling can raise nearly anything
        raise UserError('%s: cannot load legacy dataset file (%s)' % (path, one_line(e))) from None
    n_classes = 1 + max((int(lab.max()) for _, lab in folds.values() if len(lab)), default=-1)
    class_names = ['class%d' % c for c in range(n_classes)]
    return SoundSet(fs=fs, class_names=class_names, folds=folds, path=path, legacy=True)


def _legacy_clip(path, key, i, s):
    a = np.asarray(s)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise UserError('%s: legacy entry %r clip %d is not a 1-D integer array' % (path, key, i))
    if a.dtype != np.int16:
        if len(a) and (a.min() < -32768 or a.max() > 32767):
            raise UserError('%s: legacy entry %r clip %d does not fit in int16' % (path, key, i))
        a = a.astype(np.int16)
    return a
