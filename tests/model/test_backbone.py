"""MambaBackbone: full forward vs step-by-step recurrence, padding invariance, prefill + step."""

from __future__ import annotations

import pytest
import torch
from model_builders import pad_rows, random_batch, slice_batch, tiny_config

from ehrfm.model import BackboneConfig, MambaBackbone

MIXERS = ["mamba1", "mamba2"]


def make_model(mixer: str, dtype: torch.dtype = torch.float64, **overrides) -> MambaBackbone:
    torch.manual_seed(0)
    return MambaBackbone(tiny_config(mixer, **overrides)).to(dtype).eval()


def step_through(model: MambaBackbone, batch: dict[str, torch.Tensor], state=None):
    b, l = batch["input_ids"].shape
    state = model.allocate_state(b) if state is None else state
    outs = []
    for t in range(l):
        h, state = model.step(slice_batch(batch, (slice(None), t)), state)
        outs.append(h)
    return torch.stack(outs, 1), state


@pytest.mark.parametrize("mixer", MIXERS)
def test_forward_equals_step_by_step(mixer: str) -> None:
    model = make_model(mixer)
    batch = random_batch(3, 29)
    with torch.no_grad():
        full, state = model(batch, return_state=True)
        stepped, step_state = step_through(model, batch)
    torch.testing.assert_close(stepped, full, rtol=1e-10, atol=1e-10)
    for a, b in zip(state.layers, step_state.layers):
        torch.testing.assert_close(a.ssm, b.ssm, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(a.conv, b.conv, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mixer", MIXERS)
def test_forward_equals_step_by_step_in_float32(mixer: str) -> None:
    model = make_model(mixer, torch.float32)
    batch = random_batch(2, 40, seed=3)
    with torch.no_grad():
        full = model(batch)
        stepped, _ = step_through(model, batch)
    torch.testing.assert_close(stepped, full, rtol=6e-4, atol=2e-3)


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("split", [1, 8, 13])
def test_prefill_then_step_then_continue(mixer: str, split: int) -> None:
    """A history in pieces (forward with state) and new events by step give the full pass."""
    model = make_model(mixer)
    batch = random_batch(2, 30, seed=1)
    with torch.no_grad():
        full = model(batch)
        h1, state = model(slice_batch(batch, (slice(None), slice(0, split))), return_state=True)
        h2, state = step_through(model, slice_batch(batch, (slice(None), slice(split, split + 3))), state)
        h3 = model(slice_batch(batch, (slice(None), slice(split + 3, None))), state=state)
    torch.testing.assert_close(torch.cat([h1, h2, h3], 1), full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mixer", MIXERS)
def test_holes_inside_rows_do_not_change_real_tokens(mixer: str) -> None:
    model = make_model(mixer)
    batch = random_batch(2, 15)
    mask = torch.ones(2, 15, dtype=torch.bool)
    mask[0, [2, 3, 9]] = False
    mask[1, [0, 14]] = False
    holed = dict(batch, attention_mask=mask)
    with torch.no_grad():
        hidden, state = model(holed, return_state=True)
        for row in range(2):
            alone, alone_state = model(slice_batch(batch, (slice(row, row + 1), mask[row])),
                                       return_state=True)
            torch.testing.assert_close(hidden[row, mask[row]], alone[0], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(state.layers[-1].ssm[row], alone_state.layers[-1].ssm[0],
                                       rtol=1e-10, atol=1e-10)
    assert (hidden[~mask] == 0).all()


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_does_not_change_real_tokens(mixer: str, side: str) -> None:
    model = make_model(mixer)
    lengths = [23, 9, 1]
    rows = [slice_batch(random_batch(1, n, seed=i), 0) for i, n in enumerate(lengths)]
    padded = pad_rows(rows, 27, side)
    with torch.no_grad():
        hidden, state = model(padded, return_state=True)
        for i, (row, n) in enumerate(zip(rows, lengths)):
            alone, alone_state = model(slice_batch(row, (None,)), return_state=True)
            real = slice(0, n) if side == "right" else slice(27 - n, 27)
            torch.testing.assert_close(hidden[i, real], alone[0], rtol=1e-10, atol=1e-10)
            # The returned state is the state after the row's last *real* token.
            for layer, layer_alone in zip(state.layers, alone_state.layers):
                torch.testing.assert_close(layer.ssm[i], layer_alone.ssm[0], rtol=1e-10, atol=1e-10)
                torch.testing.assert_close(layer.conv[i], layer_alone.conv[0], rtol=1e-10, atol=1e-10)
    assert torch.isfinite(hidden).all()
    assert (hidden[~padded["attention_mask"]] == 0).all()


@pytest.mark.parametrize("mixer", MIXERS)
def test_padded_gradients_ignore_padding(mixer: str) -> None:
    """Garbage in padded slots reaches neither outputs nor gradients (no NaN leaks)."""
    torch.manual_seed(0)
    model = MambaBackbone(tiny_config(mixer))
    rows = [slice_batch(random_batch(1, n, seed=i), 0) for i, n in enumerate([12, 5])]
    padded = pad_rows(rows, 16, "right", garbage=True)
    model(padded).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("mixer", MIXERS)
def test_masked_step_rows_do_not_advance(mixer: str) -> None:
    model = make_model(mixer)
    batch = random_batch(2, 6)
    with torch.no_grad():
        _, state = model(batch, return_state=True)
        token = slice_batch(random_batch(2, 1, seed=5), (slice(None), 0))
        token["attention_mask"] = torch.tensor([True, False])
        _, new = model.step(token, state)
    for old_layer, new_layer in zip(state.layers, new.layers):
        assert (torch.equal(old_layer.ssm[1], new_layer.ssm[1])
                and torch.equal(old_layer.conv[1], new_layer.conv[1]))
        assert not torch.equal(old_layer.ssm[0], new_layer.ssm[0])


def test_time_origin_is_the_first_real_token() -> None:
    model = make_model("mamba2")
    batch = random_batch(1, 5)
    _, state = model(batch, return_state=True)
    assert state.time_origin.item() == batch["time_days"][0, 0].item()
    empty = model.allocate_state(2)
    assert torch.isnan(empty.time_origin).all()


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    batch = random_batch(2, 20)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = MambaBackbone(tiny_config("mamba2", gradient_checkpointing=checkpointing)).train()
        model(batch).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_batches_are_validated() -> None:
    model = make_model("mamba2")
    batch = random_batch(1, 4)
    with pytest.raises(KeyError, match="time_days"):
        model({k: v for k, v in batch.items() if k != "time_days"})
    bad = dict(batch, age_years=batch["age_years"][:, :2])
    with pytest.raises(ValueError, match="age_years"):
        model(bad)


def test_base_preset_is_about_the_published_size() -> None:
    """EHR Mamba (Fallahpour et al., 2024) is ~120M parameters; base is built to match."""
    with torch.device("meta"):
        model = MambaBackbone(BackboneConfig.preset("base", vocab_size=8192))
    n = model.num_parameters()
    assert 100e6 < n < 140e6, n


@pytest.mark.parametrize("mixer", MIXERS)
def test_readout_equals_a_step_from_a_copy_of_the_state_for_each_candidate(mixer: str) -> None:
    from ehrfm.model.backbone import BackboneState
    from ehrfm.model.mixers import MixerState

    model = make_model(mixer)
    history, candidates = random_batch(3, 17), random_batch(3, 4)  # 4 alternative next tokens per row
    with torch.no_grad():
        _, state = model(history, return_state=True)
        before = [(s.conv.clone(), s.ssm.clone()) for s in state.layers]
        read = model.readout({key: value for key, value in candidates.items() if key != "attention_mask"}, state)
        for k in range(4):
            copy = BackboneState([MixerState(s.conv.clone(), s.ssm.clone()) for s in state.layers],
                                 state.time_origin.clone())
            stepped, _ = model.step(slice_batch(candidates, (slice(None), k)), copy)
            torch.testing.assert_close(read[:, k], stepped, rtol=1e-10, atol=1e-10)
    for layer, (conv, ssm) in zip(state.layers, before):  # the state is only read
        assert torch.equal(layer.conv, conv) and torch.equal(layer.ssm, ssm)
