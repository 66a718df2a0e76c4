"""Inference over a cohort: every task's probability from one history pass per prediction time.

``predict_tasks`` walks the cohort in length-sorted batches; each batch's histories run through
the backbone once and every task is one prompt step from the resulting state (see
:mod:`ehrfm.model.multitask`). ``embed_histories`` gives a backbone's state at each history's
last token (the linear probe's features). ``predictions_frame`` lays probabilities out in the
predictions table of :mod:`ehrfm.predict.tables`. ``predict_tasks_continuing`` does what
``predict_tasks`` does, but can start each history from a saved recurrent state and return the
states after the histories (incremental rescoring, :mod:`ehrfm.predict.states`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from ehrfm.model import PROMPT_KEYS, BackboneState, MambaBackbone, MultitaskModel, last_token_hidden
from ehrfm.model.mixers import MixerState
from ehrfm.schema import (
    BOOLEAN_VALUE,
    MODEL,
    PREDICTED_BOOLEAN_PROBABILITY,
    PREDICTION_TIME,
    SPLIT,
    SUBJECT_ID,
    TASK,
)

from .cohort import Cohort
from .cohort_dataset import CohortDataset, collate_cohort
from .states import HistoryStates, stream_digest
from .tables import PREDICTION_SCHEMA

__all__ = ["ContinuedPredictions", "embed_histories", "predict_tasks", "predict_tasks_continuing",
           "predictions_frame", "sorted_batches"]


def sorted_batches(dataset: CohortDataset, tokens_per_batch: int, pad_token_id: int,
                   max_batch_size: int = 256) -> Iterator[dict[str, torch.Tensor]]:
    """Length-sorted batches under a padded-token budget (scoring order; rows keep their ids)."""
    order = np.argsort(dataset.lengths, kind="stable")
    start = 0
    while start < len(order):
        end = start + 1
        while (end < len(order) and end - start < max_batch_size
               and int(dataset.lengths[order[end]]) * (end - start + 1) <= tokens_per_batch):
            end += 1
        yield collate_cohort([dataset[int(i)] for i in order[start:end]], pad_token_id)
        start = end


@torch.no_grad()
def predict_tasks(model: MultitaskModel, cohort: Cohort, *, tokens_per_batch: int = 32768,
                  context_length: int | None = None) -> np.ndarray:
    """``(rows, tasks)`` probabilities for every row and every task of ``model``.

    Tasks are matched by name: ``cohort.task_names`` must be a subset of the model's tasks, and
    the columns come out in ``cohort.task_names`` order.
    """
    return predict_tasks_continuing(model, cohort, tokens_per_batch=tokens_per_batch,
                                    context_length=context_length).probabilities


@dataclass
class ContinuedPredictions:
    """``probabilities (rows, tasks)``; ``continued (rows,)``: True where a saved state was
    continued; ``states``: each row's state after its history (when asked for)."""

    probabilities: np.ndarray
    continued: np.ndarray
    states: HistoryStates | None


def _history_streams(dataset: CohortDataset, index: int, n_tokens: int | None = None) -> list[np.ndarray]:
    positions = dataset.history_positions(index)
    if n_tokens is not None:
        positions = slice(positions.start, positions.start + n_tokens)
    return [dataset.streams[name][positions] for name in dataset.streams]


def _resume_points(dataset: CohortDataset, subject_ids: np.ndarray, saved: HistoryStates,
                   context_length: int | None) -> np.ndarray:
    """Per row, the saved state to continue (index into ``saved``), or -1 to read it whole.

    A row continues only when a full read would see the same tokens: its history is not
    cropped, it starts with exactly the tokens the state has read (same digest), and so the
    continued result equals a full rescore.
    """
    latest: dict[int, int] = {}
    for j in np.argsort(saved.prediction_time_us, kind="stable"):
        latest[int(saved.subject_id[j])] = int(j)
    raw = np.diff(dataset.offsets)
    points = np.full(len(subject_ids), -1, np.int64)
    for i, subject in enumerate(subject_ids.tolist()):
        j = latest.get(int(subject))
        if j is None:
            continue
        n = int(saved.n_tokens[j])
        if not 0 < n <= raw[i] or (context_length is not None and raw[i] > context_length):
            continue
        if stream_digest(_history_streams(dataset, i, n)) == bytes(saved.digest[j]):
            points[i] = j
    return points


def _batch_state(saved: HistoryStates, points: np.ndarray, backbone: MambaBackbone,
                 device: torch.device) -> BackboneState:
    """Saved states for the rows with a resume point, zero (fresh) states for the others."""
    if (points >= 0).all():  # the usual case in incremental rescoring: gather, nothing to fill
        source = torch.as_tensor(points)
        return BackboneState(
            layers=[MixerState(conv=s.conv[source].to(device), ssm=s.ssm[source].to(device))
                    for s in saved.state.layers],
            time_origin=saved.state.time_origin[source].to(device))
    state = backbone.allocate_state(len(points), device)
    rows = np.flatnonzero(points >= 0)
    index = torch.as_tensor(rows, device=device)
    source = torch.as_tensor(points[rows])
    layers = []
    for fresh, kept in zip(state.layers, saved.state.layers):
        conv, ssm = fresh.conv.clone(), fresh.ssm.clone()
        conv[index] = kept.conv[source].to(device, conv.dtype)
        ssm[index] = kept.ssm[source].to(device, ssm.dtype)
        layers.append(MixerState(conv=conv, ssm=ssm))
    origin = state.time_origin.clone()
    origin[index] = saved.state.time_origin[source].to(device)
    return BackboneState(layers=layers, time_origin=origin)


@torch.no_grad()
def predict_tasks_continuing(model: MultitaskModel, cohort: Cohort, *, saved: HistoryStates | None = None,
                             keep_states: bool = False, tokens_per_batch: int = 32768,
                             context_length: int | None = None) -> ContinuedPredictions:
    """``predict_tasks``, continuing histories from ``saved`` states where that is exact.

    A row continues from the latest saved state of its subject when its history begins with
    the very tokens that state has read (checked by digest) and is not cropped; it then reads
    only the tokens after them. Every other row is read whole. With ``keep_states`` the
    result carries each row's state after its whole history, to be saved for next time.
    """
    model.eval()
    device = next(model.parameters()).device
    task_index = model.task_index(cohort.task_names).to(device)
    subject_ids = cohort.frame[SUBJECT_ID].to_numpy().astype(np.int64)
    dataset = CohortDataset(cohort, context_length)
    points = (np.full(len(dataset), -1, np.int64) if saved is None or not len(saved)
              else _resume_points(dataset, subject_ids, saved, context_length))
    starts = np.zeros(len(dataset), np.int64)
    if saved is not None:
        starts[points >= 0] = saved.n_tokens[points[points >= 0]]
    dataset.start_at(starts)
    out = np.full((len(dataset), len(cohort.task_names)), np.nan, dtype=np.float64)
    kept = HistoryStates.empty(model.backbone, len(dataset)) if keep_states else None
    for batch in sorted_batches(dataset, tokens_per_batch, model.config.pad_token_id):
        rows = batch.pop("row").numpy()
        batch.pop("labels")
        batch = {key: value.to(device) for key, value in batch.items()}
        initial = None
        if (points[rows] >= 0).any():
            initial = _batch_state(saved, points[rows], model.backbone, device)
        if batch["input_ids"].shape[1] == 0:  # every row already read: prompt from the saved states
            state = initial
        else:
            _, state = model.encode(batch, state=initial)
        logits = model.head(model.prompt(state, batch, task_index), task_index)
        out[rows] = torch.sigmoid(logits.double()).cpu().numpy()
        if kept is not None:
            index = torch.as_tensor(rows)
            for target, source in zip(kept.state.layers, state.layers):
                target.conv[index] = source.conv.to("cpu", target.conv.dtype)
                target.ssm[index] = source.ssm.to("cpu", target.ssm.dtype)
            kept.state.time_origin[index] = state.time_origin.cpu()
    if kept is not None:
        kept.subject_id[:] = subject_ids
        kept.prediction_time_us[:] = cohort.frame[PREDICTION_TIME].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
        for i in range(len(dataset)):
            streams = _history_streams(dataset, i)
            kept.n_tokens[i] = len(streams[0])
            kept.digest[i] = np.frombuffer(stream_digest(streams), np.uint8)
    return ContinuedPredictions(out, points >= 0, kept)


@torch.no_grad()
def embed_histories(backbone: MambaBackbone, cohort: Cohort, *, tokens_per_batch: int = 32768,
                    context_length: int | None = None) -> np.ndarray:
    """``(rows, d)`` hidden state at each history's last token (the linear probe's features)."""
    backbone.eval()
    device = next(backbone.parameters()).device
    dataset = CohortDataset(cohort, context_length)
    out = np.zeros((len(dataset), backbone.config.d_model), dtype=np.float32)
    for batch in sorted_batches(dataset, tokens_per_batch, backbone.config.pad_token_id):
        rows = batch.pop("row").numpy()
        history = {key: value.to(device) for key, value in batch.items()
                   if key not in (*PROMPT_KEYS, "labels")}
        hidden = backbone(history)
        out[rows] = last_token_hidden(hidden, history["attention_mask"]).float().cpu().numpy()
    return out


def predictions_frame(cohort: Cohort, probabilities: np.ndarray, model_name: str) -> pl.DataFrame:
    """Long predictions table (``PREDICTION_SCHEMA``) for the labelled (row, task) entries only."""
    labels = cohort.label_matrix()
    frames = []
    keys = cohort.frame.select(SPLIT, SUBJECT_ID, PREDICTION_TIME)
    for k, task in enumerate(cohort.task_names):
        known = ~np.isnan(labels[:, k])
        frames.append(keys.filter(pl.Series(known)).with_columns(
            pl.lit(task).alias(TASK), pl.lit(model_name).alias(MODEL),
            pl.Series(BOOLEAN_VALUE, labels[known, k] == 1.0),
            pl.Series(PREDICTED_BOOLEAN_PROBABILITY, probabilities[known, k], pl.Float64)))
    return pl.concat(frames).select(list(PREDICTION_SCHEMA))
