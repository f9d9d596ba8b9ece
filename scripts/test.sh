#!/usr/bin/env bash
# Install everything the test suite needs into the current Python environment, then run it.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
ruff check .
ruff format --check .
python -m pytest "$@"
