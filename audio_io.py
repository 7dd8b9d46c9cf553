"""Audio reading and clip conversion shared by ``esc_gen.py`` and ``urbansound_gen.py`` (SPEC 2).

Reader
------
:func:`read_mono` decodes one WAV with libsndfile (through ``soundfile``) to float64 at full
scale +-1 and downmixes to mono by the mean over channels. libsndfile decodes every encoding the
two datasets contain directly: 8-bit unsigned, 16-, 24- and 32-bit integer PCM, 32- and 64-bit
float, IMA and MS ADPCM, any channel count and sample rate, plain ``WAVE_FORMAT_PCM`` and
``WAVE_FORMAT_EXTENSIBLE`` headers (RIFF, RIFX and RF64). The BC-learning reference converted
every file with FFmpeg first; libsndfile needs no external program and no intermediate files.
ADPCM is decoded block by block, the last block's padding included (libsndfile ignores the
``fact`` chunk's sample count), as FFmpeg does.

Bad input is reported as :class:`BadAudio` with a one-line reason:

- ``missing``: the file (or zip member) does not exist;
- ``empty file (0 bytes)``, ``empty audio (0 frames)``;
- ``truncated``: the file starts as a RIFF/WAVE file but ends inside the header, or the ``data``
  chunk declares more bytes than follow its header in the file (libsndfile would silently read
  the shorter audio: its frame count is computed from the bytes present, so comparing it with
  the frames read cannot catch this; :func:`riff_check` parses the chunk headers instead). A
  ``data`` size of 0 or 0xFFFFFFFF (written by streaming encoders, and by RF64) is not judged;
- ``cannot read audio``: not a format libsndfile decodes (text, another container, an unknown
  WAV codec), or a decoding error;
- ``entirely digital silence``: every sample is 0 (or, after conversion, every int16 sample);
- ``NaN or infinite samples`` (float WAVs).

Conversion
----------
:func:`convert_clip`: resample the mono float64 clip with ``scipy.signal.resample_poly`` (up/down =
target/source rate reduced by their gcd; skipped when equal), convert to int16 with
``clip(round(x * 32768))``, and, when asked (ESC), trim leading and trailing samples equal to 0.

:func:`convert_all` runs the clips in a process pool (``concurrent.futures.ProcessPoolExecutor``;
``workers=1`` runs in-process) and is restartable: each worker writes its clip at every rate to a
cache, ``DATA/.cache/<name>/<file>-<key>.npy`` (one file per clip holding it at every rate,
written atomically); the key hashes the source (absolute path, size and modification
time; for a zip member the zip's path and the member's size and CRC), the rates and the conversion
settings, so a rerun after an interruption (Ctrl-C, kill -9,
a crash, a bad file) converts only the clips not yet cached, and a changed source file is
converted again. The generators assemble the dataset files from the cache and remove it after
they have written every file. Workers ignore SIGINT (the main process stops them) and, on Linux,
die with the main process (``PR_SET_PDEATHSIG``), so a killed run leaves no orphans behind.
"""
import collections
import concurrent.futures
import functools
import hashlib
import io
import math
import os
import re
import shutil
import signal
import struct
import sys
import zipfile
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import scipy.signal
import soundfile as sf
from tqdm import tqdm

import npzio
from utils import UserError, atomic_write

# Bump when the per-clip conversion changes, so that old cache entries are not reused.
CONVERT_VERSION = 1
CACHE_DIR = '.cache'
# A ``data`` chunk size at or above this is a streaming writer's placeholder (0xFFFFFFFF; SoX
# writing to a pipe puts 0x7FFFF000), not a promise: such files are not judged truncated.
UNKNOWN_DATA_SIZE = 0x7FFF0000
MAX_LISTED = 20  # bad files printed one per line; the rest are counted (all go in the report)


class BadAudio(Exception):
    """A source file that cannot be converted; ``str(e)`` is the one-line reason."""


# --------------------------------------------------------------------------------------------
# Sources: a file on disk or a member of a zip archive (picklable, for the worker processes)


_ZIPS = {}  # (pid, zip path) -> zipfile.ZipFile; per process, as a forked child must not share
            # the parent's file offset


def parse_int_field(text, column, where):
    """The integer in a CSV field (surrounding blanks allowed) of the generators' metadata.

    Raises UserError '<where>: <column> must be an integer, got <text>' otherwise.
    """
    try:
        return int(text.strip())
    except ValueError:
        raise UserError('%s: %s must be an integer, got %r' % (where, column, text)) from None


def _zip(path):
    key = (os.getpid(), path)
    if key not in _ZIPS:
        _ZIPS[key] = zipfile.ZipFile(path)
    return _ZIPS[key]


class ClipSource:
    """One audio file: ``ClipSource(path)`` or ``ClipSource(zip_path, member)``."""

    def __init__(self, path, member=None):
        self.path = os.fspath(path)
        self.member = member

    @property
    def display(self):
        """Name used in messages and reports."""
        return self.path if self.member is None else '%s:%s' % (self.path, self.member)

    def identity(self):
        """(size in bytes, cache-key text); BadAudio('missing') when absent."""
        if self.member is None:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                raise BadAudio('missing') from None
            except OSError as e:
                raise BadAudio('cannot access (%s)' % npzio.one_line(e)) from None
            if not os.path.isfile(self.path):
                raise BadAudio('not a regular file')
            return st.st_size, '%s|%d|%d' % (os.path.abspath(self.path), st.st_size,
                                             st.st_mtime_ns)
        try:
            info = _zip(self.path).getinfo(self.member)
        except KeyError:
            raise BadAudio('missing') from None
        except (OSError, zipfile.BadZipFile) as e:
            raise BadAudio('cannot read from zip (%s)' % npzio.one_line(e)) from None
        return info.file_size, 'zip|%s|%s|%d|%08x' % (os.path.abspath(self.path), self.member,
                                                      info.file_size, info.CRC)

    def open(self):
        """A seekable binary file object (the caller closes it)."""
        if self.member is None:
            return open(self.path, 'rb')
        try:
            return io.BytesIO(_zip(self.path).read(self.member))
        except (zipfile.BadZipFile, EOFError, KeyError) as e:
            raise OSError('cannot read from zip (%s)' % npzio.one_line(e)) from None


# --------------------------------------------------------------------------------------------
# Reading


def riff_check(f, size):
    """Raise BadAudio('truncated: ...') if the RIFF/WAVE file ``f`` (``size`` bytes) is cut short.

    Walks the chunk headers up to the ``data`` chunk. Files that are not RIFF/RIFX/RF64 WAVE are
    left to libsndfile. A ``data`` size of 0 or >= UNKNOWN_DATA_SIZE (unknown length) is not
    judged.
    """
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b'RIFF', b'RIFX', b'RF64') or head[8:12] != b'WAVE':
        if len(head) >= 4 and head[:4] in (b'RIFF', b'RIFX', b'RF64') and len(head) < 12:
            raise BadAudio('truncated: the file ends inside the RIFF header (%d bytes)' % size)
        return
    endian = '>' if head[:4] == b'RIFX' else '<'
    pos = 12
    while True:
        hdr = f.read(8)
        if len(hdr) < 8:
            raise BadAudio('truncated: the file ends at byte %d, before the data chunk' % size)
        cid = hdr[:4]
        (length,) = struct.unpack(endian + 'I', hdr[4:])
        pos += 8
        if cid == b'data':
            if length == 0 or length >= UNKNOWN_DATA_SIZE:
                return
            available = size - pos
            if length > available:
                raise BadAudio('truncated: the data chunk declares %d bytes but the file holds '
                               '%d (%.0f%%)' % (length, max(available, 0),
                                                100.0 * max(available, 0) / length))
            return
        skip = length + (length & 1)
        if pos + length > size:
            raise BadAudio("truncated: the file ends inside the %r chunk (byte %d of %d)"
                           % (cid.decode('latin-1'), size, pos + length))
        body = f.read(skip)
        if len(body) < length:
            raise BadAudio("truncated: the file ends inside the %r chunk"
                           % cid.decode('latin-1'))
        pos += skip


def _libsndfile_reason(e):
    text = getattr(e, 'error_string', None) or npzio.one_line(e)
    return 'cannot read audio (libsndfile: %s)' % ' '.join(str(text).split())


def _decode_checked(src, decode):
    """(identity text, ``decode(f)``) for ``src`` opened as the file object f, after the size and
    RIFF checks; every read failure becomes BadAudio (module docstring)."""
    size, ident = src.identity()
    if size == 0:
        raise BadAudio('empty file (0 bytes)')
    try:
        with src.open() as f:
            riff_check(f, size)
            f.seek(0)
            return ident, decode(f)
    except BadAudio:
        raise
    except sf.LibsndfileError as e:
        raise BadAudio(_libsndfile_reason(e)) from None
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, OSError, EOFError) as e:
        raise BadAudio('cannot read audio (%s)' % npzio.one_line(e)) from None


def _check_frames(frames, fs):
    if frames == 0:
        raise BadAudio('empty audio (0 frames)')
    if fs <= 0:
        raise BadAudio('invalid sample rate %d' % fs)


def probe(src):
    """Check ``src`` without decoding it -> cache-key text; BadAudio when it is bad.

    Catches missing, empty, truncated and undecodable files and files with 0 frames.
    """
    ident, info = _decode_checked(src, sf.info)
    _check_frames(info.frames, info.samplerate)
    return ident


def read_mono(src):
    """Decode ``src`` -> (mono float64 array, sample rate); BadAudio (module docstring) when bad."""
    _, (data, fs) = _decode_checked(
        src, lambda f: sf.read(f, dtype='float64', always_2d=True))
    _check_frames(data.shape[0], fs)
    mono = data.mean(axis=1)
    if not np.all(np.isfinite(mono)):
        raise BadAudio('NaN or infinite samples')
    if not np.any(mono):
        raise BadAudio('entirely digital silence (every sample is 0)')
    return mono, int(fs)


# --------------------------------------------------------------------------------------------
# Per-clip conversion


def to_int16(x):
    """Float samples (full scale +-1) -> int16, rounding and clipping: clip(round(x * 32768))."""
    y = np.multiply(x, 32768.0)
    np.round(y, out=y)
    np.clip(y, -32768, 32767, out=y)
    return y.astype(np.int16)


def trim_silence(x):
    """``x[first_nonzero:last_nonzero + 1]``; an empty array when every sample is 0."""
    nz = np.flatnonzero(x)
    if len(nz) == 0:
        return x[:0]
    return x[nz[0]:nz[-1] + 1]


@functools.lru_cache(maxsize=None)
def _lowpass(up, down):
    """The FIR filter ``resample_poly(x, up, down)`` designs (its default window, Kaiser beta 5),
    designed once per rate pair instead of once per clip; passing it as ``window`` gives the
    same output (tested against plain ``resample_poly``)."""
    m = max(up, down)
    h = scipy.signal.firwin(2 * 10 * m + 1, 1.0 / m, window=('kaiser', 5.0))
    h.flags.writeable = False  # resample_poly copies it before scaling
    return h


def convert_clip(mono, src_fs, fs, trim):
    """Mono float64 clip at ``src_fs`` -> int16 clip at ``fs``, trimmed when ``trim``."""
    if fs != src_fs:
        g = math.gcd(int(fs), int(src_fs))
        up, down = fs // g, src_fs // g
        mono = scipy.signal.resample_poly(mono, up, down, window=_lowpass(up, down))
    out = to_int16(mono)
    return trim_silence(out) if trim else out


# --------------------------------------------------------------------------------------------
# Parallel, restartable conversion through a per-clip cache


def cache_root(data_dir, name):
    """``DATA/.cache/<name>``: where :func:`convert_all` keeps converted clips of one dataset."""
    return os.path.join(data_dir, CACHE_DIR, name)


def _safe(text):
    return re.sub(r'[^A-Za-z0-9._-]', '_', text)[:80]


def cache_path(root, src, ident, rates, trim):
    """Cache file of ``src`` (key text ``ident``) converted to every rate in ``rates``."""
    key = hashlib.sha1(('%s|v%d|trim=%d|rates=%s'
                        % (ident, CONVERT_VERSION, bool(trim), ','.join(map(str, sorted(rates)))))
                       .encode('utf-8')).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(src.member or src.path))[0]
    return os.path.join(root, '%s-%s.npy' % (_safe(stem), key))


def pack_clips(clips):
    """The cache file's content: one int16 array, the R clip lengths (int32, each stored as two
    int16) followed by the R clips, in the order given (the sorted rates)."""
    header = np.array([len(c) for c in clips], dtype='<i4').view('<i2')
    return np.concatenate([header] + [np.asarray(c, dtype=np.int16) for c in clips])


def unpack_clip(packed, n_rates, j):
    """Clip ``j`` of a :func:`pack_clips` array of ``n_rates`` clips; ValueError if inconsistent."""
    if packed.ndim != 1 or packed.dtype != np.int16 or len(packed) < 2 * n_rates:
        raise ValueError('not a packed clip array')
    lengths = np.array(packed[:2 * n_rates]).astype('<i2').view('<i4').astype(np.int64)
    if np.any(lengths < 0) or 2 * n_rates + lengths.sum() != len(packed):
        raise ValueError('lengths do not add up')
    start = 2 * n_rates + int(lengths[:j].sum())
    return np.array(packed[start:start + lengths[j]])


def _convert_job(src, path, rates, trim):
    """Worker: convert one clip to every rate and write them to the cache file ``path``.

    Returns ('ok', None), ('bad', reason) or ('fatal', message). Never raises for a bad file.
    """
    try:
        mono, src_fs = read_mono(src)
        clips = []
        for fs in rates:
            clip = convert_clip(mono, src_fs, fs, trim)
            if len(clip) == 0 or not np.any(clip):
                return ('bad', 'silent at %d Hz after conversion to int16 (every sample is 0)'
                        % fs)
            clips.append(clip)
    except BadAudio as e:
        return ('bad', str(e))
    except MemoryError:
        return ('bad', 'out of memory while converting')
    except Exception as e:  # any decoder/resampler failure is this file's problem
        return ('bad', 'conversion failed (%s: %s)' % (type(e).__name__, npzio.one_line(e)))
    try:
        packed = pack_clips(clips)
        atomic_write(path, lambda tmp: np.save(tmp, packed, allow_pickle=False), suffix='.npy')
    except OSError as e:
        return ('fatal', 'cannot write the conversion cache %s (%s)'
                % (path, npzio.one_line(e)))
    return ('ok', None)


def _libc():
    if not sys.platform.startswith('linux'):
        return None
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _keep_freed_memory():
    """glibc: reuse freed clip buffers instead of returning them to the kernel after each clip.

    A clip's buffers (a few MB) are otherwise mapped afresh for every clip, and the page faults
    that zero them cost about 10% of the conversion time. Arrays above 32 MB still get their own
    mapping, returned on free.
    """
    libc = _libc()
    if libc is not None:
        try:
            libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD
            libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        except AttributeError:  # not glibc
            pass


def _worker_init(parent_pid):
    """Pool initializer: leave Ctrl-C to the main process; die with it (Linux)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    libc = _libc()
    if libc is not None:
        try:
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except AttributeError:
            pass
    if os.getppid() != parent_pid:  # the main process died before prctl took effect
        os._exit(1)
    _keep_freed_memory()


def default_workers():
    """CPUs this process may use (``os.sched_getaffinity`` where available, else cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


Item = collections.namedtuple('Item', 'src where')  # where: e.g. 'listed on X.csv line 5'
Bad = collections.namedtuple('Bad', 'item reason')


def bad_line(bad):
    """``PATH: reason (where)``, the one-line description of a bad file."""
    return '%s: %s (%s)' % (bad.item.src.display, bad.reason, bad.item.where)


class BadFiles(UserError):
    """Bad input files in a run without ``--skipBad``: one error line per file, then a hint."""

    def __init__(self, bads, hint):
        super().__init__(bad_line(bads[0]))
        self.bads = bads
        self.hint = hint

    def lines(self):
        out = [bad_line(b) for b in self.bads[:MAX_LISTED]]
        if len(self.bads) > MAX_LISTED:
            out.append('... and %d more bad files' % (len(self.bads) - MAX_LISTED))
        return out


class Interrupted(Exception):
    """Ctrl-C during conversion; the message says what is kept for the rerun."""


def plan(items, rates, root, trim, skip_bad, desc='check'):
    """Probe every item -> (cache file per item or None for a bad one, list of Bad, n cached).

    Items already in the cache are not opened (their files are unchanged: the key
    holds size and mtime). Without ``skip_bad`` a bad item raises :class:`BadFiles` (listing every
    bad item found by the probe) before anything is written.
    """
    paths, bads, n_cached = [], [], 0
    for item in tqdm(items, desc=desc, unit='file', file=sys.stderr, leave=False,
                     disable=len(items) < 200):
        try:
            _, ident = item.src.identity()
            path = cache_path(root, item.src, ident, rates, trim)
            if os.path.isfile(path):
                n_cached += 1
            else:
                probe(item.src)
            paths.append(path)
        except BadAudio as e:
            bads.append(Bad(item, str(e)))
            paths.append(None)
    if bads and not skip_bad:
        raise BadFiles(bads, 'nothing written; fix or remove the file%s, or pass --skipBad to '
                             'convert the others and list the bad ones in a report'
                       % ('s' if len(bads) > 1 else ''))
    return paths, bads, n_cached


def convert_all(items, paths, rates, trim, workers, skip_bad, root, prog):
    """Convert every item whose cache file is missing -> list of Bad found while decoding.

    ``paths[i]`` is the item's cache file (None: skip the item, already known to be bad). Runs
    ``workers`` processes (1: in this process). Without ``skip_bad`` the first bad file stops the
    run (queued clips are cancelled, running ones finish and stay cached) with
    :class:`BadFiles`. Ctrl-C raises :class:`Interrupted`; a worker that dies (out of memory...)
    or a cache write failure raises UserError. Finished clips stay cached in every case.
    """
    todo = [i for i, p in enumerate(paths) if p is not None and not os.path.isfile(p)]
    bads = []
    if not todo:
        return bads
    workers = max(1, min(int(workers), len(todo)))
    rates = sorted(int(fs) for fs in rates)
    os.makedirs(root, exist_ok=True)
    bar = tqdm(total=len(todo), desc='convert', unit='clip', file=sys.stderr)
    stop_hint = ('no dataset file written; the clips converted so far are kept in %s, so the '
                 'next run continues from them; fix or remove the file, or pass --skipBad' % root)

    def handle(i, result):
        status, info = result
        if status == 'fatal':
            raise UserError(info)
        if status == 'bad':
            bad = Bad(items[i], info)
            bads.append(bad)
            if not skip_bad:
                raise BadFiles([bad], stop_hint)
            bar.write('%s: skipped %s' % (prog, bad_line(bad)), file=sys.stderr)
        bar.update(1)

    try:
        if workers == 1:
            _keep_freed_memory()
            for i in todo:
                handle(i, _convert_job(items[i].src, paths[i], rates, trim))
        else:
            ex = concurrent.futures.ProcessPoolExecutor(
                max_workers=workers, initializer=_worker_init, initargs=(os.getpid(),))
            try:
                futures = {ex.submit(_convert_job, items[i].src, paths[i], rates, trim): i
                           for i in todo}
                for fut in concurrent.futures.as_completed(futures):
                    i = futures[fut]
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        raise UserError(
                            'a worker process died while converting (out of memory? try fewer '
                            '--workers); the clips converted so far are kept in %s and the next '
                            'run continues from them' % root) from None
                    except Exception as e:  # unpicklable result etc.
                        result = ('bad', 'conversion failed (%s: %s)'
                                  % (type(e).__name__, npzio.one_line(e)))
                    handle(i, result)
            finally:
                ex.shutdown(wait=True, cancel_futures=True)
    except KeyboardInterrupt:
        raise Interrupted('interrupted; converted clips are kept in %s and the next run '
                          'continues from them' % root) from None
    finally:
        bar.close()
    return bads


def load_cached(path, rates, fs):
    """The converted clip at ``fs`` (one of ``rates``) from its cache file (int16, 1-D)."""
    rates = sorted(int(r) for r in rates)
    try:
        return unpack_clip(np.load(path, mmap_mode='r', allow_pickle=False), len(rates),
                           rates.index(int(fs)))
    except (OSError, ValueError, EOFError) as e:
        raise UserError('%s: cannot read cached clip (%s); delete the cache folder and rerun'
                        % (path, npzio.one_line(e))) from None


def remove_cache(data_dir, name):
    """Delete ``DATA/.cache/<name>`` (and ``DATA/.cache`` when it is then empty)."""
    shutil.rmtree(cache_root(data_dir, name), ignore_errors=True)
    try:
        os.rmdir(os.path.join(data_dir, CACHE_DIR))
    except OSError:
        pass


_TEMP = re.compile(r'^\.(wav\d+\.npz|skipped\.txt)\..*\.tmp(\.npz)?$')


def remove_stale_temps(directory):
    """Delete temporary files an earlier run killed while writing left in ``directory``."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if _TEMP.match(name):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass


def write_report(path, prog, bads, n_listed):
    """Write the ``--skipBad`` report (tab-separated: file, where, reason); remove it if no bads."""
    if not bads:
        if os.path.exists(path):
            os.remove(path)
        return

    def write(tmp):
        with open(tmp, 'w') as f:
            f.write('# %s --skipBad: %d of %d listed files skipped (not in the .npz files)\n'
                    % (prog, len(bads), n_listed))
            f.write('# file\twhere\treason\n')
            for b in bads:
                f.write('%s\t%s\t%s\n' % (b.item.src.display, b.item.where, b.reason))
    atomic_write(path, write)


def print_skipped(prog, bads, reports):
    """Print the skipped files (at most MAX_LISTED) and where the reports are, to stderr."""
    if not bads:
        return
    print('%s: %d file%s skipped (--skipBad); listed in %s'
          % (prog, len(bads), 's' if len(bads) > 1 else '', ', '.join(reports)), file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Reporting


def describe(name, rows, label_of, class_names, n_folds=None):
    """Lines reporting the classes, folds and clip counts of one dataset (rows have ``.fold``)."""
    labels = sorted({label_of(r) for r in rows})
    per_fold = collections.Counter(r.fold for r in rows)
    lines = ['%s: %d clips, %d of %d classes, folds %s'
             % (name, len(rows), len(labels), len(class_names),
                ' '.join('%d:%d' % (k, per_fold[k]) for k in sorted(per_fold)))]
    if n_folds is not None and len(per_fold) < n_folds:
        lines.append('  subset: %d of %d folds present: %s'
                     % (len(per_fold), n_folds, ' '.join(str(k) for k in sorted(per_fold))))
    if len(labels) < len(class_names):
        lines.append('  subset: %d of %d classes present: %s'
                     % (len(labels), len(class_names),
                        ', '.join('%d %s' % (c, class_names[c]) for c in labels)))
    per_cell = collections.Counter((r.fold, label_of(r)) for r in rows)
    counts = sorted({per_cell[(k, c)] for k in per_fold for c in labels})
    lines.append('  clips per present class in each fold: %s'
                 % ('%d' % counts[0] if len(counts) == 1 else
                    'from %d to %d' % (counts[0], counts[-1])))
    return lines


def check_file(path):
    """``--check``: load ``path`` without pickle and return the lines of its summary.

    Clip count per fold and class, duration statistics (overall, per fold and per class), and
    whether every entry loads with ``allow_pickle=False``. Raises UserError (one line) when the
    file is missing, corrupt, legacy/pickled or inconsistent.
    """
    ds = npzio.load_sound_npz(path, allow_pickle=False)
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                z[key]  # an object (pickled) entry raises ValueError here
            n_entries = len(z.files)
    except ValueError as e:
        raise UserError('%s: an entry needs pickle (%s)' % (path, npzio.one_line(e))) from None
    folds = ds.fold_numbers()
    n_cls = ds.n_classes
    counts = np.zeros((n_cls, len(folds)), dtype=np.int64)
    durations = {}
    for j, k in enumerate(folds):
        sounds, labels = ds.folds[k]
        counts[:, j] = np.bincount(labels, minlength=n_cls)[:n_cls]
        durations[k] = (np.array([len(s) for s in sounds], dtype=np.float64) / ds.fs, labels)
    total = int(counts.sum())
    lines = ['%s: %d Hz, format_version %d, %d classes, %d folds (%s), %d clips; all %d entries '
             'load without pickle' % (path, ds.fs, npzio.FORMAT_VERSION, n_cls, len(folds),
                                      ' '.join(map(str, folds)), total, n_entries)]
    width = max([len('%d %s' % (c, n)) for c, n in enumerate(ds.class_names)] + [5])
    lines.append('clips per fold and class:')
    lines.append('  %-*s %s %7s' % (width, 'class', ' '.join('%6s' % ('f%d' % k) for k in folds),
                                    'total'))
    for c, name in enumerate(ds.class_names):
        lines.append('  %-*s %s %7d' % (width, '%d %s' % (c, name),
                                        ' '.join('%6d' % v for v in counts[c]), counts[c].sum()))
    lines.append('  %-*s %s %7d' % (width, 'total', ' '.join('%6d' % v for v in counts.sum(0)),
                                    total))
    absent = [ds.class_names[c] for c in range(n_cls) if counts[c].sum() == 0]
    if absent:
        lines.append('  classes with no clip: %s' % ', '.join(absent))

    def stats(d):
        if len(d) == 0:
            return 'no clips'
        return ('min %.3f  median %.3f  mean %.3f  max %.3f  total %.1f min'
                % (d.min(), np.median(d), d.mean(), d.max(), d.sum() / 60))
    all_d = np.concatenate([d for d, _ in durations.values()]) if durations else np.zeros(0)
    all_l = np.concatenate([lab for _, lab in durations.values()]) if durations else np.zeros(0)
    lines.append('duration (s):')
    lines.append('  %-*s %s' % (width, 'all', stats(all_d)))
    for k in folds:
        lines.append('  %-*s %s' % (width, 'fold %d' % k, stats(durations[k][0])))
    for c, name in enumerate(ds.class_names):
        if counts[c].sum():
            lines.append('  %-*s %s' % (width, '%d %s' % (c, name), stats(all_d[all_l == c])))
    n_empty = int(np.sum(all_d == 0))
    if n_empty:
        lines.append('  WARNING: %d clips have 0 samples' % n_empty)
    return lines


def run_check(paths):
    """Print :func:`check_file` for each path; returns 0 (UserError propagates)."""
    for i, p in enumerate(paths):
        if i:
            print()
        for line in check_file(p):
            print(line)
    return 0


def generator_main(prog, parser, argv, run):
    """The shared entry point of esc_gen.py and urbansound_gen.py; returns the exit status.

    Parses ``argv`` with ``parser`` (which has a positional ``data`` with nargs='?' and
    ``--check NPZ...``): with ``--check`` it checks those files (:func:`run_check`), otherwise it
    calls ``run(args)`` on DATA; errors become one-line messages through :func:`cli`.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code
    if args.check:
        if args.data is not None:
            parser.print_usage(sys.stderr)
            print('%s: error: --check takes npz files, not DATA' % prog, file=sys.stderr)
            return 2
        return cli(prog, lambda: run_check(args.check))
    if args.data is None:
        parser.print_usage(sys.stderr)
        print('%s: error: DATA is required (or --check NPZ)' % prog, file=sys.stderr)
        return 2
    return cli(prog, lambda: run(args))


def resolve_workers(workers):
    """``--workers``: None -> :func:`default_workers`; below 1 -> UserError naming the flag."""
    if workers is None:
        workers = default_workers()
    if workers < 1:
        raise UserError('--workers must be >= 1, got %d' % workers)
    return workers


def cli(prog, fn):
    """Run ``fn()``; a UserError/BadFiles/Interrupted becomes its message lines and exit status."""
    try:
        return fn()
    except BadFiles as e:
        for line in e.lines():
            print('%s: error: %s' % (prog, line), file=sys.stderr)
        print('%s: %s' % (prog, e.hint), file=sys.stderr)
        return 2
    except UserError as e:
        print('%s: error: %s' % (prog, npzio.one_line(e)), file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        msg = str(e) if isinstance(e, Interrupted) else 'interrupted'
        print('%s: %s' % (prog, msg), file=sys.stderr)
        return 130
