"""ehrfm's post-steps on ACES's rows: death exclusion, censoring and sampling, as ehrfm applies them.

An ACES config translated by :func:`ehrfm.tasks.aces.task_from_aces` defines the same cohort as
the ehrfm task, but ehrfm then applies three rules of its own to every task (see
:mod:`ehrfm.tasks.labeler`), which an ACES config cannot state:

``after_death``  prediction time at or after the subject's first ``MEDS_DEATH``
``censored``     negative (outcome not seen) and the window ends after the subject's last record
``sampling``     beyond ``max_per_subject`` per subject (the same seeded keys as the labeler)

:func:`post_step_reasons` gives each ACES row the first rule that drops it (null: kept), and
:func:`apply_ehrfm_post_steps` keeps the rows no rule drops: ehrfm's labels for the task.

>>> import datetime as dt, polars as pl
>>> from ehrfm.tasks import load_task
>>> t = dt.datetime
>>> events = pl.DataFrame({"subject_id": [1, 1], "time": [t(2020, 1, 1), t(2020, 6, 1)],
...                        "code": ["VISIT_END/AMB", "VISIT_END/AMB"]})
>>> aces_rows = pl.DataFrame({"subject_id": [1, 1], "prediction_time": [t(2019, 1, 1), t(2020, 1, 1)],
...                           "boolean_value": [False, False]})
>>> post_step_reasons(aces_rows, load_task("mortality_1y"), events, sample=False)["excluded_by"].to_list()
[None, 'censored']
"""

from __future__ import annotations

import polars as pl

from ehrfm.schema import BOOLEAN_VALUE, CODE, DEATH_CODE, PREDICTION_TIME, SUBJECT_ID, TIME

from ..definition import TaskDefinition
from ..labeler import EXCLUDED_BY, sample_candidates

__all__ = ["POST_STEPS", "apply_ehrfm_post_steps", "post_step_reasons"]

POST_STEPS = ("after_death", "censored", "sampling")


def post_step_reasons(labels: pl.DataFrame, task: TaskDefinition, events: pl.DataFrame | pl.LazyFrame,
                      *, sample: bool = True) -> pl.DataFrame:
    """``labels`` (``subject_id``, ``prediction_time``, ``boolean_value``, e.g. ACES's output) plus
    ``excluded_by``: the first of ``POST_STEPS`` that drops the row, or null.

    ``events`` are the MEDS events the labels were made from (``subject_id``, ``time``, ``code``).
    ``sample=False`` skips sampling (ACES never samples; compare with ehrfm's unsampled labels).
    """
    if task.label.negate:
        raise ValueError(f"{task.name}: a negated label has no ACES counterpart (ACES labels are counts)")
    lazy = events.lazy().filter(pl.col(TIME).is_not_null())
    subjects = lazy.group_by(SUBJECT_ID).agg(
        pl.col(TIME).max().cast(pl.Datetime("us")).alias("_last"),
        pl.col(TIME).filter(pl.col(CODE) == DEATH_CODE).min().cast(pl.Datetime("us")).alias("_death"),
    ).collect()
    pt = pl.col(PREDICTION_TIME)
    window_end = pl.col("_last") if task.window.end is None else pt + task.window.end
    rows = (labels.select(pl.col(SUBJECT_ID).cast(pl.Int64), pt.cast(pl.Datetime("us")),
                          pl.col(BOOLEAN_VALUE).cast(pl.Boolean))
            .join(subjects, on=SUBJECT_ID, how="left", maintain_order="left"))
    rows = rows.with_columns(
        pl.when(pl.col("_death").is_not_null() & (pt >= pl.col("_death"))).then(pl.lit("after_death"))
        .when(~pl.col(BOOLEAN_VALUE) & (window_end > pl.col("_last"))).then(pl.lit("censored"))
        .otherwise(pl.lit(None, pl.String)).alias(EXCLUDED_BY)
    )
    if sample:
        rows = sample_candidates(rows, task)  # the labeler's own sampling, on the rows still in
    return rows.select(SUBJECT_ID, PREDICTION_TIME, BOOLEAN_VALUE, EXCLUDED_BY)


def apply_ehrfm_post_steps(labels: pl.DataFrame, task: TaskDefinition, events: pl.DataFrame | pl.LazyFrame,
                           *, sample: bool = True) -> pl.DataFrame:
    """The rows of ``labels`` that ehrfm's post-steps keep, sorted by subject and prediction time."""
    reasons = post_step_reasons(labels, task, events, sample=sample)
    return (reasons.filter(pl.col(EXCLUDED_BY).is_null()).drop(EXCLUDED_BY)
            .sort(SUBJECT_ID, PREDICTION_TIME))
