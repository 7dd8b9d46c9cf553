"""docs/method.md §3 preprocessing (utils.py, dataset.py): shapes, bounds, hand-checked values."""
import numpy as np
import pytest

import dataset
import utils


def test_multi_crop_takes_equal_strides_from_start_to_end():
    x = np.arange(100.0)
    crops = utils.multi_crop(x, 10, 10)
    assert crops.shape == (10, 10)
    assert list(crops[:, 0]) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]  # stride (100-10)//9
    assert utils.multi_crop(x, 100, 3).shape == (3, 100)
    assert list(utils.multi_crop(x, 10, 1)[:, 0]) == [0]
    with pytest.raises(ValueError):
        utils.multi_crop(x, 101, 2)


def test_random_crop_is_a_window_of_the_input():
    rng = np.random.default_rng(0)
    x = np.arange(50.0)
    for _ in range(20):
        c = utils.random_crop(x, 7, rng)
        assert len(c) == 7 and np.all(np.diff(c) == 1) and 0 <= c[0] <= 43


def test_random_gain_stays_within_6_db_and_scale_within_1_25():
    rng = np.random.default_rng(0)
    x = np.ones(1000)
    for _ in range(50):
        g = utils.random_gain(x, 6.0, rng)[0]
        assert 10 ** (-6 / 20) <= g <= 10 ** (6 / 20)
        n = len(utils.random_scale(x, 1.25, rng))
        assert int(1000 / 1.25) <= n <= int(1000 * 1.25)


def test_random_scale_by_linear_interpolation_of_a_ramp_stays_a_ramp():
    class Fixed:
        def uniform(self, a, b):
            return 1.0  # scale = 1.25
    y = utils.random_scale(np.arange(100.0), 1.25, Fixed())
    assert len(y) == 125
    np.testing.assert_allclose(y[:120], np.arange(120) / 1.25)


def test_train_preprocessing_pads_crops_and_normalises():
    pre = dataset.Preprocessor(input_length=20)
    rng = np.random.default_rng(0)
    clip = np.full(5, 16384, dtype=np.int16)  # shorter than T: zero padding fills the rest
    x = pre.train(clip, rng)
    assert x.dtype == np.float32 and x.shape == (20,)
    assert set(np.unique(x)) <= {0.0, 0.5}
    assert np.count_nonzero(x) <= 5


def test_test_preprocessing_gives_n_crops_of_the_padded_clip():
    pre = dataset.Preprocessor(input_length=4, n_crops=3)
    crops = pre.test(np.array([32767, -32768, 16384, 0, 8192, 1], dtype=np.int16))
    padded = np.array([0, 0, 32767, -32768, 16384, 0, 8192, 1, 0, 0]) / 32768
    assert crops.shape == (3, 4) and crops.dtype == np.float32
    np.testing.assert_allclose(crops, np.stack([padded[0:4], padded[3:7], padded[6:10]]),
                               rtol=1e-6)


def test_pairs_are_always_of_different_classes():
    sounds = [np.full(30, i, dtype=np.int16) for i in range(6)]
    ds = dataset.PairDataset(sounds, [0, 0, 1, 1, 2, 2], dataset.Preprocessor(10), seed=0)
    assert len(ds) == 3
    for k in range(60):  # 20 epochs of 3 draws
        _, _, y_i, y_j = ds.get_example(k)
        assert y_i != y_j


def test_pairs_need_two_classes():
    with pytest.raises(utils.UserError, match='two classes'):
        dataset.PairDataset([np.ones(5, np.int16)] * 2, [1, 1], dataset.Preprocessor(4))


def test_mean_and_standard_error_by_hand():
    assert utils.mean_and_standard_error([10.0]) == (10.0, 0.0)
    mean, se = utils.mean_and_standard_error([10.0, 12.0, 14.0])
    assert mean == pytest.approx(12.0) and se == pytest.approx(2.0 / np.sqrt(3))


def test_each_draw_is_a_function_of_seed_epoch_and_index_whatever_the_process(monkeypatch):
    import os
    sounds = [np.arange(1000, dtype=np.int16) * (i + 1) for i in range(4)]
    ds = dataset.TrainDataset(sounds, [0, 1, 2, 3], dataset.Preprocessor(100), seed=5)
    again = dataset.TrainDataset(sounds, [0, 1, 2, 3], dataset.Preprocessor(100), seed=5)
    first = [ds.get_example(k)[0] for k in range(12)]  # draws 0-11: epochs 0-2 of 4 clips
    # The same draw again, in another dataset object or another process (a worker), is the same.
    monkeypatch.setattr(os, 'getpid', lambda: 99999)
    assert all(np.array_equal(x, again.get_example(k)[0]) for k, x in enumerate(first))
    assert all(np.array_equal(x, ds.get_example(k)[0]) for k, x in enumerate(first))
    # Draw k is clip k mod 4 (label), and each epoch crops it anew; another seed differs.
    assert [int(ds.get_example(k)[1]) for k in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert not np.array_equal(first[0], first[4]) and not np.array_equal(first[4], first[8])
    other = dataset.TrainDataset(sounds, [0, 1, 2, 3], dataset.Preprocessor(100), seed=6)
    assert not all(np.array_equal(x, other.get_example(k)[0]) for k, x in enumerate(first))


def test_epoch_order_sampler_draws_each_epochs_permutation_from_seed_and_epoch():
    sampler = dataset.EpochOrderSampler(3)
    first = sampler(np.arange(5), 0)            # Chainer's first call: epoch 1
    second = sampler(first, 5)
    third = sampler(second, 2)
    for epoch, order in ((1, first), (2, second), (3, third)):
        assert sorted(order - 5 * epoch) == [0, 1, 2, 3, 4]
    assert not np.array_equal(first - 5, second - 10)
    # Stateless: a new sampler given epoch 2's order (as restored from a snapshot) continues alike.
    assert np.array_equal(dataset.EpochOrderSampler(3)(second, 0), third)
    assert np.array_equal(sampler.order(2, 5), second)
    in_order = dataset.EpochOrderSampler(3, shuffle=False)
    assert in_order(np.arange(5), 0).tolist() == [5, 6, 7, 8, 9]
    assert in_order(in_order(np.arange(5), 0), 0).tolist() == [10, 11, 12, 13, 14]
