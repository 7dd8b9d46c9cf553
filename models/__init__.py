"""Model registry: ``--netType`` name -> network class.

Each network class carries its input facts as class attributes, so the rest of the program asks
the model instead of keeping a second table:

- ``fs``: sample rate of the input waveform (Hz)
- ``input_length``: T, samples per input crop
- ``mix_points``: dict {point: description}; 0 is the input waveform, k >= 1 a hidden tensor

Training schedules are not a network's: they live in one (network, dataset) table,
``schedules.py`` (docs/method.md §6), and no network module imports another network.

Networks of the paper's Table 1 (M18, SoundNet5, EnvNet, Logmel-CNN, EnvNet-v2) and SampleCNN,
one file each; shared blocks are in ``models/common.py``. Every value is a class (callable with
``n_classes``) that also carries the attributes above.
"""
from models.envnet import EnvNet
from models.envnetv2 import EnvNetV2
from models.logmel_cnn import LogmelCNN
from models.m18 import M18
from models.samplecnn import SampleCNN, SampleCNNSE
from models.soundnet5 import SoundNet5

archs = {
    'envnet': EnvNet,
    'envnetv2': EnvNetV2,
    'soundnet5': SoundNet5,
    'm18': M18,
    'logmel_cnn': LogmelCNN,
    'samplecnn': SampleCNN,
    'samplecnn_se': SampleCNNSE,
}


def sample_rates():
    """Sorted list of every input sample rate (Hz, int) a registered network needs."""
    return sorted({int(cls.fs) for cls in archs.values()})
