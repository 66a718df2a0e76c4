"""EHRLanguageModel: tied head, next-token loss that ignores padding, it learns, step logits."""

from __future__ import annotations

import pytest
import torch
from model_builders import pad_rows, random_batch, slice_batch, tiny_config

from ehrfm.model import EHRLanguageModel


def make_lm(mixer: str = "mamba2") -> EHRLanguageModel:
    torch.manual_seed(0)
    return EHRLanguageModel(tiny_config(mixer))


def test_head_is_tied_to_the_token_embedding() -> None:
    model = make_lm()
    assert model.lm_head.weight is model.backbone.embedding.token.weight
    n_unique = len({id(p) for p in model.parameters()})
    assert n_unique == len(list(model.parameters()))  # listed once
    model.loss(random_batch(2, 7)).backward()
    assert model.backbone.embedding.token.weight.grad is not None


def test_forward_outputs() -> None:
    model = make_lm()
    out = model(random_batch(2, 7))
    assert out["logits"].shape == (2, 7, 60) and out["hidden"].shape == (2, 7, 64)


@pytest.mark.parametrize("side", ["right", "left"])
def test_loss_ignores_padding(side: str) -> None:
    """Summed loss over a padded batch == sum of the per-sequence losses without padding."""
    model = make_lm().double()
    rows = [slice_batch(random_batch(1, n, seed=i), 0) for i, n in enumerate([11, 4, 1])]
    padded = pad_rows(rows, 14, side)
    total = model.loss(padded, reduction="sum")
    expected = sum(model.loss(slice_batch(row, (None,)), reduction="sum") for row in rows)
    torch.testing.assert_close(total, expected)
    mean = model.loss(padded)
    torch.testing.assert_close(mean, total / (10 + 3 + 0))


def test_loss_matches_cross_entropy_of_forward_logits() -> None:
    model = make_lm().double()
    batch = random_batch(2, 9)
    logits = model(batch)["logits"]
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 60),
                                                 batch["input_ids"][:, 1:].reshape(-1))
    torch.testing.assert_close(model.loss(batch), expected)


def test_all_padding_batch_gives_zero_not_nan() -> None:
    model = make_lm()
    batch = random_batch(2, 3)
    batch["attention_mask"] = torch.tensor([[True, False, False], [False, False, False]])
    loss = model.loss(batch)
    assert loss.item() == 0.0
    loss.backward()


@pytest.mark.parametrize("mixer", ["mamba1", "mamba2"])
def test_tiny_learns_a_pattern(mixer: str) -> None:
    """A repeating code pattern is learned in a few dozen CPU steps (sanity of the whole stack)."""
    model = make_lm(mixer)
    batch = random_batch(4, 32)
    pattern = torch.tensor([5, 9, 13, 17, 21, 25, 29, 33])
    batch["input_ids"] = pattern.repeat(4, 4)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = model.loss(batch).item()
    for _ in range(40):
        optimiser.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.2 * first, (first, loss.item())


def test_step_logits_equal_forward_logits() -> None:
    model = make_lm().double().eval()
    batch = random_batch(2, 10)
    with torch.no_grad():
        logits = model(batch)["logits"]
        state = model.allocate_state(2)
        for t in range(10):
            step_logits, state = model.step(slice_batch(batch, (slice(None), t)), state)
            torch.testing.assert_close(step_logits, logits[:, t], rtol=1e-10, atol=1e-10)


def test_bad_reduction_is_rejected() -> None:
    with pytest.raises(ValueError, match="reduction"):
        make_lm().loss(random_batch(1, 3), reduction="none")
