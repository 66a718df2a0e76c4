"""EHR embedding: time precision (float64 days), calendar-shift invariance, padding, NaN."""

from __future__ import annotations

import math

import torch
from model_builders import random_batch, tiny_config

from ehrfm.model import EHREmbedding
from ehrfm.model.embeddings import first_real_time, sinusoid_features


def make_embedding(**overrides) -> EHREmbedding:
    torch.manual_seed(0)
    return EHREmbedding(tiny_config(**overrides))


def test_phases_are_exact_at_epoch_scale_times() -> None:
    """One minute apart, 55 years after 1970, in one-hour sinusoids: float64-exact features.

    The naive float32 path (cast days to float32, then multiply) is off by a large fraction of
    a cycle at this scale; the check below would fail for it.
    """
    days = torch.tensor([20_000.0, 20_000.0 + 1 / 1440], dtype=torch.float64)
    periods = torch.tensor([1 / 24], dtype=torch.float64)
    ours = sinusoid_features(days, periods, torch.float32)
    phase = (days * (2 * math.pi / periods[0])) % (2 * math.pi)
    exact = torch.stack([torch.sin(phase), torch.cos(phase)], -1).float()
    torch.testing.assert_close(ours, exact, rtol=0, atol=2e-6)
    naive_phase = days.float() * float(2 * math.pi / periods[0])
    naive = torch.stack([torch.sin(naive_phase), torch.cos(naive_phase)], -1)
    assert (naive - exact).abs().max() > 1e-2


def test_calendar_shift_does_not_change_embeddings() -> None:
    """Times are relative to each row's first token: shifting a whole history changes nothing."""
    emb = make_embedding().double()
    batch = random_batch(2, 12)
    mask = batch["attention_mask"]
    shifted = dict(batch, time_days=batch["time_days"] + 3_652.5)
    a = emb(batch, mask, first_real_time(batch["time_days"], mask))
    b = emb(shifted, mask, first_real_time(shifted["time_days"], mask))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_every_stream_matters() -> None:
    emb = make_embedding()
    batch = random_batch(1, 6)
    mask = batch["attention_mask"]
    origin = first_real_time(batch["time_days"], mask)
    base = emb(batch, mask, origin)
    changes = {
        "input_ids": batch["input_ids"] % 50 + 3,
        "time_days": batch["time_days"] + torch.arange(6, dtype=torch.float64) / 24,
        "age_years": batch["age_years"] + 10,
        "visit_index": batch["visit_index"] + 1,
        "token_type": batch["token_type"] % 9 + 1,
    }
    for key, value in changes.items():
        other = emb(dict(batch, **{key: value}), mask, origin)
        assert not torch.allclose(other[0, 1:], base[0, 1:]), key


def test_padding_is_zero_and_garbage_is_harmless() -> None:
    emb = make_embedding()
    batch = random_batch(2, 5)
    mask = torch.tensor([[True, True, True, False, False], [False, True, True, True, True]])
    garbage = dict(batch)
    garbage["input_ids"] = torch.where(mask, batch["input_ids"], torch.full_like(batch["input_ids"], -100))
    garbage["time_days"] = torch.where(mask, batch["time_days"],
                                       torch.full_like(batch["time_days"], float("nan")))
    garbage["visit_index"] = torch.where(mask, batch["visit_index"],
                                         torch.full_like(batch["visit_index"], 10**9))
    origin = first_real_time(garbage["time_days"], mask)
    out = emb(garbage, mask, origin)
    assert (out[~mask] == 0).all() and torch.isfinite(out).all()
    assert origin[1] == batch["time_days"][1, 1]  # left padding: the first *real* token


def test_unknown_age_and_time_become_flags_not_nan() -> None:
    emb = make_embedding()
    batch = random_batch(1, 4)
    batch["age_years"] = torch.full((1, 4), float("nan"))
    mask = batch["attention_mask"]
    out = emb(batch, mask, first_real_time(batch["time_days"], mask))
    assert torch.isfinite(out).all()
    feats = emb.age_features(batch["age_years"], torch.float32)
    assert (feats[..., -1] == 1).all() and (feats[..., :-1] == 0).all()


def test_visit_index_beyond_the_table_is_clamped() -> None:
    emb = make_embedding(max_visit_index=8)
    batch = random_batch(1, 3)
    batch["visit_index"] = torch.tensor([[7, 8, 500]])
    out = emb(batch, batch["attention_mask"], first_real_time(batch["time_days"], batch["attention_mask"]))
    assert torch.isfinite(out).all()


def test_first_real_time_of_an_empty_row_is_nan() -> None:
    t = torch.tensor([[5.0, 6.0], [7.0, 8.0]], dtype=torch.float64)
    origin = first_real_time(t, torch.tensor([[False, True], [False, False]]))
    assert origin[0] == 6.0 and torch.isnan(origin[1])
