"""The entry points set OpenBLAS's thread timeout before NumPy loads it (blasenv.py)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(code, **env):
    base = {k: v for k, v in os.environ.items() if k != 'OPENBLAS_THREAD_TIMEOUT'}
    base.update(env)
    return subprocess.run([sys.executable, '-X', 'importtime', '-c', code], cwd=ROOT, env=base,
                          capture_output=True, text=True, check=True)


@pytest.mark.parametrize('entry', ['main', 'bench', 'predict'])
def test_entry_point_sets_the_timeout_before_numpy_is_imported(entry):
    out = _child(f'import os, {entry}; print(os.environ["OPENBLAS_THREAD_TIMEOUT"])')
    assert out.stdout.strip() == '4'
    # -X importtime lists modules in the order their imports finish: blasenv (no imports of its
    # own but os) must be done before the numpy package starts loading its OpenBLAS.
    order = [line.split('|')[-1].strip() for line in out.stderr.splitlines() if '|' in line]
    assert 'blasenv' in order and 'numpy' in order
    assert order.index('blasenv') < min(i for i, name in enumerate(order)
                                       if name.strip() == 'numpy._core._multiarray_umath'
                                       or name.strip() == 'numpy.core._multiarray_umath')


def test_a_value_the_user_set_is_kept():
    out = _child('import os, main; print(os.environ["OPENBLAS_THREAD_TIMEOUT"])',
                 OPENBLAS_THREAD_TIMEOUT='20')
    assert out.stdout.strip() == '20'
