#!/usr/bin/env bash
# Install everything the test suite needs into the current Python environment, then run it.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
pip_install() { python -m pip install --quiet --disable-pip-version-check "$@"; }
# A real headless browser opens the HTML report (tests/test_report_browser.py).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "note: chromium and chromium-driver are not installed; the browser tests will skip" >&2
    fi
fi
pip_install -e ".[test,docs]"
# Vision transformers and Hugging Face models (random weights) for the model tests; also in the
# test extra, pinned to versions that keep torch and numpy as they are.
pip_install "timm==1.0.31" "transformers==5.23.0"
# Keras 3 on TensorFlow, and xplique 2.0.2 to compare against. xplique pins tensorflow[and-cuda]
# (gigabytes of CUDA wheels), so it is installed without its dependencies, followed by what it
# imports, pinned to versions that keep the TensorFlow above.
pip_install "tensorflow==2.20.*" "tf-keras==2.20.*" keras
pip_install --no-deps xplique==2.0.2
pip_install einops deprecated tensorflow-probability==0.25.0 "scikit-image<=0.25.2" \
    "scikit-learn<=1.7.2" "scipy<=1.15.3" matplotlib opencv-python-headless
ruff check .
ruff format --check .
python -m pytest "$@"
# The documentation site, built as CI would publish it: any broken link, missing figure or
# docstring that does not parse fails here. The tutorials in examples/ run in tests/test_notebooks.py.
site_dir="$(mktemp -d)"
trap 'rm -rf "$site_dir"' EXIT
NO_MKDOCS_2_WARNING=1 python -m mkdocs build --strict --quiet --site-dir "$site_dir"
