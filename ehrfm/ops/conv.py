"""Causal depthwise 1-D convolution with a recurrent step form (the short conv of Mamba blocks).

Shape legend: ``b`` batch, ``l`` length, ``c`` channels, ``k`` kernel width. The conv state is
the last ``k - 1`` inputs, ``(b, c, k - 1)``, oldest first.

Continuing from a state is the same as convolving ``cat(state, x)`` and dropping the first
``k - 1`` outputs, so one code path serves the CUDA kernel (which only zero-pads) and the
reference, and ``forward(x[:, :t]) ; forward(x[:, t:], state)`` equals ``forward(x)``.

>>> import torch
>>> conv = CausalConv1d(channels=3, kernel_size=4)
>>> x = torch.randn(2, 10, 3)
>>> y, state = conv(x, return_state=True)
>>> y_t, _ = conv.step(torch.randn(2, 3), state)
>>> y.shape, state.shape, y_t.shape
(torch.Size([2, 10, 3]), torch.Size([2, 3, 3]), torch.Size([2, 3]))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kernels import kernels_for

__all__ = ["CausalConv1d", "causal_conv1d", "causal_conv1d_step", "last_window"]


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_state: Tensor | None = None,
    activation: str | None = None,
    use_kernel: bool = True,
) -> Tensor:
    """Depthwise causal conv over time.

    Args:
        x: ``(b, l, c)``.
        weight: ``(c, k)``; bias: ``(c,)``.
        initial_state: ``(b, c, k - 1)`` inputs before ``x``, ``None`` for zeros.
        activation: ``None`` or ``"silu"``.
        use_kernel: allow causal-conv1d's CUDA kernel when it imported and ``x`` is on CUDA.

    Returns:
        ``(b, l, c)``.
    """
    if activation not in (None, "silu"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    k = weight.shape[-1]
    xc = x.transpose(1, 2)  # (b, c, l), channel-last in memory: what causal-conv1d accepts
    if initial_state is not None:
        xc = torch.cat([initial_state.to(xc.dtype), xc], dim=2)
    kernels = kernels_for(x) if use_kernel else None
    if kernels is not None and kernels.causal_conv1d_fn is not None:
        y = kernels.causal_conv1d_fn(xc, weight, bias, activation=activation)
    else:
        y = F.conv1d(xc, weight.unsqueeze(1), bias, padding=k - 1, groups=weight.shape[0])
        y = y[..., : xc.shape[-1]]
        if activation == "silu":
            y = F.silu(y)
    if initial_state is not None:
        y = y[..., k - 1 :]
    return y.transpose(1, 2)


def causal_conv1d_step(
    x: Tensor,
    state: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
) -> tuple[Tensor, Tensor]:
    """One step: ``x: (b, c)``, ``state: (b, c, k - 1)`` -> ``(y: (b, c), new_state)``."""
    window = torch.cat([state.to(x.dtype), x.unsqueeze(-1)], dim=-1)  # (b, c, k)
    y = (window * weight).sum(-1)
    if bias is not None:
        y = y + bias
    if activation == "silu":
        y = F.silu(y)
    return y, window[..., 1:]


def last_window(x: Tensor, mask: Tensor | None, width: int, initial_state: Tensor | None = None) -> Tensor:
    """The conv state after ``x``: its last ``width`` *real* inputs, ``(b, c, width)``.

    ``x: (b, l, c)``; ``mask: (b, l)`` bool, True at real tokens (any padding pattern: right,
    left or holes); ``initial_state: (b, c, width)`` what came before ``x`` (zeros if ``None``).
    Rows with fewer than ``width`` real inputs keep the tail of ``initial_state``.
    """
    b, l, c = x.shape
    prefix = x.new_zeros(b, width, c) if initial_state is None else initial_state.transpose(1, 2).to(x.dtype)
    if width == 0:
        return x.new_zeros(b, c, 0)
    seq = torch.cat([prefix, x], dim=1)  # (b, width + l, c)
    if mask is None:
        return seq[:, -width:].transpose(1, 2)
    real = torch.cat([mask.new_ones(b, width), mask.bool()], dim=1)
    rank = real.long().cumsum(1)  # 1-based rank among real entries
    keep = real & (rank > rank[:, -1:] - width)  # exactly `width` per row (prefix counts)
    return seq[keep].view(b, width, c).transpose(1, 2)


class CausalConv1d(nn.Module):
    """Depthwise causal conv with bias, ``forward`` over a sequence and ``step`` per token.

    ``weight`` has the ``nn.Conv1d`` shape ``(c, 1, k)`` (as in mamba-ssm's checkpoints).
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.use_kernel = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv1d's default init (fan_in = k for a depthwise conv).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(
        self,
        x: Tensor,
        state: Tensor | None = None,
        mask: Tensor | None = None,
        activation: str | None = None,
        return_state: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``x: (b, l, c)`` -> ``(b, l, c)`` [, new state ``(b, c, k - 1)``].

        ``mask`` only affects the returned state (the last ``k - 1`` real inputs); the caller
        zeroes padded inputs so they act like the conv's own zero padding.
        """
        y = causal_conv1d(x, self.weight.squeeze(1), self.bias, state, activation, self.use_kernel)
        if not return_state:
            return y
        return y, last_window(x, mask, self.kernel_size - 1, state)

    def step(self, x: Tensor, state: Tensor, activation: str | None = None) -> tuple[Tensor, Tensor]:
        """``x: (b, c)``, ``state: (b, c, k - 1)`` -> ``(y: (b, c), new_state)``."""
        return causal_conv1d_step(x, state, self.weight.squeeze(1), self.bias, activation)

    def allocate_state(self, batch_size: int, device: torch.device | None = None,
                       dtype: torch.dtype | None = None) -> Tensor:
        """Zero state ``(batch_size, c, k - 1)``: what the conv's zero padding means."""
        return torch.zeros(
            batch_size, self.channels, self.kernel_size - 1, device=device or self.weight.device,
            dtype=dtype or self.weight.dtype,
        )
