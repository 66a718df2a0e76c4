"""Reading records out of one FHIR input file, one at a time, whatever shape the file has.

What a file holds is decided by its content, never by its name alone:

* **Lines** (Bulk FHIR ndjson): every non-blank line is one JSON value. A file is read this way
  when its first line is a complete JSON value (so ndjson saved as ``.json`` is read right), or
  when its name says ndjson. Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r``; a byte-order mark
  at the start of any line (two exports joined) is dropped; a line longer than
  ``max_line_bytes`` is rejected by its length and reading goes on.
* **A document** (a Bundle file, pretty-printed or not): the whole file is one JSON value, or
  several in a row (two exports joined). A file of exactly one line is a document too. Its size
  is capped by ``max_document_bytes``.

A value is a resource, a Bundle, or a JSON array of either. Bundle entries are read in order;
an entry that is itself a Bundle (a batch-response of searchsets) is read in place, depth
first. A transaction entry with ``request.method`` DELETE yields a *deletion* instead of a
resource; the finalize step removes what it deleted. Compression and UTF-16/32 are undone by
:mod:`ehrfm.ingest.byte_streams`; duplicate JSON keys are found by :mod:`ehrfm.ingest.json_values`.

Nothing that cannot be read disappears: each unreadable piece becomes a :class:`Record` with an
``error`` (kind, detail), and each piece that holds nothing to map with a ``skipped`` reason, so
that read = written + skipped + rejected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ehrfm.ingest.byte_streams import (
    CHUNK_BYTES,
    LFS_POINTER_PREFIX,
    Line,
    UnsupportedFile,
    open_decoded,
    split_lines,
    strip_bom,
)
from ehrfm.ingest.discovery import FHIR_NAME, InputError, discover_files, discover_inputs
from ehrfm.ingest.json_values import (
    DUPLICATES_MARK,
    JsonProblem,
    duplicate_key_path,
    parse_json,
    parse_json_documents,
)
from ehrfm.ingest.references import BundleIndex

__all__ = ["InputError", "Record", "discover_files", "discover_inputs", "location_text", "read_records",
           "is_ndjson", "WHOLE_FILE"]

# A record's position: for a document, the entry's index counted depth first over the whole file
# (0 for a bare resource); for a line, LINE_FLAG | line << ENTRY_BITS | (entry + 1 inside a
# Bundle or array on that line, else 0). The encoding needs no file name to be read back.
LINE_FLAG = 1 << 60
ENTRY_BITS = 24
_ENTRY_MASK = (1 << ENTRY_BITS) - 1
WHOLE_FILE = -1
MAX_BUNDLE_DEPTH = 8  # Bundles inside Bundles deeper than this are refused, not recursed into

DEFAULT_MAX_LINE_BYTES = 64 << 20
DEFAULT_MAX_DOCUMENT_BYTES = 2 << 30


def location_text(position: int) -> str:
    """Where a record sits, for people: ``line 12``, ``line 3, Bundle entry 4``, ``entry 7``.

    >>> location_text(line_position(12)), location_text(line_position(3, 4)), location_text(7)
    ('line 12', 'line 3, Bundle entry 4', 'entry 7')
    >>> location_text(WHOLE_FILE)
    'whole file'
    """
    if position == WHOLE_FILE:
        return "whole file"
    if position & LINE_FLAG:
        line, rest = (position ^ LINE_FLAG) >> ENTRY_BITS, position & _ENTRY_MASK
        return f"line {line}" if rest == 0 else f"line {line}, Bundle entry {rest - 1}"
    return f"entry {position}"


def line_position(line: int, entry: int | None = None) -> int:
    """The position of ``line`` (1-based), or of entry ``entry`` of the Bundle on that line."""
    return LINE_FLAG | (line << ENTRY_BITS) | (0 if entry is None else min(entry + 1, _ENTRY_MASK))


def is_ndjson(path: Path) -> bool:
    """Whether the name says one resource per line (``.ndjson``, ``.jsonl``, compressed or not)."""
    found = FHIR_NAME.search(path.name)
    return found is not None and found.group(1).lower() in ("ndjson", "jsonl")


@dataclass(slots=True)
class Record:
    """One resource, one unreadable piece, or one piece with nothing to map, and where it was.

    ``position`` identifies the record within its file (see :func:`location_text`). Exactly one
    of ``resource``, ``error`` (kind, detail) and ``skipped`` (resource type, reason) is set.
    ``identity`` is the (resourceType, id) an error is about, when known; ``deleted`` the
    (resourceType, id) a transaction DELETE removes.
    """

    position: int
    resource: dict[str, Any] | None
    bundle: BundleIndex
    error: tuple[str, str] | None = None
    excerpt: str | None = None
    identity: tuple[str, str | None] | None = None
    skipped: tuple[str, str] | None = None
    deleted: tuple[str, str] | None = None


_EMPTY_BUNDLE = BundleIndex.empty()
_SPECIAL_METHODS = ("DELETE", "PATCH")


def _error(position: int, kind: str, detail: str, excerpt: bytes | None = None,
           identity: tuple[str, str | None] | None = None) -> Record:
    text = excerpt[:200].decode("utf-8", errors="replace") if excerpt else None
    return Record(position, None, _EMPTY_BUNDLE, (kind, detail), text, identity)


def read_records(path: Path, *, replace_bad_utf8: bool = False,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> Iterator[Record]:
    """Yield every record of one file; never raises for bad content or an unreadable file."""
    reader = _FileReader(path, replace_bad_utf8, max_line_bytes, max_document_bytes)
    yield from reader.records()


class _FileReader:
    def __init__(self, path: Path, replace_bad_utf8: bool, max_line_bytes: int,
                 max_document_bytes: int) -> None:
        self.path = path
        self.replace_bad_utf8 = replace_bad_utf8
        self.max_line_bytes = max_line_bytes
        self.max_document_bytes = max_document_bytes
        self.entry_counter = 0  # document mode: entries numbered depth first over the file
        self.repeats = False  # the value being read repeats a key somewhere (objects are marked)
        self.lines_read = 0

    # -- the file as a whole -----------------------------------------------------------------
    def records(self) -> Iterator[Record]:
        try:
            yield from self._records()
        except UnsupportedFile as exc:
            yield _error(WHOLE_FILE, "unsupported file", str(exc))
        except OSError as exc:
            yield self._os_error(exc)
        except (EOFError, ValueError, RuntimeError) as exc:  # zlib, lzma, zstd stream errors
            yield self._corrupt(exc)
        except Exception as exc:  # zstandard.ZstdError and other decoders' own errors
            if type(exc).__module__.startswith("zstandard"):
                yield self._corrupt(exc)
            else:
                raise

    def _os_error(self, exc: OSError) -> Record:
        if exc.errno is not None:  # the system refused: permission, I/O error, a folder...
            return _error(WHOLE_FILE if not self.lines_read else line_position(self.lines_read + 1),
                          "unreadable file", f"{exc.strerror or exc} (errno {exc.errno}: "
                          f"{os.strerror(exc.errno) if exc.strerror is None else exc.strerror})")
        return self._corrupt(exc)  # BadGzipFile and friends carry no errno: the bytes are bad

    def _corrupt(self, exc: BaseException) -> Record:
        where = (f"reading stopped after line {self.lines_read}" if self.lines_read
                 else "the file could not be decompressed or decoded")
        position = line_position(self.lines_read + 1) if self.lines_read else WHOLE_FILE
        kind = "invalid text encoding" if isinstance(exc, UnicodeDecodeError) else "truncated or corrupt file"
        return _error(position, kind, f"{where}: {type(exc).__name__}: {exc}")

    def _records(self) -> Iterator[Record]:
        with open_decoded(self.path) as opened:
            head, complete = _read_head(opened.stream)
            text = strip_bom(head).lstrip()
            if not text:
                yield _error(WHOLE_FILE, "empty file", "the file holds no resources")
                return
            if text.startswith(LFS_POINTER_PREFIX):
                yield _error(WHOLE_FILE, "Git LFS pointer",
                             "the file is a Git LFS pointer, not the export itself: fetch its "
                             "content (git lfs pull) and ingest again", text)
                return
            mode, parsed = self._choose_mode(_first_line(text) if complete else None)
            if mode == "lines":
                lines = split_lines(_Prepended(head, opened.stream), self.max_line_bytes)
                first = _first_content_line(lines)
                assert first is not None  # the head holds content
                yield from self._line_records(first, parsed, lines)
                return
            # One document: the head read so far and the rest, within the size cap.
            raw = _read_capped(opened.stream, head, self.max_document_bytes + 1)
        # Its records as a list: the document is in memory already, and handing them out from
        # a list spares every record a resume of three nested generators.
        yield from list(self._document_records(raw))

    def _choose_mode(self, first_line: bytes | None) -> tuple[str, Any]:
        """``("lines", first line's parse, a JsonProblem, or None)`` or ``("document", None)``.

        ``first_line`` is None when the first line is longer than the head read to decide.
        """
        named_ndjson = is_ndjson(self.path)
        if first_line is None:
            return ("lines", None) if named_ndjson else ("document", None)
        if first_line in (b"{", b"["):  # pretty-printed JSON
            return "document", None
        try:
            return "lines", self._parse(first_line)
        except JsonProblem as problem:
            return ("lines", problem) if named_ndjson else ("document", None)

    # -- lines -------------------------------------------------------------------------------
    def _line_records(self, first: Line, parsed: Any, lines: Iterator[Line]) -> Iterator[Record]:
        self.lines_read = first.number
        if not is_ndjson(self.path) and not isinstance(parsed, JsonProblem) and first.data is not None:
            # A one-line file not named ndjson is one document: number its entries as such.
            second = _first_content_line(lines)
            if second is None:
                yield from self._value_records(parsed, None, head_bytes=first.data)
                return
            yield from self._one_line(first, parsed)
            yield from self._one_line(second, None)
            self.lines_read = second.number
        else:
            yield from self._one_line(first, parsed)
        for line in lines:
            self.lines_read = line.number
            if line.data is not None and not line.data.strip():
                continue
            yield from self._one_line(line, None)

    def _one_line(self, line: Line, parsed: Any) -> Iterator[Record]:
        position = line_position(line.number)
        if line.data is None:
            yield _error(position, "line too long",
                         f"the line is {line.length:,} bytes, over max_line_bytes={self.max_line_bytes:,}; "
                         "it was skipped and reading went on")
            return
        text = strip_bom(line.data)
        raw = text.strip()
        if parsed is None:
            try:
                parsed = self._parse(raw)
            except JsonProblem as problem:
                parsed = problem
        if isinstance(parsed, JsonProblem):
            yield _error(position, parsed.kind, str(parsed), text)
            return
        yield from self._value_records(parsed, line.number, head_bytes=text)

    # -- a whole document ----------------------------------------------------------------------
    def _document_records(self, raw: bytes) -> Iterator[Record]:
        if len(raw) > self.max_document_bytes:
            yield _error(WHOLE_FILE, "file too large",
                         f"the file is one JSON document larger than max_document_bytes="
                         f"{self.max_document_bytes:,} bytes; raise the limit or export it as ndjson")
            return
        raw = strip_bom(raw)
        try:
            values = [self._parse(raw)]
        except JsonProblem as problem:
            documents = parse_json_documents(raw) if problem.kind == "malformed JSON" else None
            if not documents:
                yield _error(WHOLE_FILE, problem.kind, str(problem), raw)
                return
            values = documents  # several documents in a row: two exports joined
            self.repeats = True  # parsed by the marking slow path: look for marks
        for value in values:
            yield from self._value_records(value, None, head_bytes=raw)

    # -- values, Bundles and entries -------------------------------------------------------------
    def _parse(self, raw: bytes) -> Any:
        try:
            value, self.repeats = parse_json(raw)
        except JsonProblem as problem:
            if problem.kind == "invalid UTF-8" and self.replace_bad_utf8:
                value, self.repeats = parse_json(raw.decode("utf-8", errors="replace").encode("utf-8"))
            else:
                raise
        return value

    def _next_entry(self, line: int | None) -> int:
        """Position of the next entry: the document's next, or the next within ``line``."""
        number = self.entry_counter
        self.entry_counter += 1
        return number if line is None else line_position(line, number)

    def _value_records(self, value: Any, line: int | None, *, head_bytes: bytes) -> Iterator[Record]:
        """A parsed top-level value: a resource, a Bundle, or an array of them."""
        if line is not None:
            self.entry_counter = 0  # entries are numbered within their line
        whole = WHOLE_FILE if line is None else line_position(line)
        if isinstance(value, list):
            if not value:
                yield Record(whole, None, _EMPTY_BUNDLE, skipped=("(empty)", "empty JSON array"))
            for index, item in enumerate(value):
                if isinstance(item, dict) and item.get("resourceType") == "Bundle":
                    yield from self._bundle_records(item, line, whole, _EMPTY_BUNDLE, 0)
                elif isinstance(item, dict):
                    yield self._resource_record(item, self._next_entry(line), _EMPTY_BUNDLE)
                else:
                    yield _error(self._next_entry(line), "not a JSON object",
                                 f"array element {index} is {_a(_json_type(item))}, not a resource")
        elif isinstance(value, dict) and value.get("resourceType") == "Bundle":
            yield from self._bundle_records(value, line, whole, _EMPTY_BUNDLE, 0)
        elif isinstance(value, dict):
            yield self._resource_record(value, self._next_entry(None) if line is None else whole,
                                        _EMPTY_BUNDLE)
        else:
            yield _error(whole, "not a JSON object",
                         f"the {'line' if line is not None else 'file'} holds {_a(_json_type(value))}, "
                         "not a resource", head_bytes)

    def _resource_record(self, resource: dict[str, Any], position: int, bundle: BundleIndex) -> Record:
        ambiguous = duplicate_key_path(resource) if self.repeats else None
        if ambiguous is not None:
            identity = (str(resource.get("resourceType") or "(unreadable)"), _text_or_none(resource.get("id")))
            return _error(position, "duplicate JSON key",
                          f"the resource is ambiguous, a key is given twice ({ambiguous}); "
                          "a JSON reader would silently keep one of them", identity=identity)
        return Record(position, resource, bundle)

    def _bundle_records(self, bundle: dict[str, Any], line: int | None, here: int,
                        outer: BundleIndex, depth: int) -> Iterator[Record]:
        """Entries of ``bundle``, depth first; ``here`` is the Bundle's own position."""
        identity = ("Bundle", _text_or_none(bundle.get("id")))
        ambiguous = duplicate_key_path({k: v for k, v in bundle.items() if k != "entry"}) if self.repeats else None
        if ambiguous is not None or _marked(bundle):
            yield Record(here, None, _EMPTY_BUNDLE, ("malformed Bundle",
                         f"the Bundle repeats a key ({ambiguous or 'entry'}), so what it holds is "
                         "ambiguous"), identity=identity)
            return
        if depth >= MAX_BUNDLE_DEPTH:
            yield Record(here, None, _EMPTY_BUNDLE, ("malformed Bundle",
                         f"Bundles nested more than {MAX_BUNDLE_DEPTH} deep"), identity=identity)
            return
        entries = bundle.get("entry")
        if entries is None or entries == []:
            yield Record(here, None, _EMPTY_BUNDLE, skipped=("Bundle", "empty Bundle"))
            return
        if not isinstance(entries, list):
            yield Record(here, None, _EMPTY_BUNDLE, ("malformed Bundle",
                         f"Bundle.entry is {_a(_json_type(entries))}, not an array of entries"),
                         identity=identity)
            return
        bundle_index = _index_of(entries, outer)
        repeats = self.repeats
        for index, item in enumerate(entries):
            # The common entry (a resource with an id, no DELETE or PATCH, no repeated key) takes
            # this short path; every other one is looked at closely by _entry_records.
            if not repeats and type(item) is dict:
                resource = item.get("resource")
                request = item.get("request")
                if (type(resource) is dict and "id" in resource and resource.get("resourceType") != "Bundle"
                        and (request is None or (type(request) is dict
                                                 and request.get("method") not in _SPECIAL_METHODS))):
                    number = self.entry_counter
                    self.entry_counter += 1
                    yield Record(number if line is None else line_position(line, number), resource, bundle_index)
                    continue
            yield from self._entry_records(item, index, line, bundle_index, depth)

    def _entry_records(self, item: Any, index: int, line: int | None, bundle: BundleIndex,
                       depth: int) -> Iterator[Record]:
        position = self._next_entry(line)
        if not isinstance(item, dict):
            yield _error(position, "bundle entry without resource",
                         f"entry {index} is {_a(_json_type(item))}, not an object")
            return
        if self.repeats and (_marked(item) or duplicate_key_path({k: v for k, v in item.items() if k != "resource"})):
            yield _error(position, "duplicate JSON key",
                         f"entry {index} repeats a key, so its resource or request is ambiguous")
            return
        request = item.get("request")
        method = request.get("method") if isinstance(request, dict) else None
        if method == "DELETE":
            yield self._deletion(request, position, index)
            return
        if method == "PATCH":
            yield _error(position, "unsupported request",
                         f"entry {index} is a PATCH; ehrfm reads whole resources and cannot apply patches",
                         identity=_identity_from_url(request.get("url")))
            return
        resource = item.get("resource")
        if not isinstance(resource, dict):
            yield _error(position, "bundle entry without resource", f"entry {index} has no resource object")
            return
        if resource.get("resourceType") == "Bundle":
            yield from self._bundle_records(resource, line, position, bundle, depth + 1)
            return
        if "id" not in resource and isinstance(item.get("fullUrl"), str):
            # Transaction entries may omit ids; the fullUrl is what references point at.
            resource = {**resource, "id": _id_from_full_url(item["fullUrl"])}
        yield self._resource_record(resource, position, bundle)

    def _deletion(self, request: dict[str, Any], position: int, index: int) -> Record:
        url = request.get("url")
        identity = _identity_from_url(url)
        if identity is None or identity[1] is None:
            return _error(position, "unsupported request",
                          f"entry {index} is a DELETE of {url!r}: only DELETE of Type/id can be applied "
                          "(a conditional DELETE names resources by a search ehrfm cannot run)",
                          identity=identity)
        return Record(position, None, _EMPTY_BUNDLE, skipped=(identity[0], "deleted (transaction DELETE)"),
                      deleted=(identity[0], identity[1]))


HEAD_BYTES = 1 << 20  # a first line longer than this is not looked at to choose the mode
_HEAD_CHUNK = 64 << 10


def _read_head(stream: Any) -> tuple[bytes, bool]:
    """The first bytes of ``stream``, through its first line with content (or ``HEAD_BYTES``),
    and whether that line is complete (ended, or the stream ended)."""
    read = getattr(stream, "read1", stream.read)
    head = b""
    while len(head) < HEAD_BYTES:
        chunk = read(_HEAD_CHUNK)
        if not chunk:
            return head, True
        head += chunk
        text = strip_bom(head).lstrip()
        if text and (b"\n" in text or b"\r" in text):
            return head, True
    return head, False


def _read_capped(stream: Any, head: bytes, limit: int) -> bytes:
    """``head`` and the rest of ``stream``, stopping once ``limit`` bytes are held."""
    parts, size = [head], len(head)
    while size < limit:
        chunk = stream.read(min(CHUNK_BYTES * 4, limit - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _first_line(text: bytes) -> bytes:
    """The first line of ``text`` (which starts with content), stripped."""
    ends = [i for i in (text.find(b"\n"), text.find(b"\r")) if i >= 0]
    return (text[:min(ends)] if ends else text).strip()


class _Prepended:
    """A stream that yields ``head`` first, then the rest of ``stream``."""

    def __init__(self, head: bytes, stream: Any) -> None:
        self._head = head
        self._read = getattr(stream, "read1", stream.read)

    def read1(self, size: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        return self._read(size)

    read = read1


def _first_content_line(lines: Iterator[Line]) -> Line | None:
    for line in lines:
        if line.data is None or strip_bom(line.data).strip():
            return line
    return None


def _index_of(entries: list[Any], outer: BundleIndex) -> BundleIndex:
    index: dict[str, tuple[str, str, dict[str, Any]]] = dict(outer.by_full_url) if outer.by_full_url else {}
    # Exact type checks: orjson makes plain dicts and strs, and this loop sees every entry.
    for entry in entries:
        if type(entry) is not dict:
            continue
        full_url = entry.get("fullUrl")
        if type(full_url) is not str:
            continue
        resource = entry.get("resource")
        if type(resource) is dict:
            logical_id = resource.get("id") or _id_from_full_url(full_url)
            index[full_url] = (str(resource.get("resourceType")), str(logical_id), resource)
    return BundleIndex(index)


def _marked(value: dict[str, Any]) -> bool:
    return DUPLICATES_MARK in value


def _identity_from_url(url: Any) -> tuple[str, str | None] | None:
    """``Patient/1`` (relative, absolute or with ``_history``) -> (type, id); a search -> (type, None)."""
    if not isinstance(url, str) or not url.strip():
        return None
    path, _, query = url.strip().partition("?")
    parts = [p for p in path.split("/") if p]
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    if query or len(parts) < 2:
        return (parts[-1], None) if parts else None
    return parts[-2], parts[-1]


def _id_from_full_url(full_url: str) -> str:
    if full_url.startswith("urn:"):
        return full_url.split(":", 2)[-1]
    return full_url.rstrip("/").rsplit("/", 1)[-1]


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun
