"""A browsable HTML report: one row per image with its overlays and top classes.

``write_report`` writes ``index.html`` and ``colorbar.png`` into a directory that already holds
the pictures. The page is rendered from the Jinja2 template ``templates/report.html`` with
autoescaping, so no text from a file or class name can become markup. Every link is a relative
``./`` path, URL-encoded and checked to name a file inside the directory, so the directory can be
moved, zipped or served as it is, and a file name such as ``javascript:alert(1).png`` stays a
file name. The page needs no script and no network, and forbids scripts (a Content Security
Policy).

With two methods and each entry's ``disagreement`` (``gradcampp.disagreement``: ``1 - r`` of the
two maps of each explained class), the page adds a Disagreement column, marks the rows where the
methods differ most, lists every image and class ordered by the number (largest first, a
server-side ordering: no script) and says in "How to read it" what the numbers are on this run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np

from gradcampp._files import write_text
from gradcampp.disagreement import most_different
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
        disagreement: per explained class, how much the first two columns' maps disagree
            (``gradcampp.disagreement.disagreement``; None where it is undefined), or empty
            when the row has no such number (one method).
    """

    name: str
    image: str
    panels: Sequence[Panel]
    predictions: Sequence[tuple[str, float]]
    note: str = ""
    files: Sequence[tuple[str, str]] = field(default_factory=tuple)
    disagreement: Sequence[float | None] = field(default_factory=tuple)


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


def _value_text(value: float | None) -> str:
    return "undefined (a constant map)" if value is None else f"{value:.3f}"


def comparison(
    entries: Sequence[ReportEntry], columns: Sequence[str]
) -> tuple[list[dict[str, object]], list[list[dict[str, object]]], str] | None:
    """The disagreement part of the page: the image-class pairs ordered by disagreement (largest
    first, undefined ones last), each row's cells, and the sentence on this run's numbers; None
    unless there are two columns and every entry has one number per explained class.

    Raises:
        ValueError: when an entry's numbers do not match its explained classes.
    """
    if len(columns) < 2 or not entries or any(not e.disagreement for e in entries):
        return None
    pairs: list[tuple[int, int, float | None, str]] = []
    for row, entry in enumerate(entries):
        per_column = len(entry.panels) // len(columns)
        if len(entry.disagreement) != per_column:
            raise ValueError(
                f"entry {entry.name!r} has {len(entry.disagreement)} disagreement values for "
                f"{per_column} explained classes"
            )
        for t, value in enumerate(entry.disagreement):
            pairs.append((row, t, value, entry.panels[t].caption))
    marked = set(most_different([value for _, _, value, _ in pairs]))
    cells: list[list[dict[str, object]]] = [[] for _ in entries]
    for index, (row, _, value, caption) in enumerate(pairs):
        cells[row].append(
            {"caption": caption, "text": _value_text(value), "marked": index in marked}
        )
    order = sorted(
        range(len(pairs)),
        key=lambda i: (pairs[i][2] is None, -(pairs[i][2] or 0.0)),
    )
    ordered = [
        {
            "rank": rank,
            "href": f"#row-{pairs[i][0] + 1}",
            "name": entries[pairs[i][0]].name,
            "caption": pairs[i][3],
            "text": _value_text(pairs[i][2]),
            "marked": i in marked,
        }
        for rank, i in enumerate(order, start=1)
    ]
    defined = np.array([value for _, _, value, _ in pairs if value is not None])
    a, b = columns[0], columns[1]
    if defined.size == 0:
        data = "On this run every pair has a constant map, so no number is defined."
    elif defined.size == 1:
        data = f"On this run it is {defined[0]:.3f} for the one image and class."
    else:
        data = (
            f"On this run it ranges from {defined.min():.3f} to {defined.max():.3f} (median "
            f"{np.median(defined):.3f}) over {defined.size} images and classes"
        )
        data += (
            f"; the {len(marked)} largest are marked \u201cdiffers most\u201d and listed first "
            "under \u201cOrdered by disagreement\u201d."
            if len(marked) > 1
            else "; the largest is marked \u201cdiffers most\u201d and listed first under "
            "\u201cOrdered by disagreement\u201d."
        )
    undefined = len(pairs) - defined.size
    if undefined and defined.size:
        data += f" {undefined} pair(s) have a constant map, where the number is undefined."
    reading = (
        f"Disagreement is 1 \u2212 r, r the Pearson correlation of the {a} and the {b} map of an "
        "image and class over their pixels: 0 when one map is the other rescaled (the "
        "overlays, each scaled to its own maximum, then look alike), 1 when they are "
        f"unrelated, 2 when one is the other inverted. {data}"
    )
    return ordered, cells, reading


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
            same number in each (several explained classes are stacked in one column). With two
            or more columns and every entry's ``disagreement`` given, the page shows it
            (``comparison``).
        title: the page title; details: lines shown under it (model, layer, ...).
        skipped: ``(input, reason)`` for inputs that could not be explained.
        cmap: the colour map the overlays use, for the colour bar.
        index_name, colorbar_name: the file names of the page and the colour bar.
        method_page: the page the report links to for how the methods work.

    Returns:
        the path of the page.

    Raises:
        ValueError: when an entry's file is missing, not relative, its panels do not fill
            ``columns`` evenly, or its disagreement values do not match its classes.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rows = [_row(entry, len(columns), root) for entry in entries]
    compared = comparison(entries, columns)
    for number, row in enumerate(rows):
        cells = compared[1][number] if compared else []
        row["id"] = f"row-{number + 1}"
        row["disagreement"] = cells
        row["marked"] = any(cell["marked"] for cell in cells)
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
        ordered=compared[0] if compared else [],
        comparing=compared[2] if compared else "",
    )
    index = root / index_name
    write_text(index, page)
    return index
