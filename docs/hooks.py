"""MkDocs hooks: produce the generated parts of the site before the pages are read.

- ``docs/generated/cli-*.txt``: the ``gradcampp`` command's help texts, so that the command line
  page always shows the options of the code it documents;
- ``docs/figures/*.png``: the figures, rendered from the demo model by ``docs/make_figures.py``
  (skipped when they are newer than that script and the package's sources).

Both folders are build outputs (ignored by git), so a fresh clone builds with ``mkdocs build``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "docs" / "generated"
FIGURES = ROOT / "docs" / "figures"
MAKE_FIGURES = ROOT / "docs" / "make_figures.py"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["COLUMNS"] = "100"
    env["MPLBACKEND"] = "Agg"
    return env


def _write_cli_help() -> None:
    GENERATED.mkdir(parents=True, exist_ok=True)
    for name, args in (("help", []), ("explain", ["explain"]), ("demo", ["demo"])):
        done = subprocess.run(
            [sys.executable, "-m", "gradcampp", *args, "--help"],
            capture_output=True,
            text=True,
            env=_env(),
            cwd=ROOT,
            check=True,
        )
        path = GENERATED / f"cli-{name}.txt"
        if not path.exists() or path.read_text() != done.stdout:  # `mkdocs serve` watches docs/
            path.write_text(done.stdout)


def _figures_are_current() -> bool:
    figures = list(FIGURES.glob("*.png"))
    if not figures:
        return False
    oldest = min(path.stat().st_mtime for path in figures)
    sources = [MAKE_FIGURES, *(ROOT / "src" / "gradcampp").rglob("*.py")]
    sources += list((ROOT / "src" / "gradcampp").rglob("*.pt"))
    return all(path.stat().st_mtime <= oldest for path in sources)


def on_pre_build(config: Any, **kwargs: Any) -> None:
    """Write the CLI help texts and (re)render the figures."""
    _write_cli_help()
    if not _figures_are_current():
        subprocess.run(
            [sys.executable, str(MAKE_FIGURES), "--out", str(FIGURES)],
            env=_env(),
            cwd=ROOT,
            check=True,
        )
