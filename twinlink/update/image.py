"""Image verification that works chunk by chunk, and a resumable staging file for delivery.

:class:`ImageVerifier` is a streaming SHA-256 with a byte count bounded by the signed
manifest: a chunk that would make the image longer than announced is refused as it arrives (an
endless image cannot fill the disk), and :meth:`ImageVerifier.finish` refuses a short image or
a wrong digest. :class:`ImageStaging` writes in-order chunks to a staging file through a
verifier; after a restart it re-hashes what is already on disk and continues from there.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from ..fileio import atomic_write, read_regular
from .errors import ChunkGap, DigestMismatch, ImageSizeMismatch
from .manifest import MAX_MANIFEST, Manifest

READ_CHUNK = 1 << 16


class ImageVerifier:
    """Streaming check of one image against a manifest's digest and size."""

    def __init__(self, digest: bytes, size: int) -> None:
        self._digest, self._size = digest, size
        self._sha = hashlib.sha256()
        self.received = 0

    @classmethod
    def for_manifest(cls, m: Manifest) -> ImageVerifier:
        return cls(m.digest, m.size)

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Add the next chunk. Raises :class:`ImageSizeMismatch` (and keeps nothing of the
        chunk) if the image would exceed the manifest's size."""
        self.check_fits(len(chunk))
        self._sha.update(chunk)
        self.received += len(chunk)

    def check_fits(self, n: int) -> None:
        """Raise :class:`ImageSizeMismatch` if ``n`` more bytes exceed the manifest's size."""
        if self.received + n > self._size:
            raise ImageSizeMismatch(f"image is longer than the manifest's {self._size} bytes")

    def finish(self) -> None:
        """Raise :class:`ImageSizeMismatch` for a short image, :class:`DigestMismatch` for a
        wrong one; return only if the image is exactly the manifest's."""
        if self.received != self._size:
            raise ImageSizeMismatch(
                f"image is {self.received} bytes, the manifest says {self._size}")
        if not hmac.compare_digest(self._sha.digest(), self._digest):
            raise DigestMismatch("image SHA-256 does not match the manifest's digest")


def _open_regular(path: str | os.PathLike[str]) -> int:
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(22, "not a regular file", os.fspath(path))
    return fd


def verify_file(path: str | os.PathLike[str], m: Manifest) -> None:
    """Check the image file at ``path`` against ``m``, reading it in chunks; reads at most one
    chunk past the announced size. Raises the :class:`ImageVerifier` errors or OSError."""
    v = ImageVerifier.for_manifest(m)
    fd = _open_regular(path)
    try:
        while True:
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                break
            v.update(chunk)
    finally:
        os.close(fd)
    v.finish()


def manifest_beside(path: str | os.PathLike[str]) -> Path:
    """Where :class:`ImageStaging` keeps the manifest of the image it stages at ``path``."""
    p = Path(path)
    return p.with_name(p.name + ".manifest")


def staged_manifest(path: str | os.PathLike[str]) -> bytes | None:
    """The manifest staged beside ``path`` (not authenticated), or None if there is none."""
    try:
        raw, _ = read_regular(manifest_beside(path), MAX_MANIFEST)
    except OSError:
        return None
    return raw


def discard_staged(path: str | os.PathLike[str]) -> None:
    """Delete a staging file and its manifest (either may be missing)."""
    for p in (Path(path), manifest_beside(path)):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


class ImageStaging:
    """One image arriving in order, chunk by chunk, into ``path``; resumable.

    The manifest is kept beside it (``<path>.manifest``): a staging file belongs to one
    manifest, and a different manifest starts over. Give it only an authenticated manifest —
    its size bounds what is written.
    """

    def __init__(self, path: str | os.PathLike[str], manifest: Manifest) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._sidecar = manifest_beside(self.path)
        self._verifier = ImageVerifier.for_manifest(manifest)
        resumable = self._same_manifest() and self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                           | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            if resumable:
                self._rehash()
            else:
                os.ftruncate(self._fd, 0)
                atomic_write(self._sidecar, manifest.raw, 0o600)
        except BaseException:
            os.close(self._fd)
            raise

    def _same_manifest(self) -> bool:
        return staged_manifest(self.path) == self.manifest.raw

    def _rehash(self) -> None:
        """Hash what an earlier run left; anything past the announced size is cut off."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        left = self.manifest.size
        while left:
            chunk = os.read(self._fd, min(READ_CHUNK, left))
            if not chunk:
                break
            self._verifier.update(chunk)
            left -= len(chunk)
        os.ftruncate(self._fd, self._verifier.received)

    @property
    def offset(self) -> int:
        """How many bytes are staged: where the next chunk must start."""
        return self._verifier.received

    def write(self, offset: int, chunk: bytes | bytearray | memoryview) -> bool:
        """Stage the chunk at ``offset``. Returns False for a chunk already staged (a
        duplicate), stages only the new tail of an overlapping one. Raises :class:`ChunkGap`
        if ``offset`` is past :attr:`offset`, :class:`ImageSizeMismatch` past the size."""
        end = offset + len(chunk)
        if offset > self.offset:
            raise ChunkGap(f"chunk at {offset} but only {self.offset} bytes are staged")
        if end <= self.offset:
            return False
        data = memoryview(chunk)[self.offset - offset:]
        self._verifier.check_fits(len(data))  # refuse before anything reaches the disk
        os.lseek(self._fd, self.offset, os.SEEK_SET)
        try:
            rest = data
            while rest:
                rest = rest[os.write(self._fd, rest):]
        except OSError:
            os.ftruncate(self._fd, self.offset)  # the hash and the file stay in step
            raise
        self._verifier.update(data)
        return True

    def sync(self) -> None:
        """Make the staged bytes durable (a resume after a power cut then starts from them)."""
        os.fsync(self._fd)

    def finish(self) -> Path:
        """fsync and check the whole image; returns the staged file's path."""
        self.sync()
        self._verifier.finish()
        return self.path

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        """Close and delete the staging file and its manifest."""
        self.close()
        discard_staged(self.path)

    def __enter__(self) -> ImageStaging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
