"""report.py on synthetic run folders: means, standard errors, incomplete cells, paper columns."""
import csv
import json
import math
import os

import pytest

import report


def make_split(root, save, split, net='envnetv2', learning='intermix', dataset='esc10',
               augment=True, error=None, fgsm=None):
    d = os.path.join(root, save, f'split{split}')
    os.makedirs(d, exist_ok=True)
    settings = {'netType': net, 'learning': learning, 'dataset': dataset,
                'strongAugment': augment}
    json.dump({'seed': split, 'settings': settings}, open(os.path.join(d, 'run.json'), 'w'))
    if error is not None:
        result = {'final_error': error, 'settings': settings}
        if fgsm:
            result['fgsm'] = fgsm
        json.dump(result, open(os.path.join(d, 'result.json'), 'w'))


def test_means_standard_errors_and_incomplete_cells(tmp_path, capsys):
    root = str(tmp_path)
    for k, e in zip(range(1, 6), [10.0, 12.0, 8.0, 6.0, 14.0]):       # complete ESC-10 cell
        make_split(root, 'a', k, error=e)
    make_split(root, 'b', 1, learning='standard', error=20.0)          # 2 of 5, one unfinished
    make_split(root, 'b', 2, learning='standard', error=25.0)
    make_split(root, 'b', 3, learning='standard')
    out = str(tmp_path / 'rep')
    assert report.main([root, '--paper', '--out', out]) == 0
    text = capsys.readouterr().out
    # mean 10, sample sd sqrt(10), SE sqrt(10)/sqrt(5) = sqrt(2) = 1.41
    assert '| envnetv2 +aug / intermix | 10.00 ± 1.41 (5/5) | 7.2 |' in text
    # mean 22.5, SE = sd/sqrt(2) = 3.5355/1.4142 = 2.5
    assert ('| envnetv2 +aug / standard | 22.50 ± 2.50 (2/5) incomplete: unfinished 3; '
            'not run 4,5 | 10.9 |') in text
    rows = list(csv.DictReader(open(os.path.join(out, 'report.csv'))))
    by = {r['learning']: r for r in rows}
    assert math.isclose(float(by['intermix']['standard_error']), math.sqrt(2))
    assert by['intermix']['complete'] == 'True' and by['standard']['complete'] == 'False'
    assert by['standard']['errors'] == '20.0000 25.0000' and by['standard']['unfinished'] == '3'
    assert os.path.getsize(os.path.join(out, 'report.png')) > 1000


def test_single_split_has_zero_standard_error_and_no_paper_without_flag(tmp_path, capsys):
    make_split(str(tmp_path), 'a', 2, net='envnet', learning='bc', dataset='esc50', error=30.0,
               augment=False)
    assert report.main([str(tmp_path), '--out', str(tmp_path / 'rep')]) == 0
    text = capsys.readouterr().out
    assert '| envnet / bc | 30.00 ± 0.00 (1/5) incomplete: not run 1,3,4,5 |' in text
    assert 'paper' not in text


def test_fgsm_rows_average_over_splits_with_paper_rows(tmp_path, capsys):
    root = str(tmp_path)
    make_split(root, 'a', 1, learning='bc', error=10.0,
               fgsm={'clean': 10.0, 'eps=0.01': 50.0, 'eps=0.001': 30.0})
    make_split(root, 'a', 2, learning='bc', error=20.0,
               fgsm={'clean': 20.0, 'eps=0.01': 60.0, 'eps=0.001': 20.0})
    assert report.main([root, '--paper', '--out', str(tmp_path / 'rep')]) == 0
    text = capsys.readouterr().out
    assert '| envnetv2 +aug / bc | esc10 | 1 2 | 15.00 | 55.00 | 25.00 |' in text
    assert '| envnetv2 +aug / bc (paper) | esc10 | 5 | - | 47.2 | 28.7 |' in text


def test_the_same_split_twice_is_refused(tmp_path, capsys):
    make_split(str(tmp_path), 'a', 1, error=10.0)
    make_split(str(tmp_path), 'b', 1, error=12.0)
    assert report.main([str(tmp_path), '--out', str(tmp_path / 'rep')]) == 2
    assert 'appears twice' in capsys.readouterr().err


@pytest.mark.parametrize('setup', ['missing', 'empty'])
def test_folders_without_runs_are_named(tmp_path, capsys, setup):
    target = tmp_path / 'x'
    if setup == 'empty':
        target.mkdir()
    assert report.main([str(target), '--out', str(tmp_path / 'rep')]) == 2
    assert str(target) in capsys.readouterr().err
