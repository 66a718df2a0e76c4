"""Mamba-2 SSD: chunked reference vs the naive sequential loop (float64 ground truth)."""

from __future__ import annotations

import pytest
import torch
from scan_parity import assert_parity, close, leaves, run

from ehrfm.ops import ssd_chunked, ssd_naive, ssd_step

# (b, l, h, p, g, n, chunk): long with tiny widths; l not a multiple of the chunk; groups;
# a sequence shorter than one chunk; chunk of 1 (pure recurrence through the inter-chunk pass).
CASES = [
    pytest.param((2, 4096, 2, 4, 1, 4, 64), id="long-L4096-tiny"),
    pytest.param((2, 203, 4, 8, 2, 16, 64), id="L203-groups2"),
    pytest.param((3, 37, 4, 8, 1, 16, 128), id="shorter-than-chunk"),
    pytest.param((1, 50, 2, 4, 1, 8, 1), id="chunk1"),
]


def make_inputs(b: int, l: int, h: int, p: int, g: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen, dtype=torch.float64)
    dt = torch.rand(b, l, h, generator=gen, dtype=torch.float64) * 0.2
    A = -(torch.rand(h, generator=gen, dtype=torch.float64) * 2 + 0.3)
    B = torch.randn(b, l, g, n, generator=gen, dtype=torch.float64)
    C = torch.randn(b, l, g, n, generator=gen, dtype=torch.float64)
    D = torch.randn(h, generator=gen, dtype=torch.float64)
    return [x, dt, A, B, C, D]


def _ssd(fn, chunk):
    def call(x, dt, A, B, C, D):
        if fn is ssd_naive:
            return ssd_naive(x, dt, A, B, C, D=D)
        return ssd_chunked(x, dt, A, B, C, chunk_size=chunk, D=D)

    return call


_REFERENCE: dict[tuple, tuple] = {}


def reference(case: tuple, inputs: list[torch.Tensor], grad_out: torch.Tensor) -> tuple:
    """Naive loop in float64 on the given (already rounded) inputs; cached per case and dtype."""
    key = (case, inputs[0].dtype)
    if key not in _REFERENCE:
        _REFERENCE[key] = run(_ssd(ssd_naive, None), leaves(inputs, torch.float64), grad_out.double())
    return _REFERENCE[key]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_chunked_matches_naive_forward_and_backward(case: tuple, dtype: torch.dtype) -> None:
    b, l, h, p, g, n, chunk = case
    inputs = make_inputs(b, l, h, p, g, n)
    grad_out = torch.randn(b, l, h, p, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # The reference sees exactly the values the low-precision run sees (inputs rounded to dtype).
    rounded = [t.to(dtype).double() for t in inputs]
    y_ref, g_ref = reference(case, rounded, grad_out.to(dtype).double())
    y, grads = run(_ssd(ssd_chunked, chunk), leaves(inputs, dtype), grad_out)
    assert y.dtype == dtype
    assert_parity(y, y_ref, dtype, "y")
    for name, grad, expected in zip(["x", "dt", "A", "B", "C", "D"], grads, g_ref):
        assert grad.dtype == dtype
        assert_parity(grad, expected, dtype, f"d{name}", grad=True)


def test_float64_agrees_to_rounding() -> None:
    """In float64 the two algorithms are the same sum in another order."""
    inputs = make_inputs(2, 300, 4, 8, 2, 16)
    y = ssd_chunked(*inputs[:5], chunk_size=64, D=inputs[5])
    y_ref = ssd_naive(*inputs[:5], D=inputs[5])
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)


def test_the_comparison_catches_plausible_bugs() -> None:
    """The tolerance is tight enough to see an off-by-one in time or a 2% decay error."""
    b, l, h, p, g, n = 2, 203, 4, 8, 2, 16
    x, dt, A, B, C, D = make_inputs(b, l, h, p, g, n)
    y_ref = ssd_naive(x, dt, A, B, C, D=D)
    good = ssd_chunked(*(t.float() for t in (x, dt, A, B, C)), chunk_size=64, D=D.float())
    assert close(good, y_ref, torch.float32)
    shifted_B = torch.roll(B, shifts=1, dims=1)  # B one step late
    assert not close(ssd_chunked(x, dt, A, shifted_B, C, chunk_size=64, D=D), y_ref, torch.float32)
    assert not close(ssd_chunked(x, dt, A * 1.02, B, C, chunk_size=64, D=D), y_ref, torch.float32)
    assert not close(ssd_chunked(x, dt, A, B, C, chunk_size=64), y_ref, torch.float32)  # D dropped


@pytest.mark.parametrize("split", [1, 63, 64, 150])
def test_initial_and_final_state_continue_a_sequence(split: int) -> None:
    x, dt, A, B, C, D = make_inputs(2, 203, 4, 8, 2, 16)
    y_full, s_full = ssd_chunked(x, dt, A, B, C, chunk_size=64, D=D, return_final_state=True)
    y1, s1 = ssd_chunked(x[:, :split], dt[:, :split], A, B[:, :split], C[:, :split], chunk_size=64, D=D,
                         return_final_state=True)
    y2, s2 = ssd_chunked(
        x[:, split:], dt[:, split:], A, B[:, split:], C[:, split:], chunk_size=64, D=D, initial_state=s1,
        return_final_state=True,
    )
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y_full)
    torch.testing.assert_close(s2, s_full)
    _, s_naive = ssd_naive(x, dt, A, B, C, D=D, return_final_state=True)
    torch.testing.assert_close(s_full, s_naive)


def test_step_by_step_matches_chunked() -> None:
    x, dt, A, B, C, D = make_inputs(2, 70, 4, 8, 2, 16)
    y_full, s_full = ssd_chunked(x, dt, A, B, C, chunk_size=16, D=D, return_final_state=True)
    state = torch.zeros(2, 4, 8, 16, dtype=torch.float64)
    for t in range(70):
        y_t, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t], D)
        torch.testing.assert_close(y_t, y_full[:, t])
    torch.testing.assert_close(state, s_full)


def test_zero_step_size_is_padding() -> None:
    """dt = 0 on trailing positions leaves the final state at the last real step."""
    x, dt, A, B, C, D = make_inputs(2, 90, 4, 8, 1, 16)
    _, s_real = ssd_chunked(x[:, :60], dt[:, :60], A, B[:, :60], C[:, :60], chunk_size=32,
                            return_final_state=True)
    dt_padded = dt.clone()
    dt_padded[:, 60:] = 0
    _, s_padded = ssd_chunked(x, dt_padded, A, B, C, chunk_size=32, return_final_state=True)
    torch.testing.assert_close(s_padded, s_real)


def test_shapes_are_checked() -> None:
    x, dt, A, B, C, _ = make_inputs(1, 10, 4, 8, 1, 16)
    with pytest.raises(ValueError, match="dt must be"):
        ssd_chunked(x, dt[:, :5], A, B, C)
    with pytest.raises(ValueError, match="multiple of groups"):
        ssd_chunked(x, dt, A, B.expand(1, 10, 3, 16), C.expand(1, 10, 3, 16))
    with pytest.raises(ValueError, match="initial_state"):
        ssd_chunked(x, dt, A, B, C, initial_state=torch.zeros(1, 4, 8, 15, dtype=torch.float64))


def test_empty_sequence_returns_the_initial_state() -> None:
    x, dt, A, B, C, D = make_inputs(2, 0, 4, 8, 1, 16)
    init = torch.randn(2, 4, 8, 16, dtype=torch.float64)
    y, state = ssd_chunked(x, dt, A, B, C, D=D, initial_state=init, return_final_state=True)
    assert y.shape == (2, 0, 4, 8)
    torch.testing.assert_close(state, init)
