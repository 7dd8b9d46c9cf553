"""What Chainer 7.8.1 needs to import and run on today's NumPy and Python. Import it before Chainer.

1. ``numpy.sctypes``: Chainer reads it at import time; NumPy 2.0 removed it. Restored here with
   the content NumPy 1.26 had; on NumPy 1.x nothing changes. Everything else Chainer uses
   (training, Trainer extensions, serializers, MultiprocessIterator) works on NumPy 2.x.

2. ``numpy.distutils`` and ``pkg_resources``: ``chainer/_environment_check.py``, run by
   ``import chainer``, imports both. NumPy has no ``numpy.distutils`` on Python 3.12+ nor from
   NumPy 2.5 on, and setuptools is dropping ``pkg_resources``. The check uses them for two things:
   on macOS, BLAS information (``numpy.distutils.system_info.get_info('blas_opt')``, to warn about
   Accelerate), and the installed versions of CuPy and iDeep (``pkg_resources.require`` /
   ``get_distribution``, to warn about a mismatch). Where a module imports, Chainer gets it
   untouched. Where one is missing, Chainer's check gets a stand-in that answers exactly those
   calls: ``get_info`` from NumPy's own build configuration (``numpy.show_config``), ``require``
   and ``get_distribution`` from ``importlib.metadata``. The stand-ins are handed to that one
   module only: they are in ``sys.modules`` (and ``numpy.distutils`` is set) only while the check
   imports and runs, so no other code ever sees them.

3. CuPy 14 (checked with 14.2.0 on a machine without a GPU). Of the CuPy names Chainer 7.8.1
   uses, CuPy 14 lacks ``cupy.cuda.cudnn`` and ``cupy.cudnn`` (CuPy 14 has no cuDNN at all) and
   ``cupy.util`` (now ``cupy._util``); Chainer already guards all three (``cupy._util`` is tried
   first, and without the cuDNN modules ``chainer.backends.cuda.cudnn_enabled`` is False, so its
   own CuPy kernels run instead of cuDNN). No stand-in is needed, and none is given: a stand-in
   cuDNN module would send Chainer into cuDNN calls that do not exist. What remains is advice
   that is wrong there: ``import chainer`` warns "cuDNN is not enabled. Please reinstall CuPy
   after you install cudnn", which no installation can fix. Where the CuPy found on the path
   ships no cuDNN module (``cupy/cudnn*``, ``cupy/cuda/cudnn*``), that one warning of
   ``chainer.backends.cuda`` is filtered out; CuPy is not imported for this (its files are
   looked at). ``runtime.select_device`` says "without cuDNN" in its device line instead.

Every module of this project that imports Chainer does ``import compat`` first
(``tests/test_compat.py`` imports each one in a fresh interpreter with ``numpy.distutils`` and
``pkg_resources`` blocked).
"""
import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import types
import warnings

import numpy as np

__all__ = ['SCTYPES']

SCTYPES = {
    'int': [np.int8, np.int16, np.int32, np.int64],
    'uint': [np.uint8, np.uint16, np.uint32, np.uint64],
    'float': [np.float16, np.float32, np.float64, np.longdouble],
    'complex': [np.complex64, np.complex128, np.clongdouble],
    'others': [bool, object, bytes, str, np.void],
}

try:
    np.sctypes  # noqa: B018  (NumPy 1.x: present, leave it alone)
except AttributeError:
    np.sctypes = SCTYPES


# --- Chainer's start-up check without numpy.distutils / pkg_resources -------------------------

_CHECK = 'chainer._environment_check'


def _get_info(name, notfound_action=0):
    """``numpy.distutils.system_info.get_info`` as Chainer's check calls it: ``'blas_opt'`` on
    macOS. Answers from the BLAS NumPy was built with ({} where it is not Accelerate or is
    unknown), in the form numpy.distutils gave for Accelerate."""
    if name != 'blas_opt' or sys.platform != 'darwin':
        return {}
    try:
        blas = np.show_config(mode='dicts')['Build Dependencies']['blas']['name']
    except Exception:
        return {}
    if 'accelerate' in str(blas).lower():
        return {'extra_link_args': ['-Wl,-framework', '-Wl,Accelerate']}
    return {}


class ResolutionError(Exception):
    """As ``pkg_resources.ResolutionError``."""


class DistributionNotFound(ResolutionError):
    """As ``pkg_resources.DistributionNotFound``: the distribution is not installed."""


class VersionConflict(ResolutionError):
    """As ``pkg_resources.VersionConflict``: installed, but its version is outside the range."""


def _installed_version(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        raise DistributionNotFound(name) from None


def _require(requirement):
    """``pkg_resources.require`` for one ``name[specifier]`` string, as Chainer's check passes
    (e.g. ``'cupy-cuda12x>=7.7.0,<8.0.0'``). Prereleases match, as in pkg_resources; the
    distribution's own dependencies are not resolved (the check does not need them)."""
    m = re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*$', requirement)
    if m is None:
        raise ValueError('not a requirement: %r' % (requirement,))
    name, spec = m.groups()
    version = _installed_version(name)
    if spec:
        from packaging.specifiers import SpecifierSet  # only for an installed CuPy / iDeep
        if not SpecifierSet(spec).contains(version, prereleases=True):
            raise VersionConflict('%s %s is installed; %s is required' % (name, version,
                                                                          requirement))
    return [_get_distribution(name)]


def _get_distribution(name):
    """``pkg_resources.get_distribution(name)``: only ``.project_name`` and ``.version``."""
    return types.SimpleNamespace(project_name=name, version=_installed_version(name))


def _make_distutils():
    """Stand-ins for ``numpy.distutils`` and ``numpy.distutils.system_info`` (``get_info``)."""
    info = types.ModuleType('numpy.distutils.system_info',
                            "compat.py stand-in for Chainer 7.8.1's start-up check (get_info)")
    info.get_info = _get_info
    dist = types.ModuleType('numpy.distutils', info.__doc__)
    dist.system_info = info
    return {'numpy.distutils': dist, 'numpy.distutils.system_info': info}


def _make_pkg_resources():
    """Stand-in for ``pkg_resources``: ``require``, ``get_distribution``, their exceptions."""
    pkg = types.ModuleType('pkg_resources', "compat.py stand-in for Chainer 7.8.1's start-up "
                           'check (require, get_distribution, their exceptions)')
    pkg.require = _require
    pkg.get_distribution = _get_distribution
    pkg.ResolutionError = ResolutionError
    pkg.DistributionNotFound = DistributionNotFound
    pkg.VersionConflict = VersionConflict
    return pkg


def _stand_ins():
    """{module name: stand-in} for those of Chainer's check's imports that fail here."""
    out = {}
    try:
        importlib.import_module('numpy.distutils.system_info')
    except ImportError:
        out.update(_make_distutils())
    try:
        importlib.import_module('pkg_resources')
    except ImportError:
        out['pkg_resources'] = _make_pkg_resources()
    return out


@contextlib.contextmanager
def _lent(stand_ins):
    """Put the stand-ins in ``sys.modules`` (and ``numpy.distutils``) for the duration only."""
    saved = {name: sys.modules.get(name) for name in stand_ins}
    had = vars(np).get('distutils', _lent)
    sys.modules.update(stand_ins)
    if 'numpy.distutils' in stand_ins:
        np.distutils = stand_ins['numpy.distutils']
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        if 'numpy.distutils' in stand_ins:
            if had is _lent:
                vars(np).pop('distutils', None)
            else:
                np.distutils = had


class _CheckLoader:
    """Loads ``chainer/_environment_check.py`` itself, with the stand-ins lent to its imports and
    to its ``check()``."""

    def __init__(self, loader, stand_ins):
        self._loader = loader
        self._stand_ins = stand_ins

    def __getattr__(self, name):  # get_source, get_filename, ... for tracebacks and inspect
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        stand_ins = self._stand_ins
        with _lent(stand_ins):
            self._loader.exec_module(module)
        check = module.check

        def check_with_stand_ins():
            with _lent(stand_ins):
                return check()

        check_with_stand_ins.__doc__ = check.__doc__
        module.check = check_with_stand_ins


class _CheckFinder:
    """Meta-path finder that answers for ``chainer._environment_check`` alone, once."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != _CHECK:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(cls)
        stand_ins = _stand_ins()
        if not stand_ins:
            return None  # everything imports: Chainer's own loader, untouched
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _CheckLoader(spec.loader, stand_ins)
        return spec


if _CHECK not in sys.modules and _CheckFinder not in sys.meta_path:
    sys.meta_path.insert(0, _CheckFinder)


# --- CuPy without cuDNN (CuPy 14) -------------------------------------------------------------

def _cupy_has_cudnn(locations):
    """Whether the CuPy package in ``locations`` (its ``__path__``) ships a cuDNN module:
    ``cupy/cudnn*`` or ``cupy/cuda/cudnn*`` (the modules Chainer imports). CuPy 14 ships neither."""
    for location in locations:
        for folder in (location, os.path.join(location, 'cuda')):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            if any(name.startswith('cudnn') for name in names):
                return True
    return False


def _quiet_cudnn_advice():
    """Filter out Chainer's "cuDNN is not enabled. Please reinstall CuPy after you install
    cudnn" where the CuPy on the path has no cuDNN module (nothing to reinstall). Finds CuPy
    without importing it; does nothing where CuPy is absent or has cuDNN."""
    try:
        spec = importlib.util.find_spec('cupy')
    except (ImportError, ValueError):
        return False
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations or _cupy_has_cudnn(locations):
        return False
    warnings.filterwarnings('ignore', message='cuDNN is not enabled', category=UserWarning,
                            module=r'chainer\.backends\.cuda$')
    return True


_quiet_cudnn_advice()
