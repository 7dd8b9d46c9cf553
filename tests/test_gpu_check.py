"""scripts/gpu_check.sh in CPU mode (GPU_CHECK_CPU=1), as on a machine without a GPU: every step
passes or is "skipped: no GPU" (the GPU-only ones), the bench JSON files parse, and the protocol
runs leave their result.json. About 1 minute on 2 cores.

Uses the real ESC-10 clips in $ESC50_DIR (one clip per fold and class); where that folder is
missing, a synthetic ESC-50 tree (two ESC-10 classes, two clips per fold and class).
"""
import json
import os
import subprocess
import sys

from conftest import ESC50_DIR, REPO_ROOT
from test_esc_gen import make_tree

NETS = ('envnetv2', 'logmel_cnn')
LEARNINGS = ('standard', 'bc', 'speechmix', 'intermix')
BENCH = ['b_bench_%s_%s%s' % (net, learn, tf32) for tf32 in ('', '_tf32') for net in NETS
         for learn in LEARNINGS]
STEPS = (['0_setup', '0_env', '1_esc_gen', 'a_test_gpu'] + BENCH
         + ['c_probe_torch', 'c_probe_chainer', 'd_piczak_intermix', 'd_envnetv2_intermix_strong'])
# on the CPU: CUPY_TF32=1 changes nothing, so it does not run; the probe needs CUDA
NO_GPU = {'c_probe_torch', 'c_probe_chainer'} | {
    'b_bench_%s_%s_tf32' % (net, learn) for net in NETS for learn in LEARNINGS}
# on the CPU EnvNet-v2 runs the heaviest method only (logmel_cnn runs all four)
CPU_ONLY_SKIPPED = {'b_bench_envnetv2_%s' % learn for learn in LEARNINGS if learn != 'intermix'}


def synthetic_tree(root):
    rows = [(fold, target, category, True) for fold in range(1, 6)
            for target, category in ((0, 'dog'), (1, 'rooster')) for _ in range(2)]
    make_tree(os.fspath(root), rows=rows, stereo_row=-1)
    return os.fspath(root)


def test_gpu_check_cpu_mode(tmp_path):
    env = dict(os.environ, GPU_CHECK_CPU='1', GPU_CHECK_NO_PACK='1',
               GPU_CHECK_WORK=os.fspath(tmp_path / 'work'), PY=sys.executable)
    env.pop('CUPY_TF32', None)
    if os.path.isfile(os.path.join(ESC50_DIR, 'meta', 'esc50.csv')):
        env['ESC10_DIR'] = ESC50_DIR
    else:
        env['ESC10_DIR'] = synthetic_tree(tmp_path / 'esc50')
        env['GPU_CHECK_CLIPS'] = '2'
    out = tmp_path / 'out'
    run = subprocess.run(['bash', os.path.join(REPO_ROOT, 'scripts', 'gpu_check.sh'), os.fspath(out)],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert 'no GPU (GPU_CHECK_CPU=1)' in run.stdout

    rows = [line.split('\t') for line in (out / 'summary.txt').read_text().splitlines()]
    assert all(len(r) == 4 for r in rows), rows
    assert [r[0] for r in rows] == STEPS
    for name, status, seconds, note in rows:
        want = ('skipped: no GPU' if name in NO_GPU else
                'skipped: CPU' if name in CPU_ONLY_SKIPPED else '0')
        assert status == want, (name, status, note, (out / (name + '.err')).read_text()
                                if (out / (name + '.err')).exists() else '')
        float(seconds)
    notes = {r[0]: r[3] for r in rows}
    assert 'no GPU' in notes['a_test_gpu'] and 'skipped' in notes['a_test_gpu'], notes['a_test_gpu']

    for name in BENCH:
        if name in NO_GPU or name in CPU_ONLY_SKIPPED:
            assert not (out / (name + '.json')).exists()
            continue
        result = json.loads((out / (name + '.json')).read_text())
        net, learn = name[len('b_bench_'):].replace('_tf32', '').rsplit('_', 1)
        assert (result['netType'], result['learning'], result['device']) == (net, learn, '@numpy')
        assert result['train']['fast']['clips_per_s']['median'] > 0
        assert result['test']['fast']['crops_per_s'] > 0

    for name in ('d_piczak_intermix', 'd_envnetv2_intermix_strong'):
        result = json.loads((out / name / 'split1' / 'result.json').read_text())
        assert result, name
        assert (out / name / 'split1' / 'log.csv').is_file()
        assert not list((out / name).rglob('*.npz'))  # snapshots stay in the work folder
