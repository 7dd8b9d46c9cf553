"""The entry points where numpy.distutils and pkg_resources cannot be imported, as on Python 3.12+
(no numpy.distutils in any NumPy there), NumPy 2.5 and a setuptools without pkg_resources.

Each run is a subprocess whose interpreter, and every process it starts (esc_gen.py's workers),
blocks both (``test_compat.BLOCKER``): ``main.py --help``; ``esc_gen.py`` on 10 real ESC-10 clips
(2 per fold, from ``$ESC50_DIR``; skipped, naming it, where it is missing); one epoch of EnvNet
with InterMix on its output (on synthetic clips written in the ESC-50 layout where the real ones
are missing). About 15 s on 2 cores.
"""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ESC50_DIR, write_wav
from test_compat import REPO_ROOT, blocked_env

ESC50_HEADER = ['filename', 'fold', 'target', 'category', 'esc10', 'src_file', 'take']


def run(args, env, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def real_subset(dest, per_fold=2):
    """An ESC-50 tree at ``dest`` with the first ``per_fold`` ESC-10 clips of each fold of
    ``ESC50_DIR``."""
    with open(os.path.join(ESC50_DIR, 'meta', 'esc50.csv'), newline='') as f:
        rows = [r for r in csv.DictReader(f) if r['esc10'] == 'True']
    picked = []
    for fold in '12345':
        picked += [r for r in rows if r['fold'] == fold][:per_fold]
    os.makedirs(os.path.join(dest, 'meta'))
    os.makedirs(os.path.join(dest, 'audio'))
    with open(os.path.join(dest, 'meta', 'esc50.csv'), 'w', newline='') as f:
        w = csv.DictWriter(f, ESC50_HEADER, extrasaction='ignore')
        w.writeheader()
        w.writerows(picked)
    for r in picked:
        shutil.copy(os.path.join(ESC50_DIR, 'audio', r['filename']),
                    os.path.join(dest, 'audio', r['filename']))
    return len(picked)


def synthetic_tree(dest):
    """The same shape from synthetic tones: 5 folds x 2 clips (dog, rooster), 1 s at 44.1 kHz."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(dest, 'meta'))
    rows = []
    for fold in range(1, 6):
        for i, (target, category) in enumerate([(0, 'dog'), (1, 'rooster')]):
            name = '%d-%d-A-%d.wav' % (fold, 100 + i, target)
            t = np.arange(44100) / 44100.0
            x = 0.3 * np.sin(2 * np.pi * (300 + 400 * target) * t) + 0.05 * rng.standard_normal(t.size)
            write_wav(os.path.join(dest, 'audio', name), np.round(x * 32767).astype(np.int16))
            rows.append([name, fold, target, category, True, 100 + i, 'A'])
    with open(os.path.join(dest, 'meta', 'esc50.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(ESC50_HEADER)
        w.writerows(rows)
    return len(rows)


@pytest.fixture(scope='module')
def blocked(tmp_path_factory):
    return blocked_env(tmp_path_factory.mktemp('blocked'))


@pytest.fixture(scope='module')
def generated(tmp_path_factory, blocked):
    """(DATA dir, clips, real?, completed esc_gen.py process) for one blocked esc_gen.py run."""
    base = tmp_path_factory.mktemp('py312')
    src, data = str(base / 'ESC-50'), str(base / 'data')
    real = os.path.isdir(ESC50_DIR)
    clips = real_subset(src) if real else synthetic_tree(src)
    proc = run(['esc_gen.py', data, '--source', src, '--workers', '2'], blocked)
    return data, clips, real, proc


def test_main_help(blocked):
    proc = run(['main.py', '--help'], blocked)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('usage: main.py') and '--netType' in proc.stdout


def test_esc_gen_on_real_clips(generated):
    data, clips, real, proc = generated
    if not real:
        pytest.skip('ESC50_DIR=%s not found (set ESC50_DIR to an ESC-50 checkout, e.g. the '
                    'ESC-10 subset)' % ESC50_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ('esc10/wav16.npz', 'esc10/wav44.npz', 'esc50/wav16.npz', 'esc50/wav44.npz'):
        assert os.path.isfile(os.path.join(data, name)), name
    with np.load(os.path.join(data, 'esc10', 'wav16.npz'), allow_pickle=False) as z:
        assert sorted(k for k in z if k.endswith('_labels')) == [
            'fold%d_labels' % k for k in range(1, 6)]
        assert sum(z['fold%d_labels' % k].size for k in range(1, 6)) == clips


def test_training_step(generated, blocked, tmp_path):
    data, clips, _, gen = generated
    assert gen.returncode == 0, gen.stdout + gen.stderr
    save = str(tmp_path / 'run')
    proc = run(['main.py', '--data', data, '--dataset', 'esc10', '--netType', 'envnet',
                '--learning', 'intermix', '--split', '1', '--nEpochs', '1', '--batchSize', '4',
                '--nCrops', '2', '--gpu', '-1', '--seed', '7', '--save', save], blocked)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.load(open(os.path.join(save, 'split1', 'result.json')))
    assert result['epochs'] == 1 and result['learning'] == 'intermix'
    assert result['train_clips'] == clips - clips // 5 and result['test_clips'] == clips // 5
    assert 0.0 <= result['final_error'] <= 100.0
    for name in ('model.npz', 'snapshot.npz', 'log.jsonl', 'error.png'):
        assert os.path.isfile(os.path.join(save, 'split1', name)), name
