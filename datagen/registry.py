"""The dataset registry: every dataset the programs know, with what each needs to know of it.

One row per dataset, read by everything that needs a dataset fact: ``main.py``'s ``--dataset``
choices and class and fold counts (``opts``), the generators' fold checks
(:mod:`datagen.pipeline`), the hint naming the generator when a file is missing
(``dataset.load_dataset``) and the fold counts of the summaries (``report.py``). Adding a dataset
is one row here plus its generator entry point (docs/method.md §2).
"""
import collections

from utils import UserError

DatasetInfo = collections.namedtuple('DatasetInfo',
                                     'name title n_classes n_folds generator trim')
DatasetInfo.__doc__ = """One dataset.

name: the ``--dataset`` value and the folder under DATA; title: its usual spelling in messages;
n_classes: number of classes (labels 0..n_classes-1); n_folds: official cross-validation folds
(numbered 1..n_folds; one split per fold); generator: the entry point that writes its files;
trim: whether its clips lose their leading and trailing digital silence after conversion
(docs/method.md §2.2: ESC yes, UrbanSound8K no), in the generator and in ``predict.py``.
"""

DATASETS = {d.name: d for d in (
    DatasetInfo('esc50', 'ESC-50', 50, 5, 'esc_gen.py', True),
    DatasetInfo('esc10', 'ESC-10', 10, 5, 'esc_gen.py', True),
    DatasetInfo('urbansound8k', 'UrbanSound8K', 10, 10, 'urbansound_gen.py', False),
)}


def get(name):
    """The :class:`DatasetInfo` of ``name``; UserError naming it and the known datasets if absent."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError('unknown dataset %r: the registry (datagen/registry.py) has %s'
                        % (name, ', '.join(sorted(DATASETS)))) from None
