"""Datasets for training and testing (docs/method.md §2-4): fold splits, preprocessing, pairs for mixing.

The generated files ``DATA/{dataset}/wav{fs//1000}.npz`` (see ``datagen.npzio``) hold int16 clips per
fold. For split k, fold k is the test set and the other folds the training set.

Three ``chainer.dataset.DatasetMixin`` classes:

- :class:`TrainDataset` — standard learning: one preprocessed crop and its label.
- :class:`PairDataset` — mixing methods: two clips of different classes and their labels; the
  mixing itself happens inside the network (``intermix.Mixer``), at the input or a hidden layer.
- :class:`TestDataset` — ``nCrops`` crops at equal strides of a whole clip, and its label.

The training iterator's :class:`EpochOrderSampler` numbers the draws ``epoch * n + index`` so that
every draw of the training datasets has its own random stream (docs/method.md §6.8).
:func:`check_definition` refuses a file whose folds or labels do not fit the dataset's definition
in ``datagen.registry``.
"""
import os

import numpy as np

import compat  # noqa: F401
import chainer

import utils
from datagen import npzio, registry
from utils import UserError


def dataset_path(data_dir, dataset, fs):
    """Path of the generated npz for ``dataset`` at ``fs`` Hz: ``DATA/dataset/wav{fs//1000}.npz``."""
    return os.path.join(data_dir, dataset, f'wav{fs // 1000}.npz')


def load_dataset(data_dir, dataset, fs, allow_pickle=False):
    """Load the clips of ``dataset`` at ``fs`` Hz from ``data_dir`` (the ``--data`` folder).

    Returns a ``datagen.npzio.SoundSet``. Raises UserError naming ``--data`` or the file when the folder
    or file is missing, or the file's sample rate is not ``fs``.
    """
    if not os.path.isdir(data_dir):
        raise UserError(f'--data {data_dir}: no such directory (generate it with esc_gen.py '
                        f'or urbansound_gen.py)')
    path = dataset_path(data_dir, dataset, fs)
    if not os.path.isfile(path):
        gen = registry.get(dataset).generator
        raise UserError(f'{path}: not found; the network needs {dataset} at {fs} Hz (run: '
                        f'{utils.command(gen)} {data_dir} --source DIR, with DIR the official '
                        f'release, see README "Data")')
    soundset = npzio.load_sound_npz(path, allow_pickle=allow_pickle)
    if int(soundset.fs) != int(fs):
        raise UserError(f'{path}: holds {soundset.fs} Hz audio, the network needs {fs} Hz')
    check_definition(soundset, dataset, data_dir)
    return soundset


def check_definition(soundset, dataset, data_dir='DATA'):
    """Refuse a loaded file whose folds or labels do not fit ``dataset`` in the registry.

    ``datagen.registry`` defines each dataset's folds (1..n_folds) and classes (labels
    0..n_classes-1). A file of the current format must hold exactly n_classes class names, fold
    numbers within 1..n_folds and labels below n_classes; a legacy pickled file (no class names
    of its own) only the folds and labels. Raises UserError naming the file, what does not fit and
    the generator to rebuild it with. Returns ``soundset``.
    """
    info = registry.get(dataset)
    path = soundset.path
    redo = f'regenerate it with: {utils.command(info.generator)} {data_dir} --source DIR'
    if not soundset.legacy and soundset.n_classes != info.n_classes:
        raise UserError(f'{path}: {soundset.n_classes} classes, but {info.title} has '
                        f'{info.n_classes} (a file of another dataset?); {redo}')
    outside = [k for k in sorted(soundset.folds) if not 1 <= k <= info.n_folds]
    if outside:
        raise UserError(f'{path}: fold{"s" * (len(outside) > 1)} '
                        f'{", ".join(map(str, outside))} not in {info.title} (folds '
                        f'1-{info.n_folds}); {redo}')
    for k in sorted(soundset.folds):
        labels = soundset.folds[k][1]
        if len(labels) and int(labels.max()) >= info.n_classes:
            raise UserError(f'{path}: fold {k} has label {int(labels.max())}, but {info.title} '
                            f'has labels 0-{info.n_classes - 1}; {redo}')
    return soundset


def missing_folds(soundset, n_folds):
    """The folds of 1..``n_folds`` that ``soundset`` lacks or holds no clip of (sorted list)."""
    return [k for k in range(1, n_folds + 1)
            if k not in soundset.folds or len(soundset.folds[k][1]) == 0]


def split_folds(soundset, split):
    """Training and test clips for ``split`` (the test fold).

    Returns ``(train_sounds, train_labels), (test_sounds, test_labels)``: lists of int16 arrays
    and int32 arrays. Raises UserError naming ``--split`` if that fold is not in the file, or if
    it or the other folds together hold no clip.
    """
    folds = sorted(soundset.folds)
    if split not in soundset.folds:
        raise UserError(f'--split {split}: fold {split} is not in {soundset.path} '
                        f'(folds present: {", ".join(map(str, folds))})')
    if len(folds) < 2:
        raise UserError(f'--split {split}: {soundset.path} has only fold {split}; '
                        f'nothing left to train on')
    train_sounds, train_labels = [], []
    for k in folds:
        if k == split:
            continue
        sounds, labels = soundset.folds[k]
        train_sounds.extend(sounds)
        train_labels.extend(int(v) for v in labels)
    test_sounds, test_labels = soundset.folds[split]
    for clips, what in ((test_sounds, f'the test fold {split}'), (train_sounds, 'the other folds')):
        if len(clips) == 0:
            raise UserError(f'--split {split}: {soundset.path} has no clips in {what}; choose '
                            f'another --split, or regenerate the file')
    return ((train_sounds, np.asarray(train_labels, dtype=np.int32)),
            (list(test_sounds), np.asarray(test_labels, dtype=np.int32)))


class Preprocessor:
    """The per-clip preprocessing of docs/method.md §3 (BC-learning reference) for crops of T samples.

    Train: [scale x1.25^U(-1,1)] -> zero-pad T/2 each side -> random crop of T -> /32768 ->
    [gain +-6 dB]; the bracketed steps only with ``strong_augment``.
    Test: zero-pad T/2 each side -> /32768 -> ``n_crops`` crops at equal strides.
    """

    def __init__(self, input_length, strong_augment=False, n_crops=10):
        self.input_length = int(input_length)
        self.strong_augment = bool(strong_augment)
        self.n_crops = int(n_crops)

    def train(self, sound, rng):
        """One training crop: float32 (T,) from an int16 clip, using ``rng`` (numpy Generator)."""
        x = sound.astype(np.float64)
        if self.strong_augment:
            x = utils.random_scale(x, 1.25, rng)
        x = utils.padding(x, self.input_length // 2)
        x = utils.random_crop(x, self.input_length, rng)
        x = utils.normalize(x, 32768.0)
        if self.strong_augment:
            x = utils.random_gain(x, 6.0, rng)
        return x.astype(np.float32)

    def test(self, sound):
        """The test crops: float32 (n_crops, T) from an int16 clip (deterministic)."""
        x = utils.padding(sound.astype(np.float64), self.input_length // 2)
        x = utils.normalize(x, 32768.0)
        return utils.multi_crop(x, self.input_length, self.n_crops).astype(np.float32)


class _RandomDataset(chainer.dataset.DatasetMixin):
    """Base of the training datasets: a random stream of its own for every draw.

    Example ``k`` is drawn with ``numpy.random.default_rng([seed, epoch, i])``, where
    ``epoch, i = divmod(k, len(self))`` (:meth:`draw`): the training iterator's
    :class:`EpochOrderSampler` hands out ``k = epoch * len(self) + i``, so each example of each
    epoch has its own stream, a pure function of (seed, epoch, i). Crops, augmentation and pairs
    are then the same whatever the number of worker processes and whichever worker draws them,
    and a run resumed from a snapshot (which holds the iterator's order) draws exactly what the
    uninterrupted run draws. An index below ``len(self)`` is a draw of epoch 0.
    ``seed`` None draws one at random (recorded in :attr:`seed`).
    """

    def __init__(self, sounds, labels, preprocessor, seed=None):
        self.sounds = sounds
        self.labels = np.asarray(labels, dtype=np.int32)
        self.pre = preprocessor
        self.seed = int(np.random.SeedSequence().entropy if seed is None else seed)

    def draw(self, k):
        """``(i, rng)`` of draw ``k`` (int >= 0): the example index ``k mod len(self)`` and the
        ``numpy.random.Generator`` of that draw."""
        epoch, i = divmod(int(k), len(self))
        return i, np.random.default_rng([self.seed, epoch, i])


class EpochOrderSampler:
    """The training iterator's order of examples in each epoch, from ``(seed, epoch)`` alone.

    Chainer calls it at the start of every epoch with the previous order (the first time with
    ``arange(n)``). It returns ``epoch * n + perm`` for epoch 1, 2, ... (read off the previous
    order's values), where ``perm`` is a permutation of 0..n-1 drawn by
    ``default_rng([seed, epoch])``, or 0..n-1 in file order with ``shuffle=False``; the datasets
    decode these draw numbers (:meth:`_RandomDataset.draw`). Holding no state of its own, it
    continues exactly after ``--resume``, where the snapshot restores the iterator's order.
    """

    def __init__(self, seed, shuffle=True):
        self.seed = int(seed)
        self.shuffle = bool(shuffle)

    def __call__(self, current_order, current_position):
        n = len(current_order)
        return self.order(int(np.max(current_order)) // n + 1 if n else 1, n)

    def order(self, epoch, n):
        """The draw numbers of ``epoch`` (>= 1) for ``n`` examples: int64 array (n,)."""
        perm = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                else np.arange(n))
        return perm.astype(np.int64) + epoch * n


class TrainDataset(_RandomDataset):
    """Standard learning: draw k is ``(crop float32 (T,), label int32)`` of clip ``k mod n``."""

    def __len__(self):
        return len(self.sounds)

    def get_example(self, k):
        i, rng = self.draw(k)
        return self.pre.train(self.sounds[i], rng), self.labels[i]


class PairDataset(_RandomDataset):
    """Mixing methods: each example is a pair of clips of different classes (docs/method.md §4).

    Example i is ``(x_i, x_j, y_i, y_j)``: two preprocessed crops float32 (T,) and their int32
    labels, the clips drawn uniformly at random until their classes differ (as the BC-learning
    reference draws them). The length is half the number of clips: a batch of B pairs yields 2B
    mixed examples (each clip mixed with its partner, both ways), so an epoch holds as many mixed
    examples as there are training clips.

    Raises UserError if the training clips hold fewer than two classes.
    """

    def __init__(self, sounds, labels, preprocessor, seed=None):
        super().__init__(sounds, labels, preprocessor, seed)
        if len(np.unique(self.labels)) < 2:
            raise UserError('mixing needs training clips of at least two classes; '
                            f'found classes {sorted(set(self.labels.tolist()))}')

    def __len__(self):
        return len(self.sounds) // 2

    def get_example(self, k):
        n = len(self.sounds)
        _, rng = self.draw(k)
        while True:
            a, b = rng.integers(0, n, size=2)
            if self.labels[a] != self.labels[b]:
                break
        return (self.pre.train(self.sounds[a], rng), self.pre.train(self.sounds[b], rng),
                self.labels[a], self.labels[b])


class TestDataset(chainer.dataset.DatasetMixin):
    """Test: example i is ``(crops float32 (nCrops, T), label int32)`` of clip i."""

    def __init__(self, sounds, labels, preprocessor):
        self.sounds = sounds
        self.labels = np.asarray(labels, dtype=np.int32)
        self.pre = preprocessor

    def __len__(self):
        return len(self.sounds)

    def get_example(self, i):
        return self.pre.test(self.sounds[i]), self.labels[i]
