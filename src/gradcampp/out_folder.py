"""The rules of the output folder (``--out``): what gradcampp may replace, and what it trusts.

These rules hold for every engine and format; ``docs/cli.md`` states them for users.

1. ``--out`` names a folder: an empty name is refused (it would mean the current folder without
   saying so), as is a file, or a path under a file.
2. gradcampp replaces only what gradcampp wrote. The manifest ``.gradcampp-files`` lists every
   result file a run wrote into the folder, and a name is listed *before* its file is written.
   Any other entry (the user's file, a symbolic link, a folder, a pipe) is *foreign*: it is never
   replaced, and a result whose name would take it gets another one (``NAME-2``, ``index-2.html``;
   ``gradcampp.outputs.unique_names`` and ``free_run_file`` use ``foreign_names``). The run's own
   hidden files (the manifest, ``.gradcampp-run``, and temporaries ``.tmp-*.part``) are
   gradcampp's by their names.
3. Files are written under a temporary name and renamed into place (``gradcampp._files``): a
   link that stands at a name of gradcampp's is replaced by the new file, never written through.
4. Folders are never entered through a link: a folder gradcampp writes into (the Parquet dataset
   ``explanations.parquet``, the demo's ``inputs``) must be a real folder that an earlier run made
   (listed in the manifest) or absent; anything else stops the run (``claim_folder``).
5. A file of the folder is read only when it is a regular file of bounded size (``_files.
   read_regular``): a pipe or a device never blocks a run. A manifest that is a link is not
   trusted (it is read as empty and replaced). Which records ``--resume`` trusts is decided in
   ``gradcampp.engines.run_file``.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from gradcampp._files import NotRegularFileError, read_regular

MANIFEST = ".gradcampp-files"
RUN_FILE = ".gradcampp-run"
DATASET = "explanations.parquet"
MAX_MANIFEST_BYTES = 256 << 20  # 256 MiB: about two million result names


class OutputDirError(Exception):
    """``--out`` cannot hold the results (a file, under a file, read-only, a bad name, a link)."""


def _shown(path: str | os.PathLike[str]) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_out_text(text: str) -> str:
    """``text`` as given to ``--out``, refused when it names no folder (rule 1).

    Raises:
        OutputDirError: for an empty name or one of blanks only.
    """
    if not text.strip():
        raise OutputDirError(
            f"--out must name a directory, got {text!r} (use --out . for the current directory)"
        )
    return text


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is that of a temporary file of ``gradcampp._files`` (a killed run's)."""
    return name.startswith(".tmp-") and name.endswith(".part")


def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:  # missing, or a name too long: not a link
        return False


def manifest_names(out_dir: Path) -> set[str]:
    """The file names the manifest of ``out_dir`` lists: the files earlier runs wrote (rule 2).

    Lines that cannot be a file name of the folder (empty, with ``/`` or a NUL byte, ``.``,
    ``..``) are ignored; a manifest that is a symbolic link is not trusted (rule 5).

    Raises:
        OutputDirError: when the manifest is not a regular file (a pipe, a device, a folder) or
            is larger than ``MAX_MANIFEST_BYTES``.
    """
    path = out_dir / MANIFEST
    if _is_link(path):
        return set()
    try:
        data = read_regular(path, MAX_MANIFEST_BYTES, _shown(path))
    except FileNotFoundError:
        return set()
    except NotRegularFileError as error:
        raise OutputDirError(
            f"{error}: gradcampp keeps the list of the files it wrote there; remove it or "
            "choose another --out"
        ) from None
    except OSError:  # unreadable: no file counts as gradcampp's
        return set()
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    return {line for line in lines if line not in ("", ".", "..") and not set("/\0") & set(line)}


def read_manifest(out_dir: Path) -> set[Path]:
    """The result files listed in ``out_dir``'s manifest (written by earlier runs)."""
    return {out_dir / name for name in manifest_names(out_dir)}


def add_to_manifest(out_dir: Path, file_names: Iterable[str]) -> None:
    """Append ``file_names`` to ``out_dir``'s manifest (never through a symbolic link)."""
    path = out_dir / MANIFEST
    if _is_link(path):
        path.unlink()
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_NONBLOCK", 0)  # a pipe put there must not block the run
    handle = os.open(path, flags, 0o644)
    with os.fdopen(handle, "a", encoding="utf-8", errors="surrogateescape") as file:
        file.write("".join(f"{name}\n" for name in file_names))


def foreign_names(out_dir: Path | None) -> set[str]:
    """The entries of ``out_dir`` that gradcampp did not write, casefolded (rule 2).

    Every entry (file, link, folder, pipe) not listed in the manifest and not one of the run's
    own hidden files. None or a missing folder: nothing.
    """
    if out_dir is None:
        return set()
    try:
        entries = os.listdir(out_dir)
    except OSError:
        return set()
    ours = {name.casefold() for name in manifest_names(out_dir)}
    return {
        name.casefold()
        for name in entries
        if name.casefold() not in ours
        and name not in (MANIFEST, RUN_FILE)
        and not is_temporary_name(name)
    }


def claim_folder(out_dir: Path, name: str, purpose: str) -> Path:
    """The folder ``out_dir / name`` for gradcampp's ``purpose``, made if absent (rule 4).

    It must be absent or a real folder that an earlier run made (listed in the manifest); it is
    listed before it is made.

    Raises:
        OutputDirError: when a link, a file or a folder gradcampp did not make stands there.
    """
    folder = check_folder(out_dir, name, purpose)
    add_to_manifest(out_dir, [name])
    folder.mkdir(exist_ok=True)
    return folder


def check_folder(out_dir: Path, name: str, purpose: str) -> Path:
    """``claim_folder``'s checks alone: ``out_dir / name``, where nothing is written yet.

    Raises:
        OutputDirError: when a link, a file or a folder gradcampp did not make stands there.
    """
    folder = out_dir / name
    shown = _shown(folder)
    if _is_link(folder):
        raise OutputDirError(
            f"{shown} is a symbolic link; gradcampp writes {purpose} only into a real folder "
            "of --out, never through a link (remove the link or choose another --out)"
        )
    if folder.exists() or _is_link(folder):
        if not folder.is_dir():
            raise OutputDirError(
                f"{shown} is not a folder; gradcampp writes {purpose} there (remove it or choose "
                "another --out)"
            )
        if name not in manifest_names(out_dir):
            raise OutputDirError(
                f"{shown} is a folder gradcampp did not make (it is not in {MANIFEST}); its files "
                "are left alone: move it or choose another --out"
            )
    return folder


def prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` if needed and check that files can be created in it (rule 1).

    Raises:
        OutputDirError: saying why not.
    """
    shown = _shown(out_dir)
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise OutputDirError(f"--out {shown} is a file, not a directory")
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputDirError(
            f"--out {shown} cannot be created: a part of that path is a file"
        ) from None
    except OSError as error:
        raise OutputDirError(
            f"--out {shown} cannot be created: {error.strerror or error}"
        ) from None
    try:
        handle, probe = tempfile.mkstemp(prefix=".tmp-", dir=out_dir)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputDirError(f"--out {shown} is not writable: {error.strerror or error}") from None
