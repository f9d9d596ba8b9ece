"""A browsable HTML report: one row per image with its overlays and top classes.

``write_report`` writes ``index.html`` and ``colorbar.png`` into a directory that already holds
the pictures; every link in the page is relative, so the directory can be moved, zipped or
served as it is. The page needs no script and no network.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gradcampp.images import save_png
from gradcampp.viz import colorize

COLORBAR_FILE = "colorbar.png"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #1d1d1f; background: #fafafa; }
h1 { font-size: 1.5em; margin: 0 0 4px 0; }
.meta { color: #555; margin: 2px 0; }
.legend { display: flex; align-items: center; gap: 10px; margin: 14px 0 18px 0; }
.legend img { width: 260px; height: 16px; border: 1px solid #999; }
.legend .note { color: #555; font-size: 0.9em; }
table.grid { border-collapse: collapse; background: #fff; }
table.grid th { position: sticky; top: 0; background: #eee; padding: 8px 10px;
                text-align: left; font-weight: 600; border-bottom: 2px solid #ccc; }
table.grid td { padding: 8px 10px; vertical-align: top; border-bottom: 1px solid #e2e2e2; }
figure { margin: 0; }
figure img { width: 200px; height: auto; display: block; border-radius: 3px; }
figcaption { font-size: 0.85em; color: #333; margin-top: 4px; max-width: 200px; }
.name { font-weight: 600; word-break: break-all; max-width: 200px; }
.note { font-size: 0.85em; color: #555; }
ol.top { margin: 0; padding-left: 1.4em; min-width: 220px; }
ol.top li { margin: 2px 0; }
.bar { display: inline-block; height: 8px; background: #d9622b; vertical-align: middle;
       margin-left: 6px; border-radius: 2px; }
.files a { font-size: 0.85em; margin-right: 8px; }
.skipped { color: #a40000; }
"""


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
        panels: one overlay per column of ``write_report``'s ``columns``.
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


def _check_relative(src: str, root: Path) -> str:
    if Path(src).is_absolute() or ".." in Path(src).parts:
        raise ValueError(f"report files must be relative paths inside the directory, got {src!r}")
    if not (root / src).is_file():
        raise ValueError(f"report file {src!r} does not exist in {root}")
    return html.escape(Path(src).as_posix(), quote=True)


def _row(entry: ReportEntry, n_columns: int, root: Path) -> str:
    if len(entry.panels) != n_columns:
        raise ValueError(
            f"entry {entry.name!r} has {len(entry.panels)} panels for {n_columns} columns"
        )
    name = html.escape(entry.name)
    cells = [
        f'<td><figure><img src="{_check_relative(entry.image, root)}" alt="{name}">'
        f'<figcaption class="name">{name}</figcaption>'
        + (f'<div class="note">{html.escape(entry.note)}</div>' if entry.note else "")
        + "</figure></td>"
    ]
    for panel in entry.panels:
        caption = html.escape(panel.caption)
        cells.append(
            f'<td><figure><img src="{_check_relative(panel.src, root)}" '
            f'alt="{name}: {caption}"><figcaption>{caption}</figcaption></figure></td>'
        )
    items = "".join(
        f"<li>{html.escape(label)} <b>{100 * score:.1f}%</b>"
        f'<span class="bar" style="width:{max(1, round(80 * score))}px"></span></li>'
        for label, score in entry.predictions
    )
    links = "".join(
        f'<a href="{_check_relative(src, root)}">{html.escape(label)}</a>'
        for label, src in entry.files
    )
    cells.append(f'<td><ol class="top">{items}</ol><div class="files">{links}</div></td>')
    return "<tr>" + "".join(cells) + "</tr>"


def write_report(
    out_dir: str | os.PathLike[str],
    entries: Sequence[ReportEntry],
    *,
    columns: Sequence[str],
    title: str = "Grad-CAM++ explanations",
    details: Sequence[str] = (),
    skipped: Sequence[tuple[str, str]] = (),
    cmap: str = "inferno",
) -> Path:
    """Write ``index.html`` (and ``colorbar.png``) into ``out_dir``.

    Args:
        out_dir: the directory holding every picture the entries name.
        entries: the rows, in order.
        columns: the header of each overlay column (e.g. ``["Grad-CAM++", "Grad-CAM"]``).
        title: the page title; details: lines shown under it (model, layer, ...).
        skipped: ``(input, reason)`` for inputs that could not be explained.
        cmap: the colour map the overlays use, for the colour bar.

    Returns:
        the path of ``index.html``.

    Raises:
        ValueError: when an entry's file is missing, not relative, or its panels do not match
            ``columns``.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    write_colorbar(root / COLORBAR_FILE, cmap)
    header = "".join(f"<th>{html.escape(c)}</th>" for c in ("Image", *columns, "Top classes"))
    rows = "\n".join(_row(entry, len(columns), root) for entry in entries)
    meta = "".join(f'<p class="meta">{html.escape(line)}</p>' for line in details)
    skipped_html = ""
    if skipped:
        items = "".join(
            f"<li>{html.escape(name)}: {html.escape(reason)}</li>" for name, reason in skipped
        )
        skipped_html = f'<h2 class="skipped">Skipped ({len(skipped)})</h2><ul>{items}</ul>'
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
{meta}
<div class="legend"><span>low</span>
<img src="{COLORBAR_FILE}" alt="colour bar ({html.escape(cmap)})"><span>high</span>
<span class="note">relevance for the explained class;
each map is scaled to its own maximum</span></div>
<table class="grid">
<thead><tr>{header}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
{skipped_html}
</body>
</html>
"""
    index = root / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
