"""Model registry: ``--netType`` name -> network class.

Each network class carries its input facts as class attributes, so the rest of the program asks
the model instead of keeping a second table:

- ``fs``: sample rate of the input waveform (Hz)
- ``input_length``: T, samples per input crop
- ``mix_points``: dict {point: description}; 0 is the input waveform, k >= 1 a hidden tensor
- ``default_schedule``: dict dataset -> dict(nEpochs, LR, schedule, warmup) (SPEC 6)
"""
from models.envnet import EnvNet
from models.envnetv2 import EnvNetV2

archs = {
    'envnet': EnvNet,
    'envnetv2': EnvNetV2,
}


def sample_rates():
    """Sorted list of every input sample rate (Hz, int) a registered network needs."""
    return sorted({int(cls.fs) for cls in archs.values()})
