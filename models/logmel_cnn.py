"""Logmel-CNN: the short-segment CNN of Piczak, "Environmental sound classification with
convolutional neural networks", MLSP 2015, with batch normalisation (Tokozume et al. 2018,
Table 1: "Logmel-CNN + BN"), fed with the waveform and computing its log-mel input inside the
model.

22.05 kHz, T = 1024 + 40 * 512 = 21504 samples (0.98 s, 41 frames). Feature maps, for one input
(C x H x W):

| point | tensor                                                    | shape         |
|-------|-----------------------------------------------------------|---------------|
| 0     | input waveform                                            | 1 x 1 x 21504 |
|       | front end: log-mel (60 bands x 41 frames) and its delta   | 2 x 60 x 41   |
| 1     | conv1 80@57x6 (80 x 4 x 36), pool 4x3 stride 1x3          | 80 x 1 x 12   |
| 2     | conv2 80@1x3 (80 x 1 x 10), pool 1x3                      | 80 x 1 x 3    |

then fc 5000 -> fc 5000 (ReLU, dropout 0.5) -> fc n_classes. Pooling drops trailing partial
windows (``cover_all=False``: 10 -> 3).

Mixing points: 0 mixes waveforms before the front end, as BC learning does for this model; 1-2
follow each pooling stage (the default hidden set for SpeechMix/InterMix is {1, 2}). The front
end's output is not a mixing point: it is a fixed transform, not a learned layer, and mixing log
spectra is not mixing sounds.

Front end (:class:`LogMelDelta`), all Chainer functions with fixed arrays, so gradients reach the
waveform (FGSM differentiates through it):

1. frames of n_fft = 1024 samples every hop = 512 samples, no centring or padding
   (41 frames for T = 21504), each multiplied by a periodic Hann window
   ``w[n] = 0.5 - 0.5 cos(2 pi n / n_fft)``;
2. the DFT of each windowed frame as one fixed convolution of the (N, 1, 1, T) waveform with
   2 x 513 kernels ``w[n] cos(2 pi k n / n_fft)`` and ``-w[n] sin(2 pi k n / n_fft)`` (k = 0..512)
   at stride 512 - the real and imaginary parts of ``numpy.fft.rfft`` of the frame;
3. power ``re^2 + im^2`` (N, 513, 41);
4. mel: a fixed linear map by a 60 x 513 filterbank (:func:`mel_filterbank`: Slaney's mel scale
   and area-normalised triangles, 0 Hz to fs/2, i.e. librosa's ``filters.mel`` defaults);
5. log: ``10 log10(max(mel, 1e-10))`` dB (librosa's ``power_to_db`` with ref 1, amin 1e-10);
6. delta: the regression delta over +-4 frames (width 9), ``d_t = sum_{n=1..4} n (c_{t+n} -
   c_{t-n}) / 60``, as a fixed convolution along time, the border frames repeated at the edges
   (HTK; librosa's ``feature.delta(width=9)`` is the same inside and fits a polynomial at the
   edges instead);
7. log-mel and delta stacked as 2 channels: (N, 2, 60, 41).

The fixed arrays are persistent values of the link (``add_persistent``): ``to_device`` /
``to_gpu`` move them with the model and they are saved in snapshots, but they are not parameters
(not in ``params()``, not updated, no weight decay). They are kept in float32 and cast to the
input's dtype when it differs (float64 for gradient checks).

Adaptations (all collected in docs/method.md §8):

- Piczak computed log-mel with librosa offline (centred frames, ``logamplitude`` with an 80 dB
  floor below each segment's maximum); here frames are not centred (T covers exactly 41 frames)
  and the floor is the absolute 1e-10 (-100 dB), which does not depend on the segment.
- Conv blocks are those of docs/method.md §8 (conv without bias, He init -> BN -> ReLU); Piczak had no BN ("+ BN" as
  in Tokozume et al. 2018), and dropout 0.5 is on the two hidden fully connected layers only.
- Input: one 41-frame segment per crop (random crops in training, 10 crops averaged in testing,
  docs/method.md §3) instead of Piczak's segment extraction with silence removal and majority/probability
  voting.
- Training settings: not given by the paper for this network (docs/method.md §6), so the defaults are EnvNet-v2's on the same
  dataset (their rows in ``schedules.py``), with the BC-learning
  optimiser (docs/method.md §6) in place of Piczak's own settings.
"""
import numpy as np

import compat  # noqa: F401
import chainer
import chainer.functions as F
import chainer.links as L

import fastconv

from models.common import ConvBNReLU, StagedNet


def hz_to_mel(f):
    """Slaney's mel scale (Auditory Toolbox; librosa ``hz_to_mel(htk=False)``).

    Linear below 1 kHz (``f / (200/3)``, so 1 kHz = 15 mel), logarithmic above
    (``15 + log(f / 1000) / (log(6.4) / 27)``). ``f`` in Hz (array-like); returns mel (float64).
    """
    f = np.asarray(f, dtype=np.float64)
    linear = f / (200.0 / 3.0)
    logstep = np.log(6.4) / 27.0
    log = 15.0 + np.log(np.maximum(f, 1000.0) / 1000.0) / logstep
    return np.where(f >= 1000.0, log, linear)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel`: mel -> Hz (float64)."""
    m = np.asarray(m, dtype=np.float64)
    linear = m * (200.0 / 3.0)
    logstep = np.log(6.4) / 27.0
    log = 1000.0 * np.exp(logstep * (np.maximum(m, 15.0) - 15.0))
    return np.where(m >= 15.0, log, linear)


def mel_filterbank(fs, n_fft, n_mels, fmin=0.0, fmax=None):
    """Mel filterbank (n_mels, n_fft // 2 + 1), float64: power spectrum -> mel band energies.

    Triangles between n_mels + 2 points equally spaced on Slaney's mel scale from ``fmin`` to
    ``fmax`` (default fs / 2), over the rfft bin frequencies ``k fs / n_fft``; each triangle is
    scaled by ``2 / (f_{i+2} - f_i)`` (Hz) so that its area is constant (Slaney normalisation).
    The defaults of ``librosa.filters.mel`` (``htk=False``, ``norm='slaney'``).
    """
    fmax = fs / 2.0 if fmax is None else fmax
    bins = np.arange(n_fft // 2 + 1) * fs / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (upper - lower))


def delta_kernel(width=9):
    """Regression delta taps (width,) for ``d_t = sum_k taps[k] c_{t - width//2 + k}``.

    ``taps[k] = (k - width//2) / (2 sum_{n=1}^{width//2} n^2)``: [-4..4] / 60 for width 9.
    """
    if width < 3 or width % 2 == 0:
        raise ValueError(f'delta width must be odd and >= 3, got {width}')
    half = width // 2
    return np.arange(-half, half + 1) / (2.0 * sum(n * n for n in range(1, half + 1)))


class LogMelDelta(chainer.Link):
    """Differentiable log-mel + delta front end: (N, 1, 1, T) waveform -> (N, 2, n_mels, F).

    ``F = (T - n_fft) // hop + 1`` frames; channel 0 is the log-mel energy (dB), channel 1 its
    delta. See the module docstring for the steps. Args: ``fs`` (Hz), ``n_fft`` (window, samples),
    ``hop`` (samples), ``n_mels``, ``delta_width`` (odd), ``amin`` (power floor before the log).
    """

    def __init__(self, fs=22050, n_fft=1024, hop=512, n_mels=60, delta_width=9, amin=1e-10):
        super().__init__()
        self.fs, self.n_fft, self.hop, self.n_mels = fs, n_fft, hop, n_mels
        self.amin = amin
        n = np.arange(n_fft)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
        k = np.arange(n_fft // 2 + 1)
        angle = 2 * np.pi * (np.outer(k, n) % n_fft) / n_fft  # exact phase for large k * n
        dft = np.concatenate([window * np.cos(angle), -window * np.sin(angle)])
        n_bins = len(k)
        self.add_persistent('dft', dft.reshape(2 * n_bins, 1, 1, n_fft).astype(np.float32))
        mel = mel_filterbank(fs, n_fft, n_mels)
        self.add_persistent('mel', mel.reshape(n_mels, n_bins, 1, 1).astype(np.float32))
        taps = delta_kernel(delta_width)
        self.add_persistent('delta_taps', taps.reshape(1, 1, 1, delta_width).astype(np.float32))

    @staticmethod
    def _as(array, dtype):
        return array if array.dtype == dtype else array.astype(dtype)

    def power_spectrogram(self, x):
        """(N, 1, 1, T) -> power spectrum of the Hann-windowed frames, (N, n_fft//2+1, 1, F)."""
        # The frames' DFT as one GEMM on the CPU (fastconv.FramedConvolution2D), a convolution
        # at stride hop elsewhere: the same values.
        spec = fastconv.framed_convolution_2d(x, self._as(self.dft, x.dtype), (1, self.hop))
        re, im = F.split_axis(spec, 2, axis=1)
        return re * re + im * im

    def log_mel(self, x):
        """(N, 1, 1, T) -> log-mel energies in dB, (N, 1, n_mels, F)."""
        power = self.power_spectrogram(x)
        mel = F.convolution_2d(power, self._as(self.mel, power.dtype))  # (N, n_mels, 1, F)
        db = 10.0 * F.log10(F.clip(mel, self.amin, float('inf')))  # max(mel, amin)
        return F.swapaxes(db, 1, 2)

    def delta(self, c):
        """Regression delta along the last axis of ``c`` (N, 1, H, F), border frames repeated."""
        taps = self._as(self.delta_taps, c.dtype)
        half = taps.shape[-1] // 2
        n, ch, height, _ = c.shape
        first = F.broadcast_to(c[:, :, :, :1], (n, ch, height, half))
        last = F.broadcast_to(c[:, :, :, -1:], (n, ch, height, half))
        return F.convolution_2d(F.concat([first, c, last], axis=3), taps)

    def forward(self, x):
        c = self.log_mel(x)
        return F.concat([c, self.delta(c)], axis=1)


class LogmelCNN(StagedNet):
    """Piczak's CNN with BN for ``n_classes`` classes; input (N, 1, 1, 21504) at 22.05 kHz."""

    fs = 22050
    input_length = 21504
    mix_points = {
        0: 'input waveform, before the log-mel front end (1x1x21504)',
        1: 'after conv1 + pool 4x3 stride 1x3 (80x1x12)',
        2: 'after conv2 + pool 1x3 (80x1x3)',
    }

    def __init__(self, n_classes):
        super().__init__()
        with self.init_scope():
            self.frontend = LogMelDelta(fs=self.fs, n_fft=1024, hop=512, n_mels=60)
            self.conv1 = ConvBNReLU(2, 80, (57, 6))
            self.conv2 = ConvBNReLU(80, 80, (1, 3))
            self.fc3 = L.Linear(80 * 1 * 3, 5000)
            self.fc4 = L.Linear(5000, 5000)
            self.fc5 = L.Linear(5000, n_classes)

    def stages(self):
        return [self._stage0, self._stage1, self._stage2]

    def _stage0(self, x):
        h = self.conv1(self.frontend(x))
        return fastconv.max_pooling_2d(h, (4, 3), stride=(1, 3), cover_all=False)

    def _stage1(self, h):
        return fastconv.max_pooling_2d(self.conv2(h), (1, 3), stride=(1, 3), cover_all=False)

    def _stage2(self, h):
        h = F.dropout(F.relu(self.fc3(h)))
        h = F.dropout(F.relu(self.fc4(h)))
        return self.fc5(h)
