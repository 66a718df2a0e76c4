"""The labeler's rules, one at a time, on tiny hand-made event frames."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa
import pytest
from meds import LabelSchema
from task_builders import frame, make_task, reference_candidates, ts

from ehrfm.tasks import EXCLUSION_REASONS, candidate_table, label_task, to_meds_labels
from ehrfm.tasks.labeler import CANDIDATE_SCHEMA, LABEL_COLUMNS


def reasons(task, events) -> list[str | None]:
    return candidate_table(task, events)["excluded_by"].to_list()


def only_label(task, events) -> bool:
    labels = label_task(task, events)
    assert labels.height == 1, labels
    return labels["boolean_value"][0]


# A long record after the trigger, so that 10-day windows are fully observed unless a test says not.
def later(subject: int = 1) -> tuple:
    return (subject, "2021-06-01", "FILLER")


# -- trigger and prediction time ----------------------------------------------------------------


@pytest.mark.parametrize("offset, expected", [("0s", "2020-01-01 08:00:00"), ("1s", "2020-01-01 08:00:01"),
                                              ("24h", "2020-01-02 08:00:00")])
def test_prediction_time_is_trigger_time_plus_offset(offset: str, expected: str) -> None:
    events = frame((1, "2020-01-01 08:00", "TRIGGER"), later())
    labels = label_task(make_task(trigger={"offset": offset}), events)
    assert labels["prediction_time"].to_list() == [ts(expected)]
    assert labels["trigger_time"].to_list() == [ts("2020-01-01 08:00")]


def test_trigger_codes_exact_and_by_prefix() -> None:
    events = frame((1, "2020-01-01", "VISIT_END/AMB"), (1, "2020-02-01", "VISIT_END/IMP"),
                   (1, "2020-03-01", "VISIT_ENDING"), (1, "2020-04-01", "TRIGGER"), later())
    by_prefix = label_task(make_task(trigger={"codes": [], "prefixes": ["VISIT_END/"]}), events)
    assert by_prefix["trigger_time"].to_list() == [ts("2020-01-01"), ts("2020-02-01")]
    both = label_task(make_task(trigger={"codes": ["TRIGGER"], "prefixes": ["VISIT_END/"]}), events)
    assert both.height == 3


def test_static_rows_and_null_codes_never_trigger() -> None:
    events = frame((1, None, "TRIGGER"), (1, "2020-01-01", None), (1, "2020-01-02", "TRIGGER"), later())
    assert label_task(make_task(), events)["trigger_time"].to_list() == [ts("2020-01-02")]


# -- the prediction window: (pt + start, pt + end] ----------------------------------------------


@pytest.mark.parametrize("outcome_at, positive", [
    ("2020-01-01 00:00:00", False),  # exactly at the prediction time: excluded (start is open)
    ("2020-01-01 00:00:01", True),   # just after it
    ("2020-01-11 00:00:00", True),   # exactly at pt + end: included (end is closed)
    ("2020-01-11 00:00:01", False),  # just past the end
])
def test_window_is_open_at_start_and_closed_at_end(outcome_at: str, positive: bool) -> None:
    events = frame((1, "2020-01-01", "TRIGGER"), (1, outcome_at, "OUTCOME"), later())
    labels = label_task(make_task(), events)
    assert labels["boolean_value"].to_list() == [positive]
    assert labels["outcome_time"].to_list() == [ts(outcome_at) if positive else None]


def test_window_start_offset_skips_early_outcomes() -> None:
    task = make_task(prediction_window={"start": "2d", "end": "10d"})
    early = frame((1, "2020-01-01", "TRIGGER"),
                  (1, "2020-01-03", "OUTCOME"), later())  # exactly pt + 2d: open
    assert only_label(task, early) is False
    inside = frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-03", "OUTCOME"), (1, "2020-01-05", "OUTCOME"),
                   later())
    labels = label_task(task, inside)
    assert (labels["boolean_value"].to_list() == [True]
            and labels["outcome_time"].to_list() == [ts("2020-01-05")])


def test_outcome_before_the_prediction_time_does_not_count() -> None:
    # The trigger's own offset lets the outcome (at trigger time) into the input: not a label.
    events = frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-01", "OUTCOME"), later())
    assert only_label(make_task(trigger={"offset": "1s"}), events) is False


def test_open_ended_window_runs_to_the_last_record_and_is_never_censored() -> None:
    task = make_task(prediction_window={"end": None})
    assert only_label(task, frame((1, "2020-01-01", "TRIGGER"), (1, "2025-01-01", "OUTCOME"))) is True
    # Without an outcome the window ends at the last record: fully observed, so negative.
    assert only_label(task, frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-02", "FILLER"))) is False


def test_first_outcome_in_window_is_the_defining_event() -> None:
    events = frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-04", "OUTCOME"), (1, "2020-01-02", "OUTCOME"),
                   later())
    assert label_task(make_task(), events)["outcome_time"].to_list() == [ts("2020-01-02")]


# -- same_encounter and negate --------------------------------------------------------------------


def test_same_encounter_ignores_other_encounters() -> None:
    task = make_task(label={"same_encounter": True})
    events = frame((1, "2020-01-01", "TRIGGER", "a"), (1, "2020-01-03", "OUTCOME", "b"), later())
    assert only_label(task, events) is False
    events = frame((1, "2020-01-01", "TRIGGER", "a"), (1, "2020-01-03", "OUTCOME", "b"),
                   (1, "2020-01-04", "OUTCOME", "a"), later())
    assert label_task(task, events)["outcome_time"].to_list() == [ts("2020-01-04")]
    # Without the flag, any encounter's outcome counts.
    assert label_task(make_task(), events)["outcome_time"].to_list() == [ts("2020-01-03")]


def test_same_encounter_never_matches_missing_encounters() -> None:
    task = make_task(label={"same_encounter": True})
    events = frame((1, "2020-01-01", "TRIGGER", None), (1, "2020-01-03", "OUTCOME", None), later())
    table = candidate_table(task, events)
    assert table["excluded_by"].to_list() == ["no_encounter"]
    assert table["outcome_time"].to_list() == [None]  # a missing encounter is not a shared one


def test_negate_seen_event_is_negative_and_observed_absence_positive() -> None:
    task = make_task(label={"negate": True})
    seen = frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-05", "OUTCOME"), later())
    assert only_label(task, seen) is False
    assert label_task(task, seen)["outcome_time"].to_list() == [ts("2020-01-05")]
    absent = frame((1, "2020-01-01", "TRIGGER"), later())
    assert only_label(task, absent) is True


def test_negate_needs_the_whole_window_observed_unless_the_event_is_seen() -> None:
    task = make_task(label={"negate": True})
    # Record stops 5 days in, no event: "no event within 10 days" is unknown -> censored.
    assert reasons(task, frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-06", "FILLER"))) == ["censored"]
    # The event seen before the record stops decides the label even so.
    assert only_label(task, frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-06", "OUTCOME"))) is False


def test_long_stay_shape_discharge_within_window_vs_after() -> None:
    """The long-stay template's rules: trigger + 24h, same encounter, negate, encounter_ended."""
    task = make_task(trigger={"offset": "24h"}, prediction_window={"end": "6d"},
                     label={"codes": [], "prefixes": ["VISIT_END/"], "same_encounter": True, "negate": True},
                     exclusions={"encounter_ended": True})
    events = frame(
        (1, "2020-01-01", "TRIGGER", "short"),
        (1, "2020-01-01 12:00", "VISIT_END/IMP", "short"),  # gone in 24h
        (1, "2020-02-01", "TRIGGER", "at24h"), (1, "2020-02-02", "VISIT_END/IMP", "at24h"),  # ends at pt
        (1, "2020-03-01", "TRIGGER", "normal"),
        (1, "2020-03-08", "VISIT_END/IMP", "normal"),  # exactly 7 days
        (1, "2020-04-01", "TRIGGER", "long"), (1, "2020-04-08 00:00:01", "VISIT_END/IMP", "long"),  # > 7 days
        later(),
    )
    table = candidate_table(task, events)
    assert table["excluded_by"].to_list() == ["encounter_ended", "encounter_ended", None, None]
    assert table["boolean_value"].to_list() == [None, None, False, True]


# -- exclusions, in their order ------------------------------------------------------------------


def test_prediction_times_at_or_after_death_are_excluded() -> None:
    events = frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-05", "TRIGGER"),
                   (1, "2020-01-05", "MEDS_DEATH"), (1, "2020-01-06", "TRIGGER"), later())
    assert reasons(make_task(), events) == [None, "after_death", "after_death"]


def test_death_in_window_is_the_outcome_of_a_mortality_task() -> None:
    task = make_task(label={"codes": ["MEDS_DEATH"]})
    events = frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-05", "MEDS_DEATH"))
    assert only_label(task, events) is True


def test_min_history_counts_from_the_first_record_but_not_birth() -> None:
    task = make_task(observation={"min_history": "30d"})
    events = frame((1, "1990-01-01", "MEDS_BIRTH"), (1, "2020-01-01", "FIRST"), (1, "2020-01-20", "TRIGGER"),
                   (1, "2020-01-31", "TRIGGER"), later())
    assert reasons(task, events) == ["min_history", None]


def test_age_bounds_and_unknown_age() -> None:
    task = make_task(observation={"min_age_years": 18, "max_age_years": 65})
    events = frame(
        (1, "2000-01-01", "MEDS_BIRTH"), (1, "2017-06-01", "TRIGGER"), (1, "2020-06-01", "TRIGGER"), later(1),
        (2, "1940-01-01", "MEDS_BIRTH"), (2, "2020-06-01", "TRIGGER"), later(2),
        (3, "2020-06-01", "TRIGGER"), later(3),  # no MEDS_BIRTH: age unknown
    )
    assert reasons(task, events) == ["min_age", None, "max_age", "min_age"]


def test_history_exclusion_at_or_before_the_prediction_time() -> None:
    task = make_task(exclusions={"history": {"codes": ["OUTCOME"]}})
    events = frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-01", "OUTCOME"),  # at pt: already known
                   (2, "2020-01-01", "TRIGGER"), (2, "2019-01-01", "OUTCOME"),
                   (3, "2020-01-01", "TRIGGER"), (3, "2020-01-03", "OUTCOME"), later(1), later(2), later(3))
    table = candidate_table(task, events)
    assert table["excluded_by"].to_list() == ["history", "history", None]
    assert table["boolean_value"].to_list() == [None, None, True]


def test_history_prefix_exclusion() -> None:
    task = make_task(exclusions={"history": {"prefixes": ["SNOMED/4"]}})
    events = frame((1, "2019-01-01", "SNOMED/44054006"), (1, "2020-01-01", "TRIGGER"),
                   (2, "2019-01-01", "SNOMED/38341003"), (2, "2020-01-01", "TRIGGER"), later(1), later(2))
    assert reasons(task, events) == ["history", None]


def test_encounter_ended_only_looks_at_the_trigger_encounter() -> None:
    task = make_task(trigger={"offset": "24h"}, exclusions={"encounter_ended": True})
    events = frame((1, "2020-01-01", "TRIGGER", "a"), (1, "2020-01-01 06:00", "VISIT_END/AMB", "b"),
                   (1, "2020-01-03", "VISIT_END/IMP", "a"), later())
    assert reasons(task, events) == [None]


def test_two_triggers_at_one_instant_give_one_row() -> None:
    events = frame((1, "2020-01-01", "TRIGGER", "b"), (1, "2020-01-01", "TRIGGER", "a"),
                   (1, "2020-01-01", "TRIGGER", None), later())
    table = candidate_table(make_task(), events)
    assert table["excluded_by"].to_list() == [None, "duplicate_time", "duplicate_time"]
    assert table["encounter_id"].to_list() == ["a", "b", None]


def test_an_earlier_exclusion_wins_over_later_ones() -> None:
    task = make_task(exclusions={"history": {"codes": ["OUTCOME"]}})
    events = frame((1, "2019-01-01", "OUTCOME"), (1, "2019-06-01", "MEDS_DEATH"),
                   (1, "2020-01-01", "TRIGGER"))
    assert reasons(task, events) == ["after_death"]


# -- censoring ---------------------------------------------------------------------------------


def test_window_past_the_last_record_without_outcome_is_censored_not_negative() -> None:
    events = frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-05", "FILLER"))
    assert reasons(make_task(), events) == ["censored"]
    assert label_task(make_task(), events).height == 0


def test_outcome_seen_before_the_record_stops_is_positive() -> None:
    events = frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-05", "OUTCOME"))
    assert only_label(make_task(), events) is True


def test_window_ending_exactly_at_the_last_record_is_observed() -> None:
    events = frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-11", "FILLER"))
    assert only_label(make_task(), events) is False
    events = frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-10 23:59:59", "FILLER"))
    assert reasons(make_task(), events) == ["censored"]


def test_last_record_ignores_static_rows_and_is_per_subject() -> None:
    events = frame((1, "2020-01-01", "TRIGGER"), (1, None, "GENDER/F"), (2, "2030-01-01", "FILLER"))
    assert reasons(make_task(), events) == ["censored"]


# -- sampling ---------------------------------------------------------------------------------


def many_triggers(subjects: range, per_subject: int) -> pl.DataFrame:
    rows = []
    for s in subjects:
        rows += [(s, f"2020-01-{d + 1:02d}", "TRIGGER") for d in range(per_subject)]
        rows.append((s, "2021-06-01", "FILLER"))
    return frame(*rows)


def test_sampling_keeps_at_most_max_per_subject() -> None:
    task = make_task(sampling={"max_per_subject": 3, "seed": 0})
    labels = label_task(task, many_triggers(range(1, 21), 10))
    counts = labels.group_by("subject_id").len()["len"]
    assert counts.max() == 3 and counts.min() == 3 and labels.height == 60
    table = candidate_table(task, many_triggers(range(1, 21), 10))
    assert table["excluded_by"].value_counts().sort("excluded_by").rows() == [(None, 60), ("sampling", 140)]


def test_sampling_is_deterministic_and_independent_of_other_subjects() -> None:
    task = make_task(sampling={"max_per_subject": 3, "seed": 0})
    full = label_task(task, many_triggers(range(1, 21), 10))
    assert full.equals(label_task(task, many_triggers(range(1, 21), 10)))
    alone = label_task(task, many_triggers(range(5, 6), 10))
    assert alone.equals(full.filter(pl.col("subject_id") == 5))
    # The chosen rows are not simply the first ones.
    assert full["prediction_time"].dt.day().max() > 3


def test_sampling_seed_changes_the_choice() -> None:
    events = many_triggers(range(1, 21), 10)
    a = label_task(make_task(sampling={"max_per_subject": 3, "seed": 0}), events)
    b = label_task(make_task(sampling={"max_per_subject": 3, "seed": 1}), events)
    assert a.height == b.height and not a.equals(b)


def test_sampling_happens_after_censoring() -> None:
    # Nine of ten prediction times are censored; the one labelled row must survive sampling.
    rows = [(1, "2020-01-01", "TRIGGER")] + [(1, f"2020-03-{d:02d}", "TRIGGER") for d in range(1, 10)]
    events = frame(*rows, (1, "2020-03-10", "FILLER"))
    table = candidate_table(make_task(sampling={"max_per_subject": 1}), events)
    assert table["excluded_by"].to_list() == [None] + ["censored"] * 9


# -- input handling and output schema -----------------------------------------------------------


def test_lazy_and_eager_inputs_give_the_same_labels() -> None:
    events = many_triggers(range(1, 4), 3)
    assert label_task(make_task(), events).equals(label_task(make_task(), events.lazy()))


def test_timezone_aware_times_are_read_as_utc() -> None:
    naive = frame((1, "2020-01-01 10:00", "TRIGGER"), later())
    aware = naive.with_columns(
        pl.col("time").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Paris"))
    assert label_task(make_task(), aware)["prediction_time"].to_list() == [ts("2020-01-01 10:00")]


def test_missing_columns_are_named() -> None:
    events = frame((1, "2020-01-01", "TRIGGER")).drop("encounter_id")
    assert label_task(make_task(), events).height == 0  # censored, but no error: encounter not needed
    with pytest.raises(ValueError, match=r"\['encounter_id'\].*same_encounter"):
        label_task(make_task(label={"same_encounter": True}), events)
    with pytest.raises(ValueError, match=r"\['code'\]"):
        label_task(make_task(), events.drop("code"))


def test_no_triggers_give_an_empty_frame_with_the_schema() -> None:
    table = candidate_table(make_task(), frame((1, "2020-01-01", "OTHER")))
    assert table.height == 0 and table.schema == pl.Schema(CANDIDATE_SCHEMA)
    assert label_task(make_task(), frame((1, "2020-01-01", "OTHER"))).columns == list(LABEL_COLUMNS)


def test_every_reason_is_a_documented_one() -> None:
    events = frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-01", "TRIGGER"), (1, "2020-01-05", "FILLER"),
                   (2, "2020-01-01", "TRIGGER"), (2, "2020-01-01", "MEDS_DEATH"))
    found = set(reasons(make_task(), events)) - {None}
    assert found == {"censored", "duplicate_time", "after_death"} and found <= set(EXCLUSION_REASONS)


def test_meds_label_table_validates_and_has_exactly_the_label_columns() -> None:
    labels = label_task(make_task(),
                        frame((1, "2020-01-01", "TRIGGER"), (1, "2020-01-03", "OUTCOME"), later()))
    table = to_meds_labels(labels)
    LabelSchema.validate(table)
    assert table.schema.names == ["subject_id", "prediction_time", "boolean_value"]
    assert table.schema.field("prediction_time").type == pa.timestamp("us")
    # The extra audit columns would not pass the MEDS label schema, hence the details/ sidecar.
    with pytest.raises(Exception, match="outcome_time"):
        LabelSchema.validate(labels.to_arrow().cast(pa.schema([
            LabelSchema.schema().field(c) if c in ("subject_id", "prediction_time", "boolean_value")
            else labels.to_arrow().schema.field(c) for c in labels.columns])))


def test_vectorised_labeler_matches_the_loop_reference_on_a_mixed_story() -> None:
    task = make_task(trigger={"offset": "1s"}, observation={"min_history": "1d", "min_age_years": 1},
                     exclusions={"history": {"codes": ["HX"]}}, sampling={"max_per_subject": 2, "seed": 3})
    events = frame(
        (1, "2010-01-01", "MEDS_BIRTH"), (1, "2019-12-01", "X"), (1, "2020-01-01", "TRIGGER", "e1"),
        (1, "2020-01-05", "OUTCOME", "e2"), (1, "2020-02-01", "TRIGGER", "e3"),
        (1, "2020-03-01", "TRIGGER", "e4"),
        (1, "2020-03-02", "HX"), (1, "2020-04-01", "TRIGGER", "e5"), (1, "2020-05-01", "TRIGGER", "e6"),
        (1, "2021-01-01", "FILLER"),
        (2, "2019-06-01", "MEDS_BIRTH"), (2, "2019-07-01", "X"), (2, "2020-01-01", "TRIGGER"),
        (2, "2020-06-01", "MEDS_DEATH"), (4, "1990-01-01", "MEDS_BIRTH"), (4, "2019-01-01", "X"),
        (4, "2020-01-01", "TRIGGER"), (4, "2020-01-03", "FILLER"),
        (3, "2000-01-01", "MEDS_BIRTH"), (3, "2020-01-01", "TRIGGER"), (3, "2020-01-01 12:00", "TRIGGER"),
        (3, "2020-01-02", "OUTCOME"), (3, "2020-01-08", "FILLER"),
    )
    got = candidate_table(task, events).select("subject_id", "prediction_time", "encounter_id", "excluded_by",
                                               "boolean_value", "outcome_time").to_dicts()
    assert got == reference_candidates(task, events)
    assert {r["excluded_by"] for r in got} >= {None, "min_history", "min_age", "history", "censored"}


def test_time_rules_use_microseconds() -> None:
    # Offsets and windows are exact: one microsecond past the end is outside.
    events = frame((1, "2020-01-01", "TRIGGER"), later())
    events = pl.concat([events, pl.DataFrame({"subject_id": [1],
                                              "time": [ts("2020-01-11") + dt.timedelta(microseconds=1)],
                                              "code": ["OUTCOME"], "encounter_id": [None]},
                                             schema=events.schema)])
    assert only_label(make_task(), events) is False
