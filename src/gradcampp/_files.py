"""Writing a result file atomically, never through a symbolic link.

``write_atomically(path, write)`` lets ``write`` fill a new temporary file in ``path``'s directory
(created exclusively, so no existing file or link is ever opened), then renames it onto ``path``.
A rename replaces the directory entry itself: a symbolic link that stood at ``path`` is replaced by
the new file, and whatever it pointed to is left untouched. A reader never sees half a file, and
a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Create or replace the file ``path`` with what ``write(file)`` writes into a binary file.

    Raises:
        OSError: when the directory is not writable, the disk is full, the name is too long, or
            ``path`` is an existing directory.
    """
    target = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.chmod(temporary, 0o644 & ~_umask())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """``write_atomically`` for bytes already in memory."""

    def write(file: BinaryIO) -> None:
        file.write(data)

    write_atomically(path, write)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """``write_atomically`` for UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    """The process's umask, read without changing it (Linux); 0o022 where it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
