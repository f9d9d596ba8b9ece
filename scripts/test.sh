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
python -m pip install --quiet --disable-pip-version-check -e ".[test,docs]"
ruff check .
ruff format --check .
python -m pytest "$@"
# The documentation site, built as CI would publish it: any broken link, missing figure or
# docstring that does not parse fails here. The tutorials in examples/ run in tests/test_notebooks.py.
site_dir="$(mktemp -d)"
trap 'rm -rf "$site_dir"' EXIT
NO_MKDOCS_2_WARNING=1 python -m mkdocs build --strict --quiet --site-dir "$site_dir"
