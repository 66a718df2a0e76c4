"""Build token sequences and their aligned streams from prepared MEDS events, whole frames at once.

This module holds the rules shared by ``fit`` (which counts the tokens these rules produce) and
``transform`` (which maps them to ids), so the two can never disagree about what a token is.
Everything runs over all subjects of a shard at once: Polars turns codes, values and text into
token ids, and numpy lays the tokens out (ordering, visit numbering, truncation, offsets) with
array arithmetic. There is no per-event or per-subject Python loop. (A first version did the
layout with Polars joins, window functions and sorts of the token frame; it was about six
times slower on the Synthea shard.)

One timed event becomes up to four tokens, in this order:

==========  ======================================================  ==================
position    token                                                   when
==========  ======================================================  ==================
0           ``INTERVAL/W0`` .. ``INTERVAL/LT``                      the event opens a visit (``VISIT_START/*``) or lies outside every
                                                                    started encounter, and at least ``min_interval_days`` passed
                                                                    since the subject's previous event
1           the code (``VISIT_START/AMB``, ``LOINC/8302-2``, ...)   always
2           ``VALUE/Qnn`` or ``VALUE/ANY``                          the event has a finite ``numeric_value``
3           ``TEXT/<text_value>``                                   short categorical text of a non-note resource
==========  ======================================================  ==================

Events at one timestamp are ordered birth, visit starts, other events, visit ends, death, and
otherwise keep their input order, so a visit's tokens sit between its start and end tokens.

``visit_index`` is the ordinal of the event's encounter once that encounter has started (so
overlapping encounters keep their own numbers), else the number of visits started so far. It
depends only on earlier events, so a cutoff never changes the streams of the events it keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from ehrfm.schema import (
    BIRTH_CODE,
    CODE,
    DEATH_CODE,
    ENCOUNTER_ID,
    NUMERIC_VALUE,
    RESOURCE_TYPE,
    SUBJECT_ID,
    TEXT_VALUE,
    TIME,
    UNIT,
    VISIT_END_PREFIX,
    VISIT_START_PREFIX,
)

from .distinct import distinct_index
from .errors import EventsFormatError
from .events import ROW
from .sequence_schema import (
    AGE_YEARS,
    DAYS_PER_YEAR,
    INPUT_IDS,
    LENGTH,
    MICROSECONDS_PER_DAY,
    PREDICTION_TIME,
    SEQUENCE_SCHEMA,
    TIME_DAYS,
    TOKEN_TYPE,
    TRUNCATED_TOKENS,
    VISIT_INDEX,
    TokenType,
    days_since_epoch,
)
from .time_tokens import INTERVAL_TOKENS, SEX_PREFIX, SEX_UNKNOWN, birth_year_token, interval_bucket
from .value_bins import BinTable, finite_value_expr, value_token_ids
from .vocabulary import CLS_TOKEN, TOKEN, Vocabulary

SEQ = "_seq"  # one sequence: a subject, or a (subject, prediction_time) pair under a cutoff
TEXT_PREFIX = "TEXT"
FUSED_SEPARATOR = "|"
VALUE_MODES = ("separate", "fused")


@dataclass(frozen=True)
class SequenceRules:
    """The parameters of the rules above (a subset of ``EventTokenizer``'s parameters)."""

    num_value_bins: int
    value_tokens: str
    max_text_length: int
    note_resource_types: tuple[str, ...]
    min_interval_days: float
    birth_year_bucket: int

    def __post_init__(self) -> None:
        if self.value_tokens not in VALUE_MODES:
            raise ValueError(f"value_tokens must be one of {VALUE_MODES}, got {self.value_tokens!r}")
        if self.max_text_length < 0:
            raise ValueError(f"max_text_length must be >= 0, got {self.max_text_length!r}")
        if self.min_interval_days < 0:
            raise ValueError(f"min_interval_days must be >= 0, got {self.min_interval_days!r}")


def text_token_expr(rules: SequenceRules) -> pl.Expr:
    """``TEXT/<value>`` for short categorical text of non-note events, else null.

    Clinical notes (``DocumentReference`` by default) and any text longer than
    ``max_text_length`` characters are free text: as tokens they would be near-unique strings
    that only bloat the vocabulary, so they are left to the note-embedding path.
    """
    text = pl.col(TEXT_VALUE).str.strip_chars()
    is_note = pl.col(RESOURCE_TYPE).is_in(list(rules.note_resource_types)).fill_null(False)
    eligible = text.is_not_null() & (text.str.len_chars() > 0) & (text.str.len_chars() <= rules.max_text_length) & ~is_note
    return pl.when(eligible).then(pl.format(f"{TEXT_PREFIX}/{{}}", text)).otherwise(None)


def fused_token(code: str, bin_number: int) -> str:
    """The fused code+bin token, e.g. ``LOINC/8302-2|Q03``."""
    return f"{code}{FUSED_SEPARATOR}Q{bin_number:02d}"


def learnable_token_counts(events: pl.LazyFrame, bins: BinTable, rules: SequenceRules) -> dict[str, int]:
    """Train occurrences of every token the vocabulary may learn (codes, text, fused codes).

    Static facts count as codes; their values are not tokenized. In fused mode the plain code
    is counted on every event too, as it is the fallback of a rare ``code|Qnn``.
    """
    timed = events.filter(pl.col(TIME).is_not_null())
    counted = [
        events.select(pl.col(CODE).alias(TOKEN)),
        timed.filter(pl.col(TEXT_VALUE).is_not_null()).select(text_token_expr(rules).alias(TOKEN)),
    ]
    # streaming: counting holds one batch of events at a time, whatever the train size
    counts = pl.concat(counted).drop_nulls(TOKEN).group_by(TOKEN).agg(pl.len().alias("n")).collect(engine="streaming")
    result = dict(zip(counts[TOKEN].to_list(), counts["n"].to_list()))
    if rules.value_tokens == "fused":
        valued = timed.filter(finite_value_expr()).select(CODE, UNIT, NUMERIC_VALUE).collect(engine="streaming")
        numbers = bins.assign(valued[CODE], valued[UNIT], valued[NUMERIC_VALUE])
        pairs = (
            pl.DataFrame({CODE: valued[CODE], "bin": numbers})
            .filter(pl.col("bin") > 0)
            .group_by(CODE, "bin")
            .agg(pl.len().alias("n"))
        )
        for code, number, n in pairs.iter_rows():  # distinct (code, bin) pairs, not events
            result[fused_token(code, number)] = n
    return result


def distinct_ids(distinct: pl.Series, vocab: Vocabulary) -> np.ndarray:
    """Ids of distinct token strings. A Python pass over *distinct* tokens (hundreds to a few
    thousand per shard), never over events: cheaper than any join at this size."""
    return np.fromiter((vocab.id_of(t) for t in distinct.to_list()), dtype=np.int32, count=len(distinct))


def token_ids(tokens: pl.Series, vocab: Vocabulary) -> np.ndarray:
    """Ids of a column of token strings, -1 where null."""
    distinct, index = distinct_index(tokens)
    out = np.full(len(index), -1, dtype=np.int32)
    present = index >= 0
    out[present] = distinct_ids(distinct, vocab)[index[present]]
    return out


def _event_order(seq: np.ndarray, time: np.ndarray, priority: np.ndarray, row: np.ndarray) -> np.ndarray | None:
    """Permutation sorting events by (sequence, time, priority, input row); None if already sorted.

    MEDS shards arrive sorted by subject and time, so usually only events sharing a timestamp
    need reordering by priority: a stable sort of one nearly sorted integer key does that
    (numpy's timsort is linear on sorted runs), far cheaper than a four-key lexsort.
    """
    if len(seq) < 2:
        return None
    ds, dt = np.diff(seq), np.diff(time)
    if ((ds > 0) | ((ds == 0) & (dt >= 0))).all():
        new_instant = np.ones(len(seq), dtype=np.int64)
        new_instant[1:] = (ds != 0) | (dt != 0)
        same = new_instant[1:] == 0
        if (np.diff(row)[same] > 0).all():  # input order ascends within each instant
            if (np.diff(priority)[same] >= 0).all():
                return None
            return np.argsort(np.cumsum(new_instant) * 8 + priority, kind="stable")
    return np.lexsort((row, priority, time, seq))


def _segments(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted sequence indices: each element's segment number and each segment's first index."""
    first = np.ones(len(seq), dtype=bool)
    first[1:] = seq[1:] != seq[:-1]
    return np.cumsum(first) - 1, np.flatnonzero(first)


def _list_column(values: np.ndarray, offsets: np.ndarray) -> pl.Series:
    return pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(values)))  # type: ignore[return-value]


def _prefix(
    static: pl.DataFrame, seq_values: np.ndarray, birth_year: np.ndarray, vocab: Vocabulary, rules: SequenceRules
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[CLS], sex, birth-year bucket, then the other static codes sorted and deduplicated.

    Returns parallel arrays (sequence index, position in the prefix, token id), one entry per
    prefix token. ``birth_year`` holds each sequence's birth year, or -1 when unknown.
    """
    n_seq = len(seq_values)
    codes, code_index = distinct_index(static[CODE])
    names = codes.to_list()
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(np.asarray(names, dtype=object), kind="stable")] = np.arange(len(names))
    is_sex = np.asarray([n.startswith(f"{SEX_PREFIX}/") for n in names], dtype=bool)
    ids = distinct_ids(codes, vocab)

    s_seq = np.searchsorted(seq_values, static[SEQ].to_numpy())
    s_code = code_index[np.lexsort((rank[code_index], s_seq))] if len(code_index) else code_index
    s_seq = np.sort(s_seq, kind="stable")
    fresh = np.ones(len(s_seq), dtype=bool)  # drop repeated (sequence, code) pairs
    fresh[1:] = (s_seq[1:] != s_seq[:-1]) | (s_code[1:] != s_code[:-1])
    s_seq, s_code = s_seq[fresh], s_code[fresh]

    sex_rows = np.flatnonzero(is_sex[s_code])
    sex_seqs, first = np.unique(s_seq[sex_rows], return_index=True)  # alphabetically first sex code
    chosen = np.zeros(len(s_seq), dtype=bool)
    chosen[sex_rows[first]] = True
    sex_id = np.full(n_seq, vocab.id_of(SEX_UNKNOWN), dtype=np.int32)
    sex_id[sex_seqs] = ids[s_code[chosen]]

    years = np.unique(birth_year)
    year_ids = np.asarray([vocab.id_of(birth_year_token(None if y < 0 else int(y), rules.birth_year_bucket)) for y in years], dtype=np.int32)
    birth_id = year_ids[np.searchsorted(years, birth_year)] if n_seq else np.zeros(0, dtype=np.int32)

    o_seq, o_code = s_seq[~chosen], s_code[~chosen]
    o_segment, o_first = _segments(o_seq)
    o_position = 3 + np.arange(len(o_seq)) - o_first[o_segment] if len(o_seq) else np.zeros(0, dtype=np.int64)
    every = np.arange(n_seq)
    return (
        np.concatenate([every, every, every, o_seq]),
        np.concatenate([np.zeros(n_seq, np.int64), np.ones(n_seq, np.int64), np.full(n_seq, 2, np.int64), o_position]),
        np.concatenate([np.full(n_seq, vocab.id_of(CLS_TOKEN), np.int32), sex_id, birth_id, ids[o_code]]).astype(np.int32),
    )


def build_sequences(
    events: pl.DataFrame,
    sequences: pl.DataFrame,
    *,
    vocab: Vocabulary,
    bins: BinTable,
    rules: SequenceRules,
    max_length: int,
) -> pl.DataFrame:
    """Tokenize prepared events into one row per sequence (columns of ``SEQUENCE_SCHEMA``).

    ``events`` holds prepared event columns plus ``_seq``; ``sequences`` lists every ``_seq``
    to emit, ascending, with its ``subject_id`` and ``prediction_time`` (null without a
    cutoff). Sequences longer than ``max_length`` lose whole events from the start; the prefix
    always stays.
    """
    seq_values = sequences[SEQ].to_numpy()
    n_seq = len(seq_values)
    static = events.filter(pl.col(TIME).is_null())  # a few rows per subject
    # Timed events are addressed by row number instead of filtered into a copy of the frame.
    timed = np.flatnonzero(events[TIME].is_not_null().to_numpy())

    # -- token ids of every timed event, in input order --------------------------------------
    # String work happens once per distinct code / text / (code, bin), then numpy gathers.
    codes, all_code_index = distinct_index(events[CODE])
    code_index = all_code_index[timed]
    code_ids = distinct_ids(codes, vocab)
    starts_visit = codes.str.starts_with(f"{VISIT_START_PREFIX}/").to_numpy()
    ends_visit = codes.str.starts_with(f"{VISIT_END_PREFIX}/").to_numpy()
    births_at = (codes == BIRTH_CODE).to_numpy()
    dies_at = (codes == DEATH_CODE).to_numpy()
    is_start, is_end, is_birth = starts_visit[code_index], ends_visit[code_index], births_at[code_index]
    priority = np.select([is_birth, is_start, is_end, dies_at[code_index]], [0, 1, 3, 4], 2).astype(np.int8)

    bin_numbers = bins.assign_indexed(all_code_index, codes, events[UNIT], events[NUMERIC_VALUE])[timed]
    value_id = value_token_ids(bin_numbers, vocab.id_of, rules.num_value_bins)
    code_id = code_ids[code_index]
    if rules.value_tokens == "fused":
        # code|Qnn where the vocabulary has it; otherwise code then VALUE/Qnn (never lose a value)
        width = rules.num_value_bins + 1
        binned = np.flatnonzero(bin_numbers > 0)
        pairs, pair_index = np.unique(code_index[binned] * width + bin_numbers[binned], return_inverse=True)
        fused = [fused_token(codes[int(p) // width], int(p) % width) for p in pairs]  # distinct pairs only
        fused_ids = np.asarray([vocab.id_of(t) if t in vocab else -1 for t in fused], dtype=np.int32)
        use = fused_ids[pair_index] >= 0
        code_id[binned[use]] = fused_ids[pair_index][use]
        value_id[binned[use]] = -1

    text_id = np.full(len(timed), -1, dtype=np.int32)
    has_text = events[TEXT_VALUE].is_not_null().to_numpy()[timed]
    if has_text.any():
        texts = events.select(TEXT_VALUE, RESOURCE_TYPE)[timed[has_text]].select(text_token_expr(rules).alias(TOKEN))[TOKEN]
        text_id[has_text] = token_ids(texts, vocab)

    encounter_index = distinct_index(events[ENCOUNTER_ID])[1][timed]
    columns = {
        "seq": np.searchsorted(seq_values, events[SEQ].to_numpy()[timed]),
        "time": events[TIME].dt.epoch("us").to_numpy()[timed].astype(np.int64),
        "priority": priority,
        "row": events[ROW].to_numpy()[timed],
        "code_id": code_id,
        "value_id": value_id,
        "text_id": text_id,
        "encounter": encounter_index,
        "is_start": is_start,
        "is_birth": is_birth,
        "kind": np.where(is_start, int(TokenType.VISIT_START), np.where(is_end, int(TokenType.VISIT_END), int(TokenType.EVENT))).astype(np.int8),
    }
    order = _event_order(columns["seq"], columns["time"], columns["priority"], columns["row"])
    if order is not None:
        columns = {name: values[order] for name, values in columns.items()}
    seq, t, is_start = columns["seq"], columns["time"], columns["is_start"]
    n = len(t)
    index = np.arange(n)
    segment, segment_first = _segments(seq)
    first_of_seq = np.zeros(n, dtype=bool)
    first_of_seq[segment_first] = True

    # -- visits: ordinal of the event's started encounter, else visits started so far --------
    starts_cum = np.cumsum(is_start)
    starts_so_far = starts_cum - (starts_cum[segment_first] - is_start[segment_first])[segment]
    encounter = columns["encounter"]
    has_encounter = encounter >= 0
    start_rows = np.flatnonzero(is_start & has_encounter)
    n_encounters = int(encounter.max(initial=-1)) + 1
    # Table per encounter of its first start (the earliest wins if it starts twice) ...
    first_encounters, first = np.unique(encounter[start_rows], return_index=True)
    encounter_start = np.full(max(n_encounters, 1), n, dtype=np.int64)  # never empty: gathers below
    encounter_start[first_encounters] = start_rows[first]
    encounter_seq = np.full(max(n_encounters, 1), -1, dtype=np.int64)
    encounter_seq[first_encounters] = seq[start_rows[first]]
    if (seq[start_rows] == encounter_seq[encounter[start_rows]]).all():
        # ... valid when each encounter starts within one sequence (always, without a cutoff).
        safe = np.maximum(encounter, 0)
        found = has_encounter & (encounter_seq[safe] == seq)
        event_start = np.where(found, encounter_start[safe], n)
    else:
        # Several sequences share an encounter (one subject, several prediction times): match
        # on (sequence, encounter) pairs instead.
        key = seq.astype(np.int64) * n_encounters + encounter
        start_keys, first = np.unique(key[start_rows], return_index=True)
        where = np.minimum(np.searchsorted(start_keys, key), len(start_keys) - 1)
        found = has_encounter & (start_keys[where] == key)
        event_start = np.where(found, start_rows[first][where], n)
    in_started_encounter = found & (event_start <= index)
    visit = np.where(in_started_encounter, starts_so_far[np.minimum(event_start, max(n - 1, 0))], starts_so_far).astype(np.int32)

    # -- time and age: exact float64 (numpy divides with IEEE rounding; Polars multiplies by
    # the reciprocal, one ulp off for a quarter of values) -----------------------------------
    no_birth = np.iinfo(np.int64).max
    birth = np.full(n_seq, no_birth, dtype=np.int64)
    np.minimum.at(birth, seq[columns["is_birth"]], t[columns["is_birth"]])
    time_days = t / MICROSECONDS_PER_DAY
    event_birth = birth[seq]
    known_birth = event_birth != no_birth
    age = np.full(n, np.nan)
    age[known_birth] = (t[known_birth] - event_birth[known_birth]) / (MICROSECONDS_PER_DAY * DAYS_PER_YEAR)

    # -- interval tokens before visit starts and events outside started encounters -----------
    gap_days = np.zeros(n)
    gap_days[1:] = (t[1:] - t[:-1]) / MICROSECONDS_PER_DAY
    has_interval = (is_start | ~in_started_encounter) & ~first_of_seq & (gap_days >= rules.min_interval_days)
    interval_ids = np.asarray([vocab.id_of(token) for token in INTERVAL_TOKENS], dtype=np.int32)
    interval_id = np.full(n, -1, dtype=np.int32)
    interval_id[has_interval] = interval_ids[interval_bucket(gap_days[has_interval])]

    # -- prefix ------------------------------------------------------------------------------
    birth_year = np.full(n_seq, -1, dtype=np.int64)
    known = birth != no_birth
    birth_year[known] = birth[known].astype("datetime64[us]").astype("datetime64[Y]").astype(np.int64) + 1970
    prefix_seq, prefix_position, prefix_id = _prefix(static, seq_values, birth_year, vocab, rules)
    n_prefix = np.bincount(prefix_seq, minlength=n_seq).astype(np.int64)
    if n_seq and n_prefix.max() > max_length:
        worst = int(np.argmax(n_prefix))
        raise EventsFormatError(
            f"subject_id={sequences[SUBJECT_ID][worst]}: its prefix ([CLS], sex, birth year, static facts) has "
            f"{n_prefix[worst]} tokens, more than max_length={max_length}; raise max_length"
        )

    # -- truncation: keep whole events from the newest back while they fit ---------------------
    has_value, has_text = columns["value_id"] >= 0, columns["text_id"] >= 0
    n_tokens = 1 + has_interval.astype(np.int64) + has_value + has_text
    cum = np.cumsum(n_tokens)
    segment_last = np.append(segment_first[1:] - 1, n - 1) if n else segment_first
    to_end = cum[segment_last][segment] - cum + n_tokens  # tokens from this event to its sequence end
    keep = to_end <= max_length - n_prefix[seq]
    body_total = np.bincount(seq, weights=n_tokens, minlength=n_seq).astype(np.int64)

    # Usually nothing is cut: a slice then keeps every array a view instead of a copy.
    kept: slice | np.ndarray = slice(None) if keep.all() else np.flatnonzero(keep)
    k_seq, k_tokens = seq[kept], n_tokens[kept]
    body_len = np.bincount(k_seq, weights=k_tokens, minlength=n_seq).astype(np.int64)
    total = n_prefix + body_len
    offsets = np.zeros(n_seq + 1, dtype=np.int64)
    np.cumsum(total, out=offsets[1:])
    size = int(offsets[-1])

    # -- layout: scatter each kept event's tokens into its sequence's slice -------------------
    k_segment, k_first = _segments(k_seq)
    exclusive = np.cumsum(k_tokens) - k_tokens
    start = offsets[k_seq] + n_prefix[k_seq] + exclusive - exclusive[k_first][k_segment]
    ids = np.zeros(size, dtype=np.int32)
    types = np.zeros(size, dtype=np.int8)
    k_interval = has_interval[kept]
    ids[start[k_interval]] = interval_id[kept][k_interval]
    types[start[k_interval]] = int(TokenType.INTERVAL)
    code_at = start + k_interval
    ids[code_at] = columns["code_id"][kept]
    types[code_at] = columns["kind"][kept]
    k_value = has_value[kept]
    ids[code_at[k_value] + 1] = columns["value_id"][kept][k_value]
    types[code_at[k_value] + 1] = int(TokenType.VALUE)
    k_text = has_text[kept]
    text_at = code_at + 1 + k_value
    ids[text_at[k_text]] = columns["text_id"][kept][k_text]
    types[text_at[k_text]] = int(TokenType.TEXT)
    body_at = np.repeat(start - exclusive, k_tokens) + np.arange(int(k_tokens.sum()))
    days_out = np.zeros(size)
    age_out = np.zeros(size)
    visit_out = np.zeros(size, dtype=np.int32)
    days_out[body_at] = np.repeat(time_days[kept], k_tokens)
    age_out[body_at] = np.repeat(age[kept], k_tokens)
    visit_out[body_at] = np.repeat(visit[kept], k_tokens)

    # Prefix tokens are timeless; they take the time and age of the first kept event so the
    # streams never go backwards. With no event before the cutoff they take the cutoff time.
    cutoff_days = days_since_epoch(sequences[PREDICTION_TIME])
    has_body = body_len > 0
    first_body = np.minimum(offsets[:-1] + n_prefix, max(size - 1, 0))
    seq_days = np.where(has_body, days_out[first_body] if size else np.nan, cutoff_days)
    seq_age = np.where(has_body, age_out[first_body] if size else np.nan, np.nan)
    prefix_at = offsets[prefix_seq] + prefix_position
    ids[prefix_at] = prefix_id
    types[prefix_at] = np.where(prefix_position == 0, int(TokenType.SPECIAL), int(TokenType.DEMOGRAPHIC))
    days_out[prefix_at] = seq_days[prefix_seq]
    age_out[prefix_at] = seq_age[prefix_seq]

    out = sequences.select(SUBJECT_ID, PREDICTION_TIME).with_columns(
        _list_column(ids, offsets).alias(INPUT_IDS),
        _list_column(days_out, offsets).alias(TIME_DAYS),
        _list_column(age_out, offsets).alias(AGE_YEARS),
        _list_column(visit_out, offsets).alias(VISIT_INDEX),
        _list_column(types, offsets).alias(TOKEN_TYPE),
        pl.Series(LENGTH, total, dtype=pl.Int32),
        pl.Series(TRUNCATED_TOKENS, body_total - body_len, dtype=pl.Int32),
    )
    return out.select([pl.col(name).cast(dtype) for name, dtype in SEQUENCE_SCHEMA.items()])
