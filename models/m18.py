"""M18: the 18-layer raw-waveform CNN of Dai, Dai, Qu, Li & Das, "Very deep convolutional neural
networks for raw waveforms", ICASSP 2017 (Table 1, M18), trained with the BC-learning recipe as in
Tokozume et al. 2018, Table 1.

8 kHz, T = 32000 samples (4 s). Feature maps, for one input (C x H x W):

| point | tensor                                          | shape         |
|-------|-------------------------------------------------|---------------|
| 0     | input waveform                                  | 1 x 1 x 32000 |
| 1     | conv 64@1x80 stride 4 pad 38 (8000), pool 4     | 64 x 1 x 2000 |
| 2     | 4x conv 64@1x3 pad 1, pool 4                    | 64 x 1 x 500  |
| 3     | 4x conv 128@1x3 pad 1, pool 4                   | 128 x 1 x 125 |
| 4     | 4x conv 256@1x3 pad 1, pool 4                   | 256 x 1 x 31  |

then 4x conv 512@1x3 pad 1 (512 x 1 x 31), global average pooling (512) and fc n_classes.
Lengths: conv ``(W + 2 pad - k) // stride + 1``, pooling ``(W - 4) // 4 + 1``
(:func:`models.common.max_pool_1d`, no partial windows: 125 -> 31).

Mixing points: 0 is the input, and 1-4 follow each pooling stage; the default hidden set for
SpeechMix/InterMix is {1, 2, 3, 4}.

Adaptations (all collected in docs/method.md §8):

- Padding. Dai et al. keep the length with 'same' padding: the 3-tap convolutions pad 1 each
  side, and the first layer (80 taps, stride 4) pads 38 each side, which is TensorFlow's 'same'
  for a 32000-sample input (output 8000 = 32000 / 4).
- Conv blocks are those of docs/method.md §8 (conv without bias, He init -> BN -> ReLU); Dai et al. also apply BN
  after every convolution. Pooling is max pooling with stride = kernel = 4, and the last one
  drops the trailing partial window (125 -> 31), as 'valid' pooling does.
- Training: the BC-learning recipe (docs/method.md §6: Nesterov SGD, weight decay 5e-4) instead of Dai et
  al.'s Adam. The schedule is not given by the paper for this network (docs/method.md §6), so the
  defaults are EnvNet-v2's on the same dataset (their rows in ``schedules.py``).
"""
import compat  # noqa: F401
import chainer
import chainer.links as L

from models.common import StagedNet, conv1d_bn_relu, global_average_pool, max_pool_1d


def _conv_stack(in_channels, out_channels, n):
    """``n`` 'same' 3-tap conv blocks, the first from ``in_channels`` to ``out_channels``."""
    return chainer.Sequential(*[conv1d_bn_relu(in_channels if i == 0 else out_channels,
                                               out_channels, 3, pad=1) for i in range(n)])


class M18(StagedNet):
    """M18 for ``n_classes`` classes; input (N, 1, 1, 32000) at 8 kHz, output logits."""

    fs = 8000
    input_length = 32000
    mix_points = {
        0: 'input waveform (1x1x32000)',
        1: 'after conv1 + pool 4 (64x1x2000)',
        2: 'after 4x conv 64 + pool 4 (64x1x500)',
        3: 'after 4x conv 128 + pool 4 (128x1x125)',
        4: 'after 4x conv 256 + pool 4 (256x1x31)',
    }

    def __init__(self, n_classes):
        super().__init__()
        with self.init_scope():
            self.conv1 = conv1d_bn_relu(1, 64, 80, stride=4, pad=38)
            self.block1 = _conv_stack(64, 64, 4)
            self.block2 = _conv_stack(64, 128, 4)
            self.block3 = _conv_stack(128, 256, 4)
            self.block4 = _conv_stack(256, 512, 4)
            self.fc = L.Linear(512, n_classes)

    def stages(self):
        return [self._stage0, self._stage1, self._stage2, self._stage3, self._stage4]

    def _stage0(self, x):
        return max_pool_1d(self.conv1(x), 4)

    def _stage1(self, h):
        return max_pool_1d(self.block1(h), 4)

    def _stage2(self, h):
        return max_pool_1d(self.block2(h), 4)

    def _stage3(self, h):
        return max_pool_1d(self.block3(h), 4)

    def _stage4(self, h):
        return self.fc(global_average_pool(self.block4(h)))
