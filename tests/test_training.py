"""End-to-end behaviour of main.py / training.py on a tiny synthetic ESC-10-shaped dataset.

The dataset: 5 folds x 4 clips at 16 kHz (EnvNet's rate only, so EnvNet-v2 finds no wav44.npz),
clips of 0.3-1.0 s. Runs use EnvNet, 2 test crops and small batches, so each epoch takes seconds.
"""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import main
from datagen import npzio
import evaluation
import training

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULT_RUN = os.path.join(REPO_ROOT, 'tests', 'fault_run.py')
FAST = ['--dataset', 'esc10', '--netType', 'envnet', '--split', '1', '--nCrops', '2',
        '--gpu', '-1', '--seed', '7']


def tone_clip(rng, label, fs=16000):
    """A noisy tone whose frequency depends on the label, 0.3-1.0 s, with leading silence."""
    n = int(fs * rng.uniform(0.3, 1.0))
    t = np.arange(n) / fs
    x = 0.3 * np.sin(2 * np.pi * (200 + 150 * label) * t) + 0.05 * rng.standard_normal(n)
    x[:50] = 0
    return np.round(x * 32767).astype(np.int16)


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    data = tmp_path_factory.mktemp('tiny')
    folds = {}
    for k in range(1, 6):
        labels = [(k + i) % 10 for i in range(4)]
        folds[k] = ([tone_clip(rng, c) for c in labels], labels)
    names = ['dog', 'rain', 'sea_waves', 'crying_baby', 'clock_tick', 'sneezing', 'helicopter',
             'chainsaw', 'rooster', 'crackling_fire']
    npzio.save_sound_npz(os.path.join(data, 'esc10', 'wav16.npz'), folds, 16000, names)
    return str(data)


def run_main(args, capsys):
    rc = main.main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize('learning', ['standard', 'bc', 'speechmix', 'intermix'])
def test_one_epoch_of_each_learning_method_writes_the_split_files(tiny_data, tmp_path, capsys,
                                                                  learning):
    save = str(tmp_path / 'run')
    rc, out, err = run_main(['--data', tiny_data, *FAST, '--learning', learning, '--nEpochs', '1',
                             '--batchSize', '8' if learning == 'standard' else '4',
                             '--save', save], capsys)
    assert rc == 0, err
    split = os.path.join(save, 'split1')
    for name in ('model.npz', 'snapshot.npz', 'log.jsonl', 'log.csv', 'result.json', 'error.png',
                 'record.json'):
        assert os.path.isfile(os.path.join(split, name)), name
    result = json.load(open(os.path.join(split, 'result.json')))
    log = read_jsonl(os.path.join(split, 'log.jsonl'))
    assert [e['epoch'] for e in log] == [1]
    assert result['final_error'] == log[-1]['validation/main/error']
    # The confusion matrix is that of the final test: its clips, its error.
    counts = np.array(result['confusion_matrix']['counts'])
    assert counts.shape == (10, 10) and counts.sum() == 4
    assert 100.0 * (4 - np.trace(counts)) / 4 == result['final_error']
    assert result['confusion_matrix']['class_names'][0] == 'dog'
    assert sum(result['test_clips_per_class'].values()) == 4
    assert 'test error (%)' in result['metrics']['final_error']
    assert result['learning'] == learning and result['epochs'] == 1
    assert 0.0 <= result['final_error'] <= 100.0
    assert result['train_clips'] == 16 and result['test_clips'] == 4
    assert 'epoch 1/1' in out and 'ETA' in out
    summary = json.load(open(os.path.join(save, 'summary.json')))
    assert summary['errors'] == [result['final_error']] and summary['complete'] is False


def test_training_with_worker_processes(tiny_data, tmp_path, capsys):
    save = str(tmp_path / 'run')
    rc, out, err = run_main(['--data', tiny_data, *FAST, '--learning', 'bc', '--nEpochs', '1',
                             '--batchSize', '4', '--nWorkers', '2', '--save', save], capsys)
    assert rc == 0, err
    assert '2 data worker process(es)' in out
    assert os.path.isfile(os.path.join(save, 'split1', 'result.json'))


def test_test_only_reproduces_the_final_error_exactly(tiny_data, tmp_path, capsys):
    save = str(tmp_path / 'run')
    rc, _, err = run_main(['--data', tiny_data, *FAST, '--learning', 'intermix', '--nEpochs', '2',
                           '--batchSize', '4', '--save', save], capsys)
    assert rc == 0, err
    final = json.load(open(os.path.join(save, 'split1', 'result.json')))['final_error']
    # without --nCrops: the 2 crops recorded in result.json, not the default 10
    i = FAST.index('--nCrops')
    no_crops = FAST[:i] + FAST[i + 2:]
    rc, out, err = run_main(['--data', tiny_data, *no_crops, '--learning', 'intermix',
                             '--testOnly', '--save', save], capsys)
    assert rc == 0, err
    summary = json.load(open(os.path.join(save, 'summary_testOnly.json')))
    assert summary['errors'] == [final]
    assert f'test error {final:.2f}% (2-crop' in out and f'training reported {final:.2f}%' in out
    # an explicit --nCrops wins
    rc, out, err = run_main(['--data', tiny_data, *no_crops, '--learning', 'intermix',
                             '--testOnly', '--nCrops', '1', '--save', save], capsys)
    assert rc == 0, err
    assert '(1-crop' in out
    # FGSM through the CLI: epsilon 0 is the clean error, and result.json gains the rows.
    rc, out, err = run_main(['--data', tiny_data, *FAST, '--learning', 'intermix', '--testOnly',
                             '--fgsm', '0', '1e-2', '--save', save], capsys)
    assert rc == 0, err
    fgsm = json.load(open(os.path.join(save, 'split1', 'result.json')))['fgsm']
    assert fgsm['clean'] == final and fgsm['eps=0'] == final and 'eps=0.01' in fgsm
    assert 'FGSM test error' in out


@pytest.mark.parametrize('learning, eligible, expected', [
    ('bc', None, {0}), ('speechmix', None, {1, 2, 3}), ('intermix', None, {1, 2, 3}),
    ('intermix', ['2'], {2}), ('intermix', ['0', '3'], {0, 3}),
])
def test_mixing_points_are_drawn_from_the_eligible_set(tiny_data, tmp_path, capsys, monkeypatch,
                                                       learning, eligible, expected):
    import intermix
    seen = []
    real = intermix.Mixer.__call__

    def record(self, h):
        seen.append((self.point, self.combination, h.shape))
        return real(self, h)
    monkeypatch.setattr(intermix.Mixer, '__call__', record)
    args = ['--data', tiny_data, *FAST, '--learning', learning, '--nEpochs', '2', '--batchSize',
            '2', '--testEvery', '2', '--save', str(tmp_path / 'run')]
    if eligible:
        args += ['--eligible', *eligible]
    rc, _, err = run_main(args, capsys)
    assert rc == 0, err
    assert len(seen) == 8  # 16 clips -> 8 pairs -> 4 steps of 2 pairs per epoch, 2 epochs
    assert {p for p, _, _ in seen} <= expected
    assert all(c == ('interference' if learning == 'intermix' else 'linear') for _, c, _ in seen)
    assert all(shape[0] == 4 for _, _, shape in seen)  # 2 pairs -> 4 mixed examples


def test_learning_rate_schedule_follows_the_reference():
    class Opt:
        LR, nEpochs, schedule, warmup = 0.1, 100, [0.3, 0.6, 0.9], 10
    lrs = {e: training.learning_rate(Opt, e) for e in (1, 10, 11, 30, 31, 60, 61, 90, 91, 100)}
    assert lrs[1] == pytest.approx(0.01) and lrs[10] == pytest.approx(0.01)   # warm-up: LR/10
    assert lrs[11] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.1)
    assert lrs[31] == pytest.approx(0.01) and lrs[60] == pytest.approx(0.01)
    assert lrs[61] == pytest.approx(0.001) and lrs[90] == pytest.approx(0.001)
    assert lrs[91] == pytest.approx(0.0001) and lrs[100] == pytest.approx(0.0001)


def test_logged_lr_follows_the_schedule_per_epoch(tiny_data, tmp_path, capsys):
    save = str(tmp_path / 'run')
    rc, _, err = run_main(['--data', tiny_data, *FAST, '--nEpochs', '3', '--LR', '0.02',
                           '--schedule', '0.5', '--warmup', '1', '--batchSize', '16',
                           '--testEvery', '2', '--save', save], capsys)
    assert rc == 0, err
    log = read_jsonl(os.path.join(save, 'split1', 'log.jsonl'))
    assert [e['lr'] for e in log] == pytest.approx([0.002, 0.002, 0.002])  # warm-up, then >1.5
    # Tested at epoch 2 (testEvery) and 3 (final), not at 1.
    assert ['validation/main/error' in e for e in log] == [False, True, True]


def test_non_finite_loss_stops_with_the_epoch_and_keeps_the_last_snapshot(
        tiny_data, tmp_path, capsys, monkeypatch):
    real = training.MixingUpdater.update_core

    def poisoned(self):
        if self.epoch == 1:  # second epoch: make the loss NaN
            import chainer.functions as F
            orig = F.softmax_cross_entropy
            monkeypatch.setattr(F, 'softmax_cross_entropy', lambda *a: orig(*a) * np.nan)
        return real(self)
    monkeypatch.setattr(training.MixingUpdater, 'update_core', poisoned)
    save = str(tmp_path / 'run')
    rc, _, err = run_main(['--data', tiny_data, *FAST, '--nEpochs', '3', '--batchSize', '8',
                           '--save', save], capsys)
    assert rc == 3
    assert 'loss is nan at epoch 2' in err and 'snapshot.npz (epoch 1)' in err
    split = os.path.join(save, 'split1')
    assert os.path.isfile(os.path.join(split, 'snapshot.npz'))
    assert not os.path.exists(os.path.join(split, 'result.json'))
    assert [e['epoch'] for e in read_jsonl(os.path.join(split, 'log.jsonl'))] == [1]


def test_non_finite_loss_names_the_epoch_the_kept_snapshot_holds(tiny_data, tmp_path, capsys,
                                                                   monkeypatch):
    # Snapshots every 2 epochs, NaN in epoch 4: the kept snapshot is epoch 2's, not epoch 3's.
    real = training.MixingUpdater.update_core

    def poisoned(self):
        if self.epoch == 3:
            import chainer.functions as F
            orig = F.softmax_cross_entropy
            monkeypatch.setattr(F, 'softmax_cross_entropy', lambda *a: orig(*a) * np.nan)
        return real(self)
    monkeypatch.setattr(training.MixingUpdater, 'update_core', poisoned)
    save = str(tmp_path / 'run')
    rc, _, err = run_main(['--data', tiny_data, *FAST, '--nEpochs', '5', '--batchSize', '8',
                           '--snapshotEvery', '2', '--save', save], capsys)
    assert rc == 3
    assert 'loss is nan at epoch 4' in err and 'snapshot.npz (epoch 2)' in err, err


def test_resume_after_kill_mid_epoch_ends_with_the_same_number_of_epochs(tiny_data, tmp_path):
    save = str(tmp_path / 'run')
    cmd = [sys.executable, 'main.py', '--data', tiny_data, *FAST, '--nEpochs', '3',
           '--batchSize', '2', '--testEvery', '3', '--save', save]
    # kill -9 inside step 12, in epoch 2 (8 steps per epoch), by tests/fault_run.py's hook (not
    # by a timer, which could miss the epoch on a fast or a loaded machine)
    killed = subprocess.run([sys.executable, FAULT_RUN, *cmd[1:]], cwd=REPO_ROOT,
                            env=dict(os.environ, FAULT_KILL='step:12'), capture_output=True,
                            text=True, timeout=600, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert os.path.isfile(os.path.join(save, 'split1', 'snapshot.npz'))
    log = read_jsonl(os.path.join(save, 'split1', 'log.jsonl'))
    assert [e['epoch'] for e in log] == [1], 'the kill should land in epoch 2'
    # Without --resume the unfinished run is protected.
    again = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and '--resume' in again.stderr and 'Traceback' not in again.stderr
    resumed = subprocess.run(cmd + ['--resume'], cwd=REPO_ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert 'resumed from' in resumed.stdout and 'at epoch 1 of 3' in resumed.stdout
    log = read_jsonl(os.path.join(save, 'split1', 'log.jsonl'))
    assert [e['epoch'] for e in log] == [1, 2, 3]
    result = json.load(open(os.path.join(save, 'split1', 'result.json')))
    assert result['final_epoch'] == 3
    # The run record keeps the start and notes the resuming process.
    record = json.load(open(os.path.join(save, 'split1', 'record.json')))
    assert len(record['resumed']) == 1 and record['resumed'][0]['written'] >= record['written']
    assert record['resumed'][0]['command']['argv'][-1] == '--resume'
    # A finished split is skipped by --resume.
    skipped = subprocess.run(cmd + ['--resume'], cwd=REPO_ROOT, capture_output=True, text=True)
    assert skipped.returncode == 0 and 'skipped' in skipped.stdout


@pytest.mark.parametrize('args, message', [
    (['--netType', 'envnetv2', '--learning', 'standard'], 'wav44.npz: not found'),
    (['--netType', 'envnet', '--learning', 'intermix', '--eligible', '7'], '--eligible 7'),
    (['--netType', 'envnet', '--eligible', '1'], '--eligible needs a mixing method'),
    (['--netType', 'envnet', '--split', '6'], '--split 6'),
    (['--netType', 'envnet', '--nEpochs', '0'], '--nEpochs must be at least 1'),
])
def test_bad_input_gives_one_line_and_exit_2_without_traceback(tiny_data, tmp_path, args,
                                                               message):
    save = str(tmp_path / 'run')
    proc = subprocess.run([sys.executable, 'main.py', '--data', tiny_data, '--dataset', 'esc10',
                           '--gpu', '-1', '--save', save, *args],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and 'Traceback' not in proc.stderr
    assert not os.path.exists(save), 'nothing is written on a user error'


def test_missing_data_folder_is_named(tmp_path, capsys):
    rc, _, err = run_main(['--data', str(tmp_path / 'nope'), *FAST, '--save',
                           str(tmp_path / 'run')], capsys)
    assert rc == 2 and '--data' in err and 'nope' in err


def test_finished_split_is_not_overwritten(tiny_data, tmp_path, capsys):
    save = str(tmp_path / 'run')
    args = ['--data', tiny_data, *FAST, '--nEpochs', '1', '--batchSize', '16', '--save', save]
    assert run_main(args, capsys)[0] == 0
    before = open(os.path.join(save, 'split1', 'result.json')).read()
    rc, _, err = run_main(args, capsys)
    assert rc == 2 and 'is finished' in err
    assert open(os.path.join(save, 'split1', 'result.json')).read() == before


def test_legacy_pickled_dataset_needs_allow_pickle(tmp_path, capsys):
    data = tmp_path / 'legacy'
    (data / 'esc10').mkdir(parents=True)
    rng = np.random.default_rng(1)
    legacy = {f'fold{k}': {'sounds': [tone_clip(rng, c) for c in range(2)], 'labels': [0, 1]}
              for k in range(1, 6)}
    np.savez(data / 'esc10' / 'wav16.npz', **legacy)
    args = ['--data', str(data), *FAST, '--nEpochs', '1', '--batchSize', '8',
            '--save', str(tmp_path / 'run')]
    rc, _, err = run_main(args, capsys)
    assert rc == 2 and '--allowPickle' in err
    rc, _, err = run_main(args + ['--allowPickle'], capsys)
    assert rc == 0, err
    # The file names two classes (class0, class1); the network's other outputs are named too.
    names = json.load(open(tmp_path / 'run' / 'split1' / 'record.json'))['class_names']
    assert names == [f'class{k}' for k in range(10)]


def test_stock_conv_flag_trains_the_same_model_without_the_fast_path(tiny_data, tmp_path, capsys,
                                                                     monkeypatch):
    import fastconv
    args = [*FAST, '--learning', 'intermix', '--nEpochs', '1', '--batchSize', '4']
    rc, out, err = run_main(['--data', tiny_data, *args, '--save', str(tmp_path / 'fast')], capsys)
    assert rc == 0, err
    assert 'convolution: fast NumPy path' in out

    def refuse(*a, **k):
        raise AssertionError('fast path used under --stockConv')
    monkeypatch.setattr(fastconv, 'fast_convolution_2d', refuse)
    rc, out, err = run_main(['--data', tiny_data, *args, '--stockConv',
                             '--save', str(tmp_path / 'stock')], capsys)
    assert rc == 0, err
    assert 'convolution: stock Chainer' in out
    assert fastconv.enabled()  # the flag is restored when main() returns
    fast = np.load(str(tmp_path / 'fast' / 'split1' / 'model.npz'))
    stock = np.load(str(tmp_path / 'stock' / 'split1' / 'model.npz'))
    assert sorted(fast.files) == sorted(stock.files)
    for key in fast.files:  # same seed, same steps: equal within float32 rounding
        np.testing.assert_allclose(fast[key], stock[key], rtol=1e-3, atol=1e-5, err_msg=key)


def test_ten_crop_confusion_averages_the_softmax_over_crops():
    """3 clips x 2 crops whose logits are the crops' first 3 samples: clip 0's crops vote for
    class 0 (strongly) and class 1 (weakly), so the average picks 0; clip 1 is class 2 twice;
    clip 2's crops vote for class 1 (logit 2) and class 2 (logit 1): the average picks 1."""
    crops = np.zeros((3, 2, 5), np.float32)
    crops[0, 0, :3] = [5, 0, 0]
    crops[0, 1, :3] = [0, 0.5, 0]
    crops[1, :, 2] = 3
    crops[2, 0, 1], crops[2, 1, 2] = 2, 1

    def model(x):
        assert x.shape[1:] == (1, 1, 5) and len(x) % 2 == 0  # 2 crops per clip
        return x[:, 0, 0, :3]
    prob = evaluation.ten_crop_probabilities(model, crops)
    e = np.exp
    assert prob[0] == pytest.approx([(e(5) / (e(5) + 2) + 1 / (2 + e(0.5))) / 2,
                                     (1 / (e(5) + 2) + e(0.5) / (2 + e(0.5))) / 2,
                                     (1 / (e(5) + 2) + 1 / (2 + e(0.5))) / 2])
    labels = np.array([0, 2, 2], np.int32)
    batches = [[(crops[i], labels[i]) for i in (0, 1)], [(crops[2], labels[2])]]
    import chainer
    device = chainer.get_device('@numpy')
    confusion = evaluation.ten_crop_confusion(model, batches, chainer.dataset.concat_examples,
                                            device, n_classes=3)
    assert confusion.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    assert evaluation.ten_crop_counts(model, batches, chainer.dataset.concat_examples,
                                    device) == (1, 3)


def test_per_class_results_from_a_confusion_matrix():
    r = evaluation.per_class_results([[3, 1, 0], [0, 0, 2], [0, 0, 0]], ['a', 'b', 'c'])
    assert r['test_error_per_class'] == {'a': 25.0, 'b': 100.0, 'c': None}
    assert r['test_clips_per_class'] == {'a': 4, 'b': 2, 'c': 0}
    assert r['confusion_matrix'] == {'class_names': ['a', 'b', 'c'], 'rows': 'true class',
                                     'columns': 'predicted class',
                                     'counts': [[3, 1, 0], [0, 0, 2], [0, 0, 0]]}
    with pytest.raises(ValueError):
        evaluation.per_class_results([[1, 0], [0, 1]], ['a', 'b', 'c'])


def test_csv_log_has_named_columns_and_an_empty_cell_where_not_tested():
    log = [{'epoch': 1, 'iteration': 4, 'lr': 0.1 * 0.1 * 0.01, 'main/loss': 2.5,
            'main/error': 75.0, 'elapsed_time': 3.25},
           {'epoch': 2, 'iteration': 8, 'lr': 0.01, 'main/loss': 1.0, 'main/error': 50.0,
            'validation/main/error': 37.5, 'elapsed_time': 6.5}]
    assert training.CsvLog(None, None).render(log).split('\r\n') == [
        'epoch,iteration,learning rate,train loss,train error (%),test error (%),elapsed time (s)',
        '1,4,0.0001,2.5,75,,3.25', '2,8,0.01,1,50,37.5,6.5', '']



# --------------------------------------------------------------------------------------------
# Per-epoch work a user does not need per epoch: the snapshot schedule and the plots


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Updater:
    def __init__(self):
        self.epoch, self.iteration, self.is_new_epoch = 0, 0, False


class _Trainer:
    def __init__(self):
        self.updater = _Updater()


def _simulate(schedule, clock, n_epochs, epoch_s, save_s, steps=3):
    """Run the trigger through ``n_epochs`` epochs of ``steps`` iterations each (``epoch_s``
    seconds an epoch), a save taking ``save_s``; returns the saved epochs and the seconds saving."""
    trainer, saved, saving = _Trainer(), [], 0.0
    save = schedule.timed(lambda path, target: None)
    for epoch in range(1, n_epochs + 1):
        for step in range(steps):
            clock.now += epoch_s / steps
            trainer.updater.iteration += 1
            trainer.updater.epoch = epoch if step == steps - 1 else epoch - 1
            trainer.updater.is_new_epoch = step == steps - 1
            if schedule(trainer):
                assert trainer.updater.is_new_epoch  # only ever at the end of an epoch
                clock.now += save_s
                saving += save_s
                save('snapshot.npz', None)
                saved.append(epoch)
    return saved, saving


def test_automatic_snapshots_take_at_most_2_percent_of_the_run_and_always_the_last_epoch():
    clock = _Clock()
    schedule = training.SnapshotSchedule(0, 100, clock=clock)
    # A 0.5 s snapshot after 2 s epochs: the first epoch, then each time 49 x 0.5 = 24.5 s have
    # passed since the last write ended (13 epochs: 26 s), and the final epoch.
    saved, saving = _simulate(schedule, clock, 100, epoch_s=2.0, save_s=0.5)
    assert saved == [1, 14, 27, 40, 53, 66, 79, 92, 100]
    assert schedule.last_cost == pytest.approx(0.5)
    assert (saving - 2 * 0.5) / clock.now <= 0.02  # the first and final epochs' writes aside
    # A snapshot costing more than an epoch: still at most 2 % (the first and final aside).
    clock = _Clock()
    saved, saving = _simulate(training.SnapshotSchedule(0, 1000, clock=clock), clock, 1000,
                              epoch_s=1.0, save_s=3.0)
    assert saved[0] == 1 and saved[-1] == 1000 and len(saved) == 8
    assert (saving - 2 * 3.0) / clock.now <= 0.02


def test_snapshot_every_n_epochs_and_at_the_end():
    clock = _Clock()
    saved, _ = _simulate(training.SnapshotSchedule(3, 10, clock=clock), clock, 10, 1.0, 100.0)
    assert saved == [3, 6, 9, 10]
    saved, _ = _simulate(training.SnapshotSchedule(1, 4, clock=clock), clock, 4, 1.0, 100.0)
    assert saved == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        training.SnapshotSchedule(-1, 4)
    with pytest.raises(ValueError):
        training.SnapshotSchedule(0, 4, budget=1.0)


def test_snapshot_every_flag_bad_value_is_one_line(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main.main(['--data', tiny_data, *FAST, '--snapshotEvery', '-1',
                   '--save', str(tmp_path / 'run')])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert '--snapshotEvery' in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / 'run')


def test_plots_are_drawn_on_test_epochs_but_keep_every_epoch(tiny_data, tmp_path, capsys,
                                                             monkeypatch):
    import matplotlib.figure
    drawn = []
    real = matplotlib.figure.Figure.savefig

    def savefig(self, path, *args, **kwargs):
        drawn.append(os.path.basename(str(path)))
        return real(self, path, *args, **kwargs)
    monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', savefig)
    save = str(tmp_path / 'run')
    rc, _, err = run_main(['--data', tiny_data, *FAST, '--nEpochs', '5', '--testEvery', '2',
                           '--batchSize', '8', '--save', save], capsys)
    assert rc == 0, err
    # Three PNGs (each through a temporary name) at the test epochs 2, 4 and the final 5.
    assert len(drawn) == 3 * 3 and all(name.endswith('.png') for name in drawn)
    split = os.path.join(save, 'split1')
    with np.load(os.path.join(split, 'snapshot.npz')) as z:  # the final epoch's snapshot
        key = next(k for k in z.files if k.endswith('_plot_error.png'))
        points = json.loads(str(z[key]))
    assert [x for x, _ in points['main/error']] == [1, 2, 3, 4, 5]
    assert [x for x, _ in points['validation/main/error']] == [2, 4, 5]
    log = read_jsonl(os.path.join(split, 'log.jsonl'))
    assert [y for _, y in points['main/error']] == pytest.approx([e['main/error'] for e in log])


def test_threads_flag_sets_the_process_threads_for_the_run_and_restores_them(tiny_data, tmp_path,
                                                                            capsys):
    import fastconv
    before = (fastconv.NUM_THREADS, fastconv._threads(),
              fastconv._blas[0]() if fastconv._blas else None)
    seen = []
    real = training.train_split

    def train_split(opt, *args, **kwargs):
        seen.append((fastconv._threads(), fastconv._blas[0]() if fastconv._blas else None))
        return real(opt, *args, **kwargs)
    training.train_split, saved = train_split, training.train_split
    try:
        rc, out, err = run_main(['--data', tiny_data, *FAST, '--nEpochs', '1', '--batchSize', '8',
                                 '--threads', '1', '--save', str(tmp_path / 'run')], capsys)
    finally:
        training.train_split = saved
    assert rc == 0, err
    assert seen == [(1, 1 if fastconv._blas else None)] and '1 thread(s)' in out
    record = json.load(open(tmp_path / 'run' / 'split1' / 'record.json'))
    assert record['device']['threads'] == 1 and '--threads 1' in record['command']['rerun']
    assert (fastconv.NUM_THREADS, fastconv._threads(),
            fastconv._blas[0]() if fastconv._blas else None) == before
    with pytest.raises(SystemExit) as e:
        main.main(['--data', tiny_data, *FAST, '--threads', '0', '--save', str(tmp_path / 'x')])
    assert e.value.code == 2 and '--threads must be at least 1' in capsys.readouterr().err
    with pytest.raises(ValueError):
        fastconv.set_threads(0)
