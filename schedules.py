"""Default training schedules: one table, keyed by (network, dataset) (docs/method.md §6.2).

Each row gives, for standard learning, ``nEpochs``, the initial ``LR``, ``schedule`` (fractions
of nEpochs at which the LR is multiplied by 0.1) and ``warmup`` (epochs at LR / 10), and
``source``: where the numbers come from. ``opts.resolve`` fills the flags not given from
:func:`default`; mixing doubles nEpochs there (§6.3). A new dataset or network is new rows here,
not an edit of a network file.
"""
import collections

Schedule = collections.namedtuple('Schedule', 'nEpochs LR schedule warmup source')

_REFERENCE = 'BC-learning reference (Tokozume et al. 2018), its settings for this network'
_COPIED = ('not given by the paper for this network: EnvNet-v2\'s row on the same dataset '
           '(docs/method.md §6.2)')

# EnvNet-v2, from the BC-learning reference: the rows the networks without settings of their
# own copy.
_ENVNETV2 = {
    'esc50': Schedule(1000, 0.1, (0.3, 0.6, 0.9), 10, _REFERENCE),
    'esc10': Schedule(600, 0.01, (0.5, 0.75), 0, _REFERENCE),
    'urbansound8k': Schedule(600, 0.1, (0.3, 0.6, 0.9), 10, _REFERENCE),
}

SCHEDULES = {
    # EnvNet, from the BC-learning reference.
    ('envnet', 'esc50'): Schedule(600, 0.01, (0.5, 0.75), 0, _REFERENCE),
    ('envnet', 'esc10'): Schedule(600, 0.01, (0.5, 0.75), 0, _REFERENCE),
    ('envnet', 'urbansound8k'): Schedule(400, 0.01, (0.5, 0.75), 0, _REFERENCE),
    **{('envnetv2', dataset): row for dataset, row in _ENVNETV2.items()},
    # M18, SoundNet5, Logmel-CNN, SampleCNN and SampleCNN-SE: no published settings.
    **{(net, dataset): row._replace(source=_COPIED)
       for net in ('m18', 'soundnet5', 'logmel_cnn', 'samplecnn', 'samplecnn_se')
       for dataset, row in _ENVNETV2.items()},
}


def default(net, dataset):
    """The default schedule of ``net`` (a ``--netType``) on ``dataset``: a dict of ``nEpochs``,
    ``LR``, ``schedule`` (a new list) and ``warmup``; None when the table has no such row."""
    row = SCHEDULES.get((net, dataset))
    if row is None:
        return None
    return {'nEpochs': row.nEpochs, 'LR': row.LR, 'schedule': list(row.schedule),
            'warmup': row.warmup}


def datasets_of(net):
    """The datasets the table has a row for with network ``net``, sorted."""
    return sorted(d for n, d in SCHEDULES if n == net)
