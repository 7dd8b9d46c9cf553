"""FGSM evaluation (Table 3): the perturbation is the sign of the input gradient of the loss."""
import numpy as np

import compat  # noqa: F401
import chainer
import chainer.functions as F
import chainer.links as L

import evaluation


class Tiny(chainer.Chain):
    """A small network on (M, 1, 1, T) inputs with BN (test mode matters) and a non-linearity."""

    def __init__(self, length=16, n_classes=3):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(1, 4, (1, 3))
            self.bn = L.BatchNormalization(4)
            self.fc = L.Linear(4 * (length - 2), n_classes)

    def forward(self, x):
        return self.fc(F.tanh(self.bn(self.conv(x))))


def loss_of(model, x, y):
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return float(F.sum(F.softmax_cross_entropy(model(x), y, reduce='no')).array)


def test_fgsm_sign_matches_finite_differences_of_the_loss():
    rng = np.random.default_rng(0)
    model = Tiny()
    model.to_device('@numpy')
    for p in model.params():
        p.array = p.array.astype(np.float64)
    model.bn.avg_mean = rng.standard_normal(4)
    model.bn.avg_var = rng.uniform(0.5, 2.0, 4)
    x = rng.standard_normal((2, 1, 1, 16))
    y = np.array([0, 2], np.int32)
    sign = evaluation.fgsm_sign(model, x, y)
    assert sign.shape == x.shape and set(np.unique(sign)) <= {-1.0, 0.0, 1.0}
    h = 1e-6
    checked = 0
    for index in [(0, 0, 0, 0), (0, 0, 0, 7), (1, 0, 0, 3), (1, 0, 0, 15), (0, 0, 0, 12)]:
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        slope = (loss_of(model, plus, y) - loss_of(model, minus, y)) / (2 * h)
        if abs(slope) > 1e-6:
            assert sign[index] == np.sign(slope), index
            checked += 1
    assert checked >= 3
    # The parameters' gradients are left clean.
    assert all(p.grad is None for p in model.params())


def test_epsilon_zero_gives_the_clean_error_and_large_epsilon_hurts():
    rng = np.random.default_rng(1)
    model = Tiny(length=16)
    crops = rng.standard_normal((6, 4, 16)).astype(np.float32)   # 6 clips x 4 crops
    labels = rng.integers(0, 3, 6).astype(np.int32)
    data = [(crops[i], labels[i]) for i in range(6)]
    iterator = chainer.iterators.SerialIterator(data, 4, repeat=False, shuffle=False)
    device = chainer.get_device('@numpy')
    clean = evaluation.ten_crop_error(model, iterator, chainer.dataset.concat_examples, device)
    result = evaluation.fgsm_errors(model, iterator, chainer.dataset.concat_examples, device,
                                  [0.0, 10.0])
    assert result['clean'] == clean
    assert result['eps=0'] == clean
    assert result['eps=10'] >= clean
