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
    for i in range(60):
        _, _, y_i, y_j = ds.get_example(i % 3)
        assert y_i != y_j


def test_pairs_need_two_classes():
    with pytest.raises(utils.UserError, match='two classes'):
        dataset.PairDataset([np.ones(5, np.int16)] * 2, [1, 1], dataset.Preprocessor(4))


def test_mean_and_standard_error_by_hand():
    assert utils.mean_and_standard_error([10.0]) == (10.0, 0.0)
    mean, se = utils.mean_and_standard_error([10.0, 12.0, 14.0])
    assert mean == pytest.approx(12.0) and se == pytest.approx(2.0 / np.sqrt(3))


def test_worker_processes_draw_their_own_random_streams(monkeypatch):
    import os
    sounds = [np.arange(1000, dtype=np.int16) * (i + 1) for i in range(4)]
    ds = dataset.TrainDataset(sounds, [0, 1, 2, 3], dataset.Preprocessor(100), seed=5)
    again = dataset.TrainDataset(sounds, [0, 1, 2, 3], dataset.Preprocessor(100), seed=5)
    main_stream = [ds.get_example(0)[0] for _ in range(3)]
    # The same seed in the same process is reproducible.
    assert all(np.array_equal(a, again.get_example(0)[0]) for a in main_stream)
    # A forked worker (another pid) holding the same state draws differently from the parent,
    # and two workers differ from each other.
    worker_a = dataset.TrainDataset(sounds, [0, 1, 2, 3], dataset.Preprocessor(100), seed=5)
    worker_b = dataset.TrainDataset(sounds, [0, 1, 2, 3], dataset.Preprocessor(100), seed=5)
    pid = os.getpid()
    monkeypatch.setattr(os, 'getpid', lambda: pid + 1)
    a = [worker_a.get_example(0)[0] for _ in range(3)]
    monkeypatch.setattr(os, 'getpid', lambda: pid + 2)
    b = [worker_b.get_example(0)[0] for _ in range(3)]
    assert not all(np.array_equal(x, y) for x, y in zip(a, main_stream))
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))
