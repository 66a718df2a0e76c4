"""Token sequence shards of one split as a torch ``Dataset``, cropped to the context length.

Reads what ``ehrfm tokenize`` wrote (``<tokens>/data/<split>/*.parquet``, one row per sequence,
aligned list columns) into flat numpy arrays plus offsets, so a million sequences cost a few
arrays rather than a million Python objects. A sequence longer than ``context_length`` keeps its
patient prefix and its newest whole events (:func:`ehrfm.tokenize.crop.crop_positions`, the same
rule as the tokenizer's own truncation). Batching lives in :mod:`ehrfm.batching`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from ehrfm.tokenize.crop import crop_positions
from ehrfm.tokenize.sequence_schema import AGE_YEARS, INPUT_IDS, TIME_DAYS, TOKEN_TYPE, VISIT_INDEX

__all__ = ["TokenSequenceDataset", "split_shards"]


def split_shards(tokens_dir: str | Path, split: str) -> list[Path]:
    """The token shards of one split, sorted; an error names the folder if there are none."""
    folder = Path(tokens_dir) / "data" / split
    shards = sorted(folder.glob("*.parquet"))
    if not shards:
        raise FileNotFoundError(f"{folder}: no token shards for split {split!r}; run `ehrfm tokenize` first")
    return shards


@dataclass
class _Flat:
    values: np.ndarray
    offsets: np.ndarray  # len = n_sequences + 1


class TokenSequenceDataset(Dataset):
    """Sequences of one split, cropped to ``context_length`` (patient prefix + newest whole events).

    Items are dicts of 1-D tensors: ``input_ids`` int64, ``time_days`` float64,
    ``age_years`` float32, ``visit_index`` int64, ``token_type`` int64.
    """

    def __init__(self, shards: Sequence[str | Path], context_length: int) -> None:
        if context_length < 8:
            raise ValueError(f"context_length must be at least 8 tokens, got {context_length}")
        self.context_length = context_length
        frame = pl.concat([pl.read_parquet(s, columns=[INPUT_IDS, TIME_DAYS, AGE_YEARS, VISIT_INDEX,
                                                       TOKEN_TYPE])
                           for s in shards])
        frame = frame.filter(pl.col(INPUT_IDS).list.len() >= 2)  # nothing to predict otherwise
        if frame.height == 0:
            raise ValueError(f"no sequence with at least 2 tokens in {list(map(str, shards))}")
        lengths = frame[INPUT_IDS].list.len().to_numpy().astype(np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        self._streams = {
            name: _Flat(frame[name].explode().to_numpy().astype(dtype), offsets)
            for name, dtype in ((INPUT_IDS, np.int64), (TIME_DAYS, np.float64), (AGE_YEARS, np.float32),
                                (VISIT_INDEX, np.int64), (TOKEN_TYPE, np.int64))
        }
        self.full_lengths = lengths
        self.lengths = lengths.copy()
        for index in np.flatnonzero(lengths > context_length):  # cropped: whole events, so often shorter
            self.lengths[index] = len(self._window(int(index)))

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def total_tokens(self) -> int:
        return int(self.lengths.sum())

    def _window(self, index: int) -> np.ndarray:
        start, end = self._streams[INPUT_IDS].offsets[index:index + 2]
        if end - start <= self.context_length:
            return np.arange(start, end)
        return start + crop_positions(self._streams[TOKEN_TYPE].values[start:end], self.context_length)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        positions = self._window(index)
        return {name: torch.from_numpy(flat.values[positions]) for name, flat in self._streams.items()}


