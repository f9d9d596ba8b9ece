"""Names and text of the result files: unique, safe names, relative paths, inert CSV cells.

A run writes, for each input, files named ``NAME.<suffix>`` (see ``gradcampp.stages.write``), and a
few run files (``index.html``, ``predictions.csv``, ``colorbar.png``). The functions here make sure
that

- every ``NAME`` is unique within the run (also when two folders hold the same file name, or an
  input is itself called ``a-2.png``), whatever the case of the letters;
- no result file ever has the path of an input, or of any other entry of the output folder that
  gradcampp did not write (``gradcampp.out_folder``, rule 2: ``--out`` may be the inputs' own
  folder, which may hold files such as ``b.input.png``, ``cat.json`` or ``index.html``);
- names are printable, UTF-8, and short enough for every file system (255 bytes) with the longest
  suffix added;
- text from file names is shown losslessly even when the name is not valid UTF-8;
- CSV cells cannot be read as formulas by a spreadsheet (OWASP's "CSV injection").

A hidden file, ``.gradcampp-files`` (``gradcampp.out_folder``), lists the result files a run wrote
into a folder, so that a later run over the same folder does not take them for inputs, and may
replace them.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gradcampp.images import PICTURE_FORMATS
from gradcampp.out_folder import MANIFEST, add_to_manifest, foreign_names, read_manifest

__all__ = [
    "MANIFEST",
    "add_to_manifest",
    "blocked_names",
    "csv_cell",
    "display_path",
    "free_run_file",
    "read_manifest",
    "relative_path",
    "safe_stem",
    "unique_names",
]
MAX_NAME_BYTES = 120  # NAME; the longest suffix (".gradcampp.10-<40 chars>.png") stays < 255
CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as text: bytes that are not UTF-8 are shown as ``\\xNN`` instead of failing."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def relative_path(path: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    """``path`` relative to the folder ``start``, with ``/`` separators, as ``display_path``.

    Absolute when no relative path exists (another drive on Windows).
    """
    try:
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(start))
    except ValueError:
        relative = os.path.abspath(path)
    return display_path(Path(relative).as_posix())


def csv_cell(text: str) -> str:
    """``text`` made inert for spreadsheets: a leading ``= + - @``, tab or CR gets a ``'``.

    As OWASP recommends for CSV injection; the ``csv`` module quotes the rest.
    """
    return "'" + text if text.startswith(CSV_TRIGGERS) else text


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def safe_stem(path: str | os.PathLike[str]) -> str:
    """A file-name stem for the results of ``path``: its own stem, made safe.

    Bytes that are not UTF-8 and control or format characters become ``_``, leading dots are
    dropped (no hidden results), and the stem is cut to ``MAX_NAME_BYTES`` UTF-8 bytes.
    """
    raw = os.fsencode(Path(os.fsdecode(path)).stem).decode("utf-8", "replace")
    cleaned = "".join(
        "_" if ch == "\ufffd" or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch
        for ch in raw
    )
    cleaned = cleaned.lstrip(". ").rstrip(" ")
    return _truncate_utf8(cleaned, MAX_NAME_BYTES).rstrip(" ") or "image"


def blocked_names(file_names: Iterable[str], methods: Sequence[str]) -> set[str]:
    """The result names (casefolded) whose result files would take one of ``file_names``.

    A run writes ``NAME.input.P``, ``NAME.json``, ``NAME.<method>.npy``, ``NAME.<method>.P``
    and ``NAME.<method>.<rank>-<slug>.P`` (slug: letters, digits, ``_``; ``P`` the pictures'
    suffix, ``jpg`` or ``png``: both are counted whatever the run writes); so ``b.input.png``
    blocks ``b`` and ``c.gradcampp.jpg`` blocks ``c``.
    """
    suffixes = [".input.png", ".input.jpg", ".json"]
    suffixes += [f".{m}.{ext}" for m in methods for ext in ("npy", "png", "jpg")]
    suffixes = [suffix.casefold() for suffix in suffixes]
    ranked = re.compile(
        r"\.(?:" + "|".join(re.escape(m) for m in methods) + r")\.\d+-[A-Za-z0-9_]+\.(?:png|jpg)\Z",
        re.IGNORECASE,
    )
    blocked: set[str] = set()
    for file_name in file_names:
        folded = file_name.casefold()
        blocked.update(folded[: -len(s)] for s in suffixes if folded.endswith(s))
        match = ranked.search(file_name) if methods else None
        if match:
            blocked.add(folded[: match.start()])
    blocked.discard("")
    return blocked


def _names_in(folder: Path, paths: Iterable[Path]) -> list[str]:
    """The file names of ``paths`` that lie directly in ``folder`` (a link is where it stands, not
    where it points)."""
    root = folder.resolve()
    return [path.name for path in paths if Path(os.path.abspath(path)).parent.resolve() == root]


def _taken(out_dir: Path | None, paths: Iterable[Path]) -> set[str]:
    """Casefolded names in ``out_dir`` that no result may take: its foreign entries and the
    inputs lying in it."""
    if out_dir is None:
        return set()
    return foreign_names(out_dir) | {name.casefold() for name in _names_in(out_dir, paths)}


def unique_names(
    paths: Sequence[Path], out_dir: Path | None = None, methods: Sequence[str] = ()
) -> list[str]:
    """A result name per input path, unique within the run (letter case ignored).

    Each input keeps its own ``safe_stem`` where it can: the first of several equal stems keeps
    it, the others get ``-2``, ``-3``... (skipping every name taken by another input). A name whose
    result files would have the name of an input lying in ``out_dir``, or of any entry there that
    gradcampp did not write (``out_folder.foreign_names``), is passed over in the same way
    (``blocked_names``).
    """
    stems = [safe_stem(path) for path in paths]
    blocked = blocked_names(_taken(out_dir, paths), methods)

    def clashes(name: str) -> bool:
        return name.casefold() in blocked

    taken: set[str] = set()
    names: list[str | None] = [None] * len(paths)
    for i, stem in enumerate(stems):  # first pass: own stems, first come first served
        if stem.casefold() not in taken and not clashes(stem):
            names[i] = stem
            taken.add(stem.casefold())
    for i, stem in enumerate(stems):
        if names[i] is not None:
            continue
        k = 2
        while f"{stem}-{k}".casefold() in taken or clashes(f"{stem}-{k}"):
            k += 1
        names[i] = f"{stem}-{k}"
        taken.add(names[i].casefold())  # type: ignore[union-attr]
    return names  # type: ignore[return-value]


def free_run_file(out_dir: Path, file_name: str, inputs: Iterable[Path]) -> str:
    """``file_name`` (e.g. ``colorbar.png``), or ``stem-2.ext``... if an input, or an entry that
    gradcampp did not write (``out_folder.foreign_names``), has that path."""
    here = _taken(out_dir, inputs)
    stem, dot, suffix = file_name.partition(".")
    candidate, k = file_name, 2
    while candidate.casefold() in here:
        candidate, k = f"{stem}-{k}{dot}{suffix}", k + 1
    return candidate


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "class"


def class_name(classes: Sequence[str] | None, index: int) -> str:
    """The name of class ``index``: ``classes[index]``, or ``class <index>`` without one."""
    return classes[index] if classes is not None and index < len(classes) else f"class {index}"


def result_file_names(
    name: str, methods: Sequence[str], labels: Sequence[str] | None, *, pictures: str
) -> dict:
    """The files of one image: ``input``, ``json``, and per method its ``map`` and ``overlays``.

    ``labels``: the explained class names when each target has its own overlay (``--top-k``);
    None for one overlay per method. ``pictures``: their format, a key of
    ``gradcampp.images.PICTURE_FORMATS`` (whose suffix they take: ``.jpg`` or ``.png``).
    """
    suffix = PICTURE_FORMATS[pictures][0]
    files: dict[str, Any] = {"input": f"{name}.input{suffix}", "json": f"{name}.json"}
    for method in methods:
        files[method] = {
            "map": f"{name}.{method}.npy",
            "overlays": [f"{name}.{method}{suffix}"]
            if labels is None
            else [
                f"{name}.{method}.{rank}-{_slug(label)}{suffix}"
                for rank, label in enumerate(labels, start=1)
            ],
        }
    return files
