"""JSON text to Python values, strictly: duplicate keys are found, huge numbers do not sink a file.

orjson is fast but keeps the last of two equal keys without a word, and refuses a whole document
for one number beyond float range (``1e400``). :func:`parse_json` keeps orjson's speed on the
common path and falls back to the standard library only where that matters:

* Duplicate keys: without them, every key of the text reappears in orjson's compact output, so
  counting ``:`` in both is a cheap proof of their absence (see :func:`_may_repeat_keys`). Only
  when the counts differ (a duplicate) is the text parsed again, slowly, to find which object
  repeats which key. Objects with a repeated key are marked, and :func:`duplicate_key_path` names them,
  so the resource holding one is rejected as ambiguous and its neighbours are not.
* Out-of-range numbers: the text is parsed again by the standard library, which reads them as
  infinity; the mapper then rejects the one resource whose value it is.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

DUPLICATES_MARK = "\x00duplicate keys"  # cannot be a FHIR key: JSON keys from files never hold NUL


class JsonProblem(ValueError):
    """Text that is not one JSON value; ``kind`` groups rejects, ``str()`` is the detail."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def parse_json(raw: bytes) -> tuple[Any, bool]:
    """The value of ``raw``, and whether some object in it repeats a key.

    Objects that repeat a key carry :data:`DUPLICATES_MARK` (see :func:`duplicate_key_path`).
    Raises :class:`JsonProblem` for text that is not JSON.

    >>> parse_json(b'{"a": 1, "b": [1e400]}')
    ({'a': 1, 'b': [inf]}, False)
    >>> value, repeats = parse_json(b'{"resourceType": "X", "v": {"id": 1, "id": 2}}')
    >>> repeats, duplicate_key_path(value)
    (True, 'v: key "id" appears 2 times')
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "infinity" not in str(exc):
            raise JsonProblem("malformed JSON", _malformed_detail(raw, exc)) from None
        return _parse_slowly(raw)
    if _may_repeat_keys(raw, value):
        return _parse_slowly(raw)
    return value, False


def _may_repeat_keys(raw: bytes, value: Any) -> bool:
    """False when the text's keys all reached ``value``, as far as one cheap count can tell.

    Each ``:`` of the text is a key separator or a character inside a string, and orjson's output
    writes both back; a key dropped as a repeat takes its separator with it, so a repeat shows
    as fewer ``:`` in the output. The one way to hide it is a text that also writes exactly as
    many colons inside strings as ``\\u003a`` escapes (which the output writes as ``:``): no
    exporter does, and looking for such escapes would cost a second pass over every file.
    """
    if not isinstance(value, (dict, list)):
        return False
    return _colons(raw) != _colons(orjson.dumps(value))


_NUMPY_COUNT_BYTES = 1 << 16  # below this, bytes.count is faster than numpy's set-up


def _colons(data: bytes) -> int:
    # bytes.count of one character is a plain byte loop; numpy's comparison is vectorised and
    # about three times faster on the megabyte documents that Bundles are.
    if len(data) < _NUMPY_COUNT_BYTES:
        return data.count(b":")
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == _COLON))


_COLON = ord(":")


def _parse_slowly(raw: bytes) -> tuple[Any, bool]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # orjson reports this first; kept for completeness
        raise JsonProblem("invalid UTF-8", f"byte {exc.start} is not UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_marking_hook, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise JsonProblem("malformed JSON", str(exc)) from None
    return value, duplicate_key_path(value) is not None


def parse_json_documents(raw: bytes) -> list[Any] | None:
    """Several JSON documents in a row (two exports joined, a BOM between them), or None.

    None unless ``raw`` is at least two complete documents separated only by whitespace and
    byte-order marks; duplicate keys are marked as by :func:`parse_json`.

    >>> parse_json_documents(b'{"a": 1}\\n\\xef\\xbb\\xbf{"b": 2}')
    [{'a': 1}, {'b': 2}]
    >>> parse_json_documents(b'{"a": 1} x') is None
    True
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    decoder = json.JSONDecoder(object_pairs_hook=_marking_hook, parse_constant=_refuse_constant)
    values: list[Any] = []
    index, size = 0, len(text)
    while True:
        while index < size and (text[index].isspace() or text[index] == "\ufeff"):
            index += 1
        if index >= size:
            break
        try:
            value, index = decoder.raw_decode(text, index)
        except (ValueError, RecursionError):
            return None
        values.append(value)
    return values if len(values) > 1 else None


def _marking_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        _mark(result, pairs)
    return result


def _mark(result: dict[str, Any], pairs: list[tuple[str, Any]]) -> None:
    counts: dict[str, int] = {}
    for key, _ in pairs:
        counts[key] = counts.get(key, 0) + 1
    result[DUPLICATES_MARK] = sorted((k, n) for k, n in counts.items() if n > 1)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (NaN and Infinity are not JSON)")


def duplicate_key_path(value: Any, path: str = "") -> str | None:
    """Where the first repeated key of ``value`` is, as ``path: key "k" appears n times``; else None."""
    if isinstance(value, dict):
        marked = value.get(DUPLICATES_MARK)
        if marked:
            key, count = marked[0]
            return f'{path or "(top level)"}: key "{key}" appears {count} times'
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                found = duplicate_key_path(item, f"{path}.{key}" if path else key)
                if found:
                    return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, (dict, list)):
                found = duplicate_key_path(item, f"{path}[{index}]")
                if found:
                    return found
    return None


def _malformed_detail(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as utf8_error:
        raise JsonProblem(
            "invalid UTF-8",
            f"byte {utf8_error.start} is not UTF-8 ({raw[utf8_error.start:utf8_error.start + 1]!r})",
        ) from None
    hint = " (NaN and Infinity are not JSON numbers)" if ("NaN" in text or "Infinity" in text) else ""
    return f"{exc}{hint}"
