"""The built documentation site, for the tests that look at it.

``scripts/test.sh`` builds the site once (strict) before the tests and passes its folder in
``GRADCAMPP_DOCS_SITE``; run alone, the tests build it themselves (a few minutes: the build runs the
tutorials).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def built_site() -> Path:
    """The folder of a strict build of this checkout's documentation."""
    given = os.environ.get("GRADCAMPP_DOCS_SITE")
    if given:
        site = Path(given)
        if not (site / "index.html").is_file():
            raise FileNotFoundError(f"GRADCAMPP_DOCS_SITE={given} holds no built site")
        return site
    folder = tempfile.mkdtemp(prefix="gradcampp-site-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    site = Path(folder) / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        check=True,
    )
    return site
