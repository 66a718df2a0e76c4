"""Tiny event frames and task definitions written in code, and a plain-Python reference labeler.

The reference labeler restates the rules of ``ehrfm.tasks.labeler`` one candidate at a time
with loops, so the vectorised Polars version can be checked against it row by row.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections import defaultdict
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from ehrfm.meds_dataset import mark_complete
from ehrfm.schema import POLARS_EVENT_SCHEMA, to_meds_table
from ehrfm.tasks import TaskDefinition
from ehrfm.tasks.sampling import stable_keys


def ts(text: str) -> dt.datetime:
    """``"2020-01-02 03:04"`` -> datetime."""
    return dt.datetime.fromisoformat(text)


def frame(*rows: tuple[Any, ...]) -> pl.DataFrame:
    """Events from ``(subject, time or None, code[, encounter_id])`` tuples."""
    return pl.DataFrame(
        {
            "subject_id": [r[0] for r in rows],
            "time": [None if r[1] is None else ts(r[1]) for r in rows],
            "code": [r[2] for r in rows],
            "encounter_id": [r[3] if len(r) > 3 else None for r in rows],
        },
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String,
                "encounter_id": pl.String},
    )


BASE: dict[str, Any] = {
    "name": "unit_task",
    "prompt_token": "[TASK_007]",
    "trigger": {"codes": ["TRIGGER"], "offset": "0s"},
    "prediction_window": {"start": "0s", "end": "10d"},
    "label": {"codes": ["OUTCOME"]},
}


def make_task(**sections: Any) -> TaskDefinition:
    """``BASE`` with top-level sections merged in (``trigger={"offset": "1s"}`` keeps the codes)."""
    data = copy.deepcopy(BASE)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return TaskDefinition.from_mapping(data, source="unit_task.yaml")


def _matches(task_match: Any, code: str | None) -> bool:
    return code is not None and (code in task_match.codes
                                 or any(code.startswith(p) for p in task_match.prefixes))


def reference_candidates(task: TaskDefinition, events: pl.DataFrame) -> list[dict[str, Any]]:
    """Every candidate with ``excluded_by``, ``boolean_value``, ``outcome_time``; loops only."""
    by_subject: dict[int, list[tuple[dt.datetime, str, str | None]]] = defaultdict(list)
    for row in events.iter_rows(named=True):
        if row["time"] is not None and row["code"] is not None:
            by_subject[row["subject_id"]].append((row["time"], row["code"], row.get("encounter_id")))
    rows: list[dict[str, Any]] = []
    for subject, evs in by_subject.items():
        last = max(t for t, _, _ in evs)
        non_birth = [t for t, c, _ in evs if c != "MEDS_BIRTH"]
        first = min(non_birth) if non_birth else None
        births = [t for t, c, _ in evs if c == "MEDS_BIRTH"]
        deaths = [t for t, c, _ in evs if c == "MEDS_DEATH"]
        birth, death = (min(births) if births else None), (min(deaths) if deaths else None)
        needs_encounter = task.label.same_encounter or task.exclusions.encounter_ended
        for t, code, enc in evs:
            if not _matches(task.trigger.match, code):
                continue
            pt = t + task.trigger.offset
            age = None if birth is None else (pt - birth) / dt.timedelta(microseconds=1) / (86_400e6 * 365.25)
            obs = task.observation
            reason = None
            if death is not None and pt >= death:
                reason = "after_death"
            elif obs.min_history > dt.timedelta(0) and (first is None or pt - first < obs.min_history):
                reason = "min_history"
            elif obs.min_age_years is not None and (age is None or age < obs.min_age_years):
                reason = "min_age"
            elif obs.max_age_years is not None and (age is None or age > obs.max_age_years):
                reason = "max_age"
            elif needs_encounter and enc is None:
                reason = "no_encounter"
            elif any(_matches(task.exclusions.history, c) and u <= pt for u, c, _ in evs):
                reason = "history"
            elif task.exclusions.encounter_ended and any(
                c.startswith("VISIT_END/") and e == enc and u <= pt for u, c, e in evs
            ):
                reason = "encounter_ended"
            end = last if task.window.end is None else pt + task.window.end
            outcomes = [
                u for u, c, e in evs
                if _matches(task.label.match, c) and pt + task.window.start < u <= end
                and (not task.label.same_encounter or (enc is not None and e == enc))
            ]
            outcome = min(outcomes) if outcomes else None
            rows.append({"subject_id": subject, "prediction_time": pt, "encounter_id": enc, "reason": reason,
                         "outcome_time": outcome, "censored": outcome is None and end > last,
                         "boolean_value": (outcome is not None) != task.label.negate})
    rows.sort(key=lambda r: (r["subject_id"], r["prediction_time"], r["encounter_id"] is None,
                             r["encounter_id"] or ""))
    seen: set[tuple[int, dt.datetime]] = set()
    for r in rows:
        if r["reason"] is None:
            key = (r["subject_id"], r["prediction_time"])
            if key in seen:
                r["reason"] = "duplicate_time"
            else:
                seen.add(key)
                if r["censored"]:
                    r["reason"] = "censored"
    limit = task.sampling.max_per_subject
    if limit is not None and rows:
        keys = stable_keys(pl.Series([r["subject_id"] for r in rows]),
                           pl.Series([r["prediction_time"] for r in rows]), task.sampling.seed).to_list()
        kept_by_subject: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for i, r in enumerate(rows):
            if r["reason"] is None:
                kept_by_subject[r["subject_id"]].append((keys[i], i))
        for pairs in kept_by_subject.values():
            for _, i in sorted(pairs)[limit:]:
                rows[i]["reason"] = "sampling"
    return [
        {"subject_id": r["subject_id"], "prediction_time": r["prediction_time"],
         "encounter_id": r["encounter_id"], "excluded_by": r["reason"],
         "boolean_value": r["boolean_value"] if r["reason"] is None else None,
         "outcome_time": r["outcome_time"]}
        for r in rows
    ]


def write_meds_dir(root: Path, events: pl.DataFrame, splits: dict[int, str], *, shards: int = 2) -> Path:
    """A MEDS dataset directory: ``data/<i>.parquet`` (subjects dealt across shards) and splits."""
    full = events.with_columns([pl.lit(None, dtype).alias(name) for name, dtype in POLARS_EVENT_SCHEMA.items()
                                if name not in events.columns])
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    subjects = sorted(set(full["subject_id"].to_list()))
    for i in range(shards):
        mine = subjects[i::shards]
        part = full.filter(pl.col("subject_id").is_in(mine)).sort("subject_id", "time", nulls_last=False)
        pq.write_table(to_meds_table(part), root / "data" / f"{i}.parquet")
    pl.DataFrame({"subject_id": list(splits), "split": list(splits.values())},
                 schema={"subject_id": pl.Int64, "split": pl.String}).write_parquet(
        root / "metadata" / "subject_splits.parquet")
    mark_complete(root, {"dataset_name": "task_builders"})
    return root


def alias_bomb(levels: int = 9) -> str:
    """A YAML flow list whose levels each list the previous nine times: 9**levels values once expanded."""
    parts, previous = ["&l0 [x, x, x, x, x, x, x, x, x]"], "l0"
    for level in range(1, levels):
        parts.append(f"&l{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
        previous = f"l{level}"
    return "[" + ", ".join(parts) + "]"
