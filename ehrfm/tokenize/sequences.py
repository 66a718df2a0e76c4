"""Build token sequences and their aligned streams from prepared MEDS events, whole frames at once.

This module holds the rules shared by ``fit`` (which counts the tokens these rules produce) and
``transform`` (which maps them to ids), so the two can never disagree about what a token is.
Everything runs over all subjects of a shard at once: Polars turns codes, values and text into
token ids, and numpy lays the tokens out (ordering, visit numbering, truncation, offsets) with
array arithmetic. There is no per-event or per-subject Python loop. (A first version did the
layout with Polars joins, window functions and sorts of the token frame; it was about six
times slower on the Synthea shard.)

One timed event becomes up to four tokens, in this order:

==========  ========================================  ================================================
position    token                                     when
==========  ========================================  ================================================
0           ``INTERVAL/W0`` .. ``INTERVAL/LT``        the event opens a visit (``VISIT_START/*``) or
                                                      lies outside every started encounter, and at
                                                      least ``min_interval_days`` passed since the
                                                      subject's previous event
1           the code (``VISIT_START/AMB``,            always
            ``LOINC/8302-2``, ...)
2           ``VALUE/Qnn`` or ``VALUE/ANY``            the event has a finite ``numeric_value``
3           ``TEXT/<text_value>``                     short categorical text of a non-note resource
                                                      (without ``free_text_tokens``: only a coded
                                                      answer or a value-type marker, see below)
==========  ========================================  ================================================

Free text stays out of the vocabulary unless ``free_text_tokens`` is set (the vocabulary ships
with every model, and free text can hold names):

* a ``text_value`` becomes a ``TEXT/`` token only when it is a coded answer in ingest's
  ``VOCAB/code`` form (:data:`CODED_ANSWER_PATTERN`) or one of the categorical markers in
  :data:`VALUE_MARKERS`; any other text gives no text token (the event's code token stays);
* a free-text event code, ``TEXT/<words>`` (a concept with only text) or ``<VOCAB>/TEXT:<words>``
  (e.g. ingest's ``RACE/TEXT:...``), becomes one shared token per vocabulary,
  ``TEXT/[free text]`` or ``<VOCAB>/[free text]`` (:func:`fold_free_text_codes`): the concept is there,
  its words are not learned.

Events at one timestamp are ordered birth, visit starts, other events, visit ends, death, and
otherwise keep their input order, so a visit's tokens sit between its start and end tokens.

``visit_index`` is the ordinal of the event's encounter once that encounter has started (so
overlapping encounters keep their own numbers), else the number of visits started so far. It
depends only on earlier events, so a cutoff never changes the streams of the events it keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

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

# -- what text may become a token without ``free_text_tokens`` ---------------------------------

FREE_TEXT = "[free text]"  # stands for the words of a free-text code; brackets as in [UNK:TEXT]
FREE_TEXT_CODE = f"{TEXT_PREFIX}/{FREE_TEXT}"
# Markers the ingest mappers write as text_value: Quantity comparators and value-type names.
VALUE_MARKERS: tuple[str, ...] = (
    "<", "<=", ">=", ">", "ad", "range", "ratio", "period", "datetime", "time", "sampled-data",
)
# Vocabulary names ehrfm ingest writes for code systems (the names of the table shipped in
# ehrfm/ingest/vocabularies.yaml, and NOSYSTEM; tests/tokenize check the two lists agree, and that
# every name is [A-Za-z0-9_-]+ so it needs no regex escape). Kept here, not read from ingest, so a
# saved tokenizer reads text the same way whatever the table; names a user adds at ingest are not
# among them (their answers count as free text). TEXT is not among them:
# ``TEXT/<words>`` is a concept with only text, not a coded answer.
CODED_VOCABS: tuple[str, ...] = (
    "ATC", "ActCode", "CDCREC", "CPT", "CVX", "DCM", "HCPCS", "HL7v2-0074", "ICD10", "ICD10CM",
    "ICD10PCS", "ICD9CM", "ICD9Proc", "LOINC", "MIMIC_IV_Drug", "MIMIC_IV_ED_OBSERVATION", "MIMIC_IV_ED_VITAL",
    "MIMIC_IV_FORMULARY", "MIMIC_IV_GSN", "MIMIC_IV_ITEM", "MIMIC_IV_LABITEM", "MIMIC_IV_MICRO_ANTIBIOTIC",
    "MIMIC_IV_MICRO_ORGANISM", "MIMIC_IV_MICRO_TEST", "NDC", "NOSYSTEM", "NUCC", "ObsCategory", "RxNorm",
    "SNOMED", "UCUM",
)
# An unknown code system's name: the URI folded to [A-Za-z0-9._-] plus ``~`` and 6 hex digits.
HASHED_VOCAB_PATTERN = r"[A-Za-z0-9._-]+~[0-9a-f]{6}"
# ``VOCAB/code``: a known or hashed vocabulary name, ``/``, then a code without whitespace.
_CODED_ANSWER = rf"(?:{'|'.join(CODED_VOCABS)}|{HASHED_VOCAB_PATTERN})/\S+"
CODED_ANSWER_PATTERN = f"^{_CODED_ANSWER}$"  # for Polars (Rust regex: ``$`` is the very end)
_FREE_TEXT_FIELD = r"^([^/]+)/TEXT:"  # ingest's <VOCAB>/TEXT:<words> codes (RACE/TEXT:...)


def is_coded_text(text: str) -> bool:
    """Whether a (stripped) ``text_value`` may become a ``TEXT/`` token without ``free_text_tokens``.

    >>> [is_coded_text(t) for t in ("SNOMED/266919005", "LOINC/1-8", "NOSYSTEM/K1", "<=")]
    [True, True, True, True]
    >>> is_coded_text("example.org_fhir_CodeSystem_local-labs~70a59b/K1")
    True
    >>> [is_coded_text(t) for t in ("Dr/Smith", "Jane Doe", "SNOMED/Jane Doe", "TEXT/Feels dizzy", "No")]
    [False, False, False, False, False]
    """
    return pl.select(coded_text_expr(pl.lit(text, dtype=pl.String))).item()


def coded_text_expr(text: pl.Expr) -> pl.Expr:
    """Polars form of :func:`is_coded_text`, the one the tokenizer applies."""
    return text.is_in(list(VALUE_MARKERS)) | text.str.contains(CODED_ANSWER_PATTERN)


@dataclass(frozen=True)
class SequenceRules:
    """The parameters of the rules above (a subset of ``EventTokenizer``'s parameters)."""

    num_value_bins: int
    value_tokens: str
    max_text_length: int
    note_resource_types: tuple[str, ...]
    min_interval_days: float
    birth_year_bucket: int
    free_text_tokens: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.free_text_tokens, bool):
            raise ValueError(f"free_text_tokens must be true or false, got {self.free_text_tokens!r}")
        if self.value_tokens not in VALUE_MODES:
            raise ValueError(f"value_tokens must be one of {VALUE_MODES}, got {self.value_tokens!r}")
        if self.max_text_length < 0:
            raise ValueError(f"max_text_length must be >= 0, got {self.max_text_length!r}")
        if self.min_interval_days < 0:
            raise ValueError(f"min_interval_days must be >= 0, got {self.min_interval_days!r}")
        # Each bin and each birth-year bucket is a vocabulary token: bound them (a saved config may
        # come from anywhere, and a billion bins would be a billion tokens).
        if not 1 <= self.num_value_bins <= 1000:
            raise ValueError(f"num_value_bins must be in 1..1000, got {self.num_value_bins!r}")
        if not 1 <= self.birth_year_bucket <= 1000:
            raise ValueError(f"birth_year_bucket must be in 1..1000, got {self.birth_year_bucket!r}")


def text_token_expr(rules: SequenceRules) -> pl.Expr:
    """``TEXT/<value>`` for short categorical text of non-note events, else null.

    Clinical notes (``DocumentReference`` by default) and any text longer than
    ``max_text_length`` characters are free text: as tokens they would be near-unique strings
    that only bloat the vocabulary, so they are left to the note-embedding path. Without
    ``free_text_tokens`` only coded answers and value markers qualify (:func:`is_coded_text`).
    """
    text = pl.col(TEXT_VALUE).str.strip_chars()
    is_note = pl.col(RESOURCE_TYPE).is_in(list(rules.note_resource_types)).fill_null(False)
    eligible = (
        text.is_not_null()
        & (text.str.len_chars() > 0)
        & (text.str.len_chars() <= rules.max_text_length)
        & ~is_note
    )
    if not rules.free_text_tokens:
        eligible = eligible & coded_text_expr(text)
    return pl.when(eligible).then(pl.format(f"{TEXT_PREFIX}/{{}}", text)).otherwise(None)


def fold_free_text_codes(codes: pl.Series) -> pl.Series:
    """Free-text codes folded to one token per vocabulary; every other code left as it is.

    ``TEXT/<words>`` becomes ``TEXT/[free text]`` and ``<VOCAB>/TEXT:<words>`` becomes
    ``<VOCAB>/[free text]``. Free-text codes are rare, so only their rows do string work; a
    column without one comes back as it is.

    >>> fold_free_text_codes(pl.Series("code", ["TEXT/Dr John Smith", "RACE/TEXT:Declined", "LOINC/1-8"])).to_list()
    ['TEXT/[free text]', 'RACE/[free text]', 'LOINC/1-8']
    """
    needs = codes.str.starts_with(f"{TEXT_PREFIX}/") | codes.str.contains(f"/{TEXT_PREFIX}:", literal=True)
    if not needs.any():
        return codes
    rows = needs.arg_true()
    some = codes.gather(rows)
    vocab = some.str.extract(_FREE_TEXT_FIELD, 1)
    folded = pl.select(
        pl.when(some.str.starts_with(f"{TEXT_PREFIX}/")).then(pl.lit(FREE_TEXT_CODE))
        .when(vocab.is_not_null()).then(vocab + f"/{FREE_TEXT}")
        .otherwise(some)  # "/TEXT:" further in, e.g. LOINC/1/TEXT:2: not ingest's form
    ).to_series()
    return codes.scatter(rows, folded)


def code_token_expr(rules: SequenceRules) -> pl.Expr:
    """The ``code`` column as the tokenizer sees it: :func:`fold_free_text_codes` unless
    ``free_text_tokens``. Fit and transform both apply it first, so counts, value bins and ids
    all see the folded code."""
    if rules.free_text_tokens:
        return pl.col(CODE)
    return pl.col(CODE).map_batches(fold_free_text_codes, return_dtype=pl.String, is_elementwise=True)


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
    counts = (
        pl.concat(counted)
        .drop_nulls(TOKEN)
        .group_by(TOKEN)
        .agg(pl.len().alias("n"))
        .collect(engine="streaming")
    )
    result = dict(zip(counts[TOKEN].to_list(), counts["n"].to_list()))
    if rules.value_tokens == "fused":
        valued = (
            timed.filter(finite_value_expr()).select(CODE, UNIT, NUMERIC_VALUE).collect(engine="streaming")
        )
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


def _event_order(
    seq: np.ndarray, time: np.ndarray, priority: np.ndarray, row: np.ndarray
) -> np.ndarray | None:
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
    """For sorted sequence indices: each element's segment number and each segment's first index.

    >>> segment, first = _segments(np.array([0, 0, 2, 2, 2, 5]))
    >>> segment.tolist(), first.tolist()
    ([0, 0, 1, 1, 1, 2], [0, 2, 5])
    """
    first = np.ones(len(seq), dtype=bool)
    first[1:] = seq[1:] != seq[:-1]
    return np.cumsum(first) - 1, np.flatnonzero(first)


def _list_column(values: np.ndarray, offsets: np.ndarray) -> pl.Series:
    """A list column from flat ``values`` and the ``offsets`` delimiting its rows."""
    array = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(values))
    return pl.from_arrow(array)  # type: ignore[return-value]


class _PrefixTokens(NamedTuple):
    """Parallel arrays, one entry per prefix token of every sequence."""

    seq: np.ndarray  # sequence index
    position: np.ndarray  # position in the prefix: 0 [CLS], 1 sex, 2 birth year, 3.. static codes
    token_id: np.ndarray


def _prefix(
    static: pl.DataFrame,
    seq_values: np.ndarray,
    birth_year: np.ndarray,
    vocab: Vocabulary,
    rules: SequenceRules,
) -> _PrefixTokens:
    """[CLS], sex, birth-year bucket, then the other static codes sorted and deduplicated.

    ``birth_year`` holds each sequence's birth year, or -1 when unknown.
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
    year_ids = np.asarray(
        [vocab.id_of(birth_year_token(None if y < 0 else int(y), rules.birth_year_bucket)) for y in years],
        dtype=np.int32,
    )
    birth_id = year_ids[np.searchsorted(years, birth_year)] if n_seq else np.zeros(0, dtype=np.int32)

    o_seq, o_code = s_seq[~chosen], s_code[~chosen]
    o_segment, o_first = _segments(o_seq)
    o_position = 3 + np.arange(len(o_seq)) - o_first[o_segment] if len(o_seq) else np.zeros(0, dtype=np.int64)
    every = np.arange(n_seq)
    return _PrefixTokens(
        np.concatenate([every, every, every, o_seq]),
        np.concatenate(
            [np.zeros(n_seq, np.int64), np.ones(n_seq, np.int64), np.full(n_seq, 2, np.int64), o_position]
        ),
        np.concatenate(
            [np.full(n_seq, vocab.id_of(CLS_TOKEN), np.int32), sex_id, birth_id, ids[o_code]]
        ).astype(np.int32),
    )


# -- the steps of build_sequences ------------------------------------------------------------


@dataclass(frozen=True)
class _TimedEvents:
    """Parallel arrays over the timed events: one entry per event, in input order until sorted."""

    seq: np.ndarray  # sequence index (row of ``sequences``)
    time: np.ndarray  # int64 microseconds since the epoch
    priority: np.ndarray  # order at one instant: birth 0, visit start 1, other 2, visit end 3, death 4
    row: np.ndarray  # input row, the last sort key
    code_id: np.ndarray  # the code token (or code|Qnn in fused mode)
    value_id: np.ndarray  # VALUE/* token, -1 for none
    text_id: np.ndarray  # TEXT/* token, -1 for none
    encounter: np.ndarray  # encounter number, -1 for none
    is_start: np.ndarray
    is_birth: np.ndarray
    kind: np.ndarray  # TokenType of the code token

    def sorted(self) -> _TimedEvents:
        """These events ordered by (sequence, time, priority, input row); self if already so."""
        order = _event_order(self.seq, self.time, self.priority, self.row)
        if order is None:
            return self
        return _TimedEvents(**{f.name: getattr(self, f.name)[order] for f in fields(self)})


class _Streams(NamedTuple):
    """The flat per-token arrays of all sequences back to back, delimited by ``offsets``."""

    ids: np.ndarray
    types: np.ndarray
    days: np.ndarray
    age: np.ndarray
    visit: np.ndarray


_NO_BIRTH = np.iinfo(np.int64).max  # birth time of a sequence without a MEDS_BIRTH event


def _code_roles(
    codes: pl.Series, code_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per event from its distinct code: (starts a visit, ends a visit, is the birth, priority)."""
    starts_visit = codes.str.starts_with(f"{VISIT_START_PREFIX}/").to_numpy()
    ends_visit = codes.str.starts_with(f"{VISIT_END_PREFIX}/").to_numpy()
    births_at = (codes == BIRTH_CODE).to_numpy()
    dies_at = (codes == DEATH_CODE).to_numpy()
    is_start, is_end, is_birth = starts_visit[code_index], ends_visit[code_index], births_at[code_index]
    priority = np.select([is_birth, is_start, is_end, dies_at[code_index]], [0, 1, 3, 4], 2).astype(np.int8)
    return is_start, is_end, is_birth, priority


def _fuse_values(
    code_id: np.ndarray,
    value_id: np.ndarray,
    codes: pl.Series,
    code_index: np.ndarray,
    bin_numbers: np.ndarray,
    vocab: Vocabulary,
    rules: SequenceRules,
) -> None:
    """In place: code|Qnn where the vocabulary has it; otherwise code then VALUE/Qnn (never lose a value)."""
    width = rules.num_value_bins + 1
    binned = np.flatnonzero(bin_numbers > 0)
    pairs, pair_index = np.unique(code_index[binned] * width + bin_numbers[binned], return_inverse=True)
    fused = [fused_token(codes[int(p) // width], int(p) % width) for p in pairs]  # distinct pairs only
    fused_ids = np.asarray([vocab.id_of(t) if t in vocab else -1 for t in fused], dtype=np.int32)
    use = fused_ids[pair_index] >= 0
    code_id[binned[use]] = fused_ids[pair_index][use]
    value_id[binned[use]] = -1


def _text_ids(events: pl.DataFrame, timed: np.ndarray, vocab: Vocabulary, rules: SequenceRules) -> np.ndarray:
    """``TEXT/*`` token id of each timed event (rows ``timed`` of ``events``), -1 for none."""
    text_id = np.full(len(timed), -1, dtype=np.int32)
    has_text = events[TEXT_VALUE].is_not_null().to_numpy()[timed]
    if has_text.any():
        texts = events.select(TEXT_VALUE, RESOURCE_TYPE)[timed[has_text]]
        text_id[has_text] = token_ids(texts.select(text_token_expr(rules).alias(TOKEN))[TOKEN], vocab)
    return text_id


def _timed_events(
    events: pl.DataFrame, seq_values: np.ndarray, vocab: Vocabulary, bins: BinTable, rules: SequenceRules
) -> _TimedEvents:
    """Token ids and sort keys of every timed event, in input order."""
    # Timed events are addressed by row number instead of filtered into a copy of the frame.
    timed = np.flatnonzero(events[TIME].is_not_null().to_numpy())
    # String work happens once per distinct code / text / (code, bin), then numpy gathers.
    codes, all_code_index = distinct_index(events[CODE])
    code_index = all_code_index[timed]
    code_ids = distinct_ids(codes, vocab)
    is_start, is_end, is_birth, priority = _code_roles(codes, code_index)

    bin_numbers = bins.assign_indexed(all_code_index, codes, events[UNIT], events[NUMERIC_VALUE])[timed]
    value_id = value_token_ids(bin_numbers, vocab.id_of, rules.num_value_bins)
    code_id = code_ids[code_index]
    if rules.value_tokens == "fused":
        _fuse_values(code_id, value_id, codes, code_index, bin_numbers, vocab, rules)
    text_id = _text_ids(events, timed, vocab, rules)

    encounter_index = distinct_index(events[ENCOUNTER_ID])[1][timed]
    kind = np.where(
        is_start, int(TokenType.VISIT_START), np.where(is_end, int(TokenType.VISIT_END), int(TokenType.EVENT))
    )
    return _TimedEvents(
        seq=np.searchsorted(seq_values, events[SEQ].to_numpy()[timed]),
        time=events[TIME].dt.epoch("us").to_numpy()[timed].astype(np.int64),
        priority=priority,
        row=events[ROW].to_numpy()[timed],
        code_id=code_id,
        value_id=value_id,
        text_id=text_id,
        encounter=encounter_index,
        is_start=is_start,
        is_birth=is_birth,
        kind=kind.astype(np.int8),
    )


def _encounter_starts(
    seq: np.ndarray, encounter: np.ndarray, is_start: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per sorted event: row of its encounter's first start in its sequence (n if none), and if found."""
    n = len(seq)
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
        return np.where(found, encounter_start[safe], n), found
    # Several sequences share an encounter (one subject, several prediction times): match
    # on (sequence, encounter) pairs instead.
    key = seq.astype(np.int64) * n_encounters + encounter
    start_keys, first = np.unique(key[start_rows], return_index=True)
    where = np.minimum(np.searchsorted(start_keys, key), len(start_keys) - 1)
    found = has_encounter & (start_keys[where] == key)
    return np.where(found, start_rows[first][where], n), found


def _visit_index(
    seq: np.ndarray,
    is_start: np.ndarray,
    encounter: np.ndarray,
    segment: np.ndarray,
    segment_first: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per sorted event: its ``visit_index``, and whether it lies in an encounter already started."""
    # Ordinal of the event's started encounter, else visits started so far.
    n = len(seq)
    starts_cum = np.cumsum(is_start)
    starts_so_far = starts_cum - (starts_cum[segment_first] - is_start[segment_first])[segment]
    event_start, found = _encounter_starts(seq, encounter, is_start)
    in_started_encounter = found & (event_start <= np.arange(n))
    at_start = starts_so_far[np.minimum(event_start, max(n - 1, 0))]
    return np.where(in_started_encounter, at_start, starts_so_far).astype(np.int32), in_started_encounter


def _birth_times(seq: np.ndarray, time: np.ndarray, is_birth: np.ndarray, n_seq: int) -> np.ndarray:
    """Each sequence's earliest ``MEDS_BIRTH`` time in microseconds, ``_NO_BIRTH`` without one."""
    birth = np.full(n_seq, _NO_BIRTH, dtype=np.int64)
    np.minimum.at(birth, seq[is_birth], time[is_birth])
    return birth


def _time_and_age(time: np.ndarray, seq: np.ndarray, birth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event: days since the epoch, and age in years (NaN without a birth)."""
    # Exact float64: numpy divides with IEEE rounding; Polars multiplies by the reciprocal, one
    # ulp off for a quarter of values.
    time_days = time / MICROSECONDS_PER_DAY
    event_birth = birth[seq]
    known_birth = event_birth != _NO_BIRTH
    age = np.full(len(time), np.nan)
    age[known_birth] = (time[known_birth] - event_birth[known_birth]) / (MICROSECONDS_PER_DAY * DAYS_PER_YEAR)
    return time_days, age


def _interval_tokens(
    time: np.ndarray,
    is_start: np.ndarray,
    in_started_encounter: np.ndarray,
    segment_first: np.ndarray,
    vocab: Vocabulary,
    rules: SequenceRules,
) -> tuple[np.ndarray, np.ndarray]:
    """Interval tokens before visit starts and events outside started encounters: (has one, token id)."""
    n = len(time)
    first_of_seq = np.zeros(n, dtype=bool)
    first_of_seq[segment_first] = True
    gap_days = np.zeros(n)
    gap_days[1:] = (time[1:] - time[:-1]) / MICROSECONDS_PER_DAY
    has_interval = (is_start | ~in_started_encounter) & ~first_of_seq & (gap_days >= rules.min_interval_days)
    interval_ids = np.asarray([vocab.id_of(token) for token in INTERVAL_TOKENS], dtype=np.int32)
    interval_id = np.full(n, -1, dtype=np.int32)
    interval_id[has_interval] = interval_ids[interval_bucket(gap_days[has_interval])]
    return has_interval, interval_id


def _birth_years(birth: np.ndarray) -> np.ndarray:
    """Calendar year of each sequence's birth time, -1 without one."""
    birth_year = np.full(len(birth), -1, dtype=np.int64)
    known = birth != _NO_BIRTH
    birth_year[known] = birth[known].astype("datetime64[us]").astype("datetime64[Y]").astype(np.int64) + 1970
    return birth_year


def _prefix_lengths(prefix_seq: np.ndarray, sequences: pl.DataFrame, max_length: int) -> np.ndarray:
    """Prefix tokens per sequence; an ``EventsFormatError`` if a prefix alone exceeds ``max_length``."""
    n_seq = sequences.height
    n_prefix = np.bincount(prefix_seq, minlength=n_seq).astype(np.int64)
    if n_seq and n_prefix.max() > max_length:
        worst = int(np.argmax(n_prefix))
        raise EventsFormatError(
            f"subject_id={sequences[SUBJECT_ID][worst]}: its prefix "
            "([CLS], sex, birth year, static facts) has "
            f"{n_prefix[worst]} tokens, more than max_length={max_length}; raise max_length"
        )
    return n_prefix


def _kept_events(
    seq: np.ndarray,
    n_tokens: np.ndarray,
    segment: np.ndarray,
    segment_first: np.ndarray,
    room: np.ndarray,
) -> slice | np.ndarray:
    """Truncation: whole events from the newest back while they fit in their sequence's ``room``."""
    n = len(seq)
    cum = np.cumsum(n_tokens)
    segment_last = np.append(segment_first[1:] - 1, n - 1) if n else segment_first
    to_end = cum[segment_last][segment] - cum + n_tokens  # tokens from this event to its sequence end
    keep = to_end <= room[seq]
    # Usually nothing is cut: a slice then keeps every array a view instead of a copy.
    return slice(None) if keep.all() else np.flatnonzero(keep)


def _tokens_per_sequence(seq: np.ndarray, n_tokens: np.ndarray, n_seq: int) -> np.ndarray:
    """Sum of ``n_tokens`` over the events of each sequence."""
    return np.bincount(seq, weights=n_tokens, minlength=n_seq).astype(np.int64)


def _offsets(total: np.ndarray) -> np.ndarray:
    """Start of each sequence in the flat token arrays, then their end.

    >>> _offsets(np.array([3, 0, 2])).tolist()
    [0, 3, 3, 5]
    """
    offsets = np.zeros(len(total) + 1, dtype=np.int64)
    np.cumsum(total, out=offsets[1:])
    return offsets


def _token_starts(
    k_seq: np.ndarray, k_tokens: np.ndarray, offsets: np.ndarray, n_prefix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flat position of each kept event's first token, and of every kept event token in order."""
    k_segment, k_first = _segments(k_seq)
    exclusive = np.cumsum(k_tokens) - k_tokens
    start = offsets[k_seq] + n_prefix[k_seq] + exclusive - exclusive[k_first][k_segment]
    body_at = np.repeat(start - exclusive, k_tokens) + np.arange(int(k_tokens.sum()))
    return start, body_at


def _layout_ids(
    size: int,
    start: np.ndarray,
    kept: slice | np.ndarray,
    events: _TimedEvents,
    has_interval: np.ndarray,
    interval_id: np.ndarray,
    has_value: np.ndarray,
    has_text: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and types: each kept event's interval, code, value and text tokens from ``start`` on."""
    ids = np.zeros(size, dtype=np.int32)
    types = np.zeros(size, dtype=np.int8)
    k_interval = has_interval[kept]
    ids[start[k_interval]] = interval_id[kept][k_interval]
    types[start[k_interval]] = int(TokenType.INTERVAL)
    code_at = start + k_interval
    ids[code_at] = events.code_id[kept]
    types[code_at] = events.kind[kept]
    k_value = has_value[kept]
    ids[code_at[k_value] + 1] = events.value_id[kept][k_value]
    types[code_at[k_value] + 1] = int(TokenType.VALUE)
    k_text = has_text[kept]
    text_at = code_at + 1 + k_value
    ids[text_at[k_text]] = events.text_id[kept][k_text]
    types[text_at[k_text]] = int(TokenType.TEXT)
    return ids, types


def _layout_event_streams(
    size: int,
    body_at: np.ndarray,
    k_tokens: np.ndarray,
    kept: slice | np.ndarray,
    time_days: np.ndarray,
    age: np.ndarray,
    visit: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``time_days``, ``age_years`` and ``visit_index`` streams: every token takes its event's values."""
    days_out = np.zeros(size)
    age_out = np.zeros(size)
    visit_out = np.zeros(size, dtype=np.int32)
    days_out[body_at] = np.repeat(time_days[kept], k_tokens)
    age_out[body_at] = np.repeat(age[kept], k_tokens)
    visit_out[body_at] = np.repeat(visit[kept], k_tokens)
    return days_out, age_out, visit_out


def _fill_prefix(
    streams: _Streams,
    offsets: np.ndarray,
    n_prefix: np.ndarray,
    has_body: np.ndarray,
    prefix: _PrefixTokens,
    prediction_time: pl.Series,
) -> None:
    """In place: write each sequence's prefix tokens and their time and age."""
    # Prefix tokens are timeless; they take the time and age of the first kept event so the
    # streams never go backwards. With no event before the cutoff they take the cutoff time.
    size = len(streams.ids)
    cutoff_days = days_since_epoch(prediction_time)
    first_body = np.minimum(offsets[:-1] + n_prefix, max(size - 1, 0))
    seq_days = np.where(has_body, streams.days[first_body] if size else np.nan, cutoff_days)
    seq_age = np.where(has_body, streams.age[first_body] if size else np.nan, np.nan)
    prefix_at = offsets[prefix.seq] + prefix.position
    streams.ids[prefix_at] = prefix.token_id
    is_cls = prefix.position == 0
    streams.types[prefix_at] = np.where(is_cls, int(TokenType.SPECIAL), int(TokenType.DEMOGRAPHIC))
    streams.days[prefix_at] = seq_days[prefix.seq]
    streams.age[prefix_at] = seq_age[prefix.seq]


def _sequence_frame(
    sequences: pl.DataFrame, streams: _Streams, offsets: np.ndarray, total: np.ndarray, truncated: np.ndarray
) -> pl.DataFrame:
    """One row per sequence with the columns of ``SEQUENCE_SCHEMA``."""
    out = sequences.select(SUBJECT_ID, PREDICTION_TIME).with_columns(
        _list_column(streams.ids, offsets).alias(INPUT_IDS),
        _list_column(streams.days, offsets).alias(TIME_DAYS),
        _list_column(streams.age, offsets).alias(AGE_YEARS),
        _list_column(streams.visit, offsets).alias(VISIT_INDEX),
        _list_column(streams.types, offsets).alias(TOKEN_TYPE),
        pl.Series(LENGTH, total, dtype=pl.Int32),
        pl.Series(TRUNCATED_TOKENS, truncated, dtype=pl.Int32),
    )
    return out.select([pl.col(name).cast(dtype) for name, dtype in SEQUENCE_SCHEMA.items()])


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
    timed = _timed_events(events, seq_values, vocab, bins, rules).sorted()
    seq = timed.seq
    segment, segment_first = _segments(seq)

    visit, in_started_encounter = _visit_index(seq, timed.is_start, timed.encounter, segment, segment_first)
    birth = _birth_times(seq, timed.time, timed.is_birth, n_seq)
    time_days, age = _time_and_age(timed.time, seq, birth)
    has_interval, interval_id = _interval_tokens(
        timed.time, timed.is_start, in_started_encounter, segment_first, vocab, rules
    )
    prefix = _prefix(static, seq_values, _birth_years(birth), vocab, rules)
    n_prefix = _prefix_lengths(prefix.seq, sequences, max_length)

    has_value, has_text = timed.value_id >= 0, timed.text_id >= 0
    n_tokens = 1 + has_interval.astype(np.int64) + has_value + has_text
    kept = _kept_events(seq, n_tokens, segment, segment_first, max_length - n_prefix)
    body_total = _tokens_per_sequence(seq, n_tokens, n_seq)
    k_seq, k_tokens = seq[kept], n_tokens[kept]
    body_len = _tokens_per_sequence(k_seq, k_tokens, n_seq)
    total = n_prefix + body_len
    offsets = _offsets(total)
    size = int(offsets[-1])

    start, body_at = _token_starts(k_seq, k_tokens, offsets, n_prefix)
    ids, types = _layout_ids(size, start, kept, timed, has_interval, interval_id, has_value, has_text)
    days_out, age_out, visit_out = _layout_event_streams(size, body_at, k_tokens, kept, time_days, age, visit)
    streams = _Streams(ids, types, days_out, age_out, visit_out)
    _fill_prefix(streams, offsets, n_prefix, body_len > 0, prefix, sequences[PREDICTION_TIME])
    return _sequence_frame(sequences, streams, offsets, total, body_total - body_len)
