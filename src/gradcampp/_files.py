"""Writing a result file atomically, never through a symbolic link; reading one safely.

``write_atomically(path, write)`` lets ``write`` fill a new temporary file in ``path``'s directory
(created exclusively, so no existing file or link is ever opened), then renames it onto ``path``.
A rename replaces the directory entry itself: a symbolic link that stood at ``path`` is replaced by
the new file, and whatever it pointed to is left untouched. A reader never sees half a file, and
a failed write leaves no temporary file behind.

``read_regular(path, max_bytes)`` reads a file only when it is a regular file of at most
``max_bytes``: a FIFO would block the reader forever and a device such as ``/dev/zero`` never
ends, so the type and the size are checked on the opened descriptor before a byte is read.
"""

from __future__ import annotations

import os
import stat
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


class NotRegularFileError(OSError):
    """A path that is not a regular file (a pipe, socket, device or directory), or too large."""


def check_regular(path: str | os.PathLike[str], what: str = "") -> os.stat_result:
    """``os.stat(path)`` when ``path`` is a regular file (links followed).

    Raises:
        FileNotFoundError: when nothing is at ``path``.
        NotRegularFileError: for a directory, pipe, socket or device, naming ``what`` (default:
            the path).
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a pipe, socket or device"
        raise NotRegularFileError(f"{what or os.fsdecode(path)} is not a regular file ({kind})")
    return info


def read_regular(path: str | os.PathLike[str], max_bytes: int, what: str = "") -> bytes:
    """The bytes of the regular file ``path``, if it holds at most ``max_bytes``.

    The file is opened without blocking (``O_NONBLOCK``: opening a FIFO does not wait for a
    writer), then its type and size are checked on the descriptor before anything is read.

    Raises:
        FileNotFoundError: when nothing is at ``path``.
        NotRegularFileError: for anything but a regular file, or one larger than ``max_bytes``.
        OSError: when it cannot be opened or read.
    """
    shown = what or os.fsdecode(path)
    handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a pipe, socket or device"
            raise NotRegularFileError(f"{shown} is not a regular file ({kind})")
        if info.st_size > max_bytes:
            raise NotRegularFileError(
                f"{shown} holds {info.st_size:,} bytes, more than the {max_bytes:,} expected"
            )
        chunks = []
        remaining = max_bytes + 1  # a file that grows while it is read is cut, then refused
        while remaining > 0:
            chunk = os.read(handle, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(handle)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise NotRegularFileError(f"{shown} grew past the {max_bytes:,} bytes expected")
    return data
