"""Inference over a cohort: every task's probability from one history pass per prediction time.

``predict_tasks`` walks the cohort in length-sorted batches; each batch's histories run through
the backbone once and every task is one prompt step from the resulting state (see
:mod:`ehrfm.model.multitask`). ``embed_histories`` gives a backbone's state at each history's
last token (the linear probe's features). ``predictions_frame`` lays probabilities out in the
predictions table of :mod:`ehrfm.predict.tables`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import torch

from ehrfm.model import PROMPT_KEYS, MambaBackbone, MultitaskModel, last_token_hidden
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
from .tables import PREDICTION_SCHEMA

__all__ = ["embed_histories", "predict_tasks", "predictions_frame", "sorted_batches"]


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
    model.eval()
    device = next(model.parameters()).device
    task_index = model.task_index(cohort.task_names).to(device)
    dataset = CohortDataset(cohort, context_length)
    out = np.full((len(dataset), len(cohort.task_names)), np.nan, dtype=np.float64)
    for batch in sorted_batches(dataset, tokens_per_batch, model.config.pad_token_id):
        rows = batch.pop("row").numpy()
        batch.pop("labels")
        batch = {key: value.to(device) for key, value in batch.items()}
        out[rows] = torch.sigmoid(model(batch, task_index).double()).cpu().numpy()
    return out


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
