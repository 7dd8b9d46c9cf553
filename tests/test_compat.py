"""compat.py restores numpy.sctypes (removed in NumPy 2.0) so that Chainer 7.8.1 imports."""
import subprocess
import sys

import numpy as np

import compat


def test_sctypes_has_numpy_1_content_after_import():
    assert set(np.sctypes) == {'int', 'uint', 'float', 'complex', 'others'}
    assert np.int16 in np.sctypes['int'] and np.uint8 in np.sctypes['uint']
    assert np.float32 in np.sctypes['float'] and np.complex128 in np.sctypes['complex']


def test_numpy_1_keeps_its_own_sctypes():
    if np.lib.NumpyVersion(np.__version__) >= '2.0.0':
        assert np.sctypes is compat.SCTYPES
    else:
        assert np.sctypes is not compat.SCTYPES


def test_chainer_imports_and_trains_a_step_after_compat_in_a_fresh_interpreter():
    code = ('import compat, chainer, chainer.links as L, numpy as np\n'
            'm = L.Linear(3, 2); o = chainer.optimizers.NesterovAG(); o.setup(m)\n'
            'loss = chainer.functions.sum(m(np.ones((1, 3), np.float32)) ** 2)\n'
            'm.cleargrads(); loss.backward(); o.update(); print(chainer.__version__)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=compat.__file__.rsplit('/', 1)[0])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '7.8.1'
