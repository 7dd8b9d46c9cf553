"""Building blocks shared by the networks, and the staged-network base class.

A network is a sequence of *stages* between mixing points: stage k maps the tensor at
mixing point k to the tensor at point k+1, and the last stage ends in the class logits. Point 0 is
the input waveform. A mixer (``intermix.Mixer``) acts on the tensor at its point, before the stage
that starts there.

Every network takes the waveform as (N, 1, 1, T); one-dimensional layers work on (N, C, 1, W)
tensors, so a 1-D convolution is a 2-D one with a (1, k) kernel (:func:`conv1d_bn_relu`, built on
:class:`ConvBNReLU`) and a 1-D pooling a (1, k) pooling (:func:`max_pool_1d`).
"""
import compat  # noqa: F401  (numpy.sctypes for Chainer on NumPy 2)
import chainer
import chainer.functions as F
import chainer.links as L

import fastconv


class ConvBNReLU(chainer.Chain):
    """Convolution without bias (He-normal init) -> batch normalisation -> ReLU.

    The conv block of Tokozume et al. 2018 (EnvNet, EnvNet-v2). ``ksize``, ``stride`` and ``pad``
    are as in ``chainer.links.Convolution2D`` (int or (height, width)).
    """

    def __init__(self, in_channels, out_channels, ksize, stride=1, pad=0):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(in_channels, out_channels, ksize, stride, pad,
                                        initialW=chainer.initializers.HeNormal(), nobias=True)
            self.bn = L.BatchNormalization(out_channels)

    def forward(self, x):
        conv = self.conv
        # NumPy arrays take fastconv's sliding-window GEMM path (several times faster than
        # Chainer's CPU im2col, and far leaner); CuPy arrays, and INTERMIX_STOCK_CONV=1, take
        # Chainer's own F.convolution_2d. Same weights, same results within float rounding.
        h = fastconv.convolution_2d(x, conv.W, conv.b, conv.stride, conv.pad, dilate=conv.dilate,
                                    groups=conv.groups)
        # F.relu(self.bn(h)), fused on NumPy arrays (fastconv.bn_relu; the link's path otherwise)
        return fastconv.bn_relu(self.bn, h)


def conv1d_bn_relu(in_channels, out_channels, ksize, stride=1, pad=0):
    """A :class:`ConvBNReLU` along time: kernel (1, ksize), stride (1, stride), padding (0, pad).

    On (N, in_channels, H, W) it gives (N, out_channels, H, (W + 2 pad - ksize) // stride + 1).
    """
    return ConvBNReLU(in_channels, out_channels, (1, ksize), (1, stride), (0, pad))


def max_pool_1d(h, ksize):
    """Max pooling along time with stride = kernel = ``ksize`` (docs/method.md §8), no partial windows.

    (N, C, H, W) -> (N, C, H, (W - ksize) // ksize + 1): ``cover_all=False``, so trailing samples
    that do not fill a window are dropped, as in Keras/TensorFlow 'valid' pooling. (Chainer's
    default ``cover_all=True`` would add a partial window; EnvNet and EnvNet-v2 keep that default,
    as in the reference code.)
    """
    return fastconv.max_pooling_2d(h, (1, ksize), stride=(1, ksize), cover_all=False)


def global_average_pool(h):
    """(N, C, H, W) -> (N, C): mean over H and W."""
    return F.average(h, axis=(2, 3))


def global_max_pool(h):
    """(N, C, H, W) -> (N, C): maximum over H and W."""
    return F.max(h, axis=(2, 3))


class LinearBNReLU(chainer.Chain):
    """Fully connected layer without bias -> batch normalisation -> ReLU; (N, ...) -> (N, out).

    The fully connected counterpart of :class:`ConvBNReLU` (the bias is redundant before BN).
    """

    def __init__(self, in_size, out_size):
        super().__init__()
        with self.init_scope():
            self.fc = L.Linear(in_size, out_size, nobias=True)
            self.bn = L.BatchNormalization(out_size)

    def forward(self, x):
        return F.relu(self.bn(self.fc(x)))


class SqueezeExcitation(chainer.Chain):
    """Squeeze-and-excitation gate (Hu et al., CVPR 2018) on (N, C, H, W) feature maps.

    ``s = sigmoid(fc2(relu(fc1(mean_{H,W} h))))`` with fc1 C -> ``hidden`` and fc2 ``hidden`` -> C
    (both with bias); returns ``h * s`` with s broadcast over H and W. Hu et al. use
    ``hidden = C / 16`` (a reduction); SampleCNN (Kim et al. 2018, 2019) uses ``hidden = 16 C``
    (an "amplifying ratio").
    """

    def __init__(self, channels, hidden):
        super().__init__()
        with self.init_scope():
            self.fc1 = L.Linear(channels, hidden)
            self.fc2 = L.Linear(hidden, channels)

    def forward(self, h):
        s = F.sigmoid(self.fc2(F.relu(self.fc1(global_average_pool(h)))))
        s = F.reshape(s, s.shape + (1, 1))
        return h * F.broadcast_to(s, h.shape)


class StagedNet(chainer.Chain):
    """Base class: a network as stages between mixing points.

    Subclasses define class attributes ``fs`` (Hz), ``input_length`` (T, samples),
    ``mix_points`` ({point: description of the tensor there}), and a method ``stages()``
    returning the list of callables, one per mixing point, in order. Input: float32 array or
    Variable of shape (N, 1, 1, T), the waveform scaled to [-1, 1). Output: logits (N,
    n_classes). Default training schedules are not here: ``schedules.py``.
    """

    fs = None
    input_length = None
    mix_points = {}

    def stages(self):
        raise NotImplementedError

    def forward(self, x, mixer=None):
        """Logits for input ``x`` (N, 1, 1, T); ``mixer``, if given, acts at ``mixer.point``.

        A mixer changes the batch: it receives the tensor at its point and returns the mixed
        tensor (see ``intermix.Mixer``).
        """
        h = x
        for point, stage in enumerate(self.stages()):
            if mixer is not None and mixer.point == point:
                h = mixer(h)
            h = stage(h)
        return h

    def features(self, x, point):
        """The tensor at mixing point ``point`` for input ``x`` (no mixing). For tests and probes."""
        h = x
        for stage in self.stages()[:point]:
            h = stage(h)
        return h
