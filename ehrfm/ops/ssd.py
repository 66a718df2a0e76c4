"""Mamba-2 state space duality (SSD): chunked reference, naive sequential loop, single step.

The recurrence, per head ``h`` (state ``S`` of shape ``(p, n)``)::

    S_t = exp(dt_t * A) * S_{t-1} + dt_t * x_t B_t^T        # x_t: (p,), B_t: (n,)
    y_t = S_t C_t + D * x_t                                  # C_t: (n,)

Shape legend: ``b`` batch, ``l`` sequence length, ``h`` heads, ``p`` head dim, ``g`` groups of
heads sharing ``B``/``C`` (``h % g == 0``), ``n`` state size, ``q`` chunk size, ``c`` chunks.

Same layout as mamba-ssm's ``mamba_chunk_scan_combined`` (``x: (b, l, h, p)``, ``dt: (b, l, h)``,
``A: (h,)``, ``B, C: (b, l, g, n)``), so the kernel and :func:`ssd_chunked` are interchangeable.
``dt`` here is the final step size: softplus, bias and padding mask are applied by the caller.
A padded position with ``dt = 0`` leaves the state untouched (decay ``exp(0) = 1``, input
``0 * x``), which is how padding is kept out of the state.

Half-precision inputs are computed in float32 and the output cast back, as the kernels do.

>>> import torch
>>> b, l, h, p, g, n = 2, 37, 4, 8, 1, 16
>>> x, B, C = torch.randn(b, l, h, p), torch.randn(b, l, g, n), torch.randn(b, l, g, n)
>>> dt, A = torch.rand(b, l, h) * 0.1, -torch.rand(h) - 0.5
>>> y, S = ssd_chunked(x, dt, A, B, C, chunk_size=16, return_final_state=True)
>>> y_ref, S_ref = ssd_naive(x, dt, A, B, C, return_final_state=True)
>>> y.shape, S.shape, torch.allclose(y, y_ref, atol=1e-4), torch.allclose(S, S_ref, atol=1e-4)
(torch.Size([2, 37, 4, 8]), torch.Size([2, 4, 8, 16]), True, True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["compute_dtype", "ssd_chunked", "ssd_naive", "ssd_step"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half precisions are computed in float32 (the state must not be bf16); fp32/fp64 as given."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check_shapes(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[int, int]:
    if x.dim() != 4:
        raise ValueError(f"x must be (b, l, h, p), got shape {tuple(x.shape)}")
    b, l, h, _ = x.shape
    if dt.shape != (b, l, h):
        raise ValueError(f"dt must be {(b, l, h)}, got {tuple(dt.shape)}")
    if A.shape != (h,):
        raise ValueError(f"A must be ({h},), got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (b, l) or C.shape != B.shape:
        raise ValueError(f"B and C must be (b={b}, l={l}, g, n), got {tuple(B.shape)} and {tuple(C.shape)}")
    g, n = B.shape[2], B.shape[3]
    if h % g:
        raise ValueError(f"heads ({h}) must be a multiple of groups ({g})")
    return g, n


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba-2 SSD in chunked matrix form (pure PyTorch, fast on CPU).

    Within a chunk of ``q`` steps the output is a masked ``(q, q)`` matrix product (the
    "attention-like" quadratic form with decay mask ``exp(segsum(dt * A))``); across chunks the
    ``(p, n)`` states are carried by a linear pass over the ``l / q`` chunks. Cost is
    ``O(l * q)`` per head, memory linear in ``l``.

    Args:
        x: ``(b, l, h, p)`` inputs.
        dt: ``(b, l, h)`` step sizes (>= 0; 0 at padding).
        A: ``(h,)`` negative decay rates.
        B, C: ``(b, l, g, n)`` input and output projections of the state.
        chunk_size: ``q``; 64-128 is fastest on CPU. ``l`` need not be a multiple of it.
        D: ``(h,)`` skip connection, or ``None``.
        initial_state: ``(b, h, p, n)`` state before the first step, or ``None`` for zeros.
        return_final_state: also return the state after the last step.

    Returns:
        ``y: (b, l, h, p)`` in ``x.dtype``; with ``return_final_state`` also the final state
        ``(b, h, p, n)`` in float32 (float64 for float64 inputs).
    """
    g, n = _check_shapes(x, dt, A, B, C)
    out_dtype = x.dtype
    work = compute_dtype(x.dtype)
    x_in = x
    x, dt, A, B, C = (t.to(work) for t in (x, dt, A, B, C))
    b, l, h, p = x.shape
    hpg = h // g  # heads per group
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if initial_state is not None and initial_state.shape != (b, h, p, n):
        raise ValueError(f"initial_state must be {(b, h, p, n)}, got {tuple(initial_state.shape)}")
    if l == 0:
        empty = x.new_zeros(b, 0, h, p).to(out_dtype)
        state0 = x.new_zeros(b, h, p, n) if initial_state is None else initial_state.to(work)
        return (empty, state0) if return_final_state else empty
    q = min(int(chunk_size), l)  # a sequence shorter than a chunk is one chunk of its own length

    # Pad to whole chunks with dt = 0 and x = B = C = 0: padded steps neither decay nor feed
    # the state, so the final state is that of the last real step.
    pad = (-l) % q
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    c = (l + pad) // q

    # Heads are grouped (g, hpg) so B/C broadcast over the heads of a group without copies.
    x = x.reshape(b, c, q, g, hpg, p).permute(0, 1, 3, 4, 2, 5)  # (b, c, g, hpg, q, p)
    dt = dt.reshape(b, c, q, g, hpg).permute(0, 1, 3, 4, 2)  # (b, c, g, hpg, q)
    Bc = B.reshape(b, c, q, g, n).permute(0, 1, 3, 2, 4).unsqueeze(3)  # (b, c, g, 1, q, n)
    Cc = C.reshape(b, c, q, g, n).permute(0, 1, 3, 2, 4).unsqueeze(3)  # (b, c, g, 1, q, n)

    log_decay = dt * A.view(g, hpg, 1)  # (b, c, g, hpg, q), <= 0
    cum = log_decay.cumsum(-1)  # within-chunk cumulative log decay
    xdt = x * dt.unsqueeze(-1)  # (b, c, g, hpg, q, p)

    # 1) Intra-chunk (diagonal blocks): y_i = sum_{j<=i} exp(cum_i - cum_j) (C_i . B_j) dt_j x_j.
    # The exponent is masked to -inf above the diagonal *before* exp, so the (positive,
    # possibly huge) upper-triangle differences never overflow and get zero gradient.
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    segsum = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
    scores = Cc @ Bc.transpose(-1, -2)  # (b, c, g, 1, q, q)
    y = (torch.exp(segsum) * scores) @ xdt  # (b, c, g, hpg, q, p)

    # 2) State contributed by each chunk, decayed to the chunk's end: (b, c, g, hpg, p, n).
    decay_to_end = torch.exp(cum[..., -1:] - cum)  # (b, c, g, hpg, q)
    chunk_states = (xdt * decay_to_end.unsqueeze(-1)).transpose(-1, -2) @ Bc

    # 3) Inter-chunk recurrence, a linear pass over chunks. Slices are taken once with unbind:
    # indexing a tensor per iteration would make the backward pass quadratic in the length.
    chunk_decay = torch.exp(cum[..., -1])  # (b, c, g, hpg)
    if initial_state is None:
        state = x.new_zeros(b, g, hpg, p, n)
    else:
        state = initial_state.to(work).reshape(b, g, hpg, p, n)
    entering = []
    for s_c, d_c in zip(chunk_states.unbind(1), chunk_decay.unbind(1)):
        entering.append(state)
        state = d_c[..., None, None] * state + s_c
    prev = torch.stack(entering, dim=1)  # (b, c, g, hpg, p, n): state entering each chunk

    # 4) Contribution of the entering state: y_i += exp(cum_i) * C_i . S_prev.
    y = y + torch.exp(cum).unsqueeze(-1) * (Cc @ prev.transpose(-1, -2))

    y = y.permute(0, 1, 4, 2, 3, 5).reshape(b, c * q, h, p)[:, :l]
    if D is not None:
        y = y + D.to(work).view(h, 1) * x_in.to(work)
    y = y.to(out_dtype)
    if return_final_state:
        return y, state.reshape(b, h, p, n)
    return y


def ssd_step(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Advance the SSD recurrence by one step, ``O(1)`` in the sequence length.

    Args:
        state: ``(b, h, p, n)`` state before the step (kept in float32/float64).
        x: ``(b, h, p)``; dt: ``(b, h)``; A: ``(h,)``; B, C: ``(b, g, n)``; D: ``(h,)`` or ``None``.

    Returns:
        ``(y, new_state)`` with ``y: (b, h, p)`` in ``x.dtype`` and ``new_state`` like ``state``.
    """
    out_dtype = x.dtype
    work = state.dtype
    x_w, dt, A, B, C = (t.to(work) for t in (x, dt, A, B, C))
    b, h, p = x_w.shape
    g = B.shape[1]
    # Expand groups to heads: (b, g, n) -> (b, h, n).
    B_h = B.repeat_interleave(h // g, dim=1)
    C_h = C.repeat_interleave(h // g, dim=1)
    decay = torch.exp(dt * A)  # (b, h)
    new_state = decay[..., None, None] * state + (dt.unsqueeze(-1) * x_w).unsqueeze(-1) * B_h.unsqueeze(-2)
    y = (new_state @ C_h.unsqueeze(-1)).squeeze(-1)  # (b, h, p)
    if D is not None:
        y = y + D.to(work).view(h, 1) * x_w
    return y.to(out_dtype), new_state


def ssd_naive(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The SSD recurrence as a plain loop over time: the ground truth in parity tests.

    Same arguments and returns as :func:`ssd_chunked` (no chunking). ``O(l)`` Python
    iterations: for tests and tiny inputs only.
    """
    _check_shapes(x, dt, A, B, C)
    work = compute_dtype(x.dtype)
    b, _, h, p = x.shape
    n = B.shape[-1]
    state = x.new_zeros(b, h, p, n, dtype=work) if initial_state is None else initial_state.to(work)
    ys = []
    for x_t, dt_t, B_t, C_t in zip(x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1)):
        y_t, state = ssd_step(state, x_t.to(work), dt_t, A, B_t, C_t, D)
        ys.append(y_t)
    y = torch.stack(ys, dim=1).to(x.dtype) if ys else x.new_zeros(b, 0, h, p)
    if return_final_state:
        return y, state
    return y
