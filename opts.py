"""Command-line options of ``main.py`` (the BC-learning reference's flags, plus InterMix's).

Learning method (docs/method.md §4). ``--learning`` is a preset; explicit flags override its parts:

| --learning | mixing points (--eligible) | weights (--mixup_type) | combination (--combination) |
|------------|----------------------------|------------------------|-----------------------------|
| standard   | none                       | -                      | -                           |
| bc         | 0 (input)                  | sound (p, normalised)  | linear                      |
| speechmix  | all hidden points of model | sound                  | linear                      |
| intermix   | all hidden points of model | sound                  | interference (+ phase shift)|

Ablation presets (the paper's Table 2, EnvNet-v2 + strong augmentation):

| --learning        | mixing points | weights            | combination  |
|-------------------|---------------|--------------------|--------------|
| intermix-vanilla  | 0 (input)     | normal (r, 1 - r)  | interference |
| intermix-hidden   | hidden points | normal (r, 1 - r)  | interference |
| intermix          | hidden points | sound (p)          | interference |

The reference CLIs' ``--BC`` switch turns mixing on without ``--learning``: with ``--eligible``
naming a hidden point it means InterMix (the InterMix reference's ``--BC --eligible 1 2 3 4``),
otherwise BC learning. ``--eligible`` without any mixing is an error.

Defaults of nEpochs/LR/schedule/warmup come from the (network, dataset) table of ``schedules.py``
(docs/method.md §6); nEpochs is doubled when mixing, as in the reference. ``--batchSize`` counts
clips for standard learning (default 64) and pairs when mixing (default 32, i.e. 64 mixed
examples per step).

Multi-process training (ChainerMN over MPI): ``.venv/bin/mpiexec -n N .venv/bin/python main.py ...
--communicator naive`` (CPU) or ``pure_nccl`` (one GPU per rank). ``--batchSize`` is then per rank: the global
batch of one step is N x ``--batchSize``. ``--mnBN`` normalises over the global batch.
"""
import math
import os
import sys
import types

import intermix
import learning
import models
import schedules
import utils
from datagen import registry

# ChainerMN communicators offered by --communicator (naive is the only one that runs on the CPU).
COMMUNICATORS = ('naive', 'flat', 'non_cuda_aware', 'pure_nccl')

# The learning-method registry (docs/method.md §4.1): --learning's choices, their parts and the
# object that runs each (learning.py).
LEARNING = learning.LEARNING
MIXING = learning.MIXING


def build_parser():
    """The ``argparse`` parser of ``main.py``, options grouped as in ``--help``.

    Choices come from the registries (``datagen.registry.DATASETS``, ``models.archs``,
    :data:`LEARNING`, ``intermix.COMBINATIONS``); defaults left as None are filled by
    :func:`resolve` from the network and the learning method.
    """
    p = utils.OneLineParser(
        prog='main.py',
        description='Train and test sound classifiers with standard, BC, SpeechMix or InterMix '
                    'learning (one model per split).',
        epilog='example (after bash scripts/setup.sh, in the repository root): .venv/bin/python '
               'main.py --data data --dataset esc10 --netType envnetv2 --learning intermix '
               '--strongAugment --split 1; then .venv/bin/python predict.py '
               'results/esc10-envnetv2-intermix/split1 clip.wav')
    g = p.add_argument_group('general')
    g.add_argument('--data', required=True, help='folder made by esc_gen.py / urbansound_gen.py')
    g.add_argument('--dataset', required=True, choices=sorted(registry.DATASETS))
    g.add_argument('--netType', required=True, choices=sorted(models.archs))
    g.add_argument('--split', type=int, default=-1,
                   help='test fold: ESC 1-5, UrbanSound8K 1-10; -1 runs every split (default)')
    g.add_argument('--save', default=None,
                   help='output folder (default results/DATASET-NETTYPE-LEARNING); one '
                        'subfolder per split')
    g.add_argument('--testOnly', action='store_true',
                   help='evaluate the saved model of each split in --save, no training')
    g.add_argument('--resume', action='store_true',
                   help='continue unfinished splits in --save from their last snapshot and skip '
                        'finished ones')
    g.add_argument('--snapshotEvery', type=int, default=0, metavar='EPOCHS',
                   help='write the trainer snapshot (what --resume continues from) every N '
                        'epochs; 0 (default): on a schedule that keeps its writing under 2%% of '
                        'the run time (after the first epoch, then once 49x the last write\'s '
                        'time has passed; README "Snapshots"). The final epoch is always saved')
    g.add_argument('--threads', type=int, default=None, metavar='N',
                   help='CPU threads of this process (convolution workers, optimizer, OpenBLAS); '
                        'default: the cores available. Two runs sharing a machine: give each '
                        'its share (README "Two runs on one machine"). CPU results are '
                        'bit-reproducible for a given N, not across N')
    g.add_argument('--gpu', type=int, default=None,
                   help='GPU id; -1 for CPU (default: GPU 0 if CuPy sees one, else CPU)')
    g.add_argument('--seed', type=int, default=None,
                   help='random seed (default: drawn at random and recorded in result.json)')
    g.add_argument('--nWorkers', type=int, default=None,
                   help='worker processes for preprocessing (Chainer MultiprocessIterator); '
                        'default: min(8, CPU cores) on a GPU, 0 (in-process) on the CPU')
    g.add_argument('--stockConv', action='store_true',
                   help="CPU: Chainer's own convolution (im2col + GEMM), max pooling and batch "
                        "normalisation instead of the fast NumPy paths of fastconv.py (same "
                        "results within float rounding, 3-5x slower, several GB more memory); "
                        "the same as INTERMIX_STOCK_CONV=1. No effect on a GPU, where Chainer's "
                        "path (cuDNN when present) is always used")
    g.add_argument('--allowPickle', action='store_true',
                   help='allow the legacy pickled npz of the reference generators (unpickling '
                        'an untrusted file runs code)')

    g = p.add_argument_group('multi-process training (ChainerMN over MPI; see README)')
    g.add_argument('--communicator', choices=COMMUNICATORS, default=None,
                   help='run as one rank of an MPI job (.venv/bin/mpiexec -n N .venv/bin/python '
                        'main.py ...) with '
                        'this ChainerMN communicator: naive on the CPU, pure_nccl on GPUs (one '
                        'per rank, by intra-node rank); --batchSize is then per rank (global '
                        'batch = N x batchSize). Default: none, a single process')
    g.add_argument('--mnBN', action='store_true',
                   help='with --communicator: batch normalisation over the global batch '
                        '(ChainerMN MultiNodeBatchNormalization) instead of per rank')
    g.add_argument('--noShuffle', action='store_true',
                   help='for tests: training examples in file order, no reshuffling per epoch; '
                        'with N ranks, rank r gets the r-th part of every global batch of the '
                        '1-process run (exact when the training clips are a multiple of N x '
                        'batchSize; meaningful for --learning standard, pairs are random)')

    g = p.add_argument_group('learning method')
    g.add_argument('--learning', choices=list(LEARNING), default=None,
                   help='preset (see README, "Learning methods")')
    g.add_argument('--BC', '--bc', dest='BC', action='store_true',
                   help='between-class mixing on (reference flag; see --learning)')
    g.add_argument('--mixup_type', '--mixup-type', dest='mixup_type', choices=intermix.MIXUP_TYPES,
                   default=None, help="sound: ratio p from A-weighted gains, normalised "
                                      "(default of bc, speechmix, intermix); normal: plain mixup "
                                      "weights r, 1-r (default of the intermix-* ablations)")
    g.add_argument('--eligible', type=int, nargs='+', default=None,
                   help='mixing points to draw from, one per batch (0 = input waveform)')
    g.add_argument('--combination', choices=sorted(intermix.COMBINATIONS), default=None,
                   help='override the preset: ' + '; '.join(
                       f'{name}: {c.description}' for name, c in
                       sorted(intermix.COMBINATIONS.items())))
    g.add_argument('--gainSource', choices=learning.GAIN_SOURCES, default='input',
                   help='gains for p at hidden points: input = the input clips (the paper, '
                        'default); hidden = the hidden tensor flattened and read as 44.1 kHz '
                        'audio (the reference SpeechMix/InterMix code)')
    g.add_argument('--strongAugment', action='store_true',
                   help='scale (x1.25^U(-1,1)) and gain (+-6 dB) augmentation')

    g = p.add_argument_group('optimisation (defaults: docs/method.md §6, via the network)')
    g.add_argument('--nEpochs', type=int, default=None)
    g.add_argument('--LR', type=float, default=None, help='initial learning rate')
    g.add_argument('--schedule', type=float, nargs='+', default=None,
                   help='fractions of nEpochs at which the LR is multiplied by 0.1')
    g.add_argument('--warmup', type=int, default=None, help='epochs at LR/10 at the start')
    g.add_argument('--batchSize', type=int, default=None,
                   help='clips per step for standard learning (64), pairs when mixing (32)')
    g.add_argument('--weightDecay', type=float, default=5e-4)
    g.add_argument('--momentum', type=float, default=0.9, help='Nesterov momentum')

    g = p.add_argument_group('testing')
    g.add_argument('--nCrops', type=int, default=None,
                   help='test crops per clip (default 10; with --testOnly, the value each split '
                        'was trained and tested with, from its result.json)')
    g.add_argument('--testEvery', type=int, default=1,
                   help='test every N epochs (the final epoch is always tested)')
    g.add_argument('--testBatchSize', type=int, default=8,
                   help='clips per test batch (each gives nCrops crops)')
    g.add_argument('--fgsm', type=float, nargs='+', default=None, metavar='EPSILON',
                   help='with --testOnly: also the error under FGSM attacks x + eps*sign(grad) '
                        'on the normalised test crops, for each eps (the paper: 1e-2 1e-3 1e-4 '
                        '1e-5); written to result.json')
    return p


class Settings(types.SimpleNamespace):
    """The resolved settings of a run, read-only: built once from the command line by
    :func:`parse`. Setting or deleting an attribute raises AttributeError; :meth:`replace`
    returns a copy with some values changed (what the machine decides at start-up: the worker
    and thread counts, the MPI ranks, the splits a data file holds)."""

    def __setattr__(self, name, value):
        raise AttributeError(f'settings are read-only: use settings.replace({name}=...) for a '
                             f'changed copy')

    def __delattr__(self, name):
        raise AttributeError(f'settings are read-only: {name} cannot be deleted')

    def replace(self, **changes):
        """A copy with ``changes`` applied (names must exist; KeyError names one that does not)."""
        unknown = sorted(set(changes) - set(vars(self)))
        if unknown:
            raise KeyError(f'no setting {unknown[0]!r}')
        return Settings(**{**vars(self), **changes})


def parse(argv=None):
    """Parse and resolve options into :class:`Settings` (``argv``: the arguments, None reads
    ``sys.argv``; kept as ``settings.argv`` for the run record). Errors exit with status 2 and a
    one-line message."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    opt = parser.parse_args(argv)
    try:
        resolve(opt)
        check_numbers(opt)
    except ValueError as e:
        parser.error(str(e))
    return Settings(**vars(opt), argv=argv)


# Range of every float flag: (low, low included, high, high included, what to give instead).
FLOAT_RANGES = {
    'LR': (0.0, False, math.inf, False, 'a learning rate > 0, e.g. 0.01'),
    'momentum': (0.0, True, 1.0, False, 'a Nesterov momentum in [0, 1), e.g. 0.9 (the default)'),
    'weightDecay': (0.0, True, math.inf, False, 'a weight decay >= 0, e.g. 5e-4 (the default)'),
}


def check_numbers(opt):
    """Refuse a numeric flag that is not finite or lies outside its range (after :func:`resolve`).

    Floats: ``--LR`` in (0, inf), ``--momentum`` in [0, 1), ``--weightDecay`` in [0, inf),
    ``--fgsm`` epsilons in [0, inf), all finite (``nan`` and ``inf`` are refused: they would train
    a network of NaN weights; :func:`resolve` keeps ``--schedule`` fractions in (0, 1)). Integers: ``--gpu`` >= -1,
    ``--seed`` >= 0. Raises ValueError '--FLAG VALUE: what is wrong; what to give instead'.
    """
    for flag, (low, low_in, high, high_in, hint) in FLOAT_RANGES.items():
        value = getattr(opt, flag)
        inside = (low <= value if low_in else low < value) and (
            value <= high if high_in else value < high)
        if not math.isfinite(value) or not inside:
            what = 'not a finite number' if not math.isfinite(value) else 'out of range'
            raise ValueError(f'--{flag} {value}: {what}; give {hint}')
    bad = [e for e in opt.fgsm or [] if not math.isfinite(e)]  # (--schedule: resolve checks)
    if bad:
        raise ValueError(f'--fgsm {" ".join(map(str, opt.fgsm))}: {bad[0]} is not a finite '
                         f'number; give epsilons >= 0')
    if opt.gpu is not None and opt.gpu < -1:
        raise ValueError(f'--gpu {opt.gpu}: no such device; give a GPU id >= 0, or -1 for the CPU')
    if opt.seed is not None and opt.seed < 0:
        raise ValueError(f'--seed {opt.seed}: negative; give a seed >= 0')
    return opt


def resolve(opt):
    """Fill derived settings in ``opt`` (in place). Raises ValueError naming the flag at fault."""
    net = models.archs[opt.netType]
    info = registry.get(opt.dataset)
    opt.nClasses, opt.nFolds = info.n_classes, info.n_folds
    opt.fs = net.fs
    opt.inputLength = net.input_length
    hidden = sorted(k for k in net.mix_points if k > 0)

    learning = opt.learning
    if learning is None:
        if opt.BC:
            learning = 'intermix' if opt.eligible and any(k > 0 for k in opt.eligible) else 'bc'
        else:
            learning = 'standard'
    elif opt.BC and learning == 'standard':
        raise ValueError('--BC contradicts --learning standard')
    opt.learning = learning
    opt.mixing = LEARNING[learning].points is not None

    if not opt.mixing:
        for flag, value in (('eligible', opt.eligible), ('combination', opt.combination),
                            ('mixup_type', opt.mixup_type)):
            if value is not None:
                raise ValueError(f'--{flag} needs a mixing method (--learning '
                                 f'{"|".join(MIXING)} or --BC)')
    else:
        _, points, combination, weights = LEARNING[learning]
        if opt.eligible is None:
            opt.eligible = [0] if points == 'input' else hidden
        bad = [k for k in opt.eligible if k not in net.mix_points]
        if bad:
            points = ', '.join(f'{k} ({d})' for k, d in sorted(net.mix_points.items()))
            raise ValueError(f'--eligible {" ".join(map(str, bad))}: {opt.netType} has mixing '
                             f'points {points}')
        opt.eligible = sorted(set(opt.eligible))
        if opt.combination is None:
            opt.combination = combination
        if opt.mixup_type is None:
            opt.mixup_type = weights

    defaults = schedules.default(opt.netType, opt.dataset)
    unset = [k for k in ('nEpochs', 'LR', 'schedule', 'warmup') if getattr(opt, k) is None]
    if defaults is None and unset:
        raise ValueError(f'--netType {opt.netType} has no default schedule for --dataset '
                         f'{opt.dataset} (schedules.py lists it for '
                         f'{", ".join(schedules.datasets_of(opt.netType))}); give '
                         f'{" ".join("--" + k for k in unset)}, or add a row for '
                         f'({opt.netType}, {opt.dataset}) to schedules.SCHEDULES')
    if opt.nEpochs is None:
        opt.nEpochs = defaults['nEpochs'] * (2 if opt.mixing else 1)
    for key in ('LR', 'schedule', 'warmup'):
        if getattr(opt, key) is None:
            setattr(opt, key, defaults[key])
    if opt.batchSize is None:
        opt.batchSize = 32 if opt.mixing else 64

    if opt.threads is not None and opt.threads < 1:
        raise ValueError(f'--threads must be at least 1, got {opt.threads}')
    if opt.snapshotEvery < 0:
        raise ValueError(f'--snapshotEvery must be >= 0 (0: automatic), got {opt.snapshotEvery}')
    if opt.nWorkers is not None and opt.nWorkers < 0:
        raise ValueError(f'--nWorkers must be >= 0, got {opt.nWorkers}')
    opt.nCropsGiven = opt.nCrops is not None
    if opt.nCrops is None:
        opt.nCrops = 10
    for key in ('nEpochs', 'batchSize', 'nCrops', 'testEvery', 'testBatchSize'):
        if getattr(opt, key) < 1:
            raise ValueError(f'--{key} must be at least 1, got {getattr(opt, key)}')
    if opt.LR <= 0:
        raise ValueError(f'--LR must be positive, got {opt.LR}')
    if opt.warmup < 0:
        raise ValueError(f'--warmup must be >= 0, got {opt.warmup}')
    if any(not 0 < s < 1 for s in opt.schedule):
        raise ValueError(f'--schedule: fractions must lie in (0, 1), got {opt.schedule}')

    if opt.split == -1:
        opt.splits = list(range(1, opt.nFolds + 1))
    elif 1 <= opt.split <= opt.nFolds:
        opt.splits = [opt.split]
    else:
        raise ValueError(f'--split {opt.split}: {opt.dataset} has splits 1-{opt.nFolds} '
                         f'(or -1 for all)')
    if opt.save is None:
        opt.save = os.path.join('results', f'{opt.dataset}-{opt.netType}-{opt.learning}')
    opt.ranks = 1  # main.py sets the number of MPI ranks once the communicator exists
    if opt.mnBN and opt.communicator is None:
        raise ValueError('--mnBN needs --communicator (multi-node batch normalisation)')
    if opt.testOnly and opt.communicator is not None:
        raise ValueError('--testOnly runs in a single process; drop --communicator (and mpiexec)')
    if opt.testOnly and opt.resume:
        raise ValueError('--testOnly and --resume exclude each other')
    if opt.fgsm is not None:
        if not opt.testOnly:
            raise ValueError('--fgsm needs --testOnly (it attacks the saved models)')
        if any(e < 0 for e in opt.fgsm):
            raise ValueError(f'--fgsm: epsilons must be >= 0, got {opt.fgsm}')
    return opt


def describe(opt):
    """The settings banner printed at start-up (lines of text)."""
    rows = [('dataset', opt.dataset), ('netType', f'{opt.netType} ({opt.fs} Hz, T={opt.inputLength})'),
            ('learning', opt.learning)]
    if opt.mixing:
        rows += [('eligible', ' '.join(map(str, opt.eligible))), ('combination', opt.combination),
                 ('mixup_type', f'{opt.mixup_type} (gains: {opt.gainSource})')]
    rows += [('augment', opt.strongAugment), ('nEpochs', opt.nEpochs), ('LR', opt.LR),
             ('schedule', opt.schedule), ('warmup', opt.warmup),
             ('batchSize', f'{opt.batchSize} {"pairs" if opt.mixing else "clips"}'),
             ('splits', ' '.join(map(str, opt.splits))), ('save', opt.save)]
    if getattr(opt, 'communicator', None):
        ranks = getattr(opt, 'ranks', 1)
        unit = 'pairs' if opt.mixing else 'clips'
        bn = 'over the global batch (--mnBN)' if opt.mnBN else 'per rank'
        rows.append(('ranks', f'{ranks} ({opt.communicator} communicator; global batch '
                              f'{ranks} x {opt.batchSize} = {ranks * opt.batchSize} {unit}; '
                              f'BN {bn})'))
    if getattr(opt, 'noShuffle', False):
        rows.append(('order', 'file order, no shuffling (--noShuffle)'))
    width = max(len(k) for k, _ in rows)
    line = '+' + '-' * 40
    return [line] + [f'| {k:<{width}} : {v}' for k, v in rows] + [line]
