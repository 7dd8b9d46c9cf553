"""InterMix: interference-based mixing of sound representations (Sawhney & Neerkaje, ICASSP 2022).

The equations of the four learning methods live here and nowhere else (docs/method.md §4-5):

- A-weighted sound gain and the sound mixing ratio p of BC learning (Tokozume et al. 2018, eq. 3
  of the InterMix paper): :func:`a_weight`, :func:`compute_gain`, :func:`mix_ratio`.
- The random phase shift of InterMix: :func:`phase_shift`.
- Linear mixing (BC learning, SpeechMix) and interference mixing (InterMix, eqs. 4-5):
  :func:`linear_mix`, :func:`interference_mix`.
- Soft targets and the KL-divergence loss (eqs. 2 and 6): :func:`mix_targets`,
  :func:`kl_divergence`.
- :class:`Mixer`, the one object a network calls at its mixing point.

Every function takes NumPy or CuPy arrays (and Chainer Variables where a gradient flows) and
computes on the array's own device.
"""
import collections
import functools
import math

import numpy as np

import compat  # noqa: F401  (numpy.sctypes for Chainer on NumPy 2)
import chainer
import chainer.functions as F

__all__ = ['a_weight', 'n_fft_for', 'compute_gain', 'mix_ratio', 'phase_shift', 'linear_mix',
           'interference_mix', 'mix_targets', 'kl_divergence', 'normalised_weights', 'Mixer',
           'COMBINATIONS', 'MIXUP_TYPES']


def _xp(*arrays):
    return chainer.backend.get_array_module(*arrays)


def a_weight(fs, n_fft, min_db=-80.0):
    """A-weighting curve in dB at the rfft bin frequencies (IEC 61672-1, as in BC learning).

    Args:
        fs (int or float): sample rate in Hz.
        n_fft (int): FFT length in samples; the bins are ``np.linspace(0, fs/2, n_fft//2 + 1)`` Hz.
        min_db (float): floor in dB (the 0 Hz bin, where the curve is -inf, gets this value).

    Returns:
        numpy.ndarray: float64, shape ``(n_fft//2 + 1,)``, gain in dB; 0 dB at 1 kHz by the
        standard's +2.0 dB normalisation.

    Raises:
        ValueError: if ``fs`` or ``n_fft`` is not positive.
    """
    return _a_weight_cached(float(fs), int(n_fft), float(min_db)).copy()


@functools.lru_cache(maxsize=32)
def _a_weight_cached(fs, n_fft, min_db):
    if fs <= 0 or n_fft <= 0:
        raise ValueError(f'a_weight: fs and n_fft must be positive, got fs={fs}, n_fft={n_fft}')
    freq = np.linspace(0, fs / 2, n_fft // 2 + 1)
    freq_sq = freq ** 2
    freq_sq[0] = 1.0  # log10 of 0 is -inf: the bin is floored below anyway
    weight = 2.0 + 20.0 * (2 * np.log10(12194.0) + 2 * np.log10(freq_sq)
                           - np.log10(freq_sq + 12194.0 ** 2)
                           - np.log10(freq_sq + 20.6 ** 2)
                           - 0.5 * np.log10(freq_sq + 107.7 ** 2)
                           - 0.5 * np.log10(freq_sq + 737.9 ** 2))
    weight[0] = min_db
    return np.maximum(weight, min_db)


def n_fft_for(fs):
    """FFT length (samples) of the gain frames at sample rate ``fs`` (Hz).

    2048 at 16 kHz and 4096 at 44.1 kHz as in BC learning; for other rates the smallest power of
    two >= 0.092 * fs (the same ~92 ms of sound). Raises ValueError for fs <= 0.
    """
    if fs <= 0:
        raise ValueError(f'n_fft_for: fs must be positive, got {fs}')
    return 1 << max(0, math.ceil(math.log2(0.092 * fs)))


def compute_gain(sound, fs, min_db=-80.0):
    """A-weighted frame gains of sounds, in dB (Tokozume et al. 2018, section 3.3).

    Frames of ``n_fft = n_fft_for(fs)`` samples with hop ``n_fft // 2`` and a periodic Hann
    window; each frame's power spectrum ``|rfft|^2`` is weighted by ``10**(a_weight/10)`` and
    summed; the sum is floored at ``10**(min_db/10)`` and converted to dB. A sound shorter than
    ``n_fft`` is zero-padded to one frame.

    Args:
        sound: NumPy/CuPy array, shape ``(..., T)``, the waveform (any scale; gains are relative).
        fs (int): sample rate in Hz.
        min_db (float): floor in dB.

    Returns:
        Array on the input's device, float64, shape ``(..., n_frames)`` with
        ``n_frames = 1 + (max(T, n_fft) - n_fft) // (n_fft // 2)``, gains in dB.

    Raises:
        ValueError: if ``sound`` has no samples axis or ``fs`` is not positive.
    """
    xp = _xp(sound)
    sound = xp.asarray(sound, dtype=np.float64)
    if sound.ndim == 0:
        raise ValueError('compute_gain: sound must have a samples axis (..., T)')
    n_fft = n_fft_for(fs)
    hop = n_fft // 2
    length = sound.shape[-1]
    if length < n_fft:
        pad = [(0, 0)] * (sound.ndim - 1) + [(0, n_fft - length)]
        sound = xp.pad(sound, pad, mode='constant')
        length = n_fft
    n_frames = 1 + (length - n_fft) // hop
    # hop = n_fft/2: frame k is half-blocks k and k+1 side by side.
    blocks = sound[..., :(n_frames + 1) * hop].reshape(sound.shape[:-1] + (n_frames + 1, hop))
    frames = xp.concatenate([blocks[..., :-1, :], blocks[..., 1:, :]], axis=-1)
    window = xp.asarray(np.hanning(n_fft + 1)[:-1])
    spec = xp.fft.rfft(frames * window, axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    weight = xp.asarray(10.0 ** (_a_weight_cached(float(fs), n_fft, float(min_db)) / 10.0))
    gain = (power * weight).sum(axis=-1)
    gain = xp.maximum(gain, 10.0 ** (min_db / 10.0))
    return 10.0 * xp.log10(gain)


def mix_ratio(gain_i, gain_j, r):
    """Sound mixing ratio p of BC learning (eq. 3): ``p = 1 / (1 + 10**((G_i - G_j)/20) * (1-r)/r)``.

    Computed as ``r / (r + 10**((G_i - G_j)/20) * (1 - r))``, the same value, defined at r = 0
    (p = 0) and r = 1 (p = 1). p is the weight of sound i such that the *perceived* share of
    sound i in the mix is r, given the sounds' maximum A-weighted gains G (dB).

    Args:
        gain_i, gain_j: arrays (or floats) of gains in dB, broadcastable with ``r``.
        r: array or float in [0, 1], the mixing ratio of the targets.

    Returns:
        Array of the broadcast shape (float64 for float inputs), values in [0, 1].
    """
    xp = _xp(gain_i, gain_j, r)
    gain_i, gain_j, r = (xp.asarray(v, dtype=np.float64) for v in (gain_i, gain_j, r))
    k = 10.0 ** ((gain_i - gain_j) / 20.0)
    return r / (r + k * (1.0 - r))


def normalised_weights(p):
    """Weights ``w_i = p/N, w_j = (1-p)/N`` with ``N = sqrt(p**2 + (1-p)**2)`` (docs/method.md §4).

    The normalisation keeps the mix's power near that of the inputs (Tokozume et al. 2018).
    Returns a pair of arrays shaped like ``p``.
    """
    xp = _xp(p)
    norm = xp.sqrt(p ** 2 + (1.0 - p) ** 2)
    return p / norm, (1.0 - p) / norm


def phase_shift(sound, phi):
    """Shift the phase of every frequency component of ``sound`` by ``phi`` (InterMix).

    ``irfft(rfft(sound) * exp(1j*phi), n=T)``: a constant phase rotation of the analytic signal.
    The DC and Nyquist bins, being real, keep only ``cos(phi)`` of their amplitude; a signal
    without them keeps its energy (Parseval).

    Args:
        sound: NumPy/CuPy array, shape ``(..., T)``, float.
        phi: array or float, shape ``sound.shape[:-1]`` (or broadcastable to it), radians.

    Returns:
        Array shaped and typed like ``sound``, on its device.
    """
    xp = _xp(sound)
    length = sound.shape[-1]
    phi = xp.asarray(phi, dtype=np.float64)
    spectrum = xp.fft.rfft(sound, axis=-1)
    rotated = spectrum * xp.exp(1j * phi)[..., None]
    return xp.fft.irfft(rotated, n=length, axis=-1).astype(sound.dtype, copy=False)


def _broadcast_weight(w, h):
    """Reshape per-example weights (N,) to (N, 1, ..., 1) in h's dtype and on h's device."""
    xp = _xp(h)
    dtype = h.dtype
    w = xp.asarray(w, dtype=dtype)
    return w.reshape(w.shape + (1,) * (h.ndim - w.ndim))


def linear_mix(h_i, h_j, w_i, w_j):
    """Linear mixing of features (BC learning at the input, SpeechMix in hidden layers).

    ``h = w_i * h_i + w_j * h_j``.

    Args:
        h_i, h_j: Variables or arrays, shape ``(N, ...)``, same shape and dtype.
        w_i, w_j: arrays, shape ``(N,)`` (or scalars), broadcast over the feature axes; no
            gradient flows into them.

    Returns:
        chainer.Variable shaped like ``h_i``.

    Raises:
        ValueError: if ``h_i`` and ``h_j`` differ in shape.
    """
    h_i, h_j = chainer.as_variable(h_i), chainer.as_variable(h_j)
    if h_i.shape != h_j.shape:
        raise ValueError(f'linear_mix: shapes differ: {h_i.shape} vs {h_j.shape}')
    return h_i * _broadcast_weight(w_i, h_i) + h_j * _broadcast_weight(w_j, h_j)


def interference_mix(h_i, h_j, w_i, w_j, phase_diff):
    """Interference mixing of features (InterMix, eqs. 4-5).

    With ``a = w_i * h_i`` and ``b = w_j * h_j``:
    ``h = a + b + 2 * sign(a*b) * sqrt(|a*b|) * cos(phase_diff)``,
    the superposition of two waves of amplitudes a and b whose phases differ by ``phase_diff``.
    ``sign`` keeps the formula defined for signed features (the raw waveform at layer 0). The
    square-root term carries no gradient (its derivative is unbounded where a*b -> 0, e.g. after
    ReLU); gradients flow through ``a + b`` and so equal those of :func:`linear_mix`.

    Args:
        h_i, h_j: Variables or arrays, shape ``(N, ...)``.
        w_i, w_j: arrays, shape ``(N,)`` (or scalars), broadcast over the feature axes.
        phase_diff: array, shape ``(N,)`` (or scalar), radians, ``phi_i - phi_j``.

    Returns:
        chainer.Variable shaped like ``h_i``.
    """
    h_i, h_j = chainer.as_variable(h_i), chainer.as_variable(h_j)
    if h_i.shape != h_j.shape:
        raise ValueError(f'interference_mix: shapes differ: {h_i.shape} vs {h_j.shape}')
    a = h_i * _broadcast_weight(w_i, h_i)
    b = h_j * _broadcast_weight(w_j, h_j)
    xp = _xp(a)
    ab = a.array * b.array
    cos = _broadcast_weight(xp.cos(xp.asarray(phase_diff, dtype=np.float64)), a.array)
    cross = 2 * xp.sign(ab) * xp.sqrt(xp.abs(ab)) * cos
    return a + b + cross.astype(a.dtype, copy=False)


def mix_targets(y_i, y_j, r):
    """Soft targets of mixed examples (eq. 2): ``r * y_i + (1 - r) * y_j``.

    Args:
        y_i, y_j: arrays, shape ``(N, C)``, one-hot or soft targets.
        r: array, shape ``(N,)``, the ratio of the *targets* (always r, never p).

    Returns:
        Float array ``(N, C)``: float32 for integer or float32 targets, float64 for float64.
    """
    xp = _xp(y_i)
    dtype = np.result_type(y_i.dtype, np.float32)
    r = xp.asarray(r, dtype=dtype)[:, None]
    return r * y_i.astype(dtype, copy=False) + (1 - r) * y_j.astype(dtype, copy=False)


def kl_divergence(logits, soft_target):
    """KL divergence ``KL(t || softmax(logits))`` averaged over the batch (eq. 6), 0·log 0 = 0.

    Args:
        logits: Variable or array, shape ``(N, C)``, unnormalised scores.
        soft_target: array, shape ``(N, C)``, rows summing to 1.

    Returns:
        Scalar chainer.Variable: ``mean_n sum_c t (log t - log_softmax(logits))``. Its gradient
        with respect to the logits is ``(softmax(logits) - t) / N``.
    """
    logits = chainer.as_variable(logits)
    xp = _xp(logits)
    t = xp.asarray(soft_target, dtype=logits.dtype)
    positive = t > 0
    entropy_term = xp.where(positive, t * xp.log(xp.where(positive, t, 1)), 0).sum()
    cross_entropy = -F.sum(t * F.log_softmax(logits))
    return (cross_entropy + entropy_term) / logits.shape[0]


Combination = collections.namedtuple('Combination', 'mix phase_shift description')
Combination.__doc__ = """One way of combining the weighted features of a pair (``--combination``).

mix(h_i, h_j, w_i, w_j, phase_diff) -> Variable: the mixed tensor (phase_diff: array (N,) of
phi_i - phi_j in radians, unused by combinations without a phase); phase_shift: whether the clips
get random phase shifts before the network (:func:`phase_shift`); description: one line for
``--help``.
"""

#: The mixing weights (``--mixup_type``): 'sound' (p from the gains, normalised; §4.6-4.7) or
#: 'normal' (plain mixup weights r, 1 - r).
MIXUP_TYPES = ('sound', 'normal')

# The combination registry, read by :class:`Mixer`, ``opts`` (``--combination``) and the
# learning methods (``learning.PairMixing``).
COMBINATIONS = {
    'linear': Combination(
        lambda h_i, h_j, w_i, w_j, phase_diff: linear_mix(h_i, h_j, w_i, w_j), False,
        'w_i h_i + w_j h_j (BC learning, SpeechMix)'),
    'interference': Combination(
        interference_mix, True,
        'a + b + 2 sign(ab) sqrt|ab| cos(phi_i - phi_j), a = w_i h_i, b = w_j h_j, after random '
        'phase shifts of the clips (InterMix)'),
}


def check_mixing(combination, mixup_type, who='mixing'):
    """Raise ValueError (prefixed by ``who``) unless ``combination`` is a key of
    :data:`COMBINATIONS` and ``mixup_type`` one of :data:`MIXUP_TYPES`."""
    if combination not in COMBINATIONS:
        raise ValueError(f'{who}: unknown combination {combination!r} (known: '
                         f'{", ".join(sorted(COMBINATIONS))})')
    if mixup_type not in MIXUP_TYPES:
        raise ValueError(f'{who}: unknown mixup_type {mixup_type!r} (known: '
                         f'{", ".join(MIXUP_TYPES)})')


class Mixer:
    """Mixes a batch at one mixing point: the hook a network calls (``models.common.StagedNet.forward``).

    The batch holds N clips; row k is mixed with row ``partner[k]``: ``h_i = h[k]``,
    ``h_j = h[partner[k]]``, with its own target ratio ``r[k]``. The weights are

    - ``mixup_type='sound'``: p = :func:`mix_ratio` of the gains of the two clips, then
      :func:`normalised_weights` (BC learning, SpeechMix and InterMix);
    - ``mixup_type='normal'``: ``w_i = r``, ``w_j = 1 - r`` (plain mixup weights).

    and the combination is :func:`linear_mix` or :func:`interference_mix` (with ``cos(phi_i -
    phi_j)`` from the clips' phase shifts).

    Args:
        point (int): mixing point of the network (0 = the input waveform).
        partner: int array (N,), a permutation of ``range(N)``.
        r: array (N,), target ratios in [0, 1].
        combination (str): a key of :data:`COMBINATIONS` ('linear' or 'interference').
        mixup_type (str): 'sound' or 'normal' (``--mixup_type``, :data:`MIXUP_TYPES`).
        gains: array (N,) of the input clips' maximum A-weighted gains (dB) — the paper's G.
            If None with ``mixup_type='sound'``, the gains are computed from the tensor at the
            mixing point, flattened per example, as if it were audio at ``hidden_gain_fs`` Hz (the
            behaviour of the reference SpeechMix/InterMix code).
        phase: array (N,) of the phase shifts applied to the clips (radians); None means 0.
        hidden_gain_fs (int): sample rate assumed for gains of hidden tensors (44100 as the
            reference code).

    After a call, ``self.p`` holds the mixing ratios p actually used (N,) (r for 'normal').
    """

    def __init__(self, point, partner, r, combination='interference', mixup_type='sound',
                 gains=None, phase=None, hidden_gain_fs=44100):
        check_mixing(combination, mixup_type, 'Mixer')
        self.point = int(point)
        self.partner = partner
        self.r = r
        self.combination = combination
        self.mixup_type = mixup_type
        self.gains = gains
        self.phase = phase
        self.hidden_gain_fs = hidden_gain_fs
        self.p = None

    def weights(self, h):
        """(w_i, w_j) for the tensor ``h`` (N, ...) at the mixing point, each (N,)."""
        xp = _xp(h)
        r = xp.asarray(self.r, dtype=np.float64)
        partner = xp.asarray(self.partner)
        if self.mixup_type == 'normal':
            self.p = r
            return r, 1.0 - r
        gains = self.gains
        if gains is None:
            flat = chainer.as_array(h).reshape(h.shape[0], -1)
            gains = compute_gain(flat, self.hidden_gain_fs).max(axis=-1)
        gains = xp.asarray(gains, dtype=np.float64)
        self.p = mix_ratio(gains, gains[partner], r)
        return normalised_weights(self.p)

    def __call__(self, h):
        """The mixed tensor (Variable, shape of ``h``) for the tensor ``h`` (N, ...)."""
        xp = _xp(h)
        w_i, w_j = self.weights(h)
        partner = xp.asarray(self.partner)
        h_j = F.permutate(h, partner, axis=0)
        if self.phase is None:
            phase_diff = xp.zeros(h.shape[0])
        else:
            phase = xp.asarray(self.phase, dtype=np.float64)
            phase_diff = phase - phase[partner]
        return COMBINATIONS[self.combination].mix(h, h_j, w_i, w_j, phase_diff)
