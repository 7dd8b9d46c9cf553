"""Networks as stages between mixing points, and the Mixer acting at a point."""
import numpy as np
import pytest

import compat  # noqa: F401
import chainer

import intermix
import models


@pytest.mark.parametrize('name, shapes', [
    ('envnet', {0: (1, 1, 24014), 1: (1, 40, 150), 2: (50, 11, 46), 3: (50, 11, 14)}),
    ('envnetv2', {0: (1, 1, 66650), 1: (1, 64, 260), 2: (32, 10, 82), 3: (64, 10, 38),
                  4: (128, 10, 18)}),
])
def test_feature_map_at_every_mixing_point_matches_the_docstring_table(name, shapes):
    cls = models.archs[name]
    assert set(cls.mix_points) == set(shapes)
    net = cls(10)
    x = np.zeros((2, 1, 1, cls.input_length), np.float32)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for point, shape in shapes.items():
            assert net.features(x, point).shape == (2,) + shape
        assert net(x).shape == (2, 10)


def test_parameter_counts_by_hand():
    net = models.archs['envnet'](10)
    conv = 40 * 8 + 40 * 40 * 8 + 50 * 8 * 13 + 50 * 50 * 5
    bn = 2 * (40 + 40 + 50 + 50)
    fc = (7700 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 10 + 10)
    assert sum(p.size for p in net.params()) == conv + bn + fc


def test_registry_lists_the_rates_the_generators_must_produce():
    assert models.sample_rates() == [8000, 16000, 22050, 44100]


def test_mixer_at_the_input_is_bc_learning_of_the_two_waveforms():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 1, 4096)).astype(np.float32)
    partner = np.array([2, 3, 0, 1], np.int32)
    r = np.array([0.2, 0.4, 0.6, 0.8])
    gains = intermix.compute_gain(x.reshape(4, -1), 44100).max(axis=-1)
    mixer = intermix.Mixer(0, partner, r, combination='linear', mixup_type='sound', gains=gains)
    out = mixer(x).array
    # BC learning's mix, written out from docs/method.md §4 for row 0 (partner 2).
    p = 1 / (1 + 10 ** ((gains[0] - gains[2]) / 20) * (1 - r[0]) / r[0])
    expected = (p * x[0] + (1 - p) * x[2]) / np.sqrt(p ** 2 + (1 - p) ** 2)
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixer.p[0], p)


def test_mixer_with_mixup_weights_is_plain_mixup():
    h = np.arange(8, dtype=np.float32).reshape(2, 4)
    mixer = intermix.Mixer(1, np.array([1, 0], np.int32), np.array([0.25, 0.5]),
                           combination='linear', mixup_type='normal')
    np.testing.assert_allclose(mixer(h).array, [0.25 * h[0] + 0.75 * h[1], 0.5 * h[1] + 0.5 * h[0]])


def test_mixer_interference_uses_the_phase_difference_of_the_pair():
    h = np.full((2, 3), 4.0, np.float32)
    phase = np.array([np.pi / 2, -np.pi / 2])  # difference pi: cos = -1
    mixer = intermix.Mixer(1, np.array([1, 0], np.int32), np.array([0.5, 0.5]),
                           combination='interference', mixup_type='normal', phase=phase)
    np.testing.assert_allclose(mixer(h).array, 0.0, atol=1e-6)  # 2 + 2 - 2*sqrt(4)


def test_mixer_hidden_gains_read_the_tensor_as_audio():
    rng = np.random.default_rng(1)
    h = rng.standard_normal((2, 8, 1024)).astype(np.float32)
    h[1] = 10 * h[0]  # the same tensor, 20 dB louder
    mixer = intermix.Mixer(2, np.array([1, 0], np.int32), np.array([0.5, 0.5]),
                           combination='linear', gains=None)
    mixer(h)
    expected = 1 / (1 + 10 ** (-20 / 20))  # gain_i - gain_j = -20 dB for row 0
    np.testing.assert_allclose(mixer.p[0], expected, rtol=1e-5)


def test_network_forward_applies_the_mixer_only_at_its_point():
    net = models.archs['envnet'](10)
    x = np.random.default_rng(2).standard_normal((2, 1, 1, 24014)).astype(np.float32)
    calls = []

    class Probe:
        point = 2

        def __call__(self, h):
            calls.append(h.shape)
            return h
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        plain = net(x).array
        probed = net(x, Probe()).array
    assert calls == [(2, 50, 11, 46)]
    np.testing.assert_array_equal(plain, probed)


def test_models_use_the_fast_cpu_convolution_and_match_the_stock_one(monkeypatch):
    import fastconv
    calls = []
    real = fastconv.fast_convolution_2d

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(fastconv, 'fast_convolution_2d', counting)
    net = models.archs['envnet'](10)
    x = np.random.default_rng(3).standard_normal((2, 1, 1, 24014)).astype(np.float32)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        fast = net(x).array
        assert len(calls) == 4  # conv1-4
        monkeypatch.setenv('INTERMIX_STOCK_CONV', '1')
        stock = net(x).array
        assert len(calls) == 4
    np.testing.assert_allclose(fast, stock, rtol=1e-4, atol=1e-5)
