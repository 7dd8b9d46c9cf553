"""The fused update (optimizer.py) against Chainer's NesterovAG + WeightDecay hook: bit-identical
parameters and velocities after several steps, on every parameter shape of PiczakCNN and
EnvNet-v2 (docs/method.md §6), through both CPU loops (numba's compiled one and NumPy's)."""
import numpy as np
import pytest

import compat  # noqa: F401
import chainer

import models
import optimizer as fused
from conftest import kernel_params

@pytest.fixture(params=kernel_params(fused.numba))
def kernel(request, monkeypatch):
    """Run the test with ``optimizer.KERNEL`` set to each CPU loop."""
    monkeypatch.setattr(fused, 'KERNEL', request.param)
    return request.param


def _pair(shapes, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]

    def link():
        chain = chainer.Chain()
        with chain.init_scope():
            for k, a in enumerate(init):
                setattr(chain, f'p{k}', chainer.Parameter(a.copy()))
        return chain
    return link(), link()


def _run(shapes, steps=3, lr=0.01, momentum=0.9, rate=5e-4, seed=0, dtype=np.float32):
    stock_link, fused_link = _pair(shapes, seed, dtype)
    stock = chainer.optimizers.NesterovAG(lr=lr, momentum=momentum)
    stock.setup(stock_link)
    stock.add_hook(chainer.optimizer_hooks.WeightDecay(rate))
    mine = fused.FusedNesterovAG(lr=lr, momentum=momentum, weight_decay_rate=rate)
    mine.setup(fused_link)
    rng = np.random.default_rng(seed + 1)
    for step in range(steps):
        for a, b in zip(stock_link.params(), fused_link.params()):
            g = rng.standard_normal(a.shape).astype(dtype)
            a.grad, b.grad = g.copy(), g.copy()
        stock.update()
        mine.update()
    return stock_link, fused_link, stock, mine


@pytest.mark.parametrize('net', ['logmel_cnn', 'envnetv2'])
def test_bit_identical_to_chainer_on_every_parameter_shape(net, kernel):
    if net == 'envnetv2' and kernel == 'numpy' and fused.numba is not None:
        pytest.skip('the NumPy path is checked on PiczakCNN and the chunk edges (20 s saved)')
    model = models.archs[net](10)
    shapes = sorted({p.shape for p in model.params() if p.array is not None})
    assert any(np.prod(s) > fused.CHUNK for s in shapes)  # chunked and threaded paths both run
    a, b, stock, mine = _run(shapes)
    for (name, pa), (_, pb) in zip(sorted(a.namedparams()), sorted(b.namedparams())):
        assert np.array_equal(pa.array, pb.array), name
        assert np.array_equal(pa.update_rule.state['v'], pb.update_rule.state['v']), name
        assert pa.update_rule.t == pb.update_rule.t == 3
    assert stock.t == mine.t == 3


@pytest.mark.parametrize('dtype', [np.float32, np.float64, np.float16])
def test_chunk_edges_hyperparameters_and_dtypes(kernel, dtype):
    # sizes around the chunk length, another LR, momentum and rate; float64 runs the compiled
    # loop with float64 scalars, float16 the NumPy path whatever KERNEL says
    shapes = [(1,), (fused.CHUNK - 1,), (fused.CHUNK,), (fused.CHUNK + 1,), (3, fused.CHUNK + 7)]
    a, b, _, _ = _run(shapes, steps=4, lr=0.1, momentum=0.7, rate=1e-2, seed=3, dtype=dtype)
    for pa, pb in zip(a.params(), b.params()):
        assert pb.array.dtype == dtype
        assert np.array_equal(pa.array, pb.array)
        assert np.array_equal(pa.update_rule.state['v'], pb.update_rule.state['v'])


def test_update_by_hand(kernel):
    # one step from v = 0: g' = g + rate p; v = -lr g'; p = p + m^2 v - (1 + m) lr g'
    link = chainer.Chain()
    with link.init_scope():
        link.w = chainer.Parameter(np.array([1.0, -2.0], np.float32))
    opt = fused.FusedNesterovAG(lr=0.5, momentum=0.5, weight_decay_rate=0.25)
    opt.setup(link)
    link.w.grad = np.array([1.0, 1.0], np.float32)
    opt.update()
    g = np.array([1.25, 0.5])
    v = -0.5 * g
    assert np.allclose(link.w.update_rule.state['v'], v)
    assert np.allclose(link.w.array, np.array([1.0, -2.0]) + 0.25 * v - 0.75 * g)


def test_snapshot_of_stock_optimizer_loads(tmp_path):
    a, b, stock, mine = _run([(5, 7), (fused.CHUNK + 3,)], steps=2)
    path = str(tmp_path / 'opt.npz')
    chainer.serializers.save_npz(path, stock)
    fresh_link = _pair([(5, 7), (fused.CHUNK + 3,)], 0)[1]
    fresh = fused.FusedNesterovAG(lr=0.01, momentum=0.9, weight_decay_rate=5e-4)
    fresh.setup(fresh_link)
    chainer.serializers.load_npz(path, fresh)
    assert fresh.t == 2
    for pa, pb in zip(a.params(), fresh_link.params()):
        assert np.array_equal(pa.update_rule.state['v'], pb.update_rule.state['v'])
