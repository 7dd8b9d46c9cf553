"""SoundNet5: the 5-layer SoundNet of Aytar, Vondrick & Torralba, "SoundNet: learning sound
representations from unlabeled video", NIPS 2016, trained from scratch with the BC-learning
recipe as in Tokozume et al. 2018, Table 1.

22.05 kHz raw waveform, T = 33075 samples (1.5 s). Feature maps, for one input (C x H x W):

| point | tensor                                        | shape          |
|-------|-----------------------------------------------|----------------|
| 0     | input waveform                                | 1 x 1 x 33075  |
| 1     | conv1 32@1x64 stride 2 pad 32 (16538), pool 8 | 32 x 1 x 2067  |
| 2     | conv2 64@1x32 stride 2 pad 16 (1034), pool 8  | 64 x 1 x 129   |
| 3     | conv3 128@1x16 stride 2 pad 8 (65), pool 8    | 128 x 1 x 8    |

then conv4 256@1x8 stride 2 pad 4 (256 x 1 x 5) and the head: one linear layer from the whole
conv4 map (1280 values) to n_classes. Lengths: conv ``(W + 2 pad - k) // stride + 1``, pooling
``(W - 8) // 8 + 1`` (:func:`models.common.max_pool_1d`, no partial windows).

Mixing points: 0 is the input, and 1-3 follow each pooling stage (conv4 has no pooling); the
default hidden set for SpeechMix/InterMix is {1, 2, 3}.

Adaptations (all collected in docs/method.md §8):

- Input length. SoundNet was trained on variable-length clips (its teacher heads slide over
  time); here T = 33075 = 1.5 s at 22.05 kHz, the input duration of EnvNet and EnvNet-v2, so the
  BC-learning preprocessing (random 1.5 s crops, 10-crop test; docs/method.md §3) is the same for all
  raw-waveform networks of Table 1. Input scaled to [-1, 1) as for the other networks
  (SoundNet used [-256, 256]; the batch normalisation after conv1 makes the scale immaterial).
- Conv blocks are those of docs/method.md §8 (conv without bias, He init -> BN -> ReLU), as SoundNet (conv -> BN ->
  ReLU). Pooling is max pooling with stride = kernel = 8, dropping a trailing partial window.
- Head. SoundNet5's conv5 teacher heads (1000@16 and 401@16, stride 12, softmax against ImageNet
  and Places distributions) are linear maps of windows of 16 conv4 frames. A 1.5 s input leaves 5
  conv4 frames, so the head here is one linear layer over the whole conv4 map (256 x 5 -> n
  classes), i.e. a conv5 whose kernel spans the map; no dropout (SoundNet has none).
- Training settings: not published for this network (docs/method.md §6), so the defaults are EnvNet-v2's
  on the same dataset (their rows in ``schedules.py``).
"""
import compat  # noqa: F401
import chainer.links as L

from models.common import StagedNet, conv1d_bn_relu, max_pool_1d


class SoundNet5(StagedNet):
    """SoundNet5 for ``n_classes`` classes; input (N, 1, 1, 33075) at 22.05 kHz, output logits."""

    fs = 22050
    input_length = 33075
    mix_points = {
        0: 'input waveform (1x1x33075)',
        1: 'after conv1 + pool 8 (32x1x2067)',
        2: 'after conv2 + pool 8 (64x1x129)',
        3: 'after conv3 + pool 8 (128x1x8)',
    }

    def __init__(self, n_classes):
        super().__init__()
        with self.init_scope():
            self.conv1 = conv1d_bn_relu(1, 32, 64, stride=2, pad=32)
            self.conv2 = conv1d_bn_relu(32, 64, 32, stride=2, pad=16)
            self.conv3 = conv1d_bn_relu(64, 128, 16, stride=2, pad=8)
            self.conv4 = conv1d_bn_relu(128, 256, 8, stride=2, pad=4)
            self.fc5 = L.Linear(256 * 5, n_classes)

    def stages(self):
        return [self._stage0, self._stage1, self._stage2, self._stage3]

    def _stage0(self, x):
        return max_pool_1d(self.conv1(x), 8)

    def _stage1(self, h):
        return max_pool_1d(self.conv2(h), 8)

    def _stage2(self, h):
        return max_pool_1d(self.conv3(h), 8)

    def _stage3(self, h):
        return self.fc5(self.conv4(h))
