"""Shared helpers: the user-error type, atomic file writes, and the per-clip preprocessing of
docs/method.md §3 (Tokozume et al. 2018, section 4 / the BC-learning reference's ``utils.py``).

Preprocessing functions take and return 1-D NumPy arrays of one clip (samples). Randomness comes
from an explicit ``numpy.random.Generator`` so that runs are reproducible from ``--seed``.
"""
import argparse
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import tempfile

import numpy as np


class UserError(Exception):
    """A mistake in the user's input (a flag, a path, a data file).

    Entry points catch it, print ``<program>: error: <message>`` on one line to stderr and exit
    with status 2, without a traceback. The message names the flag or file at fault.
    """


class OneLineParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are one line on stderr, exit status 2.

    ``PROG: error: MESSAGE; see PROG --help`` instead of argparse's usage block followed by the
    message, so that every user error of the programs has the same one-line form.
    """

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}; see {self.prog} --help\n')


def atomic_write(path, write_fn, suffix=''):
    """Write a file so that ``path`` is either absent/unchanged or complete, never truncated.

    ``write_fn(tmp_path)`` writes the content to a temporary name in the same directory, which is
    then renamed over ``path`` (``os.replace``, atomic on POSIX). On any exception the temporary
    file is removed and the exception re-raised. ``suffix`` is appended to the temporary name
    (``np.savez`` needs a name ending in ``.npz``).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp' + suffix,
                               dir=directory)
    os.close(fd)
    try:
        write_fn(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):
            e.filename = path  # the file the user knows (a full disk names it)
        raise


class FolderLock:
    """One writer per folder: an exclusive ``fcntl.flock`` on ``FOLDER/lock``, which holds the
    owner's PID, host and start time (JSON) for whoever finds it taken.

    The kernel drops a flock when its process ends however it ends (``kill -9`` included), so a
    lock left by a process that is gone is simply taken over (:meth:`acquire` returns the old
    owner's record then, for a message). Local file systems; on NFS ``flock`` is emulated with
    POSIX locks by Linux since 2.6.12.
    """

    NAME = 'lock'

    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, self.NAME)
        self._fd = None

    def owner(self):
        """The record in the lock file ({'pid', 'host', 'started'}), or None."""
        try:
            with open(self.path) as f:
                record = json.loads(f.read() or 'null')
            return record if isinstance(record, dict) else None
        except (OSError, ValueError):
            return None

    def acquire(self, what='this folder'):
        """Take the lock (creating the folder). Returns the record of a previous owner that is
        gone (its lock taken over), else None. Raises :class:`UserError` naming the PID and host
        of a live owner, at once (no waiting)."""
        os.makedirs(self.folder, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                other = self.owner() or {}
                raise UserError(f'{what} is in use by process {other.get("pid", "?")} on host '
                                f'{other.get("host", "?")} (started {other.get("started", "?")}; '
                                f'{self.path}); wait for it to end, or stop it first') from None
            try:  # the file locked must still be the one at the path (not removed meanwhile)
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        previous = self.owner()
        record = {'pid': os.getpid(), 'host': socket.gethostname(),
                  'started': datetime.datetime.now().isoformat(timespec='seconds')}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + '\n').encode(), 0)
        self._fd = fd
        return previous

    def release(self):
        """Remove the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def progress(iterable=None, **kwargs):
    """A ``tqdm`` progress bar on stderr (``file`` may name another stream).

    Shown only when that stream is a terminal: redirected to a log file, a bar would fill it with
    carriage-return lines, so it is disabled there (and wherever ``disable=True`` is passed).
    Other keyword arguments go to ``tqdm`` (``total``, ``desc``, ``unit``, ``leave``...).
    """
    from tqdm import tqdm
    stream = kwargs.setdefault('file', sys.stderr)
    isatty = getattr(stream, 'isatty', None)
    if not (isatty and isatty()):
        kwargs['disable'] = True
    return tqdm(iterable, **kwargs)


def command(script, cwd=None):
    """How to run the project's ``script`` (e.g. 'main.py') as one types it, for hints.

    The interpreter running now (after ``bash scripts/setup.sh``, the project's
    ``.venv/bin/python``) and the script in this repository, each as a path relative to ``cwd``
    (default: the current directory) when it lies below it, else absolute; e.g.
    ``.venv/bin/python esc_gen.py`` in the repository root. Returns a str.
    """
    here = os.path.abspath(cwd or os.getcwd())

    def short(path):
        rel = os.path.relpath(path, here)
        return path if rel.startswith(os.pardir) else rel
    repo = os.path.dirname(os.path.abspath(__file__))
    python = short(sys.executable) if sys.executable else 'python3'
    if os.sep not in python:
        python = os.path.join(os.curdir, python)  # a bare name would be looked up on PATH
    return f'{python} {short(os.path.join(repo, script))}'


def read_json_object(path, hint):
    """The JSON object (dict) in the file ``path``.

    Raises UserError '<path>: unreadable (...); <hint>' when the file cannot be read or parsed,
    and '<path>: not a JSON object; <hint>' when it holds another JSON value; ``hint`` says what
    to do.
    """
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'{path}: unreadable ({type(e).__name__}: {e}); {hint}') from None
    if not isinstance(value, dict):
        raise UserError(f'{path}: not a JSON object; {hint}')
    return value


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically (see :func:`atomic_write`)."""
    def write(tmp):
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write('\n')
    atomic_write(path, write)


# ---------------------------------------------------------------------------------------------
# Per-clip preprocessing (docs/method.md §3). Each takes a 1-D float array (samples) and returns a new one.

def random_scale(sound, max_scale, rng):
    """Time-scale augmentation: stretch by ``max_scale ** U(-1, 1)`` with linear interpolation.

    Output length ``int(len(sound) * scale)`` samples; sample k is read at position k / scale
    (BC-learning reference, ``U.random_scale``). Changes pitch and duration together.
    """
    scale = max_scale ** rng.uniform(-1, 1)
    output_size = int(len(sound) * scale)
    ref = np.arange(output_size) / scale
    ref1 = ref.astype(np.int64)
    ref2 = np.minimum(ref1 + 1, len(sound) - 1)
    frac = ref - ref1
    return sound[ref1] * (1 - frac) + sound[ref2] * frac


def padding(sound, pad):
    """Zero-pad ``pad`` samples on each side."""
    return np.pad(sound, pad, mode='constant')


def random_crop(sound, size, rng):
    """A random window of ``size`` samples (start uniform over all valid offsets).

    Raises ValueError if the sound is shorter than ``size``.
    """
    if len(sound) < size:
        raise ValueError(f'random_crop: sound of {len(sound)} samples is shorter than {size}')
    start = rng.integers(0, len(sound) - size + 1)
    return sound[start:start + size]


def normalize(sound, factor=32768.0):
    """Divide by ``factor`` (int16 full scale -> [-1, 1))."""
    return sound / factor


def random_gain(sound, db, rng):
    """Gain augmentation: multiply by ``10 ** (U(-db, db) / 20)`` (uniform in dB)."""
    return sound * np.power(10, rng.uniform(-db, db) / 20.0)


def multi_crop(sound, size, n_crops):
    """``n_crops`` windows of ``size`` samples at equal strides from start to end.

    Returns an array (n_crops, size). The stride is ``(len - size) // (n_crops - 1)`` as in the
    reference; one crop is the window at offset 0. Raises ValueError if the sound is shorter than
    ``size`` or n_crops < 1.
    """
    if n_crops < 1:
        raise ValueError(f'multi_crop: n_crops must be >= 1, got {n_crops}')
    if len(sound) < size:
        raise ValueError(f'multi_crop: sound of {len(sound)} samples is shorter than {size}')
    stride = (len(sound) - size) // (n_crops - 1) if n_crops > 1 else 0
    return np.stack([sound[stride * i:stride * i + size] for i in range(n_crops)])


def mean_and_standard_error(values):
    """(mean, standard error of the mean) of a list of numbers; SE is 0.0 for a single value.

    SE = sample standard deviation (ddof=1) / sqrt(n), as Table 1 of the paper reports.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError('mean_and_standard_error: no values')
    if values.size == 1:
        return float(values[0]), 0.0
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def savez_stable(path, arrays):
    """``numpy.savez`` (uncompressed) with fixed member dates: equal arrays give equal bytes.

    ``arrays``: {name: array-like}; each becomes the member ``name.npy`` (NumPy's format, object
    arrays pickled as ``numpy.savez`` does), in sorted order (Chainer lists a link's parameters
    in an order that changes from process to process), dated 1980-01-01 00:00 where
    ``numpy.savez`` stamps the current time. ``path`` is written in place (callers that need
    atomicity pass a temporary name). Loads with ``numpy.load`` like any npz; raises OSError
    when the file cannot be written.
    """
    import zipfile
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(name + '.npy', date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o600 << 16
            with zf.open(info, 'w', force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arrays[name]), allow_pickle=True)
