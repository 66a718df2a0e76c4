"""Durations in task files: a whole number and one unit, parsed strictly.

Units are fixed lengths only (``s``, ``min``, ``h``, ``d``, ``w``): months and years vary in
length, so a task says ``365d`` rather than ``1y`` and means exactly that.

>>> parse_duration("30d")
datetime.timedelta(days=30)
>>> format_duration(parse_duration("90min"))
'90min'
>>> parse_duration("1y")
Traceback (most recent call last):
...
ValueError: 'y' is not a fixed length: write days instead, e.g. '365d'
"""

from __future__ import annotations

import datetime as dt
import re

_UNITS: dict[str, dt.timedelta] = {
    "s": dt.timedelta(seconds=1),
    "min": dt.timedelta(minutes=1),
    "h": dt.timedelta(hours=1),
    "d": dt.timedelta(days=1),
    "w": dt.timedelta(weeks=1),
}
# Units people often try that are either ambiguous ("m": minutes or months?) or not fixed.
_REFUSED = {"m": "write 'min' for minutes or days for months, e.g. '30d'",
            "mo": "write days instead, e.g. '30d'",
            "y": "write days instead, e.g. '365d'", "yr": "write days instead, e.g. '365d'"}
_PATTERN = re.compile(r"(\d+)([a-z]+)")
MAX_DURATION = dt.timedelta(days=200 * 366)  # longer than a life: a typo, and beyond what dates can hold
UNITS_HELP = "a whole number and one unit (s, min, h, d, w), e.g. '1s', '24h', '30d', '365d'"


def parse_duration(text: str) -> dt.timedelta:
    """``'24h'`` -> ``timedelta(hours=24)``; anything else raises ``ValueError`` saying why."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string, {UNITS_HELP}")
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: expected {UNITS_HELP}")
    number, unit = match.groups()
    if unit in _REFUSED:
        kind = "ambiguous" if unit == "m" else "not a fixed length"
        raise ValueError(f"{unit!r} is {kind}: {_REFUSED[unit]}")
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r}: expected {UNITS_HELP}")
    if len(number) > 12 or int(number) * _UNITS[unit].total_seconds() > MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r} is longer than any clinical window (at most {MAX_DURATION.days}d)")
    return int(number) * _UNITS[unit]


def format_duration(value: dt.timedelta) -> str:
    """The shortest exact spelling of ``value`` in the units ``parse_duration`` reads."""
    micros = value // dt.timedelta(microseconds=1)
    if micros < 0 or micros % 1_000_000:
        raise ValueError(f"{value!r} is not a whole, non-negative number of seconds")
    seconds = micros // 1_000_000
    for unit in ("d", "h", "min"):  # days rather than weeks: task windows read as days
        size = int(_UNITS[unit].total_seconds())
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
