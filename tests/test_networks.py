"""The networks added for Table 1 and SampleCNN: shapes, parameter counts, training steps, and the
log-mel front end of Logmel-CNN against a NumPy reference."""
import numpy as np
import pytest
import scipy.signal

import compat  # noqa: F401
import chainer
import chainer.functions as F
from chainer import gradient_check

import intermix
import models
import schedules
from models.logmel_cnn import LogMelDelta

NEW = ['soundnet5', 'm18', 'logmel_cnn', 'samplecnn', 'samplecnn_se']

# Feature map (C, H, W) at every mixing point, worked out by hand from each docstring's table:
# conv length (W + 2 pad - k) // stride + 1, pooling (W - k) // k + 1.
SHAPES = {
    # conv1 (33075+64-64)//2+1 = 16538, pool 8 -> 2067; conv2 2067//2+1 = 1034, pool -> 129;
    # conv3 129//2+1 = 65, pool -> 8.
    'soundnet5': {0: (1, 1, 33075), 1: (32, 1, 2067), 2: (64, 1, 129), 3: (128, 1, 8)},
    # conv1 (32000+76-80)//4+1 = 8000, pool 4 -> 2000 -> 500 -> 125 -> 31.
    'm18': {0: (1, 1, 32000), 1: (64, 1, 2000), 2: (64, 1, 500), 3: (128, 1, 125),
            4: (256, 1, 31)},
    # front end 2x60x41; conv1 57x6 -> 80x4x36; pool 4x3 stride 1x3 -> 80x1x12;
    # conv2 1x3 -> 80x1x10; pool 1x3 -> 80x1x3.
    'logmel_cnn': {0: (1, 1, 21504), 1: (80, 1, 12), 2: (80, 1, 3)},
    # 59049 / 3 = 19683 after the strided conv, then / 3 per block.
    'samplecnn': {0: (1, 1, 59049), 1: (128, 1, 6561), 2: (128, 1, 2187), 3: (256, 1, 729),
                  4: (256, 1, 243), 5: (256, 1, 81), 6: (256, 1, 27), 7: (256, 1, 9),
                  8: (256, 1, 3), 9: (512, 1, 1)},
}
SHAPES['samplecnn_se'] = SHAPES['samplecnn']


def _walk(net, x):
    """Shapes (C, H, W) at each mixing point and the output shape, in one forward pass."""
    shapes = {}
    h = x
    for point, stage in enumerate(net.stages()):
        shapes[point] = h.shape[1:]
        h = stage(h)
    return shapes, h.shape


@pytest.mark.parametrize('name', NEW)
def test_output_and_feature_maps_at_every_mixing_point_match_the_docstring_table(name):
    cls = models.archs[name]
    assert set(cls.mix_points) == set(SHAPES[name])
    net = cls(10)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 1, 1, cls.input_length)).astype(np.float32)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        shapes, out = _walk(net, x)
    assert shapes == SHAPES[name]
    assert out == (2, 10)


def _n_params(net):
    return sum(p.size for p in net.params())


def test_parameter_counts_by_hand():
    bn = 2  # gamma and beta per channel; the conv blocks have no bias
    soundnet5 = (1 * 32 * 64 + 32 * 64 * 32 + 64 * 128 * 16 + 128 * 256 * 8
                 + bn * (32 + 64 + 128 + 256)
                 + 256 * 5 * 10 + 10)
    m18 = (1 * 64 * 80
           + 4 * 64 * 64 * 3
           + 64 * 128 * 3 + 3 * 128 * 128 * 3
           + 128 * 256 * 3 + 3 * 256 * 256 * 3
           + 256 * 512 * 3 + 3 * 512 * 512 * 3
           + bn * (64 + 4 * 64 + 4 * 128 + 4 * 256 + 4 * 512)
           + 512 * 10 + 10)
    logmel_cnn = (2 * 80 * 57 * 6 + 80 * 80 * 3 + bn * (80 + 80)
                  + (80 * 3 * 5000 + 5000) + (5000 * 5000 + 5000) + (5000 * 10 + 10))
    samplecnn = (1 * 128 * 3
                 + 128 * 128 * 3 + 128 * 128 * 3 + 128 * 256 * 3 + 5 * 256 * 256 * 3
                 + 256 * 512 * 3
                 + bn * (128 + 128 + 128 + 6 * 256 + 512)
                 + 512 * 512 + bn * 512            # fc 512 without bias, BN
                 + 512 * 10 + 10)
    # SE per block of C channels: fc C -> 16C and 16C -> C, with biases.
    se = sum(c * 16 * c + 16 * c + 16 * c * c + c
             for c in (128, 128, 256, 256, 256, 256, 256, 256, 512))
    expected = {'soundnet5': soundnet5, 'm18': m18, 'logmel_cnn': logmel_cnn,
                'samplecnn': samplecnn, 'samplecnn_se': samplecnn + se}
    assert expected == {'soundnet5': 474570, 'm18': 3679882, 'logmel_cnn': 26334250,
                        'samplecnn': 1846410, 'samplecnn_se': 23905674}
    for name, count in expected.items():
        net = models.archs[name](10)
        assert _n_params(net) == count, name
        if name.startswith('samplecnn'):
            assert net.se == (name == 'samplecnn_se')  # samplecnn_se is SampleCNN(se=True)


def test_registry_holds_every_network_of_table_1_and_samplecnn_and_their_rates():
    assert {'envnet', 'envnetv2', 'soundnet5', 'm18', 'logmel_cnn', 'samplecnn',
            'samplecnn_se'} <= set(models.archs)
    assert models.sample_rates() == [8000, 16000, 22050, 44100]
    for name in NEW:
        cls = models.archs[name]
        assert 0 in cls.mix_points and sorted(cls.mix_points) == list(range(len(cls.mix_points)))
        # No paper settings for these networks (docs/method.md §6): EnvNet-v2's on the same dataset.
        for dataset in ('esc50', 'esc10', 'urbansound8k'):
            assert schedules.default(name, dataset) == schedules.default('envnetv2', dataset)
            assert 'EnvNet-v2' in schedules.SCHEDULES[name, dataset].source


def test_samplecnn_se_is_samplecnn_with_the_flag():
    assert issubclass(models.archs['samplecnn_se'], models.archs['samplecnn'])


STEPS = {'samplecnn': 2, 'samplecnn_se': 2}  # the slowest networks on a CPU; 3 for the others
# SampleCNN-SE at 1e-3: the exact (float64) losses are 1.784, 1.838, 1.375 -- step 2 overshoots --
# and in float32 its last blocks (BN over m = 2 values per channel at batch 2) make the path
# chaotic: the float32 stock and fast paths, equally close to float64 after step 1, part ways
# after it (at 3e-4 the InterMix case still rose on both paths). At 1e-4 the standard losses fall
# at step 2 in float64, stock and fast float32 alike (1.784 -> 1.662, 1.725, 1.697), InterMix too.
LR = {'samplecnn_se': 1e-4}


@pytest.mark.parametrize('method', ['standard', 'intermix'])
@pytest.mark.parametrize('name', NEW)
def test_training_steps_lower_the_loss_on_a_fixed_tiny_batch(name, method):
    """A few NesterovAG steps on one fixed batch (same dropout masks each step, a fixed mixing
    draw at hidden point 1) lower its loss: the gradients reach every trainable layer in the
    right direction, with and without InterMix."""
    cls = models.archs[name]
    state = np.random.get_state()
    try:
        np.random.seed(0)
        net = cls(10)
        optimizer = chainer.optimizers.NesterovAG(lr=LR.get(name, 1e-3), momentum=0.9)
        optimizer.setup(net)
        rng = np.random.default_rng(1)
        x = (0.1 * rng.standard_normal((2, cls.input_length))).astype(np.float32)
        y = np.array([3, 7], np.int32)
        if method == 'standard':
            def loss_fn():
                return F.softmax_cross_entropy(net(x[:, None, None, :]), y)
        else:  # as training.MixingUpdater: one pair, mixed both ways at a hidden point
            partner = np.array([1, 0], np.int32)
            r = np.array([0.3, 0.8])
            phase = np.array([0.4, -1.1])
            shifted = intermix.phase_shift(x, phase)
            gains = intermix.compute_gain(shifted, cls.fs).max(axis=-1)
            eye = np.eye(10, dtype=np.float32)
            target = intermix.mix_targets(eye[y], eye[y[partner]], r)

            def loss_fn():
                mixer = intermix.Mixer(1, partner, r, combination='interference',
                                       mixup_type='sound', gains=gains, phase=phase)
                return intermix.kl_divergence(net(shifted[:, None, None, :], mixer), target)
        losses = []
        for _ in range(STEPS.get(name, 3)):
            np.random.seed(2)  # the same dropout masks at every step: one fixed objective
            loss = loss_fn()
            losses.append(float(loss.array))
            net.cleargrads()
            loss.backward()
            optimizer.update()
    finally:
        np.random.set_state(state)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses


# ---------------------------------------------------------------- log-mel front end (Logmel-CNN)

def _slaney_filterbank(fs, n_fft, n_mels):
    """Mel filterbank written out band by band from Slaney's Auditory Toolbox definition
    (independently of models.logmel_cnn): mel = 3 f / 200 below 1 kHz, 15 + 27 ln(f / 1000) /
    ln 6.4 above; triangles between n_mels + 2 equally spaced mel points from 0 to fs/2, each of
    height 2 / (upper - lower) Hz (equal area)."""
    def mel(f):
        return 3.0 * f / 200.0 if f < 1000.0 else 15.0 + 27.0 * np.log(f / 1000.0) / np.log(6.4)

    def hz(m):
        return 200.0 * m / 3.0 if m < 15.0 else 1000.0 * 6.4 ** ((m - 15.0) / 27.0)

    points = [hz(m) for m in np.linspace(0.0, mel(fs / 2.0), n_mels + 2)]
    bank = np.zeros((n_mels, n_fft // 2 + 1))
    for i in range(n_mels):
        lower, centre, upper = points[i:i + 3]
        for k in range(n_fft // 2 + 1):
            f = k * fs / n_fft
            if lower < f <= centre:
                bank[i, k] = (f - lower) / (centre - lower)
            elif centre < f < upper:
                bank[i, k] = (upper - f) / (upper - centre)
        bank[i] *= 2.0 / (upper - lower)
    return bank


def _reference_logmel_delta(x, fs=22050, n_fft=1024, hop=512, n_mels=60, width=9):
    """NumPy reference: rfft of periodic-Hann frames -> power -> mel -> 10 log10(max(., 1e-10));
    delta by the regression formula over +-width//2 frames, border frames repeated."""
    n_frames = (len(x) - n_fft) // hop + 1
    frames = np.stack([x[t * hop:t * hop + n_fft] for t in range(n_frames)]).astype(np.float64)
    window = scipy.signal.get_window('hann', n_fft, fftbins=True)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    logmel = 10.0 * np.log10(np.maximum(power @ _slaney_filterbank(fs, n_fft, n_mels).T, 1e-10)).T
    half = width // 2
    denom = 2.0 * sum(n * n for n in range(1, half + 1))
    delta = np.zeros_like(logmel)
    for t in range(n_frames):
        for n in range(1, half + 1):
            delta[:, t] += n * (logmel[:, min(t + n, n_frames - 1)] - logmel[:, max(t - n, 0)])
    return logmel, delta / denom


def test_slaney_mel_scale_fixed_points():
    from models.logmel_cnn import hz_to_mel, mel_to_hz, mel_filterbank
    np.testing.assert_allclose(hz_to_mel([0.0, 200.0, 1000.0, 6400.0]), [0.0, 3.0, 15.0, 42.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel([50.0, 999.0, 1001.0, 11025.0])),
                               [50.0, 999.0, 1001.0, 11025.0])
    np.testing.assert_allclose(mel_filterbank(22050, 1024, 60), _slaney_filterbank(22050, 1024, 60),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_log_mel_front_end_matches_numpy_stft_mel_log(dtype):
    rng = np.random.default_rng(3)
    t = np.arange(21504) / 22050.0
    x = 0.3 * rng.standard_normal((2, 21504)) + 0.2 * np.sin(2 * np.pi * 440.0 * t)
    x = x.astype(dtype)
    frontend = LogMelDelta(fs=22050, n_fft=1024, hop=512, n_mels=60)
    with chainer.no_backprop_mode():
        out = frontend(x[:, None, None, :]).array
    assert out.shape == (2, 2, 60, 41) and out.dtype == dtype
    for b in range(2):
        logmel, delta = _reference_logmel_delta(x[b].astype(np.float64))
        np.testing.assert_allclose(out[b, 0], logmel, rtol=0, atol=1e-4)
        np.testing.assert_allclose(out[b, 1], delta, rtol=0, atol=1e-4)


def test_log_mel_front_end_gradient_check_float64():
    rng = np.random.default_rng(4)
    frontend = LogMelDelta(fs=22050, n_fft=1024, hop=512, n_mels=60)
    x = 0.3 * rng.standard_normal((2, 1, 1, 1024 + 4 * 512))  # 5 frames
    gy = rng.standard_normal((2, 2, 60, 5))
    gradient_check.check_backward(frontend, x, gy, dtype=np.float64, atol=1e-6, rtol=1e-5)


def test_log_mel_constants_are_persistent_not_trainable():
    net = models.archs['logmel_cnn'](10)
    fixed = {'dft': net.frontend.dft, 'mel': net.frontend.mel,
             'delta_taps': net.frontend.delta_taps}
    assert not any(name.startswith('/frontend') for name, _ in net.namedparams())
    # to_device / to_gpu visit every persistent array of every link; record what they visit.
    visited = []

    class Recorder(chainer.device_resident.DeviceResidentsVisitor):
        def visit_device_resident(self, resident):
            pass  # links recurse into their children themselves

        def visit_array(self, array):
            visited.append(array)
            return array

        def visit_variable(self, variable):
            pass
    net.device_resident_accept(Recorder())
    for name, array in fixed.items():
        assert any(a is array for a in visited), name
    # Saved with the model (a snapshot restores the same front end).
    target = {}
    chainer.serializers.DictionarySerializer(target).save(net)
    np.testing.assert_array_equal(target['frontend/dft'], fixed['dft'])
    assert fixed['dft'].shape == (2 * 513, 1, 1, 1024) and fixed['mel'].shape == (60, 513, 1, 1)


def test_logmel_cnn_gradient_reaches_the_waveform():
    """FGSM differentiates the loss with respect to the input waveform through the front end."""
    net = models.archs['logmel_cnn'](10)
    x = chainer.Variable(np.random.default_rng(5).uniform(-0.5, 0.5, (2, 1, 1, 21504))
                         .astype(np.float32))
    with chainer.using_config('train', False):
        loss = F.softmax_cross_entropy(net(x), np.array([1, 2], np.int32))
    loss.backward()
    assert x.grad is not None and np.all(np.isfinite(x.grad)) and np.abs(x.grad).max() > 0
