"""The learning-method objects of learning.py (docs/method.md §4.1-4.11): one step's computation."""
import numpy as np
import pytest

import compat  # noqa: F401
import chainer
import chainer.functions as F

import intermix
import learning
import opts


class MixAtInput(chainer.Chain):
    """A stand-in network with one mixing point (0, the input): logits = mean over time of the
    (mixed) waveform times a fixed (1, C) row. Keeps the mixer it was called with."""

    def __init__(self, n_classes):
        super().__init__()
        self.row = np.linspace(-1.0, 1.0, n_classes, dtype=np.float32)[None, :]
        self.mixer = None

    def forward(self, x, mixer=None):
        self.mixer = mixer
        if mixer is not None:
            assert mixer.point == 0
            x = mixer(x)
        h = F.mean(F.reshape(x, (x.shape[0], -1)), axis=1, keepdims=True)
        return F.matmul(h, self.row)


def batch(b=3, t=2048, seed=0):
    rng = np.random.default_rng(seed)
    x_i = (0.1 * rng.standard_normal((b, t))).astype(np.float32)
    x_j = (0.1 * rng.standard_normal((b, t))).astype(np.float32)
    return x_i, x_j, np.arange(b, dtype=np.int32), np.arange(b, 2 * b, dtype=np.int32)


def test_every_learning_choice_has_a_row_and_builds_its_method():
    assert list(opts.LEARNING) == list(learning.LEARNING)
    for name, row in learning.LEARNING.items():
        opt = opts.parse(['--data', 'D', '--dataset', 'esc10', '--netType', 'envnetv2',
                          '--learning', name])
        method = learning.build(opt)
        assert isinstance(method, row.method)
        assert method.mixing == (row.points is not None) == opt.mixing
        if method.mixing:
            assert (method.combination, method.mixup_type) == (row.combination, row.mixup_type)
            assert method.eligible == ([0] if row.points == 'input' else [1, 2, 3, 4])


@pytest.mark.parametrize('combination,phased', [('linear', False), ('interference', True)])
def test_draws_come_from_the_step_stream_in_the_documented_order(combination, phased):
    method = learning.PairMixing([1, 3, 4], combination, 'sound', 'input', 16000, 10)
    r, phase, point = method.draw(np.random.default_rng(7), 6)
    ref = np.random.default_rng(7)
    np.testing.assert_array_equal(r, ref.uniform(0.0, 1.0, 6))
    if phased:
        np.testing.assert_array_equal(phase, ref.uniform(-np.pi / 2, np.pi / 2, 6))
        assert np.all(np.abs(phase) <= np.pi / 2)
    else:
        assert phase is None
    assert point == int(ref.choice([1, 3, 4]))


@pytest.mark.parametrize('combination', ['linear', 'interference'])
def test_a_mixing_step_pairs_rows_mixes_targets_and_takes_the_kl_loss(combination):
    n_classes, b = 6, 3
    method = learning.PairMixing([0], combination, 'sound', 'input', 16000, n_classes)
    model = MixAtInput(n_classes)
    x_i, x_j, y_i, y_j = batch(b)
    logits, loss, label = method(model, (x_i, x_j, y_i, y_j), np.random.default_rng(3))
    r, phase, point = method.draw(np.random.default_rng(3), 2 * b)
    mixer = model.mixer
    np.testing.assert_array_equal(mixer.partner, [3, 4, 5, 0, 1, 2])  # row k with k +- B
    np.testing.assert_array_equal(mixer.r, r)
    x = np.concatenate([x_i, x_j])
    if phase is not None:
        x = intermix.phase_shift(x, phase)
    # the gains are those of the (shifted) input rows, the paper's G
    np.testing.assert_allclose(mixer.gains, intermix.compute_gain(x, 16000).max(axis=-1))
    y = np.concatenate([y_i, y_j])
    eye = np.eye(n_classes, dtype=np.float32)
    target = r[:, None] * eye[y] + (1 - r[:, None]) * eye[np.concatenate([y_j, y_i])]
    np.testing.assert_array_equal(label, target.argmax(axis=1))
    p = np.exp(logits.array - logits.array.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    kl = np.where(target > 0, target * np.log(np.where(target > 0, target, 1) / p), 0)
    assert float(loss.array) == pytest.approx(kl.sum(axis=1).mean(), rel=1e-5)


def test_standard_step_is_softmax_cross_entropy_on_single_clips():
    model = MixAtInput(4)
    x = batch(4)[0]
    y = np.array([0, 3, 1, 2], np.int32)
    logits, loss, label = learning.Standard()(model, (x, y), np.random.default_rng(0))
    assert model.mixer is None
    np.testing.assert_array_equal(label, y)
    assert float(loss.array) == pytest.approx(
        float(F.softmax_cross_entropy(logits.array, y).array))


@pytest.mark.parametrize('kwargs,word', [
    (dict(combination='cubic'), 'combination'), (dict(mixup_type='mixup'), 'mixup_type'),
    (dict(gain_source='output'), 'gain_source'), (dict(eligible=[]), 'eligible')])
def test_bad_settings_are_rejected_by_name(kwargs, word):
    args = dict(eligible=[0], combination='linear', mixup_type='sound', gain_source='input',
                fs=16000, n_classes=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        learning.PairMixing(**args)
