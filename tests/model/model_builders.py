"""Small random EHR batches for the model tests."""

from __future__ import annotations

import torch

from ehrfm.model import BackboneConfig


def tiny_config(mixer: str = "mamba2", **overrides) -> BackboneConfig:
    # chunk 8 so short test sequences still cross several chunks.
    return BackboneConfig.preset("tiny", mixer=mixer, vocab_size=60, chunk_size=8, **overrides)


def random_batch(b: int, l: int, vocab: int = 60, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of ``b`` full-length sequences with increasing times (no padding)."""
    gen = torch.Generator().manual_seed(seed)
    gaps = torch.rand(b, l, generator=gen, dtype=torch.float64) * 3.0
    return {
        "input_ids": torch.randint(1, vocab, (b, l), generator=gen),
        "attention_mask": torch.ones(b, l, dtype=torch.bool),
        "time_days": 19_000.0 + gaps.cumsum(1),
        "age_years": (40.0 + gaps.cumsum(1) / 365.25).float(),
        "visit_index": torch.arange(l).expand(b, l) // 4,
        "token_type": torch.randint(1, 10, (b, l), generator=gen),
    }


def slice_batch(batch: dict[str, torch.Tensor], index) -> dict[str, torch.Tensor]:
    return {key: value[index] for key, value in batch.items()}


def pad_rows(rows: list[dict[str, torch.Tensor]], length: int, side: str,
             garbage: bool = True) -> dict[str, torch.Tensor]:
    """Stack 1-D rows into a padded batch; padded slots get garbage (they must not matter)."""
    out: dict[str, list[torch.Tensor]] = {key: [] for key in rows[0]}
    for row in rows:
        n = row["input_ids"].shape[0]
        for key, value in row.items():
            if key == "attention_mask":
                fill = torch.zeros(length - n, dtype=torch.bool)
            elif key == "input_ids":
                fill = torch.zeros(length - n, dtype=value.dtype)  # the pad id
            elif garbage:
                fill = torch.full((length - n,), 123456 if not value.is_floating_point() else float("nan"),
                                  dtype=value.dtype)
                if key in ("visit_index", "token_type"):
                    fill = torch.full((length - n,), 5, dtype=value.dtype)
            else:
                fill = torch.zeros(length - n, dtype=value.dtype)
            parts = [value, fill] if side == "right" else [fill, value]
            out[key].append(torch.cat(parts))
    return {key: torch.stack(values) for key, values in out.items()}
