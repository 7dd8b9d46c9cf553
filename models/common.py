"""Building blocks shared by the networks, and the staged-network base class.

A network is a sequence of *stages* between mixing points (STYLE.md): stage k maps the tensor at
mixing point k to the tensor at point k+1, and the last stage ends in the class logits. Point 0 is
the input waveform. A mixer (``intermix.Mixer``) acts on the tensor at its point, before the stage
that starts there.
"""
import compat  # noqa: F401  (numpy.sctypes for Chainer on NumPy 2)
import chainer
import chainer.functions as F
import chainer.links as L


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
        return F.relu(self.bn(self.conv(x)))


class StagedNet(chainer.Chain):
    """Base class: a network as stages between mixing points.

    Subclasses define class attributes ``fs`` (Hz), ``input_length`` (T, samples),
    ``mix_points`` ({point: description of the tensor there}), ``default_schedule``
    ({dataset: {'nEpochs', 'LR', 'schedule', 'warmup'}}), and a method ``stages()`` returning the
    list of callables, one per mixing point, in order. Input: float32 array or Variable of shape
    (N, 1, 1, T), the waveform scaled to [-1, 1). Output: logits (N, n_classes).
    """

    fs = None
    input_length = None
    mix_points = {}
    default_schedule = {}

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
