"""Fault injection: kill -9 at chosen points of training and of generation followed by a rerun
(the final files must be those of an uninterrupted run), and a table of bad inputs (every numeric
flag out of range, every damaged file type: one line, its exit status, nothing written changed).

Training runs SoundNet5 (0.5 M weights, the smallest network; 22.05 kHz) on a synthetic
ESC-10-shaped file of 5 folds x 4 clips, InterMix with --strongAugment, so that every random
stream of a run is used (pairs, r, phases, mixing points, crops, scale and gain); the dropout
stream is covered by one Logmel-CNN run. The kills are made by ``tests/fault_run.py``.
"""
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import main
import report
from datagen import npzio
from conftest import REPO_ROOT

FAULT_RUN = os.path.join(REPO_ROOT, 'tests', 'fault_run.py')
COMMON = ['--dataset', 'esc10', '--split', '1', '--nCrops', '2', '--gpu', '-1', '--seed', '7',
          '--testBatchSize', '2', '--snapshotEvery', '1']  # the kill points count snapshots
RUN = COMMON + ['--netType', 'soundnet5', '--learning', 'intermix', '--strongAugment',
                '--nEpochs', '3', '--batchSize', '4']  # 16 clips: 8 pairs, 2 steps per epoch
TIMES = ('seconds_this_run', 'seconds_total', 'elapsed_time')  # the only fields allowed to differ


def clip(rng, label, fs=22050):
    n = int(fs * rng.uniform(0.3, 0.8))
    t = np.arange(n) / fs
    x = 0.3 * np.sin(2 * np.pi * (200 + 150 * label) * t) + 0.05 * rng.standard_normal(n)
    return np.round(x * 32767).astype(np.int16)


def write_data(root, folds=range(1, 6), fs=22050, n_classes=10, name='esc10'):
    """DATA/<name>/wav22.npz: 4 clips per fold (labels (fold + i) mod 10); returns DATA."""
    rng = np.random.default_rng(0)
    content = {k: ([clip(rng, (k + i) % 10, fs) for i in range(4)], [(k + i) % 10 for i in range(4)])
               for k in folds}
    npzio.save_sound_npz(os.path.join(root, name, 'wav22.npz'), content, fs,
                         [f'class{c}' for c in range(n_classes)])
    return str(root)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp('data22'))


def run_main(args, capsys):
    """main.main in this process: (exit status, stdout, stderr); argparse's exit included."""
    try:
        rc = main.main(args)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope='module')
def uninterrupted(data, tmp_path_factory):
    """The split folder of the uninterrupted run of RUN."""
    save = str(tmp_path_factory.mktemp('uninterrupted') / 'run')
    assert main.main(['--data', data, *RUN, '--save', save]) == 0
    return os.path.join(save, 'split1')


def final_files(split_dir):
    """What a finished split must reproduce: model.npz's bytes, result.json and log.jsonl without
    their times, and the names of the other files (no temporary file left over)."""
    with open(os.path.join(split_dir, 'model.npz'), 'rb') as f:
        model = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(split_dir, 'result.json')) as f:
        result = {k: v for k, v in json.load(f).items() if k not in TIMES}
    with open(os.path.join(split_dir, 'log.jsonl')) as f:
        log = [{k: v for k, v in json.loads(line).items() if k not in TIMES} for line in f]
    return {'model.npz': model, 'result.json': result, 'log.jsonl': log,
            'files': sorted(os.listdir(split_dir))}


def fault_run(point, args, cwd=REPO_ROOT, program='main.py', signal_name=None):
    """Run ``program args`` under tests/fault_run.py with FAULT_KILL=point (and FAULT_SIGNAL
    when ``signal_name`` is given); returns (exit status, output). Whatever of its process group
    is left afterwards (e.g. data workers) is killed."""
    env = dict(os.environ, FAULT_KILL=point)
    if signal_name:
        env['FAULT_SIGNAL'] = signal_name
    proc = subprocess.Popen([sys.executable, FAULT_RUN, program, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
        except ProcessLookupError:
            pass
    return proc.returncode, out


def kill_at(point, args, cwd=REPO_ROOT, program='main.py'):
    """:func:`fault_run` with a kill -9 at ``point``: it must die by SIGKILL, and so must every
    process it started."""
    rc, out = fault_run(point, args, cwd, program)
    assert rc == -signal.SIGKILL, out
    return out


def snapshot_iteration(split_dir):
    with np.load(os.path.join(split_dir, 'snapshot.npz')) as z:
        return int(z['updater/iteration'])


# --------------------------------------------------------------------------------------------
# kill -9, then --resume: the files of the uninterrupted run


@pytest.mark.parametrize('point, kept_epoch', [
    ('step:3', 1),      # epoch 2, its first step: gradients computed, weights not yet updated
    ('snapshot:2', 1),  # epoch 2's snapshot half written (its log line already written)
    ('test:4', 1),      # epoch 2's test, its second batch of clips
    ('model:1', 3),     # after the last epoch's snapshot, model.npz half written
    ('result:1', 3),    # model.npz written, result.json written but not yet renamed
])
def test_kill_9_then_resume_ends_with_the_files_of_the_uninterrupted_run(
        data, uninterrupted, tmp_path, capsys, point, kept_epoch):
    save = str(tmp_path / 'run')
    split = os.path.join(save, 'split1')
    kill_at(point, ['--data', data, *RUN, '--save', save])
    assert not os.path.exists(os.path.join(split, 'result.json'))
    assert snapshot_iteration(split) == 2 * kept_epoch  # the last whole snapshot is kept
    if point == 'model:1':
        assert not os.path.exists(os.path.join(split, 'model.npz'))
    # Without --resume the unfinished split is protected; with it, it ends as if never killed.
    rc, _, err = run_main(['--data', data, *RUN, '--save', save], capsys)
    assert rc == 2 and '--resume' in err and len(err.splitlines()) == 1
    rc, out, err = run_main(['--data', data, *RUN, '--save', save, '--resume'], capsys)
    assert rc == 0, err
    assert f'at epoch {kept_epoch} of 3' in out
    assert final_files(split) == final_files(uninterrupted)


@pytest.mark.parametrize('point, name, iteration', [
    ('step:3', 'TERM', 3),      # epoch 2, first step: stops after it, mid-epoch
    ('test:4', 'TERM', 4),      # during epoch 2's test: the test ends, then the epoch's snapshot
    ('snapshot:2', 'TERM', 4),  # while epoch 2's snapshot is being written: that one is kept
    ('step:3', 'INT', 3),       # Ctrl-C: the same
])
def test_a_signal_stops_at_a_step_with_a_snapshot_and_resume_ends_as_uninterrupted(
        data, uninterrupted, tmp_path, capsys, point, name, iteration):
    save = str(tmp_path / 'run')
    split = os.path.join(save, 'split1')
    rc, out = fault_run(point, ['--data', data, *RUN, '--save', save], signal_name=name)
    assert rc == 128 + getattr(signal, f'SIG{name}'), out
    last = out.strip().splitlines()[-1]
    assert f'main.py: stopped by SIG{name} at epoch ' in last and 'Traceback' not in out
    assert f'iteration {iteration}' in last and last.endswith('--resume')
    assert snapshot_iteration(split) == iteration
    # Nothing half-written: no temporary file or folder, no lock, no result.
    assert sorted(os.listdir(split)) == sorted(
        n for n in os.listdir(split) if not n.startswith(('.', 'tmp')) and n != 'lock')
    assert not os.path.exists(os.path.join(split, 'result.json'))
    # The printed command continues it, to the uninterrupted run's files.
    words = shlex.split(last.split('continue with: ', 1)[1])
    assert words[1] == 'main.py'
    rc, out, err = run_main(words[2:], capsys)
    assert rc == 0, err
    assert final_files(split) == final_files(uninterrupted)


def test_a_second_signal_stops_at_once(data, tmp_path, capsys, monkeypatch):
    import training
    # what was installed before (SIGINT is ignored in a job started with & by a script)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signals = training.StopSignals()
    with signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    # The handlers are put back afterwards.
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_two_processes_on_one_split_the_second_is_refused(data, uninterrupted, tmp_path, capsys):
    save = str(tmp_path / 'run')
    lock = os.path.join(save, 'split1', 'lock')
    args = ['--data', data, *RUN, '--save', save]
    first = subprocess.Popen([sys.executable, 'main.py', *args], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not os.path.exists(lock) and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        rc, _, err = run_main(args, capsys)  # the same command, started again
        assert_one_line_error(rc, err, 2, 'split 1', f'in use by process {first.pid}',
                              socket.gethostname())
        rc, _, err = run_main([*args, '--resume'], capsys)  # and with --resume
        assert_one_line_error(rc, err, 2, f'in use by process {first.pid}')
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert not os.path.exists(lock)  # released at the end
    # The refused processes changed nothing: the first run's files are those of a lone run.
    assert final_files(os.path.join(save, 'split1')) == final_files(uninterrupted)


def test_a_lock_left_by_a_killed_process_is_taken_over(data, uninterrupted, tmp_path, capsys):
    save = str(tmp_path / 'run')
    kill_at('step:3', ['--data', data, *RUN, '--save', save])
    lock = os.path.join(save, 'split1', 'lock')
    with open(lock) as f:
        dead = json.load(f)  # the killed process's record stays; its flock went with it
    rc, out, err = run_main(['--data', data, *RUN, '--save', save, '--resume'], capsys)
    assert rc == 0, err
    assert f'taking over the lock of process {dead["pid"]}' in err and 'which has ended' in err
    assert final_files(os.path.join(save, 'split1')) == final_files(uninterrupted)


def test_worker_processes_draw_the_same_examples_and_resume_exactly(data, uninterrupted,
                                                                     tmp_path, capsys):
    # Each draw's stream comes from (seed, epoch, index): 2 workers train the very same model.
    save = str(tmp_path / 'workers')
    rc, _, err = run_main(['--data', data, *RUN, '--nWorkers', '2', '--save', save], capsys)
    assert rc == 0, err
    assert final_files(os.path.join(save, 'split1')) == final_files(uninterrupted)
    # Killed mid-step with its workers running (they die with it), then resumed.
    save = str(tmp_path / 'killed')
    kill_at('step:4', ['--data', data, *RUN, '--nWorkers', '2', '--save', save])
    rc, out, err = run_main(['--data', data, *RUN, '--nWorkers', '2', '--save', save, '--resume'],
                            capsys)
    assert rc == 0, err
    assert 'resumed from' in out and 'at epoch 1 of 3' in out  # not a run from the start
    assert final_files(os.path.join(save, 'split1')) == final_files(uninterrupted)


def test_dropout_stream_resumes_exactly(data, tmp_path, capsys):
    # Logmel-CNN has dropout (Chainer's F.dropout draws from NumPy's global stream on the CPU).
    args = ['--data', data, *COMMON, '--netType', 'logmel_cnn', '--learning', 'bc',
            '--nEpochs', '2', '--batchSize', '4']
    rc, _, err = run_main([*args, '--save', str(tmp_path / 'a')], capsys)
    assert rc == 0, err
    kill_at('step:4', [*args, '--save', str(tmp_path / 'b')])  # epoch 2, second step
    rc, out, err = run_main([*args, '--save', str(tmp_path / 'b'), '--resume'], capsys)
    assert rc == 0, err
    assert 'resumed from' in out and 'at epoch 1 of 2' in out  # not a run from the start
    assert (final_files(str(tmp_path / 'b' / 'split1')) ==
            final_files(str(tmp_path / 'a' / 'split1')))


def test_kill_9_while_writing_the_dataset_files_then_rerun(tmp_path, capsys):
    from test_esc_gen import make_tree
    import esc_gen
    make_tree(str(tmp_path / 'src'))
    args = ['--source', str(tmp_path / 'src'), '--workers', '1']
    assert esc_gen.main([str(tmp_path / 'clean'), *args]) == 0
    data = str(tmp_path / 'data')
    kill_at('npz:3', [data, *args], program='esc_gen.py')  # the 3rd of 8 files half written
    written = sorted(os.path.join(d, f) for d in ('esc50', 'esc10')
                     for f in os.listdir(os.path.join(data, d))
                     if os.path.isdir(os.path.join(data, d)))
    finished = [p for p in written if not os.path.basename(p).startswith('.')]
    assert len(finished) == 2 and len(written) == 3  # two whole files, one temporary file
    for p in finished:
        npzio.load_sound_npz(os.path.join(data, p))
    assert esc_gen.main([data, *args]) == 0
    capsys.readouterr()
    for d in ('esc50', 'esc10'):
        names = sorted(os.listdir(os.path.join(tmp_path, 'clean', d)))
        assert sorted(os.listdir(os.path.join(data, d))) == names  # temporary file gone
        for name in names:
            a = npzio.load_sound_npz(os.path.join(tmp_path, 'clean', d, name))
            b = npzio.load_sound_npz(os.path.join(data, d, name))
            assert (a.fs, a.class_names, sorted(a.folds)) == (b.fs, b.class_names, sorted(b.folds))
            for k in a.folds:
                assert np.array_equal(a.folds[k][1], b.folds[k][1])
                assert all(np.array_equal(x, y) for x, y in zip(a.folds[k][0], b.folds[k][0]))


# --------------------------------------------------------------------------------------------
# Non-finite weights never reach a file


def test_non_finite_weights_stop_training_before_anything_holds_them(data, tmp_path, capsys,
                                                                      monkeypatch):
    import chainer
    real = chainer.optimizers.NesterovAG.update
    calls = []

    def update(self, *args, **kwargs):
        real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:  # epoch 2, first step: a weight becomes NaN, the loss is still fine
            self.target.fc5.W.array[0, 0] = np.nan
    monkeypatch.setattr(chainer.optimizers.NesterovAG, 'update', update)
    save = str(tmp_path / 'run')
    rc, _, err = run_main(['--data', data, *RUN, '--save', save], capsys)
    assert rc == 3 and len(err.splitlines()) == 1, err
    assert 'non-finite values in fc5/W at epoch 2, iteration 3' in err
    assert 'snapshot.npz (epoch 1)' in err
    split = os.path.join(save, 'split1')
    assert snapshot_iteration(split) == 2
    assert not os.path.exists(os.path.join(split, 'model.npz'))
    assert not os.path.exists(os.path.join(split, 'result.json'))


def test_non_finite_statistics_are_not_saved_in_a_snapshot(data, tmp_path, capsys, monkeypatch):
    import evaluation
    real = evaluation.TenCropEvaluator.evaluate

    def evaluate(self):  # BN running statistics (not touched by the optimizer) become NaN
        self.get_target('main').conv1.bn.avg_var[:] = np.nan
        return real(self)
    monkeypatch.setattr(evaluation.TenCropEvaluator, 'evaluate', evaluate)
    save = str(tmp_path / 'run')
    rc, _, err = run_main(['--data', data, *RUN, '--save', save], capsys)
    assert rc == 3 and 'non-finite values in updater/model:main/conv1/bn/avg_var at epoch 1' in err
    assert not os.path.exists(os.path.join(save, 'split1', 'snapshot.npz'))


# --------------------------------------------------------------------------------------------
# Small and partial datasets


def test_fewer_training_pairs_than_a_batch_train_one_batch_per_epoch(data, tmp_path, capsys):
    save = str(tmp_path / 'run')
    rc, out, err = run_main(['--data', data, *COMMON, '--netType', 'soundnet5', '--learning',
                             'bc', '--nEpochs', '2', '--batchSize', '32', '--schedule', '0.5',
                             '--LR', '0.1', '--testEvery', '2', '--save', save], capsys)
    assert rc == 0, err
    assert '8 training pairs, fewer than --batchSize 32: one batch of 8 per epoch' in out
    assert 'epoch 1/2' in out and 'epoch 2/2' in out and 'ETA 0:00:00' in out
    log = [json.loads(line) for line in open(os.path.join(save, 'split1', 'log.jsonl'))]
    assert [(e['epoch'], e['iteration']) for e in log] == [(1, 1), (2, 2)]
    assert [e['lr'] for e in log] == pytest.approx([0.1, 0.01])  # the schedule's step at 1.0
    result = json.load(open(os.path.join(save, 'split1', 'result.json')))
    assert result['final_epoch'] == 2 and result['epochs'] == 2


def test_split_minus_1_runs_the_folds_present_and_says_which_are_missing(tmp_path, capsys):
    data = write_data(tmp_path / 'partial', folds=(2, 4))
    save = str(tmp_path / 'run')
    rc, out, err = run_main(['--data', data, *COMMON[:2], '--split', '-1', *COMMON[4:],
                             '--netType', 'soundnet5', '--nEpochs', '1', '--batchSize', '8',
                             '--save', save], capsys)
    assert rc == 0, err
    assert 'folds 1, 3, 5 of 5 missing or empty: running splits 2, 4 only' in out
    assert sorted(os.listdir(save)) == ['split2', 'split4', 'summary.json']
    summary = json.load(open(os.path.join(save, 'summary.json')))
    assert summary['splits'] == [2, 4] and summary['complete'] is False
    assert summary['standard_error'] is not None and '+- ' in out
    # One split: no standard error, said in words (not "+- 0.00").
    rc, out, err = run_main(['--data', data, *COMMON[:2], '--split', '2', *COMMON[4:],
                             '--netType', 'soundnet5', '--testOnly', '--save', save], capsys)
    assert rc == 0, err
    line = next(l for l in out.splitlines() if l.startswith('esc10 soundnet5 standard:'))
    assert '(one split: no standard error' in line and '+-' not in line
    assert json.load(open(os.path.join(save, 'summary_testOnly.json')))['standard_error'] is None


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2, nothing written or changed


def tree_state(root):
    """{relative path: sha256} of every file below ``root`` ({} if it does not exist)."""
    state = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                state[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return state


def assert_one_line_error(rc, err, code, *words):
    assert rc == code, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(('main.py: error: ', 'report.py: error: ')), err
    assert 'Traceback' not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


BAD_FLAGS = [  # (flags, words the one line must hold)
    (['--LR', 'nan'], ['--LR nan', 'not a finite number']),
    (['--LR', 'inf'], ['--LR inf', 'not a finite number']),
    (['--LR', '0'], ['--LR must be positive']),
    (['--LR', '-1'], ['--LR must be positive']),
    (['--momentum', 'nan'], ['--momentum nan', 'not a finite number']),
    (['--momentum', '1'], ['--momentum 1.0', 'out of range']),
    (['--momentum', '-0.5'], ['--momentum -0.5', 'out of range']),
    (['--weightDecay', 'nan'], ['--weightDecay nan', 'not a finite number']),
    (['--weightDecay', 'inf'], ['--weightDecay inf', 'not a finite number']),
    (['--weightDecay', '-1'], ['--weightDecay -1.0', 'out of range']),
    (['--schedule', 'nan'], ['--schedule']),
    (['--schedule', '0.5', 'inf'], ['--schedule']),
    (['--schedule', '1'], ['--schedule']),
    (['--testOnly', '--fgsm', 'nan'], ['--fgsm nan', 'not a finite number']),
    (['--testOnly', '--fgsm', '-0.1'], ['--fgsm: epsilons must be >= 0']),
    (['--nEpochs', '0'], ['--nEpochs must be at least 1']),
    (['--nEpochs', '1.5'], ['--nEpochs', 'invalid int']),
    (['--batchSize', '0'], ['--batchSize must be at least 1']),
    (['--nCrops', '0'], ['--nCrops must be at least 1']),
    (['--testEvery', '0'], ['--testEvery must be at least 1']),
    (['--testBatchSize', '-3'], ['--testBatchSize must be at least 1']),
    (['--warmup', '-1'], ['--warmup must be >= 0']),
    (['--nWorkers', '-1'], ['--nWorkers must be >= 0']),
    (['--split', '6'], ['--split 6', 'splits 1-5']),
    (['--split', '-2'], ['--split -2']),
    (['--gpu', '-2'], ['--gpu -2', 'no such device']),
    (['--seed', '-1'], ['--seed -1', 'negative']),
    (['--eligible', '9', '--learning', 'bc'], ['--eligible 9']),
]


@pytest.mark.parametrize('flags, words', BAD_FLAGS, ids=[' '.join(f) for f, _ in BAD_FLAGS])
def test_bad_flag_values(data, tmp_path, capsys, flags, words):
    save = str(tmp_path / 'run')
    args = ['--data', data, '--dataset', 'esc10', '--netType', 'soundnet5', '--save', save]
    rc, _, err = run_main([*args, *flags], capsys)
    assert_one_line_error(rc, err, 2, *words)
    assert not os.path.exists(save)


@pytest.fixture(scope='module')
def finished(data, tmp_path_factory):
    """A finished 1-epoch split to damage: (DATA, --save)."""
    save = str(tmp_path_factory.mktemp('finished') / 'run')
    assert main.main(['--data', data, *COMMON, '--netType', 'soundnet5', '--nEpochs', '1',
                      '--batchSize', '8', '--save', save]) == 0
    return save


def damage(kind, path):
    if kind == 'truncated':
        with open(path, 'r+b') as f:
            f.truncate(os.path.getsize(path) // 2)
    elif kind == 'garbage':
        with open(path, 'wb') as f:
            f.write(b'\x00not what it should be\xff' * 7)
    elif kind == 'empty':
        open(path, 'wb').close()
    else:  # a JSON edit: 'key=value' (value JSON) or 'key-' to delete the key
        with open(path) as f:
            obj = json.load(f)
        key, _, value = kind.partition('=')
        if key.endswith('-'):
            del obj[key[:-1]]
        else:
            obj[key] = json.loads(value)
        with open(path, 'w') as f:
            f.write(json.dumps(obj).replace('Infinity', 'NaN'))


BAD_FILES = [  # (file, damage, unfinished: result.json and model.npz removed first, flags, words)
    ('snapshot.npz', 'truncated', True, ['--resume'], ['snapshot.npz: cannot resume', 'delete it']),
    ('snapshot.npz', 'garbage', True, ['--resume'], ['snapshot.npz: cannot resume', 'delete it']),
    ('run.json', 'garbage', True, ['--resume'], ['run.json: unreadable', 'delete the folder']),
    ('run.json', 'empty', True, ['--resume'], ['run.json: unreadable']),
    ('run.json', 'seed-', True, ['--resume'], ['run.json: seed missing']),
    ('run.json', 'seed=-5', True, [], ['run.json: seed invalid']),
    ('result.json', 'garbage', False, ['--resume'], ['result.json: unreadable', '--resume']),
    ('result.json', 'final_error=1e999', False, ['--resume'], ['result.json: final_error']),
    ('result.json', 'final_epoch-', False, ['--resume'], ['result.json: final_epoch missing']),
    ('result.json', 'garbage', False, ['--testOnly'], ['result.json: unreadable']),
    ('model.npz', 'truncated', False, ['--testOnly'], ['model.npz', '--testOnly']),
    ('record.json', 'garbage', True, ['--resume'], ['record.json: unreadable', 'delete it']),
    ('record.json', 'garbage', False, ['--testOnly'], ['record.json: unreadable']),
]


@pytest.mark.parametrize('name, kind, unfinished, flags, words', BAD_FILES,
                         ids=[f'{n}-{k}-{" ".join(f)}' for n, k, _, f, _ in BAD_FILES])
def test_damaged_files_of_a_run(data, finished, tmp_path, capsys, name, kind, unfinished, flags,
                                words):
    save = str(tmp_path / 'run')
    shutil.copytree(finished, save)
    split = os.path.join(save, 'split1')
    if unfinished:
        for gone in ('result.json', 'model.npz'):
            os.remove(os.path.join(split, gone))
    damage(kind, os.path.join(split, name))
    before = tree_state(save)
    rc, _, err = run_main(['--data', data, *COMMON, '--netType', 'soundnet5', '--nEpochs', '1',
                           '--batchSize', '8', '--save', save, *flags], capsys)
    assert_one_line_error(rc, err, 2, *words)
    assert tree_state(save) == before


def test_damaged_files_for_report(finished, tmp_path, capsys):
    for name, kind, words in [('run.json', 'garbage', 'run.json: unreadable'),
                              ('run.json', 'settings={"netType": "soundnet5"}',
                               'run.json: settings.learning missing'),
                              ('result.json', 'final_error=1e999', 'result.json: final_error'),
                              ('result.json', 'final_error="7"', 'result.json: final_error')]:
        save = str(tmp_path / 'run')
        shutil.rmtree(save, ignore_errors=True)
        shutil.copytree(finished, save)
        damage(kind, os.path.join(save, 'split1', name))
        try:
            rc = report.main([save, '--out', str(tmp_path / 'report')])
        except SystemExit as e:
            rc = e.code
        assert_one_line_error(rc, capsys.readouterr().err, 2, words)
        assert not os.path.exists(tmp_path / 'report')


BAD_DATA = [  # (what the file holds, words)
    ('truncated', ['wav22.npz', 'not an .npz']),
    ('garbage', ['wav22.npz', 'not an .npz']),
    ('fold 6', ['wav22.npz: fold 6 not in ESC-10 (folds 1-5)', 'esc_gen.py']),
    ('50 classes', ['wav22.npz: 50 classes, but ESC-10 has 10', 'esc_gen.py']),
    ('legacy label 12', ['wav22.npz: fold 1 has label 12', 'labels 0-9']),
]


@pytest.mark.parametrize('content, words', BAD_DATA, ids=[c for c, _ in BAD_DATA])
def test_dataset_files_that_do_not_fit_the_dataset(tmp_path, capsys, content, words):
    root = tmp_path / 'data'
    path = os.path.join(root, 'esc10', 'wav22.npz')
    extra = []
    if content in ('truncated', 'garbage'):
        write_data(root, folds=(1, 2))
        damage(content, path)
    elif content == 'fold 6':
        write_data(root, folds=(1, 6))
    elif content == '50 classes':
        write_data(root, folds=(1, 2), n_classes=50)
    else:  # the reference generators' pickled format, ESC-50 labels under esc10
        os.makedirs(os.path.dirname(path))
        rng = np.random.default_rng(0)
        np.savez(path, **{f'fold{k}': {'sounds': [clip(rng, 0), clip(rng, 1)], 'labels': [12, 3]}
                          for k in (1, 2)})
        extra = ['--allowPickle']
    before = tree_state(root)
    save = str(tmp_path / 'run')
    rc, _, err = run_main(['--data', str(root), *COMMON, '--netType', 'soundnet5', '--save', save,
                           *extra], capsys)
    assert_one_line_error(rc, err, 2, *words)
    assert tree_state(root) == before and not os.path.exists(save)


def test_save_that_cannot_be_written(data, tmp_path, capsys):
    a_file = tmp_path / 'a_file'
    a_file.write_text('keep me')
    args = ['--data', data, *COMMON, '--netType', 'soundnet5', '--nEpochs', '1']
    for save, words in [(str(a_file), ['--save', 'is a file, not a folder']),
                        (str(a_file / 'run'), ['--save', 'lies under the file']),
                        ('/proc/intermix-cannot-write/run', ['--save', 'cannot write in /proc'])]:
        rc, _, err = run_main([*args, '--save', save], capsys)
        assert_one_line_error(rc, err, 2, *words)
    assert a_file.read_text() == 'keep me'


def test_a_full_disk_while_training_is_one_line(data, tmp_path, capsys, monkeypatch):
    import errno
    import checkpoint

    def full(path, target, where=None):
        raise OSError(errno.ENOSPC, 'No space left on device', path)
    monkeypatch.setattr(checkpoint, 'save_npz_uncompressed', full)
    rc, _, err = run_main(['--data', data, *RUN, '--save', str(tmp_path / 'run')], capsys)
    assert_one_line_error(rc, err, 1, 'No space left on device', '--resume')


def test_resume_of_a_finished_split_checks_its_settings_and_seed(data, finished, tmp_path,
                                                                   capsys):
    save = str(tmp_path / 'run')
    shutil.copytree(finished, save)
    before = tree_state(save)
    args = ['--data', data, *COMMON, '--nEpochs', '1', '--batchSize', '8', '--save', save,
            '--resume']
    rc, _, err = run_main([*args, '--netType', 'logmel_cnn', '--LR', '0.5'], capsys)
    assert_one_line_error(rc, err, 2, 'split 1', 'was run with other settings',
                          'netType soundnet5 -> logmel_cnn', 'LR ')
    assert tree_state(save) == before  # the summary included
    rc, _, err = run_main([*args, '--netType', 'soundnet5', '--seed', '5'], capsys)  # was 7
    assert_one_line_error(rc, err, 2, 'was run with --seed 7', 'not --seed 5')
    assert tree_state(save) == before
    rc, out, err = run_main([*args, '--netType', 'soundnet5'], capsys)  # its own settings
    assert rc == 0 and 'finished before' in out, err


def test_a_full_disk_names_the_file_and_the_space_a_snapshot_needs(data, tmp_path, capsys,
                                                                   monkeypatch):
    import errno
    import utils

    def full(path, arrays):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(utils, 'savez_stable', full)
    save = str(tmp_path / 'run')
    rc, _, err = run_main(['--data', data, *RUN, '--save', save], capsys)
    assert_one_line_error(rc, err, 1, os.path.join(save, 'split1', 'snapshot.npz') + ':',
                          'No space left on device', 'writing it needs about 4 MB',
                          'MB free there', '--resume')


def test_a_snapshot_of_another_network_is_refused(data, finished, tmp_path, capsys):
    # A whole, readable snapshot that does not fit: one line, nothing changed.
    save = str(tmp_path / 'run')
    shutil.copytree(finished, save)
    split = os.path.join(save, 'split1')
    for gone in ('result.json', 'model.npz'):
        os.remove(os.path.join(split, gone))
    with zipfile.ZipFile(os.path.join(split, 'snapshot.npz')) as z:
        names = [n for n in z.namelist() if not n.startswith('updater/model:main/fc5/')]
        members = {n: z.read(n) for n in names}
    with zipfile.ZipFile(os.path.join(split, 'snapshot.npz'), 'w') as z:
        for n, b in members.items():
            z.writestr(n, b)
    before = tree_state(save)
    rc, _, err = run_main(['--data', data, *COMMON, '--netType', 'soundnet5', '--nEpochs', '1',
                           '--batchSize', '8', '--save', save, '--resume'], capsys)
    assert_one_line_error(rc, err, 2, 'snapshot.npz: cannot resume', 'KeyError')
    assert tree_state(save) == before
