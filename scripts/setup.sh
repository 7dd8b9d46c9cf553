#!/usr/bin/env bash
# Create or update the project's virtualenv (.venv by default). Idempotent: a second run with the
# same requirement files does nothing. Usage: bash scripts/setup.sh
#   PYTHON=python3.11   interpreter to build the venv from (3.9-3.12; 3.11 is what we test)
#   VENV=.venv          where the venv lives
#   NO_MPI=1            leave out requirements-mpi.txt (mpi4py + Open MPI wheels, for
#                       main.py --communicator); the MPI tests are then skipped with the reason
# Chainer 7.8.1's setup.py imports pkg_resources, so setuptools<70 must be in the venv and Chainer
# is built with --no-build-isolation. NumPy 2.x works through compat.py (restores numpy.sctypes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
"$PY" - <<'PYEOF'
import sys
if not (3, 9) <= sys.version_info[:2] <= (3, 12):
    sys.exit(f'setup: Python {sys.version.split()[0]} found; Chainer 7.8.1 needs 3.9-3.12 (set PYTHON=...)')
PYEOF
reqs="requirements.txt requirements-test.txt"
if [ "${NO_MPI:-0}" != 1 ]; then
  reqs="$reqs requirements-mpi.txt"
fi
stamp="$VENV/.installed-$(cat $reqs | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "setup: installing into $VENV (Chainer 7.8.1, NumPy, SciPy, soundfile, tqdm, matplotlib, pytest)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check 'setuptools<70' wheel
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation \
  -r requirements.txt -r requirements-test.txt
if [ "${NO_MPI:-0}" != 1 ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-mpi.txt
  "$VENV/bin/python" -c 'import mpi4py; print("setup: mpi4py", mpi4py.__version__, "(requirements-mpi.txt)")' >&2
fi
"$VENV/bin/python" -c 'import compat, chainer, numpy; print("setup: chainer", chainer.__version__, "numpy", numpy.__version__)' >&2
rm -f "$VENV"/.installed-*
touch "$stamp"
