"""Label a task on MEDS events: prediction times, exclusions, censoring, sampling; all in Polars.

Every candidate prediction time (one per trigger event) either gets a label or the name of the
first rule that excluded it, checked in this order (the names are the ``excluded_by`` values
and the keys of ``summary.json``):

``after_death``      prediction time at or after the subject's MEDS_DEATH (always applied)
``min_history``      first timed record (MEDS_BIRTH aside) less than ``min_history`` before it
``min_age``          age below ``min_age_years`` (or no MEDS_BIRTH while an age bound is set)
``max_age``          age above ``max_age_years``
``no_encounter``     trigger without ``encounter_id`` when the task needs one
``history``          an ``exclusions.history`` code at or before the prediction time
``encounter_ended``  the trigger's encounter ended (``VISIT_END/*``) at or before it
``duplicate_time``   another trigger gave this subject the same prediction time (the one whose
                     trigger encounter_id sorts first stays)
``censored``         no defining event seen and the window ends after the last record
``sampling``         beyond ``max_per_subject`` (seeded, see :mod:`ehrfm.tasks.sampling`)

The defining event is the first label-code event in ``(prediction_time + start,
prediction_time + end]`` (of the trigger's encounter when ``same_encounter``). Seeing it
decides the label (positive, or negative for ``negate`` tasks); not seeing it decides only
when the whole window is observed, i.e. ends at or before the subject's last record.

>>> import datetime as dt, polars as pl
>>> from ehrfm.tasks import TEMPLATES_DIR, load_task
>>> t = dt.datetime
>>> events = pl.DataFrame({
...     "subject_id": [1, 1, 1, 1, 2, 2],
...     "time": [t(2020, 1, 1), t(2020, 1, 5), t(2020, 1, 20), t(2020, 1, 22), t(2020, 3, 1), t(2020, 3, 3)],
...     "code": ["VISIT_START/IMP", "VISIT_END/IMP", "VISIT_START/IMP", "VISIT_END/IMP",
...              "VISIT_START/IMP", "VISIT_END/IMP"],
...     "encounter_id": ["a", "a", "b", "b", "c", "c"],
... })
>>> readmission = load_task(TEMPLATES_DIR / "readmission_30d.yaml")
>>> labels = label_task(readmission, events)
>>> labels.select("subject_id", "prediction_time", "boolean_value").rows()
[(1, datetime.datetime(2020, 1, 5, 0, 0, 1), True)]
>>> candidate_table(readmission, events)["excluded_by"].to_list()
[None, 'censored', 'censored']
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from ehrfm.schema import (
    BIRTH_CODE,
    BOOLEAN_VALUE,
    CODE,
    DEATH_CODE,
    ENCOUNTER_ID,
    PREDICTION_TIME,
    SUBJECT_ID,
    TIME,
    VISIT_END_PREFIX,
)

from .definition import CodeMatch, TaskDefinition
from .sampling import stable_keys

OUTCOME_TIME = "outcome_time"  # time of the defining event when seen, else null
TRIGGER_TIME = "trigger_time"
EXCLUDED_BY = "excluded_by"

EXCLUSION_REASONS: tuple[str, ...] = (
    "after_death", "min_history", "min_age", "max_age", "no_encounter", "history", "encounter_ended",
    "duplicate_time", "censored", "sampling",
)
LABEL_COLUMNS: tuple[str, ...] = (SUBJECT_ID, PREDICTION_TIME, BOOLEAN_VALUE, OUTCOME_TIME, TRIGGER_TIME,
                                  ENCOUNTER_ID)
CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    SUBJECT_ID: pl.Int64(),
    PREDICTION_TIME: pl.Datetime("us"),
    BOOLEAN_VALUE: pl.Boolean(),
    OUTCOME_TIME: pl.Datetime("us"),
    TRIGGER_TIME: pl.Datetime("us"),
    ENCOUNTER_ID: pl.String(),
    EXCLUDED_BY: pl.String(),
}
DAYS_PER_YEAR = 365.25  # the unit of ages (min_age_years, max_age_years)
_VISIT_END = CodeMatch(prefixes=(f"{VISIT_END_PREFIX}/",))


def _events_lazy(events: pl.DataFrame | pl.LazyFrame, needs_encounter: bool) -> pl.LazyFrame:
    """The four columns the labeler reads, with ehrfm's dtypes; errors say what is missing."""
    lazy = events.lazy()
    schema = lazy.collect_schema()
    missing = [c for c in (SUBJECT_ID, TIME, CODE) if c not in schema]
    if needs_encounter and ENCOUNTER_ID not in schema:
        missing.append(ENCOUNTER_ID)
    if missing:
        why = (f" (the task uses same_encounter or encounter_ended, which need {ENCOUNTER_ID!r})"
               if ENCOUNTER_ID in missing else "")
        raise ValueError(f"events need column(s) {missing}{why}; found {list(schema)}")
    time = pl.col(TIME)
    time_type = schema[TIME]
    if isinstance(time_type, pl.Datetime) and time_type.time_zone is not None:
        time = time.dt.convert_time_zone("UTC").dt.replace_time_zone(None)  # MEDS times are naive UTC
    encounter = pl.col(ENCOUNTER_ID).cast(pl.String) if ENCOUNTER_ID in schema else pl.lit(None, pl.String)
    return lazy.select(
        pl.col(SUBJECT_ID).cast(pl.Int64),
        time.cast(pl.Datetime("us")).alias(TIME),
        pl.col(CODE).cast(pl.String),
        encounter.alias(ENCOUNTER_ID),
    )


def _asof(left: pl.DataFrame, right: pl.DataFrame, *, left_on: str, by: list[str], strategy: str,
          allow_exact: bool, name: str) -> pl.Series:
    """For each left row, the time of the nearest right event (backward/forward) or null."""
    right = right.select(*by, pl.col(TIME).alias(name)).sort(name)
    joined = left.select(*by, left_on).with_row_index("_row").sort(left_on).join_asof(
        right, left_on=left_on, right_on=name, by=by, strategy=strategy,  # type: ignore[arg-type]
        allow_exact_matches=allow_exact, check_sortedness=False, coalesce=False,
    )
    # null keys must never match each other (a trigger without an encounter has no encounter)
    valid = pl.all_horizontal([pl.col(c).is_not_null() for c in by])
    return joined.sort("_row").select(pl.when(valid).then(pl.col(name)))[name]


def candidate_table(task: TaskDefinition, events: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Every candidate prediction time of ``task`` with its label, or why it was excluded.

    Columns: ``CANDIDATE_SCHEMA``; ``excluded_by`` is null for kept rows (see the module
    docstring for the reasons, in the order they are checked). Sorted by subject and time.
    """
    needs_encounter = task.label.same_encounter or task.exclusions.encounter_ended
    lazy = _events_lazy(events, needs_encounter).filter(pl.col(TIME).is_not_null())
    trigger, label, history = (task.trigger.match.expr(), task.label.match.expr(),
                               task.exclusions.history.expr())
    relevant = trigger | label | history | _VISIT_END.expr()
    per_subject = lazy.group_by(SUBJECT_ID).agg(
        pl.col(TIME).max().alias("_last"),
        pl.col(TIME).filter(pl.col(CODE) != BIRTH_CODE).min().alias("_first"),
        pl.col(TIME).filter(pl.col(CODE) == BIRTH_CODE).min().alias("_birth"),
        pl.col(TIME).filter(pl.col(CODE) == DEATH_CODE).min().alias("_death"),
    )
    found, subjects = pl.collect_all([
        lazy.filter(relevant).with_columns(trigger.alias("_trigger"), label.alias("_label"),
                                           history.alias("_history"), _VISIT_END.expr().alias("_end")),
        per_subject,
    ])

    rows = (
        found.filter("_trigger")
        .select(SUBJECT_ID, pl.col(TIME).alias(TRIGGER_TIME), ENCOUNTER_ID)
        .with_columns((pl.col(TRIGGER_TIME) + task.trigger.offset).alias(PREDICTION_TIME))
        .sort(SUBJECT_ID, PREDICTION_TIME, ENCOUNTER_ID, TRIGGER_TIME, nulls_last=True)
        .join(subjects, on=SUBJECT_ID, how="left", maintain_order="left")
        .with_columns((pl.col(PREDICTION_TIME) + task.window.start).alias("_window_start"))
    )
    outcome_by = [SUBJECT_ID, ENCOUNTER_ID] if task.label.same_encounter else [SUBJECT_ID]
    # First label event strictly after the window start: the asof join's "forward, not exact".
    first_after = _asof(rows, found.filter("_label"), left_on="_window_start", by=outcome_by,
                        strategy="forward", allow_exact=False, name="_next")
    latest_history = _asof(rows, found.filter("_history"), left_on=PREDICTION_TIME, by=[SUBJECT_ID],
                           strategy="backward", allow_exact=True, name="_hist")
    latest_end = _asof(rows, found.filter("_end"), left_on=PREDICTION_TIME, by=[SUBJECT_ID, ENCOUNTER_ID],
                       strategy="backward", allow_exact=True, name="_ended")
    rows = rows.with_columns(first_after, latest_history, latest_end)

    pt = pl.col(PREDICTION_TIME)
    window_end = pl.col("_last") if task.window.end is None else pt + task.window.end
    seen = pl.col("_next").is_not_null() & (pl.col("_next") <= window_end)
    age = (pt - pl.col("_birth")).dt.total_microseconds() / (86_400e6 * DAYS_PER_YEAR)
    obs = task.observation
    checks: list[tuple[str, pl.Expr]] = [
        ("after_death", pl.col("_death").is_not_null() & (pt >= pl.col("_death")))
    ]
    if obs.min_history > dt.timedelta(0):
        checks.append(("min_history", pl.col("_first").is_null() | (pt - pl.col("_first") < obs.min_history)))
    if obs.min_age_years is not None:
        checks.append(("min_age", age.is_null() | (age < obs.min_age_years)))
    if obs.max_age_years is not None:
        checks.append(("max_age", age.is_null() | (age > obs.max_age_years)))
    if needs_encounter:
        checks.append(("no_encounter", pl.col(ENCOUNTER_ID).is_null()))
    if not task.exclusions.history.is_empty:
        checks.append(("history", pl.col("_hist").is_not_null()))
    if task.exclusions.encounter_ended:
        checks.append(("encounter_ended", pl.col("_ended").is_not_null()))
    rows = rows.with_columns(_first_reason(checks))
    # Among rows still in, the first of each (subject, time) stays; rows are sorted by encounter_id.
    duplicate = (pl.col(EXCLUDED_BY).is_null()
                 & ~pl.struct(SUBJECT_ID, PREDICTION_TIME, EXCLUDED_BY).is_first_distinct())
    censored = ~seen & (window_end > pl.col("_last"))
    rows = rows.with_columns(
        pl.when(pl.col(EXCLUDED_BY).is_not_null()).then(EXCLUDED_BY)
        .when(duplicate).then(pl.lit("duplicate_time"))
        .when(censored).then(pl.lit("censored"))
        .otherwise(None).alias(EXCLUDED_BY),
        pl.when(seen).then(pl.col("_next")).alias(OUTCOME_TIME),
        (seen != task.label.negate).alias(BOOLEAN_VALUE),
    )
    rows = sample_candidates(rows, task)
    return rows.with_columns(
        pl.when(pl.col(EXCLUDED_BY).is_null()).then(pl.col(BOOLEAN_VALUE)).alias(BOOLEAN_VALUE),
    ).select([pl.col(c).cast(t) for c, t in CANDIDATE_SCHEMA.items()])


def _first_reason(checks: list[tuple[str, pl.Expr]]) -> pl.Expr:
    """The name of the first check that holds (a null in a check counts as not holding)."""
    chain: Any = pl
    for name, condition in checks:
        chain = chain.when(condition.fill_null(False)).then(pl.lit(name))
    return chain.otherwise(pl.lit(None, pl.String)).alias(EXCLUDED_BY)


def sample_candidates(rows: pl.DataFrame, task: TaskDefinition) -> pl.DataFrame:
    """Keep at most ``max_per_subject`` rows still in (``excluded_by`` null) per subject: those
    with the smallest seeded keys; the others get ``excluded_by = 'sampling'``."""
    limit = task.sampling.max_per_subject
    if limit is None or rows.height == 0:
        return rows
    keys = stable_keys(rows[SUBJECT_ID], rows[PREDICTION_TIME], task.sampling.seed)
    kept = pl.col(EXCLUDED_BY).is_null()
    rank = pl.when(kept).then(pl.col("_key")).rank("ordinal").over(SUBJECT_ID)
    return rows.with_columns(keys.alias("_key")).with_columns(
        pl.when(kept & (rank > limit)).then(pl.lit("sampling")).otherwise(pl.col(EXCLUDED_BY))
        .alias(EXCLUDED_BY)
    )


def label_task(task: TaskDefinition, events: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The labelled prediction times of ``task``: ``LABEL_COLUMNS``, sorted by subject and time.

    ``subject_id``, ``prediction_time``, ``boolean_value`` are the MEDS label columns;
    ``outcome_time`` (the defining event, when seen), ``trigger_time`` and ``encounter_id``
    (of the trigger) are kept for audits such as leakage tests.
    """
    return candidate_table(task, events).filter(pl.col(EXCLUDED_BY).is_null()).select(LABEL_COLUMNS)
