"""Token shards -> batches: cropping keeps the prefix and whole events, buckets keep padding low,
DDP ranks split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ehrfm.batching import LengthBucketBatchSampler, collate_sequences, padding_fraction
from ehrfm.pretrain.token_dataset import TokenSequenceDataset, split_shards
from ehrfm.tokenize.crop import event_starts, prefix_length
from ehrfm.tokenize.sequence_schema import INPUT_IDS, TIME_DAYS, TOKEN_TYPE, TokenType


def test_crop_keeps_patient_prefix_and_the_newest_whole_events(tokens_dir: Path) -> None:
    full = TokenSequenceDataset(split_shards(tokens_dir, "train"), context_length=100_000)
    cropped = TokenSequenceDataset(split_shards(tokens_dir, "train"), context_length=64)
    assert (cropped.lengths <= 64).all() and (cropped.lengths <= full.lengths).all()
    for index in np.flatnonzero(full.lengths > 64):
        whole, cut = full[int(index)], cropped[int(index)]
        kept = len(cut[INPUT_IDS])
        assert kept == cropped.lengths[index] <= 64
        prefix = prefix_length(whole[TOKEN_TYPE].numpy())
        assert prefix >= 2  # [CLS] and sex at least
        assert torch.equal(cut[INPUT_IDS][:prefix], whole[INPUT_IDS][:prefix])
        tail = kept - prefix
        assert torch.equal(cut[INPUT_IDS][prefix:], whole[INPUT_IDS][len(whole[INPUT_IDS]) - tail:])
        assert torch.equal(cut[TIME_DAYS][prefix:], whole[TIME_DAYS][len(whole[INPUT_IDS]) - tail:])
        # the window opens on an event (never on a value or text token), and the longest such fits
        opening = len(whole[INPUT_IDS]) - tail
        starts = event_starts(whole[TOKEN_TYPE].numpy())
        assert (opening in starts.tolist()
                and int(cut[TOKEN_TYPE][prefix]) not in (TokenType.VALUE, TokenType.TEXT))
        earlier = starts[starts < opening]
        assert len(earlier) == 0 or len(whole[INPUT_IDS]) - earlier[-1] + prefix > 64


def test_length_buckets_pad_less_than_random_batches(tokens_dir: Path) -> None:
    data = TokenSequenceDataset(split_shards(tokens_dir, "train"), context_length=512)
    budget = 4 * int(data.lengths.max())
    bucketed = list(LengthBucketBatchSampler(data.lengths, budget, seed=0))
    assert sorted(i for b in bucketed for i in b) == list(range(len(data)))
    assert all(len(b) * int(data.lengths[b].max()) <= budget for b in bucketed)
    sizes = [len(b) for b in bucketed]
    order = np.random.default_rng(0).permutation(len(data))
    random_batches, start = [], 0
    for size in sizes:
        random_batches.append(order[start:start + size].tolist())
        start += size
    assert padding_fraction(data.lengths, bucketed) < padding_fraction(data.lengths, random_batches)


def test_ranks_get_disjoint_equal_shares() -> None:
    lengths = np.arange(1, 101)
    ranks = [list(LengthBucketBatchSampler(lengths, 200, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    seen = [i for batches in ranks for b in batches for i in b]
    assert set(seen) == set(range(100))


def test_collate_pads_right_and_never_passes_nan() -> None:
    items = [
        {INPUT_IDS: torch.tensor([5, 6, 7]),
         TIME_DAYS: torch.tensor([float("nan"), 10.0, 11.0], dtype=torch.float64),
         "age_years": torch.tensor([float("nan")] * 3), "visit_index": torch.tensor([0, 1, 1]),
         TOKEN_TYPE: torch.tensor([1, 5, 7])},
        {INPUT_IDS: torch.tensor([5]), TIME_DAYS: torch.tensor([float("nan")], dtype=torch.float64),
         "age_years": torch.tensor([1.0]), "visit_index": torch.tensor([0]), TOKEN_TYPE: torch.tensor([1])},
    ]
    batch = collate_sequences(items, pad_token_id=0)
    assert batch[INPUT_IDS].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert batch[TIME_DAYS][0].tolist() == [10.0, 10.0, 11.0]
    assert not torch.isnan(batch[TIME_DAYS]).any() and not torch.isnan(batch["age_years"]).any()
