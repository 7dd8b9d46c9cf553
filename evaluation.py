"""The 10-crop test and the FGSM attack (docs/method.md §3).

:func:`ten_crop_probabilities` is the one place where clips are classified: the test during
training (:class:`TenCropEvaluator`), ``--testOnly`` (:func:`ten_crop_error`,
:func:`fgsm_errors`) and ``predict.py`` (:func:`ten_crop_batches`) all go through it.
:func:`per_class_results` turns a confusion matrix into the per-class errors of result.json.
"""
import numpy as np

import compat  # noqa: F401
import chainer
import chainer.functions as F
from chainer.training import extensions


class TenCropEvaluator(extensions.Evaluator):
    """10-crop test (docs/method.md §3): softmax averaged over each clip's crops; reports the
    error in %.

    Reports ``validation/main/error`` = 100 * (wrong clips / clips), exact over the whole test
    fold, computed in test mode (BN statistics, no dropout) without backprop.

    Multi-node (``comm``): each rank tests its disjoint shard of the fold and the ranks sum their
    confusion matrices with one ``allreduce``, so the error is wrong / total over the whole fold,
    not a mean of per-rank percentages (ChainerMN's ``create_multi_node_evaluator`` averages the
    ranks' results, which is wrong for shards of unequal size).

    ``n_classes`` (the network's outputs) sizes the confusion matrix, which is kept, for the whole
    fold, in ``confusion`` after each test (None before the first).
    """

    def __init__(self, iterator, target, device=None, comm=None, n_classes=None):
        super().__init__(iterator, target, device=device)
        self.comm = comm
        self.n_classes = n_classes
        self.confusion = None  # (C, C) int64 of the latest evaluation, over the whole fold

    def evaluate(self):
        """Test the target on the whole fold; keeps the confusion matrix in ``self.confusion``
        (rows: true class, columns: predicted class) and returns the error in %."""
        iterator = self.get_iterator('main')
        model = self.get_target('main')
        confusion = ten_crop_confusion(model, iterator, self.converter, self.device,
                                       self.n_classes)
        if self.comm is not None:
            confusion = self.comm.mpi_comm.allreduce(confusion)
        self.confusion = confusion
        total = int(confusion.sum())
        wrong = total - int(np.trace(confusion))
        return {'validation/main/error': 100.0 * wrong / total}


def ten_crop_probabilities(model, crops):
    """The output of the 10-crop test for a batch of clips (docs/method.md §3.2).

    Args:
        model: a network taking float32 (M, 1, 1, T) waveforms; called as it is, so the caller
            puts it in test mode (``chainer.using_config('train', False)``, no backprop).
        crops: float32 array (B, nCrops, T) of normalised crops (``dataset.Preprocessor.test``
            of each clip), on the model's device.

    Returns a float32 array (B, C) on that device: the softmax of each crop, averaged over the
    clip's crops (each row sums to 1); its argmax is the predicted class. ``--testOnly``, the
    test during training and ``predict.py`` all classify clips through this function.
    """
    b, n_crops, length = crops.shape
    logits = model(crops.reshape(b * n_crops, 1, 1, length))
    return F.softmax(logits).array.reshape(b, n_crops, -1).mean(axis=1)


def ten_crop_batches(model, iterator, converter, device):
    """The 10-crop test, batch by batch: yields ``(probabilities, labels)`` per batch.

    ``iterator`` yields batches of ``(crops float32 (nCrops, T), label)`` examples
    (:func:`training.test_iterator`; reset first when it can be), ``converter`` stacks them onto
    ``device``; the model runs in test mode without backprop. ``probabilities`` is the (B, C)
    array of :func:`ten_crop_probabilities` on the device, ``labels`` the (B,) int32 labels.
    Yields nothing for an empty shard.
    """
    if len(getattr(iterator, 'dataset', ())) == 0 and hasattr(iterator, 'dataset'):
        return  # an empty shard (fewer test clips than ranks)
    if hasattr(iterator, 'reset'):
        iterator.reset()
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for batch in iterator:
            x, y = converter(batch, device)
            yield ten_crop_probabilities(model, x), y


def ten_crop_counts(model, iterator, converter, device):
    """(wrong clips, clips) of ``model`` over an iterator of ``(crops (nCrops, T), label)``."""
    wrong = total = 0
    for prob, y in ten_crop_batches(model, iterator, converter, device):
        wrong += int((prob.argmax(axis=1) != y).sum())
        total += len(y)
    return wrong, total


def ten_crop_confusion(model, iterator, converter, device, n_classes=None):
    """Confusion matrix of the 10-crop test over an iterator of ``(crops (nCrops, T), label)``.

    Returns an int64 NumPy array (C, C): entry [i, j] counts the clips of true class i that the
    averaged softmax (:func:`ten_crop_probabilities`) assigns to class j. C is ``n_classes`` when
    given (needed for an empty shard), else the network's number of outputs. Its trace is the
    number of right clips; ``100 * (sum - trace) / sum`` is :func:`ten_crop_error`.
    """
    confusion = None if n_classes is None else np.zeros((n_classes, n_classes), np.int64)
    cpu = chainer.backend.CpuDevice()
    for prob, y in ten_crop_batches(model, iterator, converter, device):
        if confusion is None:
            confusion = np.zeros((prob.shape[1], prob.shape[1]), np.int64)
        np.add.at(confusion, (cpu.send(y), cpu.send(prob.argmax(axis=1))), 1)
    if confusion is None:
        raise ValueError('ten_crop_confusion: no clips and no n_classes')
    return confusion


def per_class_results(confusion, class_names):
    """Per-class test error and the confusion matrix as recorded in result.json.

    Args:
        confusion: int array (C, C), rows true class, columns predicted class
            (:func:`ten_crop_confusion`).
        class_names: the C class names (label order of the data file).

    Returns a JSON-able dict: ``test_error_per_class`` {class name: error % of that class's
    test clips, or None when the fold holds none of them}, ``test_clips_per_class`` {class name:
    clips}, and ``confusion_matrix`` {``class_names``, ``rows``: 'true class', ``columns``:
    'predicted class', ``counts``: C lists of C ints}. Raises ValueError when the sizes differ.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    names = [str(c) for c in class_names]
    if confusion.shape != (len(names), len(names)):
        raise ValueError(f'per_class_results: confusion {confusion.shape} for {len(names)} '
                         f'class names')
    clips = confusion.sum(axis=1)
    errors = {name: (None if n == 0 else 100.0 * (n - confusion[c, c]) / n)
              for c, (name, n) in enumerate(zip(names, clips))}
    return {'test_error_per_class': errors,
            'test_clips_per_class': dict(zip(names, (int(n) for n in clips))),
            'confusion_matrix': {'class_names': names, 'rows': 'true class',
                                 'columns': 'predicted class', 'counts': confusion.tolist()}}


def ten_crop_error(model, iterator, converter, device):
    """Error (%) of ``model`` over an iterator of ``(crops (nCrops, T), label)`` examples."""
    wrong, total = ten_crop_counts(model, iterator, converter, device)
    return 100.0 * wrong / total


def fgsm_sign(model, x, y):
    """``sign(grad_x L(theta, x, y))`` for FGSM (Goodfellow et al. 2015; the paper's Table 3).

    L is the softmax cross-entropy of each input with its true label, summed (the sign is the
    same as for the mean, and the sum keeps small gradients away from float underflow), computed
    with the model in test mode (BN statistics, no dropout).

    Args:
        model: a network taking (M, 1, 1, T) inputs.
        x: array (M, 1, 1, T) of normalised crops, on the model's device.
        y: int32 array (M,) of true labels.

    Returns:
        Array shaped like ``x`` with values in {-1, 0, 1}.
    """
    x_var = chainer.Variable(x)
    with chainer.using_config('train', False), chainer.force_backprop_mode():
        loss = F.sum(F.softmax_cross_entropy(model(x_var), y, reduce='no'))
    model.cleargrads()
    loss.backward()
    model.cleargrads()
    xp = chainer.backend.get_array_module(x)
    return xp.sign(x_var.grad)


def fgsm_errors(model, iterator, converter, device, epsilons):
    """10-crop error (%) on clean and FGSM-perturbed test crops, for each epsilon.

    ``x_adv = x + epsilon * sign(grad_x L(theta, x, y))`` on every normalised test crop
    (docs/method.md §3), one gradient per crop; the perturbed crops are then classified as in
    the clean test (softmax averaged over a clip's crops). With epsilon = 0 the error equals the
    clean error exactly.

    Args:
        model, iterator, converter, device: as for :func:`ten_crop_error`.
        epsilons: iterable of floats (units of the normalised waveform, full scale 1).

    Returns:
        dict: ``{'clean': error, 'eps=<epsilon>': error, ...}`` in %.
    """
    epsilons = [float(e) for e in epsilons]
    if hasattr(iterator, 'reset'):
        iterator.reset()
    wrong = {e: 0 for e in epsilons}
    wrong_clean = total = 0
    for batch in iterator:
        x, y = converter(batch, device)
        b, n_crops, length = x.shape
        crops = x.reshape(b * n_crops, 1, 1, length)
        labels = device.xp.repeat(y, n_crops)
        sign = fgsm_sign(model, crops, labels)
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            wrong_clean += _wrong_clips(model, crops, y, n_crops)
            for e in epsilons:
                wrong[e] += _wrong_clips(model, (crops + e * sign).astype(crops.dtype), y, n_crops)
        total += b
    result = {'clean': 100.0 * wrong_clean / total}
    result.update({f'eps={e:g}': 100.0 * wrong[e] / total for e in epsilons})
    return result


def _wrong_clips(model, crops, y, n_crops):
    """Number of clips misclassified by the softmax averaged over their crops; ``crops`` are
    (len(y) * n_crops, 1, 1, T)."""
    prob = ten_crop_probabilities(model, crops.reshape(len(y), n_crops, crops.shape[-1]))
    return int((prob.argmax(axis=1) != y).sum())


