"""Crash-safe file writes and careful reads of private files.

:func:`atomic_write` is the one way twinlink replaces a file that must survive a power cut
(keys, bundles, sequence state): the new content goes to a temp file in the same directory,
is fsynced, renamed over the target with :func:`os.replace` and the directory is fsynced, so a
reader sees the old file or the new one, never a torn mix. :func:`read_regular` refuses
anything but a regular file (a FIFO would block forever, a device could be endless).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]

#: Largest key, bundle or state file twinlink reads (they are a few KiB at most).
MAX_SMALL_FILE = 1 << 20


def fsync_dir(directory: PathLike) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(os.fspath(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: PathLike, data: bytes | str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably; the file has ``mode`` from birth.

    Raises :class:`OSError` on failure; the old content is then untouched (a leftover temp file
    is removed when possible).
    """
    p = Path(path)
    raw = data.encode() if isinstance(data, str) else bytes(data)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # the umask may have narrowed it; never widened
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(p.parent if str(p.parent) else ".")


def read_regular(path: PathLike, max_size: int = MAX_SMALL_FILE) -> tuple[bytes, os.stat_result]:
    """Read a regular file of at most ``max_size`` bytes; return (content, its stat).

    Opened non-blocking so a FIFO cannot hang the caller; raises :class:`OSError` (``EINVAL``
    with a message) for anything that is not a regular file or is too large.
    """
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(22, "not a regular file", os.fspath(path))
        if st.st_size > max_size:
            raise OSError(27, f"file is larger than {max_size} bytes", os.fspath(path))
        chunks = []
        left = max_size + 1
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_size:
            raise OSError(27, f"file is larger than {max_size} bytes", os.fspath(path))
        return data, st
    finally:
        os.close(fd)


def create_private(path: PathLike) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (for databases that SQLite
    would otherwise create with the umask's mode); tighten an existing file we own to 0600."""
    p = os.fspath(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        return
    except FileExistsError:
        pass
    st = os.stat(p)
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.getuid():
        os.chmod(p, stat.S_IMODE(st.st_mode) & 0o700)
