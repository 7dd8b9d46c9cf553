"""fastconv: the NumPy CPU convolution against chainer.functions.convolution_2d (README, "Speed").

Every kernel/stride/pad shape of the models (EnvNet, EnvNet-v2, and the 1-D style nets being
added: SoundNet5, M18, SampleCNN, Logmel-CNN) at batch 2, with long inputs shortened (kernel,
stride, pad and channels kept): forward, gx, gW, gb within 1e-4 relative error (norm based);
``check_backward`` / ``check_double_backward`` in float64; the tiling paths (batch chunks, row
tiles, column tiles); the on/off switch and the dispatch helper.
"""
import numpy as np
import pytest

import compat  # noqa: F401
import chainer
import chainer.functions as F
import chainer.links as L
from chainer import gradient_check

import fastconv
from conftest import kernel_params

RTOL = 1e-4


@pytest.fixture(autouse=True)
def _fast_path_on(monkeypatch):
    """These tests are about the fast path: on even where the suite runs under
    INTERMIX_STOCK_CONV=1 (tests that need the variable set it themselves)."""
    monkeypatch.delenv(fastconv.STOCK_CONV_ENV, raising=False)

# name: (N, C, H, W, O, (kh, kw), stride, pad)
SHAPES = {
    # EnvNet (models/envnet.py)
    'envnet_conv1': (2, 1, 1, 400, 40, (1, 8), 1, 0),
    'envnet_conv2': (2, 40, 1, 300, 40, (1, 8), 1, 0),
    'envnet_conv3': (2, 1, 40, 150, 50, (8, 13), 1, 0),
    'envnet_conv4': (2, 50, 11, 46, 50, (1, 5), 1, 0),
    # EnvNet-v2 (models/envnetv2.py)
    'envnetv2_conv1': (2, 1, 1, 700, 32, (1, 64), (1, 2), 0),
    'envnetv2_conv2': (2, 32, 1, 400, 64, (1, 16), (1, 2), 0),
    'envnetv2_conv3': (2, 1, 64, 260, 32, (8, 8), 1, 0),
    'envnetv2_conv4': (2, 32, 20, 60, 32, (8, 8), 1, 0),
    'envnetv2_conv5': (2, 32, 10, 82, 64, (1, 4), 1, 0),
    'envnetv2_conv6': (2, 64, 10, 79, 64, (1, 4), 1, 0),
    'envnetv2_conv7': (2, 64, 10, 38, 128, (1, 2), 1, 0),
    'envnetv2_conv8': (2, 128, 10, 37, 128, (1, 2), 1, 0),
    'envnetv2_conv9': (2, 128, 10, 18, 256, (1, 2), 1, 0),
    'envnetv2_conv10': (2, 256, 10, 17, 256, (1, 2), 1, 0),
    # SoundNet5
    'soundnet_k64s2p32': (2, 1, 1, 500, 16, (1, 64), (1, 2), (0, 32)),
    'soundnet_k32s2p16': (2, 16, 1, 300, 32, (1, 32), (1, 2), (0, 16)),
    'soundnet_k16s2p8': (2, 32, 1, 200, 64, (1, 16), (1, 2), (0, 8)),
    'soundnet_k8s2p4': (2, 64, 1, 100, 128, (1, 8), (1, 2), (0, 4)),
    # M18
    'm18_k80s4': (2, 1, 1, 800, 48, (1, 80), (1, 4), 0),
    'm18_k3p1': (2, 48, 1, 120, 48, (1, 3), 1, (0, 1)),
    # SampleCNN
    'samplecnn_k3s3': (2, 1, 1, 243, 128, (1, 3), (1, 3), 0),
    'samplecnn_k3p1': (2, 128, 1, 81, 128, (1, 3), 1, (0, 1)),
    # Logmel-CNN
    'logmel_k57x6': (2, 2, 60, 41, 80, (57, 6), 1, 0),
    'logmel_k1x3': (2, 80, 1, 12, 80, (1, 3), 1, 0),
}


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _data(spec, dtype=np.float32, seed=0, bias=True):
    n, c, h, w, o, (kh, kw), _, _ = spec
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = (rng.standard_normal((o, c, kh, kw)) * np.sqrt(2.0 / (c * kh * kw))).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if bias else None
    return x, W, b


def _run(conv, x, W, b, stride, pad, gy=None, seed=1):
    xv, wv = chainer.Variable(x.copy()), chainer.Variable(W.copy())
    bv = None if b is None else chainer.Variable(b.copy())
    y = conv(xv, wv, bv, stride, pad)
    if gy is None:
        gy = np.random.default_rng(seed).standard_normal(y.shape).astype(x.dtype)
    y.grad = gy.copy()
    y.backward()
    return y.array, xv.grad, wv.grad, (None if bv is None else bv.grad), gy


def _compare(spec, dtype=np.float32, bias=True, rtol=RTOL):
    stride, pad = spec[6], spec[7]
    x, W, b = _data(spec, dtype, bias=bias)
    ys, gxs, gws, gbs, gy = _run(F.convolution_2d, x, W, b, stride, pad)
    yf, gxf, gwf, gbf, _ = _run(fastconv.fast_convolution_2d, x, W, b, stride, pad, gy=gy)
    assert yf.shape == ys.shape and yf.dtype == ys.dtype
    assert gxf.shape == x.shape and gxf.dtype == x.dtype
    assert gwf.shape == W.shape and gwf.dtype == W.dtype
    for name, got, ref in (('y', yf, ys), ('gx', gxf, gxs), ('gW', gwf, gws), ('gb', gbf, gbs)):
        if ref is None:
            assert got is None
            continue
        assert _rel(got, ref) < rtol, (name, _rel(got, ref))


@pytest.mark.parametrize('name', sorted(SHAPES))
def test_matches_stock_float32(name):
    _compare(SHAPES[name])


@pytest.mark.parametrize('name', ['envnetv2_conv2', 'envnetv2_conv4', 'soundnet_k32s2p16',
                                  'logmel_k57x6'])
def test_matches_stock_float64_no_bias(name):
    _compare(SHAPES[name], np.float64, bias=False, rtol=1e-10)


def test_envnetv2_conv4_full_size_forward():
    """EnvNet-v2 conv4 at its real size (32x57x253 -> 32x50x246), forward only."""
    spec = (2, 32, 57, 253, 32, (8, 8), 1, 0)
    x, W, _ = _data(spec)
    with chainer.no_backprop_mode():
        ys = F.convolution_2d(x, W).array
        yf = fastconv.fast_convolution_2d(x, W).array
    assert yf.shape == (2, 32, 50, 246)
    assert _rel(yf, ys) < RTOL


@pytest.mark.parametrize('threads', [1, 2, 3])
@pytest.mark.parametrize('budget', [1, 200, 3000, 10 ** 9])
def test_tiling_and_threads(monkeypatch, budget, threads):
    """Tiny column budgets force per-column, per-row and batch tiles, with 1-3 worker threads
    (one job per tile when there are fewer clips than workers); results must not change."""
    monkeypatch.setattr(fastconv, 'COL_BUFFER_BYTES', budget)
    monkeypatch.setattr(fastconv, 'NUM_THREADS', threads)
    for spec in [(3, 3, 6, 13, 4, (2, 3), (2, 3), (1, 2)), (3, 4, 7, 9, 2, (3, 2), 1, 1),
                 (1, 3, 6, 13, 4, (2, 3), (2, 3), (1, 2)), (1, 1, 5, 9, 3, (2, 2), 1, 1),
                 (2, 1, 1, 40, 5, (1, 8), (1, 2), (0, 4))]:
        _compare(spec, np.float64, rtol=1e-10)


def test_blas_threads_restored():
    """The kernels set NumPy's OpenBLAS to one thread while their workers run, then restore it."""
    if fastconv._threads() <= 1:
        pytest.skip('single worker: BLAS thread count is never changed')
    get = fastconv._blas[0]
    before = get()
    x, W, b = _data((4, 8, 6, 30, 8, (2, 3), 1, 0))
    _run(fastconv.fast_convolution_2d, x, W, b, 1, 0)
    assert get() == before


def test_deconv_methods_agree():
    rng = np.random.default_rng(3)
    for (n, o, c, kh, kw, s, p, h, w) in [(2, 5, 3, 3, 2, (2, 3), (1, 0), 9, 17),
                                          (2, 4, 2, 2, 2, (1, 1), (1, 1), 4, 4),
                                          (1, 3, 2, 2, 5, (3, 1), (0, 2), 9, 7),
                                          (2, 3, 2, 2, 2, (3, 3), (0, 0), 8, 8)]:  # stride > k
        ho, wo = (h + 2 * p[0] - kh) // s[0] + 1, (w + 2 * p[1] - kw) // s[1] + 1
        gy = rng.standard_normal((n, o, ho, wo))
        W = rng.standard_normal((o, c, kh, kw))
        a = fastconv._deconv(gy, W, s, p, (h, w), 'phases')
        b = fastconv._deconv(gy, W, s, p, (h, w), 'scatter')
        ref = F.deconvolution_2d(gy, W, stride=s, pad=p, outsize=(h, w)).array
        assert _rel(a, ref) < 1e-12 and _rel(b, ref) < 1e-12


CHECK_CASES = [
    # (N, C, H, W, O, (kh, kw), stride, pad), bias
    ((2, 2, 4, 7, 3, (2, 3), 1, 0), True),
    ((2, 2, 4, 7, 3, (2, 3), 1, 0), False),
    ((2, 3, 5, 9, 2, (3, 3), (2, 2), (1, 1)), True),
    ((1, 2, 3, 11, 3, (1, 4), (1, 3), (0, 2)), False),
    ((2, 1, 5, 6, 4, (3, 2), 1, (2, 1)), True),   # C=1: scatter-add input gradient
    ((2, 4, 1, 10, 2, (1, 3), (1, 2), 0), True),
]


@pytest.mark.parametrize('spec,bias', CHECK_CASES)
def test_check_backward_float64(spec, bias):
    x, W, b = _data(spec, np.float64, seed=5, bias=bias)
    stride, pad = spec[6], spec[7]
    args = (x, W) if b is None else (x, W, b)

    def f(*inputs):
        return fastconv.fast_convolution_2d(*inputs, stride=stride, pad=pad)

    y = f(*args)
    gy = np.random.default_rng(6).standard_normal(y.shape)
    gradient_check.check_backward(f, args, gy, dtype=np.float64, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize('spec,bias', CHECK_CASES[2:4])
def test_check_double_backward_float64(spec, bias):
    x, W, b = _data(spec, np.float64, seed=7, bias=bias)
    stride, pad = spec[6], spec[7]
    args = (x, W) if b is None else (x, W, b)

    def f(*inputs):
        return fastconv.fast_convolution_2d(*inputs, stride=stride, pad=pad)

    rng = np.random.default_rng(8)
    gy = rng.standard_normal(f(*args).shape)
    ggs = tuple(rng.standard_normal(a.shape) for a in args)
    gradient_check.check_double_backward(f, args, gy, ggs, dtype=np.float64,
                                         atol=1e-6, rtol=1e-5)


def test_non_contiguous_and_mixed_dtype():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 9, 5, 4)).astype(np.float32).transpose(0, 3, 2, 1)[:, :, ::2]
    W = rng.standard_normal((4, 3, 2, 6)).astype(np.float32)[..., ::2].transpose(1, 0, 2, 3)
    assert not x.flags.c_contiguous and not W.flags.c_contiguous
    ys, gxs, gws, _, gy = _run(F.convolution_2d, x, W, None, (1, 2), (1, 0))
    yf, gxf, gwf, _, _ = _run(fastconv.fast_convolution_2d, x, W, None, (1, 2), (1, 0), gy=gy)
    for got, ref in ((yf, ys), (gxf, gxs), (gwf, gws)):
        assert _rel(got, ref) < RTOL
    # float32 input, float64 weights: output and gx in float32, gW in float64, as stock
    W64 = W.astype(np.float64)
    ys, gxs, gws, _, gy = _run(F.convolution_2d, x, W64, None, 1, 0)
    yf, gxf, gwf, _, _ = _run(fastconv.fast_convolution_2d, x, W64, None, 1, 0, gy=gy)
    assert yf.dtype == np.float32 and gxf.dtype == np.float32 and gwf.dtype == np.float64
    for got, ref in ((yf, ys), (gxf, gxs), (gwf, gws)):
        assert _rel(got, ref) < RTOL


def test_output_size_and_type_errors():
    x = np.zeros((1, 2, 3, 3), np.float32)
    with pytest.raises(RuntimeError):
        fastconv.fast_convolution_2d(x, np.zeros((1, 2, 4, 1), np.float32))
    with pytest.raises(Exception):  # channel mismatch: chainer type check
        fastconv.fast_convolution_2d(x, np.zeros((1, 3, 1, 1), np.float32))
    with pytest.raises(ValueError):
        fastconv.FastConvolution2D(stride=0)
    with pytest.raises(ValueError):
        fastconv.FastConvolution2D(pad=-1)


class _FakeGPUArray:
    """Stands in for a cupy.ndarray (no CuPy here): anything that is not a numpy.ndarray."""
    shape, ndim, dtype = (1, 1, 4, 4), 4, np.dtype(np.float32)


def test_gpu_arrays_are_rejected_and_dispatched_to_stock(monkeypatch):
    fake = _FakeGPUArray()
    with pytest.raises(TypeError, match='NumPy-only'):
        fastconv.FastConvolution2D().forward((fake, fake))
    with pytest.raises(TypeError, match='NumPy-only'):
        fastconv.FastDeconvolution2D(1, 0, (4, 4)).forward((fake, fake))
    with pytest.raises(TypeError, match='NumPy-only'):
        fastconv.FastConvolution2DGradW(1, 0, (1, 1, 1, 1), np.float32).forward((fake, fake))
    assert not fastconv.use_fast(fake, np.zeros((1, 1, 1, 1), np.float32))
    calls = []
    monkeypatch.setattr(fastconv.F, 'convolution_2d', lambda *a, **k: calls.append(a) or 'stock')
    assert fastconv.convolution_2d(fake, fake, None, 1, 0) == 'stock'
    assert len(calls) == 1


def _creator(y):
    return type(y.creator).__name__


def test_switch_env_and_set_enabled(monkeypatch):
    monkeypatch.delenv(fastconv.STOCK_CONV_ENV, raising=False)
    x, W, b = _data((1, 2, 3, 8, 3, (1, 3), 1, 0))
    assert fastconv.enabled()
    assert _creator(fastconv.convolution_2d(x, W, b)) == 'FastConvolution2D'
    assert _creator(fastconv.convolution_2d(chainer.Variable(x), chainer.Parameter(W))) \
        == 'FastConvolution2D'
    # environment variable, read at every call
    monkeypatch.setenv(fastconv.STOCK_CONV_ENV, '1')
    assert not fastconv.enabled()
    assert _creator(fastconv.convolution_2d(x, W, b)) == 'Convolution2DFunction'
    monkeypatch.setenv(fastconv.STOCK_CONV_ENV, '0')
    assert fastconv.enabled()
    monkeypatch.delenv(fastconv.STOCK_CONV_ENV)
    # set_enabled
    prev = fastconv.set_enabled(False)
    try:
        assert prev is True and not fastconv.enabled()
        assert _creator(fastconv.convolution_2d(x, W, b)) == 'Convolution2DFunction'
    finally:
        fastconv.set_enabled(prev)
    assert fastconv.enabled()
    # float16 and mixed dtypes go to the stock path
    assert _creator(fastconv.convolution_2d(x.astype(np.float16), W.astype(np.float16))) \
        == 'Convolution2DFunction'
    assert _creator(fastconv.convolution_2d(x, W.astype(np.float64))) == 'Convolution2DFunction'
    # options the fast path lacks go to the stock path, with the options
    for kwargs in ({'dilate': 2}, {'cover_all': True}):
        y = fastconv.convolution_2d(x, W, b, **kwargs)
        assert _creator(y) == 'Convolution2DFunction'
        assert _rel(y.array, F.convolution_2d(x, W, b, **kwargs).array) < 1e-7
    assert fastconv.use_fast(x, W, b, dilate=(1, 1))


def test_envnet_with_fast_links_matches_stock(monkeypatch):
    """The whole EnvNet (2 clips, train mode) on the fast path (its ConvBNReLUs call fastconv's
    convolution, pooling and BN + ReLU) and on the stock path (INTERMIX_STOCK_CONV=1): logits and
    conv-weight gradients agree."""
    from models.envnet import EnvNet

    np.random.seed(0)
    model = EnvNet(10)
    x = (np.random.default_rng(1).uniform(-1, 1, (2, 1, 1, EnvNet.input_length)) * 0.3)
    x = x.astype(np.float32)
    t = np.array([1, 7], np.int32)
    results = []
    for fast in (False, True):
        if fast:
            monkeypatch.delenv(fastconv.STOCK_CONV_ENV)
        else:
            monkeypatch.setenv(fastconv.STOCK_CONV_ENV, '1')
        model.cleargrads()
        with chainer.using_config('train', True):
            np.random.seed(2)  # same dropout masks
            logits = model(x)
            F.softmax_cross_entropy(logits, t).backward()
        results.append((logits.array, {name: p.grad.copy() for name, p in model.namedparams()
                                       if name.endswith('/conv/W')}))
    (ls, gs), (lf, gf) = results
    assert _rel(lf, ls) < RTOL
    assert set(gs) == set(gf) and len(gs) == 4
    for name in gs:
        assert _rel(gf[name], gs[name]) < 1e-3, name


# --------------------------------------------------------------------------------------------
# Max pooling with stride = kernel
# --------------------------------------------------------------------------------------------

# name: (N, C, H, W, ksize, cover_all): every stride = kernel pooling of the models, long inputs
# shortened so that some windows are partial (cover_all) or dropped (cover_all=False).
POOLS = {
    'envnet_pool2_1x160': ((2, 3, 1, 500), (1, 160), True),
    'envnet_pool3_3x3': ((2, 4, 11, 20), (3, 3), True),
    'envnet_pool4_1x3': ((2, 5, 3, 14), (1, 3), True),
    'envnetv2_pool2_1x64': ((2, 3, 1, 260), (1, 64), True),
    'envnetv2_pool4_5x3': ((2, 4, 12, 17), (5, 3), True),
    'envnetv2_pool_1x2': ((2, 6, 10, 79), (1, 2), True),
    'max_pool_1d_4': ((2, 3, 1, 125), (1, 4), False),
    'max_pool_1d_8': ((2, 3, 1, 70), (1, 8), False),
    'max_pool_1d_3': ((2, 3, 1, 81), (1, 3), False),
    'partial_rows_cols': ((2, 2, 7, 9), (2, 4), True),
    'dropped_rows_cols': ((2, 2, 7, 9), (2, 4), False),
}


def _layout(x, channels_last):
    """x with the same values, stored channels-last (the NCHW view of an NHWC buffer) or not."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if channels_last \
        else np.ascontiguousarray(x)


@pytest.fixture(params=kernel_params(fastconv.numba))
def pool_kernel(request, monkeypatch):
    """Run the test with ``fastconv.POOL_KERNEL`` set to each max pooling kernel."""
    monkeypatch.setattr(fastconv, 'POOL_KERNEL', request.param)
    return request.param


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('name', sorted(POOLS))
def test_max_pooling_equals_chainer_exactly_ties_included(name, channels_last, pool_kernel):
    shape, ksize, cover_all = POOLS[name]
    rng = np.random.default_rng(5)
    # values on a coarse grid: many windows hold their maximum twice (first one wins in both)
    x = _layout((np.round(rng.standard_normal(shape) * 2) / 2).astype(np.float32), channels_last)
    xf, xs = chainer.Variable(x.copy(order='K')), chainer.Variable(x.copy(order='K'))
    yf = fastconv.max_pooling_2d(xf, ksize, cover_all=cover_all)
    ys = F.max_pooling_2d(xs, ksize, cover_all=cover_all)
    assert _creator(yf) == 'FastMaxPooling2D'
    assert yf.shape == ys.shape
    np.testing.assert_array_equal(yf.array, ys.array)
    gy = rng.standard_normal(ys.shape).astype(np.float32)
    yf.grad, ys.grad = gy, gy.copy()
    yf.backward()
    ys.backward()
    np.testing.assert_array_equal(xf.grad, xs.grad)
    # gradient mass is conserved: every output's gradient lands on exactly one input
    np.testing.assert_allclose(xf.grad.sum(dtype=np.float64), gy.sum(dtype=np.float64), rtol=1e-6,
                               atol=1e-5)


@pytest.mark.parametrize('name', ['envnetv2_pool4_5x3', 'partial_rows_cols', 'max_pool_1d_4'])
def test_max_pooling_check_backward_and_double_backward_float64(name, pool_kernel):
    shape, ksize, cover_all = POOLS[name]
    rng = np.random.default_rng(6)
    # distinct values, well apart (no window maximum moves under the finite-difference step)
    x = (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1).astype(np.float64)
    for layout in (False, True):
        xl = _layout(x, layout)

        def pool(v):
            return fastconv.max_pooling_2d(v, ksize, cover_all=cover_all)
        out_shape = pool(xl).shape
        gy = rng.standard_normal(out_shape)
        ggx = rng.standard_normal(shape)
        gradient_check.check_backward(pool, xl, gy, dtype=np.float64, eps=1e-3)
        gradient_check.check_double_backward(pool, xl, gy, ggx, dtype=np.float64, eps=1e-3)


def _pool_bits(kernel, x, ksize, cover_all, gy):
    """(y, gx) of the fast pooling with ``fastconv.POOL_KERNEL = kernel``, as (bytes, strides)
    pairs: equal bytes mean equal bits (-0.0 and NaN payloads included) and equal layouts."""
    previous, fastconv.POOL_KERNEL = fastconv.POOL_KERNEL, kernel
    try:
        xv = chainer.Variable(x.copy(order='K'))
        y = fastconv.max_pooling_2d(xv, ksize, cover_all=cover_all)
        assert _creator(y) == 'FastMaxPooling2D'
        y.grad = gy.copy()
        y.backward()
    finally:
        fastconv.POOL_KERNEL = previous
    return [(np.ascontiguousarray(a).tobytes(), a.strides) for a in (y.array, xv.grad)]


@pytest.mark.skipif(fastconv.numba is None, reason='numba is not installed')
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('name', sorted(POOLS))
@pytest.mark.filterwarnings('ignore:invalid value encountered in multiply:RuntimeWarning')
def test_max_pooling_numba_and_numpy_kernels_agree_bit_for_bit(name, channels_last, dtype):
    """The compiled loops give the NumPy kernel's values bit for bit, in the same layout: ties
    (first maximum wins), NaN (the first NaN wins, as NumPy's argmax), +-inf, and in the gradient
    ``0 * gy`` off the maximum (-0.0 for negative gy, NaN for NaN or infinite gy)."""
    shape, ksize, cover_all = POOLS[name]
    rng = np.random.default_rng(8)
    x = (np.round(rng.standard_normal(shape) * 2) / 2).astype(dtype)
    u = rng.random(x.size).reshape(shape)
    x[u < 0.05] = np.nan
    x[(u >= 0.05) & (u < 0.08)] = np.inf
    x[(u >= 0.08) & (u < 0.11)] = -np.inf
    x = _layout(x, channels_last)
    assert fastconv._channels_last(x) == channels_last  # each compiled loop is reached
    out_shape = fastconv.max_pooling_2d(x, ksize, cover_all=cover_all).shape
    gy = rng.standard_normal(out_shape).astype(dtype)
    gy.reshape(-1)[:2] = [np.nan, np.inf]
    assert _pool_bits('numba', x, ksize, cover_all, gy) == \
        _pool_bits('numpy', x, ksize, cover_all, gy)


def test_max_pooling_falls_back_to_chainer_where_the_fast_path_does_not_apply(monkeypatch):
    x = np.random.default_rng(7).standard_normal((2, 3, 8, 12)).astype(np.float32)
    cases = [dict(ksize=(4, 3), stride=(1, 3), cover_all=False),  # Logmel-CNN: overlapping rows
             dict(ksize=2, stride=2, pad=1),
             dict(ksize=(1, 20))]                                 # kernel wider than the input
    for kw in cases:
        y = fastconv.max_pooling_2d(x, **kw)
        assert _creator(y) == 'MaxPoolingND'
        np.testing.assert_array_equal(y.array, F.max_pooling_2d(x, **kw).array)
    assert _creator(fastconv.max_pooling_2d(x.astype(np.float16), 2)) == 'MaxPoolingND'
    assert _creator(fastconv.max_pooling_2d(x, 2, stride=2)) == 'FastMaxPooling2D'
    monkeypatch.setenv(fastconv.STOCK_CONV_ENV, '1')
    assert _creator(fastconv.max_pooling_2d(x, 2)) == 'MaxPoolingND'
    with pytest.raises(TypeError, match='NumPy-only'):
        fastconv.FastMaxPooling2D(2).forward((_FakeGPUArray(),))


# --------------------------------------------------------------------------------------------
# Batch normalisation + ReLU
# --------------------------------------------------------------------------------------------

# (N, C, H, W): the maps after the models' ConvBNReLUs, shortened
BN_SHAPES = [(4, 32, 1, 300), (3, 32, 7, 25), (2, 64, 10, 9), (5, 1, 1, 40), (2, 3, 1, 1)]


def _bn_pair(c, rng, dtype=np.float32):
    import copy
    bn = L.BatchNormalization(c, dtype=dtype)
    bn.gamma.array[:] = rng.uniform(0.5, 2.0, c)
    bn.gamma.array[0] = 0.0  # a dead channel: no division by gamma anywhere
    bn.beta.array[:] = rng.uniform(-1.0, 1.0, c)
    bn.avg_mean[:] = rng.uniform(-1.0, 1.0, c)
    bn.avg_var[:] = rng.uniform(0.5, 2.0, c)
    other = copy.deepcopy(bn)
    bn.cleargrads()
    other.cleargrads()
    return bn, other


@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('shape', BN_SHAPES)
def test_bn_relu_matches_the_link_and_relu(shape, channels_last, train, monkeypatch):
    monkeypatch.setattr(fastconv, 'BN_BLOCK_BYTES', 4096)  # several blocks even here
    rng = np.random.default_rng(8)
    x = _layout((rng.standard_normal(shape) * 3 + 2).astype(np.float32), channels_last)
    fast_bn, stock_bn = _bn_pair(shape[1], rng)
    gy = rng.standard_normal(shape).astype(np.float32)
    with chainer.using_config('train', train):
        xf, xs = chainer.Variable(x.copy(order='K')), chainer.Variable(x.copy(order='K'))
        yf = fastconv.bn_relu(fast_bn, xf)
        ys = F.relu(stock_bn(xs))
    assert _creator(yf) == 'FastBatchNormalizationReLU'
    assert yf.shape == ys.shape
    yf.grad, ys.grad = gy, gy.copy()
    yf.backward()
    ys.backward()
    tol = dict(rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(yf.array, ys.array, **tol)
    np.testing.assert_allclose(xf.grad, xs.grad, **tol)
    np.testing.assert_allclose(fast_bn.gamma.grad, stock_bn.gamma.grad, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fast_bn.beta.grad, stock_bn.beta.grad, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fast_bn.avg_mean, stock_bn.avg_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fast_bn.avg_var, stock_bn.avg_var, rtol=1e-5, atol=1e-6)
    assert np.all(xf.grad[:, 0] == 0)  # gamma = 0: nothing flows back through channel 0


def _bn_bits(kernel, x, gy, train, dtype):
    """Bytes of y, gx, ggamma, gbeta and the running averages after one fused BN + ReLU
    forward and backward with ``fastconv.BN_KERNEL = kernel`` (the same link values each time)."""
    previous, fastconv.BN_KERNEL = fastconv.BN_KERNEL, kernel
    try:
        bn, _ = _bn_pair(x.shape[1], np.random.default_rng(3), dtype)
        with chainer.using_config('train', train):
            xv = chainer.Variable(x.copy(order='K'))
            y = fastconv.bn_relu(bn, xv)
        assert _creator(y) == 'FastBatchNormalizationReLU'
        y.grad = gy.copy()
        y.backward()
    finally:
        fastconv.BN_KERNEL = previous
    arrays = (y.array, xv.grad, bn.gamma.grad, bn.beta.grad, bn.avg_mean, bn.avg_var)
    return [(np.ascontiguousarray(a).tobytes(), a.strides) for a in arrays]


@pytest.mark.skipif(fastconv.numba is None, reason='numba is not installed')
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('shape', BN_SHAPES)
def test_bn_relu_numba_and_numpy_kernels_agree_bit_for_bit(shape, train, dtype, monkeypatch):
    """Channels-last maps (the fast convolution's outputs): the compiled loops give the NumPy
    blocks' values bit for bit -- y, gx, ggamma, gbeta, running averages -- over several blocks,
    with exact zeros at the ReLU and, with fixed statistics, NaN in x (kept by the ReLU) and in gy
    (kept where the ReLU passes it, 0 * NaN = NaN where it does not, as NumPy's product)."""
    monkeypatch.setattr(fastconv, 'BN_BLOCK_BYTES', 4096)
    rng = np.random.default_rng(9)
    x = np.round(rng.standard_normal(shape) * 4 + 1) / 4  # ties with the mean: exact zeros
    x = _layout(x.astype(dtype), True)
    assert fastconv._channels_last(x) or shape[1] == 1 or shape[2] * shape[3] == 1
    gy = rng.standard_normal(shape).astype(dtype)
    if not train:  # (in training a NaN reaches every value through the batch statistics)
        gy.reshape(-1)[::17] = np.nan
        x[0, :, 0, 0] = np.nan  # y = NaN there (np.maximum keeps it)
    assert _bn_bits('numba', x, gy, train, dtype) == _bn_bits('numpy', x, gy, train, dtype)


def test_bn_relu_statistics_by_definition():
    """Training mode: per channel, y = max(gamma (x - mean) / sqrt(var + eps) + beta, 0) with the
    batch mean and biased variance over N, H, W; running averages 0.9 old + 0.1 new, the new
    variance unbiased (m / (m - 1))."""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((3, 2, 2, 5)) + np.array([5.0, -3.0])[None, :, None, None])
    bn = L.BatchNormalization(2, dtype=np.float64)
    bn.gamma.array[:] = [2.0, 0.5]
    bn.beta.array[:] = [0.1, -0.2]
    y = fastconv.bn_relu(bn, x).array
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    expect = (x - mean[None, :, None, None]) / np.sqrt(var + bn.eps)[None, :, None, None]
    expect = np.maximum(expect * bn.gamma.array[None, :, None, None] +
                        bn.beta.array[None, :, None, None], 0)
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.avg_mean, 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.avg_var, 0.9 + 0.1 * var * 30 / 29, rtol=1e-12)


@pytest.mark.parametrize('train', [True, False])
def test_bn_relu_check_backward_float64(train):
    rng = np.random.default_rng(10)
    shape = (3, 4, 2, 6)
    for channels_last in (False, True):
        x = _layout(rng.standard_normal(shape), channels_last)
        gamma = rng.uniform(0.5, 2.0, 4)
        beta = rng.uniform(0.5, 1.5, 4)  # most outputs away from the ReLU kink
        gy = rng.standard_normal(shape)
        mean, var = rng.uniform(-0.2, 0.2, 4), rng.uniform(0.5, 2.0, 4)

        def f(x, gamma, beta):
            if train:
                node = fastconv.FastBatchNormalizationReLU(2e-5)
            else:
                node = fastconv.FastBatchNormalizationReLU(2e-5, mean=mean, var=var)
            return node.apply((x, gamma, beta))[0]
        gradient_check.check_backward(f, (x, gamma, beta), gy, dtype=np.float64, eps=1e-6,
                                      atol=1e-5, rtol=1e-4)


def test_bn_relu_falls_back_to_the_link_where_the_fast_path_does_not_apply(monkeypatch):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 4, 8)).astype(np.float32)
    bn, _ = _bn_pair(3, rng)
    assert _creator(fastconv.bn_relu(bn, x)) == 'FastBatchNormalizationReLU'
    assert _creator(fastconv.bn_relu(bn, x[:, :, :, ::2])) == 'ReLU'  # neither layout

    class OtherBN(L.BatchNormalization):  # e.g. ChainerMN's multi-node BN: its own statistics
        pass
    other = OtherBN(3)
    assert _creator(fastconv.bn_relu(other, x)) == 'ReLU'
    assert _creator(fastconv.bn_relu(bn, x.astype(np.float64))) == 'ReLU'  # dtype != link's
    monkeypatch.setenv(fastconv.STOCK_CONV_ENV, '1')
    assert _creator(fastconv.bn_relu(bn, x)) == 'ReLU'


def test_bn_relu_refuses_double_backward_with_a_hint():
    rng = np.random.default_rng(12)
    bn, _ = _bn_pair(3, rng)
    x = chainer.Variable(rng.standard_normal((2, 3, 1, 8)).astype(np.float32))
    y = fastconv.bn_relu(bn, x)
    gx, = chainer.grad([F.sum(y * y)], [x], enable_double_backprop=True)
    with pytest.raises(NotImplementedError, match='--stockConv'):
        F.sum(gx).backward()


# --------------------------------------------------------------------------------------------
# Frames of a waveform times a filter bank (Logmel-CNN's DFT front end)


@pytest.mark.parametrize('t, k, s, o', [(21504, 1024, 512, 1026), (100, 8, 4, 5), (37, 6, 3, 2),
                                        (40, 5, 5, 3)])
def test_framed_convolution_equals_chainers_convolution(t, k, s, o):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 1, t)).astype(np.float32)
    W = rng.standard_normal((o, 1, 1, k)).astype(np.float32)
    assert fastconv.use_framed(x, W, (1, s))
    y = fastconv.framed_convolution_2d(x, W, (1, s))
    assert isinstance(y.creator, fastconv.FramedConvolution2D)
    expected = F.convolution_2d(x, W, stride=(1, s)).array
    assert y.shape == expected.shape == (3, o, 1, (t - k) // s + 1)
    np.testing.assert_allclose(y.array, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_framed_convolution_gradients_match_chainers():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1, 1, 50))
    W = rng.standard_normal((4, 1, 1, 8))
    gy = rng.standard_normal((2, 4, 1, 11))
    grads = []
    for conv in (lambda a, b: fastconv.framed_convolution_2d(a, b, (1, 4)),
                 lambda a, b: F.convolution_2d(a, b, stride=(1, 4))):
        xv, wv = chainer.Variable(x.copy()), chainer.Variable(W.copy())
        y = conv(xv, wv)
        y.grad = gy
        y.backward()
        grads.append((y.array, xv.grad, wv.grad))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_framed_convolution_applies_only_to_frames_of_one_waveform():
    x = np.zeros((2, 1, 1, 64), np.float32)
    assert not fastconv.use_framed(x, np.zeros((3, 1, 1, 16), np.float32), (1, 4))  # K > 2 s
    assert not fastconv.use_framed(x, np.zeros((3, 1, 2, 8), np.float32), (1, 4))   # 2 rows
    assert not fastconv.use_framed(np.zeros((2, 2, 1, 64), np.float32),
                                   np.zeros((3, 2, 1, 8), np.float32), (1, 4))      # 2 channels
    assert not fastconv.use_framed(x, np.zeros((3, 1, 1, 8), np.float64), (1, 4))   # dtypes
    assert not fastconv.use_framed(x, np.zeros((3, 1, 1, 8), np.float32), (2, 4))   # row stride
    previous = fastconv.set_enabled(False)
    try:
        assert not fastconv.use_framed(x, np.zeros((3, 1, 1, 8), np.float32), (1, 4))
    finally:
        fastconv.set_enabled(previous)
    with pytest.raises(ValueError):
        fastconv.FramedConvolution2D((2, 4))


@pytest.mark.skipif(fastconv.numba is None, reason='numba is not installed')
def test_njit_cached_compiles_without_a_cache_folder(monkeypatch):
    """Where numba finds no writable cache folder (it raises at decoration), the loop is still
    compiled, per process."""
    real = fastconv.numba.njit

    def njit(*args, **options):
        if options.get('cache'):
            raise RuntimeError('cannot cache function: no locator available for file')
        return real(*args, **options)
    monkeypatch.setattr(fastconv.numba, 'njit', njit)

    def twice(a):
        for i in range(a.shape[0]):
            a[i] *= 2

    a = np.arange(4.0)
    fastconv.njit_cached(twice)(a)
    np.testing.assert_array_equal(a, [0, 2, 4, 6])
