"""Bytes of an input file as UTF-8, whatever its compression and encoding, and lines with a cap.

Compression is recognised by the file's first bytes, never by its name: exports arrive as
``.gz``, ``.bz2``, ``.xz``, ``.zst`` or with no extension at all, and a ``.json`` that is gzip
inside is still read. UTF-16 and UTF-32 files (some Windows tools write them) are recognised by
their byte-order mark, or by the zero bytes of ASCII JSON text without one, and transcoded to
UTF-8 on the fly. :func:`split_lines` ends lines at ``\\n``, ``\\r\\n`` and a lone ``\\r`` (old Mac
exports) and never holds more than ``max_line_bytes`` of one line in memory: a longer line is
reported by its length and skipped, and reading goes on with the next one.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import lzma
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1 << 20
SNIFF_BYTES = 512
UTF8_BOM = b"\xef\xbb\xbf"
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip"),
)
_NEWLINE = re.compile(rb"\r\n|\r|\n")


class UnsupportedFile(Exception):
    """A file ehrfm recognises but cannot read (a zip archive, zstd without ``zstandard``)."""


def compression_of(head: bytes) -> str | None:
    """The compression a file's first bytes announce, or None for plain bytes.

    >>> compression_of(b"\\x1f\\x8b\\x08"), compression_of(b"BZh91AY"), compression_of(b'{"a"')
    ('gzip', 'bzip2', None)
    """
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def text_encoding_of(head: bytes) -> str | None:
    """``utf-16``/``utf-32`` (with their byte order) when the bytes are not UTF-8 JSON, else None.

    >>> text_encoding_of('{"a": 1}'.encode("utf-16")), text_encoding_of(b'{"a": 1}')
    ('utf-16', None)
    >>> text_encoding_of('{"a"'.encode("utf-16-le"))
    'utf-16-le'
    """
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    # JSON text starts with ASCII; in UTF-16/32 without a BOM that shows as zero bytes around it.
    if len(head) >= 4:
        if head[1:4] == b"\x00\x00\x00" and head[0]:
            return "utf-32-le"
        if head[:3] == b"\x00\x00\x00" and head[3]:
            return "utf-32-be"
        if head[1] == 0 and head[3] == 0 and head[0] and head[2]:
            return "utf-16-le"
        if head[0] == 0 and head[2] == 0 and head[1] and head[3]:
            return "utf-16-be"
    return None


class _Transcoder:
    """A read-only byte stream of UTF-8, decoded incrementally from another encoding."""

    def __init__(self, raw: BinaryIO, encoding: str) -> None:
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")

    def read(self, size: int = -1) -> bytes:
        while True:
            chunk = self._raw.read(CHUNK_BYTES if size < 0 else max(size, 4))
            text = self._decoder.decode(chunk, final=not chunk)
            if text or not chunk:
                return text.encode("utf-8")

    def close(self) -> None:
        self._raw.close()


@dataclass
class OpenedFile:
    """A file opened for reading: ``stream`` yields UTF-8 bytes, the rest says what it was."""

    stream: BinaryIO
    compression: str | None
    encoding: str | None

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_decoded(path: Path) -> OpenedFile:
    """Open ``path`` as a stream of UTF-8 bytes, undoing compression and UTF-16/32.

    Raises OSError (with ``errno``) when the file cannot be opened, :class:`UnsupportedFile`
    for formats ehrfm knows but does not read.
    """
    with open(path, "rb") as probe:
        head = probe.read(8)
    compression = compression_of(head)
    stream = _decompressed(path, compression)
    try:
        first = stream.peek(SNIFF_BYTES) if hasattr(stream, "peek") else b""
        encoding = text_encoding_of(first[:SNIFF_BYTES])
    except Exception:
        stream.close()
        raise
    if encoding is not None:
        return OpenedFile(_Transcoder(stream, encoding), compression, encoding)  # type: ignore[arg-type]
    return OpenedFile(stream, compression, None)


def _decompressed(path: Path, compression: str | None):  # noqa: ANN202 - several stream types
    import io

    if compression is None:
        return open(path, "rb")
    # GzipFile, BZ2File and LZMAFile are buffered already (peek, read1); a second buffer
    # around them only copies every byte once more.
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "bzip2":
        return bz2.open(path, "rb")
    if compression == "xz":
        return lzma.open(path, "rb")
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:
            raise UnsupportedFile("the file is zstd-compressed and the zstandard package is not "
                                  "installed (pip install zstandard)") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"),
                                                                            closefd=True))
    raise UnsupportedFile(f"the file is a {compression} archive, not a FHIR file: extract it first")


def sniff(path: Path) -> bytes:
    """The first decoded bytes of ``path`` (at most :data:`SNIFF_BYTES`), BOM and blanks removed."""
    with open_decoded(path) as opened:
        head = opened.stream.read(SNIFF_BYTES)
    return strip_bom(head).lstrip()


def strip_bom(data: bytes) -> bytes:
    return data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data


@dataclass(slots=True)
class Line:
    """One line of a file: its 1-based number and bytes, or only its length when over the cap."""

    number: int
    data: bytes | None
    length: int


def split_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[Line]:
    """Every line of ``stream`` (``\\n``, ``\\r\\n`` or ``\\r`` ended); blank ones included.

    Memory holds at most one chunk plus ``max_line_bytes``; a longer line comes back with
    ``data=None`` and its length.
    """
    number = 0
    pending: list[bytes] = []
    pending_size = 0
    overflow = False  # the line being read is already longer than the cap: discard its bytes
    carry = b""
    # read1: at most one read of the underlying stream, so that the lines before a truncated
    # gzip member's end come out before its EOFError does.
    read = getattr(stream, "read1", stream.read)
    while True:
        data = read(CHUNK_BYTES)
        chunk, carry = carry + data, b""
        if not chunk:
            break
        if data and chunk.endswith(b"\r"):  # maybe the first half of \r\n: decide with the next chunk
            chunk, carry = chunk[:-1], b"\r"
        parts = _NEWLINE.split(chunk) if b"\r" in chunk else chunk.split(b"\n")
        for part in parts[:-1]:
            number += 1
            size = pending_size + len(part)
            if overflow or size > max_line_bytes:
                yield Line(number, None, size)
            elif pending:
                pending.append(part)
                yield Line(number, b"".join(pending), size)
            else:
                yield Line(number, part, size)
            pending, pending_size, overflow = [], 0, False
        tail = parts[-1]
        pending_size += len(tail)
        if overflow or pending_size > max_line_bytes:
            overflow, pending = True, []
        elif tail:
            pending.append(tail)
        if not data:
            break
    if pending_size:  # the last line had no line ending
        yield Line(number + 1, None if overflow else b"".join(pending), pending_size)
