"""SampleCNN: the sample-level raw-waveform CNN of Kim, Lee & Nam, "Comparison and analysis of
SampleCNN architectures for audio classification", IEEE JSTSP 2019 (the 3^9 model of Lee et al.
2017), in its basic and squeeze-and-excitation (SE) variants.

22.05 kHz, T = 3^10 = 59049 samples (2.68 s). Feature maps, for one input (C x H x W):

| point | tensor                                                  | shape           |
|-------|---------------------------------------------------------|-----------------|
| 0     | input waveform                                          | 1 x 1 x 59049   |
| 1     | conv 128@1x3 stride 3 (19683); block 1: 128, pool 3     | 128 x 1 x 6561  |
| 2     | block 2: conv 128@1x3 pad 1, pool 3                     | 128 x 1 x 2187  |
| 3     | block 3: conv 256@1x3 pad 1, pool 3                     | 256 x 1 x 729   |
| 4     | block 4: 256                                            | 256 x 1 x 243   |
| 5     | block 5: 256                                            | 256 x 1 x 81    |
| 6     | block 6: 256                                            | 256 x 1 x 27    |
| 7     | block 7: 256                                            | 256 x 1 x 9     |
| 8     | block 8: 256                                            | 256 x 1 x 3     |
| 9     | block 9: 512                                            | 512 x 1 x 1     |

A block is conv@1x3 pad 1 (conv without bias, He init -> BN -> ReLU) -> max pool 3 (stride 3),
and in the SE variant -> squeeze-and-excitation (global average over time -> fc 16 C, ReLU -> fc
C, sigmoid -> channel scale). After block 9: global max pooling over time (512), fc 512 without
bias -> BN -> ReLU, dropout 0.5, fc n_classes.

Mixing points: 0 is the input, and k = 1..9 follow block k (each ends in a pooling; the SE gate,
where present, is part of its block); the default hidden set for SpeechMix/InterMix is 1-9.

Registered as ``samplecnn`` (basic) and ``samplecnn_se`` (:class:`SampleCNNSE`, the same class with
``se=True``).

Decisions (all collected in docs/method.md §8), from the paper and its authors' code (taejun's ``resemul``):

- Widths 128 (strided conv), then 128, 128, 256, 256, 256, 256, 256, 256, 512 for blocks 1-9
  (doubling at blocks 3 and 9), as the 3^9 SampleCNN of Lee et al. 2017 and Kim et al. 2019.
- SE: applied after the block's pooling, with an amplifying ratio of 16 (fc C -> 16 C -> C), as
  in Kim et al. and their code (SENet itself reduces, C -> C/16 -> C).
- Head: global max pooling (a no-op on the 1-sample map of block 9, kept so that the head is as
  published), fc 512 -> BN -> ReLU, dropout 0.5, fc classes; the multi-level feature aggregation
  of the "ReSE-2-Multi" variant is not used (basic and SE only).
- Conv blocks follow docs/method.md §8 (no bias before BN, He-normal init); the authors' code used a bias and
  He-uniform. Fully connected layers use Chainer's default (LeCun normal) instead of Glorot
  uniform.
- Input: 59049-sample crops (the paper's segment), taken, padded and tested with the BC-learning
  preprocessing (docs/method.md §3) instead of non-overlapping segments averaged over the clip.
- Softmax output and KL/cross-entropy loss (single-label), where the paper's music tagging used
  sigmoid outputs. Training settings are not given by the paper for this network (docs/method.md §6), so the defaults are
  EnvNet-v2's on the same dataset (their rows in ``schedules.py``).
"""
import compat  # noqa: F401
import chainer
import chainer.functions as F
import chainer.links as L

from models.common import (LinearBNReLU, SqueezeExcitation, StagedNet, conv1d_bn_relu,
                           global_max_pool, max_pool_1d)

WIDTHS = (128, 128, 256, 256, 256, 256, 256, 256, 512)
SE_AMPLIFYING_RATIO = 16


class SampleBlock(chainer.Chain):
    """conv@1x3 pad 1 (-> BN -> ReLU) -> max pool 3, then an SE gate if ``se``; W -> W // 3."""

    def __init__(self, in_channels, out_channels, se=False):
        super().__init__()
        with self.init_scope():
            self.conv = conv1d_bn_relu(in_channels, out_channels, 3, pad=1)
            if se:
                self.se = SqueezeExcitation(out_channels, SE_AMPLIFYING_RATIO * out_channels)
        self.use_se = se

    def forward(self, h):
        h = max_pool_1d(self.conv(h), 3)
        return self.se(h) if self.use_se else h


class SampleCNN(StagedNet):
    """SampleCNN (basic, or SE with ``se=True``) for ``n_classes`` classes.

    Input (N, 1, 1, 59049) at 22.05 kHz; output logits (N, n_classes).
    """

    fs = 22050
    input_length = 59049
    mix_points = {0: 'input waveform (1x1x59049)'}
    mix_points.update({k: f'after block {k} ({WIDTHS[k - 1]}x1x{3 ** (9 - k)})'
                       for k in range(1, 10)})

    def __init__(self, n_classes, se=False):
        super().__init__()
        self.se = se
        with self.init_scope():
            self.conv0 = conv1d_bn_relu(1, 128, 3, stride=3)
            self.blocks = chainer.ChainList(*[
                SampleBlock(c_in, c_out, se) for c_in, c_out in zip((128,) + WIDTHS, WIDTHS)])
            self.fc1 = LinearBNReLU(WIDTHS[-1], 512)
            self.fc2 = L.Linear(512, n_classes)

    def stages(self):
        return [self._stage0] + [self.blocks[k] for k in range(1, 9)] + [self._stage9]

    def _stage0(self, x):
        return self.blocks[0](self.conv0(x))

    def _stage9(self, h):
        h = self.fc1(global_max_pool(h))
        return self.fc2(F.dropout(h, 0.5))


class SampleCNNSE(SampleCNN):
    """SampleCNN with squeeze-and-excitation after every block (``--netType samplecnn_se``)."""

    def __init__(self, n_classes):
        super().__init__(n_classes, se=True)
