"""MkDocs hook: execute the tutorials in ``examples/`` and publish them as pages with their outputs.

Each ``examples/NAME.ipynb`` is run from top to bottom (a fresh kernel, this checkout's sources on
its path, in an empty temporary folder that is deleted afterwards) and becomes the page
``tutorials/NAME.md``: markdown cells as they are, code cells as Python blocks, printed text as text
blocks and figures as PNG files beside the page. A cell that raises stops the build, so the site
never shows a tutorial that does not run. Printed text that carries a warning, a traceback or a
path of the building machine (``unpublishable``) is left out of the page and logged as a build
warning, which fails a strict build. The notebooks stay committed without outputs.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import KernelManager
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PAGES = "tutorials"
CELL_TIMEOUT_S = 300
OUTPUT = "nb-output"  # CSS class of printed outputs (docs/stylesheets/extra.css)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_WARNING = re.compile(r"\b[A-Z]\w*Warning: |Traceback \(most recent call last\)")
log = logging.getLogger("mkdocs.hooks.notebooks")


def machine_paths() -> list[str]:
    """Folders of the building machine that a published page must not show: this checkout, the
    Python installation, the home and the temporary folder."""
    found = {str(ROOT), sys.prefix, sys.base_prefix, str(Path.home()), tempfile.gettempdir()}
    return sorted((p for p in found if len(p) > 1), key=len, reverse=True)


def unpublishable(text: str, paths: list[str] | None = None) -> str | None:
    """Why printed ``text`` must not be published (a warning, a traceback, a machine path), or
    None when it may be."""
    found = _WARNING.search(text)
    if found:
        return f"it holds {found.group(0).strip().rstrip(':')!r}"
    for path in machine_paths() if paths is None else paths:
        if path in text:
            return f"it shows the path {path!r} of the machine that built the site"
    return None


def kernel_env() -> dict[str, str]:
    """The environment of the kernel that runs a tutorial.

    This checkout's ``src`` comes first on ``PYTHONPATH``; figures go to the notebook (inline
    backend) whatever ``MPLBACKEND`` says; TensorFlow's C++ start-up logs stay out of the page.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def execute(path: Path, workdir: Path) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` with ``workdir`` as its working folder; returns it executed.

    Raises:
        PluginError: when a cell raises (the error names the notebook and the cell).
    """
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="gradcampp-kernel-") as runtime:
        # Local sockets in a folder of their own, rather than TCP ports (over which the kernel
        # warns that its traffic is not encrypted) or files in the notebook's working folder.
        manager = KernelManager(kernel_name="python3", transport="ipc")
        manager.connection_file = str(Path(runtime) / "kernel.json")
        client = NotebookClient(
            notebook,
            km=manager,
            timeout=CELL_TIMEOUT_S,
            resources={"metadata": {"path": str(workdir)}},
        )
        try:
            client.execute(env=kernel_env())
        except CellExecutionError as error:
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            raise PluginError(f"{where} failed while the site was built:\n{error}") from error
        finally:
            if manager.has_kernel:  # a manager passed in is ours to shut down, not the client's
                manager.shutdown_kernel()
    return notebook


def _fence(text: str, language: str, css_class: str | None = None) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    info = f"{{.{language} .{css_class}}}" if css_class else language
    return f"{ticks}{info}\n{text.rstrip()}\n{ticks}"


def to_markdown(notebook: nbformat.NotebookNode, stem: str) -> tuple[str, dict[str, bytes]]:
    """An executed notebook as a markdown page and the figures it shows.

    Args:
        notebook: the executed notebook.
        stem: the notebook's name without suffix; figures are named ``{stem}-{cell}-{n}.png``.

    Returns:
        the page's markdown and ``{file name: PNG bytes}`` for the figures it links.
    """
    parts: list[str] = []
    figures: dict[str, bytes] = {}
    source = f"examples/{stem}.ipynb"
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            text = cell.source
            if index == 0 and text.startswith("# "):  # say where the page comes from
                title, _, rest = text.partition("\n")
                note = (
                    f"*This page is the notebook `{source}` of the repository, run when this "
                    "site was built; its outputs are shown below each cell.*"
                )
                text = f"{title}\n\n{note}\n{rest}"
            parts.append(text)
            continue
        if cell.cell_type != "code":
            continue
        parts.append(_fence(cell.source, "python"))
        for n, output in enumerate(cell.get("outputs", [])):
            kind = output.get("output_type")
            if kind == "stream":
                text = _ANSI.sub("", output.get("text", ""))
                reason = unpublishable(text)
                if reason is not None:  # a strict build stops here; otherwise the page omits it
                    log.warning(
                        f"{source}, cell {index}: printed text left out of the page, since "
                        f"{reason}: {text.strip()[:300]}"
                    )
                    continue
                parts.append(_fence(text, "text", OUTPUT))
            elif kind in ("display_data", "execute_result"):
                data = output.get("data", {})
                if "image/png" in data:
                    name = f"{stem}-{index}-{n}.png"
                    figures[name] = base64.b64decode(data["image/png"])
                    parts.append(f"![Output of the cell above]({name})")
                elif "text/plain" in data:
                    text = _ANSI.sub("", data["text/plain"])
                    reason = unpublishable(text)
                    if reason is not None:
                        log.warning(f"{source}, cell {index}: result left out, since {reason}")
                        continue
                    parts.append(_fence(text, "text", OUTPUT))
    return "\n\n".join(parts) + "\n", figures


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    """Run every tutorial and add its page and figures to the site."""
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        with tempfile.TemporaryDirectory(prefix="gradcampp-tutorial-") as workdir:
            notebook = execute(path, Path(workdir))
        markdown, figures = to_markdown(notebook, path.stem)
        files.append(File.generated(config, f"{PAGES}/{path.stem}.md", content=markdown))
        for name, png in figures.items():
            files.append(File.generated(config, f"{PAGES}/{name}", content=png))
    return files
