"""Fast CPU 2-D convolution (and stride = kernel max pooling) for Chainer, in NumPy (README, "Speed").

Chainer's CPU convolution builds an (N, C, kh, kw, Ho, Wo) column array for the whole batch and
contracts it with ``numpy.tensordot``, which copies it once more into GEMM order (conv4 of
EnvNet-v2: ~100 MB per clip, twice). Here:

* the input is brought to channels-last (N, H, W, C) (free when it already is, e.g. the output
  of a previous fast convolution), zero-padded if needed;
* windows are read with ``as_strided`` into a column buffer of rows (kh, kw, C), one row per
  output position: for channels-last input every (kw, C) run is contiguous, so the copy is cheap;
* one BLAS GEMM per tile, (positions, kh*kw*C) @ (kh*kw*C, O), written straight into a
  channels-last output buffer. The output is returned as the NCHW view of that buffer, exactly as
  ``F.convolution_2d`` does on CPU (its output is a ``rollaxis`` view too).

Tiles: the batch is cut into chunks (and a clip too big for the budget into output rows, or
columns) so that one column buffer stays under :data:`COL_BUFFER_BYTES` -- small enough to stay
in cache between the window copy and the GEMM. Tiles are shared out to :data:`NUM_THREADS` worker
threads (NumPy releases the GIL in the copies and the GEMMs), each with its own buffer, while
NumPy's OpenBLAS is set to one thread (see "Threads" below).

Backward: ``gW`` is a GEMM of the (recomputed, tiled) columns with ``gy``; ``gx`` is the
transposed convolution, either (when ``4 * C >= O``) split by stride phase -- each phase of the
padded input gradient is a stride-1 full correlation of ``gy`` with the flipped, channel-swapped
sub-kernel ``W[:, :, rh::sh, rw::sw]``, i.e. the forward kernel again, no scatter -- or (few input
channels, e.g. C = 1) one GEMM ``gy @ W`` per tile followed by ``kh*kw`` strided scatter-adds.
``gb`` is a sum. Forward, input gradient (:class:`FastDeconvolution2D`) and weight gradient
(:class:`FastConvolution2DGradW`) are FunctionNodes whose backwards are written with each other,
so higher-order gradients work too.

Supported: stride >= 1 and zero padding >= 0 per axis, dilation 1, groups 1, ``cover_all=False``;
float32 and float64 (float16 works but is slow: NumPy has no BLAS for it); NumPy arrays only --
CuPy / ChainerX / iDeep arrays raise ``TypeError``. Use :func:`convolution_2d` to dispatch: NumPy
float32/float64 inputs and :func:`enabled` -> fast path, everything else -> ``F.convolution_2d``
(Chainer's GPU path, cuDNN when present).

Max pooling with stride = kernel and no padding (every pooling of EnvNet, EnvNet-v2, M18, SoundNet5
and SampleCNN) has a fast path too, :func:`max_pooling_2d` (see the section "Max pooling" below);
it gives Chainer's values and gradients exactly, ties included.

Batch normalisation followed by ReLU (the tail of every ConvBNReLU) is fused into one blocked
kernel, :func:`bn_relu` (section "Batch normalisation + ReLU"), for the links' training and test
modes.

Switch (convolution, pooling and batch normalisation alike): :func:`enabled` is False when the environment variable ``INTERMIX_STOCK_CONV`` is set to
``1`` (or true/yes/on; read at every call) or after ``set_enabled(False)``.
"""
import ctypes
import glob
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import as_strided

import compat  # noqa: F401  (numpy.sctypes for Chainer on NumPy 2)
import chainer
import chainer.functions as F
import chainer.links as L
from chainer import function_node
from chainer.utils import conv, type_check

try:
    import numba
except ImportError:  # the max pooling then runs as NumPy reshapes, argmax and gathers
    numba = None


def njit_cached(fn):
    """``numba.njit(nogil=True)`` with the machine code cached on disk (``__pycache__`` beside
    the module, else numba's user-wide cache folder), so that only the first process after a
    change compiles (~2 s for the loops here and in :mod:`optimizer`); without a writable cache
    folder each process compiles its own. Only called where numba imports."""
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(fn)

__all__ = ['COL_BUFFER_BYTES', 'NUM_THREADS', 'STOCK_CONV_ENV', 'set_threads',
           'restore_threads', 'FastConvolution2D', 'FramedConvolution2D', 'use_framed',
           'framed_convolution_2d', 'FastDeconvolution2D', 'FastConvolution2DGradW',
           'fast_convolution_2d',
           'convolution_2d', 'enabled', 'set_enabled', 'use_fast', 'FastMaxPooling2D',
           'max_pooling_2d', 'use_fast_pooling', 'FastBatchNormalizationReLU', 'bn_relu',
           'use_fast_bn_relu', 'BN_BLOCK_BYTES', 'BN_KERNEL', 'POOL_KERNEL']

#: Upper bound (bytes) of the column buffer of one tile (one buffer per worker thread), forward
#: and backward alike. Cache-sized tiles stay in cache between the window copy and the GEMM:
#: EnvNet-v2 conv4 forward took ~30% less CPU with 1-4 MB tiles than with 64 MB ones (one thread),
#: and the peak memory stays low; the per-tile Python overhead is negligible at this size.
COL_BUFFER_BYTES = 4 * 2 ** 20

#: Environment variable: ``INTERMIX_STOCK_CONV=1`` makes :func:`enabled` False (stock Chainer conv).
STOCK_CONV_ENV = 'INTERMIX_STOCK_CONV'

_enabled_flag = True
#: Input gradient by stride phases when _PHASES_RATIO * C >= O, else by GEMM + scatter-add.
_PHASES_RATIO = 4
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def enabled():
    """Whether :func:`convolution_2d` may use the fast CPU path.

    False when ``$INTERMIX_STOCK_CONV`` is ``1``/true/yes/on (read at each call), or after
    ``set_enabled(False)``; ``set_enabled(True)`` does not override the environment variable.
    """
    env = os.environ.get(STOCK_CONV_ENV, '').strip().lower()
    return _enabled_flag and env not in ('1', 'true', 'yes', 'on')


def set_enabled(flag):
    """Turn the fast CPU path on (default) or off for this process; returns the previous flag."""
    global _enabled_flag
    previous, _enabled_flag = _enabled_flag, bool(flag)
    return previous


def _pair(v):
    if hasattr(v, '__getitem__'):
        a, b = v
        return int(a), int(b)
    return int(v), int(v)


def _check_numpy(inputs, what):
    for a in inputs:
        if a is not None and type(a) is not np.ndarray:
            raise TypeError(
                '%s is NumPy-only (CPU), got %s.%s; use fastconv.convolution_2d() or '
                'fastconv.max_pooling_2d() (they dispatch GPU/ChainerX arrays to Chainer\'s own '
                'functions) or the chainer.functions ones directly'
                % (what, type(a).__module__, type(a).__name__))


# --------------------------------------------------------------------------------------------
# Threads: worker threads, each with single-threaded BLAS
# --------------------------------------------------------------------------------------------
#
# OpenBLAS parallelises each GEMM call over its own threads, which spin-wait between calls. With
# many cache-sized GEMMs per layer that collapses when the cores are shared (measured here, load
# 5-6 on 2 cores, EnvNet-v2 conv4 forward at batch 8: 2.4-3.2 s wall / 1.3-1.6 s CPU with 2 BLAS
# threads vs 0.42-0.46 s / 0.21 s with 2 worker threads and 1 BLAS thread). So the kernels hand
# tiles to NUM_THREADS worker threads (NumPy releases the GIL in matmul and in the window copies)
# and set NumPy's OpenBLAS to one thread (via ctypes, reference counted) for the duration of a
# kernel, restoring it afterwards; other threads of the process calling BLAS meanwhile get one
# thread too. Where the BLAS thread count cannot be controlled (NumPy not on OpenBLAS), everything
# runs in the calling thread with the BLAS as configured.

#: Worker threads per convolution kernel; None: min(CPUs available, OpenBLAS threads at first use).
NUM_THREADS = None

_OPENBLAS_GET = ('scipy_openblas_get_num_threads64_', 'scipy_openblas_get_num_threads',
                 'openblas_get_num_threads64_', 'openblas_get_num_threads')
_OPENBLAS_SET = ('scipy_openblas_set_num_threads64_', 'scipy_openblas_set_num_threads',
                 'openblas_set_num_threads64_', 'openblas_set_num_threads')
_blas = None        # (get, set) ctypes functions, False when unavailable, None before lookup
_auto_threads = None
_pool = None        # (pid, n_threads, ThreadPoolExecutor)
_state_lock = threading.Lock()


def _openblas_paths():
    """Paths of the OpenBLAS libraries NumPy may be linked to, most likely first: NumPy wheels
    bundle it in ``numpy.libs`` (looked at first: SciPy, imported by Chainer, maps its own
    OpenBLAS too); otherwise an OpenBLAS mapped into the process (Linux)."""
    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), 'numpy.libs')
    paths = sorted(glob.glob(os.path.join(libs, '*openblas*')))
    if not paths:
        try:
            with open('/proc/self/maps') as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 6 and 'openblas' in os.path.basename(fields[-1]).lower():
                        paths.append(fields[-1])
        except OSError:
            pass
    return list(dict.fromkeys(paths))


def _find_blas():
    """(get_num_threads, set_num_threads) of the OpenBLAS NumPy is linked to, or False."""
    for path in _openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in zip(_OPENBLAS_GET, _OPENBLAS_SET):
            get, set_ = getattr(lib, get_name, None), getattr(lib, set_name, None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                return get, set_
    return False


def blas_core():
    """The kernel family NumPy's OpenBLAS chose for this processor at load time ('Haswell',
    'SkylakeX', 'Zen', ...; ``openblas_get_corename``), or None where NumPy is not on OpenBLAS.
    Its GEMM kernels round differently, so the same seed gives bit-identical models only on
    machines where this (and the software) is the same; run records and bench.py name it."""
    for path in _openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ('scipy_openblas_get_corename64_', 'scipy_openblas_get_corename',
                     'openblas_get_corename64_', 'openblas_get_corename'):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype, fn.argtypes = ctypes.c_char_p, []
                core = fn()
                return core.decode(errors='replace').strip() if core else None
    return None


def _threads():
    """Number of worker threads to use (1: run in the calling thread, BLAS untouched)."""
    global _blas, _auto_threads
    if _blas is None:
        with _state_lock:
            if _blas is None:
                _blas = _find_blas()
                try:
                    cpus = len(os.sched_getaffinity(0))
                except AttributeError:
                    cpus = os.cpu_count() or 1
                _auto_threads = max(1, min(cpus, _blas[0]() if _blas else 1))
    if not _blas:
        return 1
    return max(1, int(NUM_THREADS if NUM_THREADS is not None else _auto_threads))


def set_threads(n):
    """Use ``n`` threads per process (an int >= 1, or None for the default: the cores available,
    at most OpenBLAS's own count): :data:`NUM_THREADS` worker threads in the kernels here and in
    :mod:`optimizer`, and as many OpenBLAS threads for NumPy's other BLAS calls (the fully
    connected layers). ``main.py --threads``; README "Two runs on one machine". Returns the
    previous setting, for :func:`restore_threads`. Raises ValueError for ``n < 1``."""
    global NUM_THREADS
    if n is not None and int(n) < 1:
        raise ValueError(f'threads must be at least 1, got {n}')
    _threads()  # look the BLAS up (and record its own count) first
    previous = (NUM_THREADS, _blas[0]() if _blas else None)
    NUM_THREADS = None if n is None else int(n)
    if _blas:
        _blas[1](_threads())
    return previous


def restore_threads(previous):
    """Undo :func:`set_threads` (``previous`` is what it returned)."""
    global NUM_THREADS
    NUM_THREADS, blas_threads = previous
    if _blas and blas_threads is not None:
        _blas[1](blas_threads)


def _executor(n_threads):
    global _pool
    with _state_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] < n_threads:
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)
            _pool = (os.getpid(), n_threads,
                     ThreadPoolExecutor(n_threads, thread_name_prefix='fastconv'))
        return _pool[2]


def _run_jobs(jobs, work, make_state):
    """Run ``work(state, job)`` for every job on the worker threads; each worker owns one
    ``make_state()`` (its buffers). Returns the states used, in worker order. A single job runs
    in the calling thread (still with single-threaded BLAS when workers are in use).

    Jobs are dealt out in a fixed order, worker w taking jobs w, w + nw, w + 2 nw, ... (the
    tiles are of equal size), not pulled from a shared queue: what a state accumulates, and in
    which order, is then the same in every run, so the sums over jobs (gW, the BN statistics)
    are bit-reproducible, and so is CPU training (an exact ``--resume``)."""
    threads = _threads()
    nw = min(threads, len(jobs))
    if threads > 1:
        _blas_single_enter()
    try:
        if nw <= 1:
            state = make_state()
            for job in jobs:
                work(state, job)
            return [state]

        def run(w):
            state = make_state()
            for job in jobs[w::nw]:
                work(state, job)
            return state

        pool = _executor(nw - 1)
        futures = [pool.submit(run, w) for w in range(1, nw)]
        try:
            states = [run(0)]
        finally:
            states_rest = [f.result() for f in futures]
        return states + states_rest
    finally:
        if threads > 1:
            _blas_single_exit()


_blas_users = 0
_blas_saved = None


def _blas_single_enter():
    """Set NumPy's OpenBLAS to one thread (reference counted, for concurrent callers)."""
    global _blas_users, _blas_saved
    with _state_lock:
        if _blas_users == 0:
            _blas_saved = _blas[0]()
            _blas[1](1)
        _blas_users += 1


def _blas_single_exit():
    global _blas_users
    with _state_lock:
        _blas_users -= 1
        if _blas_users == 0:
            _blas[1](_blas_saved)


# --------------------------------------------------------------------------------------------
# NumPy kernels
# --------------------------------------------------------------------------------------------

def _plan(n, ho, wo, pos_bytes):
    """Tiling: (batch chunk nb, [(h0, h1, w0, w1), ...] spatial tiles within one batch chunk),
    each tile's column buffer within :data:`COL_BUFFER_BYTES`."""
    budget = COL_BUFFER_BYTES
    clip = ho * wo * pos_bytes
    if clip <= budget:
        return max(1, min(n, budget // clip)), [(0, ho, 0, wo)]
    row = wo * pos_bytes
    if row <= budget:
        r = max(1, budget // row)
        return 1, [(h, min(ho, h + r), 0, wo) for h in range(0, ho, r)]
    c = max(1, budget // pos_bytes)
    return 1, [(h, h + 1, w, min(wo, w + c)) for h in range(ho) for w in range(0, wo, c)]


def _jobs(n, ho, wo, pos_bytes, spatial_ok=True):
    """Work split: (nb, tiles, jobs) with jobs = [(n0, n1, [tile, ...]), ...].

    Work within one column budget is one job (small layers: no thread hand-off); otherwise batch
    chunks are made small enough for every worker to get one; a clip larger than the budget is
    split into spatial tiles, one job per clip, or -- with fewer clips than workers and
    ``spatial_ok`` -- one job per tile."""
    nb, tiles = _plan(n, ho, wo, pos_bytes)
    nw = _threads()
    if len(tiles) == 1:
        if nb < n:  # more than one budget's worth: at least one chunk per worker
            nb = min(nb, -(-n // nw))
        return nb, tiles, [(n0, min(n, n0 + nb), tiles) for n0 in range(0, n, nb)]
    if n >= nw or not spatial_ok:
        return nb, tiles, [(n0, n0 + 1, tiles) for n0 in range(n)]
    return nb, tiles, [(n0, n0 + 1, [t]) for n0 in range(n) for t in tiles]


def _nhwc_padded(x, n0, n1, pads):
    """Channels-last copy of x[n0:n1] (x is NCHW), zero-padded by pads = (top, bottom, left,
    right); a negative pad crops. Contiguous; a view when x already is channels-last in memory."""
    pt, pb, pl, pr = pads
    xt = x[n0:n1].transpose(0, 2, 3, 1)
    if min(pads) < 0:
        xt = xt[:, max(0, -pt):xt.shape[1] - max(0, -pb), max(0, -pl):xt.shape[2] - max(0, -pr)]
        pt, pb, pl, pr = (max(0, v) for v in pads)
    if not (pt or pb or pl or pr):
        return np.ascontiguousarray(xt)
    n, h, w, c = xt.shape
    out = np.empty((n, h + pt + pb, w + pl + pr, c), dtype=x.dtype)
    out[:, :pt] = 0
    out[:, pt + h:] = 0
    out[:, pt:pt + h, :pl] = 0
    out[:, pt:pt + h, pl + w:] = 0
    out[:, pt:pt + h, pl:pl + w] = xt
    return out


def _im2col(xt, kh, kw, sh, sw, tile, out):
    """Copy the windows of channels-last ``xt`` (n, Hp, Wp, C) for output tile into ``out``;
    returns the (positions, kh*kw*C) column matrix (a view of ``out``)."""
    h0, h1, w0, w1 = tile
    n, _, _, c = xt.shape
    s0, s1, s2, s3 = xt.strides
    base = xt[:, h0 * sh:, w0 * sw:, :]
    win = as_strided(base, shape=(n, h1 - h0, w1 - w0, kh, kw, c),
                     strides=(s0, s1 * sh, s2 * sw, s1, s2, s3), writeable=False)
    cols = out[:n * (h1 - h0) * (w1 - w0) * kh * kw * c]
    np.copyto(cols.reshape(win.shape), win)
    return cols.reshape(n * (h1 - h0) * (w1 - w0), kh * kw * c)


def _buffer(nb, tiles, width, dtype):
    return np.empty(nb * max((t[1] - t[0]) * (t[3] - t[2]) for t in tiles) * width, dtype=dtype)


class _XCache:
    """Channels-last padded input per batch chunk, computed once per chunk by whoever needs it
    (several workers may share a clip when its tiles are separate jobs)."""

    def __init__(self, x, pads, jobs):
        self.x, self.pads = x, pads
        self.shared = len({j[0] for j in jobs}) < len(jobs)
        self.cache = {}
        self.lock = threading.Lock()

    def get(self, n0, n1):
        if not self.shared:
            return _nhwc_padded(self.x, n0, n1, self.pads)
        with self.lock:
            if n0 not in self.cache:
                self.cache[n0] = _nhwc_padded(self.x, n0, n1, self.pads)
            return self.cache[n0]

    def columns(self, job, kh, kw, sh, sw, buf):
        """For each output tile of ``job`` = (n0, n1, tiles): ``(n0, n1, tile, cols)``, with
        ``cols`` the :func:`_im2col` matrix of that tile (a view of ``buf``, reused)."""
        n0, n1, job_tiles = job
        xt = self.get(n0, n1)
        for tile in job_tiles:
            yield n0, n1, tile, _im2col(xt, kh, kw, sh, sw, tile, buf)


def _conv_nhwc(x, W, stride, pads, out=None):
    """Correlation of x (NCHW) with W (O, C, kh, kw), padding pads = (top, bottom, left, right);
    result channels-last (N, Ho, Wo, O), written into ``out`` (any strides) when given."""
    sh, sw = stride
    n, c, h, w = x.shape
    o, _, kh, kw = W.shape
    ho = (h + pads[0] + pads[1] - kh) // sh + 1
    wo = (w + pads[2] + pads[3] - kw) // sw + 1
    if ho <= 0 or wo <= 0:
        raise RuntimeError('Output size of the convolution should be positive, got %dx%d'
                           % (ho, wo))
    dtype = x.dtype
    k = kh * kw * c
    wmat = np.ascontiguousarray(W.astype(dtype, copy=False).transpose(2, 3, 1, 0)).reshape(k, o)
    if out is None:
        out = np.empty((n, ho, wo, o), dtype=dtype)
    assert out.shape == (n, ho, wo, o), (out.shape, (n, ho, wo, o))
    nb, tiles, jobs = _jobs(n, ho, wo, k * dtype.itemsize)
    xcache = _XCache(x, pads, jobs)

    def make_state():
        return {'buf': _buffer(nb, tiles, k, dtype), 'tmp': None}

    def work(state, job):
        for n0, n1, (h0, h1, w0, w1), cols in xcache.columns(job, kh, kw, sh, sw, state['buf']):
            dst = out[n0:n1, h0:h1, w0:w1]
            if dst.flags.c_contiguous:
                np.matmul(cols, wmat, out=dst.reshape(-1, o))
            else:
                if state['tmp'] is None:
                    state['tmp'] = _buffer(nb, tiles, o, dtype)
                res = state['tmp'][:cols.shape[0] * o].reshape(-1, o)
                np.matmul(cols, wmat, out=res)
                dst[...] = res.reshape(dst.shape)

    _run_jobs(jobs, work, make_state)
    return out


def _conv_forward(x, W, b, stride, pad):
    """y = conv(x, W) + b, NCHW in and out; y is the NCHW view of a channels-last buffer."""
    ph, pw = pad
    y = _conv_nhwc(x, W, stride, (ph, ph, pw, pw))
    if b is not None:
        y += b.astype(y.dtype, copy=False)
    return y.transpose(0, 3, 1, 2)


def _conv_grad_w(x, gy, kh, kw, stride, pad, w_dtype):
    """gW (O, C, kh, kw) = correlation of x with gy."""
    sh, sw = stride
    ph, pw = pad
    n, c = x.shape[:2]
    _, o, ho, wo = gy.shape
    dtype = x.dtype
    k = kh * kw * c
    gyt = gy.astype(dtype, copy=False).transpose(0, 2, 3, 1)  # (n, ho, wo, o), maybe a view
    nb, tiles, jobs = _jobs(n, ho, wo, k * dtype.itemsize)
    xcache = _XCache(x, (ph, ph, pw, pw), jobs)

    def make_state():
        return {'buf': _buffer(nb, tiles, k, dtype), 'acc': np.zeros((k, o), dtype=dtype),
                'tmp': np.empty((k, o), dtype=dtype)}

    def work(state, job):
        for n0, n1, (h0, h1, w0, w1), cols in xcache.columns(job, kh, kw, sh, sw, state['buf']):
            g = np.ascontiguousarray(gyt[n0:n1, h0:h1, w0:w1]).reshape(-1, o)
            np.matmul(cols.T, g, out=state['tmp'])
            state['acc'] += state['tmp']

    states = _run_jobs(jobs, work, make_state)
    acc = states[0]['acc']
    for st in states[1:]:
        acc += st['acc']
    gw = acc.reshape(kh, kw, c, o).transpose(3, 2, 0, 1)
    return np.ascontiguousarray(gw, dtype=w_dtype)


def _deconv_geometry(gy, W, stride, pad, outsize):
    """The sizes of a convolution's input gradient: stride (sh, sw), padding (ph, pw), the input's
    (h, w), gy's (n, o, ho, wo) and W's (c, kh, kw)."""
    n, o, ho, wo = gy.shape
    _, c, kh, kw = W.shape
    return tuple(stride), tuple(pad), tuple(outsize), (n, o, ho, wo), (c, kh, kw)


def _deconv_phases(gy, W, stride, pad, outsize):
    """gx by stride phase: padded positions p = s*q + r receive sum_t gy[q - t] * W[s*t + r], a
    stride-1 full correlation of gy with the flipped sub-kernel W[r::s] -- one forward
    convolution (im2col of gy, K = O*kh*kw/(sh*sw)) per (rh, rw) phase, written into the strided
    phase of the padded channels-last result."""
    (sh, sw), (ph, pw), (h, w), (n, o, ho, wo), (c, kh, kw) = _deconv_geometry(
        gy, W, stride, pad, outsize)
    dtype = gy.dtype
    hp, wp = h + 2 * ph, w + 2 * pw
    gxp = np.empty((n, hp, wp, c), dtype=dtype)
    for rh in range(sh):
        krh, qh = len(range(rh, kh, sh)), len(range(rh, hp, sh))
        for rw in range(sw):
            krw, qw = len(range(rw, kw, sw)), len(range(rw, wp, sw))
            dst = gxp[:, rh::sh, rw::sw, :]
            if not (krh and krw and qh and qw):
                dst[...] = 0  # no kernel tap lands on this phase
                continue
            wr = W[:, :, rh::sh, rw::sw][:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
            _conv_nhwc(gy, wr, (1, 1), (krh - 1, qh - ho, krw - 1, qw - wo), out=dst)
    return gxp[:, ph:ph + h, pw:pw + w, :].transpose(0, 3, 1, 2)


def _deconv_scatter(gy, W, stride, pad, outsize):
    """gx by GEMM gcols = gy (positions, O) @ W (O, kh*kw*C) per tile, then kh*kw strided
    scatter-adds (col2im) into the padded channels-last result. Jobs are whole batch chunks, so
    no two workers add into the same clip."""
    (sh, sw), (ph, pw), (h, w), (n, o, ho, wo), (c, kh, kw) = _deconv_geometry(
        gy, W, stride, pad, outsize)
    dtype = gy.dtype
    k = kh * kw * c
    wmat_t = np.ascontiguousarray(W.transpose(0, 2, 3, 1)).reshape(o, k)
    gyt = gy.transpose(0, 2, 3, 1)
    gxp = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=dtype)
    nb, tiles, jobs = _jobs(n, ho, wo, k * dtype.itemsize, spatial_ok=False)

    def make_state():
        return _buffer(nb, tiles, k, dtype)

    def work(buf, job):
        n0, n1, job_tiles = job
        for h0, h1, w0, w1 in job_tiles:
            m = (n1 - n0) * (h1 - h0) * (w1 - w0)
            g = np.ascontiguousarray(gyt[n0:n1, h0:h1, w0:w1]).reshape(m, o)
            gcols = buf[:m * k].reshape(m, k)
            np.matmul(g, wmat_t, out=gcols)
            g6 = gcols.reshape(n1 - n0, h1 - h0, w1 - w0, kh, kw, c)
            for i in range(kh):
                hs = h0 * sh + i
                he = hs + sh * (h1 - h0 - 1) + 1
                for j in range(kw):
                    ws = w0 * sw + j
                    we = ws + sw * (w1 - w0 - 1) + 1
                    gxp[n0:n1, hs:he:sh, ws:we:sw, :] += g6[:, :, :, i, j, :]

    _run_jobs(jobs, work, make_state)
    return gxp[:, ph:ph + h, pw:pw + w, :].transpose(0, 3, 1, 2)


def _deconv(gy, W, stride, pad, outsize, method=None):
    """gx (N, C, H, W): transposed convolution of gy (N, O, Ho, Wo) with W (O, C, kh, kw)."""
    W = W.astype(gy.dtype, copy=False)
    o, c = W.shape[:2]
    if method is None:
        method = 'phases' if _PHASES_RATIO * c >= o else 'scatter'
    fn = _deconv_phases if method == 'phases' else _deconv_scatter
    return fn(gy, W, stride, pad, outsize)


# --------------------------------------------------------------------------------------------
# FunctionNodes
# --------------------------------------------------------------------------------------------

class FastConvolution2D(function_node.FunctionNode):
    """y = x * W + b (2-D correlation, as ``F.convolution_2d``), NumPy CPU only."""

    def __init__(self, stride=1, pad=0):
        self.sy, self.sx = _pair(stride)
        self.ph, self.pw = _pair(pad)
        if self.sy < 1 or self.sx < 1:
            raise ValueError('stride must be positive, got %r' % (stride,))
        if self.ph < 0 or self.pw < 0:
            raise ValueError('pad must be non-negative, got %r' % (pad,))

    def check_type_forward(self, in_types):
        n_in = in_types.size()
        type_check.expect(2 <= n_in, n_in <= 3)
        x_type, w_type = in_types[0], in_types[1]
        type_check.expect(
            x_type.dtype.kind == 'f',
            w_type.dtype.kind == 'f',
            x_type.ndim == 4,
            w_type.ndim == 4,
            x_type.shape[1] == w_type.shape[1],
        )
        if type_check.eval(n_in) == 3:
            b_type = in_types[2]
            type_check.expect(
                b_type.dtype == x_type.dtype,
                b_type.ndim == 1,
                b_type.shape[0] == w_type.shape[0],
            )

    def forward(self, inputs):
        _check_numpy(inputs, 'FastConvolution2D')
        self.retain_inputs((0, 1))
        x, W = inputs[:2]
        b = inputs[2] if len(inputs) == 3 else None
        return _conv_forward(x, W, b, (self.sy, self.sx), (self.ph, self.pw)),

    def backward(self, indexes, grad_outputs):
        x, W = self.get_retained_inputs()
        gy, = grad_outputs
        stride, pad = (self.sy, self.sx), (self.ph, self.pw)
        ret = []
        if 0 in indexes:
            gx, = FastDeconvolution2D(stride, pad, x.shape[2:]).apply((gy, W))
            ret.append(gx)
        if 1 in indexes:
            gW, = FastConvolution2DGradW(stride, pad, W.shape, W.dtype).apply((x, gy))
            ret.append(gW)
        if 2 in indexes:
            ret.append(F.sum(gy, axis=(0, 2, 3)))
        return ret


class FramedConvolution2D(FastConvolution2D):
    """:class:`FastConvolution2D` for a one-channel, one-row input and a one-row kernel (a bank
    of filters applied to frames of a waveform, e.g. a DFT): x (N, 1, 1, T), W (O, 1, 1, K),
    stride (1, s), no pad, no bias -> y (N, O, 1, F) with F = (T - K) // s + 1.

    Forward: the frames copied out as one (N F, K) matrix (a strided view, then one copy) and one
    GEMM with W (K, O), then y in Chainer's layout: the GEMM of Chainer's own im2col path, the
    same values, without its (N, K, F) column array and its tensordot transposes. Backward:
    :class:`FastConvolution2D`'s. Used for Logmel-CNN's DFT front end (docs/method.md §8), where
    frames overlap by half (the copy holds each sample twice); not for a kernel much longer than
    its stride, where the copy would be many times the waveform.
    """

    def __init__(self, stride):
        super().__init__(stride, 0)
        if self.sy != 1:
            raise ValueError(f'FramedConvolution2D: the row stride must be 1, got {stride!r}')

    def forward(self, inputs):
        _check_numpy(inputs, 'FramedConvolution2D')
        x, W = inputs
        n, c, h, t = x.shape
        o, _, kh, k = W.shape
        if (c, h, kh) != (1, 1, 1):
            raise ValueError(f'FramedConvolution2D: x (N, 1, 1, T) and W (O, 1, 1, K) needed, '
                             f'got {x.shape} and {W.shape}')
        self.retain_inputs((0, 1))
        s = self.sx
        frames_n = (t - k) // s + 1
        x2 = np.ascontiguousarray(x).reshape(n, t)
        frames = np.lib.stride_tricks.as_strided(
            x2, (n, frames_n, k), (x2.strides[0], s * x2.strides[1], x2.strides[1]),
            writeable=False).reshape(n * frames_n, k)
        y = np.matmul(frames, W.reshape(o, k).T).reshape(n, frames_n, o)
        return np.ascontiguousarray(y.transpose(0, 2, 1)).reshape(n, o, 1, frames_n),


def use_framed(x, W, stride, frame_ratio=2):
    """True when :func:`framed_convolution_2d` applies: the fast path on, NumPy float32/float64 x
    (N, 1, 1, T) and W (O, 1, 1, K) of one dtype, stride (1, s) with K <= ``frame_ratio`` x s."""
    xa, wa = chainer.as_array(x), chainer.as_array(W)
    if not enabled() or type(xa) is not np.ndarray or type(wa) is not np.ndarray:
        return False
    sy, sx = _pair(stride)
    return (xa.dtype in _FAST_DTYPES and xa.dtype == wa.dtype and xa.ndim == 4 and wa.ndim == 4
            and xa.shape[1:3] == (1, 1) and wa.shape[1:3] == (1, 1) and sy == 1
            and wa.shape[3] <= frame_ratio * sx and xa.shape[3] >= wa.shape[3])


def framed_convolution_2d(x, W, stride):
    """``F.convolution_2d(x, W, stride=stride)`` for frames of a waveform:
    :class:`FramedConvolution2D` where :func:`use_framed` holds, else :func:`convolution_2d`
    (GPU: Chainer's own path)."""
    if use_framed(x, W, stride):
        y, = FramedConvolution2D(stride).apply((x, W))
        return y
    return convolution_2d(x, W, stride=stride)


class FastDeconvolution2D(function_node.FunctionNode):
    """gx = transposed convolution of gy (N, O, Ho, Wo) with W (O, C, kh, kw) to size ``outsize``.

    The gradient of :class:`FastConvolution2D` with respect to x (no bias).
    """

    def __init__(self, stride, pad, outsize):
        self.stride, self.pad = _pair(stride), _pair(pad)
        self.outsize = _pair(outsize)

    def forward(self, inputs):
        _check_numpy(inputs, 'FastDeconvolution2D')
        self.retain_inputs((0, 1))
        gy, W = inputs
        return _deconv(gy, W, self.stride, self.pad, self.outsize),

    def backward(self, indexes, grad_outputs):
        gy, W = self.get_retained_inputs()
        ggx, = grad_outputs
        ret = []
        if 0 in indexes:
            ret.append(fast_convolution_2d(ggx, W, None, self.stride, self.pad))
        if 1 in indexes:
            gW, = FastConvolution2DGradW(self.stride, self.pad, W.shape, W.dtype).apply((ggx, gy))
            ret.append(gW)
        return ret


class FastConvolution2DGradW(function_node.FunctionNode):
    """gW = correlation of x (N, C, H, W) with gy (N, O, Ho, Wo): the weight gradient."""

    def __init__(self, stride, pad, w_shape, w_dtype):
        self.stride, self.pad = _pair(stride), _pair(pad)
        self.w_shape = tuple(w_shape)
        self.w_dtype = np.dtype(w_dtype)

    def forward(self, inputs):
        _check_numpy(inputs, 'FastConvolution2DGradW')
        self.retain_inputs((0, 1))
        x, gy = inputs
        kh, kw = self.w_shape[2:]
        return _conv_grad_w(x, gy, kh, kw, self.stride, self.pad, self.w_dtype),

    def backward(self, indexes, grad_outputs):
        x, gy = self.get_retained_inputs()
        ggW, = grad_outputs
        ret = []
        if 0 in indexes:
            gx, = FastDeconvolution2D(self.stride, self.pad, x.shape[2:]).apply((gy, ggW))
            ret.append(gx)
        if 1 in indexes:
            ret.append(fast_convolution_2d(x, ggW, None, self.stride, self.pad))
        return ret


# --------------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------------

def fast_convolution_2d(x, W, b=None, stride=1, pad=0):
    """Same as ``F.convolution_2d(x, W, b, stride, pad)`` (no dilate/groups/cover_all), NumPy only.

    Returns a Variable of shape (N, O, Ho, Wo); raises TypeError for non-NumPy arrays.
    """
    inputs = (x, W) if b is None else (x, W, b)
    y, = FastConvolution2D(stride, pad).apply(inputs)
    return y


def use_fast(x, W, b=None, cover_all=False, dilate=1, groups=1):
    """True when :func:`convolution_2d` would take the fast path for these arguments."""
    if not enabled() or cover_all or _pair(dilate) != (1, 1) or groups != 1:
        return False
    xa, wa, ba = chainer.as_array(x), chainer.as_array(W), chainer.as_array(b)
    for a in (xa, wa) + (() if b is None else (ba,)):
        if type(a) is not np.ndarray or a.dtype not in _FAST_DTYPES:
            return False
    return xa.dtype == wa.dtype and xa.ndim == 4


def convolution_2d(x, W, b=None, stride=1, pad=0, cover_all=False, dilate=1, groups=1):
    """Dispatch: :func:`fast_convolution_2d` for NumPy float32/float64 arrays when
    :func:`enabled` (and ``cover_all=False``, ``dilate=1``, ``groups=1``); otherwise
    ``chainer.functions.convolution_2d`` with the same arguments (GPU arrays: Chainer's own path,
    cuDNN when present; ChainerX, float16, mixed dtypes, or the fast path switched off)."""
    if use_fast(x, W, b, cover_all, dilate, groups):
        return fast_convolution_2d(x, W, b, stride, pad)
    return F.convolution_2d(x, W, b, stride, pad, cover_all=cover_all, dilate=dilate,
                            groups=groups)


# --------------------------------------------------------------------------------------------
# Max pooling with stride = kernel (non-overlapping windows)
# --------------------------------------------------------------------------------------------
#
# Chainer's CPU max pooling builds an im2col array padded with -inf, arg-maxes over the window
# axis (NumPy copies it into that axis order first) and scatters the gradient back with col2im.
# With stride = kernel and no padding every element is in at most one window, so the windows are
# a reshape of the input: one copy into (..., kh*kw) order at most (none for a (1, k) kernel on
# an NCHW-contiguous input), an argmax, a gather; the gradient is one comparison with the
# argmax. Channels-last inputs (the NCHW views of fast convolution outputs, through BN and ReLU)
# are windowed in their own memory order and give a channels-last output too. The first maximum
# of a window (row-major over (kh, kw)) wins, as in Chainer, so gradients match it on ties too.
#
# Where numba imports (requirements.txt installs it) the forward and the gradient are instead
# one compiled loop each over the windows in memory order (POOL_KERNEL = 'numba'): the same
# values bit for bit -- NumPy's argmax rules (first maximum; a NaN wins, the first one), the
# gradient ``1 * gy`` at the argmax and ``0 * gy`` at the window's other elements (so -0.0 and
# NaN where the NumPy product has them) -- without the window copies, the (..., kh*kw)
# comparison array and the single thread: batch chunks go to the worker threads, the GIL
# released. EnvNet-v2 at batch 64 spent ~2.4 s of an 11 s step in the NumPy pooling (forward
# and gradient, five poolings).

#: Which max pooling kernel :class:`FastMaxPooling2D` runs: 'numba' where numba imports, else
#: 'numpy' (reshapes, argmax, gathers). Both give the same values and indexes bit for bit.
POOL_KERNEL = 'numba' if numba is not None else 'numpy'

if numba is not None:
    @njit_cached
    def _pool_last_fwd(a, kh, kw, y, idx):
        """Channels-last max pooling, stride = kernel: ``a`` (n, H, W, C) -> ``y``, ``idx``
        (n, Ho, Wo, C), idx = i * kw + j of the window's first maximum (first NaN if any);
        window elements beyond H, W are skipped (``cover_all`` partial windows)."""
        n, h, w, c = a.shape
        ho, wo = y.shape[1], y.shape[2]
        for b in range(n):
            for oh in range(ho):
                for ow in range(wo):
                    yv = y[b, oh, ow]
                    iv = idx[b, oh, ow]
                    for ch in range(c):
                        yv[ch] = a[b, oh * kh, ow * kw, ch]
                        iv[ch] = 0
                    for i in range(kh):
                        r = oh * kh + i
                        if r >= h:
                            break
                        for j in range(kw):
                            col = ow * kw + j
                            if col >= w:
                                break
                            if i == 0 and j == 0:
                                continue
                            av = a[b, r, col]
                            k = i * kw + j
                            for ch in range(c):
                                v = av[ch]
                                best = yv[ch]
                                if v > best or (v != v and best == best):
                                    yv[ch] = v
                                    iv[ch] = k

    @njit_cached
    def _pool_first_fwd(a, kh, kw, y, idx):
        """:func:`_pool_last_fwd` for NCHW ``a`` (n, C, H, W) -> ``y``, ``idx`` (n, C, Ho, Wo)."""
        n, c, h, w = a.shape
        ho, wo = y.shape[2], y.shape[3]
        for b in range(n):
            for ch in range(c):
                for oh in range(ho):
                    for ow in range(wo):
                        best = a[b, ch, oh * kh, ow * kw]
                        bi = 0
                        for i in range(kh):
                            r = oh * kh + i
                            if r >= h:
                                break
                            for j in range(kw):
                                col = ow * kw + j
                                if col >= w:
                                    break
                                v = a[b, ch, r, col]
                                if v > best or (v != v and best == best):
                                    best = v
                                    bi = i * kw + j
                        y[b, ch, oh, ow] = best
                        idx[b, ch, oh, ow] = bi

    @njit_cached
    def _pool_last_grad(g, idx, kh, kw, gx):
        """Channels-last gradient: ``gx`` (n, H, W, C) = ``g`` (n, Ho, Wo, C) at each window's
        ``idx``, ``0 * g`` at the window's other elements, 0 outside every window."""
        n, h, w, c = gx.shape
        ho, wo = g.shape[1], g.shape[2]
        for b in range(n):
            for oh in range(ho):
                for ow in range(wo):
                    gv = g[b, oh, ow]
                    iv = idx[b, oh, ow]
                    for i in range(kh):
                        r = oh * kh + i
                        if r >= h:
                            break
                        for j in range(kw):
                            col = ow * kw + j
                            if col >= w:
                                break
                            k = i * kw + j
                            dst = gx[b, r, col]
                            for ch in range(c):
                                dst[ch] = gv[ch] if iv[ch] == k else gv[ch] * 0
            for r in range(h):
                for col in range(w):
                    if r >= ho * kh or col >= wo * kw:
                        for ch in range(c):
                            gx[b, r, col, ch] = 0

    @njit_cached
    def _pool_first_grad(g, idx, kh, kw, gx):
        """:func:`_pool_last_grad` for NCHW ``g`` (n, C, Ho, Wo) -> ``gx`` (n, C, H, W)."""
        n, c, h, w = gx.shape
        ho, wo = g.shape[2], g.shape[3]
        for b in range(n):
            for ch in range(c):
                for r in range(h):
                    for col in range(w):
                        oh, ow = r // kh, col // kw
                        if oh < ho and ow < wo:
                            gv = g[b, ch, oh, ow]
                            k = (r - oh * kh) * kw + (col - ow * kw)
                            gx[b, ch, r, col] = gv if idx[b, ch, oh, ow] == k else gv * 0
                        else:
                            gx[b, ch, r, col] = 0


def _batch_jobs(n):
    """Batch chunks [(n0, n1), ...], one per worker thread (at most one clip each)."""
    nw = max(1, min(_threads(), n))
    return [(n * w // nw, n * (w + 1) // nw) for w in range(nw)]


def _pool_numba(x, ksize, outsize):
    """(y, indexes, channels_last) of :class:`FastMaxPooling2D` by the compiled loops; ``y``
    NCHW (a channels-last view for channels-last ``x``), ``indexes`` in the layout of
    :func:`_pool_windows`."""
    (kh, kw), (ho, wo) = ksize, outsize
    n, c = x.shape[:2]
    last = _channels_last(x)
    if last:
        a, shape, kernel = x.transpose(0, 2, 3, 1), (n, ho, wo, c), _pool_last_fwd
    else:
        a, shape, kernel = np.ascontiguousarray(x), (n, c, ho, wo), _pool_first_fwd
    y = np.empty(shape, dtype=x.dtype)
    idx = np.empty(shape, dtype=np.intp)
    _run_jobs(_batch_jobs(n), lambda _, job: kernel(a[job[0]:job[1]], kh, kw,
                                                    y[job[0]:job[1]], idx[job[0]:job[1]]),
              lambda: None)
    return (y.transpose(0, 3, 1, 2) if last else y), idx, last


def _pool_grad_numba(gy, f):
    """gx of :class:`FastMaxPooling2D` ``f`` by the compiled loops (NCHW; a channels-last view
    when the forward's input was)."""
    (kh, kw) = f.ksize
    n, c, h, w = f.in_shape
    if f.last:
        g = np.ascontiguousarray(gy.transpose(0, 2, 3, 1))
        gx, kernel = np.empty((n, h, w, c), dtype=gy.dtype), _pool_last_grad
    else:
        g = np.ascontiguousarray(gy)
        gx, kernel = np.empty((n, c, h, w), dtype=gy.dtype), _pool_first_grad
    _run_jobs(_batch_jobs(n), lambda _, job: kernel(g[job[0]:job[1]], f.indexes[job[0]:job[1]],
                                                    kh, kw, gx[job[0]:job[1]]),
              lambda: None)
    return gx.transpose(0, 3, 1, 2) if f.last else gx


def _channels_last(x):
    """True when the NCHW array ``x`` is the view of a C-contiguous (N, H, W, C) buffer."""
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous and \
        not x.flags.c_contiguous


def _resize_spatial(a, axes, size, fill):
    """``a`` with its two spatial ``axes`` cut or extended (with ``fill``) to ``size``; ``a``
    itself when it has that size already."""
    if (a.shape[axes[0]], a.shape[axes[1]]) == tuple(size):
        return a
    shape = list(a.shape)
    shape[axes[0]], shape[axes[1]] = size
    out = np.full(shape, fill, dtype=a.dtype)
    index = [slice(None)] * a.ndim
    index[axes[0]] = slice(0, min(a.shape[axes[0]], size[0]))
    index[axes[1]] = slice(0, min(a.shape[axes[1]], size[1]))
    out[tuple(index)] = a[tuple(index)]
    return out


def _pool_windows(x, ksize, outsize, fill, last=None):
    """(windows, channels_last): x (N, C, H, W) cut into (N, C, Ho, Wo, kh*kw) windows, or
    (N, Ho, Wo, C, kh*kw) for a channels-last ``x`` (``last=None``; True/False force the layout);
    rows/columns beyond H, W hold ``fill``, rows/columns beyond Ho*kh, Wo*kw are dropped."""
    (kh, kw), (ho, wo) = ksize, outsize
    n, c, h, w = x.shape
    if last is None:
        last = _channels_last(x)
    a = x.transpose(0, 2, 3, 1) if last else x          # (N, H, W, C) or (N, C, H, W)
    sp = (1, 2) if last else (2, 3)                     # spatial axes of a
    a = _resize_spatial(a, sp, (ho * kh, wo * kw), fill)
    if last:
        v = a.reshape(n, ho, kh, wo, kw, c).transpose(0, 1, 3, 5, 2, 4)
        return v.reshape(n, ho, wo, c, kh * kw), True
    v = a.reshape(n, c, ho, kh, wo, kw).transpose(0, 1, 2, 4, 3, 5)
    return v.reshape(n, c, ho, wo, kh * kw), False


def _pick(windows, indexes, last):
    """The NCHW array (N, C, Ho, Wo) of each window's element at ``indexes`` (the windows of
    :func:`_pool_windows`; ``last``: their channels-last layout)."""
    y = np.take_along_axis(windows, indexes[..., None], axis=-1)[..., 0]
    return y.transpose(0, 3, 1, 2) if last else y


class FastMaxPooling2D(function_node.FunctionNode):
    """Max pooling with stride = kernel and no padding, NumPy CPU only (as
    ``F.max_pooling_2d(x, ksize, stride=ksize, pad=0, cover_all)``): (N, C, H, W) ->
    (N, C, Ho, Wo) with ``Ho = ceil((H - kh) / kh) + 1`` if ``cover_all`` (a partial last window
    is pooled over the samples it has) else ``(H - kh) // kh + 1``, likewise Wo."""

    def __init__(self, ksize, cover_all=True):
        self.ksize = _pair(ksize)
        self.cover_all = bool(cover_all)

    def forward(self, inputs):
        _check_numpy(inputs, 'FastMaxPooling2D')
        x, = inputs
        kh, kw = self.ksize
        self.in_shape = x.shape
        self.outsize = (conv.get_conv_outsize(x.shape[2], kh, kh, 0, self.cover_all),
                        conv.get_conv_outsize(x.shape[3], kw, kw, 0, self.cover_all))
        if min(self.outsize) < 1:
            raise ValueError(f'max pooling: input {x.shape[2:]} smaller than kernel {self.ksize}')
        if POOL_KERNEL == 'numba' and x.dtype in _FAST_DTYPES:
            y, self.indexes, self.last = _pool_numba(x, self.ksize, self.outsize)
            return y,
        windows, self.last = _pool_windows(x, self.ksize, self.outsize, -np.inf)
        self.indexes = windows.argmax(axis=-1)
        return _pick(windows, self.indexes, self.last),

    def backward(self, indexes, grad_outputs):
        return MaxPooling2DGrad(self).apply(grad_outputs)


class _PoolingGradNode(function_node.FunctionNode):
    """Base of the pooling's gradient nodes: they keep the forward node (ksize, layout, argmax)."""

    def __init__(self, fwd):
        self.fwd = fwd


class MaxPooling2DGrad(_PoolingGradNode):
    """gx of :class:`FastMaxPooling2D`: gy routed to each window's (first) maximum, 0 elsewhere."""

    def forward(self, inputs):
        gy, = inputs
        f = self.fwd
        if POOL_KERNEL == 'numba' and gy.dtype in _FAST_DTYPES:
            return _pool_grad_numba(gy, f),
        (kh, kw), (ho, wo) = f.ksize, f.outsize
        n, c, h, w = f.in_shape
        g = gy.transpose(0, 2, 3, 1) if f.last else gy        # the layout of the windows
        hit = f.indexes[..., None] == np.arange(kh * kw, dtype=f.indexes.dtype)
        gwin = np.multiply(hit, g[..., None], dtype=gy.dtype)
        if f.last:
            full = gwin.reshape(n, ho, wo, c, kh, kw).transpose(0, 1, 4, 2, 5, 3)
            full = full.reshape(n, ho * kh, wo * kw, c)
            sp = (1, 2)
        else:
            full = gwin.reshape(n, c, ho, wo, kh, kw).transpose(0, 1, 2, 4, 3, 5)
            full = full.reshape(n, c, ho * kh, wo * kw)
            sp = (2, 3)
        full = _resize_spatial(full, sp, (h, w), 0)
        return (full.transpose(0, 3, 1, 2) if f.last else full),

    def backward(self, indexes, grad_outputs):
        return MaxPooling2DGradGrad(self.fwd).apply(grad_outputs)


class MaxPooling2DGradGrad(_PoolingGradNode):
    """ggy = ggx at each window's maximum (the pooling's gather, with the forward's indexes)."""

    def forward(self, inputs):
        ggx, = inputs
        f = self.fwd
        windows, _ = _pool_windows(ggx, f.ksize, f.outsize, 0, last=f.last)
        return _pick(windows, f.indexes, f.last),

    def backward(self, indexes, grad_outputs):
        return MaxPooling2DGrad(self.fwd).apply(grad_outputs)


def use_fast_pooling(x, ksize, stride=None, pad=0):
    """True when :func:`max_pooling_2d` would take the fast path for these arguments."""
    if not enabled():
        return False
    ksize = _pair(ksize)
    stride = ksize if stride is None else _pair(stride)
    xa = chainer.as_array(x)
    return (stride == ksize and _pair(pad) == (0, 0) and type(xa) is np.ndarray and
            xa.dtype in _FAST_DTYPES and xa.ndim == 4 and xa.shape[2] >= ksize[0] and
            xa.shape[3] >= ksize[1])


def max_pooling_2d(x, ksize, stride=None, pad=0, cover_all=True):
    """Dispatch: :class:`FastMaxPooling2D` for NumPy float32/float64 input when :func:`enabled`,
    stride = kernel (``stride=None`` means the kernel, as in Chainer) and ``pad=0``; otherwise
    ``chainer.functions.max_pooling_2d`` with the same arguments (GPU arrays: Chainer's path,
    cuDNN when present). Same values and gradients as Chainer's, ties included."""
    if use_fast_pooling(x, ksize, stride, pad):
        y, = FastMaxPooling2D(ksize, cover_all).apply((x,))
        return y
    return F.max_pooling_2d(x, ksize, stride=stride, pad=pad, cover_all=cover_all)


# --------------------------------------------------------------------------------------------
# Batch normalisation + ReLU (the tail of every ConvBNReLU)
# --------------------------------------------------------------------------------------------
#
# Chainer's CPU ``F.batch_normalization`` followed by ``F.relu`` makes about a dozen passes over
# the feature map, each with a fresh full-size temporary (page faults included), and reduces over
# axes (0, 2, 3) of channels-last arrays (the fast convolution's outputs) the slow way: on
# EnvNet-v2's conv1 output at batch 64 (68 M values) forward + backward took 1.4-2.0 s. Fused here
# into one FunctionNode: the map is a matrix -- (N*H*W, C) channels-last, or (N*C, H*W)
# NCHW-contiguous -- processed in blocks of rows of :data:`BN_BLOCK_BYTES` on the worker threads,
# so that each block stays in cache through all the operations on it. Forward: a pass for the
# mean, one for the sum of squared deviations (two-pass variance, float64 accumulators), one
# writing relu(gamma x_hat + beta). Backward: a pass for sum(g) and sum(g x) (g = gy through the
# ReLU), one writing gx. The only full-size allocations are y and gx. Running averages are updated
# as Chainer's link does (decay, unbiased variance m / (m - 1)).

#
# Where numba imports, the blocks of a channels-last map (every fast convolution's output) go
# through compiled loops instead (BN_KERNEL = 'numba'), one per pass, with the NumPy kernels'
# operations in their order and precision -- per-channel float64 sums accumulated row after row
# from zero (NumPy's order for a sum over axis 0 and for the einsum), the element-wise steps in
# the map's dtype, ReLU as ``np.maximum(v, 0)`` (NaN kept, -0.0 -> +0.0) -- so the same values
# bit for bit, without the per-block temporaries (EnvNet-v2 at batch 64: the NumPy blocks took
# ~2 s of a 9.3 s step).

#: Bytes of one block of rows of the batch-normalisation kernels.
BN_BLOCK_BYTES = 2 * 2 ** 20

#: Which kernel runs the blocks of a channels-last map: 'numba' where numba imports, else 'numpy'
#: (NCHW maps always take the NumPy blocks). Both give the same values bit for bit.
BN_KERNEL = 'numba' if numba is not None else 'numpy'

if numba is not None:
    @njit_cached
    def _bn_sums(a, out):
        """out (C,) float64 = sum over rows of a (rows, C), accumulated row after row."""
        for ch in range(a.shape[1]):
            out[ch] = 0.0
        for i in range(a.shape[0]):
            for ch in range(a.shape[1]):
                out[ch] += a[i, ch]

    @njit_cached
    def _bn_sq_dev(a, mean, out):
        """out (C,) float64 = sum over rows of d * d, d = a - mean in a's dtype."""
        for ch in range(a.shape[1]):
            out[ch] = 0.0
        for i in range(a.shape[0]):
            for ch in range(a.shape[1]):
                d = np.float64(a[i, ch] - mean[ch])
                out[ch] += d * d

    @njit_cached
    def _bn_relu_write(a, mean, scale, beta, y):
        """y = max((a - mean) * scale + beta, 0), each step in a's dtype (NaN kept)."""
        for i in range(a.shape[0]):
            for ch in range(a.shape[1]):
                v = (a[i, ch] - mean[ch]) * scale[ch] + beta[ch]
                y[i, ch] = v if (v > 0 or v != v) else 0

    @njit_cached
    def _bn_grad_sums(gy, y, a, mean, g, sum_g, sum_gd):
        """g = gy * (y > 0) (written to ``g``); sum_g, sum_gd (C,) float64 = sums over rows
        of g and of g * (a - mean), the difference in a's dtype."""
        for ch in range(a.shape[1]):
            sum_g[ch] = 0.0
            sum_gd[ch] = 0.0
        for i in range(a.shape[0]):
            for ch in range(a.shape[1]):
                v = gy[i, ch] * (1 if y[i, ch] > 0 else 0)
                g[i, ch] = v
                sum_g[ch] += v
                sum_gd[ch] += np.float64(v) * np.float64(a[i, ch] - mean[ch])

    @njit_cached
    def _bn_grad_write(g, a, mean, k1, k0, scale, fixed):
        """In place on g: g = (g - (a - mean) * k1 - k0) * scale, or g * scale if ``fixed``."""
        for i in range(a.shape[0]):
            for ch in range(a.shape[1]):
                v = g[i, ch]
                if not fixed:
                    v = v - (a[i, ch] - mean[ch]) * k1[ch]
                    v = v - k0[ch]
                g[i, ch] = v * scale[ch]


def _compiled_sums(kernel, *args):
    """The (C,) float64 sums that ``kernel(*args, out)`` writes (one block of rows)."""
    out = np.empty(args[0].shape[1])
    kernel(*args, out)
    return out


class _BNMatrix:
    """The (rows, cols) matrix form of an (N, C, H, W) array laid out as ``x``, with per-channel
    helpers: channels-last -> (N*H*W, C) (channel = column), else (N*C, H*W) (channel = row % C)."""

    def __init__(self, x):
        n, c, h, w = x.shape
        self.shape, self.c = x.shape, c
        self.last = _channels_last(x)
        if not self.last and not x.flags.c_contiguous:
            raise ValueError('fastconv batch normalisation: x must be NCHW- or channels-last-'
                             'contiguous (use fastconv.bn_relu, which falls back)')
        #: blocks through the compiled loops (channels-last float32/float64, BN_KERNEL 'numba')
        self.compiled = self.last and BN_KERNEL == 'numba' and x.dtype in _FAST_DTYPES
        rows, cols = (n * h * w, c) if self.last else (n * c, h * w)
        step = max(1, BN_BLOCK_BYTES // max(1, cols * x.dtype.itemsize))
        self.blocks = [(r, min(rows, r + step)) for r in range(0, rows, step)]

    def mat(self, a):
        """The matrix view of ``a`` (same layout as x; other layouts are copied into it)."""
        n, c, h, w = self.shape
        if self.last:  # no copy for a channels-last a
            return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).reshape(n * h * w, c)
        return np.ascontiguousarray(a).reshape(n * c, h * w)

    def empty(self, dtype):
        """(NCHW array, its matrix view): a new array in this layout."""
        n, c, h, w = self.shape
        if self.last:
            a = np.empty((n, h, w, c), dtype)
            return a.transpose(0, 3, 1, 2), a.reshape(n * h * w, c)
        a = np.empty((n, c, h, w), dtype)
        return a, a.reshape(n * c, h * w)

    def vec(self, v, r0, r1, dtype):
        """Per-channel values ``v`` (C,) broadcast against the block of rows r0:r1."""
        v = np.asarray(v).astype(dtype, copy=False)
        if self.last:
            return v
        return v[np.arange(r0, r1) % self.c][:, None]

    def sums(self, block, r0, r1, other=None):
        """Per-channel float64 sums (C,) of ``block`` (or of block * other) of rows r0:r1."""
        if self.last:
            if other is None:
                return block.sum(axis=0, dtype=np.float64)
            return np.einsum('ij,ij->j', block, other, dtype=np.float64)
        rows = (block.sum(axis=1, dtype=np.float64) if other is None else
                np.einsum('ij,ij->i', block, other, dtype=np.float64))
        return np.bincount(np.arange(r0, r1) % self.c, weights=rows, minlength=self.c)

    def reduce(self, fn):
        """Sum over blocks of ``fn(r0, r1)`` -> (C,) or tuple of (C,) float64, on the workers."""
        def make_state():
            return []

        def work(acc, job):
            acc.append(fn(*job))
        parts = [p for acc in _run_jobs(self.blocks, work, make_state) for p in acc]
        return tuple(np.sum(z, axis=0) for z in zip(*parts))

    def each(self, fn):
        """Run ``fn(r0, r1)`` for every block on the workers."""
        _run_jobs(self.blocks, lambda _, job: fn(*job), lambda: None)


class FastBatchNormalizationReLU(function_node.FunctionNode):
    """``relu(batch_normalization(x, gamma, beta))`` over axes (0, 2, 3) of x (N, C, H, W), in
    training mode (batch statistics; running averages updated in place when given) or with fixed
    statistics (``mean``, ``var``: test mode). Same formulas as Chainer's: x_hat = (x - mean) /
    sqrt(var + eps), y = max(gamma x_hat + beta, 0), the batch variance biased, the running one
    updated with var * m / (m - 1), m = N*H*W. NumPy CPU only; first-order gradients (x, gamma,
    beta). Raises ValueError for an x that is neither NCHW- nor channels-last-contiguous."""

    def __init__(self, eps, running_mean=None, running_var=None, decay=0.9, mean=None,
                 var=None):
        self.eps = float(eps)
        self.running_mean, self.running_var, self.decay = running_mean, running_var, decay
        self.fixed = mean is not None
        self.fixed_mean, self.fixed_var = mean, var

    def forward(self, inputs):
        _check_numpy(inputs, 'FastBatchNormalizationReLU')
        x, gamma, beta = inputs
        mx = _BNMatrix(x)
        a, dt = mx.mat(x), x.dtype
        m = x.size // x.shape[1]
        if self.fixed:
            mean = np.asarray(self.fixed_mean, np.float64)
            var = np.asarray(self.fixed_var, np.float64)
        elif mx.compiled:
            mean = mx.reduce(lambda r0, r1: (_compiled_sums(_bn_sums, a[r0:r1]),))[0] / m
            mean_dt = mean.astype(dt)
            var = mx.reduce(lambda r0, r1: (_compiled_sums(_bn_sq_dev, a[r0:r1], mean_dt),))[0]
            var = var / m
        else:
            mean = mx.reduce(lambda r0, r1: (mx.sums(a[r0:r1], r0, r1),))[0] / m

            def sq_dev(r0, r1):
                d = a[r0:r1] - mx.vec(mean, r0, r1, dt)
                return (mx.sums(d, r0, r1, d),)
            var = mx.reduce(sq_dev)[0] / m
        inv_std = 1.0 / np.sqrt(var + self.eps)
        scale = gamma.astype(np.float64) * inv_std
        y, ym = mx.empty(dt)

        def write(r0, r1):
            out = ym[r0:r1]
            np.subtract(a[r0:r1], mx.vec(mean, r0, r1, dt), out=out)
            out *= mx.vec(scale, r0, r1, dt)
            out += mx.vec(beta, r0, r1, dt)
            np.maximum(out, 0, out=out)
        if mx.compiled:
            vecs = [np.asarray(v).astype(dt) for v in (mean, scale, beta)]
            mx.each(lambda r0, r1: _bn_relu_write(a[r0:r1], *vecs, ym[r0:r1]))
        else:
            mx.each(write)
        if not self.fixed and self.running_mean is not None:
            adjust = m / max(m - 1.0, 1.0)
            self.running_mean *= self.decay
            self.running_mean += (1 - self.decay) * mean
            self.running_var *= self.decay
            self.running_var += (1 - self.decay) * adjust * var
        self.mean, self.inv_std, self.m = mean, inv_std, m
        self.retain_inputs((0, 1))
        self.retain_outputs((0,))
        return y,

    def backward(self, indexes, grad_outputs):
        x, gamma = self.get_retained_inputs()
        y, = self.get_retained_outputs()
        gx, ggamma, gbeta = _BatchNormalizationReLUGrad(self).apply(
            (x, gamma, y, grad_outputs[0]))
        return gx, ggamma, gbeta


class _BatchNormalizationReLUGrad(function_node.FunctionNode):
    """(gx, ggamma, gbeta) of :class:`FastBatchNormalizationReLU` (no higher-order gradients).

    With g = gy * (y > 0), x_hat = (x - mean) inv_std: gbeta = sum g, ggamma = sum g x_hat =
    inv_std (sum g (x - mean)), and gx = gamma inv_std (g - (x_hat ggamma + gbeta) / m) with batch
    statistics, gamma inv_std g with fixed ones (Chainer's formulas)."""

    def __init__(self, fwd):
        self.fwd = fwd

    def forward(self, inputs):
        x, gamma, y, gy = inputs
        f = self.fwd
        mx = _BNMatrix(x)
        a, ya, gya, dt = mx.mat(x), mx.mat(y), mx.mat(gy), x.dtype
        gx, g = mx.empty(dt)

        def through_relu(r0, r1):
            out = g[r0:r1]
            np.multiply(gya[r0:r1], ya[r0:r1] > 0, out=out)
            d = a[r0:r1] - mx.vec(f.mean, r0, r1, dt)
            return mx.sums(out, r0, r1), mx.sums(out, r0, r1, d)

        mean_dt = np.asarray(f.mean).astype(dt)

        def through_relu_compiled(r0, r1):
            sums = np.empty((2, mx.c))
            _bn_grad_sums(gya[r0:r1], ya[r0:r1], a[r0:r1], mean_dt, g[r0:r1], sums[0], sums[1])
            return sums[0], sums[1]
        gbeta, g_dev = mx.reduce(through_relu_compiled if mx.compiled else through_relu)
        ggamma = f.inv_std * g_dev
        scale = gamma.astype(np.float64) * f.inv_std
        k1 = ggamma * f.inv_std / f.m   # gx = scale (g - (x - mean) k1 - k0)
        k0 = gbeta / f.m

        def write(r0, r1):
            out = g[r0:r1]
            if not f.fixed:  # batch statistics depend on x
                d = a[r0:r1] - mx.vec(f.mean, r0, r1, dt)
                d *= mx.vec(k1, r0, r1, dt)
                out -= d
                out -= mx.vec(k0, r0, r1, dt)
            out *= mx.vec(scale, r0, r1, dt)
        if mx.compiled:
            vecs = [np.asarray(v).astype(dt) for v in (k1, k0, scale)]
            mx.each(lambda r0, r1: _bn_grad_write(g[r0:r1], a[r0:r1], mean_dt, *vecs, f.fixed))
        else:
            mx.each(write)
        return gx, ggamma.astype(gamma.dtype), gbeta.astype(gamma.dtype)

    def backward(self, indexes, grad_outputs):
        raise NotImplementedError(
            'fastconv: no second-order gradients through the fused batch normalisation + ReLU; '
            'run with --stockConv (or INTERMIX_STOCK_CONV=1) for double backpropagation')


def use_fast_bn_relu(bn, x):
    """True when :func:`bn_relu` would take the fused fast path for link ``bn`` and input x."""
    xa = chainer.as_array(x)
    if not enabled() or type(bn) is not L.BatchNormalization or type(xa) is not np.ndarray:
        return False
    if xa.dtype not in _FAST_DTYPES or xa.ndim != 4 or bn.axis is not None:
        return False
    if bn.avg_mean is None or bn.gamma is None or bn.beta is None:
        return False
    if type(bn.gamma.array) is not np.ndarray or bn.gamma.dtype != xa.dtype:
        return False
    if chainer.config.train and getattr(chainer.config, 'in_recomputing', False):
        return False
    return _channels_last(xa) or xa.flags.c_contiguous


def bn_relu(bn, x):
    """``F.relu(bn(x))`` for a ``chainer.links.BatchNormalization`` ``bn`` on x (N, C, H, W):
    :class:`FastBatchNormalizationReLU` when :func:`use_fast_bn_relu` (NumPy float32/float64,
    plain BatchNormalization link over axes (0, 2, 3), NCHW- or channels-last-contiguous x,
    :func:`enabled`); otherwise the link and ``F.relu`` (ChainerMN's multi-node BN, GPU arrays).
    Training mode uses batch statistics and updates the link's running averages (decay
    ``bn.decay``); test mode uses the running averages, as the link does."""
    if not use_fast_bn_relu(bn, x):
        return F.relu(bn(x))
    if chainer.config.train:
        node = FastBatchNormalizationReLU(bn.eps, bn.avg_mean, bn.avg_var, bn.decay)
    else:
        node = FastBatchNormalizationReLU(bn.eps, mean=bn.avg_mean, var=bn.avg_var)
    y, = node.apply((x, bn.gamma, bn.beta))
    return y
