"""Causal depthwise conv: against a plain loop, step form, continuation, state after padding."""

from __future__ import annotations

import pytest
import torch

from ehrfm.ops import CausalConv1d, causal_conv1d, causal_conv1d_step, last_window


def loop_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """y_t = bias + sum_j weight[:, j] * x_{t - (k - 1) + j}, zeros before the start."""
    b, l, c = x.shape
    k = weight.shape[1]
    padded = torch.cat([x.new_zeros(b, k - 1, c), x], dim=1)
    return torch.stack([(padded[:, t : t + k] * weight.T).sum(1) + bias for t in range(l)], dim=1)


def test_matches_a_loop_and_is_causal() -> None:
    torch.manual_seed(0)
    x, w, bias = (torch.randn(2, 13, 5, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64),
                  torch.randn(5, dtype=torch.float64))
    y = causal_conv1d(x, w, bias)
    torch.testing.assert_close(y, loop_conv(x, w, bias))
    changed = x.clone()
    changed[:, 7:] += 1.0  # the future must not reach the past
    torch.testing.assert_close(causal_conv1d(changed, w, bias)[:, :7], y[:, :7])


def test_step_and_continuation_match_forward() -> None:
    torch.manual_seed(0)
    conv = CausalConv1d(6, 4).double()
    x = torch.randn(3, 11, 6, dtype=torch.float64)
    y, state = conv(x, activation="silu", return_state=True)
    y1, s1 = conv(x[:, :2], activation="silu", return_state=True)  # shorter than the kernel
    y2, s2 = conv(x[:, 2:], s1, activation="silu", return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y)
    torch.testing.assert_close(s2, state)
    s = conv.allocate_state(3, dtype=torch.float64)
    for t in range(11):
        y_t, s = conv.step(x[:, t], s, activation="silu")
        torch.testing.assert_close(y_t, y[:, t])
    torch.testing.assert_close(s, state)


@pytest.mark.parametrize("layout", ["right", "left", "holes"])
def test_state_is_the_last_real_inputs(layout: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 9, 3)
    mask = torch.ones(2, 9, dtype=torch.bool)
    if layout == "right":
        mask[0, 5:] = False
        mask[1, 2:] = False  # fewer real tokens than the window
    elif layout == "left":
        mask[0, :4] = False
    else:
        mask[0, [1, 6, 8]] = False
    state = last_window(x * mask.unsqueeze(-1), mask, 3)
    for row in range(2):
        real = x[row][mask[row]]
        expected = torch.cat([torch.zeros(3, 3), real])[-3:].T
        torch.testing.assert_close(state[row], expected)


def test_step_window_matches_conv_step_function() -> None:
    w, bias = torch.randn(4, 3), torch.randn(4)
    state, x = torch.randn(2, 4, 2), torch.randn(2, 4)
    y, new_state = causal_conv1d_step(x, state, w, bias)
    window = torch.cat([state, x.unsqueeze(-1)], -1)
    torch.testing.assert_close(y, (window * w).sum(-1) + bias)
    torch.testing.assert_close(new_state, window[..., 1:])
