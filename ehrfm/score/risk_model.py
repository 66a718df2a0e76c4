"""``RiskModel``: a finetuned model bundle as one object that analytics code calls.

``RiskModel.from_pretrained(path)`` loads a bundle written by ``ehrfm finetune``
(``<output>/<head>/model``: weights, tokenizer, task definitions, calibrators, model card; see
:mod:`ehrfm.predict.bundle`) and checks that its parts belong together. ``predict`` scores a
MEDS dataset, FHIR files or an events frame (Polars or pandas) at chosen prediction times and
returns a Polars frame; ``embed`` returns the patient representations the model computes.

Prediction times: ``None`` scores each patient one second after their last event (so that event
is in the history); a zoned ``datetime`` scores everyone at that instant; a frame of
``(subject_id, prediction_time)`` rows (naive times are UTC, as in MEDS) scores exactly those.
Histories hold only events strictly before the prediction time. A row whose history holds no
event before its prediction time, or only codes the tokenizer does not know, is not scored:
``score_events`` reports it with the reason.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

import ehrfm
from ehrfm.meds_dataset import data_shards, has_event_shards, scan_events
from ehrfm.model import MultitaskModel
from ehrfm.model.pretrained import WEIGHTS_NAME
from ehrfm.predict.bundle import (
    CARD_JSON,
    TOKENIZER_DIR,
    BundleError,
    file_digest,
    read_calibrators,
    read_card,
    read_task_files,
)
from ehrfm.predict.calibration import Calibrator
from ehrfm.predict.cohort import LABELS, Cohort
from ehrfm.predict.histories import tokenize_histories
from ehrfm.predict.inference import embed_histories, predict_tasks_continuing
from ehrfm.predict.states import HistoryStates
from ehrfm.schema import CODE, PREDICTED_BOOLEAN_PROBABILITY, PREDICTION_TIME, SUBJECT_ID, TASK, TIME
from ehrfm.tokenize import EventTokenizer, TokenType
from ehrfm.tokenize.crop import PREFIX_TYPES
from ehrfm.tokenize.sequence_schema import INPUT_IDS, TOKEN_TYPE

__all__ = ["NO_EVENTS", "ONLY_UNKNOWN", "RiskModel", "ScoredBatch", "events_from", "prediction_rows",
           "prediction_times_frame"]

NO_EVENTS = "no events before the prediction time"
ONLY_UNKNOWN = "only codes the tokenizer does not know"
LAST_EVENT_OFFSET = dt.timedelta(seconds=1)
# Padded tokens per scoring batch. On a CPU small batches are faster and far leaner (measured on
# the small preset, 615 Synthea patients at 128 tokens: 4096 -> 7.9 s and 0.84 GB peak, 32768 ->
# 17.7 s and 2.0 GB); a GPU wants large ones.
CPU_TOKENS_PER_BATCH = 4096
CUDA_TOKENS_PER_BATCH = 32768
SKIP_REASON = "reason"

Data = str | Path | Sequence[str | Path] | pl.DataFrame | pl.LazyFrame | Any
PredictionTimes = None | dt.datetime | pl.DataFrame | Any


@dataclass
class ScoredBatch:
    """What one scoring call produced: predictions, and the rows it could not score (with why)."""

    predictions: pl.DataFrame
    skipped: pl.DataFrame
    states: HistoryStates | None = None  # each scored row's state after its history (if kept)
    continued: int = 0  # rows that continued from a saved state instead of reading it all


def events_from(data: Data) -> pl.DataFrame:
    """A MEDS events frame from a MEDS directory, FHIR paths (ingested here) or a Polars/pandas frame."""
    if isinstance(data, pl.LazyFrame):
        data = data.collect()
    if type(data).__module__.startswith("pandas"):
        data = pl.from_pandas(data)
    if isinstance(data, pl.DataFrame):
        missing = [c for c in (SUBJECT_ID, TIME, CODE) if c not in data.columns]
        if missing:
            raise ValueError(f"the events frame lacks column(s) {missing}; a MEDS events frame has "
                             f"subject_id, time, code (and optionally numeric_value, text_value, ...); "
                             f"it has {data.columns}")
        return data
    paths = [Path(p) for p in ([data] if isinstance(data, (str, Path)) else list(data))]
    if len(paths) == 1 and has_event_shards(paths[0]):
        return scan_events(paths[0]).collect()
    with tempfile.TemporaryDirectory(prefix="ehrfm-score-") as scratch:
        ehrfm.ingest_fhir([str(p) for p in paths], Path(scratch) / "meds", workers=1)
        return pl.concat([pl.read_parquet(s) for s in data_shards(Path(scratch) / "meds")])


def prediction_rows(events: pl.DataFrame, prediction_times: PredictionTimes) -> pl.DataFrame:
    """``subject_id, prediction_time`` rows to score (see the module docstring for the forms)."""
    subjects = events.select(pl.col(SUBJECT_ID).cast(pl.Int64)).unique().sort(SUBJECT_ID)
    if prediction_times is None:
        last = (events.filter(pl.col(TIME).is_not_null()).group_by(pl.col(SUBJECT_ID).cast(pl.Int64))
                .agg(pl.col(TIME).cast(pl.Datetime("us")).max().alias(PREDICTION_TIME)))
        rows = subjects.join(last, on=SUBJECT_ID, how="left").with_columns(
            pl.col(PREDICTION_TIME) + pl.duration(microseconds=int(LAST_EVENT_OFFSET.total_seconds() * 1e6)))
        # a subject with only static facts has no last event: it is scored at no time, reported later
        return rows.sort(SUBJECT_ID)
    if isinstance(prediction_times, dt.datetime):
        if prediction_times.tzinfo is None:
            raise ValueError(f"prediction time {prediction_times.isoformat()} has no time zone; pass an aware "
                             "datetime (e.g. datetime(2024, 1, 1, tzinfo=timezone.utc))")
        instant = prediction_times.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return subjects.with_columns(pl.lit(instant, pl.Datetime("us")).alias(PREDICTION_TIME))
    return prediction_times_frame(prediction_times)


def prediction_times_frame(table: Any) -> pl.DataFrame:
    """``subject_id`` (Int64), ``prediction_time`` (naive UTC) rows from a Polars or pandas frame.

    Zoned times are converted to UTC; naive ones are taken as UTC (the MEDS convention).
    """
    if type(table).__module__.startswith("pandas"):
        table = pl.from_pandas(table)
    if not isinstance(table, pl.DataFrame):
        raise TypeError(f"prediction_times must be None, an aware datetime or a frame of (subject_id, "
                        f"prediction_time); got {type(table).__name__}")
    missing = [c for c in (SUBJECT_ID, PREDICTION_TIME) if c not in table.columns]
    if missing:
        raise ValueError(f"the prediction-times frame lacks column(s) {missing}; it has {table.columns}")
    column = table[PREDICTION_TIME]
    if not isinstance(column.dtype, pl.Datetime):
        raise ValueError(f"prediction_time must be a datetime column, got {column.dtype}")
    times = pl.col(PREDICTION_TIME)
    if column.dtype.time_zone is not None:
        times = times.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    rows = table.select(pl.col(SUBJECT_ID).cast(pl.Int64), times.cast(pl.Datetime("us")))
    if rows.null_count().sum_horizontal().item():
        raise ValueError("the prediction-times frame has null subject_id or prediction_time values")
    return rows.unique(maintain_order=True).sort(SUBJECT_ID, PREDICTION_TIME)


class RiskModel:
    """A finetuned multitask model with its tokenizer, tasks, calibrators and card.

    >>> import tempfile
    >>> RiskModel.from_pretrained(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    ehrfm.model.pretrained.MissingPretrainedFileError: .../config.json: missing (a model directory holds config.json and model.safetensors)
    """

    def __init__(self, model: MultitaskModel, tokenizer: EventTokenizer, tasks: list[Any],
                 calibrators: dict[str, Calibrator], card: dict[str, Any], directory: Path) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.task_definitions = {task.name: task for task in tasks}
        self.calibrators = calibrators
        self.card = card
        self.directory = directory
        self.context_length = int(card["context_length"])
        self.name = str(card.get("name") or directory.parent.name)
        self.version = f"ehrfm {card.get('ehrfm_version', '?')}"
        # identifies these weights: saved states and resumed results must come from them
        self.weights_digest = file_digest(directory / WEIGHTS_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> RiskModel:
        """Load and cross-check a bundle; every mismatch names the file (:class:`BundleError`)."""
        directory = Path(directory)
        model = MultitaskModel.from_pretrained(directory, map_location=map_location)
        tokenizer_dir = directory / TOKENIZER_DIR
        if not tokenizer_dir.is_dir():
            raise BundleError(f"{tokenizer_dir}: missing; a bundle carries the tokenizer it was trained with")
        tokenizer = EventTokenizer.from_pretrained(tokenizer_dir)
        if tokenizer.vocab_size != model.config.vocab_size:
            raise BundleError(f"{tokenizer_dir}: the tokenizer has {tokenizer.vocab_size} tokens, the model in "
                              f"{directory / 'config.json'} was built for {model.config.vocab_size}")
        card = read_card(directory)
        recorded = card.get("tokenizer_vocabulary_sha256")
        if recorded is not None and recorded != tokenizer.vocabulary_.content_hash():
            raise BundleError(f"{tokenizer_dir}: its vocabulary is not the one the model was finetuned with "
                              f"(tokenizer_vocabulary_sha256 in {directory / CARD_JSON} differs): the same ids "
                              "would mean other codes")
        tasks = read_task_files(directory, model.task_names)
        prompts = tokenizer.convert_tokens_to_ids([task.prompt_token for task in tasks])
        if prompts != model.prompt_token_ids.tolist():
            raise BundleError(f"{directory / 'tasks'}: the tasks' prompt tokens {[t.prompt_token for t in tasks]} "
                              f"are ids {prompts} in the tokenizer, but the model was trained on ids "
                              f"{model.prompt_token_ids.tolist()}")
        calibrators = read_calibrators(directory, model.task_names)
        if not isinstance(card.get("context_length"), int) or card["context_length"] < 1:
            raise BundleError(f"{directory / CARD_JSON}: needs the positive integer context_length the model was "
                              f"finetuned with; got {card.get('context_length')!r}")
        return cls(model, tokenizer, tasks, calibrators, card, directory)

    @property
    def tasks(self) -> list[str]:
        """The names of the tasks this model answers, in its column order."""
        return list(self.model.task_names)

    def _task_names(self, tasks: Sequence[str] | None) -> list[str]:
        if tasks is None:
            return self.tasks
        if isinstance(tasks, str):
            tasks = [tasks]
        unknown = [t for t in tasks if t not in self.model.task_names]
        if unknown:
            raise KeyError(f"unknown task(s) {unknown}; this model answers {self.tasks}")
        return list(tasks)

    def _histories(self, events: pl.DataFrame, rows: pl.DataFrame,
                   context_length: int | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Tokenized histories of the scorable rows, and the rows skipped with their reason."""
        timeless = rows.filter(pl.col(PREDICTION_TIME).is_null()).select(
            SUBJECT_ID, PREDICTION_TIME, pl.lit(NO_EVENTS).alias(SKIP_REASON))
        rows = rows.drop_nulls(PREDICTION_TIME)
        events = events.filter(pl.col(SUBJECT_ID).cast(pl.Int64).is_in(rows[SUBJECT_ID].implode()))
        if rows.height == 0:
            return pl.DataFrame(), timeless
        histories = tokenize_histories(events, self.tokenizer, rows,
                                       context_length=context_length or self.context_length)
        # Body tokens: everything but the prefix and the interval tokens between visits.
        flat = (histories.with_row_index("_row").select("_row", INPUT_IDS, TOKEN_TYPE)
                .explode(INPUT_IDS, TOKEN_TYPE)
                .filter(~pl.col(TOKEN_TYPE).is_in([*PREFIX_TYPES, int(TokenType.INTERVAL)])))
        known = (flat.group_by("_row").agg(pl.len().alias("_body"),
                                           (~pl.col(INPUT_IDS).is_in(self.tokenizer.unk_token_ids())).sum()
                                           .alias("_known")))
        histories = (histories.with_row_index("_row").join(known, on="_row", how="left")
                     .with_columns(pl.when(pl.col("_body").fill_null(0) == 0).then(pl.lit(NO_EVENTS))
                                   .when(pl.col("_known") == 0).then(pl.lit(ONLY_UNKNOWN))
                                   .otherwise(None).alias(SKIP_REASON))
                     .drop("_row", "_body", "_known"))
        skipped = histories.filter(pl.col(SKIP_REASON).is_not_null()).select(SUBJECT_ID, PREDICTION_TIME, SKIP_REASON)
        scorable = histories.filter(pl.col(SKIP_REASON).is_null()).drop(SKIP_REASON)
        return scorable, pl.concat([timeless, skipped]).sort(SUBJECT_ID, PREDICTION_TIME)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _batch_tokens(self, tokens_per_batch: int | None) -> int:
        if tokens_per_batch is not None:
            return tokens_per_batch
        return CUDA_TOKENS_PER_BATCH if self._device().type == "cuda" else CPU_TOKENS_PER_BATCH

    def score_events(self, events: pl.DataFrame, rows: pl.DataFrame, *, tasks: Sequence[str] | None = None,
                     calibrated: bool = True, tokens_per_batch: int | None = None,
                     context_length: int | None = None, saved_states: HistoryStates | None = None,
                     keep_states: bool = False) -> ScoredBatch:
        """Probabilities for ``rows`` (``subject_id, prediction_time``) from ``events``; long format.

        ``context_length`` overrides the bundle's (histories longer than it are cropped).
        ``saved_states`` (from an earlier call with ``keep_states``) let a history that begins
        with what its saved state has read continue from it: only its new tokens are read, and
        the result equals reading it all (see :mod:`ehrfm.predict.states`).
        """
        names = self._task_names(tasks)
        context_length = context_length or self.context_length
        histories, skipped = self._histories(events, rows, context_length)
        columns = {SUBJECT_ID: pl.Int64, PREDICTION_TIME: pl.Datetime("us"), TASK: pl.String,
                   PREDICTED_BOOLEAN_PROBABILITY: pl.Float64, "calibrated": pl.Boolean}
        if histories.height == 0:
            return ScoredBatch(pl.DataFrame(schema=columns), skipped)
        nan_labels = pl.Series(LABELS, [[float("nan")] * len(names)] * histories.height, pl.List(pl.Float32))
        cohort = Cohort(histories.with_columns(nan_labels), names)
        result = predict_tasks_continuing(self.model, cohort, saved=saved_states, keep_states=keep_states,
                                          tokens_per_batch=self._batch_tokens(tokens_per_batch),
                                          context_length=context_length)
        probabilities = result.probabilities
        frames = []
        keys = histories.select(SUBJECT_ID, PREDICTION_TIME)
        for k, task in enumerate(names):
            p = probabilities[:, k]
            if calibrated:
                p = self.calibrators[task].transform(p)
            frames.append(keys.with_columns(pl.lit(task).alias(TASK),
                                            pl.Series(PREDICTED_BOOLEAN_PROBABILITY, p, pl.Float64),
                                            pl.lit(calibrated).alias("calibrated")))
        return ScoredBatch(pl.concat(frames).select(list(columns)), skipped, result.states,
                           int(result.continued.sum()))

    def predict(self, data: Data, tasks: Sequence[str] | None = None, prediction_times: PredictionTimes = None,
                calibrated: bool = True, *, tokens_per_batch: int | None = None) -> pl.DataFrame:
        """One row per scored (patient, prediction time, task): ``subject_id``, ``prediction_time``,
        ``task``, ``predicted_boolean_probability`` (calibrated unless ``calibrated=False``),
        ``calibrated``, ``model``, ``model_version``. Rows that could not be scored are left out
        (``score_events`` says why)."""
        events = events_from(data)
        batch = self.score_events(events, prediction_rows(events, prediction_times), tasks=tasks,
                                  calibrated=calibrated, tokens_per_batch=tokens_per_batch)
        return batch.predictions.with_columns(pl.lit(self.name).alias("model"),
                                              pl.lit(self.version).alias("model_version"))

    def embed(self, data: Data, prediction_times: PredictionTimes = None, *,
              tokens_per_batch: int | None = None) -> pl.DataFrame:
        """``subject_id``, ``prediction_time`` and ``embedding`` (the finetuned backbone's state after
        the history, a list of ``d_model`` floats) for every scorable row."""
        events = events_from(data)
        histories, _ = self._histories(events, prediction_rows(events, prediction_times))
        if histories.height == 0:
            return pl.DataFrame(schema={SUBJECT_ID: pl.Int64, PREDICTION_TIME: pl.Datetime("us"),
                                        "embedding": pl.List(pl.Float32)})
        nan_labels = pl.Series(LABELS, [[float("nan")]] * histories.height, pl.List(pl.Float32))
        cohort = Cohort(histories.with_columns(nan_labels), self.tasks[:1])
        vectors = embed_histories(self.model.backbone, cohort,
                                  tokens_per_batch=self._batch_tokens(tokens_per_batch),
                                  context_length=self.context_length)
        return histories.select(SUBJECT_ID, PREDICTION_TIME).with_columns(
            pl.Series("embedding", vectors.tolist(), pl.List(pl.Float32)))

    def __repr__(self) -> str:
        return f"RiskModel({self.name!r}, tasks={self.tasks}, context_length={self.context_length})"
