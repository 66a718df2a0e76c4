"""Finding FHIR input files and reading records out of them, one at a time.

Supported: Bundle files (``.json``, ``.json.gz``: transaction, collection, searchset, or a
single bare resource) and Bulk FHIR ndjson (``.ndjson``, ``.ndjson.gz``, ``.jsonl``: one
resource per line, any mix of types). ndjson is streamed line by line; a Bundle file is parsed
whole (it is one JSON document), which bounds memory by the largest single Bundle.

Nothing that cannot be read disappears: each unreadable piece becomes a :class:`Record` with an
``error`` (malformed JSON, invalid UTF-8, an empty or truncated file), so the counts add up.
"""

from __future__ import annotations

import glob
import gzip
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ehrfm.ingest.references import BundleIndex

NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
JSON_SUFFIXES = (".json", ".json.gz")
FHIR_SUFFIXES = NDJSON_SUFFIXES + JSON_SUFFIXES


# ndjson positions are line * _LINE_STRIDE (+ 1 + entry for a Bundle on that line); Bundle file
# positions are the entry index; a whole-file problem is WHOLE_FILE.
_LINE_STRIDE = 1_000_000
_UTF8_BOM = b"\xef\xbb\xbf"  # some Windows tools start files with it; it is not content
WHOLE_FILE = -1


def location_text(path: Path | str, position: int) -> str:
    """Where a record sits, for people: ``line 12``, ``line 3, Bundle entry 4``, ``entry 7``.

    >>> location_text("x.ndjson", 12_000_000), location_text("b.json", 7), location_text("b.json", -1)
    ('line 12', 'entry 7', 'whole file')
    """
    if position == WHOLE_FILE:
        return "whole file"
    if is_ndjson(Path(path)):
        line, rest = divmod(position, _LINE_STRIDE)
        return f"line {line}" if rest == 0 else f"line {line}, Bundle entry {rest - 1}"
    return f"entry {position}"


class InputError(ValueError):
    """An input path that names no readable FHIR file."""


@dataclass(slots=True)
class Record:
    """One resource (or one unreadable piece) with where it came from.

    ``position`` identifies the record within its file (see :func:`location_text`); ``resource``
    is None exactly when ``error`` says why.
    """

    position: int
    resource: dict[str, Any] | None
    bundle: BundleIndex
    error: tuple[str, str] | None = None  # (kind, detail)
    excerpt: str | None = None


def discover_files(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Every FHIR file named by ``inputs`` (files, directories searched recursively, globs).

    Sorted and de-duplicated, so runs are reproducible. Raises :class:`InputError` naming an
    input that matches nothing.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: set[Path] = set()
    for item in inputs:
        text = os.fspath(item)
        if any(ch in text for ch in "*?["):
            matches = [Path(p) for p in glob.glob(text, recursive=True)]
            files = [p for p in matches if p.is_file() and _is_fhir_file(p)]
            for directory in (p for p in matches if p.is_dir()):
                files.extend(_walk(directory))
        else:
            path = Path(text)
            if path.is_dir():
                files = _walk(path)
            elif path.is_file():
                files = [path]
            else:
                raise InputError(f"input {text!r} does not exist")
        if not files:
            raise InputError(f"input {text!r} holds no FHIR files (looked for {', '.join(FHIR_SUFFIXES)})")
        found.update(p.resolve() for p in files)
    return sorted(found)


def _walk(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and _is_fhir_file(p)]


def _is_fhir_file(path: Path) -> bool:
    return path.name.lower().endswith(FHIR_SUFFIXES)


def is_ndjson(path: Path) -> bool:
    return path.name.lower().endswith(NDJSON_SUFFIXES)


def read_records(path: Path, *, replace_bad_utf8: bool = False) -> Iterator[Record]:
    """Yield every record of one file; never raises for bad content."""
    if is_ndjson(path):
        yield from _ndjson_records(path, replace_bad_utf8)
    else:
        yield from _json_records(path, replace_bad_utf8)


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _parse(raw: bytes, replace_bad_utf8: bool) -> tuple[Any, tuple[str, str] | None]:
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as utf8_error:
            if replace_bad_utf8:
                return _parse(raw.decode("utf-8", errors="replace").encode("utf-8"), False)
            return None, ("invalid UTF-8",
                          f"byte {utf8_error.start} is not UTF-8 "
                          f"({raw[utf8_error.start:utf8_error.start + 1]!r})")
        hint = " (NaN and Infinity are not JSON numbers)" if ("NaN" in text or "Infinity" in text) else ""
        return None, ("malformed JSON", f"{exc}{hint}")


def _excerpt(raw: bytes) -> str:
    return raw[:200].decode("utf-8", errors="replace")


def _ndjson_records(path: Path, replace_bad_utf8: bool) -> Iterator[Record]:
    empty_bundle = BundleIndex.empty()
    line_no = 0
    seen_content = False
    try:
        with _open(path) as handle:
            for line_no, raw in enumerate(handle, start=1):
                if line_no == 1 and raw.startswith(_UTF8_BOM):
                    raw = raw[len(_UTF8_BOM):]
                if not raw.strip():
                    continue
                seen_content = True
                value, error = _parse(raw, replace_bad_utf8)
                if error is not None:
                    yield Record(line_no * _LINE_STRIDE, None, empty_bundle, error, _excerpt(raw))
                elif isinstance(value, dict) and value.get("resourceType") == "Bundle":
                    yield from _bundle_records(value, base=line_no * _LINE_STRIDE, offset=1)
                elif isinstance(value, dict):
                    yield Record(line_no * _LINE_STRIDE, value, empty_bundle)
                else:
                    yield Record(line_no * _LINE_STRIDE, None, empty_bundle,
                                 ("not a JSON object", f"line holds a {type(value).__name__}"), _excerpt(raw))
    except (EOFError, OSError, zlib.error) as exc:
        yield Record((line_no + 1) * _LINE_STRIDE, None, empty_bundle,
                     ("truncated or corrupt file", f"reading stopped after line {line_no}: {exc}"))
        return
    if not seen_content:
        yield Record(WHOLE_FILE, None, empty_bundle, ("empty file", "the file holds no resources"))


def _json_records(path: Path, replace_bad_utf8: bool) -> Iterator[Record]:
    empty_bundle = BundleIndex.empty()
    try:
        with _open(path) as handle:
            raw = handle.read()
    except (EOFError, OSError, zlib.error) as exc:
        yield Record(WHOLE_FILE, None, empty_bundle, ("truncated or corrupt file", f"{exc}"))
        return
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM):]
    if not raw.strip():
        yield Record(WHOLE_FILE, None, empty_bundle, ("empty file", "the file holds no resources"))
        return
    value, error = _parse(raw, replace_bad_utf8)
    if error is not None:
        yield Record(WHOLE_FILE, None, empty_bundle, error, _excerpt(raw))
    elif not isinstance(value, dict):
        yield Record(WHOLE_FILE, None, empty_bundle,
                     ("not a JSON object", f"file holds a {type(value).__name__}"), _excerpt(raw))
    elif value.get("resourceType") == "Bundle":
        yield from _bundle_records(value)
    else:
        yield Record(0, value, empty_bundle)


def _bundle_records(bundle: dict[str, Any], base: int = 0, offset: int = 0) -> Iterator[Record]:
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        entries = []
    index: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        full_url = entry.get("fullUrl")
        if isinstance(resource, dict) and isinstance(full_url, str):
            logical_id = resource.get("id") or _id_from_full_url(full_url)
            index[full_url] = (str(resource.get("resourceType")), str(logical_id), resource)
    bundle_index = BundleIndex(index)
    for position, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            yield Record(base + offset + position, None, bundle_index,
                         ("bundle entry without resource", f"entry {position} has no resource object"))
            continue
        if "id" not in resource and isinstance(entry.get("fullUrl"), str):
            # Transaction entries may omit ids; the fullUrl is what references point at.
            resource = {**resource, "id": _id_from_full_url(entry["fullUrl"])}
        yield Record(base + offset + position, resource, bundle_index)


def _id_from_full_url(full_url: str) -> str:
    if full_url.startswith("urn:"):
        return full_url.split(":", 2)[-1]
    return full_url.rstrip("/").rsplit("/", 1)[-1]
