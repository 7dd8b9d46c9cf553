"""report.py's paired comparison (method against method on the same splits), its study-arm rows
(a preset run at other mixing points is a row of its own) and its protocol table."""
import json
import os

import pytest

import report


def split(root, save, k, learning, error, best=None, eligible=None, net='logmel_cnn'):
    d = os.path.join(root, save, f'split{k}')
    os.makedirs(d, exist_ok=True)
    settings = {'netType': net, 'learning': learning, 'dataset': 'esc10', 'strongAugment': False}
    if eligible is not None:
        settings['eligible'] = eligible
    with open(os.path.join(d, 'run.json'), 'w') as f:
        json.dump({'seed': k, 'settings': settings}, f)
    result = {'final_error': error, 'settings': settings}
    if best is not None:
        result['best_error_on_test_fold'] = {'error': best, 'epoch': 100 * k}
    with open(os.path.join(d, 'result.json'), 'w') as f:
        json.dump(result, f)


def test_learning_labels_name_study_arms_and_keep_presets():
    s = {'netType': 'logmel_cnn', 'learning': 'intermix', 'dataset': 'esc10'}
    assert report.learning_label(dict(s, eligible=[1, 2])) == 'intermix'  # the preset's points
    assert report.learning_label(dict(s, eligible=[0])) == 'intermix L=0'
    assert report.learning_label(dict(s, eligible=[2, 0, 1])) == 'intermix L=0,1,2'
    assert report.learning_label(dict(s, learning='bc', eligible=[0])) == 'bc'
    assert report.learning_label(dict(s, combination='linear', eligible=[1, 2])) == \
        'intermix comb=linear'
    assert report.learning_label(dict(s, learning='standard', eligible=None)) == 'standard'
    assert report.cell_name(('logmel_cnn', False, 'intermix L=0,1,2', 'esc10')) == \
        'esc10-logmel_cnn-intermix-L012'


def test_paired_differences_means_and_wins_by_hand(tmp_path, capsys):
    # bc - intermix per split: 10-12 = -2, 20-15 = +5, 30-30 = 0 (split 4: bc only, left out)
    for k, (bc, im) in enumerate([(10, 12), (20, 15), (30, 30)], start=1):
        split(tmp_path, 'bc', k, 'bc', bc, best=bc - 1)
        split(tmp_path, 'im', k, 'intermix', im, best=im - 3)
        split(tmp_path, 'l0', k, 'intermix', im + 1, eligible=[0])
    split(tmp_path, 'bc', 4, 'bc', 40.0)
    cells = report.collect(report.find_splits([str(tmp_path)]))
    assert set(k[2] for k in cells) == {'bc', 'intermix', 'intermix L=0'}
    rows = {r[0]: r for r in report.paired_rows(cells)}
    row = rows['logmel_cnn / bc - intermix']
    assert row[2:] == ['1,2,3', '-2.00 +5.00 +0.00', '+1.00 ± 2.08', '1 / 1 / 1']
    # mean 1, SE = sd / sqrt(3) with sd = sqrt(((-3)^2 + 4^2 + 1^2) / 2) = sqrt(13)
    assert float(row[4].split(' ± ')[1]) == pytest.approx((13 ** 0.5) / 3 ** 0.5, abs=0.005)
    assert rows['logmel_cnn / intermix - intermix L=0'][3:] == [
        '-1.00 -1.00 -1.00', '-1.00 ± 0.00', '3 / 0 / 0']
    # At the best epoch: bc best = bc - 1, intermix best = intermix - 3: each difference + 2.
    best = {r[0]: r for r in report.paired_rows(
        cells, lambda c: report.best_cell(c)['finished'])}
    assert best['logmel_cnn / bc - intermix'][3] == '+0.00 +7.00 +2.00'
    # The report prints both tables and the protocols beside the paper.
    assert report.main([str(tmp_path), '--paper', '--out', str(tmp_path / 'out')]) == 0
    out = capsys.readouterr().out
    assert report.PAIRED_TITLE in out and 'Both protocols beside the paper' in out
    assert '| logmel_cnn / intermix L=0 | ESC-10 |' in out


def test_protocol_of_paper_rows():
    assert report.paper_protocol('envnetv2', 'bc').startswith('final epoch')
    assert report.paper_protocol('logmel_cnn', 'intermix').startswith('best epoch')
    assert report.paper_protocol('logmel_cnn', 'standard').startswith('not stated')
