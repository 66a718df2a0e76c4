"""Parity helpers shared by the op tests: the tolerance table and one comparison function.

Tolerances are mamba-ssm's (see shared/design/MAMBA_NOTES.md): outputs at (rtol, atol) per
dtype; gradients are compared after dividing by the reference's largest magnitude (gradients of
decay rates sum over the whole sequence and can be large) at twice the output tolerances.
"""

from __future__ import annotations

import torch
from torch import Tensor

TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (6e-4, 2e-3),
    torch.float16: (3e-3, 5e-3),
    torch.bfloat16: (3e-2, 5e-2),
}
GRAD_WIDENING = 2.0


def close(actual: Tensor, expected: Tensor, dtype: torch.dtype, grad: bool = False) -> bool:
    """Whether ``actual`` matches ``expected`` (the float64 reference) at ``dtype``'s tolerance."""
    rtol, atol = TOLERANCES[dtype]
    expected = expected.double()
    actual = actual.double()
    if grad:
        scale = max(1.0, expected.abs().max().item())
        actual, expected = actual / scale, expected / scale
        rtol, atol = rtol * GRAD_WIDENING, atol * GRAD_WIDENING
    return bool(torch.allclose(actual, expected, rtol=rtol, atol=atol))


def assert_parity(actual: Tensor, expected: Tensor, dtype: torch.dtype, what: str,
                  grad: bool = False) -> None:
    """Raise with the worst error when :func:`close` fails."""
    if not close(actual, expected, dtype, grad):
        err = (actual.double() - expected.double()).abs().max().item()
        scale = expected.abs().max().item()
        raise AssertionError(
            f"{what} ({dtype}, grad={grad}): max abs error {err:.3e} (reference max {scale:.3e})"
        )


def leaves(tensors: list[Tensor | None], dtype: torch.dtype) -> list[Tensor | None]:
    """Fresh leaf copies in ``dtype`` that require grad (None stays None)."""
    return [None if t is None else t.detach().to(dtype).clone().requires_grad_() for t in tensors]


def run(fn, inputs: list[Tensor | None], grad_out: Tensor, **kwargs) -> tuple[Tensor, list[Tensor | None]]:
    """``fn(*inputs, **kwargs)``, backward with ``grad_out``; returns (output, input grads)."""
    out = fn(*inputs, **kwargs)
    y = out[0] if isinstance(out, tuple) else out
    y.backward(grad_out.to(y.dtype))
    return y.detach(), [None if t is None else t.grad for t in inputs]
