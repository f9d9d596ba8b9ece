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
# --engine ray and --format parquet (tests/test_ray_engine.py runs a local Ray with 2 CPUs)
pip_install "ray[data]==2.60.0"
# Keras 3 on the JAX backend (the Keras tests run each backend in its own process)
pip_install "jax[cpu]==0.10.2"
# Keras 3 on TensorFlow, and xplique 2.0.2 to compare against. xplique's metadata asks for
# tensorflow[and-cuda] (gigabytes of CUDA wheels) and opencv-python (the build for desktops), so
# what it imports is installed first, pinned to versions that keep the TensorFlow above, with
# opencv-python-headless for its `cv2`. xplique itself comes last and without dependencies: pip
# checks installed packages' requirements only when it resolves dependencies, so this prints no
# resolver ERROR about the opencv-python name. Keep it the last pip install here: a later one
# that touches any of xplique's requirements would print that ERROR.
pip_install "tensorflow==2.20.*" "tf-keras==2.20.*" keras
pip_install einops deprecated tensorflow-probability==0.25.0 "scikit-image<=0.25.2" \
    "scikit-learn<=1.7.2" "scipy<=1.15.3" matplotlib opencv-python-headless
# pytorch-grad-cam 1.5.7, to compare the drop-in against (its own requirements are the line above's)
pip_install grad-cam==1.5.7 ttach==0.0.3
pip_install --no-deps xplique==2.0.2
ruff check .
ruff format --check .
python -m mypy # type-checks src/ (configured in pyproject.toml)
# The documentation site, built as CI would publish it: any broken link, missing figure, formula
# that does not convert, docstring that does not parse or tutorial that fails (the build runs
# examples/*.ipynb) fails here. The browser tests then open this build instead of making their own.
# It is the README's command, `mkdocs build --strict`, with no --quiet: --quiet drops warnings
# before strict mode counts them, so a build that warns would pass.
site_dir="$(mktemp -d)"
trap 'rm -rf "$site_dir"' EXIT
NO_MKDOCS_2_WARNING=1 python -m mkdocs build --strict --site-dir "$site_dir"
GRADCAMPP_DOCS_SITE="$site_dir" python -m pytest "$@"
