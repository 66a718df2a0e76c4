"""The one place that imports the optional CUDA/Triton kernels (``mamba_ssm``, ``causal_conv1d``).

Why so guarded: ``import mamba_ssm`` imports Triton, transformers and (in 2.3.x) the compiled
``selective_scan_cuda`` extension at package import time, so on a CPU-only machine, or with an
extension built against another torch, it raises ImportError, OSError (missing ``.so``/CUDA
libraries) or RuntimeError (Triton finding no driver). We therefore import lazily, only when
CUDA is available, catch all three, and log once when falling back to the PyTorch references in
:mod:`ehrfm.ops.ssd`, :mod:`ehrfm.ops.selective_scan` and :mod:`ehrfm.ops.conv`.

Each kernel is looked up independently: recent mamba-ssm releases ship the Triton Mamba-2 path
without the compiled Mamba-1 selective scan, and causal-conv1d is a separate package.

>>> import torch
>>> k = load_kernels()
>>> torch.cuda.is_available() or k.available() == ()
True
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)

DISABLE_ENV = "EHRFM_DISABLE_KERNELS"
"""Set to ``1`` to force the PyTorch references even where the kernels import (benchmarks)."""

# What an import of a CUDA extension or a Triton module raises when something is missing.
_IMPORT_ERRORS = (ImportError, OSError, RuntimeError)


@dataclass(frozen=True)
class Kernels:
    """The optional fused kernels; a field is ``None`` when that kernel is unavailable.

    - ``selective_scan_fn``: mamba-ssm CUDA Mamba-1 scan, ``(u, delta, A, B, C, D, z,
      delta_bias, delta_softplus, return_last_state)`` with ``u: (b, d, l)``.
    - ``mamba_chunk_scan_combined``: mamba-ssm Triton Mamba-2 SSD, ``x: (b, l, h, p)``.
    - ``causal_conv1d_fn``: causal-conv1d CUDA depthwise conv, ``x: (b, c, l)``, ``weight: (c, k)``.
    """

    selective_scan_fn: Callable[..., Any] | None = None
    mamba_chunk_scan_combined: Callable[..., Any] | None = None
    causal_conv1d_fn: Callable[..., Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def available(self) -> tuple[str, ...]:
        """Names of the kernels that imported."""
        names = ("selective_scan_fn", "mamba_chunk_scan_combined", "causal_conv1d_fn")
        return tuple(name for name in names if getattr(self, name) is not None)


def _try_import(label: str, importer: Callable[[], Any], errors: dict[str, str]) -> Any:
    try:
        return importer()
    except _IMPORT_ERRORS as exc:  # see module docstring for why all three
        errors[label] = f"{type(exc).__name__}: {exc}"
        return None


def _import_selective_scan() -> Any:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn


def _import_chunk_scan() -> Any:
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return mamba_chunk_scan_combined


def _import_causal_conv1d() -> Any:
    from causal_conv1d import causal_conv1d_fn

    return causal_conv1d_fn


@functools.lru_cache(maxsize=1)
def load_kernels() -> Kernels:
    """Import the optional kernels once per process; never raises.

    Without CUDA (or with ``EHRFM_DISABLE_KERNELS=1``) nothing is imported at all, so a CPU
    install never pays for, or trips over, Triton.
    """
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        logger.info("ehrfm: %s is set; using the PyTorch reference ops", DISABLE_ENV)
        return Kernels(errors={"all": f"disabled by {DISABLE_ENV}"})
    if not torch.cuda.is_available():
        return Kernels(errors={"all": "CUDA is not available"})
    errors: dict[str, str] = {}
    kernels = Kernels(
        selective_scan_fn=_try_import("selective_scan_fn", _import_selective_scan, errors),
        mamba_chunk_scan_combined=_try_import("mamba_chunk_scan_combined", _import_chunk_scan, errors),
        causal_conv1d_fn=_try_import("causal_conv1d_fn", _import_causal_conv1d, errors),
        errors=errors,
    )
    if errors:
        # Once per process (lru_cache): a training loop must not log this every step.
        logger.warning(
            "ehrfm: CUDA is available but some mamba-ssm/causal-conv1d kernels did not import; "
            "using the PyTorch reference for those (slower). %s",
            "; ".join(f"{name}: {why}" for name, why in errors.items()),
        )
    return kernels


def kernels_for(tensor: torch.Tensor) -> Kernels | None:
    """The kernels usable for ``tensor``: ``None`` unless it is on a CUDA device.

    The single switch the mixers consult, so the device check and the import live in one place.
    """
    if not tensor.is_cuda:
        return None
    return load_kernels()
