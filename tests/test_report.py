"""report.py on synthetic run folders: means, standard errors, incomplete cells, paper columns,
best-epoch table, per-class tables and confusion-matrix figures."""
import csv
import json
import math
import os

import numpy as np
import pytest

import evaluation
import report


def make_split(root, save, split, net='envnetv2', learning='intermix', dataset='esc10',
               augment=True, error=None, fgsm=None, best=None, confusion=None, names=None):
    d = os.path.join(root, save, f'split{split}')
    os.makedirs(d, exist_ok=True)
    settings = {'netType': net, 'learning': learning, 'dataset': dataset,
                'strongAugment': augment}
    json.dump({'seed': split, 'settings': settings}, open(os.path.join(d, 'run.json'), 'w'))
    if error is not None:
        result = {'final_error': error, 'settings': settings}
        if fgsm:
            result['fgsm'] = fgsm
        if best:
            result['best_error_on_test_fold'] = {'error': best[0], 'epoch': best[1]}
        if confusion is not None:
            result.update(evaluation.per_class_results(confusion, names))
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
    assert '| envnetv2 +aug / intermix | 10.00 ± 1.41 (5/5) | 7.2 ± 0.1 |' in text
    # mean 22.5, SE = sd/sqrt(2) = 3.5355/1.4142 = 2.5
    assert ('| envnetv2 +aug / standard | 22.50 ± 2.50 (2/5) incomplete: unfinished 3; '
            'not run 4,5 | 10.9 ± 0.6 |') in text
    rows = list(csv.DictReader(open(os.path.join(out, 'report.csv'))))
    by = {r['learning']: r for r in rows}
    assert math.isclose(float(by['intermix']['final test error (%): standard error']),
                        math.sqrt(2))
    assert by['intermix']['complete'] == 'True' and by['standard']['complete'] == 'False'
    assert by['standard']['final test error (%) per split'] == '20.0000 25.0000'
    assert by['standard']['unfinished'] == '3'
    assert os.path.getsize(os.path.join(out, 'report.png')) > 1000


def test_single_split_has_no_standard_error_and_no_paper_without_flag(tmp_path, capsys):
    make_split(str(tmp_path), 'a', 2, net='envnet', learning='bc', dataset='esc50', error=30.0,
               augment=False)
    assert report.main([str(tmp_path), '--out', str(tmp_path / 'rep')]) == 0
    text = capsys.readouterr().out
    assert ('| envnet / bc | 30.00 (1/5; one split: no SE) incomplete: not run 1,3,4,5 |'
            in text)
    assert all('±' not in line for line in text.splitlines() if line.startswith('| envnet / bc |'))
    assert 'paper' not in text
    row = next(csv.DictReader(open(os.path.join(tmp_path, 'rep', 'report.csv'))))
    assert row['final test error (%): standard error'] == '' and row['n_splits'] == '1'


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


# The paper's Tables 1-3 as printed in the paper (Sawhney & Neerkaje, ICASSP 2022), transcribed
# here independently of report.py: every digit of report.PAPER is checked against this text.
PAPER_TABLE_1 = """
M18 & Standard & 31.5 ± 0.5 & 18.2 ± 0.5 & 28.8
M18 & BC & 26.7 ± 0.1 & 14.2 ± 0.9 & 26.5
M18 & SpeechMix & 24.3 ± 0.2 & 12.4 ± 0.5 & 25.1
M18 & InterMix & 25.4 ± 0.5 & 12.6 ± 0.5 & 25.1
SoundNet5 & Standard & 33.8 ± 0.2 & 16.4 ± 0.8 & 33.3
SoundNet5 & BC & 27.4 ± 0.3 & 13.9 ± 0.4 & 30.2
SoundNet5 & SpeechMix & 25.6 ± 0.2 & 11.6 ± 0.3 & 27.4
SoundNet5 & InterMix & 25.1 ± 0.3 & 10.6 ± 0.3 & 26.5
EnvNet & Standard & 29.2 ± 0.1 & 12.8 ± 0.4 & 33.7
EnvNet & BC & 24.1 ± 0.2 & 11.3 ± 0.6 & 28.9
EnvNet & SpeechMix & 22.5 ± 0.3 & 9.3 ± 0.4 & 26.5
EnvNet & InterMix & 22.5 ± 0.3 & 9.1 ± 0.2 & 26.8
PiczakCNN & Standard & 27.6 ± 0.2 & 13.2 ± 0.4 & 25.3
PiczakCNN & BC & 23.1 ± 0.3 & 9.4 ± 0.4 & 23.5
PiczakCNN & SpeechMix & 22.1 ± 0.3 & 8.4 ± 0.2 & 22.1
PiczakCNN & InterMix & 21.9 ± 0.2 & 8.3 ± 0.4 & 21.1
EnvNet-v2 & Standard & 25.6 ± 0.3 & 14.2 ± 0.8 & 30.9
EnvNet-v2 & BC & 18.2 ± 0.2 & 10.6 ± 0.6 & 23.4
EnvNet-v2 & SpeechMix & 16.2 ± 0.3 & 8.5 ± 0.4 & 21.6
EnvNet-v2 & InterMix & 15.8 ± 0.4 & 8.2 ± 0.4 & 21.4
EnvNet-v2 + strong augment & Standard & 21.2 ± 0.3 & 10.9 ± 0.6 & 24.9
EnvNet-v2 + strong augment & BC & 15.1 ± 0.2 & 8.6 ± 0.1 & 21.7
EnvNet-v2 + strong augment & SpeechMix & 13.1 ± 0.2 & 7.1 ± 0.1 & 20.8
EnvNet-v2 + strong augment & InterMix & 12.9 ± 0.4 & 7.2 ± 0.1 & 20.5
Human & - & 18.7 & 4.3 & -
"""
PAPER_TABLE_2 = """
input space, r-weights & 13.6 & 7.9 & 21.0
+ hidden layers & 13.3 & 7.7 & 20.8
+ p-weights & 12.9 & 7.2 & 20.5
"""
PAPER_TABLE_3 = """
Standard & 64.5 & 37.7 & 36.5 & 36.2
BC & 47.2 & 28.7 & 26.9 & 26.8
InterMix & 42.9 & 26.2 & 25.1 & 25.0
"""
NETS = {'M18': 'm18', 'SoundNet5': 'soundnet5', 'EnvNet': 'envnet', 'PiczakCNN': 'logmel_cnn',
        'EnvNet-v2': 'envnetv2'}


def _cell(text):
    """'31.5 ± 0.5' -> (31.5, 0.5); '28.8' -> (28.8, None); '-' -> None."""
    if text == '-':
        return None
    parts = [float(v) for v in text.split('±')]
    return (parts[0], parts[1] if len(parts) > 1 else None)


def test_paper_numbers_match_the_papers_tables_digit_for_digit():
    expected = {}
    for line in PAPER_TABLE_1.strip().splitlines():
        net, learning, *cells = [f.strip() for f in line.split('&')]
        if net == 'Human':
            assert report.PAPER_HUMAN == tuple(None if c is None else c[0]
                                               for c in map(_cell, cells))
            continue
        augment = net.endswith('+ strong augment')
        key = (NETS[net.replace(' + strong augment', '')], augment, learning.lower())
        expected[key] = tuple(_cell(c) for c in cells)
    for line, preset in zip(PAPER_TABLE_2.strip().splitlines(),
                            ['intermix-vanilla', 'intermix-hidden', 'intermix']):
        cells = tuple((float(f), None) for f in line.split('&')[1:])
        if preset == 'intermix':  # Table 2's last row is Table 1's InterMix row without SE
            assert tuple(c[0] for c in expected[('envnetv2', True, 'intermix')]) == \
                tuple(c[0] for c in cells)
        else:
            expected[('envnetv2', True, preset)] = cells
    assert report.PAPER == expected
    fgsm = {}
    for line in PAPER_TABLE_3.strip().splitlines():
        name, *values = [f.strip() for f in line.split('&')]
        fgsm[name.lower()] = tuple(float(v) for v in values)
    assert report.PAPER_FGSM == fgsm


def test_paper_alone_prints_every_table_1_cell_with_its_standard_error(capsys):
    assert report.main(['--paper']) == 0
    text = capsys.readouterr().out
    assert '| PiczakCNN | standard | 27.6 ± 0.2 | 13.2 ± 0.4 | 25.3 |' in text
    assert '| EnvNet-v2 + strong augmentation | intermix | 12.9 ± 0.4 | 7.2 ± 0.1 | 20.5 |' in text
    assert '| human | - | 18.7 | 4.3 | - |' in text
    # Every row of Tables 1 and 2, its cells as the paper prints them (the literal text above,
    # not report.paper_text's rendering of report.PAPER)
    for line in PAPER_TABLE_1.strip().splitlines():
        net, learning, *cells = [f.strip() for f in line.split('&')]
        if net != 'Human':
            name = net.replace('+ strong augment', '+ strong augmentation')
            assert f'| {name} | {learning.lower()} | {" | ".join(cells)} |' in text, line
    for line, preset in zip(PAPER_TABLE_2.strip().splitlines()[:2],
                            ['intermix-vanilla', 'intermix-hidden']):
        cells = [f.strip() for f in line.split('&')[1:]]
        assert (f'| EnvNet-v2 + strong augmentation | {preset} | {" | ".join(cells)} |'
                in text), line
    assert '| intermix | 42.9 | 26.2 | 25.1 | 25.0 |' in text


def test_no_runs_and_no_paper_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        report.main([])
    assert e.value.code == 2
    assert 'give one or more run folders' in capsys.readouterr().err


NAMES = ['dog', 'rain', 'sea_waves']


def test_best_epoch_table_and_columns_beside_the_final_error(tmp_path, capsys):
    root = str(tmp_path)
    make_split(root, 'a', 1, error=10.0, best=(6.0, 40))
    make_split(root, 'a', 2, error=14.0, best=(10.0, 35))
    out = str(tmp_path / 'rep')
    assert report.main([root, '--out', out]) == 0
    text = capsys.readouterr().out
    assert '## Test error (%) at the final epoch' in text
    assert '| envnetv2 +aug / intermix | 12.00 ± 2.00 (2/5) incomplete: not run 3,4,5 |' in text
    assert ('chosen on the test fold (optimistic: the test fold picked the epoch; not a result)'
            in text)
    # mean 8, SE = sd 2.83 / sqrt 2 = 2
    assert ('| envnetv2 +aug / intermix | 8.00 ± 2.00 (2/5) incomplete: not run 3,4,5; chosen '
            'epochs 40, 35 |') in text
    row = next(csv.DictReader(open(os.path.join(out, 'report.csv'))))
    assert row['final test error (%): mean'] == '12.0'
    assert row['best-epoch test error (%), chosen on the test fold: mean'] == '8.0'
    assert row['best-epoch test error (%), chosen on the test fold, per split'] == '6.0000 10.0000'
    assert row['best epoch per split (chosen on the test fold)'] == '40 35'


def test_per_class_tables_and_confusion_figure_summed_over_splits(tmp_path, capsys):
    root = str(tmp_path)
    # split 1: dog 2/2 right, rain 1 of 2 taken for dog, sea_waves 0/1 right (taken for rain)
    make_split(root, 'a', 1, error=40.0, confusion=[[2, 0, 0], [1, 1, 0], [0, 1, 0]],
               names=NAMES)
    # split 2: dog 1 of 2 wrong, no rain clip, sea_waves 2/2 right
    make_split(root, 'a', 2, error=25.0, confusion=[[1, 0, 1], [0, 0, 0], [0, 0, 2]],
               names=NAMES)
    make_split(root, 'a', 3, error=30.0)  # a result from before per-class results
    out = str(tmp_path / 'rep')
    assert report.main([root, '--out', out]) == 0
    md = open(os.path.join(out, 'report.md')).read()
    assert '| dog | 0.0 | 50.0 | 25.0 ± 25.0 | 4 |' in md
    assert '| rain | 50.0 | - | 50.0 | 2 |' in md           # one split: no standard error
    assert '| sea_waves | 100.0 | 0.0 | 50.0 ± 50.0 | 3 |' in md
    assert '| all classes | 40.0 | 25.0 | 32.5 ± 7.5 | 9 |' in md
    assert 'Splits 3 have no per-class results' in md
    rows = list(csv.DictReader(open(os.path.join(out, 'per_class.csv'))))
    assert len(rows) == 8  # (3 classes + all) x 2 splits
    rain2 = next(r for r in rows if r['class'] == 'rain' and r['split'] == '2')
    assert rain2['test error (%)'] == '' and rain2['test clips'] == '0'
    png = os.path.join(out, 'confusion-esc10-envnetv2-aug-intermix.png')
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert 'confusion-esc10-envnetv2-aug-intermix.png' in capsys.readouterr().err


def test_confusion_figure_grows_with_the_classes(tmp_path):
    import matplotlib.image
    sizes = []
    for n in (10, 50):
        names = [f'class number {k}' for k in range(n)]
        confusion = {1: np.eye(n, dtype=np.int64) * 8}
        path = str(tmp_path / f'c{n}.png')
        report.confusion_figure(('envnetv2', True, 'intermix', 'esc50'), names, confusion, path)
        sizes.append(matplotlib.image.imread(path).shape[:2])
    assert sizes[1][0] > 2 * sizes[0][0] and sizes[1][1] > 2 * sizes[0][1]


def test_splits_with_other_class_names_are_refused_and_nothing_is_written(tmp_path, capsys):
    root = str(tmp_path)
    make_split(root, 'a', 1, error=0.0, confusion=np.eye(3, dtype=int), names=NAMES)
    make_split(root, 'a', 2, error=0.0, confusion=np.eye(3, dtype=int), names=['a', 'b', 'c'])
    out = tmp_path / 'rep'
    assert report.main([root, '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('report.py: error: ') and 'classes differ' in err
    assert err.count('\n') == 1 and not out.exists()



def write_log(split_dir, entries):
    with open(os.path.join(split_dir, 'log.jsonl'), 'w') as f:
        f.writelines(json.dumps(e) + '\n' for e in entries)


def test_learning_curves_from_log_jsonl(tmp_path, capsys):
    root = str(tmp_path)
    make_split(root, 'a', 1, net='logmel_cnn', augment=False, learning='standard', error=20.0)
    make_split(root, 'b', 1, net='logmel_cnn', augment=False, learning='intermix')  # unfinished
    # test error only every other epoch, as with --testEvery 2
    write_log(os.path.join(root, 'a', 'split1'),
              [{'epoch': 1, 'main/loss': 2.0, 'validation/main/error': 60.0},
               {'epoch': 2, 'main/loss': 1.5},
               {'epoch': 3, 'main/loss': 1.0, 'validation/main/error': 20.0}])
    write_log(os.path.join(root, 'b', 'split1'), [{'epoch': 1, 'validation/main/error': 80.0}])
    assert report.read_curve(os.path.join(root, 'a', 'split1')) == ([1, 3], [60.0, 20.0])
    assert report.read_curve(str(tmp_path)) == ([], [])            # no log.jsonl: no curve
    out = str(tmp_path / 'rep')
    assert report.main([root, '--paper', '--out', out]) == 0
    assert 'curves-esc10.png' in capsys.readouterr().err
    assert os.path.getsize(os.path.join(out, 'curves-esc10.png')) > 1000
    assert not os.path.exists(os.path.join(out, 'curves-esc50.png'))


def test_mean_curve_averages_the_splits_on_the_epochs_they_all_tested():
    runs = [([10, 20, 30], [40.0, 20.0, 10.0]),
            ([10, 20, 30], [60.0, 30.0, 20.0]),
            ([10, 20], [50.0, 10.0])]                 # unfinished: its last test at epoch 20
    epochs, mean, low, high = report.mean_curve(runs)
    assert epochs.tolist() == [10, 20]
    assert mean.tolist() == [50.0, 20.0]              # (40 + 60 + 50) / 3, (20 + 30 + 10) / 3
    assert low.tolist() == [40.0, 10.0] and high.tolist() == [60.0, 30.0]
    one = report.mean_curve([([5, 15], [30.0, 12.5])])
    assert [a.tolist() for a in one] == [[5, 15], [30.0, 12.5], [30.0, 12.5], [30.0, 12.5]]
    disjoint = report.mean_curve([([1], [10.0]), ([2], [20.0])])
    assert all(a.size == 0 for a in disjoint)
    with pytest.raises(ValueError, match='at least one split'):
        report.mean_curve([])


def test_a_damaged_log_jsonl_is_named_and_nothing_is_drawn(tmp_path, capsys):
    root = str(tmp_path)
    make_split(root, 'a', 1, error=20.0)
    with open(os.path.join(root, 'a', 'split1', 'log.jsonl'), 'w') as f:
        f.write('{"epoch": 1, "validation/main/error": 50.0}\n{"epoch": 2, "valid')
    out = str(tmp_path / 'rep')
    assert report.main([root, '--out', out]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'log.jsonl: line 2 is not a JSON object' in err
    assert not os.path.exists(out)                               # nothing written
