"""Summarise training runs as the paper's tables (Table 1/2: test error per network x learning
method x dataset; Table 3: FGSM test error), in Markdown, CSV and a bar chart, with per-class test
errors and confusion matrices.

    .venv/bin/python report.py results/ [more run folders ...] [--paper] [--out results/report]

Each argument is a ``--save`` folder of ``main.py`` or any folder above several of them: every
``split{k}/run.json`` below it is a split that was started, and its ``result.json`` (if present)
says it finished. Rows are (network, strong augmentation, learning method); columns the datasets.
A cell is ``mean ± standard error`` of the final 10-crop error over the finished splits, with the
count of splits, e.g. ``7.20 ± 0.41 (5/5)``. A cell with fewer finished splits than the dataset
has folds is marked ``incomplete`` and lists what is missing: it is never averaged silently as if
it were the whole cross-validation. ``--paper`` adds the paper's numbers (docs/method.md §7) beside ours.

Beside the final error, a second table gives the best epoch's error of each cell, labelled as
chosen on the test fold (optimistic: the test fold picked the epoch; never the reported number).
A run of a preset at other mixing points (``--eligible``) or with another combination is a row of
its own (``intermix L=0``; :func:`learning_label`). Since every method sees the same folds, a
paired table compares each pair of rows split by split (the differences, their mean ± standard
error, the wins), at the final and at the best epoch; with ``--paper``, a table puts both
protocols beside the paper's number and says which protocol each paper row most likely used.

Writes ``OUT/report.md``, ``OUT/report.csv`` (one row per cell, with every split's final and
best-epoch error) and ``OUT/report.png`` (bars with standard-error whiskers; the paper's values as
markers). From the splits whose result.json holds the final test's confusion matrix (runs of this
version on): per cell a table of the test error of each class per split (in report.md, and
``OUT/per_class.csv``, one row per cell, class and split) and ``OUT/confusion-<cell>.png``, the
confusion matrix summed over the splits, labelled with the class names.

From each split's ``log.jsonl`` (when present), ``OUT/curves-<dataset>.png`` draws the test error
against the epoch: one panel per network, one colour per learning method (the mean over its splits
as a line, their range shaded), and with ``--paper`` the paper's error as a dashed line of the
same colour.
"""
import csv
import json
import os
import sys

import numpy as np

import models
from learning import LEARNING
import utils
from datagen import registry
from utils import UserError

PROG = 'report.py'
DATASET_ORDER = list(registry.DATASETS)       # columns, in the registry's order
LEARNING_ORDER = list(LEARNING)                # rows, in the learning registry's order

# The paper's Table 1 (docs/method.md §7.1): error % as (mean, standard error) for ESC-50, ESC-10
# and UrbanSound8K (no standard error given), keyed by (network, strong augmentation, learning).
_SE = None  # the paper gives no standard error for UrbanSound8K
PAPER = {
    ('m18', False, 'standard'): ((31.5, 0.5), (18.2, 0.5), (28.8, _SE)),
    ('m18', False, 'bc'): ((26.7, 0.1), (14.2, 0.9), (26.5, _SE)),
    ('m18', False, 'speechmix'): ((24.3, 0.2), (12.4, 0.5), (25.1, _SE)),
    ('m18', False, 'intermix'): ((25.4, 0.5), (12.6, 0.5), (25.1, _SE)),
    ('soundnet5', False, 'standard'): ((33.8, 0.2), (16.4, 0.8), (33.3, _SE)),
    ('soundnet5', False, 'bc'): ((27.4, 0.3), (13.9, 0.4), (30.2, _SE)),
    ('soundnet5', False, 'speechmix'): ((25.6, 0.2), (11.6, 0.3), (27.4, _SE)),
    ('soundnet5', False, 'intermix'): ((25.1, 0.3), (10.6, 0.3), (26.5, _SE)),
    ('envnet', False, 'standard'): ((29.2, 0.1), (12.8, 0.4), (33.7, _SE)),
    ('envnet', False, 'bc'): ((24.1, 0.2), (11.3, 0.6), (28.9, _SE)),
    ('envnet', False, 'speechmix'): ((22.5, 0.3), (9.3, 0.4), (26.5, _SE)),
    ('envnet', False, 'intermix'): ((22.5, 0.3), (9.1, 0.2), (26.8, _SE)),
    ('logmel_cnn', False, 'standard'): ((27.6, 0.2), (13.2, 0.4), (25.3, _SE)),
    ('logmel_cnn', False, 'bc'): ((23.1, 0.3), (9.4, 0.4), (23.5, _SE)),
    ('logmel_cnn', False, 'speechmix'): ((22.1, 0.3), (8.4, 0.2), (22.1, _SE)),
    ('logmel_cnn', False, 'intermix'): ((21.9, 0.2), (8.3, 0.4), (21.1, _SE)),
    ('envnetv2', False, 'standard'): ((25.6, 0.3), (14.2, 0.8), (30.9, _SE)),
    ('envnetv2', False, 'bc'): ((18.2, 0.2), (10.6, 0.6), (23.4, _SE)),
    ('envnetv2', False, 'speechmix'): ((16.2, 0.3), (8.5, 0.4), (21.6, _SE)),
    ('envnetv2', False, 'intermix'): ((15.8, 0.4), (8.2, 0.4), (21.4, _SE)),
    ('envnetv2', True, 'standard'): ((21.2, 0.3), (10.9, 0.6), (24.9, _SE)),
    ('envnetv2', True, 'bc'): ((15.1, 0.2), (8.6, 0.1), (21.7, _SE)),
    ('envnetv2', True, 'speechmix'): ((13.1, 0.2), (7.1, 0.1), (20.8, _SE)),
    ('envnetv2', True, 'intermix'): ((12.9, 0.4), (7.2, 0.1), (20.5, _SE)),
    # Table 2 (docs/method.md §7.2), the ablation of EnvNet-v2 + strong augmentation; no SE.
    ('envnetv2', True, 'intermix-vanilla'): ((13.6, _SE), (7.9, _SE), (21.0, _SE)),
    ('envnetv2', True, 'intermix-hidden'): ((13.3, _SE), (7.7, _SE), (20.8, _SE)),
}
PAPER_HUMAN = (18.7, 4.3, None)  # Table 1's human row (ESC-50, ESC-10; none for UrbanSound8K)
PAPER_NAMES = {'m18': 'M18', 'soundnet5': 'SoundNet5', 'envnet': 'EnvNet',
               'logmel_cnn': 'PiczakCNN', 'envnetv2': 'EnvNet-v2'}
# docs/method.md §7.3, Table 3: FGSM error % on ESC-10 at epsilon 1e-2, 1e-3, 1e-4, 1e-5.
PAPER_FGSM = {
    'standard': (64.5, 37.7, 36.5, 36.2),
    'bc': (47.2, 28.7, 26.9, 26.8),
    'intermix': (42.9, 26.2, 25.1, 25.0),
}
PAPER_FGSM_EPS = ('eps=0.01', 'eps=0.001', 'eps=0.0001', 'eps=1e-05')
PAPER_DATASETS = ('esc50', 'esc10', 'urbansound8k')  # the order of the tuples above


def paper_cell(net, augment, learning, dataset):
    """The paper's (mean error %, standard error or None) for a cell, or None where the paper has
    no number (docs/method.md §7)."""
    row = PAPER.get((net, bool(augment), learning))
    if row is None or dataset not in PAPER_DATASETS:
        return None
    return row[PAPER_DATASETS.index(dataset)]


def paper_error(net, augment, learning, dataset):
    """The paper's mean error (%) for a cell, or None where the paper has none."""
    cell = paper_cell(net, augment, learning, dataset)
    return None if cell is None else cell[0]


def paper_text(cell):
    """'7.2 ± 0.1', '21.0' (no standard error in the paper) or '-' (no number)."""
    if cell is None:
        return '-'
    mean, se = cell
    return f'{mean:.1f}' if se is None else f'{mean:.1f} ± {se:.1f}'


def paper_tables():
    """The paper's Table 1 (with its human row), Table 2 and Table 3 as Markdown text."""
    header = ['network', 'learning'] + [registry.get(d).title for d in PAPER_DATASETS]
    rows = []
    for (net, augment, learning), cells in PAPER.items():
        name = PAPER_NAMES[net] + (' + strong augmentation' if augment else '')
        rows.append([name, learning] + [paper_text(c) for c in cells])
    rows.append(['human', '-'] + ['-' if v is None else f'{v:.1f}' for v in PAPER_HUMAN])
    fgsm = [[learning] + [f'{v:.1f}' for v in values] for learning, values in PAPER_FGSM.items()]
    return ('## The paper: test error (%), mean ± standard error over the folds (Tables 1 and 2; '
            'UrbanSound8K and the ablation rows without SE)\n\n' + markdown(header, rows) + '\n\n'
            '## The paper: FGSM test error (%) on ESC-10 (Table 3)\n\n'
            + markdown(['learning'] + [e.split('=')[1] for e in PAPER_FGSM_EPS], fgsm) + '\n')


def find_splits(roots):
    """Every split folder (holding run.json) below the given folders, sorted.

    Raises UserError naming a folder that does not exist or holds no runs.
    """
    found = []
    for root in roots:
        if not os.path.isdir(root):
            raise UserError(f'{root}: no such folder')
        before = len(found)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            if 'run.json' in filenames and os.path.basename(dirpath).startswith('split'):
                found.append(dirpath)
        if len(found) == before:
            raise UserError(f'{root}: no runs found (no split*/run.json below it)')
    return sorted(set(found))


def _read_json(path, required=()):
    """The JSON object in ``path``, with each key of ``required`` ({key: test}) present and
    passing its test; UserError naming the file, what is wrong and what to do otherwise."""
    fix = ('pass the folders of finished runs only, or restore the file (main.py rewrites '
           'result.json when the split is rerun with --resume after deleting it)')
    value = utils.read_json_object(path, fix)
    for key, valid in required.items():
        parent, _, child = key.partition('.')
        item = value.get(parent)
        if child:
            item = item.get(child) if isinstance(item, dict) else None
        if item is None or not valid(item):
            what = 'missing' if item is None else f'invalid ({item!r})'
            raise UserError(f'{path}: {key} {what}; {fix}')
    return value


def _is_str(value):
    return isinstance(value, str)


# What report.py needs of each file of a split (key or parent.key: test of its value).
RUN_KEYS = {'settings.netType': _is_str, 'settings.learning': _is_str,
            'settings.dataset': lambda v: v in registry.DATASETS,
            'settings.strongAugment': lambda v: isinstance(v, bool)}
RESULT_KEYS = {'final_error': lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
               and bool(np.isfinite(v)) and 0 <= v <= 100}


def learning_label(settings):
    """The row name of a run's learning method: the ``--learning`` preset, plus ``L=...`` when
    its mixing points (``--eligible``) are not the preset's for the network and ``comb=...``
    when its combination is not the preset's (e.g. 'intermix L=0' for InterMix at the input
    only), so that a study arm is a row of its own, never averaged with the preset."""
    learning = settings['learning']
    preset = LEARNING.get(learning)
    if preset is None or preset.points is None:
        return learning
    label = learning
    eligible = settings.get('eligible')
    net = models.archs.get(settings['netType'])
    if eligible is not None and net is not None:
        hidden = sorted(k for k in net.mix_points if k > 0)
        default = [0] if preset.points == 'input' else hidden
        if sorted(eligible) != default:
            label += ' L=' + ','.join(map(str, sorted(eligible)))
    combination = settings.get('combination')
    if combination is not None and combination != preset.combination:
        label += f' comb={combination}'
    return label


def base_learning(label):
    """The ``--learning`` preset of a row name (:func:`learning_label`)."""
    return label.split(' ')[0]


def collect(split_dirs):
    """Group the splits into cells.

    Returns a dict ``{(net, augment, learning, dataset): cell}`` where cell is a dict with
    ``finished`` ({split: final error}), ``unfinished`` (sorted splits started but without a
    result), ``fgsm`` ({split: {key: error}}), ``folders`` (sorted run folders), ``results``
    ({split: its result.json as a dict, plus ``folder``, the split folder}) and ``split_dirs``
    ([(split, split folder)] of every split, finished or not).
    """
    cells = {}
    for split_dir in split_dirs:
        run = _read_json(os.path.join(split_dir, 'run.json'), RUN_KEYS)
        s = run['settings']
        key = (s['netType'], bool(s['strongAugment']), learning_label(s), s['dataset'])
        cell = cells.setdefault(key, {'finished': {}, 'unfinished': [], 'fgsm': {},
                                      'folders': set(), 'results': {}, 'split_dirs': []})
        split = int(os.path.basename(split_dir)[len('split'):])
        cell['folders'].add(os.path.dirname(split_dir))
        cell['split_dirs'].append((split, split_dir))
        result_path = os.path.join(split_dir, 'result.json')
        if os.path.isfile(result_path):
            result = _read_json(result_path, RESULT_KEYS)
            if split in cell['finished']:
                raise UserError(f'{split_dir}: split {split} of {"/".join(map(str, key))} '
                                f'appears twice (also in another folder); pass one run per cell')
            cell['finished'][split] = float(result['final_error'])
            cell['results'][split] = dict(result, folder=split_dir)
            if result.get('fgsm'):
                cell['fgsm'][split] = result['fgsm']
        else:
            cell['unfinished'].append(split)
    for cell in cells.values():
        cell['unfinished'] = sorted(set(cell['unfinished']) - set(cell['finished']))
        cell['folders'] = sorted(cell['folders'])
    return cells


def summarise_cell(dataset, cell):
    """Mean, standard error and status of a cell (see :func:`collect`)."""
    n_folds = registry.get(dataset).n_folds
    errors = [cell['finished'][k] for k in sorted(cell['finished'])]
    mean, se = utils.mean_and_standard_error(errors) if errors else (None, None)
    if len(errors) == 1:
        se = None  # one split: no standard error (utils gives 0.0)
    missing = sorted(set(range(1, n_folds + 1)) - set(cell['finished']))
    return {'mean': mean, 'se': se, 'n': len(errors), 'n_folds': n_folds,
            'complete': not missing, 'missing': missing, 'unfinished': cell['unfinished'],
            'splits': sorted(cell['finished']), 'errors': errors}


def cell_text(summary):
    """'7.20 ± 0.41 (5/5)' ('30.00 (1/5; one split: no SE)' for one split), with
    'incomplete: ...' when splits are missing."""
    if summary['n'] == 0:
        text = 'no finished split'
    elif summary['se'] is None:
        text = f'{summary["mean"]:.2f} (1/{summary["n_folds"]}; one split: no SE)'
    else:
        text = f'{summary["mean"]:.2f} ± {summary["se"]:.2f} ({summary["n"]}/{summary["n_folds"]})'
    if not summary['complete']:
        notes = []
        if summary['unfinished']:
            notes.append('unfinished ' + ','.join(map(str, summary['unfinished'])))
        not_started = sorted(set(summary['missing']) - set(summary['unfinished']))
        if not_started:
            notes.append('not run ' + ','.join(map(str, not_started)))
        text += ' incomplete: ' + '; '.join(notes)
    return text


def row_label(net, augment, learning):
    return f'{net}{" +aug" if augment else ""} / {learning}'


def _sort_key(key):
    net, augment, learning, _ = key
    base = base_learning(learning)
    order = LEARNING_ORDER.index(base) if base in LEARNING_ORDER else len(LEARNING_ORDER)
    return (net, not augment, order, learning)


def build_tables(cells, with_paper):
    """The Table-1 rows, the FGSM rows and the CSV records."""
    datasets = [d for d in DATASET_ORDER if any(k[3] == d for k in cells)]
    rows = sorted({k[:3] for k in cells}, key=lambda r: _sort_key(r + (None,)))
    header = ['network / learning']
    for d in datasets:
        header.append(d)
        if with_paper:
            header.append(f'{d} (paper)')
    table, records = [], []
    for net, augment, learning in rows:
        line = [row_label(net, augment, learning)]
        for d in datasets:
            cell = cells.get((net, augment, learning, d))
            paper = paper_cell(net, augment, learning, d)
            if cell is None:
                line.append('-')
            else:
                s = summarise_cell(d, cell)
                line.append(cell_text(s))
                records.append({
                    'network': net, 'strong_augment': augment, 'learning': learning,
                    'dataset': d, 'mean_error': s['mean'], 'standard_error': s['se'],
                    'n_splits': s['n'], 'n_folds': s['n_folds'], 'complete': s['complete'],
                    'splits': ' '.join(map(str, s['splits'])),
                    'errors': ' '.join(f'{e:.4f}' for e in s['errors']),
                    'unfinished': ' '.join(map(str, s['unfinished'])),
                    'paper_error': None if paper is None else paper[0],
                    'paper_standard_error': None if paper is None else paper[1],
                    'folders': ' '.join(cell['folders'])})
                records[-1].update(best_record(d, cell))
            if with_paper:
                line.append(paper_text(paper))
        table.append(line)

    fgsm_rows = []
    eps_keys = sorted({e for cell in cells.values() for f in cell['fgsm'].values() for e in f
                       if e != 'clean'}, key=lambda e: -float(e.split('=')[1]))
    if eps_keys:
        fgsm_header = ['network / learning', 'dataset', 'splits', 'clean'] + eps_keys
        for key in sorted(cells, key=_sort_key):
            cell = cells[key]
            if not cell['fgsm']:
                continue
            splits = sorted(cell['fgsm'])
            mean = {e: np.mean([cell['fgsm'][k][e] for k in splits if e in cell['fgsm'][k]])
                    for e in ['clean'] + eps_keys}
            line = [row_label(*key[:3]), key[3], ' '.join(map(str, splits))]
            line += [f'{mean[e]:.2f}' if not np.isnan(mean[e]) else '-' for e in ['clean'] + eps_keys]
            fgsm_rows.append(line)
            if with_paper and key[0] == 'envnetv2' and key[3] == 'esc10' and key[2] in PAPER_FGSM:
                paper = dict(zip(PAPER_FGSM_EPS, PAPER_FGSM[key[2]]))
                fgsm_rows.append([f'{row_label(*key[:3])} (paper)', 'esc10', '5', '-'] +
                                 [f'{paper[e]:.1f}' if e in paper else '-' for e in eps_keys])
        fgsm_table = (fgsm_header, fgsm_rows)
    else:
        fgsm_table = None
    return (header, table), fgsm_table, records


# ---------------------------------------------------------------------------------------------
# The best epoch, chosen on the test fold (beside the final epoch's error, never instead of it)

BEST_TITLE = ('Test error (%) of the best epoch, chosen on the test fold (optimistic: the test '
              'fold picked the epoch; not a result), mean ± standard error over splits')


def best_cell(cell):
    """``cell`` (see :func:`collect`) with each finished split's best-epoch error instead of its
    final error: {split: (error %, epoch)} in ``best``; splits whose result has none are left
    out of ``finished``."""
    best = {k: (float(r['best_error_on_test_fold']['error']),
                int(r['best_error_on_test_fold']['epoch']))
            for k, r in cell.get('results', {}).items() if r.get('best_error_on_test_fold')}
    return dict(cell, finished={k: e for k, (e, _) in best.items()}, best=best)


def best_record(dataset, cell):
    """The CSV columns of a cell's best-epoch error (mean, standard error, per split, epochs)."""
    chosen = best_cell(cell)
    s = summarise_cell(dataset, chosen)
    return {'best_epoch_mean_error': s['mean'], 'best_epoch_standard_error': s['se'],
            'best_epoch_errors': ' '.join(f'{e:.4f}' for e in s['errors']),
            'best_epochs': ' '.join(str(chosen['best'][k][1]) for k in s['splits'])}


def best_table(cells):
    """The best-epoch errors in the layout of the main table: (header, rows); a cell reads
    ``mean ± SE (n/N) at epochs e1, e2, ...``."""
    datasets = [d for d in DATASET_ORDER if any(k[3] == d for k in cells)]
    rows = sorted({k[:3] for k in cells}, key=lambda r: _sort_key(r + (None,)))
    table = []
    for net, augment, learning in rows:
        line = [row_label(net, augment, learning)]
        for d in datasets:
            cell = cells.get((net, augment, learning, d))
            if cell is None:
                line.append('-')
                continue
            chosen = best_cell(cell)
            s = summarise_cell(d, chosen)
            epochs = ', '.join(str(chosen['best'][k][1]) for k in s['splits'])
            line.append(cell_text(s) + (f'; chosen epochs {epochs}' if epochs else ''))
        table.append(line)
    return ['network / learning'] + datasets, table


# ---------------------------------------------------------------------------------------------
# Paired comparison: every method sees the same folds, so compare them split by split

PAIRED_TITLE = ('Paired comparison, final epoch: test error (%) of A minus B on the splits both '
                'finished (negative: A is better), mean ± standard error of the differences, '
                'and on how many splits each is lower')


def paired_rows(cells, errors=lambda cell: cell['finished']):
    """For every (network, augmentation, dataset) and every pair of its rows (A above B in the
    table's order) with at least two splits finished by both: [pair, dataset, splits, the
    per-split differences A - B, mean ± SE of the differences, 'A lower / B lower / ties'].
    ``errors(cell)`` gives {split: error} (default: the final epoch's)."""
    groups = {}
    for key in sorted(cells, key=_sort_key):
        net, augment, learning, dataset = key
        groups.setdefault((net, augment, dataset), []).append(key)
    rows = []
    for (net, augment, dataset), keys in sorted(groups.items()):
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                ea, eb = errors(cells[a]), errors(cells[b])
                common = sorted(set(ea) & set(eb))
                if len(common) < 2:
                    continue
                diff = [ea[k] - eb[k] for k in common]
                mean, se = utils.mean_and_standard_error(diff)
                wins = (sum(d < 0 for d in diff), sum(d > 0 for d in diff),
                        sum(d == 0 for d in diff))
                rows.append([f'{row_label(net, augment, a[2])} - {b[2]}',
                             registry.get(dataset).title, ','.join(map(str, common)),
                             ' '.join(f'{d:+.2f}' for d in diff), f'{mean:+.2f} ± {se:.2f}',
                             f'{wins[0]} / {wins[1]} / {wins[2]}'])
    return rows


PAIRED_HEADER = ['A - B', 'dataset', 'splits', 'A - B per split', 'mean ± SE',
                 'A lower / B lower / ties']


def paper_protocol(net, learning):
    """Which of the two protocols a paper row most likely reports (see README "Results")."""
    base = base_learning(learning)
    if net in ('envnet', 'envnetv2') and base in ('standard', 'bc'):
        return 'final epoch (the BC paper\'s figures, digit for digit; its code prints the final)'
    if base in ('speechmix', 'intermix', 'intermix-vanilla', 'intermix-hidden'):
        return 'best epoch, likely (the SpeechMix/InterMix codes print the lowest test error)'
    return 'not stated (the InterMix code prints the best epoch)'


def protocol_rows(cells):
    """Per cell: the final-epoch and best-epoch means beside the paper's number and the
    protocol that paper row most likely used."""
    rows = []
    for key in sorted(cells, key=_sort_key):
        net, augment, learning, dataset = key
        final = summarise_cell(dataset, cells[key])
        best = summarise_cell(dataset, best_cell(cells[key]))
        paper = paper_cell(net, augment, learning, dataset)
        rows.append([row_label(net, augment, learning), registry.get(dataset).title,
                     cell_text(final), cell_text(best) if best['n'] else '-',
                     paper_text(paper) if paper else '-',
                     paper_protocol(net, learning) if paper else '-'])
    return rows


PROTOCOL_HEADER = ['network / learning', 'dataset', 'final epoch (reported here)',
                   'best epoch (chosen on the test fold)', 'paper', 'paper row, most likely']


# ---------------------------------------------------------------------------------------------
# Per-class test errors and confusion matrices (from result.json's ``confusion_matrix``)

def cell_name(key):
    """A file-name-safe name of a cell: 'esc10-envnetv2-aug-intermix'."""
    net, augment, learning, dataset = key
    learning = learning.replace(' L=', '-L').replace(' comb=', '-').replace(',', '')
    return f'{dataset}-{net}{"-aug" if augment else ""}-{learning}'


def cell_confusions(key, cell):
    """The per-class data of a cell: (class names, {split: confusion (C, C) int64 array}, splits
    without a confusion matrix). Raises UserError when two splits name their classes
    differently (they were trained on different data files)."""
    names, matrices, first = None, {}, None
    for split in sorted(cell.get('results', {})):
        result = cell['results'][split]
        matrix = result.get('confusion_matrix')
        if not matrix:
            continue
        if names is None:
            names, first = list(matrix['class_names']), result['folder']
        elif list(matrix['class_names']) != names:
            raise UserError(f'{result["folder"]}: its classes differ from those of {first} '
                            f'({"/".join(map(str, key))}); pass runs of one data file per cell')
        matrices[split] = np.asarray(matrix['counts'], dtype=np.int64)
    missing = sorted(set(cell.get('results', {})) - set(matrices))
    return names, matrices, missing


def class_errors(confusion):
    """Test error (%) of each true class (row) of a confusion matrix; NaN for a class without
    test clips."""
    confusion = np.asarray(confusion, dtype=np.float64)
    clips = confusion.sum(axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(clips > 0, 100.0 * (clips - np.diag(confusion)) / clips, np.nan)


def per_class_table(names, matrices):
    """A cell's per-class table: (header, rows, CSV records). Columns: class, the test error
    (%) of each split, mean ± standard error over the splits holding clips of the class (the
    mean alone for one split), and the test clips summed over the splits; the last row is all
    classes together."""
    splits = sorted(matrices)
    errors = {k: class_errors(m) for k, m in matrices.items()}
    header = ['class'] + [f'split {k}' for k in splits] + ['mean ± SE', 'test clips']
    rows, records = [], []
    for c, name in enumerate(names + ['all classes']):
        if c < len(names):
            values = [errors[k][c] for k in splits]
            clips = [int(matrices[k][c].sum()) for k in splits]
        else:
            clips = [int(matrices[k].sum()) for k in splits]
            values = [100.0 * (n - np.trace(matrices[k])) / n if n else np.nan
                      for k, n in zip(splits, clips)]
        present = [v for v in values if not np.isnan(v)]
        if len(present) > 1:
            mean = '{:.1f} ± {:.1f}'.format(*utils.mean_and_standard_error(present))
        else:  # one split: no standard error
            mean = f'{present[0]:.1f}' if present else '-'
        rows.append([name] + ['-' if np.isnan(v) else f'{v:.1f}' for v in values]
                    + [mean, str(sum(clips))])
        records += [{'class': name, 'label': c if c < len(names) else '', 'split': k,
                     'test error (%)': None if np.isnan(v) else round(float(v), 4),
                     'test clips': n} for k, v, n in zip(splits, values, clips)]
    return header, rows, records


def confusion_figure(key, names, matrices, path):
    """Draw the confusion matrix of a cell, summed over its splits, to the PNG ``path``.

    Rows are the true classes, labelled with their names and test error, columns the predicted
    classes; colour is the share of the true class's test clips, numbers the clip counts (zeros
    left blank). The figure grows with the classes so that 50 stay legible.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    net, augment, learning, dataset = key
    splits = sorted(matrices)
    counts = sum(matrices[k] for k in splits)
    n = len(names)
    clips = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, clips, out=np.zeros(counts.shape), where=clips > 0)
    errors = class_errors(counts)
    side = max(6.5, 0.3 * n + 3.5)
    font = 9 if n <= 12 else 8 if n <= 30 else 7
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(share, cmap='Blues', vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n))
    ax.set_xticklabels(names, rotation=90, fontsize=font)
    ax.set_yticks(range(n))
    ax.set_yticklabels([f'{name} ({"-" if np.isnan(e) else f"{e:.0f}%"})'
                        for name, e in zip(names, errors)], fontsize=font)
    for i, j in zip(*np.nonzero(counts)):
        ax.text(j, i, str(counts[i, j]), ha='center', va='center', fontsize=font - (n > 12),
                color='white' if share[i, j] > 0.5 else 'black')
    ax.set_xlabel('predicted class')
    ax.set_ylabel('true class (its test error)')
    total = int(counts.sum())
    error = 100.0 * (total - np.trace(counts)) / total if total else float('nan')
    ax.set_title(f'{registry.get(dataset).title}, {row_label(net, augment, learning)}: confusion '
                 f'matrix of the final 10-crop test\nsummed over split{"s" * (len(splits) > 1)} '
                 f'{", ".join(map(str, splits))} ({total} test clips, test error {error:.1f}%)',
                 fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02,
                 label="share of the true class's test clips")
    fig.tight_layout()
    utils.atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100), suffix='.png')
    plt.close(fig)


def per_class_reports(cells, out):
    """Per-class tables of every cell with confusion matrices, and its figure to draw.

    Returns (Markdown text, CSV records, figures), ``figures`` a list of ``(key, class names,
    {split: confusion}, PNG path in out)`` for :func:`confusion_figure`. Raises UserError (from
    :func:`cell_confusions`) before anything is drawn.
    """
    sections, records, figures = [], [], []
    per_cell = [(key, *cell_confusions(key, cells[key])) for key in sorted(cells, key=_sort_key)]
    for key, names, matrices, missing in per_cell:
        if not matrices:
            continue
        header, rows, cell_records = per_class_table(names, matrices)
        net, augment, learning, dataset = key
        note = (f'\n\nSplits {", ".join(map(str, missing))} have no per-class results (their '
                f'result.json predates them).' if missing else '')
        figure = os.path.join(out, f'confusion-{cell_name(key)}.png')
        sections.append(f'### {row_label(net, augment, learning)}, {dataset}: test error (%) per '
                        f'class at the final epoch\n\n{markdown(header, rows)}{note}\n\n'
                        f'![Confusion matrix, summed over the splits]'
                        f'({os.path.basename(figure)})\n')
        records += [{'network': net, 'strong_augment': augment, 'learning': learning,
                     'dataset': dataset, **r} for r in cell_records]
        figures.append((key, names, matrices, figure))
    text = ''
    if sections:
        text = '\n## Test error (%) per class, final epoch\n\n' + '\n'.join(sections)
    return text, records, figures


# Column names of report.csv: what each number is, in words and units.
CSV_HEADERS = {
    'mean_error': 'final test error (%): mean',
    'standard_error': 'final test error (%): standard error',
    'errors': 'final test error (%) per split',
    'paper_error': 'paper test error (%)',
    'paper_standard_error': 'paper test error (%): standard error',
    'best_epoch_mean_error': 'best-epoch test error (%), chosen on the test fold: mean',
    'best_epoch_standard_error': 'best-epoch test error (%), chosen on the test fold: '
                                 'standard error',
    'best_epoch_errors': 'best-epoch test error (%), chosen on the test fold, per split',
    'best_epochs': 'best epoch per split (chosen on the test fold)',
}


def write_csv(path, records, headers=None):
    """Write ``records`` (dicts with the same keys) as a CSV file, atomically; ``headers`` maps
    keys to column names (others are kept)."""
    headers = headers or {}

    def write(tmp):
        with open(tmp, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow([headers.get(k, k) for k in records[0]])
            writer.writerows([['' if r[k] is None else r[k] for k in records[0]]
                              for r in records])
    utils.atomic_write(path, write)


def markdown(header, rows):
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(lines)


def bar_chart(records, path):
    """Bars of mean error with standard-error whiskers per dataset; paper values as markers."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    datasets = [d for d in DATASET_ORDER if any(r['dataset'] == d for r in records)]
    bars = [[r for r in records if r['dataset'] == d and r['mean_error'] is not None]
            for d in datasets]
    # Wide enough for every bar's two- or three-line label (about 0.9 inch a bar).
    widths = [max(4.5, 0.9 * len(recs)) for recs in bars]
    fig, axes = plt.subplots(1, len(datasets), figsize=(sum(widths) + 1, 4.5), squeeze=False,
                             gridspec_kw={'width_ratios': widths})
    for ax, d, recs in zip(axes[0], datasets, bars):
        labels = [f'{r["network"]}{" +aug" if r["strong_augment"] else ""}\n'
                  + r['learning'].replace(' ', '\n')  # 'intermix L=0,1,2' on two lines
                  + ('' if r['complete'] else f'\n({r["n_splits"]}/{r["n_folds"]} splits)')
                  for r in recs]
        xs = np.arange(len(recs))
        colors = ['tab:blue' if r['complete'] else 'tab:gray' for r in recs]
        ax.bar(xs, [r['mean_error'] for r in recs],
               yerr=[r['standard_error'] or 0.0 for r in recs],  # one split: no whisker
               color=colors, capsize=4, label='ours (grey: incomplete)')
        paper = [(x, r['paper_error']) for x, r in zip(xs, recs) if r['paper_error'] is not None]
        if paper:
            ax.scatter([p[0] for p in paper], [p[1] for p in paper], marker='D', color='tab:red',
                       zorder=3, label='paper')
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(d)
        ax.set_ylabel('test error (%), final epoch, mean ± SE')
        ax.grid(axis='y', alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    utils.atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=120), suffix='.png')
    plt.close(fig)


def read_curve(split_dir):
    """The test error against the epoch from a split's ``log.jsonl`` (training.JsonLinesLog).

    Returns ``(epochs, errors)``, two lists in log order: the epochs whose entry has a test
    error (``validation/main/error``, %) and those errors; both empty when the split has no
    log.jsonl. Raises UserError naming the file and line when a line is not a JSON object.
    """
    path = os.path.join(split_dir, 'log.jsonl')
    epochs, errors = [], []
    if not os.path.isfile(path):
        return epochs, errors
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(f'{path}: unreadable ({type(e).__name__}: {e})') from None
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            raise UserError(f'{path}: line {number} is not a JSON object; pass the folders of '
                            f'runs of main.py, or delete the damaged log.jsonl')
        error = entry.get('validation/main/error')
        if isinstance(error, (int, float)) and isinstance(entry.get('epoch'), int):
            epochs.append(entry['epoch'])
            errors.append(float(error))
    return epochs, errors


def collect_curves(cells):
    """The test-error curves of every split of ``cells`` (see :func:`collect`) that has them.

    Returns ``{dataset: {(network, strong augmentation): {learning: [(epochs, errors)]}}}``, one
    pair per split from :func:`read_curve` (split order), finished splits and unfinished ones
    alike. Raises UserError (from :func:`read_curve`) for a damaged log.jsonl.
    """
    curves = {}
    for key in sorted(cells, key=_sort_key):
        net, augment, learning, dataset = key
        for _, split_dir in sorted(cells[key]['split_dirs']):
            epochs, errors = read_curve(split_dir)
            if epochs:
                curves.setdefault(dataset, {}).setdefault((net, augment), {}).setdefault(
                    learning, []).append((epochs, errors))
    return curves


def mean_curve(runs):
    """The mean test-error curve of one learning method over its splits.

    ``runs`` is a list of ``(epochs, errors)`` pairs, one per split (:func:`read_curve`: epochs
    ascending, errors in %). Returns ``(epochs, mean, low, high)``, NumPy arrays over the epochs
    that every split tested (an unfinished split shortens the curve to its last test), with the
    mean, lowest and highest error of the splits there; empty arrays when they share no epoch.
    Raises ValueError for an empty ``runs``.
    """
    if not runs:
        raise ValueError('mean_curve needs at least one split')
    common = set(runs[0][0])
    for epochs, _ in runs[1:]:
        common &= set(epochs)
    epochs = np.array(sorted(common), dtype=np.int64)
    lookups = [dict(zip(*run)) for run in runs]  # epoch -> error, one per split
    table = np.array([[lookup[k] for k in epochs] for lookup in lookups],
                     dtype=np.float64).reshape(len(runs), len(epochs))
    return epochs, table.mean(axis=0), table.min(axis=0), table.max(axis=0)


def curve_figures(curves, out, with_paper):
    """Draw ``OUT/curves-<dataset>.png`` for each dataset of ``curves`` (:func:`collect_curves`).

    One panel per (network, strong augmentation), one colour per learning method: the mean over
    its splits (:func:`mean_curve`, labelled with the number of splits) as a line, the range of
    the splits shaded; with ``with_paper`` the paper's error of the cell as a dashed horizontal
    line in the method's colour. The legend stands right of the panels. Returns the written file
    names.
    """
    if not curves:
        return []
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    written = []
    for dataset in [d for d in DATASET_ORDER if d in curves]:
        panels = curves[dataset]
        fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 4.5), squeeze=False)
        for ax, ((net, augment), methods) in zip(axes[0], panels.items()):
            for number, (learning, runs) in enumerate(methods.items()):
                colour = f'C{number}'
                epochs, mean, low, high = mean_curve(runs)
                n = len(runs)
                ax.plot(epochs, mean, color=colour, lw=1.2,
                        label=f'{learning}: mean of {n} split{"s" if n > 1 else ""}')
                if n > 1:
                    ax.fill_between(epochs, low, high, color=colour, alpha=0.08, lw=0)
                if with_paper:
                    paper = paper_cell(net, augment, learning, dataset)
                    if paper is not None:
                        ax.axhline(paper[0], color=colour, ls='--', lw=1,
                                   label=f'{learning}: paper {paper_text(paper)}')
            ax.set_title(f'{row_label(net, augment, "").rstrip(" /")}, {dataset}: test error '
                         f'(line: mean over splits, shaded: their range)', fontsize=9)
            ax.set_xlabel('epoch')
            ax.set_ylabel('test error (%)')
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        name = f'curves-{dataset}.png'
        utils.atomic_write(os.path.join(out, name),
                           lambda tmp: fig.savefig(tmp, format='png', dpi=100,
                                                bbox_inches='tight'), suffix='.png')
        plt.close(fig)
        written.append(name)
    return written


def main(argv=None):
    p = utils.OneLineParser(prog=PROG, description=__doc__.split('\n\n')[0],
                            epilog='example: .venv/bin/python report.py results/ --paper')
    p.add_argument('runs', nargs='*', help='--save folders of main.py, or folders above them')
    p.add_argument('--paper', action='store_true',
                   help="put the paper's numbers (mean ± SE) beside ours and append the paper's "
                        "Tables 1-3 whole; alone, without run folders, print just those")
    p.add_argument('--out', default=os.path.join('results', 'report'),
                   help='folder for report.md, report.csv, report.png, per_class.csv, the '
                        'confusion-*.png and the curves-*.png figures')
    args = p.parse_args(argv)
    if not args.runs:
        if not args.paper:
            p.error("give one or more run folders (or --paper alone for the paper's tables)")
        print(paper_tables())
        return 0
    try:
        cells = collect(find_splits(args.runs))
        (header, rows), fgsm, records = build_tables(cells, args.paper)
        text = ('## Test error (%) at the final epoch, mean ± standard error over splits '
                '(finished/total)\n\n')
        text += markdown(header, rows) + '\n'
        text += f'\n## {BEST_TITLE}\n\n' + markdown(*best_table(cells)) + '\n'
        paired = paired_rows(cells)
        if paired:
            text += f'\n## {PAIRED_TITLE}\n\n' + markdown(PAIRED_HEADER, paired) + '\n'
            paired_best = paired_rows(cells, lambda c: best_cell(c)['finished'])
            text += ('\n## The same pairs at the best epoch of each split (chosen on the test '
                     'fold: optimistic)\n\n' + markdown(PAIRED_HEADER, paired_best) + '\n')
        if args.paper:
            text += ('\n## Both protocols beside the paper\n\n'
                     + markdown(PROTOCOL_HEADER, protocol_rows(cells)) + '\n')
        if fgsm:
            text += '\n## FGSM test error (%), mean over the splits with FGSM results\n\n'
            text += markdown(*fgsm) + '\n'
        if args.paper:
            text += '\n' + paper_tables()
        per_class, class_records, figures = per_class_reports(cells, args.out)
        curves = collect_curves(cells)
        print(text)
        os.makedirs(args.out, exist_ok=True)

        def write_md(tmp):
            with open(tmp, 'w') as f:
                f.write(text + per_class)
        utils.atomic_write(os.path.join(args.out, 'report.md'), write_md)
        written = ['report.md']
        if records:
            write_csv(os.path.join(args.out, 'report.csv'), records, CSV_HEADERS)
            bar_chart(records, os.path.join(args.out, 'report.png'))
            written += ['report.csv', 'report.png']
        if class_records:
            write_csv(os.path.join(args.out, 'per_class.csv'), class_records)
            written.append('per_class.csv (per-class tables in report.md)')
        for figure in figures:
            confusion_figure(*figure)
            written.append(os.path.basename(figure[-1]))
        written += curve_figures(curves, args.out, args.paper)
        print(f'wrote {args.out}/: {", ".join(written)}', file=sys.stderr)
        return 0
    except UserError as e:
        print(f'{PROG}: error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
