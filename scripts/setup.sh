#!/usr/bin/env bash
# Create .venv (if missing) and install tailor with its test tools. torch is pinned to the CPU
# build 2.13.0: an unpinned torch would pull gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | { grep -v '^WARNING: Location' || true; }
.venv/bin/python -m pip install --quiet "torch==2.13.0" -e ".[test]" 2>&1 | { grep -v '^WARNING: Location' || true; }
.venv/bin/python -c "import tailor, torch; print(f'tailor {tailor.__version__}, torch {torch.__version__}')"
