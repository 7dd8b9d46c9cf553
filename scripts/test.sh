#!/usr/bin/env bash
# Set up the venv if needed, then run the CPU test suite. Extra arguments go to pytest.
# The integration tests use the real ESC-10 clips from $ESC50_DIR (default ../shared/data/ESC-50-esc10)
# and are skipped, with the reason, where that folder is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@" tests
