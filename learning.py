"""The learning methods: one object per ``--learning`` preset (docs/method.md §4.1, §4.11).

A learning method turns one training batch, already on the device, into ``(logits, loss,
label)``: the updater (``training.MixingUpdater``) calls it once per step and then runs the
backward pass and the optimizer. Everything a method decides lives in its object: for the
mixing methods the draw of the target ratios r, the phase shifts, the mixing point and the
gains, the :class:`intermix.Mixer`, the soft targets and the loss, each computed by the
equations of :mod:`intermix`.

:data:`LEARNING` is the registry behind ``--learning``: each row names the method class and
its defaults (where it mixes, the combination, the weights), in the flags' own words
(``--eligible``, ``--combination``, ``--mixup_type``). A new mixing method is a combination in
``intermix.COMBINATIONS`` or a class here, plus its row.
"""
import collections

import numpy as np

import compat  # noqa: F401  (numpy.sctypes for Chainer on NumPy 2)
import chainer
import chainer.functions as F

import intermix

__all__ = ['Step', 'Standard', 'PairMixing', 'Row', 'LEARNING', 'MIXING', 'GAIN_SOURCES', 'build']

#: Where the gains of the sound mixing ratio come from at a hidden point (``--gainSource``).
GAIN_SOURCES = ('input', 'hidden')

Step = collections.namedtuple('Step', 'logits loss label')
Step.__doc__ = """What a learning method returns for one batch: ``logits`` (Variable (N, C)),
``loss`` (scalar Variable) and ``label`` (int array (N,) the error is counted against: the class
for standard learning, the argmax of the soft target when mixing)."""


class Standard:
    """Standard learning: softmax cross-entropy on single clips (docs/method.md §4.1).

    The batch is ``(x, y)``: x float32 (N, T) waveforms, y int32 (N,) classes."""

    mixing = False  # the training set yields single clips (dataset.TrainDataset)

    @classmethod
    def from_settings(cls, opt):
        """The method of resolved settings (``opts.parse``)."""
        return cls()

    def __call__(self, model, arrays, rng):
        """One batch: ``arrays = (x, y)``; ``rng`` (unused) is the step's Generator."""
        x, y = arrays
        logits = model(x[:, None, None, :])
        return Step(logits, F.softmax_cross_entropy(logits, y), y)


class PairMixing:
    """Learning from mixed pairs: BC learning, SpeechMix and InterMix (docs/method.md §4.2-4.11).

    The batch is ``(x_i, x_j, y_i, y_j)``: B pairs of float32 (B, T) waveforms and int32 (B,)
    classes. They become 2B rows ``[x_i; x_j]``; row k is mixed with row ``partner[k]`` (k +- B)
    with its own ``r ~ U(0, 1)``. With a combination that has a phase (interference), every row
    is first shifted by ``phi ~ U(-pi/2, pi/2)``. One mixing point per batch is drawn uniformly
    from ``eligible``. With ``mixup_type='sound'`` the mixing ratio uses the maximum A-weighted
    gain of each (shifted) input row, or of the hidden tensor with ``gain_source='hidden'`` at a
    hidden point. The loss is the KL divergence to ``r y_i + (1 - r) y_j``.

    Args:
        eligible (list of int): the mixing points L (``--eligible``).
        combination (str): a key of ``intermix.COMBINATIONS`` (``--combination``).
        mixup_type (str): 'sound' (ratio p from the gains, normalised) or 'normal' (plain mixup
            weights r, 1 - r) (``--mixup_type``).
        gain_source (str): 'input' or 'hidden' (``--gainSource``).
        fs (int): sample rate of the input waveforms (Hz), for the A-weighted gains.
        n_classes (int): number of classes C.

    Raises ValueError for an unknown combination or mixup_type, or no eligible point.

    Random numbers, drawn from the step's Generator in this order: r (2B,), the phases (2B,)
    when the combination has a phase, then the mixing point.
    """

    mixing = True  # the training set yields pairs (dataset.PairDataset)

    def __init__(self, eligible, combination, mixup_type, gain_source, fs, n_classes):
        intermix.check_mixing(combination, mixup_type, 'PairMixing')
        if gain_source not in GAIN_SOURCES:
            raise ValueError(f'PairMixing: unknown gain_source {gain_source!r} (known: '
                             f'{", ".join(GAIN_SOURCES)})')
        if not eligible:
            raise ValueError('no eligible mixing point')
        self.eligible = list(eligible)
        self.combination = combination
        self.mixup_type = mixup_type
        self.gain_source = gain_source
        self.fs = int(fs)
        self.n_classes = int(n_classes)

    @classmethod
    def from_settings(cls, opt):
        """The method of resolved settings (``opts.parse``)."""
        return cls(opt.eligible, opt.combination, opt.mixup_type, opt.gainSource, opt.fs,
                   opt.nClasses)

    def draw(self, rng, n):
        """The step's random draws for n rows: ``(r, phase, point)``; r float64 (n,) in [0, 1),
        phase float64 (n,) radians or None when the combination has no phase, point an int."""
        r = rng.uniform(0.0, 1.0, n)
        phase = None
        if intermix.COMBINATIONS[self.combination].phase_shift:
            phase = rng.uniform(-np.pi / 2, np.pi / 2, n)
        point = int(rng.choice(self.eligible))
        return r, phase, point

    def __call__(self, model, arrays, rng):
        """One batch of pairs (class docstring); returns :data:`Step`."""
        x_i, x_j, y_i, y_j = arrays
        xp = chainer.backend.get_array_module(x_i)
        x = xp.concatenate([x_i, x_j])
        y = xp.concatenate([y_i, y_j])
        n = len(x)
        half = n // 2
        partner = xp.asarray(np.concatenate([np.arange(half, n), np.arange(half)]).astype(np.int32))
        r, phase, point = self.draw(rng, n)
        r = xp.asarray(r)
        if phase is not None:
            phase = xp.asarray(phase)
            x = intermix.phase_shift(x, phase)
        gains = None  # None: the Mixer reads gains off the hidden tensor (--gainSource hidden)
        if self.mixup_type == 'sound' and (self.gain_source == 'input' or point == 0):
            gains = intermix.compute_gain(x, self.fs).max(axis=-1)
        mixer = intermix.Mixer(point, partner, r, combination=self.combination,
                               mixup_type=self.mixup_type, gains=gains, phase=phase)
        logits = model(x[:, None, None, :], mixer)
        eye = xp.eye(self.n_classes, dtype=np.float32)
        target = intermix.mix_targets(eye[y], eye[y[partner]], r)
        loss = intermix.kl_divergence(logits, target)
        return Step(logits, loss, target.argmax(axis=1))


Row = collections.namedtuple('Row', 'method points combination mixup_type')
Row.__doc__ = """One ``--learning`` preset: the method class, where it mixes by default ('input':
point 0, 'hidden': every hidden mixing point of the network; None: no mixing), its
``--combination`` (a key of ``intermix.COMBINATIONS``) and its ``--mixup_type`` ('sound' or
'normal'); ``--eligible``, ``--combination`` and ``--mixup_type`` override the last three."""

# The learning-method registry (docs/method.md §4.1): --learning's choices and their parts.
LEARNING = {
    'standard': Row(Standard, None, None, None),
    'bc': Row(PairMixing, 'input', 'linear', 'sound'),
    'speechmix': Row(PairMixing, 'hidden', 'linear', 'sound'),
    'intermix': Row(PairMixing, 'hidden', 'interference', 'sound'),
    'intermix-vanilla': Row(PairMixing, 'input', 'interference', 'normal'),
    'intermix-hidden': Row(PairMixing, 'hidden', 'interference', 'normal'),
}
MIXING = [name for name, row in LEARNING.items() if row.points is not None]


def build(opt):
    """The learning method object of resolved settings (``opts.parse``: ``opt.learning`` and
    the flags its row reads). Raises KeyError for a learning method not in :data:`LEARNING`."""
    return LEARNING[opt.learning].method.from_settings(opt)
