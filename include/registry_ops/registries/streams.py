"""Blob bytes in and out of adapters, always checked against their digest.

- :class:`BlobStream`: what ``open_blob`` returns. A read-only file over chunks (an HTTP body,
  a file), hashed as the caller reads; reaching the end with bytes that do not hash to the
  digest (or a size other than the one announced) raises Invalid, so corrupt content is never
  taken for good.
- :func:`spool`: what ``put_blob`` does first with its input (bytes, a file or an iterator of
  chunks): read it once into memory, or a temporary file beyond 8 MiB, hashing on the way, and
  refuse it (Invalid) before a single byte is uploaded if it does not match. The spooled copy is
  re-readable, so a retried upload sends the same bytes again.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from .base import BlobData, Invalid, RegistryError

CHUNK = 1024 * 1024
MEMORY_LIMIT = 8 * 1024 * 1024

Fail = Callable[[str, type[RegistryError]], RegistryError]


def chunks_of(data: BlobData, size: int = CHUNK) -> Iterator[bytes]:
    """Bytes, a file (anything with ``read``) or an iterable of byte chunks, as chunks."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for i in range(0, len(view), size):
            yield bytes(view[i : i + size])
        return
    read = getattr(data, "read", None)
    if read is not None:
        while chunk := read(size):
            yield chunk
        return
    for chunk in data:  # an iterable of chunks
        if chunk:
            yield bytes(chunk)


class BlobStream(io.RawIOBase):
    """A blob being read, verified against ``digest`` (and ``size``) when the end is reached."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        digest: str,
        size: int | None,
        fail: Fail,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.digest, self.size = digest, size
        self._chunks = iter(chunks)
        self._fail = fail
        self._on_close = on_close
        self._hash = hashlib.sha256()
        self._buf = memoryview(b"")
        self._read = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            if self._done:
                return 0
            try:
                self._buf = memoryview(next(self._chunks))
            except StopIteration:
                self._finish()
                return 0
        n = min(len(b), len(self._buf))
        piece = self._buf[:n]
        b[:n] = piece
        self._hash.update(piece)
        self._read += n
        self._buf = self._buf[n:]
        if self.size is not None and self._read > self.size:
            self._done = True
            raise self._fail(f"blob {self.digest}: more than the {self.size} bytes announced", Invalid)
        return n

    def _finish(self) -> None:
        self._done = True
        got = "sha256:" + self._hash.hexdigest()
        if got != self.digest:
            raise self._fail(f"blob {self.digest}: content does not match its digest (got {got})", Invalid)
        if self.size is not None and self._read != self.size:
            raise self._fail(f"blob {self.digest}: {self._read} bytes, {self.size} announced", Invalid)

    def close(self) -> None:
        if not self.closed and self._on_close is not None:
            self._on_close()
        super().close()


class Spooled:
    """Verified blob content ready to upload: ``digest``, ``size`` and a re-readable ``file``."""

    def __init__(self, file: IO[bytes], digest: str, size: int, in_memory: bool) -> None:
        self.file, self.digest, self.size, self.in_memory = file, digest, size, in_memory

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        self.file.seek(0)
        return chunks_of(self.file, size)

    def body(self) -> bytes | IO[bytes]:
        """What an HTTP client should send: bytes when small, the (rewound) file otherwise."""
        self.file.seek(0)
        return self.file.getvalue() if isinstance(self.file, io.BytesIO) else self.file  # type: ignore[union-attr]

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Spooled:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def spool(data: BlobData, digest: str, size: int | None, fail: Fail) -> Spooled:
    """Read ``data`` once, hashing; Invalid (nothing uploaded yet) unless it matches."""
    hasher = hashlib.sha256()
    memory: io.BytesIO | None = io.BytesIO()
    disk: IO[bytes] | None = None
    total = 0
    for chunk in chunks_of(data):
        hasher.update(chunk)
        total += len(chunk)
        if memory is not None and total > MEMORY_LIMIT:
            disk = tempfile.TemporaryFile(prefix="registry-ops-blob-")  # noqa: SIM115 - owned by Spooled
            disk.write(memory.getvalue())
            memory = None
        (memory if memory is not None else disk).write(chunk)  # type: ignore[union-attr]
    file: IO[bytes] = memory if memory is not None else disk  # type: ignore[assignment]
    got = "sha256:" + hasher.hexdigest()
    if got != digest:
        file.close()
        raise fail(f"blob {digest}: the content to store hashes to {got}; nothing was stored", Invalid)
    if size is not None and size != total:
        file.close()
        raise fail(f"blob {digest}: {total} bytes given, {size} announced; nothing was stored", Invalid)
    file.seek(0)
    return Spooled(file, digest, total, memory is not None)
