"""Open a local path or an fsspec URL for reading, decompressing .gz and .zst, and tell a truncated stream apart.

Local paths are opened directly; anything with ``://`` goes through `fsspec` (``gs://``, ``s3://``,
``memory://``, ``file://``; the protocol's own package, e.g. gcsfs, must be installed). A path
that cannot be opened is a `UserError` naming it. A compressed stream that ends before its end
of frame raises `TruncatedStream` from the line iterator, so a reader can say which line it
reached instead of silently treating the rest of the file as missing (zstandard's own stream
reader ends quietly on a truncated frame).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from datarater.errors import UserError

_CHUNK = 1 << 18  # 256 KiB read at a time: a stream's buffers stay small when many files are open
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class TruncatedStream(Exception):
    """A gzip or zstandard stream that ends in the middle (the bytes up to there were delivered).

    ``partial_line``: whether an incomplete line stood at the cut (`iter_lines` sets it): that
    line is lost; whatever the file held after the cut is not in it, so it cannot be counted."""

    partial_line: bool = False


def is_url(path: str) -> bool:
    return "://" in str(path)


def compression_of(path: str) -> str:
    """``"gzip"``, ``"zstd"`` or ``""`` from the file name."""
    name = str(path).lower()
    return "gzip" if name.endswith(".gz") else "zstd" if name.endswith(".zst") else ""


@contextmanager
def open_raw(path: str) -> Iterator[BinaryIO]:
    """The file's bytes, unopened by any decompressor; `UserError` if it cannot be opened."""
    try:
        if is_url(path):
            import fsspec

            with fsspec.open(path, "rb") as f:
                yield f
        else:
            with open(path, "rb") as f:
                yield f
    except FileNotFoundError:
        raise UserError(f"{path}: does not exist (or is not reachable)") from None
    except ImportError as e:
        raise UserError(f"{path}: no filesystem for this URL ({e}); install the package fsspec names") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot be opened: {e}") from None


def _zlib_gzip():
    return zlib.decompressobj(16 + zlib.MAX_WBITS)


def _zstd():
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()


def _frames(raw: BinaryIO, kind: str) -> Iterator[bytes]:
    """Decompress concatenated gzip members or zstandard frames, chunk by chunk, so that a stream
    cut short still delivers everything before the cut, then raises `TruncatedStream`."""
    new = _zlib_gzip if kind == "gzip" else _zstd
    errors: tuple[type[BaseException], ...] = (zlib.error,)
    if kind == "zstd":
        import zstandard

        errors = (zstandard.ZstdError,)
    d = new()
    pending, fresh = b"", True  # fresh: nothing fed to d yet
    while True:
        data = pending or raw.read(_CHUNK)
        pending = b""
        if not data:
            break
        fresh = False
        try:
            out = d.decompress(data)
        except errors as e:
            raise TruncatedStream(f"{kind} stream is corrupt ({e})") from None
        if out:
            yield out
        if d.eof:  # this member / frame is complete; another may follow
            pending = d.unused_data
            d, fresh = new(), True
    if not fresh:
        raise TruncatedStream(f"{kind} stream ends before its end-of-stream marker")


def _check_magic(raw: BinaryIO, path: str, kind: str) -> bytes:
    head = raw.read(4)
    magic = _GZIP_MAGIC if kind == "gzip" else _ZSTD_MAGIC
    if head and not head.startswith(magic):
        ext = ".gz" if kind == "gzip" else ".zst"
        raise UserError(f"{path}: is not a {kind} file (its name ends in {ext} but it has no {kind} header)")
    return head


class _Prefixed:
    """A raw stream with some bytes already read put back in front."""

    def __init__(self, head: bytes, raw: BinaryIO):
        self.head, self.raw = head, raw

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.raw.read(n)
        if 0 <= n <= len(self.head):
            out, self.head = self.head[:n], self.head[n:]
            return out
        out, self.head = self.head, b""
        return out + self.raw.read(-1 if n < 0 else n - len(out))


def iter_chunks(raw: BinaryIO, path: str) -> Iterator[bytes]:
    """Decompressed chunks of ``raw`` by ``path``'s suffix; `TruncatedStream` on a broken stream."""
    kind = compression_of(path)
    if not kind:
        while data := raw.read(_CHUNK):
            yield data
        return
    head = _check_magic(raw, path, kind)
    stream = _Prefixed(head, raw)
    yield from _frames(stream, kind)


def iter_lines(path: str) -> Iterator[bytes]:
    """The file's lines (each ending in ``\\n`` but perhaps the last), decompressed.

    Raises `TruncatedStream` after the last complete line of a broken compressed stream (the
    partial line is not delivered), `UserError` if the file cannot be opened or read.
    """
    with open_raw(path) as raw:
        rest = b""
        try:
            for chunk in iter_chunks(raw, path):
                data = rest + chunk
                start = 0
                while (end := data.find(b"\n", start)) >= 0:
                    yield data[start : end + 1]
                    start = end + 1
                rest = data[start:]
        except OSError as e:
            raise UserError(f"{path}: cannot be read: {e}") from None
        except TruncatedStream as e:
            e.partial_line = bool(rest)
            raise
        if rest:
            yield rest


def read_all(path: str) -> bytes:
    """The whole decompressed file (for one-document formats such as .txt)."""
    with open_raw(path) as raw:
        try:
            return b"".join(iter_chunks(raw, path))
        except OSError as e:
            raise UserError(f"{path}: cannot be read: {e}") from None
