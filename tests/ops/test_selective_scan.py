"""Mamba-1 selective scan: fast sequential reference vs the naive step loop (float64 ground truth)."""

from __future__ import annotations

import pytest
import torch
from scan_parity import assert_parity, close, leaves, run

from ehrfm.ops import selective_scan, selective_scan_naive, selective_scan_step

# (b, d, l, n, g); g = 0 means B/C of shape (b, n, l), else (b, g, n, l).
CASES = [
    pytest.param((2, 4, 4096, 4, 0), id="long-L4096-tiny"),
    pytest.param((2, 8, 301, 16, 2), id="L301-groups2"),
    pytest.param((1, 6, 37, 8, 0), id="L37"),
    pytest.param((2, 4, 1, 4, 0), id="L1"),
]
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def make_inputs(b: int, d: int, l: int, n: int, g: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    u, delta = randn(b, d, l), randn(b, d, l) * 0.5 - 1.0  # softplus(-1) ~ 0.3
    A = -(torch.rand(d, n, generator=gen, dtype=torch.float64) * 2 + 0.3)
    bc_shape = (b, n, l) if g == 0 else (b, g, n, l)
    B, C = randn(*bc_shape), randn(*bc_shape)
    return [u, delta, A, B, C, randn(d), randn(b, d, l), randn(d) * 0.1]


def _scan(fn):
    def call(u, delta, A, B, C, D, z, delta_bias):
        return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True)

    return call


_REFERENCE: dict[tuple, tuple] = {}


def reference(case: tuple, inputs: list[torch.Tensor], grad_out: torch.Tensor) -> tuple:
    key = (case, inputs[0].dtype)
    if key not in _REFERENCE:
        _REFERENCE[key] = run(_scan(selective_scan_naive), leaves(inputs, torch.float64), grad_out.double())
    return _REFERENCE[key]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_reference_matches_naive_forward_and_backward(case: tuple, dtype: torch.dtype) -> None:
    b, d, l, n, g = case
    inputs = make_inputs(b, d, l, n, g)
    grad_out = torch.randn(b, d, l, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rounded = [t.to(dtype).double() for t in inputs]
    y_ref, g_ref = reference(case, rounded, grad_out.to(dtype).double())
    y, grads = run(_scan(selective_scan), leaves(inputs, dtype), grad_out)
    assert y.dtype == dtype
    assert_parity(y, y_ref, dtype, "y")
    for name, grad, expected in zip(NAMES, grads, g_ref):
        assert grad.dtype == dtype
        assert_parity(grad, expected, dtype, f"d{name}", grad=True)


def test_the_comparison_catches_plausible_bugs() -> None:
    u, delta, A, B, C, D, z, bias = make_inputs(2, 8, 301, 16, 0)
    y_ref = selective_scan_naive(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True)

    def fast(**changes: torch.Tensor) -> torch.Tensor:
        args = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": bias, **changes}
        return selective_scan(**{k: v.float() for k, v in args.items()}, delta_softplus=True)

    assert close(fast(), y_ref, torch.float32)
    assert not close(fast(B=torch.roll(B, 1, dims=-1)), y_ref, torch.float32)  # B one step late
    assert not close(fast(A=A * 1.02), y_ref, torch.float32)
    assert not close(fast(z=torch.zeros_like(z)), y_ref, torch.float32)


@pytest.mark.parametrize("split", [1, 150, 300])
def test_initial_and_final_state_continue_a_sequence(split: int) -> None:
    u, delta, A, B, C, D, z, _ = make_inputs(2, 8, 301, 16, 0)
    kw = {"D": D, "delta_softplus": True, "return_last_state": True}
    y_full, s_full = selective_scan(u, delta, A, B, C, z=z, **kw)
    first = (u[..., :split], delta[..., :split], A, B[..., :split], C[..., :split])
    rest = (u[..., split:], delta[..., split:], A, B[..., split:], C[..., split:])
    y1, s1 = selective_scan(*first, z=z[..., :split], **kw)
    y2, s2 = selective_scan(*rest, z=z[..., split:], initial_state=s1, **kw)
    torch.testing.assert_close(torch.cat([y1, y2], dim=-1), y_full)
    torch.testing.assert_close(s2, s_full)
    _, s_naive = selective_scan_naive(u, delta, A, B, C, z=z, D=D, delta_softplus=True,
                                      return_last_state=True)
    torch.testing.assert_close(s_full, s_naive)


@pytest.mark.parametrize("g", [0, 2])
def test_step_by_step_matches_reference(g: int) -> None:
    u, delta, A, B, C, D, z, _ = make_inputs(2, 8, 45, 16, g)
    delta = torch.nn.functional.softplus(delta)
    y_full, s_full = selective_scan(u, delta, A, B, C, D=D, z=z, return_last_state=True)
    state = torch.zeros(2, 8, 16, dtype=torch.float64)
    for t in range(45):
        y_t, state = selective_scan_step(state, u[..., t], delta[..., t], A, B[..., t], C[..., t], D,
                                         z[..., t])
        torch.testing.assert_close(y_t, y_full[..., t])
    torch.testing.assert_close(state, s_full)


def test_zero_step_size_is_padding() -> None:
    u, delta, A, B, C, *_ = make_inputs(2, 8, 90, 16, 0)
    delta = torch.nn.functional.softplus(delta)
    _, s_real = selective_scan(u[..., :60], delta[..., :60], A, B[..., :60], C[..., :60],
                               return_last_state=True)
    padded = delta.clone()
    padded[..., 60:] = 0
    _, s_padded = selective_scan(u, padded, A, B, C, return_last_state=True)
    torch.testing.assert_close(s_padded, s_real)


def test_shapes_are_checked() -> None:
    u, delta, A, B, C, *_ = make_inputs(1, 8, 10, 4, 0)
    with pytest.raises(ValueError, match="u and delta"):
        selective_scan(u, delta[..., :5], A, B, C)
    with pytest.raises(ValueError, match="B must be"):
        selective_scan(u, delta, A, B[..., :5], C)
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(u, delta, A[:3], B, C)


def test_empty_sequence_returns_the_initial_state() -> None:
    u, delta, A, B, C, D, z, _ = make_inputs(2, 8, 0, 4, 0)
    init = torch.randn(2, 8, 4, dtype=torch.float64)
    y, state = selective_scan(u, delta, A, B, C, D=D, z=z, return_last_state=True, initial_state=init)
    assert y.shape == (2, 8, 0)
    torch.testing.assert_close(state, init)
