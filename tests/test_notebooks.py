"""The tutorials in ``examples/`` run from top to bottom, assertions included, and leave no file.

They run through the documentation's own hook (``docs/hooks_notebooks.py``), the code that
executes them when the site is built, so what passes here is what the site shows.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("mkdocs")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))


def _hook():
    spec = importlib.util.spec_from_file_location(
        "hooks_notebooks", ROOT / "docs" / "hooks_notebooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _untracked(folder: Path) -> set[str]:
    """Files in ``folder`` that git does not track, ignored ones included (bytecode aside)."""
    done = subprocess.run(
        ["git", "ls-files", "--others", "--", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return {name for name in done.stdout.splitlines() if "__pycache__/" not in name}


def test_the_tutorials_are_found():
    names = {path.name for path in NOTEBOOKS}
    assert {"getting_started.ipynb", "going_further.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert [cell.get("outputs") for cell in code] == [[] for _ in code], (
        f"{path.name} is committed with outputs; clear them (the site shows them, run at build)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_executes_and_leaves_no_file(path, tmp_path):
    hook = _hook()
    before = _untracked(ROOT)
    notebook = hook.execute(path, tmp_path)  # tmp_path: the kernel's working folder
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing in its working folder
    assert _untracked(ROOT) - before == set()  # nor anywhere in the checkout
    children = subprocess.run(
        ["ps", "--ppid", str(os.getpid()), "-o", "args="], capture_output=True, text=True
    ).stdout
    assert "ipykernel" not in children  # the kernel was shut down
    # and what the site shows: every code cell, with the figures the tutorial draws
    markdown, figures = hook.to_markdown(notebook, path.stem)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert markdown.count("```python\n") == len(code)
    assert len(figures) >= 1
    assert all(png.startswith(b"\x89PNG") for png in figures.values())
    assert all(f"]({name})" in markdown for name in figures)


def test_warnings_tracebacks_and_machine_paths_are_not_published(caplog):
    hook = _hook()
    machine = "/home/builder/venv"
    assert hook.unpublishable("energy 0.37\n", [machine]) is None
    cuda = f"{machine}/torch/graph.py:1: UserWarning: CUDA initialization: ...\n"
    assert hook.unpublishable(cuda, []) == "it holds 'UserWarning'"
    assert "Traceback" in hook.unpublishable("Traceback (most recent call last):\n", [])
    assert hook.unpublishable(f"saved to {machine}/x.png", [machine]) == (
        f"it shows the path {machine!r} of the machine that built the site"
    )
    assert str(ROOT) in hook.machine_paths()
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="kept line\n"),
        nbformat.v4.new_output("stream", name="stderr", text=f"{ROOT}/a.py:3: UserWarning: x\n"),
    ]
    notebook.cells = [cell]
    with caplog.at_level("WARNING", logger="mkdocs.hooks.notebooks"):
        markdown, _ = hook.to_markdown(notebook, "demo")
    assert "kept line" in markdown and "UserWarning" not in markdown and str(ROOT) not in markdown
    assert "examples/demo.ipynb, cell 0: printed text left out" in caplog.text
