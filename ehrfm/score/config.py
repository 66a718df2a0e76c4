"""Settings of one ``ehrfm score`` run; ``conf/score.yaml`` holds the same keys for the CLI.

>>> ScoreConfig(bundle="runs/mtf/task_per_task/model", input="meds", output="scores").prediction_times
'last_event'
>>> ScoreConfig(bundle="m", input="meds", output="s", as_of="2020-01-01")
Traceback (most recent call last):
...
ValueError: as_of must carry a time zone (e.g. 2020-01-01T00:00:00+00:00 or ...Z); got '2020-01-01'
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = ["ScoreConfig", "parse_aware_timestamp"]


def parse_aware_timestamp(text: str, *, key: str) -> dt.datetime:
    """An ISO-8601 timestamp that must carry a zone, converted to UTC."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{key} must be an ISO-8601 timestamp with a time zone; got {text!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"{key} must carry a time zone (e.g. 2020-01-01T00:00:00+00:00 or ...Z); got {text!r}")
    return value.astimezone(dt.timezone.utc)


@dataclass
class ScoreConfig:
    """``bundle`` (a finetuned model bundle) scores ``input`` (a MEDS dataset or FHIR) into ``output``.

    Prediction times: ``last_event`` (default) predicts for each patient one second after their
    last event, so that event is in the history; a parquet path gives ``(subject_id,
    prediction_time)`` rows; ``as_of`` (a zoned timestamp) scores everyone at that instant.
    ``tasks`` defaults to every task of the bundle. ``calibrated`` applies the bundle's
    calibrators (fit on tuning by ``ehrfm finetune``). ``save_states``/``states_from``: incremental
    rescoring; ``workers``/``worker``: several jobs share the shards (see :mod:`ehrfm.score.run`).
    """

    bundle: str
    input: str | list[str]
    output: str
    tasks: list[str] | None = None
    prediction_times: str = "last_event"
    as_of: str | None = None
    calibrated: bool = True
    risk_assessments: bool = True  # also write FHIR R4 RiskAssessment ndjson
    tokens_per_batch: int | None = None  # padded tokens per batch; default 4096 on a CPU, 32768 on a GPU
    device: str | None = None  # default: cuda when available, else cpu
    context_length: int | None = None  # default: the bundle's (longer histories keep their newest events)
    save_states: bool = False  # keep each history's recurrent state under <output>/states
    states_from: str | None = None  # continue from the states an earlier run saved (its <output>/states)
    labels_dir: str | None = None  # an `ehrfm label` output: each task's label fills boolean_value
    workers: int = 1  # scale-out: this many jobs share the shards ...
    worker: int | None = None  # ... and this one scores shards worker, worker + workers, ...
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.as_of is not None:
            parse_aware_timestamp(self.as_of, key="as_of")
        for key in ("tokens_per_batch", "workers", "context_length"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be positive, got {value}")
