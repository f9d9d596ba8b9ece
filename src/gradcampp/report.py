"""A browsable HTML report: one row per image with its overlays and top classes.

``write_report`` writes ``index.html`` and ``colorbar.png`` into a directory that already holds
the pictures. The page is rendered from the Jinja2 template ``templates/report.html`` with
autoescaping, so no text from a file or class name can become markup. Every link is a relative
``./`` path, URL-encoded and checked to name a file inside the directory, so the directory can be
moved, zipped or served as it is, and a file name such as ``javascript:alert(1).png`` stays a
file name. The page needs no script and no network, and forbids scripts (a Content Security
Policy).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np

from gradcampp._files import write_text
from gradcampp.images import save_png
from gradcampp.viz import colorize

COLORBAR_FILE = "colorbar.png"
METHOD_PAGE = "https://arxiv.org/abs/1710.11063"  # Chattopadhyay et al., the Grad-CAM++ paper


@dataclass(frozen=True)
class Panel:
    """One picture in a row: ``src`` relative to the report directory, ``caption`` under it."""

    src: str
    caption: str = ""


@dataclass(frozen=True)
class ReportEntry:
    """One row of the report.

    Attributes:
        name: the image's name (e.g. its file name).
        image: the input picture (relative path).
        panels: the overlays, column by column of ``write_report``'s ``columns``, the same
            number in each column (one per explained class).
        predictions: ``(class name, probability)`` pairs, best first.
        note: extra text under the name (e.g. the ground truth), may be empty.
        files: ``(label, relative path)`` links to the raw results (maps, predictions).
    """

    name: str
    image: str
    panels: Sequence[Panel]
    predictions: Sequence[tuple[str, float]]
    note: str = ""
    files: Sequence[tuple[str, str]] = field(default_factory=tuple)


def write_colorbar(path: str | os.PathLike[str], cmap: str = "inferno") -> None:
    """Write a horizontal colour bar ``(16, 256)`` of ``cmap`` (low on the left) as a PNG."""
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, 256), (16, 256))
    save_png(path, colorize(ramp, cmap))


def file_url(src: str, root: Path) -> str:
    """The link to ``src`` (a path relative to ``root``): ``./`` and the URL-encoded path.

    Raises:
        ValueError: when ``src`` is absolute, leaves ``root`` (``..``) or is no file there.
    """
    posix = PurePosixPath(Path(src).as_posix())
    if Path(src).is_absolute() or posix.is_absolute() or ".." in posix.parts or not posix.parts:
        raise ValueError(f"report files must be relative paths inside the directory, got {src!r}")
    if not (root / src).is_file():
        raise ValueError(f"report file {src!r} does not exist in {root}")
    return "./" + quote(str(posix), safe="/")


def _template() -> object:
    try:
        import jinja2
    except ImportError as error:  # pragma: no cover - jinja2 comes with the cli extra
        raise ImportError(
            'the HTML report needs Jinja2: pip install ".[cli]" in a gradcampp checkout'
        ) from error
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("gradcampp", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("report.html")


def _row(entry: ReportEntry, n_columns: int, root: Path) -> dict[str, object]:
    panels = list(entry.panels)
    if n_columns < 1 or not panels or len(panels) % n_columns:
        raise ValueError(f"entry {entry.name!r} has {len(panels)} panels for {n_columns} columns")
    per_column = len(panels) // n_columns
    groups = [
        [
            {"src": file_url(panel.src, root), "caption": panel.caption}
            for panel in panels[i * per_column : (i + 1) * per_column]
        ]
        for i in range(n_columns)
    ]
    return {
        "name": entry.name,
        "note": entry.note,
        "image": file_url(entry.image, root),
        "groups": groups,
        "predictions": [
            (label, f"{100 * score:.1f}%", max(1, round(80 * score)))
            for label, score in entry.predictions
        ],
        "files": [(label, file_url(src, root)) for label, src in entry.files],
    }


def write_report(
    out_dir: str | os.PathLike[str],
    entries: Sequence[ReportEntry],
    *,
    columns: Sequence[str],
    title: str = "Grad-CAM++ explanations",
    details: Sequence[str] = (),
    skipped: Sequence[tuple[str, str]] = (),
    cmap: str = "inferno",
    index_name: str = "index.html",
    colorbar_name: str = COLORBAR_FILE,
    method_page: str = METHOD_PAGE,
) -> Path:
    """Write ``index.html`` (and ``colorbar.png``) into ``out_dir``, each atomically.

    Args:
        out_dir: the directory holding every picture the entries name.
        entries: the rows, in order.
        columns: the header of each overlay column, one per method (e.g.
            ``["Grad-CAM++", "Grad-CAM"]``); an entry's panels fill the columns in order, the
            same number in each (several explained classes are stacked in one column).
        title: the page title; details: lines shown under it (model, layer, ...).
        skipped: ``(input, reason)`` for inputs that could not be explained.
        cmap: the colour map the overlays use, for the colour bar.
        index_name, colorbar_name: the file names of the page and the colour bar.
        method_page: the page the report links to for how the methods work.

    Returns:
        the path of the page.

    Raises:
        ValueError: when an entry's file is missing, not relative, or its panels do not fill
            ``columns`` evenly.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rows = [_row(entry, len(columns), root) for entry in entries]
    write_colorbar(root / colorbar_name, cmap)
    page = _template().render(  # type: ignore[attr-defined]
        title=title,
        details=list(details),
        columns=list(columns),
        rows=rows,
        skipped=list(skipped),
        cmap=cmap,
        colorbar=file_url(colorbar_name, root),
        method_page=method_page,
    )
    index = root / index_name
    write_text(index, page)
    return index
