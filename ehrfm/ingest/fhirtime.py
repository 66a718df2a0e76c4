"""FHIR dates and instants to microseconds since 1970-01-01 UTC.

The rule for values coarser than an instant (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``): such a value
names a span of time. A *start* (``birthDate``, ``period.start``) takes the first microsecond of
the span; every other field takes the last one, so no event is ever placed earlier than it could
have been known, which is the safe side for prediction cut-offs. Instants with an offset are
converted to UTC; an instant without an offset (not valid FHIR, but seen in the wild) is read as
UTC. No calendar year is assumed plausible or implausible: de-identified data shifted into the
22nd century is kept as it is. An instant whose UTC conversion leaves the years 0001..9999
(``0001-01-01T00:00:00+14:00``, ``9999-12-31T23:00:00-05:00``) is not a representable time and
raises :class:`FhirTimeError` like any other unreadable value.

>>> to_utc_micros("2020-05-01T10:00:00+02:00")
1588320000000000
>>> to_utc_micros("2020", start=True) == to_utc_micros("2020-01-01T00:00:00Z")
True
>>> to_utc_micros("2020-02") == to_utc_micros("2020-02-29T23:59:59.999999Z")
True
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)
DAY_US = 86_400_000_000
# How far before a birth an event (or a death) may be and still count as not before it:
# birthDate is a date in no zone, event times carry zones.
BIRTH_SLACK_US = DAY_US
# The first and last microsecond a datetime can hold (years 0001..9999), relative to the epoch.
_MIN_US = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _ONE_MICROSECOND
_MAX_US = (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC) - _EPOCH) // _ONE_MICROSECOND
_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
# Python's parser takes at most 6 fractional digits; FHIR allows more.
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


class FhirTimeError(ValueError):
    """A FHIR date or dateTime that cannot be read."""


def to_utc_micros(value: object, *, start: bool = False) -> int:
    """Microseconds since the Unix epoch, UTC, for a FHIR date / dateTime / instant string.

    ``start`` picks the first instant of a partial date instead of the last (see module doc).
    Raises :class:`FhirTimeError` naming the bad value.
    """
    if not isinstance(value, str):
        raise FhirTimeError(f"expected a date string, got {type(value).__name__} {value!r}")
    if len(value) > 10:
        return _instant_micros(value)
    match = _PARTIAL_DATE.match(value)
    if match is None:
        raise FhirTimeError(f"not a FHIR date: {value!r}")
    year = int(match.group(1))
    month_text, day_text = match.group(2), match.group(3)
    try:
        if day_text is not None:
            first_day = datetime(year, int(month_text), int(day_text), tzinfo=UTC)
            span_days = 1
        elif month_text is not None:
            month = int(month_text)
            first_day = datetime(year, month, 1, tzinfo=UTC)
            span_days = calendar.monthrange(year, month)[1]
        else:
            first_day = datetime(year, 1, 1, tzinfo=UTC)
            span_days = 366 if calendar.isleap(year) else 365
    except ValueError as exc:
        raise FhirTimeError(f"not a valid calendar date: {value!r} ({exc})") from None
    first_us = (first_day - _EPOCH) // _ONE_MICROSECOND
    return first_us if start else first_us + span_days * DAY_US - 1


def _instant_micros(value: str) -> int:
    text = value
    if "." in text:
        text = _LONG_FRACTION.sub(r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise FhirTimeError(f"not a FHIR dateTime: {value!r}") from None
    if "T" not in text:
        raise FhirTimeError(f"not a FHIR dateTime: {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    micros = (parsed - _EPOCH) // _ONE_MICROSECOND
    if not _MIN_US <= micros <= _MAX_US:
        raise FhirTimeError(f"{value!r} falls outside the years 0001..9999 once converted to UTC")
    return micros
