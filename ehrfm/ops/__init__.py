"""Selective-scan ops: pure-PyTorch references (always importable) and the optional kernels.

- :mod:`ehrfm.ops.ssd`: Mamba-2 SSD (``ssd_chunked``, ``ssd_naive``, ``ssd_step``).
- :mod:`ehrfm.ops.selective_scan`: Mamba-1 S6 (``selective_scan``, ``selective_scan_naive``,
  ``selective_scan_step``).
- :mod:`ehrfm.ops.conv`: causal depthwise conv with a step form.
- :mod:`ehrfm.ops.kernels`: the single guarded import of ``mamba_ssm`` / ``causal_conv1d``.

>>> from ehrfm.ops import ssd_chunked, selective_scan, load_kernels
"""

from .conv import CausalConv1d, causal_conv1d, causal_conv1d_step, last_window
from .kernels import Kernels, kernels_for, load_kernels
from .selective_scan import selective_scan, selective_scan_naive, selective_scan_step
from .ssd import ssd_chunked, ssd_naive, ssd_step

__all__ = [
    "CausalConv1d",
    "Kernels",
    "causal_conv1d",
    "causal_conv1d_step",
    "kernels_for",
    "last_window",
    "load_kernels",
    "selective_scan",
    "selective_scan_naive",
    "selective_scan_step",
    "ssd_chunked",
    "ssd_naive",
    "ssd_step",
]
