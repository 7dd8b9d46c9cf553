"""EnvNet (Tokozume & Harada, ICASSP 2017), as in the BC-learning reference code
(mil-tokyo/bc_learning_sound, models/envnet.py; Tokozume et al. 2018, appendix).

16 kHz, T = 24014 samples (about 1.5 s). Feature maps, for one input (C x H x W):

| point | tensor                                  | shape        |
|-------|-----------------------------------------|--------------|
| 0     | input waveform                          | 1 x 1 x 24014 |
| 1     | conv1-2 (40@1x8), pool 1x160, swap axes | 1 x 40 x 150 |
| 2     | conv3 (50@8x13), pool 3x3               | 50 x 11 x 46 |
| 3     | conv4 (50@1x5), pool 1x3                | 50 x 11 x 14 |

then fc 4096 -> fc 4096 (ReLU, dropout 0.5) -> fc n_classes.
"""
import compat  # noqa: F401
import chainer.functions as F
import chainer.links as L

import fastconv

from models.common import ConvBNReLU, StagedNet

class EnvNet(StagedNet):
    """EnvNet for ``n_classes`` classes; input (N, 1, 1, 24014) at 16 kHz, output logits."""

    fs = 16000
    input_length = 24014
    mix_points = {
        0: 'input waveform (1x1x24014)',
        1: 'after conv2 + pool 1x160 + swap axes (1x40x150)',
        2: 'after conv3 + pool 3x3 (50x11x46)',
        3: 'after conv4 + pool 1x3 (50x11x14)',
    }

    def __init__(self, n_classes):
        super().__init__()
        with self.init_scope():
            self.conv1 = ConvBNReLU(1, 40, (1, 8))
            self.conv2 = ConvBNReLU(40, 40, (1, 8))
            self.conv3 = ConvBNReLU(1, 50, (8, 13))
            self.conv4 = ConvBNReLU(50, 50, (1, 5))
            self.fc5 = L.Linear(50 * 11 * 14, 4096)
            self.fc6 = L.Linear(4096, 4096)
            self.fc7 = L.Linear(4096, n_classes)

    def stages(self):
        return [self._stage0, self._stage1, self._stage2, self._stage3]

    def _stage0(self, x):
        h = fastconv.max_pooling_2d(self.conv2(self.conv1(x)), (1, 160))
        return F.swapaxes(h, 1, 2)

    def _stage1(self, h):
        return fastconv.max_pooling_2d(self.conv3(h), 3)

    def _stage2(self, h):
        return fastconv.max_pooling_2d(self.conv4(h), (1, 3))

    def _stage3(self, h):
        h = F.dropout(F.relu(self.fc5(h)))
        h = F.dropout(F.relu(self.fc6(h)))
        return self.fc7(h)
