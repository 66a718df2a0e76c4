"""Tokens that carry time: CEHR-style gaps between visits and birth-year buckets.

Gaps follow CEHR-BERT's buckets: whole weeks under four weeks (``INTERVAL/W0`` .. ``W3``),
months under a year (``INTERVAL/M1`` .. ``M11``), and one long-term token beyond
(``INTERVAL/LT``). The exact time of every token is in the ``time_days`` stream anyway; these
tokens let the sequence model see "how long since the last visit" as a word.

>>> import numpy as np
>>> gaps = np.array([1.5, 8.0, 27.9, 28.0, 200.0, 364.0, 365.0, 9000.0])
>>> [INTERVAL_TOKENS[i] for i in interval_bucket(gaps)]
['INTERVAL/W0', 'INTERVAL/W1', 'INTERVAL/W3', 'INTERVAL/M1', 'INTERVAL/M6', 'INTERVAL/M11',
 'INTERVAL/LT', 'INTERVAL/LT']
>>> birth_year_token(1983, 25), birth_year_token(None, 25)
('BIRTH_YEAR/1975', 'BIRTH_YEAR/unknown')
>>> birth_year_tokens(25)
['BIRTH_YEAR/unknown', 'BIRTH_YEAR/1875', 'BIRTH_YEAR/1900', 'BIRTH_YEAR/1925', 'BIRTH_YEAR/1950',
 'BIRTH_YEAR/1975', 'BIRTH_YEAR/2000', 'BIRTH_YEAR/2025']
"""

from __future__ import annotations

import numpy as np

INTERVAL_PREFIX = "INTERVAL"
INTERVAL_TOKENS: tuple[str, ...] = (
    *(f"{INTERVAL_PREFIX}/W{w}" for w in range(4)),
    *(f"{INTERVAL_PREFIX}/M{m}" for m in range(1, 12)),
    f"{INTERVAL_PREFIX}/LT",
)

BIRTH_YEAR_PREFIX = "BIRTH_YEAR"
BIRTH_YEAR_UNKNOWN = f"{BIRTH_YEAR_PREFIX}/unknown"
# Birth years are clamped into this range so the token set is fixed before seeing data: a
# vocabulary must not depend on whether the oldest train patient was born in 1899 or 1901.
BIRTH_YEAR_MIN = 1880
BIRTH_YEAR_MAX = 2030

# FHIR administrative-gender is a closed value set, so all four sex tokens are always present.
SEX_PREFIX = "GENDER"  # ingest emits GENDER/<female|male|other|unknown> as a static fact
SEX_TOKENS: tuple[str, ...] = tuple(f"{SEX_PREFIX}/{g}" for g in ("female", "male", "other", "unknown"))
SEX_UNKNOWN = f"{SEX_PREFIX}/unknown"


def interval_bucket(gap_days: np.ndarray) -> np.ndarray:
    """Index into ``INTERVAL_TOKENS`` for each gap in (fractional, non-negative) days."""
    days = np.floor(gap_days).astype(np.int64)
    months = np.clip(days // 30, 1, 11)
    return np.where(days < 28, days // 7, np.where(days < 365, 3 + months, len(INTERVAL_TOKENS) - 1))


def _bucket_starts(bucket_years: int) -> list[int]:
    if bucket_years < 1:
        raise ValueError(f"birth_year_bucket must be >= 1 year, got {bucket_years!r}")
    first = BIRTH_YEAR_MIN - BIRTH_YEAR_MIN % bucket_years
    return list(range(first, BIRTH_YEAR_MAX + 1, bucket_years))


def birth_year_tokens(bucket_years: int) -> list[str]:
    """All birth-year tokens for a bucket width, ``unknown`` first, then oldest to newest."""
    return [BIRTH_YEAR_UNKNOWN] + [f"{BIRTH_YEAR_PREFIX}/{y}" for y in _bucket_starts(bucket_years)]


def birth_year_token(year: int | None, bucket_years: int) -> str:
    """The ``BIRTH_YEAR/<start>`` token of one birth year (``None`` for unknown)."""
    if year is None:
        return BIRTH_YEAR_UNKNOWN
    starts = _bucket_starts(bucket_years)
    clamped = min(max(int(year), starts[0]), starts[-1])
    return f"{BIRTH_YEAR_PREFIX}/{clamped - clamped % bucket_years}"
