"""DocumentReference: the note's type as code, its decoded text in ``text_value``.

The first attachment with inline ``data`` and a text content type is decoded (base64, then the
charset named in ``contentType``, UTF-8 by default). ASCII whitespace inside ``data`` (MIME-style
line wrapping, valid FHIR) is removed before decoding; any other character outside the base64
alphabet, or bad padding, rejects the resource. Attachments that only carry a ``url`` keep
an event with an empty text: the note exists, its body lives elsewhere.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ehrfm.ingest.events import EventEmitter, Reject

NOTE_FALLBACK_CODE = "NOTE/unknown-type"
# ASCII whitespace (space, tab, LF, VT, FF, CR): what MIME line wrapping may put inside base64.
_STRIP_ASCII_WHITESPACE = str.maketrans("", "", " \t\n\v\f\r")


def map_document_reference(resource: dict[str, Any], out: EventEmitter) -> None:
    out.subject_from(resource)
    context = resource.get("context") if isinstance(resource.get("context"), dict) else {}
    out.encounter_from(context)
    found = out.concept(resource.get("type")) or (NOTE_FALLBACK_CODE, "Clinical note of unknown type")
    time = out.first_time(resource, "date")
    if time is None:
        time = out.first_time(context, "period.start")
    out.emit_at(found[0], time, text=_note_text(resource), description=found[1])


def _note_text(resource: dict[str, Any]) -> str | None:
    for index, content in enumerate(resource.get("content") or ()):
        attachment = content.get("attachment") if isinstance(content, dict) else None
        if not isinstance(attachment, dict) or "data" not in attachment:
            continue
        content_type = str(attachment.get("contentType") or "text/plain")
        if not content_type.startswith("text/"):
            continue
        where = f"DocumentReference.content[{index}].attachment.data"
        data = attachment["data"]
        if isinstance(data, str):
            data = data.translate(_STRIP_ASCII_WHITESPACE)
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise Reject("invalid value", f"{where} is not valid base64") from None
        charset = "utf-8"
        if "charset=" in content_type:
            charset = content_type.split("charset=", 1)[1].split(";")[0].strip() or "utf-8"
        try:
            return raw.decode(charset)
        except (LookupError, UnicodeDecodeError) as exc:
            raise Reject("invalid value", f"{where} does not decode as {charset}: {exc}") from None
    return None
