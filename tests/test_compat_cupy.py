"""compat.py with CuPy 14 (no cuDNN modules), and ``import compat, chainer`` with CuPy installed on a
machine without a GPU.

The layout tests run everywhere (fake CuPy folders). The import tests need CuPy in the running
Python and are skipped without it, or where CuPy sees a GPU (they are about a machine with none);
they ran in a scratch venv with CuPy 14.2.0 (README, "GPU").
"""
import os
import subprocess
import sys

import pytest

import compat

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CUDNN_ADVICE = 'cuDNN is not enabled'


def fake_cupy(root, cudnn_files=()):
    """A ``cupy`` package folder under ``root`` (nothing importable beyond ``__init__``), with the
    given files (paths relative to ``cupy/``)."""
    pkg = os.path.join(os.fspath(root), 'cupy')
    os.makedirs(os.path.join(pkg, 'cuda'), exist_ok=True)
    for name in ('__init__.py', os.path.join('cuda', '__init__.py'), *cudnn_files):
        open(os.path.join(pkg, name), 'w').close()
    return pkg


def run_py(code, env=None, timeout=300):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=timeout)


def env_with(path):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [os.fspath(path), REPO_ROOT] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    return env


@pytest.mark.parametrize('files, has', [
    ((), False),                                                  # CuPy 14 (none)
    ((os.path.join('cuda', 'cudnn.py'),), True),                  # a CuPy with cuDNN
    (('cudnn.cpython-312-x86_64-linux-gnu.so',), True),
])
def test_cupy_has_cudnn_reads_the_package_folder(tmp_path, files, has):
    pkg = fake_cupy(tmp_path, files)
    assert compat._cupy_has_cudnn([pkg]) is has
    assert compat._cupy_has_cudnn([os.fspath(tmp_path / 'nowhere')]) is False


@pytest.mark.parametrize('files, quiet', [((), True), ((os.path.join('cuda', 'cudnn.py'),), False)])
def test_cudnn_advice_filtered_only_for_a_cupy_without_cudnn(tmp_path, files, quiet):
    """A fresh interpreter with a fake CuPy first on the path: the filter is there only where that
    CuPy has no cuDNN module, and compat does not import CuPy to find out."""
    fake_cupy(tmp_path, files)
    code = ('import sys, warnings, compat\n'
            'print(any(f[0] == "ignore" and f[1] is not None and f[1].pattern == %r '
            'for f in warnings.filters), "cupy" in sys.modules)' % CUDNN_ADVICE)
    out = run_py(code, env_with(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(quiet), 'False']


def test_no_cudnn_advice_filter_without_cupy(tmp_path):
    """Where no CuPy is on the path (this project's CPU venv) compat adds no filter."""
    import importlib.util
    if importlib.util.find_spec('cupy') is not None:
        pytest.skip('CuPy is installed here')
    assert compat._quiet_cudnn_advice() is False


# --- with the real CuPy (scratch venv with cupy-cuda12x 14; skipped elsewhere) -----------------

def _cupy_without_gpu():
    try:
        import cupy
    except ImportError:
        pytest.skip('CuPy is not installed in this Python')
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception:
        n = 0
    if n > 0:
        pytest.skip('CuPy sees a GPU: these tests are about a machine without one')
    return cupy


IMPORT_CHECK = '''
import compat, chainer
from chainer.backends import cuda
import runtime
device, line = runtime.select_device(None)
try:
    n = cuda.cupy.cuda.runtime.getDeviceCount() if cuda.available else 0
except Exception as e:
    n = 'error: %s' % type(e).__name__
print('available=%s cudnn=%s devices=%s device=%s' % (cuda.available, cuda.cudnn_enabled, n,
                                                        device.name))
print(line)
'''


def test_import_compat_chainer_with_cupy_and_no_gpu_claims_no_gpu():
    cupy = _cupy_without_gpu()
    out = run_py(IMPORT_CHECK, env_with(REPO_ROOT))
    assert out.returncode == 0, out.stderr
    first, line = out.stdout.strip().splitlines()[-2:]
    # cuda.available: CuPy imports (True where its CUDA libraries load, False where they do not);
    # either way no device: CuPy counts none (or cannot ask the driver) and main.py picks the CPU
    assert 'device=@numpy' in first and 'cudnn=False' in first, out.stdout
    assert 'devices=0' in first or 'devices=error' in first, out.stdout
    assert line.startswith('device: CPU (NumPy)'), line
    assert ('(CuPy sees no GPU)' in line) if 'available=True' in first else \
        ('(CuPy is installed but cannot be used' in line), line
    if not compat._cupy_has_cudnn(list(cupy.__path__)):
        assert CUDNN_ADVICE not in out.stderr, out.stderr


def test_gpu_refused_with_cupy_and_no_gpu():
    _cupy_without_gpu()
    code = ('import compat, runtime, utils\n'
            'try:\n    runtime.select_device(0)\nexcept utils.UserError as e:\n    print(e)\n')
    out = run_py(code, env_with(REPO_ROOT))
    assert out.returncode == 0, out.stderr
    assert '--gpu 0:' in out.stdout and 'use --gpu -1 for the CPU' in out.stdout, out.stdout
