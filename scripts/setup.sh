#!/usr/bin/env bash
# Create or update the project's virtualenv (.venv by default). Idempotent: a second run with the
# same requirement files and Python does nothing. Usage: bash scripts/setup.sh
#   PYTHON=python3      interpreter to build the venv from: CPython 3.9-3.13 (default: the
#                       python3 on PATH). requirements.txt picks, per Python, NumPy, SciPy and
#                       matplotlib releases that have wheels for it; they are installed from wheels
#   VENV=.venv          where the venv lives
#   NO_MPI=1            leave out requirements-mpi.txt (mpi4py + Open MPI wheels, for
#                       main.py --communicator); the MPI tests are then skipped with the reason
# Chainer 7.8.1's setup.py imports pkg_resources, so setuptools<70 must be in the venv and Chainer
# is built with --no-build-isolation. NumPy 2.x works through compat.py (numpy.sctypes), and so do
# Python 3.12+ and NumPy 2.5, which have no numpy.distutils (compat.py again).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if { [ -e "$VENV/bin/python" ] || [ -L "$VENV/bin/python" ]; } && ! "$VENV/bin/python" -c '' 2>/dev/null; then
  echo "setup: $VENV/bin/python does not run (was its Python removed?); remove $VENV and run again" >&2
  exit 1
fi
if [ -z "${PYTHON:-}" ] && [ -x "$VENV/bin/python" ]; then
  PY=$VENV/bin/python  # an existing venv keeps its Python unless PYTHON=... names one
fi
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "setup: no Python at PYTHON=$PY; needs CPython 3.9-3.13 (set PYTHON=/path/to/python3)" >&2
  exit 1
fi
# One line naming what was found and what is needed, for a Python this cannot serve.
"$PY" - "$PY" <<'PYEOF'
import platform, sys
found = 'Python %s (%s) at %s' % (platform.python_version(), platform.python_implementation(),
                                  sys.executable or sys.argv[1])
if platform.python_implementation() != 'CPython' or not (3, 9) <= sys.version_info[:2] <= (3, 13):
    sys.exit('setup: %s found; needs CPython 3.9-3.13 (Chainer 7.8.1 with NumPy, SciPy and '
             'matplotlib wheels; set PYTHON=...)' % found)
try:
    import ensurepip, venv  # noqa: F401  (Debian/Ubuntu ship them in a separate package)
except ImportError:
    sys.exit('setup: %s found without the venv/ensurepip modules; needs them (Debian/Ubuntu: '
             'apt install python%d.%d-venv)' % ((found,) + sys.version_info[:2]))
PYEOF
pyver=$("$PY" -c 'import platform; print(platform.python_version())')
if [ -x "$VENV/bin/python" ]; then
  venvver=$("$VENV/bin/python" -c 'import platform; print(platform.python_version())')
  if [ "$venvver" != "$pyver" ]; then
    echo "setup: $VENV has Python $venvver, PYTHON=$PY is Python $pyver; remove $VENV or set VENV=... to build another" >&2
    exit 1
  fi
fi
reqs="requirements.txt requirements-test.txt"
if [ "${NO_MPI:-0}" != 1 ]; then
  reqs="$reqs requirements-mpi.txt"
fi
stamp="$VENV/.installed-$( (cat $reqs; echo "$pyver") | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "setup: installing into $VENV with Python $pyver (Chainer 7.8.1, NumPy, SciPy, numba, soundfile, tqdm, matplotlib, pytest)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" 'setuptools<70' wheel
"${pip[@]}" --no-build-isolation --only-binary numpy,scipy,matplotlib,numba,llvmlite \
  -r requirements.txt -r requirements-test.txt
if [ "${NO_MPI:-0}" != 1 ]; then
  "${pip[@]}" -r requirements-mpi.txt
  "$VENV/bin/python" -c 'import mpi4py; print("setup: mpi4py", mpi4py.__version__, "(requirements-mpi.txt)")' >&2
fi
"$VENV/bin/python" -c 'import platform, compat, chainer, numpy, scipy, matplotlib
print("setup: Python", platform.python_version(), "chainer", chainer.__version__, "numpy", numpy.__version__,
      "scipy", scipy.__version__, "matplotlib", matplotlib.__version__)' >&2
rm -f "$VENV"/.installed-*
touch "$stamp"
