"""Summarise training runs as the paper's tables (Table 1/2: error per network x learning method x
dataset; Table 3: FGSM error), in Markdown, CSV and a bar chart.

    python3 report.py results/ [more run folders ...] [--paper] [--out results/report]

Each argument is a ``--save`` folder of ``main.py`` or any folder above several of them: every
``split{k}/run.json`` below it is a split that was started, and its ``result.json`` (if present)
says it finished. Rows are (network, strong augmentation, learning method); columns the datasets.
A cell is ``mean ± standard error`` of the final 10-crop error over the finished splits, with the
count of splits, e.g. ``7.20 ± 0.41 (5/5)``. A cell with fewer finished splits than the dataset
has folds is marked ``incomplete`` and lists what is missing: it is never averaged silently as if
it were the whole cross-validation. ``--paper`` adds the paper's numbers (SPEC 7) beside ours.

Writes ``OUT/report.md``, ``OUT/report.csv`` (one row per cell, with every split's error) and
``OUT/report.png`` (bars with standard-error whiskers; the paper's values as markers).
"""
import argparse
import csv
import io
import json
import os
import sys

import numpy as np

import utils
from utils import UserError

PROG = 'report.py'
DATASETS = {'esc50': 5, 'esc10': 5, 'urbansound8k': 10}   # dataset -> number of folds
DATASET_ORDER = ['esc50', 'esc10', 'urbansound8k']
LEARNING_ORDER = ['standard', 'bc', 'speechmix', 'intermix-vanilla', 'intermix-hidden',
                  'intermix']

# SPEC 7: error % (ESC-50, ESC-10, UrbanSound8K) of EnvNet-v2, keyed by (strong augmentation,
# learning method). The ablation rows (Table 2) are with augmentation.
PAPER = {
    (True, 'standard'): (21.2, 10.9, 24.9),
    (True, 'bc'): (15.1, 8.6, 21.7),
    (True, 'speechmix'): (13.1, 7.1, 20.8),
    (True, 'intermix'): (12.9, 7.2, 20.5),
    (False, 'standard'): (25.6, 14.2, 30.9),
    (False, 'bc'): (18.2, 10.6, 23.4),
    (False, 'speechmix'): (16.2, 8.5, 21.6),
    (False, 'intermix'): (15.8, 8.2, 21.4),
    (True, 'intermix-vanilla'): (13.6, 7.9, 21.0),
    (True, 'intermix-hidden'): (13.3, 7.7, 20.8),
}
# SPEC 7, Table 3: FGSM error % on ESC-10 at epsilon 1e-2, 1e-3, 1e-4, 1e-5.
PAPER_FGSM = {
    'standard': (64.5, 37.7, 36.5, 36.2),
    'bc': (47.2, 28.7, 26.9, 26.8),
    'intermix': (42.9, 26.2, 25.1, 25.0),
}
PAPER_FGSM_EPS = ('eps=0.01', 'eps=0.001', 'eps=0.0001', 'eps=1e-05')


def paper_error(net, augment, learning, dataset):
    """The paper's error (%) for a cell, or None where the paper has none (SPEC 7)."""
    if net != 'envnetv2' or (augment, learning) not in PAPER:
        return None
    return PAPER[(augment, learning)][DATASET_ORDER.index(dataset)]


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


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'{path}: unreadable ({e})') from None


def collect(split_dirs):
    """Group the splits into cells.

    Returns a dict ``{(net, augment, learning, dataset): cell}`` where cell is a dict with
    ``finished`` ({split: final error}), ``unfinished`` (sorted splits started but without a
    result), ``fgsm`` ({split: {key: error}}) and ``folders`` (sorted run folders).
    """
    cells = {}
    for split_dir in split_dirs:
        run = _read_json(os.path.join(split_dir, 'run.json'))
        s = run['settings']
        key = (s['netType'], bool(s['strongAugment']), s['learning'], s['dataset'])
        cell = cells.setdefault(key, {'finished': {}, 'unfinished': [], 'fgsm': {},
                                      'folders': set()})
        split = int(os.path.basename(split_dir)[len('split'):])
        cell['folders'].add(os.path.dirname(split_dir))
        result_path = os.path.join(split_dir, 'result.json')
        if os.path.isfile(result_path):
            result = _read_json(result_path)
            if split in cell['finished']:
                raise UserError(f'{split_dir}: split {split} of {"/".join(map(str, key))} '
                                f'appears twice (also in another folder); pass one run per cell')
            cell['finished'][split] = float(result['final_error'])
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
    n_folds = DATASETS[dataset]
    errors = [cell['finished'][k] for k in sorted(cell['finished'])]
    mean, se = utils.mean_and_standard_error(errors) if errors else (None, None)
    missing = sorted(set(range(1, n_folds + 1)) - set(cell['finished']))
    return {'mean': mean, 'se': se, 'n': len(errors), 'n_folds': n_folds,
            'complete': not missing, 'missing': missing, 'unfinished': cell['unfinished'],
            'splits': sorted(cell['finished']), 'errors': errors}


def cell_text(summary):
    """'7.20 ± 0.41 (5/5)', or with 'incomplete: ...' when splits are missing."""
    if summary['n'] == 0:
        text = 'no finished split'
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
    order = LEARNING_ORDER.index(learning) if learning in LEARNING_ORDER else len(LEARNING_ORDER)
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
            paper = paper_error(net, augment, learning, d)
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
                    'paper_error': paper, 'folders': ' '.join(cell['folders'])})
            if with_paper:
                line.append('-' if paper is None else f'{paper:.1f}')
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
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets) + 1, 4.5),
                             squeeze=False)
    for ax, d in zip(axes[0], datasets):
        recs = [r for r in records if r['dataset'] == d and r['mean_error'] is not None]
        labels = [f'{r["network"]}{" +aug" if r["strong_augment"] else ""}\n{r["learning"]}'
                  + ('' if r['complete'] else f'\n({r["n_splits"]}/{r["n_folds"]} splits)')
                  for r in recs]
        xs = np.arange(len(recs))
        colors = ['tab:blue' if r['complete'] else 'tab:gray' for r in recs]
        ax.bar(xs, [r['mean_error'] for r in recs], yerr=[r['standard_error'] for r in recs],
               color=colors, capsize=4, label='ours (grey: incomplete)')
        paper = [(x, r['paper_error']) for x, r in zip(xs, recs) if r['paper_error'] is not None]
        if paper:
            ax.scatter([p[0] for p in paper], [p[1] for p in paper], marker='D', color='tab:red',
                       zorder=3, label='paper')
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(d)
        ax.set_ylabel('error (%)')
        ax.grid(axis='y', alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    utils.atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=120), suffix='.png')
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    p.add_argument('runs', nargs='+', help='--save folders of main.py, or folders above them')
    p.add_argument('--paper', action='store_true', help="put the paper's numbers beside ours")
    p.add_argument('--out', default=os.path.join('results', 'report'),
                   help='folder for report.md, report.csv and report.png')
    args = p.parse_args(argv)
    try:
        cells = collect(find_splits(args.runs))
        (header, rows), fgsm, records = build_tables(cells, args.paper)
        text = '## Error (%), mean ± standard error over splits (finished/total)\n\n'
        text += markdown(header, rows) + '\n'
        if fgsm:
            text += '\n## FGSM error (%), mean over the splits with FGSM results\n\n'
            text += markdown(*fgsm) + '\n'
        print(text)
        os.makedirs(args.out, exist_ok=True)

        def write_md(tmp):
            with open(tmp, 'w') as f:
                f.write(text)

        def write_csv(tmp):
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
            with open(tmp, 'w', newline='') as f:
                f.write(buffer.getvalue())
        utils.atomic_write(os.path.join(args.out, 'report.md'), write_md)
        if records:
            utils.atomic_write(os.path.join(args.out, 'report.csv'), write_csv)
            bar_chart(records, os.path.join(args.out, 'report.png'))
        print(f'wrote {args.out}/report.md, report.csv, report.png', file=sys.stderr)
        return 0
    except UserError as e:
        print(f'{PROG}: error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
