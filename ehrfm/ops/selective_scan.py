"""Mamba-1 selective scan (S6): fast sequential reference, naive loop, single step.

The recurrence, per channel ``d`` (diagonal state of size ``n``)::

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      # h_t: (n,)
    y_t = C_t . h_t + D * u_t,   then   y_t *= silu(z_t)          # if z is given

Shape legend: ``b`` batch, ``d`` channels (``d_inner``), ``l`` length, ``n`` state size,
``g`` groups sharing ``B``/``C``.

Same signature and layout as mamba-ssm's ``selective_scan_fn`` / ``selective_scan_ref``
(``u, delta: (b, d, l)``, ``A: (d, n)``, ``B, C: (b, n, l)`` or ``(b, g, n, l)``), so the CUDA
kernel and :func:`selective_scan` are interchangeable; ``initial_state`` is our addition.

Why a sequential loop: Mamba-1's state is ``(b, d, n)`` per step with a different decay per
channel and step, so there is no small matrix form as in SSD. On CPU this is memory-bound; the
fastest plain-PyTorch form measured here (2 cores, batch 4, l=2048, d=512, n=16, fwd+bwd, one
thread) is a loop over time that touches each step's state once: ~1.3-1.7 s, against ~2 s for
the same loop with per-step indexing of strided slices and ~7-9 s for a chunked form that
materialises several ``(b, d, l, n)`` tensors (cumulative decays). Inputs are made time-major
once and split with ``unbind``: indexing ``x[..., t]`` per step would make the backward pass
quadratic in ``l``. Mamba-2 (:mod:`ehrfm.ops.ssd`) is the CPU default for this reason.

>>> import torch
>>> b, d, l, n = 2, 6, 50, 4
>>> u, delta = torch.randn(b, d, l), torch.rand(b, d, l) * 0.2
>>> A, B, C = -torch.rand(d, n) - 0.5, torch.randn(b, n, l), torch.randn(b, n, l)
>>> y, h = selective_scan(u, delta, A, B, C, return_last_state=True)
>>> y_ref, h_ref = selective_scan_naive(u, delta, A, B, C, return_last_state=True)
>>> y.shape, h.shape, torch.allclose(y, y_ref, atol=1e-5), torch.allclose(h, h_ref, atol=1e-5)
(torch.Size([2, 6, 50]), torch.Size([2, 6, 4]), True, True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .ssd import compute_dtype

__all__ = ["selective_scan", "selective_scan_naive", "selective_scan_step"]


def _prepare(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Validate, upcast, apply bias/softplus; B and C become ``(b, d or 1, n, l)``."""
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (b, d, l), got {tuple(u.shape)} and {tuple(delta.shape)}")
    b, d, l = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d={d}, n), got {tuple(A.shape)}")
    work = compute_dtype(u.dtype)
    u, delta, A, B, C = (t.to(work) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(work).view(d, 1)
    if delta_softplus:
        delta = F.softplus(delta)

    def per_channel(M: Tensor, name: str) -> Tensor:
        if M.dim() == 3 and M.shape[0] == b and M.shape[2] == l:
            return M.unsqueeze(1)  # (b, 1, n, l): shared by all channels
        if M.dim() == 4 and M.shape[0] == b and M.shape[3] == l and d % M.shape[1] == 0:
            return M.repeat_interleave(d // M.shape[1], dim=1)  # (b, d, n, l)
        raise ValueError(f"{name} must be (b, n, l) or (b, g, n, l) with d % g == 0, got {tuple(M.shape)}")

    return u, delta, A, per_channel(B, "B"), per_channel(C, "C")


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, out_dtype: torch.dtype) -> Tensor:
    if D is not None:
        y = y + D.to(y.dtype).view(-1, 1) * u
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba-1 selective scan, fast sequential form (pure PyTorch).

    Args:
        u: ``(b, d, l)`` inputs.
        delta: ``(b, d, l)`` step sizes before ``delta_bias``/softplus (0 at padding when both
            are off: a zero step leaves the state untouched).
        A: ``(d, n)`` negative decay rates.
        B, C: ``(b, n, l)`` or ``(b, g, n, l)``.
        D: ``(d,)`` skip connection; z: ``(b, d, l)`` gate (``y * silu(z)``).
        delta_bias: ``(d,)`` added to ``delta``; delta_softplus: apply softplus after the bias.
        return_last_state: also return the state after the last step.
        initial_state: ``(b, d, n)`` state before the first step, ``None`` for zeros.

    Returns:
        ``y: (b, d, l)`` in ``u.dtype``; with ``return_last_state`` also ``(b, d, n)`` in float32
        (float64 for float64 inputs).
    """
    out_dtype = u.dtype
    work = compute_dtype(u.dtype)
    u_in = u
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (b, d, l), got {tuple(u.shape)} and {tuple(delta.shape)}")
    b, d, l = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d={d}, n), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, M in (("B", B), ("C", C)):
        ok = (M.dim() == 3 and M.shape == (b, n, l)) or (
            M.dim() == 4 and M.shape[0] == b and M.shape[2:] == (n, l) and d % M.shape[1] == 0
        )
        if not ok:
            raise ValueError(
                f"{name} must be (b, n, l) or (b, g, n, l) with d % g == 0, got {tuple(M.shape)}"
            )
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    if B.shape[1] != C.shape[1]:
        raise ValueError(f"B and C must have the same number of groups, got {B.shape[1]} and {C.shape[1]}")
    g = B.shape[1]
    dg = d // g  # channels per group: B/C broadcast over them without copies

    u, delta, A, B, C = (t.to(work) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(work).view(d, 1)
    if delta_softplus:
        delta = F.softplus(delta)
    # Time-major once, then unbind: each step reads contiguous (b, ...) slices.
    u_steps = u.permute(2, 0, 1).reshape(l, b, g, dg, 1).unbind(0)
    delta_steps = delta.permute(2, 0, 1).reshape(l, b, g, dg, 1).unbind(0)
    B_steps = B.permute(3, 0, 1, 2).unsqueeze(3).contiguous().unbind(0)  # (b, g, 1, n) each
    C_steps = C.permute(3, 0, 1, 2).unsqueeze(-1).contiguous().unbind(0)  # (b, g, n, 1) each
    A = A.view(g, dg, n)
    if initial_state is None:
        state = u.new_zeros(b, g, dg, n)
    else:
        if initial_state.shape != (b, d, n):
            raise ValueError(f"initial_state must be {(b, d, n)}, got {tuple(initial_state.shape)}")
        state = initial_state.to(work).view(b, g, dg, n)
    ys = []
    for u_t, delta_t, B_t, C_t in zip(u_steps, delta_steps, B_steps, C_steps):
        state = torch.exp(delta_t * A) * state + (delta_t * u_t) * B_t
        ys.append(state @ C_t)  # (b, g, dg, 1)
    y = torch.stack(ys, dim=-1).view(b, d, l) if ys else u.new_zeros(b, d, 0)
    y = _finish(y, u_in.to(work), D, z, out_dtype)
    if return_last_state:
        return y, state.view(b, d, n)
    return y


def selective_scan_step(
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Advance the selective scan by one step, ``O(1)`` in the sequence length.

    Args:
        state: ``(b, d, n)``. u, delta: ``(b, d)`` (final step size: bias/softplus applied).
        A: ``(d, n)``. B, C: ``(b, n)`` or ``(b, g, n)``. D: ``(d,)``. z: ``(b, d)`` gate.

    Returns:
        ``(y: (b, d) in u.dtype, new_state like state)``.
    """
    out_dtype = u.dtype
    work = state.dtype
    u, delta, A, B, C = (t.to(work) for t in (u, delta, A, B, C))
    d = u.shape[1]
    if B.dim() == 3:
        B = B.repeat_interleave(d // B.shape[1], dim=1)  # (b, d, n)
        C = C.repeat_interleave(d // C.shape[1], dim=1)
    else:
        B, C = B.unsqueeze(1), C.unsqueeze(1)  # (b, 1, n)
    new_state = torch.exp(delta.unsqueeze(-1) * A) * state + (delta * u).unsqueeze(-1) * B
    y = (new_state * C).sum(-1)
    if D is not None:
        y = y + D.to(work) * u
    if z is not None:
        y = y * F.silu(z.to(work))
    return y.to(out_dtype), new_state


def selective_scan_naive(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The recurrence as a plain loop over time: the ground truth in parity tests.

    Same arguments and returns as :func:`selective_scan`; each step is :func:`selective_scan_step`.
    """
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, _ = u.shape
    state = u.new_zeros(b, d, A.shape[1]) if initial_state is None else initial_state.to(u.dtype)
    ys = []
    # B, C are (b, d|1, n, l): unbind time; selective_scan_step wants (b, n) or (b, g, n).
    for u_t, delta_t, B_t, C_t in zip(u.unbind(2), delta.unbind(2), B.unbind(3), C.unbind(3)):
        if B_t.shape[1] == 1:
            B_t, C_t = B_t.squeeze(1), C_t.squeeze(1)
        y_t, state = selective_scan_step(state, u_t, delta_t, A, B_t, C_t)
        ys.append(y_t)
    y = _finish(torch.stack(ys, dim=2) if ys else u.new_zeros(b, d, 0), u, D, z, out_dtype)
    if return_last_state:
        return y, state
    return y
