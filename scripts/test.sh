#!/usr/bin/env bash
# Install everything the test suite needs into the current Python environment, then run it.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
# A real headless browser opens the HTML report (tests/test_report_browser.py).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "note: chromium and chromium-driver are not installed; the browser tests will skip" >&2
    fi
fi
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
ruff check .
ruff format --check .
python -m pytest "$@"
