"""Names and text of the result files: unique, safe names, relative paths, inert CSV cells.

A run writes, for each input, files named ``NAME.<suffix>`` (see ``gradcampp.pipeline``), and a
few run files (``index.html``, ``predictions.csv``, ``colorbar.png``). The functions here make sure
that

- every ``NAME`` is unique within the run (also when two folders hold the same file name, or an
  input is itself called ``a-2.png``), whatever the case of the letters;
- no result file ever has the path of an input (``--out`` may be the inputs' own folder, which
  may hold files such as ``b.input.png`` or ``colorbar.png``);
- names are printable, UTF-8, and short enough for every file system (255 bytes) with the longest
  suffix added;
- text from file names is shown losslessly even when the name is not valid UTF-8;
- CSV cells cannot be read as formulas by a spreadsheet (OWASP's "CSV injection").

A hidden file, ``.gradcampp-files``, lists the result files a run wrote into a folder, so that a
later run over the same folder does not take them for inputs.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

MANIFEST = ".gradcampp-files"
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

    A run writes ``NAME.input.png``, ``NAME.json``, ``NAME.<method>.npy``, ``NAME.<method>.png``
    and ``NAME.<method>.<rank>-<slug>.png`` (slug: letters, digits, ``_``); so ``b.input.png``
    blocks ``b`` and ``c.gradcampp.png`` blocks ``c``.
    """
    suffixes = [".input.png", ".json"]
    suffixes += [f".{m}.{ext}" for m in methods for ext in ("npy", "png")]
    suffixes = [suffix.casefold() for suffix in suffixes]
    ranked = re.compile(
        r"\.(?:" + "|".join(re.escape(m) for m in methods) + r")\.\d+-[A-Za-z0-9_]+\.png\Z",
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
    """The file names of ``paths`` that lie directly in ``folder``."""
    root = folder.resolve()
    return [path.name for path in paths if path.resolve().parent == root]


def unique_names(
    paths: Sequence[Path], out_dir: Path | None = None, methods: Sequence[str] = ()
) -> list[str]:
    """A result name per input path, unique within the run (letter case ignored).

    Each input keeps its own ``safe_stem`` where it can: the first of several equal stems keeps
    it, the others get ``-2``, ``-3``... (skipping every name taken by another input). A name whose
    result files would have the name of an input lying in ``out_dir`` is
    passed over in the same way (``blocked_names``).
    """
    stems = [safe_stem(path) for path in paths]
    blocked = blocked_names(_names_in(out_dir, paths) if out_dir is not None else [], methods)

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
    """``file_name`` (e.g. ``colorbar.png``), or ``stem-2.ext``... if an input has that path."""
    here = {name.casefold() for name in _names_in(out_dir, inputs)}
    stem, dot, suffix = file_name.partition(".")
    candidate, k = file_name, 2
    while candidate.casefold() in here:
        candidate, k = f"{stem}-{k}{dot}{suffix}", k + 1
    return candidate


def read_manifest(out_dir: Path) -> set[Path]:
    """The result files listed in ``out_dir``'s manifest (written by earlier runs)."""
    try:
        text = (out_dir / MANIFEST).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return {out_dir / line for line in text.splitlines() if line and "/" not in line}


def add_to_manifest(out_dir: Path, file_names: Iterable[str]) -> None:
    """Append ``file_names`` to ``out_dir``'s manifest (never through a symbolic link)."""
    path = out_dir / MANIFEST
    if path.is_symlink():
        path.unlink()
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    handle = os.open(path, flags, 0o644)
    with os.fdopen(handle, "a", encoding="utf-8") as file:
        file.write("".join(f"{name}\n" for name in file_names))
