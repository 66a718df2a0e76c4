"""Mixers on their own: sequence forward vs recurrent step (fp32, bf16), state dtypes, masks."""

from __future__ import annotations

import pytest
import torch
from model_builders import tiny_config

from ehrfm.model.mixers import Mamba1Mixer, Mamba2Mixer, build_mixer

MIXERS = ["mamba1", "mamba2"]
TOLERANCE = {torch.float32: (6e-4, 2e-3), torch.bfloat16: (3e-2, 5e-2)}


def run_steps(mixer, x: torch.Tensor, state=None, mask: torch.Tensor | None = None):
    state = mixer.allocate_state(x.shape[0], dtype=x.dtype) if state is None else state
    outs = []
    for t in range(x.shape[1]):
        y, state = mixer.step(x[:, t], state, None if mask is None else mask[:, t])
        outs.append(y)
    return torch.stack(outs, 1), state


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_forward_matches_step(name: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    mixer = build_mixer(tiny_config(name)).to(dtype).eval()
    x = torch.randn(2, 45, 64, dtype=dtype)
    with torch.no_grad():
        full, state = mixer(x, return_state=True)
        stepped, step_state = run_steps(mixer, x)
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(stepped.float(), full.float(), rtol=rtol, atol=atol)
    # States accumulate over a whole history: never kept in bf16.
    assert state.ssm.dtype == step_state.ssm.dtype == torch.float32
    torch.testing.assert_close(step_state.ssm, state.ssm, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("side", ["right", "left"])
def test_masked_forward_and_step_equal_the_real_tokens_alone(name: str, side: str) -> None:
    torch.manual_seed(0)
    mixer = build_mixer(tiny_config(name)).double().eval()
    x = torch.randn(1, 20, 64, dtype=torch.float64)
    mask = torch.zeros(1, 20, dtype=torch.bool)
    mask[0, :13] = True
    if side == "left":
        mask = mask.flip(1)
    with torch.no_grad():
        padded, state = mixer(x, mask, return_state=True)
        alone, alone_state = mixer(x[:, mask[0]], return_state=True)
        stepped, step_state = run_steps(mixer, x, mask=mask)
    torch.testing.assert_close(padded[:, mask[0]], alone, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(stepped[:, mask[0]], alone, rtol=1e-10, atol=1e-10)
    for s in (state, step_state):
        torch.testing.assert_close(s.ssm, alone_state.ssm, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.conv, alone_state.conv, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", MIXERS)
def test_step_skips_masked_tokens_exactly(name: str) -> None:
    """Holes inside a row: step with a False mask leaves the state as if the token never came."""
    torch.manual_seed(0)
    mixer = build_mixer(tiny_config(name)).double().eval()
    x = torch.randn(1, 20, 64, dtype=torch.float64)
    mask = torch.ones(1, 20, dtype=torch.bool)
    mask[0, [0, 3, 4, 11, 19]] = False
    with torch.no_grad():
        compact, compact_state = mixer(x[:, mask[0]], return_state=True)
        stepped, step_state = run_steps(mixer, x, mask=mask)
    torch.testing.assert_close(stepped[:, mask[0]], compact, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(step_state.ssm, compact_state.ssm, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(step_state.conv, compact_state.conv, rtol=1e-10, atol=1e-10)


def test_build_mixer_by_name_and_parameter_markers() -> None:
    assert isinstance(build_mixer(tiny_config("mamba1")), Mamba1Mixer)
    mixer = build_mixer(tiny_config("mamba2"))
    assert isinstance(mixer, Mamba2Mixer)
    assert all(getattr(p, "_no_weight_decay", False) for p in (mixer.A_log, mixer.dt_bias, mixer.D))
    # Initial step sizes lie in [dt_min, dt_max] (softplus of the bias).
    dt = torch.nn.functional.softplus(mixer.dt_bias)
    assert (dt >= 1e-4 * 0.999).all() and (dt <= 0.1 * 1.001).all()
