"""EnvNet-v2 (Tokozume, Ushiku & Harada, ICLR 2018, appendix; reference code
mil-tokyo/bc_learning_sound, models/envnetv2.py).

44.1 kHz, T = 66650 samples (about 1.5 s). Feature maps, for one input (C x H x W):

| point | tensor                                              | shape         |
|-------|-----------------------------------------------------|---------------|
| 0     | input waveform                                      | 1 x 1 x 66650 |
| 1     | conv1 32@1x64/2, conv2 64@1x16/2, pool 1x64, swap   | 1 x 64 x 260  |
| 2     | conv3-4 32@8x8, pool 5x3                            | 32 x 10 x 82  |
| 3     | conv5-6 64@1x4, pool 1x2                            | 64 x 10 x 38  |
| 4     | conv7-8 128@1x2, pool 1x2                           | 128 x 10 x 18 |

then conv9-10 256@1x2, pool 1x2 (256 x 10 x 8), fc 4096 -> fc 4096 (ReLU, dropout 0.5) ->
fc n_classes. Points 0-4 are the mixing points of the SpeechMix/InterMix reference code; the
paper's best hidden set is L = {1, 2, 3, 4}.
"""
import compat  # noqa: F401
import chainer.functions as F
import chainer.links as L

import fastconv

from models.common import ConvBNReLU, StagedNet

class EnvNetV2(StagedNet):
    """EnvNet-v2 for ``n_classes`` classes; input (N, 1, 1, 66650) at 44.1 kHz, output logits."""

    fs = 44100
    input_length = 66650
    mix_points = {
        0: 'input waveform (1x1x66650)',
        1: 'after conv2 + pool 1x64 + swap axes (1x64x260)',
        2: 'after conv4 + pool 5x3 (32x10x82)',
        3: 'after conv6 + pool 1x2 (64x10x38)',
        4: 'after conv8 + pool 1x2 (128x10x18)',
    }

    def __init__(self, n_classes):
        super().__init__()
        with self.init_scope():
            self.conv1 = ConvBNReLU(1, 32, (1, 64), stride=(1, 2))
            self.conv2 = ConvBNReLU(32, 64, (1, 16), stride=(1, 2))
            self.conv3 = ConvBNReLU(1, 32, (8, 8))
            self.conv4 = ConvBNReLU(32, 32, (8, 8))
            self.conv5 = ConvBNReLU(32, 64, (1, 4))
            self.conv6 = ConvBNReLU(64, 64, (1, 4))
            self.conv7 = ConvBNReLU(64, 128, (1, 2))
            self.conv8 = ConvBNReLU(128, 128, (1, 2))
            self.conv9 = ConvBNReLU(128, 256, (1, 2))
            self.conv10 = ConvBNReLU(256, 256, (1, 2))
            self.fc11 = L.Linear(256 * 10 * 8, 4096)
            self.fc12 = L.Linear(4096, 4096)
            self.fc13 = L.Linear(4096, n_classes)

    def stages(self):
        return [self._stage0, self._stage1, self._stage2, self._stage3, self._stage4]

    def _stage0(self, x):
        h = fastconv.max_pooling_2d(self.conv2(self.conv1(x)), (1, 64))
        return F.swapaxes(h, 1, 2)

    def _stage1(self, h):
        return fastconv.max_pooling_2d(self.conv4(self.conv3(h)), (5, 3))

    def _stage2(self, h):
        return fastconv.max_pooling_2d(self.conv6(self.conv5(h)), (1, 2))

    def _stage3(self, h):
        return fastconv.max_pooling_2d(self.conv8(self.conv7(h)), (1, 2))

    def _stage4(self, h):
        h = fastconv.max_pooling_2d(self.conv10(self.conv9(h)), (1, 2))
        h = F.dropout(F.relu(self.fc11(h)))
        h = F.dropout(F.relu(self.fc12(h)))
        return self.fc13(h)
