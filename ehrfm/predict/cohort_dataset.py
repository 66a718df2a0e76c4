"""Torch dataset and collation for a :class:`~ehrfm.predict.cohort.Cohort`.

Batches mix tasks: a row carries every task's label (NaN where the task has none), and the
length-bucketed sampler groups rows of similar history length whatever their tasks. A history
longer than ``context_length`` is cropped to its prefix and newest whole events
(:func:`ehrfm.tokenize.crop.crop_positions`). With ``starts``, row ``i`` yields only its tokens
from position ``starts[i]`` on: the ones a saved recurrent state has not read yet (such rows are
never cropped; see :mod:`ehrfm.predict.states`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ehrfm.batching import collate_sequences
from ehrfm.tokenize.crop import crop_positions
from ehrfm.tokenize.sequence_schema import (
    AGE_YEARS,
    INPUT_IDS,
    STREAM_COLUMNS,
    TIME_DAYS,
    TOKEN_TYPE,
    VISIT_INDEX,
)

from .cohort import Cohort

__all__ = ["CohortDataset", "collate_cohort"]

_DTYPES = {INPUT_IDS: np.int64, TIME_DAYS: np.float64, AGE_YEARS: np.float32, VISIT_INDEX: np.int64,
           TOKEN_TYPE: np.int64}


class CohortDataset(Dataset):
    """Items: the five streams (1-D tensors), ``prompt_*`` scalars and ``labels`` ``(k,)``."""

    def __init__(self, cohort: Cohort, context_length: int | None = None,
                 starts: np.ndarray | None = None) -> None:
        frame = cohort.frame
        lengths = frame[INPUT_IDS].list.len().to_numpy().astype(np.int64)
        self.offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.streams = {name: frame[name].explode().to_numpy().astype(_DTYPES[name])
                        for name in STREAM_COLUMNS}
        self.context_length = context_length
        self.start_at(np.zeros(len(lengths), np.int64) if starts is None else starts)
        self.prompt_time_days = frame["prompt_time_days"].to_numpy().astype(np.float64)
        self.prompt_age_years = np.nan_to_num(frame["prompt_age_years"].to_numpy().astype(np.float32),
                                              nan=0.0)
        self.prompt_visit_index = frame["prompt_visit_index"].to_numpy().astype(np.int64)
        self.labels = cohort.label_matrix()

    def __len__(self) -> int:
        return len(self.lengths)

    def start_at(self, starts: np.ndarray) -> None:
        """Make row ``i`` yield its tokens from position ``starts[i]`` on (see the module docstring)."""
        lengths = np.diff(self.offsets)
        starts = np.asarray(starts, np.int64)
        if starts.shape != lengths.shape or (starts > lengths).any() or (starts < 0).any():
            raise ValueError("starts must give, per row, a position within its history")
        if self.context_length is not None and (lengths[starts > 0] > self.context_length).any():
            raise ValueError(f"a history continued from a saved state must fit context_length={self.context_length}")
        self.starts = starts
        self.lengths = lengths - starts
        if self.context_length is not None:
            for index in np.flatnonzero(lengths > self.context_length):
                self.lengths[index] = len(self.history_positions(int(index)))

    def history_positions(self, index: int) -> slice | np.ndarray:
        """Positions (in the flat streams) of row ``index``'s whole history, cropped if too long."""
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        if self.context_length is None or end - start <= self.context_length:
            return slice(start, end)
        return start + crop_positions(self.streams[TOKEN_TYPE][start:end], self.context_length)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        positions = self.history_positions(index)
        if self.starts[index]:
            positions = slice(positions.start + int(self.starts[index]), positions.stop)
        item = {name: torch.from_numpy(values[positions]) for name, values in self.streams.items()}
        item["prompt_time_days"] = torch.tensor(self.prompt_time_days[index], dtype=torch.float64)
        item["prompt_age_years"] = torch.tensor(self.prompt_age_years[index])
        item["prompt_visit_index"] = torch.tensor(self.prompt_visit_index[index])
        item["labels"] = torch.from_numpy(self.labels[index])
        item["row"] = torch.tensor(index)
        return item


def collate_cohort(items: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded history streams (NaN-safe) + stacked prompt values, labels and row ids.

    Histories cut at a prediction time always have known times: with no event before the cut,
    the tokenizer stamps the patient prefix with the prediction time itself.
    """
    batch = collate_sequences(items, pad_token_id)
    for key in ("prompt_time_days", "prompt_age_years", "prompt_visit_index", "labels", "row"):
        batch[key] = torch.stack([item[key] for item in items])
    return batch
