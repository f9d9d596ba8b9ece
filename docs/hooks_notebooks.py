"""MkDocs hook: execute the tutorials in ``examples/`` and publish them as pages with their outputs.

Each ``examples/NAME.ipynb`` is run from top to bottom (a fresh kernel, this checkout's sources on
its path, in an empty temporary folder that is deleted afterwards) and becomes the page
``tutorials/NAME.md``: markdown cells as they are, code cells as Python blocks, printed text as text
blocks and figures as PNG files beside the page. A cell that raises stops the build, so the site
never shows a tutorial that does not run. The notebooks stay committed without outputs.
"""

from __future__ import annotations

import base64
import os
import re
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
                parts.append(_fence(_ANSI.sub("", output.get("text", "")), "text", OUTPUT))
            elif kind in ("display_data", "execute_result"):
                data = output.get("data", {})
                if "image/png" in data:
                    name = f"{stem}-{index}-{n}.png"
                    figures[name] = base64.b64decode(data["image/png"])
                    parts.append(f"![Output of the cell above]({name})")
                elif "text/plain" in data:
                    parts.append(_fence(_ANSI.sub("", data["text/plain"]), "text", OUTPUT))
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
