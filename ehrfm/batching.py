"""Batching token sequences: length-bucketed batch sampling and padded collation.

Shared by pretraining (token shards), finetuning and scoring (cohorts at prediction times).
Batches group sequences of similar length (sorted inside shuffled pools), which keeps padding
low; the fraction of padding is measured, not guessed, and reported by :func:`padding_fraction`.

>>> import numpy as np
>>> lengths = np.array([5, 50, 6, 48, 7, 52])
>>> batches = list(LengthBucketBatchSampler(lengths, tokens_per_batch=110, seed=0, shuffle=False))
>>> sorted(sorted(int(lengths[i]) for i in b) for b in batches)
[[5, 6, 7], [48, 50], [52]]
>>> round(padding_fraction(lengths, batches), 3)
0.029
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ehrfm.tokenize.sequence_schema import AGE_YEARS, INPUT_IDS, TIME_DAYS, TOKEN_TYPE, VISIT_INDEX

__all__ = ["LengthBucketBatchSampler", "collate_sequences", "padding_fraction"]


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of similar-length sequences under a token budget, sharded across DDP ranks.

    Each epoch: shuffle, cut into pools of ``pool_batches`` batches' worth of sequences, sort each
    pool by length, fill batches up to ``tokens_per_batch`` padded tokens, shuffle the batches.
    Every rank gets the same number of batches (a few are repeated if needed), which DDP needs.
    """

    def __init__(self, lengths: np.ndarray, tokens_per_batch: int, *, seed: int = 0, shuffle: bool = True,
                 pool_batches: int = 50, num_replicas: int | None = None, rank: int | None = None,
                 max_batch_size: int = 512) -> None:
        if tokens_per_batch < int(lengths.max(initial=1)):
            raise ValueError(f"tokens_per_batch={tokens_per_batch} is below the longest sequence "
                             f"({int(lengths.max())} tokens): raise it or lower max_length")
        self.lengths = lengths
        self.tokens_per_batch = tokens_per_batch
        self.seed = seed
        self.shuffle = shuffle
        self.pool_batches = pool_batches
        self.max_batch_size = max_batch_size
        if num_replicas is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = torch.distributed.get_world_size() if distributed else 1
            rank = torch.distributed.get_rank() if distributed else 0
        self.num_replicas = num_replicas
        self.rank = rank or 0
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        mean = max(1.0, float(self.lengths.mean()))
        pool_size = max(1, int(self.pool_batches * self.tokens_per_batch / mean))
        batches: list[list[int]] = []
        for start in range(0, len(order), pool_size):
            pool = order[start:start + pool_size]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batch: list[int] = []
            longest = 0
            for index in pool.tolist():
                length = int(self.lengths[index])
                if batch and (max(longest, length) * (len(batch) + 1) > self.tokens_per_batch
                              or len(batch) >= self.max_batch_size):
                    batches.append(batch)
                    batch, longest = [], 0
                batch.append(index)
                longest = max(longest, length)
            if batch:
                batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        per_rank = math.ceil(len(batches) / self.num_replicas)
        padded = batches + batches[: per_rank * self.num_replicas - len(batches)]
        yield from padded[self.rank::self.num_replicas]

    def __len__(self) -> int:
        return math.ceil(len(self._all_batches()) / self.num_replicas)


def collate_sequences(items: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of items to the longest; ``attention_mask`` marks real tokens."""
    longest = max(item[INPUT_IDS].shape[0] for item in items)
    batch: dict[str, torch.Tensor] = {}
    for name in (INPUT_IDS, TIME_DAYS, AGE_YEARS, VISIT_INDEX, TOKEN_TYPE):
        fill = pad_token_id if name == INPUT_IDS else 0
        template = items[0][name]
        out = torch.full((len(items), longest), fill, dtype=template.dtype)
        for row, item in enumerate(items):
            out[row, : item[name].shape[0]] = item[name]
        batch[name] = out
    mask = torch.zeros((len(items), longest), dtype=torch.bool)
    for row, item in enumerate(items):
        mask[row, : item[INPUT_IDS].shape[0]] = True
    batch["attention_mask"] = mask
    # Unknown values are NaN in the streams (no birth date: age; static-only subject: time).
    # The model must never see NaN: unknown age reads as 0, unknown time as the row's first known.
    batch[AGE_YEARS] = torch.nan_to_num(batch[AGE_YEARS], nan=0.0)
    times = batch[TIME_DAYS]
    unknown = torch.isnan(times)
    if unknown.any():
        first_known = torch.where(unknown, torch.inf, times).amin(dim=1, keepdim=True)
        first_known = torch.where(torch.isinf(first_known), torch.zeros_like(first_known), first_known)
        batch[TIME_DAYS] = torch.where(unknown, first_known.expand_as(times), times)
    return batch


def padding_fraction(lengths: np.ndarray, batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions over the given batches (0 = no padding)."""
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    real = sum(int(lengths[b].sum()) for b in batches)
    return 1.0 - real / padded if padded else 0.0
