"""GPU test mode: the CuPy path against the NumPy path (runs only where CuPy sees a GPU).

Skipped, with the reason, on machines without CuPy or without a GPU (CI, this project's CPU
machines). On a GPU machine: ``bash scripts/test.sh tests/test_gpu.py`` after installing CuPy (see
README, GPU).

- every ``intermix.py`` function on CuPy arrays equals the NumPy result within 1e-5;
- one training step of each learning method on the GPU matches the same step on the CPU (same
  initial weights, same batch, same random draws; dropout off, since NumPy and CuPy draw
  different masks) within a tolerance for float32 convolutions computed by different kernels.
"""
import copy

import numpy as np
import pytest

import compat  # noqa: F401
import chainer
import chainer.functions as F

import intermix
import learning
import models
import opts
import training


def _gpu_or_skip():
    try:
        import cupy
    except ImportError:
        pytest.skip('CuPy is not installed: the GPU tests run only on a GPU machine')
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError('no device')
    except Exception as e:  # no driver or no device
        pytest.skip(f'CuPy sees no GPU ({e}): the GPU tests run only on a GPU machine')
    return cupy


@pytest.fixture(scope='module')
def cupy():
    return _gpu_or_skip()


def close(gpu_value, cpu_value, tol=1e-5):
    got = chainer.backends.cuda.to_cpu(chainer.as_array(gpu_value))
    want = chainer.as_array(cpu_value)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_intermix_functions_on_cupy_equal_numpy(cupy):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 20000)).astype(np.float32)
    for fs in (16000, 44100):
        close(intermix.compute_gain(cupy.asarray(x), fs), intermix.compute_gain(x, fs))
    gi, gj, r = rng.uniform(-30, 0, 4), rng.uniform(-30, 0, 4), rng.uniform(0, 1, 4)
    close(intermix.mix_ratio(cupy.asarray(gi), cupy.asarray(gj), cupy.asarray(r)),
          intermix.mix_ratio(gi, gj, r))
    phi = rng.uniform(-np.pi / 2, np.pi / 2, 4)
    close(intermix.phase_shift(cupy.asarray(x), cupy.asarray(phi)), intermix.phase_shift(x, phi))
    h_i = rng.standard_normal((4, 3, 5, 7)).astype(np.float32)
    h_j = rng.standard_normal((4, 3, 5, 7)).astype(np.float32)
    w_i, w_j = rng.uniform(0, 1, 4), rng.uniform(0, 1, 4)
    close(intermix.linear_mix(cupy.asarray(h_i), cupy.asarray(h_j), cupy.asarray(w_i),
                              cupy.asarray(w_j)), intermix.linear_mix(h_i, h_j, w_i, w_j))
    close(intermix.interference_mix(cupy.asarray(h_i), cupy.asarray(h_j), cupy.asarray(w_i),
                                    cupy.asarray(w_j), cupy.asarray(phi)),
          intermix.interference_mix(h_i, h_j, w_i, w_j, phi))
    logits = rng.standard_normal((4, 10)).astype(np.float32)
    target = np.eye(10, dtype=np.float32)[[0, 3, 3, 9]] * 0.7 + 0.03
    close(intermix.kl_divergence(cupy.asarray(logits), cupy.asarray(target)),
          intermix.kl_divergence(logits, target))
    partner = np.array([2, 3, 0, 1], np.int32)
    mixer_cpu = intermix.Mixer(2, partner, r, gains=gi, phase=phi)
    mixer_gpu = intermix.Mixer(2, cupy.asarray(partner), cupy.asarray(r), gains=cupy.asarray(gi),
                               phase=cupy.asarray(phi))
    close(mixer_gpu(cupy.asarray(h_i)), mixer_cpu(h_i))


class _FixedBatch(chainer.dataset.Iterator):
    """An iterator stand-in that returns the same batch at every step."""

    def __init__(self, batch):
        self.batch = batch
        self.epoch = 0
        self.is_new_epoch = False
        self.epoch_detail = 0.0

    def next(self):
        return self.batch

    __next__ = next

    def serialize(self, serializer):
        pass


@pytest.mark.parametrize('learning', ['standard', 'bc', 'speechmix', 'intermix'])
def test_training_step_on_gpu_matches_cpu(cupy, monkeypatch, learning):
    monkeypatch.setattr(F, 'dropout', lambda x, ratio=0.5, **kwargs: x)
    opt = opts.parse(['--data', 'D', '--dataset', 'esc10', '--netType', 'envnet',
                      '--learning', learning, '--gpu', '-1'])
    rng = np.random.default_rng(1)
    length = models.archs['envnet'].input_length
    if learning == 'standard':
        batch = [(0.1 * rng.standard_normal(length).astype(np.float32), np.int32(i % 10))
                 for i in range(4)]
    else:
        batch = [(0.1 * rng.standard_normal(length).astype(np.float32),
                  0.1 * rng.standard_normal(length).astype(np.float32),
                  np.int32(i), np.int32(i + 5)) for i in range(2)]
    cpu_model = models.archs['envnet'](10)
    gpu_model = copy.deepcopy(cpu_model)
    results = {}
    for name, model, device in (('cpu', cpu_model, '@numpy'), ('gpu', gpu_model, '@cupy:0')):
        device = chainer.get_device(device)
        model.to_device(device)
        optimizer = chainer.optimizers.NesterovAG(lr=0.01, momentum=0.9)
        optimizer.setup(model)
        optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(5e-4))
        updater = training.MixingUpdater(_FixedBatch(batch), optimizer, learning.build(opt),
                                          device, seed=3)
        reporter = chainer.Reporter()
        reporter.add_observer('main', model)
        observation = {}
        with reporter.scope(observation), chainer.using_config('train', True):
            updater.update_core()
        results[name] = (float(observation['main/loss'].array),
                         {p: chainer.backends.cuda.to_cpu(v.array)
                          for p, v in model.namedparams()})
    assert results['gpu'][0] == pytest.approx(results['cpu'][0], rel=1e-4)
    for path, value in results['cpu'][1].items():
        np.testing.assert_allclose(results['gpu'][1][path], value, rtol=1e-3, atol=1e-5,
                                   err_msg=path)
