"""Turn a token sequence back into something a person can read: what the model saw, and when.

:func:`decode_frame` gives one row per token (token, role, time, age, visit, description);
:func:`decode` prints a timeline with one line per event, its value bin shown as the range of
source values it stands for. Descriptions come from the MEDS ``metadata/codes.parquet``.

>>> import datetime as dt, polars as pl
>>> from ehrfm.tokenize import EventTokenizer
>>> events = pl.DataFrame({
...     "subject_id": [7, 7, 7],
...     "time": [None, dt.datetime(1990, 1, 1), dt.datetime(2021, 3, 4, 8, 30)],
...     "code": ["GENDER/male", "MEDS_BIRTH", "LOINC/8302-2"],
...     "numeric_value": [None, None, 180.0],
...     "unit": [None, None, "cm"],
... })
>>> tok = EventTokenizer(min_count=1, min_values_for_bins=1).fit(events)
>>> codes = pl.DataFrame({"code": ["LOINC/8302-2"], "description": ["Body Height"]})
>>> print(decode(tok, tok.transform(events).row(0, named=True), codes=codes))
subject 7: 7 tokens (0 truncated)
prefix: [CLS] GENDER/male BIRTH_YEAR/1990
1990-01-01 00:00:00  age   0.00  visit 0  MEDS_BIRTH
2021-03-04 08:30:00  age  31.17  visit 0  INTERVAL/LT LOINC/8302-2 (Body Height) VALUE/Q01 [<= 180 cm]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from meds import code_metadata_filepath

from ehrfm.schema import CODE, SUBJECT_ID, UNIT

from .sequence_schema import (
    AGE_YEARS,
    INPUT_IDS,
    LENGTH,
    MICROSECONDS_PER_DAY,
    PREDICTION_TIME,
    TIME_DAYS,
    TOKEN_TYPE,
    TRUNCATED_TOKENS,
    VISIT_INDEX,
    TokenType,
)
from .sequences import FUSED_SEPARATOR, TEXT_PREFIX
from .value_bins import EDGES, VALUE_PREFIX

if TYPE_CHECKING:
    from .tokenizer import EventTokenizer

DESCRIPTION = "description"
POSITION = "position"
TOKEN = "token"
TIME = "time"

CodesLike = str | Path | pl.DataFrame | None


def load_code_descriptions(codes: CodesLike) -> dict[str, str]:
    """``code -> description`` from a MEDS dataset dir, a ``codes.parquet`` path, or a frame."""
    if codes is None:
        return {}
    if isinstance(codes, (str, Path)):
        path = Path(codes)
        if path.is_dir():
            path = path / code_metadata_filepath
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no code metadata file (expected a MEDS dir or its {code_metadata_filepath})"
            )
        codes = pl.read_parquet(path, columns=[CODE, DESCRIPTION])
    if CODE not in codes.columns or DESCRIPTION not in codes.columns:
        raise ValueError(f"code metadata needs columns {CODE!r} and {DESCRIPTION!r}; found {codes.columns}")
    frame = codes.select(CODE, DESCRIPTION).drop_nulls()
    return dict(zip(frame[CODE].to_list(), frame[DESCRIPTION].to_list()))


def _one_sequence(sequence: Any) -> dict[str, Any]:
    if isinstance(sequence, pl.DataFrame):
        if sequence.height != 1:
            raise ValueError(
                f"decode takes one sequence; got a frame with {sequence.height} rows (select one row)"
            )
        sequence = sequence.row(0, named=True)
    if not isinstance(sequence, Mapping):
        raise TypeError(
            f"decode takes a sequence row (dict or one-row DataFrame), got {type(sequence).__name__}"
        )
    missing = [c for c in (INPUT_IDS, TIME_DAYS) if c not in sequence]
    if missing:
        raise ValueError(
            f"sequence row lacks column(s) {missing}; pass a row of EventTokenizer.transform output"
        )
    return dict(sequence)


def _source_code(token: str) -> str:
    """The code a token speaks about: ``TEXT/SNOMED/1`` -> ``SNOMED/1``, ``X|Q03`` -> ``X``."""
    if token.startswith(f"{TEXT_PREFIX}/"):
        return token[len(TEXT_PREFIX) + 1 :]
    return token.split(FUSED_SEPARATOR, 1)[0]


def decode_frame(tokenizer: EventTokenizer, sequence: Any, codes: CodesLike = None) -> pl.DataFrame:
    """One row per token: ``position``, ``token``, ``token_type`` (name), ``time`` (UTC),
    ``age_years``, ``visit_index``, ``description`` (null when unknown)."""
    row = _one_sequence(sequence)
    ids = list(row[INPUT_IDS])
    tokens = tokenizer.convert_ids_to_tokens(ids)
    descriptions = load_code_descriptions(codes)
    n = len(ids)
    types = list(row.get(TOKEN_TYPE) or [None] * n)
    time_days = list(row[TIME_DAYS])
    frame = pl.DataFrame(
        {
            POSITION: list(range(n)),
            TOKEN: tokens,
            TOKEN_TYPE: [TokenType(t).name if t is not None else None for t in types],
            TIME_DAYS: [float(t) for t in time_days],
            AGE_YEARS: [float(a) for a in (row.get(AGE_YEARS) or [math.nan] * n)],
            VISIT_INDEX: list(row.get(VISIT_INDEX) or [0] * n),
            DESCRIPTION: [descriptions.get(_source_code(t)) for t in tokens],
        },
        schema_overrides={TIME_DAYS: pl.Float64, AGE_YEARS: pl.Float64, VISIT_INDEX: pl.Int32},
    )
    # days -> microseconds is exact after rounding: a float64 holds microsecond epochs exactly.
    micros = (pl.col(TIME_DAYS) * MICROSECONDS_PER_DAY).round(0)
    time = (pl.when(pl.col(TIME_DAYS).is_nan()).then(None).otherwise(micros)
            .cast(pl.Int64).cast(pl.Datetime("us")))
    return frame.with_columns(time.alias(TIME)).select(POSITION, TOKEN, TOKEN_TYPE, TIME, AGE_YEARS,
                                                       VISIT_INDEX, DESCRIPTION)


def _bin_ranges(tokenizer: EventTokenizer) -> dict[str, list[tuple[str | None, list[float]]]]:
    bins = tokenizer.value_bins_.filter(pl.col(EDGES).list.len() > 0)
    out: dict[str, list[tuple[str | None, list[float]]]] = {}
    for code, unit, edges in bins.select(CODE, UNIT, EDGES).iter_rows():
        out.setdefault(code, []).append((unit, list(edges)))
    return out


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _describe_bin(bin_number: int, ranges: list[tuple[str | None, list[float]]]) -> str:
    """Bin ``b`` holds values v with edges[b-2] < v <= edges[b-1] (see value_bins)."""
    parts = []
    for unit, edges in ranges:
        lo = edges[bin_number - 2] if bin_number >= 2 else None
        hi = edges[bin_number - 1] if bin_number - 1 < len(edges) else None
        if lo is not None and hi is not None:
            text = f"({_fmt(lo)}, {_fmt(hi)}]"
        elif hi is not None:
            text = f"<= {_fmt(hi)}"
        elif lo is not None:
            text = f"> {_fmt(lo)}"
        else:
            continue
        parts.append(f"{text} {unit}" if unit else text)
    return " or ".join(parts)


_LINE_STARTERS = {TokenType.INTERVAL.name, TokenType.VISIT_START.name, TokenType.VISIT_END.name,
                  TokenType.EVENT.name}


def decode(tokenizer: EventTokenizer, sequence: Any, codes: CodesLike = None) -> str:
    """A readable timeline of one sequence: the prefix, then one line per event.

    Each event line shows its UTC time, age, visit index, the interval token before it (if
    any), its code with description, and its value bin as the source range it covers. This is
    for people inspecting data, one sequence at a time, so it loops in Python.
    """
    row = _one_sequence(sequence)
    frame = decode_frame(tokenizer, row, codes)
    ranges = _bin_ranges(tokenizer)
    head = f"subject {row.get(SUBJECT_ID)}"
    if row.get(PREDICTION_TIME) is not None:
        head += f" before {row[PREDICTION_TIME]}"
    length = row.get(LENGTH, frame.height)
    lines = [f"{head}: {length} tokens ({row.get(TRUNCATED_TOKENS, 0)} truncated)"]
    prefix: list[str] = []
    current: list[str] | None = None
    last_code: str | None = None
    pending_interval: str | None = None
    for token, role, time, age, visit, description in frame.select(
        TOKEN, TOKEN_TYPE, TIME, AGE_YEARS, VISIT_INDEX, DESCRIPTION
    ).iter_rows():
        shown = f"{token} ({description})" if description else token
        if role in (TokenType.SPECIAL.name, TokenType.DEMOGRAPHIC.name, TokenType.TASK.name):
            prefix.append(shown)
            continue
        if role in _LINE_STARTERS and not (role != TokenType.INTERVAL.name and pending_interval):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S") if time is not None else "time unknown"
            age_text = f"{age:6.2f}" if not math.isnan(age) else "   n/a"
            current = [f"{stamp}  age {age_text}  visit {visit}"]
            lines.append("")  # filled below
        if role == TokenType.INTERVAL.name:
            pending_interval = token
            current.append(token)  # type: ignore[union-attr]
        else:
            pending_interval = None
            if role == TokenType.VALUE.name and token.startswith(f"{VALUE_PREFIX}/Q") and last_code in ranges:
                shown = f"{token} [{_describe_bin(int(token.rsplit('Q', 1)[1]), ranges[last_code])}]"
            elif FUSED_SEPARATOR in token and _source_code(token) in ranges:
                shown += f" [{_describe_bin(int(token.rsplit('Q', 1)[1]), ranges[_source_code(token)])}]"
            if current is None:
                current = ["time unknown"]
                lines.append("")
            current.append(shown)
        if role in (TokenType.EVENT.name, TokenType.VISIT_START.name, TokenType.VISIT_END.name):
            last_code = _source_code(token)
        lines[-1] = "  ".join(current[:1]) + "  " + " ".join(current[1:])  # type: ignore[index]
    lines.insert(1, "prefix: " + " ".join(prefix))
    return "\n".join(lines)
