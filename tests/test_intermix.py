"""Tests of the public API of ``intermix.py`` (docs/method.md §4 and §5).

Every expected value here is computed independently of the implementation: by hand, from the
definition written out in numpy in this file, or from an invariant (Parseval, symmetry, scaling).
CPU (numpy) only; the whole file runs in a few seconds.
"""
import os
import sys
import warnings

import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import compat  # noqa: E402,F401  (restores numpy.sctypes before chainer is imported)
import chainer  # noqa: E402
import chainer.functions as F  # noqa: E402

import intermix  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------

def _a_curve_db(freq):
    """IEC 61672 A-weighting, closed form with the +2.0 dB normalisation (no floor)."""
    f2 = np.asarray(freq, dtype=np.float64) ** 2
    r_a = (12194.0 ** 2 * f2 * f2
           / ((f2 + 20.6 ** 2) * np.sqrt((f2 + 107.7 ** 2) * (f2 + 737.9 ** 2))
              * (f2 + 12194.0 ** 2)))
    with np.errstate(divide='ignore'):
        return 20.0 * np.log10(r_a) + 2.0


def _frame_gains_loop(x, fs, n_fft, weight_db, min_db=-80.0):
    """Per-frame A-weighted gain written directly from docs/method.md §4 (1-D clip, float64)."""
    x = np.asarray(x, dtype=np.float64)
    hop = n_fft // 2
    if len(x) < n_fft:
        x = np.concatenate([x, np.zeros(n_fft - len(x))])
    window = np.hanning(n_fft + 1)[:-1]
    lin_w = 10.0 ** (np.asarray(weight_db, dtype=np.float64) / 10.0)
    out = []
    start = 0
    while start + n_fft <= len(x):
        spec = np.fft.rfft(window * x[start:start + n_fft])
        g = np.sum(np.abs(spec) ** 2 * lin_w)
        out.append(10.0 * np.log10(max(g, 10.0 ** (min_db / 10.0))))
        start += hop
    return np.array(out)


def _as_array(v):
    return v.array if isinstance(v, chainer.Variable) else np.asarray(v)


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


# ---------------------------------------------------------------------------------------------
# a_weight
# ---------------------------------------------------------------------------------------------

def test_a_weight_shape_and_dtype():
    w = intermix.a_weight(12800, 256)
    assert w.shape == (129,)
    assert w.dtype == np.float64
    assert intermix.a_weight(16000, 2048).shape == (1025,)


def test_a_weight_is_zero_db_at_1khz_and_minus_19_1_at_100hz():
    # fs=12800, n_fft=256 -> bins every 50 Hz: 100 Hz = bin 2, 1000 Hz = bin 20.
    w = intermix.a_weight(12800, 256)
    assert abs(w[20] - 0.0) < 0.05
    assert abs(w[2] - (-19.1)) < 0.1


def test_a_weight_textbook_values():
    # fs=32768, n_fft=65536 -> bins every 0.5 Hz, so all these frequencies are exact bins.
    w = intermix.a_weight(32768, 65536)
    table = {31.5: -39.4, 50.0: -30.2, 100.0: -19.1, 500.0: -3.2, 1000.0: 0.0,
             2000.0: 1.2, 4000.0: 1.0, 8000.0: -1.1, 10000.0: -2.5}
    for f, db in table.items():
        k = int(round(f / 0.5))
        # Tables list nominal (rounded) frequencies and 0.1 dB rounded values.
        assert abs(w[k] - db) < 0.15, (f, w[k], db)


def test_a_weight_matches_closed_form_at_every_bin():
    fs, n_fft = 16000, 2048
    w = intermix.a_weight(fs, n_fft)
    freq = np.linspace(0, fs / 2, n_fft // 2 + 1)
    ref = np.maximum(_a_curve_db(freq), -80.0)
    # 0.02 dB leaves room for the more precise constants (12194.217, 20.598997, ...).
    np.testing.assert_allclose(w, ref, rtol=0, atol=0.02)


def test_a_weight_floor_at_min_db():
    w = intermix.a_weight(12800, 256)
    assert w[0] == pytest.approx(-80.0)          # 0 Hz -> -inf, floored
    assert np.all(w >= -80.0 - 1e-12)
    w60 = intermix.a_weight(12800, 256, min_db=-30.0)
    assert w60[0] == pytest.approx(-30.0)
    assert np.all(w60 >= -30.0 - 1e-12)
    # 50 Hz is about -30.3 dB -> floored to -30; 100 Hz (-19.1) is untouched.
    assert w60[1] == pytest.approx(-30.0)
    assert w60[2] == pytest.approx(w[2])
    np.testing.assert_allclose(w60, np.maximum(w, -30.0), atol=1e-9)


# ---------------------------------------------------------------------------------------------
# compute_gain
# ---------------------------------------------------------------------------------------------

def test_compute_gain_n_frames_16k_is_n_fft_2048():
    rng = np.random.RandomState(0)
    # n_fft=2048, hop=1024: 1 + (16000 - 2048)//1024 = 14 frames.
    g = intermix.compute_gain(rng.randn(16000), 16000)
    assert g.shape == (14,)
    # T = 2048 + 3*1024 = 5120 -> 4 frames; T = 5119 -> 3 frames (would be 8/7 with n_fft 1024).
    assert intermix.compute_gain(rng.randn(5120), 16000).shape == (4,)
    assert intermix.compute_gain(rng.randn(5119), 16000).shape == (3,)


def test_compute_gain_n_frames_44k_is_n_fft_4096():
    rng = np.random.RandomState(1)
    # n_fft=4096, hop=2048: 1 + (44100 - 4096)//2048 = 20 frames.
    assert intermix.compute_gain(rng.randn(44100), 44100).shape == (20,)
    assert intermix.compute_gain(rng.randn(4096 + 2 * 2048), 44100).shape == (3,)
    assert intermix.compute_gain(rng.randn(4096 + 2 * 2048 - 1), 44100).shape == (2,)


def test_compute_gain_n_fft_other_rate_smallest_pow2():
    rng = np.random.RandomState(2)
    # 8000 Hz: 0.092*8000 = 736 -> n_fft 1024, hop 512.
    assert intermix.compute_gain(rng.randn(1024 + 4 * 512), 8000).shape == (5,)
    assert intermix.compute_gain(rng.randn(1024 + 4 * 512 - 1), 8000).shape == (4,)
    # 22050 Hz: 0.092*22050 = 2028.6 -> n_fft 2048.
    assert intermix.compute_gain(rng.randn(2048 + 1024), 22050).shape == (2,)
    assert intermix.compute_gain(rng.randn(2048 + 1023), 22050).shape == (1,)


def test_compute_gain_batch_shape():
    rng = np.random.RandomState(3)
    x = rng.randn(3, 16000)
    assert intermix.compute_gain(x, 16000).shape == (3, 14)
    x4 = rng.randn(2, 3, 5120)
    assert intermix.compute_gain(x4, 16000).shape == (2, 3, 4)


def test_compute_gain_equals_per_frame_loop():
    rng = np.random.RandomState(4)
    fs, n_fft = 16000, 2048
    t = np.arange(8000) / fs
    # Tone + noise + a silent tail (so that some frames are near/below the floor).
    x = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * rng.randn(8000)
    x[6000:] = 0.0
    g = intermix.compute_gain(x, fs)
    ref = _frame_gains_loop(x, fs, n_fft, intermix.a_weight(fs, n_fft))
    assert g.shape == ref.shape == (1 + (8000 - n_fft) // 1024,)
    np.testing.assert_allclose(g, ref, rtol=0, atol=1e-6)
    # Same with the A-curve written in this file (tolerance covers curve constants).
    ref2 = _frame_gains_loop(x, fs, n_fft, np.maximum(
        _a_curve_db(np.linspace(0, fs / 2, n_fft // 2 + 1)), -80.0))
    np.testing.assert_allclose(g, ref2, rtol=0, atol=0.02)


def test_compute_gain_equals_loop_44k():
    rng = np.random.RandomState(5)
    fs, n_fft = 44100, 4096
    x = 0.1 * rng.randn(4096 + 3 * 2048 + 100)
    g = intermix.compute_gain(x, fs)
    ref = _frame_gains_loop(x, fs, n_fft, intermix.a_weight(fs, n_fft))
    assert g.shape == (4,)
    np.testing.assert_allclose(g, ref, rtol=0, atol=1e-6)


def test_compute_gain_short_clip_zero_padded_to_one_frame():
    rng = np.random.RandomState(6)
    x = 0.2 * rng.randn(1000)              # shorter than n_fft = 2048
    g = intermix.compute_gain(x, 16000)
    assert g.shape == (1,)
    ref = _frame_gains_loop(x, 16000, 2048, intermix.a_weight(16000, 2048))
    np.testing.assert_allclose(g, ref, rtol=0, atol=1e-6)


def test_compute_gain_silence_is_min_db():
    g = intermix.compute_gain(np.zeros(16000), 16000)
    np.testing.assert_allclose(g, np.full(14, -80.0), atol=1e-9)
    g60 = intermix.compute_gain(np.zeros((2, 16000)), 16000, min_db=-60.0)
    np.testing.assert_allclose(g60, np.full((2, 14), -60.0), atol=1e-9)


def test_compute_gain_scaling_by_two_adds_6db():
    rng = np.random.RandomState(7)
    x = 0.1 * rng.randn(16000)
    x[12000:] = 0.0                       # trailing frames floored at -80 dB
    g1 = intermix.compute_gain(x, 16000)
    g2 = intermix.compute_gain(2.0 * x, 16000)
    floored = np.isclose(g1, -80.0)
    assert floored.any() and (~floored).any()
    np.testing.assert_allclose(g2[~floored] - g1[~floored], 20 * np.log10(2.0),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(g2[floored], -80.0, atol=1e-9)


def test_compute_gain_batch_rows_independent():
    rng = np.random.RandomState(8)
    rows = [0.5 * rng.randn(16000), np.zeros(16000), 0.01 * rng.randn(16000)]
    batch = intermix.compute_gain(np.stack(rows), 16000)
    for i, r in enumerate(rows):
        np.testing.assert_allclose(batch[i], intermix.compute_gain(r, 16000),
                                   rtol=0, atol=1e-6)


def test_compute_gain_float32_input():
    rng = np.random.RandomState(9)
    x = (0.1 * rng.randn(16000)).astype(np.float32)
    g = intermix.compute_gain(x, 16000)
    ref = _frame_gains_loop(x.astype(np.float64), 16000, 2048, intermix.a_weight(16000, 2048))
    np.testing.assert_allclose(g, ref, rtol=0, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# mix_ratio
# ---------------------------------------------------------------------------------------------

def test_mix_ratio_equal_gains_gives_r():
    r = np.array([0.1, 0.25, 0.5, 0.9])
    g = np.array([-10.0, 3.0, -80.0, 42.0])
    np.testing.assert_allclose(intermix.mix_ratio(g, g, r), r, rtol=1e-12)


def test_mix_ratio_20db_louder_half():
    # 10^(20/20) = 10 -> p = 1 / (1 + 10 * 1) = 1/11.
    p = intermix.mix_ratio(np.array([10.0]), np.array([-10.0]), np.array([0.5]))
    np.testing.assert_allclose(p, [1.0 / 11.0], rtol=1e-12)
    # And the other way: 10^(-1) -> p = 1 / (1 + 0.1) = 10/11.
    p = intermix.mix_ratio(np.array([-10.0]), np.array([10.0]), np.array([0.5]))
    np.testing.assert_allclose(p, [10.0 / 11.0], rtol=1e-12)
    # Hand value with r != 0.5: G_i - G_j = 40 dB (factor 100), r = 0.8 -> (1-r)/r = 0.25
    # p = 1 / (1 + 25) = 1/26.
    p = intermix.mix_ratio(np.array([0.0]), np.array([-40.0]), np.array([0.8]))
    np.testing.assert_allclose(p, [1.0 / 26.0], rtol=1e-12)


def test_mix_ratio_endpoints_no_nan_no_warning():
    gi = np.array([5.0, -30.0, 0.0, 5.0, -30.0, 0.0])
    gj = np.array([-20.0, 10.0, 0.0, -20.0, 10.0, 0.0])
    r = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        p = intermix.mix_ratio(gi, gj, r)
    p = np.asarray(p)
    assert not np.any(np.isnan(p))
    np.testing.assert_array_equal(p, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0])


def test_mix_ratio_broadcasting():
    gi = np.array([[0.0], [20.0], [-20.0]])       # (3, 1)
    gj = np.array([0.0])                           # (1,)
    r = np.array([0.2, 0.5, 0.7, 0.9])             # (4,)
    p = intermix.mix_ratio(gi, gj, r)
    assert p.shape == (3, 4)
    ref = np.empty((3, 4))
    for a in range(3):
        for b in range(4):
            ref[a, b] = 1.0 / (1.0 + 10.0 ** (gi[a, 0] / 20.0) * (1 - r[b]) / r[b])
    np.testing.assert_allclose(p, ref, rtol=1e-12)
    # Scalar r with vector gains.
    p = intermix.mix_ratio(np.array([0.0, 20.0]), np.array([0.0, 0.0]), 0.5)
    np.testing.assert_allclose(p, [0.5, 1.0 / 11.0], rtol=1e-12)


def test_mix_ratio_symmetry():
    rng = np.random.RandomState(10)
    gi = rng.uniform(-80, 0, 50)
    gj = rng.uniform(-80, 0, 50)
    r = rng.uniform(0.01, 0.99, 50)
    p1 = intermix.mix_ratio(gi, gj, r)
    p2 = intermix.mix_ratio(gj, gi, 1 - r)
    np.testing.assert_allclose(p1 + p2, 1.0, rtol=0, atol=1e-12)
    assert np.all((p1 > 0) & (p1 < 1))


# ---------------------------------------------------------------------------------------------
# phase_shift
# ---------------------------------------------------------------------------------------------

def test_phase_shift_zero_is_identity():
    rng = np.random.RandomState(11)
    x = rng.randn(3, 1000).astype(np.float32)
    y = intermix.phase_shift(x, np.zeros(3))
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-6 * np.abs(x).max())


def test_phase_shift_odd_length_identity():
    rng = np.random.RandomState(12)
    x = rng.randn(2, 999)
    y = intermix.phase_shift(x, np.zeros(2))
    assert y.shape == (2, 999)
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-12)


def test_phase_shift_preserves_energy_without_dc_and_nyquist():
    rng = np.random.RandomState(13)
    T = 512
    spec = rng.randn(T // 2 + 1) + 1j * rng.randn(T // 2 + 1)
    spec[0] = 0.0
    spec[T // 2] = 0.0
    x = np.fft.irfft(spec, n=T)
    for phi in [0.3, -1.2, np.pi / 2, np.pi, 2.5]:
        y = intermix.phase_shift(x, np.asarray(phi))
        assert y.shape == (T,)
        np.testing.assert_allclose(np.sum(y ** 2), np.sum(x ** 2), rtol=1e-10)


def test_phase_shift_tone_at_bin():
    T = 256
    t = np.arange(T)
    for k in [1, 5, 40, 127]:
        x = np.cos(2 * np.pi * k * t / T)
        for phi in [0.7, -np.pi / 2, np.pi / 3]:
            y = intermix.phase_shift(x, np.asarray(phi))
            np.testing.assert_allclose(y, np.cos(2 * np.pi * k * t / T + phi),
                                       rtol=0, atol=1e-10)


def test_phase_shift_batched_phi_per_row():
    T = 128
    t = np.arange(T)
    k = np.array([3, 10, 20])
    phi = np.array([0.1, -0.8, 1.4])
    x = np.cos(2 * np.pi * k[:, None] * t[None, :] / T)
    y = intermix.phase_shift(x, phi)
    assert y.shape == (3, T)
    ref = np.cos(2 * np.pi * k[:, None] * t[None, :] / T + phi[:, None])
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-10)
    # Each row equals the row shifted alone.
    for i in range(3):
        np.testing.assert_allclose(y[i], intermix.phase_shift(x[i], np.asarray(phi[i])),
                                   rtol=0, atol=1e-12)


def test_phase_shift_keeps_float32_dtype():
    rng = np.random.RandomState(14)
    x = rng.randn(4, 300).astype(np.float32)
    phi = rng.uniform(-np.pi / 2, np.pi / 2, 4)
    y = intermix.phase_shift(x, phi)
    assert y.dtype == np.float32
    assert y.shape == x.shape
    ref = np.fft.irfft(np.fft.rfft(x.astype(np.float64)) * np.exp(1j * phi[:, None]), n=300)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# linear_mix
# ---------------------------------------------------------------------------------------------

def test_linear_mix_hand_values_4d():
    h_i = np.arange(2 * 2 * 1 * 2, dtype=np.float32).reshape(2, 2, 1, 2)   # 0..7
    h_j = np.ones((2, 2, 1, 2), dtype=np.float32)
    w_i = np.array([0.5, 2.0], dtype=np.float32)
    w_j = np.array([1.0, -1.0], dtype=np.float32)
    out = intermix.linear_mix(h_i, h_j, w_i, w_j)
    assert isinstance(out, chainer.Variable)
    assert out.shape == (2, 2, 1, 2)
    expected = np.array([[[[0.0 * 0.5 + 1, 1 * 0.5 + 1]], [[2 * 0.5 + 1, 3 * 0.5 + 1]]],
                         [[[4 * 2.0 - 1, 5 * 2.0 - 1]], [[6 * 2.0 - 1, 7 * 2.0 - 1]]]],
                        dtype=np.float32)
    np.testing.assert_allclose(out.array, expected, rtol=1e-6)


def test_linear_mix_accepts_variables_2d():
    h_i = chainer.Variable(np.array([[1.0, -2.0, 3.0], [4.0, 0.0, 1.0]], dtype=np.float32))
    h_j = chainer.Variable(np.array([[0.0, 1.0, 1.0], [2.0, 2.0, -2.0]], dtype=np.float32))
    w_i = np.array([0.25, 0.5], dtype=np.float32)
    w_j = np.array([0.75, 0.1], dtype=np.float32)
    out = intermix.linear_mix(h_i, h_j, w_i, w_j)
    expected = np.array([[0.25, 0.25, 1.5], [2.2, 0.2, 0.3]], dtype=np.float32)
    np.testing.assert_allclose(out.array, expected, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# interference_mix
# ---------------------------------------------------------------------------------------------

def test_interference_mix_cos_one_is_sqrt_sum_squared():
    rng = np.random.RandomState(15)
    h_i = rng.uniform(0, 2, (3, 4, 2, 5))
    h_j = rng.uniform(0, 2, (3, 4, 2, 5))
    h_j[0, 0, 0, :2] = 0.0                          # includes a*b == 0
    w_i = np.array([0.3, 0.6, 0.9])
    w_j = np.array([0.7, 0.4, 0.2])
    out = intermix.interference_mix(h_i.astype(np.float32), h_j.astype(np.float32),
                                    w_i.astype(np.float32), w_j.astype(np.float32),
                                    np.zeros(3, dtype=np.float32))
    assert isinstance(out, chainer.Variable)
    assert out.shape == (3, 4, 2, 5)
    a = w_i[:, None, None, None] * h_i
    b = w_j[:, None, None, None] * h_j
    np.testing.assert_allclose(out.array, (np.sqrt(a) + np.sqrt(b)) ** 2, rtol=1e-5, atol=1e-6)


def test_interference_mix_cos_zero_equals_linear_mix():
    rng = np.random.RandomState(16)
    h_i = rng.randn(2, 3, 4).astype(np.float32)
    h_j = rng.randn(2, 3, 4).astype(np.float32)
    w_i = np.array([0.4, 0.8], dtype=np.float32)
    w_j = np.array([0.9, 0.3], dtype=np.float32)
    pd = np.array([np.pi / 2, -np.pi / 2], dtype=np.float32)
    out = intermix.interference_mix(h_i, h_j, w_i, w_j, pd)
    lin = intermix.linear_mix(h_i, h_j, w_i, w_j)
    np.testing.assert_allclose(out.array, lin.array, rtol=1e-5, atol=1e-6)
    ref = w_i[:, None, None] * h_i + w_j[:, None, None] * h_j
    np.testing.assert_allclose(out.array, ref, rtol=1e-5, atol=1e-6)


def test_interference_mix_pi_equal_amplitudes_cancel():
    h = np.array([[[1.0, 2.0], [3.0, 0.5]], [[0.0, 4.0], [1.5, 2.5]]], dtype=np.float32)
    w = np.array([0.7, 0.2], dtype=np.float32)
    out = intermix.interference_mix(h, h.copy(), w, w.copy(),
                                    np.array([np.pi, -np.pi], dtype=np.float32))
    np.testing.assert_allclose(out.array, np.zeros_like(h), rtol=0, atol=1e-5)


def test_interference_mix_signed_inputs_hand_values():
    # Row 0: a = 1*2 = 2, b = 1*(-8) = -8, ab = -16 -> sign -1, sqrt 4, cos 0 = 1:
    #        2 - 8 + 2*(-1)*4*1 = -14.
    # Row 1: same amplitudes, phase_diff = pi -> 2 - 8 + 2*(-1)*4*(-1) = 2.
    # Row 2: a = 0.5*(-2) = -1, b = 0.25*(-4) = -1, ab = 1 -> sign +1, sqrt 1, cos(pi/3) = 0.5:
    #        -1 - 1 + 2*1*1*0.5 = -1.
    # Row 3: a = 3, b = 0 -> sign 0: 3 + 0 + 0 = 3.
    h_i = np.array([[2.0], [2.0], [-2.0], [3.0]], dtype=np.float32)
    h_j = np.array([[-8.0], [-8.0], [-4.0], [0.0]], dtype=np.float32)
    w_i = np.array([1.0, 1.0, 0.5, 1.0], dtype=np.float32)
    w_j = np.array([1.0, 1.0, 0.25, 1.0], dtype=np.float32)
    pd = np.array([0.0, np.pi, np.pi / 3, 0.0], dtype=np.float32)
    out = intermix.interference_mix(h_i, h_j, w_i, w_j, pd)
    np.testing.assert_allclose(out.array, [[-14.0], [2.0], [-1.0], [3.0]], rtol=1e-5, atol=1e-5)


def test_interference_mix_general_values_against_formula():
    rng = np.random.RandomState(17)
    h_i = rng.randn(4, 2, 3, 3)
    h_j = rng.randn(4, 2, 3, 3)
    w_i = rng.uniform(0.1, 1, 4)
    w_j = rng.uniform(0.1, 1, 4)
    pd = rng.uniform(-np.pi, np.pi, 4)
    out = intermix.interference_mix(*(v.astype(np.float32) for v in (h_i, h_j, w_i, w_j, pd)))
    a = w_i[:, None, None, None] * h_i
    b = w_j[:, None, None, None] * h_j
    ref = a + b + 2 * np.sign(a * b) * np.sqrt(np.abs(a * b)) * np.cos(pd)[:, None, None, None]
    np.testing.assert_allclose(out.array, ref, rtol=1e-4, atol=1e-5)


def test_interference_mix_accepts_variables():
    h_i = chainer.Variable(np.array([[4.0, 1.0]], dtype=np.float32))
    h_j = chainer.Variable(np.array([[1.0, 9.0]], dtype=np.float32))
    out = intermix.interference_mix(h_i, h_j, np.array([1.0], dtype=np.float32),
                                    np.array([1.0], dtype=np.float32),
                                    np.array([0.0], dtype=np.float32))
    assert isinstance(out, chainer.Variable)
    # (sqrt4 + sqrt1)^2 = 9, (1 + 3)^2 = 16.
    np.testing.assert_allclose(out.array, [[9.0, 16.0]], rtol=1e-6)


def _grads(fn, h_i_arr, h_j_arr, *rest):
    h_i = chainer.Variable(h_i_arr.copy())
    h_j = chainer.Variable(h_j_arr.copy())
    out = fn(h_i, h_j, *rest)
    F.sum(out).backward()
    return h_i.grad, h_j.grad


def test_interference_mix_gradients_finite_and_equal_linear():
    rng = np.random.RandomState(18)
    shape = (3, 2, 4, 4)
    # Post-ReLU style features: many exact zeros, so a*b == 0 at many places.
    h_i = np.maximum(rng.randn(*shape), 0).astype(np.float32)
    h_j = np.maximum(rng.randn(*shape), 0).astype(np.float32)
    h_j[1] = 0.0                                   # a whole example with h_j == 0
    h_i[2, 0] = 0.0
    w_i = np.array([0.3, 0.8, 0.5], dtype=np.float32)
    w_j = np.array([0.9, 0.4, 0.6], dtype=np.float32)
    pd = np.array([0.2, -1.0, 2.5], dtype=np.float32)
    gi, gj = _grads(intermix.interference_mix, h_i, h_j, w_i, w_j, pd)
    assert gi is not None and gj is not None
    assert np.all(np.isfinite(gi)) and np.all(np.isfinite(gj))
    li, lj = _grads(intermix.linear_mix, h_i, h_j, w_i, w_j)
    np.testing.assert_allclose(gi, li, rtol=1e-6)
    np.testing.assert_allclose(gj, lj, rtol=1e-6)
    # d(sum(w_i h_i + w_j h_j))/dh = w broadcast.
    np.testing.assert_allclose(gi, np.broadcast_to(w_i[:, None, None, None], shape), rtol=1e-6)
    np.testing.assert_allclose(gj, np.broadcast_to(w_j[:, None, None, None], shape), rtol=1e-6)


def test_interference_mix_gradients_signed_inputs():
    rng = np.random.RandomState(19)
    h_i = rng.randn(2, 50).astype(np.float32)
    h_j = rng.randn(2, 50).astype(np.float32)
    h_j[0, :10] = 0.0
    w_i = np.array([0.6, 0.2], dtype=np.float32)
    w_j = np.array([0.5, 1.1], dtype=np.float32)
    pd = np.array([0.0, 1.0], dtype=np.float32)
    gi, gj = _grads(intermix.interference_mix, h_i, h_j, w_i, w_j, pd)
    assert np.all(np.isfinite(gi)) and np.all(np.isfinite(gj))
    np.testing.assert_allclose(gi, np.broadcast_to(w_i[:, None], (2, 50)), rtol=1e-6)
    np.testing.assert_allclose(gj, np.broadcast_to(w_j[:, None], (2, 50)), rtol=1e-6)


def test_linear_mix_gradients():
    h_i = np.ones((2, 3), dtype=np.float32)
    h_j = np.ones((2, 3), dtype=np.float32)
    w_i = np.array([0.25, 2.0], dtype=np.float32)
    w_j = np.array([0.5, -1.0], dtype=np.float32)
    gi, gj = _grads(intermix.linear_mix, h_i, h_j, w_i, w_j)
    np.testing.assert_allclose(gi, [[0.25] * 3, [2.0] * 3])
    np.testing.assert_allclose(gj, [[0.5] * 3, [-1.0] * 3])


# ---------------------------------------------------------------------------------------------
# kl_divergence
# ---------------------------------------------------------------------------------------------

def _kl_ref(z, t):
    logq = _log_softmax(z)
    with np.errstate(divide='ignore', invalid='ignore'):
        tlogt = np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0)
    return np.mean(np.sum(tlogt - t * logq, axis=1))


def test_kl_divergence_hand_value_with_zero_targets():
    z = np.array([[1.0, 2.0, 0.5, -1.0],
                  [0.0, 0.0, 3.0, 1.0],
                  [2.0, -2.0, 0.0, 0.5]])
    t = np.array([[0.0, 0.7, 0.3, 0.0],
                  [0.0, 0.0, 1.0, 0.0],
                  [0.25, 0.25, 0.25, 0.25]])
    out = intermix.kl_divergence(z, t)
    assert isinstance(out, chainer.Variable)
    assert out.shape == ()
    assert np.isfinite(out.array)
    # Fully by hand for row 1 (one-hot at 2): -log softmax(z)[2] = log(2 + e^3 + e) - 3.
    row1 = np.log(2.0 + np.exp(3.0) + np.exp(1.0)) - 3.0
    ref = _kl_ref(z, t)
    assert ref > 0
    np.testing.assert_allclose(_kl_ref(z[1:2], t[1:2]), row1, rtol=1e-12)
    np.testing.assert_allclose(out.array, ref, rtol=1e-6)


def test_kl_divergence_float32():
    rng = np.random.RandomState(20)
    z = rng.randn(5, 10).astype(np.float32)
    t = rng.dirichlet(np.ones(10), 5).astype(np.float32)
    t[0, :3] = 0.0
    t[0] /= t[0].sum()
    out = intermix.kl_divergence(z, t)
    assert out.shape == ()
    np.testing.assert_allclose(out.array, _kl_ref(z.astype(np.float64), t.astype(np.float64)),
                               rtol=1e-4, atol=1e-6)


def test_kl_divergence_zero_when_target_is_softmax():
    rng = np.random.RandomState(21)
    z = rng.randn(4, 6)
    t = _softmax(z)
    out = intermix.kl_divergence(z, t)
    assert abs(float(out.array)) < 1e-12


def test_kl_divergence_is_cross_entropy_minus_entropy():
    rng = np.random.RandomState(22)
    z = rng.randn(6, 5) * 2
    t = rng.dirichlet(np.ones(5) * 0.5, 6)
    t[2] = [0.0, 0.5, 0.5, 0.0, 0.0]
    ce = np.mean(-np.sum(t * _log_softmax(z), axis=1))
    with np.errstate(divide='ignore', invalid='ignore'):
        ent = np.mean(-np.sum(np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0), axis=1))
    out = intermix.kl_divergence(z, t)
    np.testing.assert_allclose(out.array, ce - ent, rtol=1e-10)


def test_kl_divergence_one_hot_equals_softmax_cross_entropy():
    rng = np.random.RandomState(23)
    z = rng.randn(7, 5).astype(np.float32)
    labels = np.array([0, 4, 2, 2, 1, 3, 0], dtype=np.int32)
    t = np.eye(5, dtype=np.float32)[labels]
    out = intermix.kl_divergence(z, t)
    ref = F.softmax_cross_entropy(z, labels)
    np.testing.assert_allclose(out.array, ref.array, rtol=1e-5)


def test_kl_divergence_gradient_wrt_logits():
    rng = np.random.RandomState(24)
    n, c = 4, 3
    z = chainer.Variable(rng.randn(n, c))
    t = np.array([[0.2, 0.8, 0.0], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.4, 0.6]])
    out = intermix.kl_divergence(z, t)
    assert out.shape == ()
    out.backward()
    assert np.all(np.isfinite(z.grad))
    np.testing.assert_allclose(z.grad, (_softmax(z.array) - t) / n, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# mix_targets
# ---------------------------------------------------------------------------------------------

def test_mix_targets_hand_values():
    y_i = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    y_j = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]], dtype=np.float32)
    r = np.array([0.25, 1.0, 0.6])
    out = _as_array(intermix.mix_targets(y_i, y_j, r))
    assert out.shape == (3, 3)
    expected = np.array([[0.25, 0.75, 0.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_mix_targets_rows_sum_to_one():
    rng = np.random.RandomState(25)
    n, c = 8, 50
    y_i = np.eye(c)[rng.randint(0, c, n)]
    y_j = np.eye(c)[rng.randint(0, c, n)]
    r = rng.uniform(0, 1, n)
    out = _as_array(intermix.mix_targets(y_i, y_j, r))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out, r[:, None] * y_i + (1 - r[:, None]) * y_j, rtol=1e-6, atol=1e-7)


def test_mix_targets_integer_one_hot():
    # One-hot targets stored as integers (e.g. np.eye(C, dtype=int)[labels]) must still give
    # the soft targets r*y_i + (1-r)*y_j, not r truncated to an integer.
    y_i = np.eye(3, dtype=np.int32)[[0, 1]]
    y_j = np.eye(3, dtype=np.int32)[[2, 0]]
    r = np.array([0.25, 0.5])
    out = _as_array(intermix.mix_targets(y_i, y_j, r))
    assert np.issubdtype(out.dtype, np.floating)
    np.testing.assert_allclose(out, [[0.25, 0.0, 0.75], [0.5, 0.5, 0.0]], rtol=1e-6)
