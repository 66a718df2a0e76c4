"""EventTokenizer on small MEDS frames built in code: sequence rules, streams, cutoff, truncation."""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest
from meds_builders import event, events_frame, patient, ts, visit

from ehrfm.schema import SUBJECT_ID, TIME
from ehrfm.tokenize import SEQUENCE_SCHEMA, EventsFormatError, EventTokenizer, NotFittedError, TokenType

T = TokenType
EPOCH = dt.datetime(1970, 1, 1)


def days(text: str) -> float:
    return (ts(text) - EPOCH) / dt.timedelta(days=1)


def years(text: str, birth: str) -> float:
    return (ts(text) - ts(birth)) / dt.timedelta(microseconds=1) / (86_400_000_000 * 365.25)


def story() -> pl.DataFrame:
    """One patient: birth, an ambulatory visit with a lab, a condition outside any encounter,
    an emergency visit with a coded answer, and death at the emergency visit's end."""
    s = 1
    rows = [
        *patient(s, "female", "1980-05-01"),
        *visit(s, "e1", "2020-01-01 09:00", "2020-01-01 09:30", "AMB",
               event(s, "2020-01-01 09:05", "LOINC/8302-2", 164.0, unit="cm", encounter="e1",
                     resource_type="Observation")),
        event(s, "2020-02-15 00:00", "SNOMED/44054006", resource_type="Condition"),
        *visit(s, "e2", "2020-02-20 10:00", "2020-02-21 12:00", "EMER",
               event(s, "2020-02-20 10:10", "LOINC/72166-2", text="SNOMED/266919005", encounter="e2",
                     resource_type="Observation")),
        event(s, "2020-02-21 12:00", "MEDS_DEATH", resource_type="Patient"),
    ]
    return events_frame(rows)


STORY_TOKENS = [
    ("[CLS]", T.SPECIAL, None, 0),
    ("GENDER/female", T.DEMOGRAPHIC, None, 0),
    ("BIRTH_YEAR/1980", T.DEMOGRAPHIC, None, 0),
    ("RACE/2106-3", T.DEMOGRAPHIC, None, 0),
    ("MEDS_BIRTH", T.EVENT, "1980-05-01 00:00", 0),
    ("INTERVAL/LT", T.INTERVAL, "2020-01-01 09:00", 1),
    ("VISIT_START/AMB", T.VISIT_START, "2020-01-01 09:00", 1),
    ("SNOMED/185349003", T.EVENT, "2020-01-01 09:00", 1),
    ("LOINC/8302-2", T.EVENT, "2020-01-01 09:05", 1),
    ("VALUE/Q01", T.VALUE, "2020-01-01 09:05", 1),
    ("VISIT_END/AMB", T.VISIT_END, "2020-01-01 09:30", 1),
    ("INTERVAL/M1", T.INTERVAL, "2020-02-15 00:00", 1),  # 44.6 days after the visit ended
    ("SNOMED/44054006", T.EVENT, "2020-02-15 00:00", 1),  # outside encounters: visits so far
    ("INTERVAL/W0", T.INTERVAL, "2020-02-20 10:00", 2),
    ("VISIT_START/EMER", T.VISIT_START, "2020-02-20 10:00", 2),
    ("SNOMED/185349003", T.EVENT, "2020-02-20 10:00", 2),
    ("LOINC/72166-2", T.EVENT, "2020-02-20 10:10", 2),
    ("TEXT/SNOMED/266919005", T.TEXT, "2020-02-20 10:10", 2),
    ("VISIT_END/EMER", T.VISIT_END, "2020-02-21 12:00", 2),
    ("MEDS_DEATH", T.EVENT, "2020-02-21 12:00", 2),  # after the visit end at the same instant
]


def fitted(events: pl.DataFrame, **params) -> EventTokenizer:
    params = {"min_count": 1, "min_values_for_bins": 1, **params}
    return EventTokenizer(**params).fit(events)


def tokens_of(tok: EventTokenizer, seq: pl.DataFrame, row: int = 0) -> list[str]:
    return tok.convert_ids_to_tokens(seq["input_ids"][row])


# -- the sequence ------------------------------------------------------------------------------


def test_story_tokens_and_every_stream_exact() -> None:
    events = story()
    tok = fitted(events)
    seq = tok.transform(events)
    assert seq.schema == pl.Schema(SEQUENCE_SCHEMA)
    row = seq.row(0, named=True)
    assert tokens_of(tok, seq) == [t for t, *_ in STORY_TOKENS]
    assert row["token_type"] == [int(t) for _, t, *_ in STORY_TOKENS]
    assert row["visit_index"] == [v for *_, v in STORY_TOKENS]
    birth = "1980-05-01 00:00"
    # prefix tokens take the time of the first event after them
    want_days = [days(t or birth) for _, _, t, _ in STORY_TOKENS]
    want_age = [years(t or birth, birth) for _, _, t, _ in STORY_TOKENS]
    assert row["time_days"] == want_days  # exact float64 equality, not approximate
    assert row["age_years"] == want_age
    assert row["length"] == len(STORY_TOKENS) and row["truncated_tokens"] == 0
    assert row["subject_id"] == 1 and row["prediction_time"] is None


def test_output_ignores_input_row_order_and_accepts_lazy_frames() -> None:
    events = story()
    tok = fitted(events)
    shuffled = events.sample(fraction=1.0, shuffle=True, seed=3)
    assert tok.transform(shuffled).equals(tok.transform(events))
    assert tok.transform(events.lazy()).equals(tok.transform(events))


def test_several_subjects_are_independent() -> None:
    one = story()
    two = one.with_columns(pl.lit(2, pl.Int64).alias(SUBJECT_ID))
    both = pl.concat([two, one])
    tok = fitted(both)
    seq = tok.transform(both)
    assert seq[SUBJECT_ID].to_list() == [1, 2]
    for column in ("input_ids", "time_days", "age_years", "visit_index", "token_type"):
        assert seq[column][0].to_list() == seq[column][1].to_list()
    alone = tok.transform(one)
    assert alone.row(0) == seq.row(0)


def test_streams_are_aligned() -> None:
    events = story()
    seq = fitted(events).transform(events)
    lengths = {c: seq[c].list.len()[0]
               for c in ("input_ids", "time_days", "age_years", "visit_index", "token_type")}
    assert set(lengths.values()) == {seq["length"][0]}


def test_overlapping_encounters_keep_their_own_visit_index() -> None:
    s = 5
    rows = [
        *patient(s),
        event(s, "2021-01-01 08:00", "VISIT_START/IMP", encounter="inpatient"),
        event(s, "2021-01-02 08:00", "VISIT_START/AMB", encounter="consult"),
        event(s, "2021-01-02 09:00", "VISIT_END/AMB", encounter="consult"),
        event(s, "2021-01-03 08:00", "LOINC/x", 1.0, encounter="inpatient"),  # belongs to visit 1
        event(s, "2021-01-03 09:00", "SNOMED/y"),  # outside: 2 visits started so far
        event(s, "2021-01-04 08:00", "VISIT_END/IMP", encounter="inpatient"),
    ]
    events = events_frame(rows)
    tok = fitted(events)
    seq = tok.transform(events)
    pairs = list(zip(tokens_of(tok, seq), seq["visit_index"][0].to_list()))
    assert ("VISIT_START/AMB", 2) in pairs and ("LOINC/x", 1) in pairs
    assert ("SNOMED/y", 2) in pairs and ("VISIT_END/IMP", 1) in pairs
    # an out-of-encounter event less than min_interval_days after the previous one: no interval
    assert tokens_of(tok, seq).count("INTERVAL/LT") == 1


def test_same_instant_events_are_ordered_by_role_whatever_the_input_order() -> None:
    s = 4
    rows = [
        *patient(s),
        event(s, "2021-05-01 10:00", "LOINC/a", 1.0, encounter="v"),  # listed before its visit start
        event(s, "2021-05-01 10:00", "VISIT_START/AMB", encounter="v"),
        event(s, "2021-05-01 10:00", "VISIT_END/AMB", encounter="v"),
        event(s, "2021-05-01 10:00", "LOINC/b", encounter="v"),
        event(s, "2021-05-01 10:00", "MEDS_DEATH"),
        event(s, "2021-05-01 10:00", "SNOMED/c", encounter="v"),
    ]
    events = events_frame(rows)
    tok = fitted(events)
    want = ["VISIT_START/AMB", "LOINC/a", "VALUE/Q01", "LOINC/b", "SNOMED/c", "VISIT_END/AMB", "MEDS_DEATH"]
    assert tokens_of(tok, tok.transform(events))[-7:] == want
    # reversed input: events with equal roles keep their (new) input order
    shuffled = events.reverse()
    assert tokens_of(tok, tok.transform(shuffled))[-7:] == ["VISIT_START/AMB", "SNOMED/c", "LOINC/b",
                                                            "LOINC/a", "VALUE/Q01", "VISIT_END/AMB",
                                                            "MEDS_DEATH"]


def test_event_dated_before_its_encounter_does_not_see_the_future() -> None:
    s = 7
    rows = [
        *patient(s),
        event(s, "2021-01-01", "VISIT_START/AMB", encounter="first"),
        event(s, "2021-01-01 01:00", "VISIT_END/AMB", encounter="first"),
        event(s, "2021-03-01", "LOINC/early", encounter="second"),  # Synthea has such rows
        event(s, "2021-03-07", "VISIT_START/AMB", encounter="second"),
        event(s, "2021-03-07 01:00", "LOINC/late", encounter="second"),
    ]
    events = events_frame(rows)
    tok = fitted(events)
    full = tok.transform(events)
    pairs = list(zip(tokens_of(tok, full), full["visit_index"][0].to_list()))
    assert ("LOINC/early", 1) in pairs and ("LOINC/late", 2) in pairs
    assert (tokens_of(tok, full)[tokens_of(tok, full).index("LOINC/early") - 1]
            == "INTERVAL/M1")  # opens a block
    cut = tok.transform(events, cutoff=ts("2021-03-02"))
    n = cut["length"][0]
    for column in ("input_ids", "time_days", "age_years", "visit_index", "token_type"):
        assert cut[column][0].to_list() == full[column][0].to_list()[:n], column


def test_min_interval_days_controls_interval_tokens() -> None:
    events = story()
    six = fitted(events, min_interval_days=6.0)  # the gap before the emergency visit is 5.4 days
    five = fitted(events, min_interval_days=5.0)
    assert "INTERVAL/W0" not in tokens_of(six, six.transform(events))
    assert "INTERVAL/W0" in tokens_of(five, five.transform(events))


# -- vocabulary, values and text ---------------------------------------------------------------


def test_rare_and_unseen_codes_map_to_their_vocabulary_unk() -> None:
    train = story()
    tok = EventTokenizer(min_count=2, min_values_for_bins=1).fit(train)
    test = pl.concat([train, events_frame([event(1, "2020-01-01 09:06", "LOINC/never-seen", encounter="e1"),
                                           event(1, "2020-01-01 09:07", "ICD10CM/E11.9", encounter="e1")])])
    toks = tokens_of(tok, tok.transform(test))
    assert "SNOMED/185349003" in toks  # seen twice
    assert "LOINC/8302-2" not in toks and toks.count("[UNK:LOINC]") == 3  # once in train, never seen, 72166-2
    assert "[UNK]" in toks  # ICD10CM never appeared in train at all
    assert "[UNK:TEXT]" in toks  # the coded answer was seen once


def test_notes_and_long_text_are_never_tokens() -> None:
    s = 9
    note = "Patient presents with chest pain. " * 20
    rows = [
        *patient(s),
        event(s, "2020-01-01", "LOINC/34117-2", text=note, resource_type="DocumentReference"),
        event(s, "2020-01-02", "LOINC/11506-3", text="short note", resource_type="DocumentReference"),
        event(s, "2020-01-03", "LOINC/x", text="y" * 49, resource_type="Observation"),
        event(s, "2020-01-04", "LOINC/x", text="  No  ", resource_type="Observation"),
    ]
    events = events_frame(rows)
    tok = fitted(events, free_text_tokens=True)  # even with free text on, only "No" qualifies
    toks = tokens_of(tok, tok.transform(events))
    assert [t for t in toks if t.startswith("TEXT/")] == ["TEXT/No"]
    assert not any("chest pain" in t or "short note" in t for t in tok.vocabulary_.tokens)
    default = fitted(events)  # free text off: "No" is not a coded answer either
    assert not [t for t in tokens_of(default, default.transform(events)) if t.startswith("TEXT/")]


def test_numeric_values_are_binned_per_code_and_unit_on_train_only() -> None:
    s = 3
    train = events_frame([*patient(s)] + [event(s, f"2020-01-{d:02d}", "LOINC/w", float(d), unit="kg")
                                          for d in range(1, 21)])
    tok = EventTokenizer(min_count=1, num_value_bins=4, min_values_for_bins=10).fit(train)
    probe = events_frame([*patient(4), event(4, "2021-01-01", "LOINC/w", 1000.0, unit="kg"),
                          event(4, "2021-01-02", "LOINC/w", 1000.0, unit="[lb_av]"),
                          event(4, "2021-01-03", "LOINC/w", 0.0, unit="kg")])
    toks = tokens_of(tok, tok.transform(probe))
    values = [t for t in toks if t.startswith("VALUE/")]
    # a huge test value lands in the top train bin; another unit has no bins -> fallback
    assert values == ["VALUE/Q04", "VALUE/ANY", "VALUE/Q01"]


def test_all_null_values_emit_only_the_code() -> None:
    s = 2
    events = events_frame([*patient(s)] + [event(s, f"2020-01-{d:02d}", "LOINC/null-valued", None)
                                           for d in range(1, 5)])
    tok = fitted(events)
    toks = tokens_of(tok, tok.transform(events))
    assert toks.count("LOINC/null-valued") == 4 and not any(t.startswith("VALUE/") for t in toks)


def test_fused_value_tokens_and_fallback_for_rare_fused_tokens() -> None:
    s = 6
    rows = [*patient(s)] + [event(s, f"2020-01-{d:02d}", "LOINC/v", float(d % 2), encounter=None)
                            for d in range(1, 11)]
    events = events_frame(rows)
    tok = EventTokenizer(min_count=1, num_value_bins=2, min_values_for_bins=2,
                         value_tokens="fused").fit(events)
    toks = tokens_of(tok, tok.transform(events))
    assert "LOINC/v|Q01" in toks and "LOINC/v|Q02" in toks
    assert not any(t.startswith("VALUE/") for t in toks)
    # min_count too high for fused tokens: the code stays, the bin follows as a separate token
    rare = EventTokenizer(min_count=6, num_value_bins=2, min_values_for_bins=2,
                          value_tokens="fused").fit(events)
    toks = tokens_of(rare, rare.transform(events))
    assert "LOINC/v|Q01" not in toks and toks.count("LOINC/v") == 10 and toks.count("VALUE/Q02") == 5


def test_prefix_sorts_static_facts_and_defaults_unknown_sex_and_birth() -> None:
    events = events_frame([
        event(8, None, "RACE/2106-3"), event(8, None, "ETHNICITY/2186-5"),
        event(8, "2020-01-01", "SNOMED/1"),
    ])
    tok = fitted(events)
    seq = tok.transform(events)
    assert tokens_of(tok, seq)[:5] == ["[CLS]", "GENDER/unknown", "BIRTH_YEAR/unknown", "ETHNICITY/2186-5",
                                       "RACE/2106-3"]
    assert all(math.isnan(a) for a in seq["age_years"][0])  # no MEDS_BIRTH: age unknown


# -- truncation ----------------------------------------------------------------------------------


def long_patient(n_labs: int) -> pl.DataFrame:
    s = 11
    rows = [*patient(s), event(s, "2000-01-01 00:00", "VISIT_START/IMP", encounter="v")]
    start = ts("2000-01-01 00:01")
    rows += [
        {**event(s, None, f"LOINC/{i % 50}", float(i % 17), encounter="v"),
         TIME: start + dt.timedelta(minutes=i)}
        for i in range(n_labs)
    ]
    rows.append({**event(s, None, "VISIT_END/IMP", encounter="v"),
                 TIME: start + dt.timedelta(minutes=n_labs)})
    return events_frame(rows)


def test_truncation_keeps_prefix_and_newest_whole_events() -> None:
    events = long_patient(200)
    tok = fitted(events)
    full = tok.transform(events)
    cut = tok.transform(events, max_length=100)
    full_ids, cut_ids = full["input_ids"][0].to_list(), cut["input_ids"][0].to_list()
    prefix = 4  # [CLS], sex, birth year, race
    assert cut_ids[:prefix] == full_ids[:prefix]
    body = len(cut_ids) - prefix
    # 96 tokens fit after the prefix: the visit end plus 47 (code, value) pairs; 96 would split one
    assert len(cut_ids) == 99 and body == 95
    assert cut_ids[prefix:] == full_ids[-body:]
    assert cut["token_type"][0][prefix] == int(T.EVENT)  # never starts on a dangling value
    assert cut["truncated_tokens"][0] == len(full_ids) - len(cut_ids)
    for column in ("time_days", "age_years", "visit_index"):
        assert cut[column][0][prefix:].to_list() == full[column][0][-body:].to_list()
    assert cut["time_days"][0][0] == cut["time_days"][0][prefix]  # prefix takes the first kept time


def test_lengths_beyond_16k() -> None:
    events = long_patient(20_000)  # ~40k tokens
    tok = fitted(events)
    full = tok.transform(events, max_length=50_000)
    assert full["length"][0] == 4 + 1 + 1 + 2 * 20_000 + 1 + 1  # + MEDS_BIRTH, interval, visit start/end
    cut = tok.transform(events)  # default max_length 16384
    assert 16_380 <= cut["length"][0] <= 16_384
    assert cut["truncated_tokens"][0] == full["length"][0] - cut["length"][0]
    assert tok.convert_ids_to_tokens(cut["input_ids"][0][-1:]) == ["VISIT_END/IMP"]


def test_prefix_longer_than_max_length_is_a_clear_error() -> None:
    events = story()
    with pytest.raises(EventsFormatError,
                       match=r"subject_id=1: its prefix .* has 4 tokens, more than max_length=3"):
        fitted(events).transform(events, max_length=3)


# -- cutoff --------------------------------------------------------------------------------------


def test_scalar_cutoff_excludes_events_at_and_after_it() -> None:
    events = story()
    tok = fitted(events)
    at_lab = ts("2020-01-01 09:05")
    seq = tok.transform(events, cutoff=at_lab)
    toks = tokens_of(tok, seq)
    assert toks == [t for t, *_ in STORY_TOKENS[:8]]  # up to the encounter type, lab excluded
    assert max(seq["time_days"][0]) < days("2020-01-01 09:05")
    assert seq["prediction_time"][0] == at_lab
    aware = tok.transform(events, cutoff=at_lab.replace(tzinfo=dt.timezone(dt.timedelta(hours=2))))
    assert aware["length"][0] == 5  # 09:05+02:00 is 07:05 UTC: only the prefix and birth remain


def test_cutoff_frame_gives_one_sequence_per_prediction_time() -> None:
    events = story()
    tok = fitted(events)
    cutoffs = pl.DataFrame({
        SUBJECT_ID: [1, 1, 99],
        "prediction_time": [ts("2020-02-20 10:10"), ts("2030-01-01"), ts("2020-01-01")],
    })
    seq = tok.transform(events, cutoff=cutoffs)
    assert seq[SUBJECT_ID].to_list() == [1, 1, 99]
    first = tokens_of(tok, seq, 0)
    assert first == [t for t, *_ in STORY_TOKENS[:16]]
    assert tokens_of(tok, seq, 1) == [t for t, *_ in STORY_TOKENS]
    # a subject with no events at all still gets a row: prefix only, at the prediction time
    assert tokens_of(tok, seq, 2) == ["[CLS]", "GENDER/unknown", "BIRTH_YEAR/unknown"]
    assert seq["time_days"][2].to_list() == [days("2020-01-01 00:00")] * 3
    for i, cutoff in enumerate(cutoffs["prediction_time"]):
        assert max(seq["time_days"][i]) <= days(str(cutoff))
    # several sequences share encounters here; each keeps the full sequence's streams
    full = tok.transform(events)
    n = seq["length"][0]
    for column in ("input_ids", "time_days", "age_years", "visit_index", "token_type"):
        assert seq[column][0].to_list() == full[column][0].to_list()[:n], column


def test_cutoff_frame_errors_name_the_problem() -> None:
    events = story()
    tok = fitted(events)
    with pytest.raises(EventsFormatError, match="cutoff frame needs column 'prediction_time'"):
        tok.transform(events, cutoff=pl.DataFrame({SUBJECT_ID: [1], "time": [ts("2020-01-01")]}))
    with pytest.raises(EventsFormatError, match="prediction_time is null for subject_id=1"):
        tok.transform(events, cutoff=pl.DataFrame({SUBJECT_ID: [1], "prediction_time": [None]},
                                                  schema_overrides={"prediction_time": pl.Datetime("us")}))
    with pytest.raises(TypeError, match="cutoff must be None, a datetime, or a DataFrame"):
        tok.transform(events, cutoff="2020-01-01")  # type: ignore[arg-type]


# -- bad input -----------------------------------------------------------------------------------


def test_empty_events_give_an_empty_frame_with_the_schema() -> None:
    tok = fitted(story())
    out = tok.transform(story().clear())
    assert out.height == 0 and out.schema == pl.Schema(SEQUENCE_SCHEMA)


def test_fit_on_no_events_is_a_clear_error() -> None:
    with pytest.raises(EventsFormatError, match="no events to learn from"):
        EventTokenizer().fit(story().clear())


def test_static_only_subject_gets_a_prefix_with_unknown_time() -> None:
    events = pl.concat([story(), events_frame([event(2, None, "GENDER/male"),
                                               event(2, None, "RACE/2054-5")])])
    tok = fitted(events)
    seq = tok.transform(events).filter(pl.col(SUBJECT_ID) == 2)
    assert tokens_of(tok, seq) == ["[CLS]", "GENDER/male", "BIRTH_YEAR/unknown", "RACE/2054-5"]
    assert all(math.isnan(x) for x in seq["time_days"][0]) and all(math.isnan(x) for x in seq["age_years"][0])


def test_null_time_events_are_static_facts_in_the_prefix() -> None:
    events = pl.concat([story(), events_frame([event(1, None, "LOINC/odd", 3.0)])])
    tok = fitted(events)
    toks = tokens_of(tok, tok.transform(events))
    assert toks[:5] == ["[CLS]", "GENDER/female", "BIRTH_YEAR/1980", "LOINC/odd", "RACE/2106-3"]
    assert toks.count("VALUE/Q01") == 1  # the static fact's value is not tokenized


def test_null_code_names_the_subject() -> None:
    events = pl.concat([story(), events_frame([{**event(1, "2020-03-01", "X"), "code": None}])])
    tok = fitted(story())
    with pytest.raises(EventsFormatError, match=r"1 event\(s\) have a null 'code' .* subject_id=1"):
        tok.transform(events)
    with pytest.raises(EventsFormatError, match=r"null 'code'"):
        EventTokenizer().fit(events)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop("code"), r"transform events: MEDS events need column 'code'"),
        (lambda f: f.with_columns(pl.col("time").cast(pl.String)),
         r"column 'time' must be a datetime or date, got String"),
        (lambda f: f.with_columns(pl.col("subject_id").cast(pl.String)),
         r"column 'subject_id' must be an integer type"),
        (lambda f: f.with_columns(pl.col("numeric_value").cast(pl.String)),
         r"column 'numeric_value' must be numeric"),
    ],
)
def test_malformed_frames_raise_naming_the_column(mutate, message) -> None:
    tok = fitted(story())
    with pytest.raises(EventsFormatError, match=message):
        tok.transform(mutate(story()))


def test_optional_columns_may_be_absent_and_times_may_carry_zones() -> None:
    events = story()
    tok = fitted(events)
    want = tok.transform(events)
    zoned = events.with_columns(
        pl.col("time").dt.replace_time_zone("UTC").dt.convert_time_zone("America/New_York")
    )
    assert tok.transform(zoned).equals(want)
    core = events.select("subject_id", "time", "code", "numeric_value", "text_value", "encounter_id")
    assert tok.transform(core)["length"][0] == want["length"][0]


# -- estimator contract --------------------------------------------------------------------------


def test_constructor_only_stores_parameters() -> None:
    tok = EventTokenizer(min_count=3, value_tokens="fused")
    assert set(vars(tok)) == set(tok.get_params())
    assert tok.get_params()["min_count"] == 3
    assert repr(tok) == "EventTokenizer(min_count=3, value_tokens='fused')"
    clone = EventTokenizer(**tok.get_params())
    assert clone.get_params() == tok.get_params()
    assert tok.set_params(min_count=4) is tok and tok.min_count == 4
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['min_cont'\]"):
        tok.set_params(min_cont=4)


def test_fit_returns_self_and_sets_trailing_underscore_attributes() -> None:
    tok = EventTokenizer(min_count=1)
    assert tok.fit(story()) is tok
    assert {"vocabulary_", "value_bins_", "n_train_subjects_", "n_train_events_"} <= set(vars(tok))
    assert tok.n_train_subjects_ == 1 and tok.n_train_events_ == story().height


@pytest.mark.parametrize(
    "use",
    [
        lambda t: t.transform(story()),
        lambda t: t.save_pretrained("/nonexistent/never-written"),
        lambda t: t.vocab_size,
        lambda t: t.convert_ids_to_tokens([0]),
        lambda t: t.decode({"input_ids": [0], "time_days": [0.0]}),
    ],
)
def test_unfitted_use_raises_not_fitted_error(use) -> None:
    with pytest.raises(NotFittedError, match=r"not fitted yet: call fit\(train_events\)") as info:
        use(EventTokenizer())
    assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"value_tokens": "both"}, r"value_tokens must be one of \('separate', 'fused'\), got 'both'"),
        ({"num_value_bins": 1}, r"num_value_bins must be >= 2, got 1"),
        ({"min_count": 0}, r"min_count must be >= 1, got 0"),
        ({"birth_year_bucket": 0}, r"birth_year_bucket must be in 1..1000, got 0"),
    ],
)
def test_bad_parameters_fail_at_fit_naming_the_value(params, message) -> None:
    with pytest.raises(ValueError, match=message):
        EventTokenizer(**params).fit(story())


def test_ids_and_special_tokens() -> None:
    tok = fitted(story(), num_task_tokens=4)
    assert tok.pad_token_id == 0 and tok.convert_ids_to_tokens([tok.cls_token_id]) == ["[CLS]"]
    assert tok.convert_ids_to_tokens(tok.task_token_ids) == [f"[TASK_00{i}]" for i in range(4)]
    assert tok.convert_tokens_to_ids(["LOINC/unseen"]) == tok.convert_tokens_to_ids(["[UNK:LOINC]"])
    with pytest.raises(IndexError, match=r"token id 99999 is outside the vocabulary"):
        tok.convert_ids_to_tokens([99999])
