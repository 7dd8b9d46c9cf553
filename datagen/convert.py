"""Parallel, restartable conversion of a dataset's clips through a per-clip cache.

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

:func:`plan` probes every file first, so that bad files are reported before anything is written
(:class:`BadFiles`); :func:`convert_all` then converts what the cache lacks.
"""
import collections
import concurrent.futures
import hashlib
import os
import re
import shutil
import signal
import sys
from concurrent.futures.process import BrokenProcessPool

import numpy as np

import utils
from datagen import audio
from datagen.npzio import one_line
from utils import UserError, atomic_write

# Bump when the per-clip conversion changes, so that old cache entries are not reused.
CONVERT_VERSION = 1
CACHE_DIR = '.cache'
MAX_LISTED = 20  # bad files printed one per line; the rest are counted (all go in the report)


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
        mono, src_fs = audio.read_mono(src)
        clips = []
        for fs in rates:
            clips.append(audio.checked_clip(mono, src_fs, fs, trim))
    except audio.BadAudio as e:
        return ('bad', str(e))
    except MemoryError:
        return ('bad', 'out of memory while converting')
    except Exception as e:  # any decoder/resampler failure is this file's problem
        return ('bad', 'conversion failed (%s: %s)' % (type(e).__name__, one_line(e)))
    try:
        packed = pack_clips(clips)
        atomic_write(path, lambda tmp: np.save(tmp, packed, allow_pickle=False), suffix='.npy')
    except OSError as e:
        return ('fatal', 'cannot write the conversion cache %s (%s)'
                % (path, one_line(e)))
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
    for item in utils.progress(items, desc=desc, unit='file', leave=False,
                               disable=len(items) < 200):
        try:
            _, ident = item.src.identity()
            path = cache_path(root, item.src, ident, rates, trim)
            if os.path.isfile(path):
                n_cached += 1
            else:
                audio.probe(item.src)
            paths.append(path)
        except audio.BadAudio as e:
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
    bar = utils.progress(total=len(todo), desc='convert', unit='clip')
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
                                  % (type(e).__name__, one_line(e)))
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
                        % (path, one_line(e))) from None


def remove_cache(data_dir, name):
    """Delete ``DATA/.cache/<name>`` (and ``DATA/.cache`` when it is then empty)."""
    shutil.rmtree(cache_root(data_dir, name), ignore_errors=True)
    try:
        os.rmdir(os.path.join(data_dir, CACHE_DIR))
    except OSError:
        pass
