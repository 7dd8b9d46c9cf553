"""compat.py: numpy.sctypes (removed in NumPy 2.0), and Chainer's start-up check where
numpy.distutils and pkg_resources cannot be imported (Python 3.12+, NumPy 2.5, setuptools without
pkg_resources). The blocked runs put :data:`BLOCKER` in a ``sitecustomize.py`` on ``PYTHONPATH``,
so that it also holds in every process a run starts (esc_gen.py workers, mpiexec ranks).
"""
import ast
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import compat

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BLOCKER = '''\
"""Test harness: numpy.distutils and pkg_resources cannot be imported here, as on Python 3.12+
with NumPy 2.5 and a setuptools without pkg_resources."""
import sys

BLOCKED = ('numpy.distutils', 'pkg_resources')


class _BlockedForTest:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if any(name == b or name.startswith(b + '.') for b in BLOCKED):
            raise ModuleNotFoundError('No module named %r (blocked by the test)' % name, name=name)
        return None


for _name in list(sys.modules):
    if any(_name == b or _name.startswith(b + '.') for b in BLOCKED):
        del sys.modules[_name]
sys.meta_path.insert(0, _BlockedForTest)
'''


def blocked_env(folder, extra_path=()):
    """Environment for a subprocess in which numpy.distutils and pkg_resources cannot be imported
    (``folder`` receives the ``sitecustomize.py``)."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'sitecustomize.py'), 'w') as f:
        f.write(BLOCKER)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [folder, *map(os.fspath, extra_path)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    return env


def run_py(code, env=None, *args, timeout=300):
    return subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=timeout)


@pytest.fixture(scope='module')
def blocked(tmp_path_factory):
    return blocked_env(tmp_path_factory.mktemp('blocked'))


# --- numpy.sctypes ------------------------------------------------------------------------------

def test_sctypes_has_numpy_1_content_after_import():
    assert set(np.sctypes) == {'int', 'uint', 'float', 'complex', 'others'}
    assert np.int16 in np.sctypes['int'] and np.uint8 in np.sctypes['uint']
    assert np.float32 in np.sctypes['float'] and np.complex128 in np.sctypes['complex']


def test_numpy_1_keeps_its_own_sctypes():
    if np.lib.NumpyVersion(np.__version__) >= '2.0.0':
        assert np.sctypes is compat.SCTYPES
    else:
        assert np.sctypes is not compat.SCTYPES


TRAIN_STEP = ('import compat, chainer, chainer.links as L, numpy as np\n'
              'm = L.Linear(3, 2); o = chainer.optimizers.NesterovAG(); o.setup(m)\n'
              'loss = chainer.functions.sum(m(np.ones((1, 3), np.float32)) ** 2)\n'
              'm.cleargrads(); loss.backward(); o.update(); print(chainer.__version__)')


def test_chainer_imports_and_trains_a_step_after_compat_in_a_fresh_interpreter():
    out = run_py(TRAIN_STEP)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '7.8.1'


# --- without numpy.distutils and pkg_resources ----------------------------------------------------

def test_the_blocker_blocks_and_chainer_fails_there_without_compat(blocked):
    code = ('import importlib, sys\n'
            'for name in ("numpy.distutils", "numpy.distutils.system_info", "pkg_resources"):\n'
            '    try:\n'
            '        importlib.import_module(name)\n'
            '    except ModuleNotFoundError:\n'
            '        print("blocked", name)\n'
            'import compat\n'
            'sys.meta_path.remove(compat._CheckFinder)\n'
            'import chainer\n')
    out = run_py(code, blocked)
    assert out.stdout.split('\n')[:3] == ['blocked numpy.distutils',
                                          'blocked numpy.distutils.system_info',
                                          'blocked pkg_resources'], out.stdout + out.stderr
    assert out.returncode != 0 and 'ModuleNotFoundError' in out.stderr, out.stderr
    assert 'numpy.distutils' in out.stderr.strip().splitlines()[-1]


def test_chainer_imports_and_trains_a_step_with_them_blocked_and_leaves_no_stand_in(blocked):
    code = TRAIN_STEP + (
        '\nimport sys\n'
        'left = [n for n in sys.modules if n.startswith(("pkg_resources", "numpy.distutils"))]\n'
        'print(left, "distutils" in vars(np), type(chainer._environment_check.pkg_resources))')
    out = run_py(code, blocked)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split('\n')[:2] == ['7.8.1', "[] False <class 'module'>"], out.stdout


def _fake_dist(root, name, version):
    info = os.path.join(os.fspath(root), '%s-%s.dist-info' % (name.replace('-', '_'), version))
    os.makedirs(info)
    with open(os.path.join(info, 'METADATA'), 'w') as f:
        f.write('Metadata-Version: 2.1\nName: %s\nVersion: %s\n' % (name, version))
    return root


def _warning_lines(stderr):
    return [ln.strip() for ln in stderr.splitlines()
            if 'may not be compatible' in ln or 'pip install' in ln
            or 'Failed to check' in ln or 'Multiple installations' in ln]


@pytest.mark.parametrize('version, warns', [('6.0.0', True), ('7.8.0', False)])
def test_cupy_version_warning_is_the_same_with_and_without_them(tmp_path, version, warns):
    """Chainer's check warns about a CuPy outside >=7.7.0,<8.0.0: the same lines with the
    stand-in as with the real pkg_resources (where this Python has it)."""
    site = _fake_dist(tmp_path / 'site', 'cupy', version)  # metadata only: no cupy module
    code = 'import compat, chainer; print(chainer.backends.cuda.available)'
    out = run_py(code, blocked_env(tmp_path / 'blocked', [site]))
    assert out.returncode == 0 and out.stdout.strip() == 'False', out.stderr
    lines = _warning_lines(out.stderr)
    if warns:
        assert lines == ['CuPy (cupy) version %s may not be compatible with this version of '
                         'Chainer.' % version, "$ pip install 'cupy>=7.7.0,<8.0.0'"], out.stderr
    else:
        assert lines == [], out.stderr
    if importlib.util.find_spec('pkg_resources') is not None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.fspath(site)] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH')
                                 else [])))
        ref = run_py(code, env)
        assert ref.returncode == 0, ref.stderr
        assert _warning_lines(ref.stderr) == lines


def test_pkg_resources_stand_in_answers_as_pkg_resources_would():
    from importlib import metadata
    pkg = compat._make_pkg_resources()
    assert pkg.require('numpy>=1.0')[0].version == np.__version__
    assert pkg.get_distribution('pytest').version == metadata.version('pytest')
    with pytest.raises(pkg.VersionConflict):
        pkg.require('numpy<1.0')
    with pytest.raises(pkg.VersionConflict):
        pkg.require('numpy>=2.0.0.post3, <1.0')  # iDeep's form: a space after the comma
    with pytest.raises(pkg.DistributionNotFound):
        pkg.require('cupy-cuda80>=7.7.0,<8.0.0')
    assert issubclass(pkg.DistributionNotFound, pkg.ResolutionError)


def test_blas_stand_in_reads_numpy_build_config_only_on_macos(monkeypatch):
    get_info = compat._make_distutils()['numpy.distutils.system_info'].get_info
    monkeypatch.setattr(sys, 'platform', 'linux')
    assert get_info('blas_opt') == {}
    monkeypatch.setattr(sys, 'platform', 'darwin')
    for blas, expected in [('accelerate', {'extra_link_args': ['-Wl,-framework',
                                                               '-Wl,Accelerate']}),
                           ('scipy-openblas', {})]:
        monkeypatch.setattr(np, 'show_config', lambda mode='stdout', b=blas: {
            'Build Dependencies': {'blas': {'name': b}}})
        assert get_info('blas_opt') == expected
    monkeypatch.setattr(np, 'show_config', lambda mode='stdout': None)
    assert get_info('blas_opt') == {}
    assert get_info('lapack_opt') == {}


def test_stand_ins_are_lent_only_for_the_duration():
    stand_ins = dict(compat._make_distutils(), pkg_resources=compat._make_pkg_resources())
    before = {n: sys.modules.get(n) for n in stand_ins}
    had = 'distutils' in vars(np)
    with compat._lent(stand_ins):
        assert all(sys.modules[n] is m for n, m in stand_ins.items())
        assert np.distutils is stand_ins['numpy.distutils']
    assert {n: sys.modules.get(n) for n in stand_ins} == before
    assert ('distutils' in vars(np)) == had


# --- every module of the project imports compat before chainer ------------------------------------

def project_modules():
    """Every module of the project, found on disk: the top-level *.py, and every *.py of
    models/, datagen/ and any other top-level package (a folder with __init__.py), tests
    excluded."""
    names = sorted(f[:-3] for f in os.listdir(REPO_ROOT) if f.endswith('.py'))
    packages = {'models', 'datagen'} | {
        d for d in os.listdir(REPO_ROOT)
        if os.path.isfile(os.path.join(REPO_ROOT, d, '__init__.py'))}
    for pkg in sorted(packages - {'tests'}):
        for dirpath, dirnames, files in os.walk(os.path.join(REPO_ROOT, pkg)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(('.', '__')))
            prefix = os.path.relpath(dirpath, REPO_ROOT).replace(os.sep, '.')
            for f in sorted(files):
                if f.endswith('.py'):
                    names.append(prefix if f == '__init__.py' else prefix + '.' + f[:-3])
    return names


MODULES = project_modules()


def test_module_discovery_finds_the_known_ones():
    assert {'main', 'training', 'compat', 'models', 'models.envnet'} <= set(MODULES)
    assert not any(m.startswith('tests') for m in MODULES)


def _imports_chainer(node):
    if isinstance(node, ast.Import):
        return any(a.name.split('.')[0] in ('chainer', 'chainermn') for a in node.names)
    return (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None
            and node.module.split('.')[0] in ('chainer', 'chainermn'))


@pytest.mark.parametrize('name', MODULES)
def test_module_imports_compat_before_chainer(name, blocked):
    """In a fresh interpreter where numpy.distutils and pkg_resources are blocked, the module
    imports (Chainer's check would fail had Chainer come before compat); and one that imports
    Chainer anywhere, even inside a function, imports compat at its top first."""
    path = os.path.join(REPO_ROOT, *name.split('.'))
    path = os.path.join(path, '__init__.py') if os.path.isdir(path) else path + '.py'
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    if any(_imports_chainer(n) for n in ast.walk(tree)):
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        compat_at = [i for i, n in enumerate(top) if isinstance(n, ast.Import)
                     and any(a.name == 'compat' for a in n.names)]
        chainer_at = [i for i, n in enumerate(top) if _imports_chainer(n)]
        assert compat_at, '%s imports chainer but not compat at its top' % path
        assert not chainer_at or compat_at[0] < chainer_at[0], (
            '%s imports chainer before compat' % path)
    out = run_py('import importlib, sys; importlib.import_module(sys.argv[1])', blocked, name)
    assert out.returncode == 0, out.stderr
