#!/usr/bin/env bash
# Set up the venv if needed, then run the CPU test suite. Extra arguments go to pytest.
# VENV=... and PYTHON=... are passed to scripts/setup.sh (default .venv, the python3 on PATH), e.g.
#   VENV=/tmp/venv312 PYTHON=python3.12 bash scripts/test.sh
# The integration tests use the real ESC-10 clips from $ESC50_DIR (an ESC-50 layout; the default
# is in tests/conftest.py) and are skipped, with the reason, where that folder is missing.
# The MPI tests (tests/test_mpi.py: mpiexec -n 2 on the CPU) need requirements-mpi.txt, which
# setup.sh installs; they then must run (INTERMIX_REQUIRE_MPI=1: a missing or broken MPI fails
# them). NO_MPI=1 bash scripts/test.sh leaves MPI out: they are then skipped, saying why, unless an
# earlier setup already installed the MPI stack (then they run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${NO_MPI:-0}" != 1 ]; then
  export INTERMIX_REQUIRE_MPI=1
else
  echo "test: NO_MPI=1: requirements-mpi.txt not installed by setup; the MPI tests (tests/test_mpi.py) are skipped where mpi4py/Open MPI are missing" >&2
fi
exec "${VENV:-.venv}/bin/python" -m pytest -q "$@" tests
