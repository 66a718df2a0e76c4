"""LightningDataModule over tokenized shards: train / tuning splits, length-bucketed batches."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from ehrfm.batching import LengthBucketBatchSampler, collate_sequences, padding_fraction
from ehrfm.pretrain.token_dataset import TokenSequenceDataset, split_shards
from ehrfm.training import bucketed_loader


class TokenSequenceDataModule(L.LightningDataModule):
    """``tokens_dir`` is the output of ``ehrfm tokenize`` (``data/<split>/*.parquet``)."""

    def __init__(self, tokens_dir: str | Path, pad_token_id: int, *, context_length: int = 2048,
                 tokens_per_batch: int = 16384, train_split: str = "train", val_split: str = "tuning",
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.tokens_dir = Path(tokens_dir)
        self.pad_token_id = pad_token_id
        self.context_length = context_length
        self.tokens_per_batch = max(tokens_per_batch, context_length)
        self.train_split = train_split
        self.val_split = val_split
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: TokenSequenceDataset | None = None
        self.val_set: TokenSequenceDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = TokenSequenceDataset(split_shards(self.tokens_dir, self.train_split),
                                                  self.context_length)
            self.val_set = TokenSequenceDataset(split_shards(self.tokens_dir, self.val_split),
                                                self.context_length)

    def _loader(self, dataset: TokenSequenceDataset, shuffle: bool) -> DataLoader:
        return bucketed_loader(dataset, dataset.lengths, self.tokens_per_batch, collate_sequences,
                               pad_token_id=self.pad_token_id, seed=self.seed, shuffle=shuffle,
                               num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        return self._loader(self.val_set, shuffle=False)

    def padding_report(self) -> dict[str, float]:
        """Padding share of one epoch's batches, per split, as the samplers build them."""
        report = {}
        for name, dataset in (("train", self.train_set), ("tuning", self.val_set)):
            if dataset is not None:
                sampler = LengthBucketBatchSampler(dataset.lengths, self.tokens_per_batch, seed=self.seed,
                                                   num_replicas=1, rank=0)
                report[name] = padding_fraction(dataset.lengths, sampler._all_batches())
        return report
