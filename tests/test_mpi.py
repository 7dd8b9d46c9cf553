"""Multi-process training with ChainerMN over MPI (``main.py --communicator``), on the CPU.

Every MPI test starts ``mpiexec -n 2`` (the Open MPI of ``requirements-mpi.txt``, in the venv's
``bin``) on ``tests/mpi_run.py``, which runs ``main.py`` with test-only changes chosen by
environment variables (see that file). The runs use EnvNet on a few short clips, so each takes
tens of seconds on two CPU cores.

Without mpi4py/Open MPI these tests are skipped with the reason, unless ``INTERMIX_REQUIRE_MPI=1``
(set by ``scripts/test.sh`` whenever ``scripts/setup.sh`` installed ``requirements-mpi.txt``),
where they fail: CI must not skip them silently. An MPI that is installed but cannot start fails
them in any case.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from datagen import npzio
import opts

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(REPO_ROOT, 'tests', 'mpi_run.py')
CLASSES = ['dog', 'rain', 'sea_waves', 'crying_baby', 'clock_tick', 'sneezing', 'helicopter',
           'chainsaw', 'rooster', 'crackling_fire']
FAST = ['--dataset', 'esc10', '--netType', 'envnet', '--split', '1', '--gpu', '-1', '--seed', '7']


def _find_mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
    return here if os.path.isfile(here) else shutil.which('mpiexec')


def _mpi_missing():
    """Why the MPI stack is unusable here, or None."""
    try:
        import mpi4py  # noqa: F401
    except ImportError as e:
        return f'mpi4py is not installed ({e})'
    if _find_mpiexec() is None:
        return 'no mpiexec next to the interpreter or on PATH'
    return None


MISSING = _mpi_missing()
# Skipped (with the reason) only where the MPI stack is missing and not required; where it is
# required (scripts/test.sh after setup.sh installed requirements-mpi.txt) a missing stack fails.
needs_mpi = pytest.mark.skipif(
    MISSING is not None and os.environ.get('INTERMIX_REQUIRE_MPI') != '1',
    reason=f'MPI tests skipped: {MISSING}; install the MPI stack with: .venv/bin/pip install -r '
           f'requirements-mpi.txt (scripts/setup.sh does, unless NO_MPI=1)')


def mpi_env(**extra):
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1',
               OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore::FutureWarning')
    for key in list(env):
        if key.startswith('MPI_TEST_'):
            del env[key]
    env.update({k: str(v) for k, v in extra.items()})
    return env


def mpirun(n, args, timeout=240, **env):
    """``mpiexec -n n python tests/mpi_run.py args`` -> (CompletedProcess, seconds)."""
    if MISSING is not None:
        pytest.fail(f'INTERMIX_REQUIRE_MPI=1 but the MPI stack is missing: {MISSING}')
    cmd = [_find_mpiexec(), '--oversubscribe', '-n', str(n), sys.executable, HELPER, *args]
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=mpi_env(**env), capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.time() - start


def single(args, timeout=240, **env):
    """One process (no MPI): ``python tests/mpi_run.py args`` -> CompletedProcess."""
    return subprocess.run([sys.executable, HELPER, *args], cwd=REPO_ROOT, env=mpi_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def tone_clip(rng, label, seconds, fs=16000):
    n = int(fs * seconds)
    t = np.arange(n) / fs
    x = 0.3 * np.sin(2 * np.pi * (200 + 150 * label) * t) + 0.05 * rng.standard_normal(n)
    return np.round(x * 32767).astype(np.int16)


def write_data(root, folds):
    """DATA folder with esc10/wav16.npz from {fold: [label, ...]} (synthetic tones)."""
    rng = np.random.default_rng(0)
    data = {k: ([tone_clip(rng, c, rng.uniform(0.3, 1.0)) for c in labels], labels)
            for k, labels in folds.items()}
    npzio.save_sound_npz(os.path.join(root, 'esc10', 'wav16.npz'), data, 16000, CLASSES)
    return str(root)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def files_under(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(root) for f in names)


def check(proc):
    tail = f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    assert proc.returncode == 0, f'exit {proc.returncode}\n{tail}'


# ------------------------------------------------------------------------------------------------

@needs_mpi
def test_mpi_starts_two_ranks():
    """Fails loudly (not a skip) when MPI is installed but cannot start two processes here."""
    if MISSING is not None:
        pytest.fail(f'INTERMIX_REQUIRE_MPI=1 but the MPI stack is missing: {MISSING}')
    code = ('import compat, chainermn; c = chainermn.create_communicator("naive"); '
            'print("rank", c.rank, "of", c.size, "sum", c.allreduce_obj(c.rank + 1))')
    cmd = [_find_mpiexec(), '--oversubscribe', '-n', '2', sys.executable, '-c', code]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=mpi_env(PYTHONPATH=REPO_ROOT),
                          capture_output=True, text=True, timeout=120)
    check(proc)
    assert sorted(line for line in proc.stdout.splitlines() if line.startswith('rank')) == [
        'rank 0 of 2 sum 3', 'rank 1 of 2 sum 3']


@needs_mpi
def test_two_ranks_with_mnbn_hold_the_weights_of_one_process_with_the_global_batch(tmp_path):
    """k = 2 steps of standard learning, no dropout, no random crop, fixed order (--noShuffle),
    float64: 2 ranks x batch 2 with --mnBN == 1 process x batch 4, every array of model.npz
    (parameters and BN running statistics) within 1e-5."""
    import compat  # noqa: F401
    import chainer
    import models
    data = write_data(tmp_path / 'data', {1: [0], 2: [0, 1, 2, 3, 4, 5, 6, 7]})
    common = ['--data', data, *FAST, '--learning', 'standard', '--nEpochs', '1', '--LR', '0.1',
              '--schedule', '0.5', '--nCrops', '1', '--noShuffle']
    env = {'MPI_TEST_DETERMINISTIC': 1, 'MPI_TEST_FLOAT64': 1}
    one = single(common + ['--batchSize', '4', '--save', str(tmp_path / 'one')], **env)
    check(one)
    two, _ = mpirun(2, common + ['--batchSize', '2', '--communicator', 'naive', '--mnBN',
                                 '--save', str(tmp_path / 'two')], **env)
    check(two)
    logs = [read_jsonl(tmp_path / run / 'split1' / 'log.jsonl') for run in ('one', 'two')]
    assert [e['iteration'] for e in logs[0]] == [e['iteration'] for e in logs[1]] == [2]
    assert 'global batch 2 x 2 = 4 clips' in two.stdout

    a = np.load(tmp_path / 'one' / 'split1' / 'model.npz')
    b = np.load(tmp_path / 'two' / 'split1' / 'model.npz')
    assert sorted(a.files) == sorted(b.files)
    diff = {k: float(np.max(np.abs(a[k] - b[k]))) for k in a.files if a[k].size}
    worst = max(diff, key=diff.get)
    assert diff[worst] <= 1e-5, f'{worst} differs by {diff[worst]:.3g}'
    assert max(diff[k] for k in diff if k.endswith('avg_var')) <= 1e-5  # global unbiasing

    # The steps moved the weights far more than the tolerance (so the check is not vacuous).
    np.random.seed(1007)  # the split's seed: --seed 7 + 1000 x split 1
    with chainer.using_config('dtype', np.dtype(np.float64)):
        init = models.archs['envnet'](10)
    moved = {name.lstrip('/'): float(np.max(np.abs(a[name.lstrip('/')] - p.array)))
             for name, p in init.namedparams()}
    assert min(moved.values()) > 1e-4 and max(moved.values()) > 1e-2, moved


@pytest.fixture(scope='module')
def esc10_subset(esc10_npz_dir, tmp_path_factory):
    """A small real ESC-10 subset at 16 kHz: 2 clips per fold, classes 2k-2 and 2k-1 in fold k
    (10 classes in all, so every rank's share of the training clips holds several classes)."""
    soundset = npzio.load_sound_npz(os.path.join(esc10_npz_dir, 'esc10', 'wav16.npz'))
    folds = {}
    for k in sorted(soundset.folds):
        sounds, labels = soundset.folds[k]
        picks = [next(i for i in range(len(labels)) if labels[i] == c % 10)
                 for c in (2 * k - 2, 2 * k - 1)]
        folds[k] = ([np.array(sounds[i]) for i in picks], [int(labels[i]) for i in picks])
    root = tmp_path_factory.mktemp('esc10subset')
    npzio.save_sound_npz(os.path.join(root, 'esc10', 'wav16.npz'), folds, soundset.fs,
                         soundset.class_names)
    return str(root)


@needs_mpi
def test_one_epoch_on_real_esc10_writes_exactly_one_result_set(esc10_subset, tmp_path, capsys):
    """InterMix, 2 ranks x 2 pairs, 1 epoch on 8 real training clips (4 per rank), 10-crop test
    of 2 clips scattered over the ranks; only rank 0 writes, and the error it reports is the
    error of the whole fold (a single-process --testOnly of model.npz gives the same)."""
    import main
    save = str(tmp_path / 'run')
    args = ['--data', esc10_subset, *FAST, '--learning', 'intermix', '--nEpochs', '1',
            '--batchSize', '2', '--save', save]
    proc, seconds = mpirun(2, args + ['--communicator', 'naive'])
    check(proc)
    assert files_under(save) == [
        'split1/error.png', 'split1/log.csv', 'split1/log.jsonl', 'split1/loss.png',
        'split1/lr.png', 'split1/model.npz', 'split1/record.json', 'split1/result.json',
        'split1/run.json', 'split1/snapshot.npz', 'summary.json']
    log = read_jsonl(os.path.join(save, 'split1', 'log.jsonl'))
    assert [e['epoch'] for e in log] == [1]
    assert proc.stdout.count('epoch 1/1 |') == 1 and proc.stdout.count('split 1: final') == 1
    assert 'rank 1: device: CPU' in proc.stdout
    result = json.load(open(os.path.join(save, 'split1', 'result.json')))
    assert result['settings']['ranks'] == 2 and result['train_clips'] == 8
    assert result['test_clips'] == 2 and result['final_error'] in (0.0, 50.0, 100.0)
    counts = result['confusion_matrix']['counts']  # summed over the ranks' shards
    assert sum(map(sum, counts)) == 2 and 50.0 * (2 - np.trace(counts)) == result['final_error']
    assert json.load(open(os.path.join(save, 'split1', 'record.json')))['options']['ranks'] == 2
    # The same weights tested by one process on the whole fold give the same error.
    capsys.readouterr()
    assert main.main(['--data', esc10_subset, *FAST, '--learning', 'intermix', '--testOnly',
                      '--save', save]) == 0
    assert json.load(open(os.path.join(save, 'summary_testOnly.json')))['errors'] == [
        result['final_error']]
    print(f'2-rank epoch on the ESC-10 subset: {seconds:.1f} s')


@needs_mpi
def test_bad_data_path_on_one_rank_ends_the_job_with_one_message(tmp_path):
    data = write_data(tmp_path / 'data', {1: [0, 1], 2: [2, 3, 4, 5]})
    save = str(tmp_path / 'run')
    proc, seconds = mpirun(2, ['--data', data, *FAST, '--nEpochs', '1', '--batchSize', '2',
                               '--communicator', 'naive', '--save', save],
                           timeout=120, MPI_TEST_BAD_DATA_RANK=1)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith('main.py')]
    assert errors == ['main.py: error: rank 1 of 2: --data /nonexistent/data-of-rank-1: no such '
                      'directory (generate it with esc_gen.py or urbansound_gen.py)'], proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not os.path.exists(save), 'nothing is written when the set-up fails'
    assert seconds < 60


@needs_mpi
def test_a_rank_failing_in_training_ends_the_job_and_resume_finishes_it(tmp_path):
    """Rank 1 raises after the update of iteration 2 (epoch 2) while rank 0 waits for it: the job
    ends with the rank's message instead of hanging; --resume then finishes from epoch 1."""
    data = write_data(tmp_path / 'data', {1: [0, 1], 2: [2, 3, 4, 5]})
    save = str(tmp_path / 'run')
    args = ['--data', data, *FAST, '--nEpochs', '2', '--batchSize', '2', '--nCrops', '2',
            '--communicator', 'naive', '--save', save]
    proc, seconds = mpirun(2, args, timeout=180, MPI_TEST_FAIL_RANK=1, MPI_TEST_FAIL_ITERATION=2)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ('main.py: error: rank 1 of 2: RuntimeError: injected failure in iteration 2; ending '
            'all 2 ranks (MPI_Abort 1)') in proc.stderr
    split = os.path.join(save, 'split1')
    assert [e['epoch'] for e in read_jsonl(os.path.join(split, 'log.jsonl'))] == [1]
    assert os.path.isfile(os.path.join(split, 'snapshot.npz'))
    assert not os.path.exists(os.path.join(split, 'result.json'))

    # Another number of ranks would split the clips otherwise: refused before any training.
    other, _ = mpirun(1, args + ['--resume'], timeout=120)
    assert other.returncode == 2 and 'ranks 2 -> 1' in other.stderr, other.stderr

    resumed, _ = mpirun(2, args + ['--resume'], timeout=180)
    check(resumed)
    assert resumed.stdout.count('resumed from') == 1 and 'at epoch 1 of 2' in resumed.stdout
    assert [e['epoch'] for e in read_jsonl(os.path.join(split, 'log.jsonl'))] == [1, 2]
    assert json.load(open(os.path.join(split, 'result.json')))['final_epoch'] == 2

    # A finished split is skipped.
    again, _ = mpirun(2, args + ['--resume'], timeout=180)
    check(again)
    assert again.stdout.count('(skipped)') == 1


@needs_mpi
def test_mpiexec_without_communicator_is_refused(tmp_path):
    proc, _ = mpirun(2, ['--data', str(tmp_path), *FAST, '--save', str(tmp_path / 'run')],
                     timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count('without --communicator') == 1 and 'Traceback' not in proc.stderr


# Option checks and the single-process path (no MPI needed; run even where MPI is missing).

@pytest.mark.parametrize('args, message', [
    (['--mnBN'], '--mnBN needs --communicator'),
    (['--communicator', 'naive', '--testOnly'], '--testOnly runs in a single process'),
])
def test_mpi_option_errors(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        opts.parse(['--data', 'D', '--dataset', 'esc10', '--netType', 'envnet', *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_single_process_does_not_import_chainermn_or_mpi4py(tmp_path):
    code = ('import sys, main; rc = main.main(["--data", sys.argv[1], "--dataset", "esc10", '
            '"--netType", "envnet", "--gpu", "-1", "--save", sys.argv[2]]); '
            'print(rc, "chainermn" in sys.modules, "mpi4py" in sys.modules)')
    proc = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'none'),
                           str(tmp_path / 'run')], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env=mpi_env())
    assert proc.stdout.split()[-3:] == ['2', 'False', 'False'], proc.stdout + proc.stderr


def test_rank_seeds_keep_rank_0_and_give_other_ranks_unrelated_streams():
    import distributed
    assert distributed.rank_seed(1007, 0) == 1007
    seeds = [distributed.rank_seed(1007, r) for r in range(1, 5)]
    assert len(set(seeds)) == 4
    # Not small offsets of the split seed, whose +1/+2 streams rank 0 uses for crops and mixing.
    assert all(abs(s - 1007) > 1000 for s in seeds)
    assert distributed.rank_seed(1007, 1) == distributed.rank_seed(1007, 1)  # reproducible


def test_interleaved_order_gives_each_rank_its_part_of_every_global_batch():
    import distributed
    order = distributed.interleaved_order(16, 2, 2)  # 16 clips, 2 per rank and step, 2 ranks
    shards = order[:8], order[8:]
    for step in range(4):
        together = sorted(np.concatenate([s[2 * step:2 * step + 2] for s in shards]))
        assert together == list(range(4 * step, 4 * step + 4))  # = step of 1 process, batch 4


def test_failure_line_names_the_failing_ranks():
    import distributed
    assert distributed._failure_line([(1, 'bad')], 2) == 'rank 1 of 2: bad'
    assert distributed._failure_line([(0, 'bad'), (1, 'bad')], 2) == 'bad'  # all ranks, one message
    assert (distributed._failure_line([(1, 'x'), (3, 'y')], 4)
            == 'rank 1 of 4: x (also failed: rank 3)')
