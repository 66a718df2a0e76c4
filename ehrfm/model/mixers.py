"""Mamba-1 and Mamba-2 mixers: full-sequence ``forward`` and ``O(1)`` recurrent ``step``.

Shape legend: ``b`` batch, ``l`` length, ``d`` d_model, ``e`` d_inner (= expand * d),
``h`` heads, ``p`` head dim, ``g`` groups, ``n`` state size, ``k`` conv width.

Both mixers take an optional ``mask: (b, l)`` (True at real tokens). Padding is kept out of
the computation at its two entry points: the conv input is zeroed at padded positions (so it
acts like the conv's own zero padding) and the SSM step size ``dt`` is zeroed (a zero step
neither decays nor feeds the state). With padding on the right or on the left, real tokens
therefore get exactly the outputs they would get without it, and the returned state is the
state after each row's last real token. (Holes inside a row would show up as zeros in the
conv window of the next few tokens; ``MambaBackbone`` packs such rows first. ``step`` with a
False mask skips a token exactly.)

The kernel switch is one ``if`` per mixer: :func:`ehrfm.ops.kernels_for` returns the mamba-ssm
kernels only for CUDA tensors where they imported; everything else runs the references.

>>> import torch
>>> from ehrfm.model.config import BackboneConfig
>>> mixer = Mamba2Mixer(BackboneConfig.preset("tiny"))
>>> x = torch.randn(2, 10, 64)
>>> y, state = mixer(x, return_state=True)
>>> y_t, state = mixer.step(torch.randn(2, 64), state)
>>> y.shape, y_t.shape, tuple(state.ssm.shape)
(torch.Size([2, 10, 64]), torch.Size([2, 64]), (2, 8, 16, 64))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ehrfm.ops import CausalConv1d, kernels_for, selective_scan, selective_scan_step, ssd_chunked, ssd_step

from .config import BackboneConfig

__all__ = ["MIXER_CLASSES", "GatedRMSNorm", "Mamba1Mixer", "Mamba2Mixer", "MixerState", "RMSNorm",
           "build_mixer"]


def _f32(t: Tensor) -> Tensor:
    """Upcast half precisions to float32; float32/float64 stay (fp64 models stay exact)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


@dataclass
class MixerState:
    """Recurrent state of one mixer layer.

    ``conv``: ``(b, conv_channels, k - 1)`` last conv inputs, in the model dtype.
    ``ssm``: Mamba-2 ``(b, h, p, n)`` / Mamba-1 ``(b, e, n)``, always float32 (or float64).
    """

    conv: Tensor
    ssm: Tensor

    def select(self, keep: Tensor, other: MixerState) -> MixerState:
        """Rows where ``keep: (b,)`` is True from ``self``, the others from ``other``."""
        return MixerState(
            conv=torch.where(keep.view(-1, 1, 1), self.conv, other.conv),
            ssm=torch.where(keep.view(-1, *([1] * (self.ssm.dim() - 1))), self.ssm, other.ssm),
        )


def _state_dtype(dtype: torch.dtype | None, weight: Tensor) -> torch.dtype:
    # SSM states accumulate over the whole history: never below float32.
    return torch.promote_types(dtype or weight.dtype, torch.float32)


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in at least float32 whatever the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """``(..., dim)`` -> ``(..., dim)``."""
        x32 = _f32(x)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * _f32(self.weight)).to(x.dtype)


class GatedRMSNorm(nn.Module):
    """Mamba-2's output norm: ``rmsnorm(y * silu(z))``, normalised per group of channels.

    Per-group normalisation keeps the layer equivalent under tensor parallelism across groups
    (as in Mamba-2); with one group it is a plain RMSNorm of the gated output.
    """

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        if dim % group_size:
            raise ValueError(f"dim {dim} must be a multiple of group_size {group_size}")
        self.eps = eps
        self.group_size = group_size
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        """``y, z: (..., dim)`` -> ``(..., dim)``."""
        gated = _f32(y) * F.silu(_f32(z))
        groups = gated.unflatten(-1, (-1, self.group_size))
        groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)
        return (groups.flatten(-2) * _f32(self.weight)).to(y.dtype)


def _init_dt_bias(size: int, config: BackboneConfig) -> Tensor:
    """Inverse-softplus of step sizes log-uniform in ``[dt_min, dt_max]`` (Mamba's init)."""
    dt = torch.exp(
        torch.rand(size) * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(config.dt_min)
    )
    dt = dt.clamp(min=config.dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))  # softplus(dt + log(1 - exp(-dt))) == dt


def _no_weight_decay(*params: nn.Parameter) -> None:
    # Same marker mamba-ssm uses: optimiser builders skip decay on SSM dynamics parameters.
    for param in params:
        param._no_weight_decay = True  # type: ignore[attr-defined]


def _init_linear(linear: nn.Linear, std: float) -> None:
    nn.init.normal_(linear.weight, std=std)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def _conv_readout(conv: nn.Module, x: Tensor, state: Tensor) -> Tensor:
    """The conv's output for ``k`` alternative next inputs ``x: (b, k, c)`` after ``state``,
    without the new state: the window part every alternative shares is computed once."""
    weight = conv.weight.squeeze(1)  # (c, kernel)
    shared = (state.to(x.dtype) * weight[:, :-1]).sum(-1)  # (b, c)
    y = shared.unsqueeze(1) + x * weight[:, -1]
    if conv.bias is not None:
        y = y + conv.bias
    return F.silu(y)


class Mamba2Mixer(nn.Module):
    """Mamba-2 block mixer: in_proj -> causal conv -> SSD -> gated RMSNorm -> out_proj.

    ``in_proj`` produces, per token, the gate ``z: (e,)``, the conv input ``xBC: (e + 2 g n,)``
    and ``dt: (h,)``; after the conv, ``xBC`` splits into ``x: (h, p)``, ``B, C: (g, n)``.
    """

    def __init__(self, config: BackboneConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.d_inner = config.d_inner
        self.n_heads = config.n_heads
        self.headdim = config.headdim
        self.ngroups = config.ngroups
        self.d_state = config.state_size
        self.conv_channels = self.d_inner + 2 * self.ngroups * self.d_state
        self.in_proj = nn.Linear(config.d_model, self.d_inner + self.conv_channels + self.n_heads, bias=False)
        self.conv = CausalConv1d(self.conv_channels, config.d_conv)
        self.conv.use_kernel = config.use_kernels
        low, high = config.a_init_range
        self.A_log = nn.Parameter(torch.log(torch.empty(self.n_heads).uniform_(low, high)))
        self.dt_bias = nn.Parameter(_init_dt_bias(self.n_heads, config))
        self.D = nn.Parameter(torch.ones(self.n_heads))
        _no_weight_decay(self.A_log, self.dt_bias, self.D)
        self.norm = GatedRMSNorm(self.d_inner, self.d_inner // self.ngroups, eps=config.norm_eps)
        self.out_proj = nn.Linear(self.d_inner, config.d_model, bias=False)
        _init_linear(self.in_proj, config.initializer_range)
        # GPT-2 style: residual branches scaled down with depth so the stream's variance is flat.
        _init_linear(self.out_proj, config.initializer_range / math.sqrt(2 * config.n_layers))

    def _split(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return torch.split(zxbcdt, [self.d_inner, self.conv_channels, self.n_heads], dim=-1)

    def _dt(self, dt: Tensor, mask: Tensor | None) -> Tensor:
        dt = F.softplus(_f32(dt) + _f32(self.dt_bias))
        return dt if mask is None else dt * mask.unsqueeze(-1)

    def forward(
        self,
        hidden: Tensor,
        mask: Tensor | None = None,
        state: MixerState | None = None,
        return_state: bool = False,
    ) -> Tensor | tuple[Tensor, MixerState]:
        """Full sequence: ``hidden: (b, l, d)``, ``mask: (b, l)`` -> ``(b, l, d)`` [, state].

        ``state`` continues from an earlier call (chunked prefill); with ``return_state`` the
        state after each row's last real token is returned for :meth:`step`.
        """
        b, l, _ = hidden.shape
        h, p, g, n = self.n_heads, self.headdim, self.ngroups, self.d_state
        z, xBC, dt = self._split(self.in_proj(hidden))
        if mask is not None:
            xBC = xBC * mask.unsqueeze(-1).to(xBC.dtype)
        conv_out = self.conv(xBC, None if state is None else state.conv, mask, activation="silu",
                             return_state=return_state)
        if return_state:
            xBC, conv_state = conv_out
        else:
            xBC = conv_out
        x, B, C = torch.split(xBC, [self.d_inner, g * n, g * n], dim=-1)
        x, B, C = x.view(b, l, h, p), B.view(b, l, g, n), C.view(b, l, g, n)
        dt = self._dt(dt, mask)
        A = -torch.exp(_f32(self.A_log))
        initial = None if state is None else state.ssm
        kernels = kernels_for(hidden) if self.config.use_kernels else None
        if kernels is not None and kernels.mamba_chunk_scan_combined is not None:
            result = kernels.mamba_chunk_scan_combined(
                x, dt, A, B, C, self.config.gpu_chunk_size, D=self.D.float(),
                initial_states=initial, return_final_states=return_state,
            )  # fmt: skip
        else:
            result = ssd_chunked(x, dt, A, B, C, self.config.chunk_size, D=self.D, initial_state=initial,
                                 return_final_state=return_state)
        y, final = result if return_state else (result, None)
        out = self.out_proj(self.norm(y.reshape(b, l, self.d_inner), z))
        if return_state:
            return out, MixerState(conv=conv_state, ssm=_f32(final))
        return out

    def step(self, hidden: Tensor, state: MixerState,
             mask: Tensor | None = None) -> tuple[Tensor, MixerState]:
        """One token: ``hidden: (b, d)``, ``mask: (b,)`` -> ``(out: (b, d), new_state)``.

        Rows with ``mask`` False keep their state unchanged (their output is meaningless).
        """
        b = hidden.shape[0]
        h, p, g, n = self.n_heads, self.headdim, self.ngroups, self.d_state
        z, xBC, dt = self._split(self.in_proj(hidden))
        if mask is not None:
            xBC = xBC * mask.unsqueeze(-1).to(xBC.dtype)
        xBC, conv_state = self.conv.step(xBC, state.conv, activation="silu")
        x, B, C = torch.split(xBC, [self.d_inner, g * n, g * n], dim=-1)
        dt = self._dt(dt, mask)
        A = -torch.exp(_f32(self.A_log))
        y, ssm = ssd_step(state.ssm, x.reshape(b, h, p), dt, A, B.reshape(b, g, n), C.reshape(b, g, n),
                          self.D)
        new_state = MixerState(conv=conv_state, ssm=ssm)
        if mask is not None:
            new_state = new_state.select(mask, state)
        return self.out_proj(self.norm(y.reshape(b, self.d_inner), z)), new_state

    def readout(self, hidden: Tensor, state: MixerState) -> Tensor:
        """Outputs for ``k`` alternative next tokens of each row, ``hidden: (b, k, d)`` -> ``(b, k, d)``.

        The same numbers as ``step`` from ``k`` copies of ``state``, without copying it or
        writing new states: with ``S' = a S + dt x B^T``, ``y = S' C + D x = a (S C) +
        dt (B . C) x + D x``, so the state is read once for all ``k`` (task prompts).
        """
        b, k, _ = hidden.shape
        h, p, g, n = self.n_heads, self.headdim, self.ngroups, self.d_state
        z, xBC, dt = self._split(self.in_proj(hidden))
        xBC = _conv_readout(self.conv, xBC, state.conv)
        x, B, C = torch.split(xBC, [self.d_inner, g * n, g * n], dim=-1)
        work = state.ssm.dtype
        x = x.reshape(b, k, h, p).to(work)
        B_h = B.reshape(b, k, g, n).repeat_interleave(h // g, dim=2).to(work)  # (b, k, h, n)
        C_h = C.reshape(b, k, g, n).repeat_interleave(h // g, dim=2).to(work)
        dt = self._dt(dt, None).to(work)  # (b, k, h)
        decay = torch.exp(dt * -torch.exp(_f32(self.A_log)).to(work))
        read = torch.einsum("bhpn,bkhn->bkhp", state.ssm, C_h)
        y = (decay.unsqueeze(-1) * read + (dt * (B_h * C_h).sum(-1)).unsqueeze(-1) * x
             + self.D.to(work).view(h, 1) * x)
        return self.out_proj(self.norm(y.to(hidden.dtype).reshape(b, k, self.d_inner), z))

    def allocate_state(self, batch_size: int, device: torch.device | None = None,
                       dtype: torch.dtype | None = None) -> MixerState:
        """Zero state for ``batch_size`` rows (conv in ``dtype``, SSM in at least float32)."""
        device = device or self.in_proj.weight.device
        return MixerState(
            conv=self.conv.allocate_state(batch_size, device, dtype),
            ssm=torch.zeros(batch_size, self.n_heads, self.headdim, self.d_state, device=device,
                            dtype=_state_dtype(dtype, self.in_proj.weight)),
        )


class Mamba1Mixer(nn.Module):
    """Mamba-1 block mixer: in_proj -> causal conv -> selective scan (gated by z) -> out_proj.

    ``in_proj`` gives ``x, z: (e,)``; after the conv, ``x_proj`` gives the low-rank ``dt``
    (``r``) and ``B, C: (n,)``; ``dt_proj`` lifts ``dt`` to ``(e,)``.
    """

    def __init__(self, config: BackboneConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.d_inner = config.d_inner
        self.d_state = config.state_size
        self.dt_rank = config.time_step_rank
        self.conv_channels = self.d_inner
        self.in_proj = nn.Linear(config.d_model, 2 * self.d_inner, bias=False)
        self.conv = CausalConv1d(self.d_inner, config.d_conv)
        self.conv.use_kernel = config.use_kernels
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        # S4D-real init: A_{d, i} = -(i + 1), the same for every channel.
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, config.d_model, bias=False)
        _init_linear(self.in_proj, config.initializer_range)
        _init_linear(self.x_proj, config.initializer_range)
        _init_linear(self.out_proj, config.initializer_range / math.sqrt(2 * config.n_layers))
        bound = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        with torch.no_grad():
            self.dt_proj.bias.copy_(_init_dt_bias(self.d_inner, config))
        _no_weight_decay(self.A_log, self.D, self.dt_proj.bias)

    def _delta(self, dt: Tensor, mask: Tensor | None) -> Tensor:
        delta = F.softplus(_f32(self.dt_proj(dt)))
        return delta if mask is None else delta * mask.unsqueeze(-1)

    def forward(
        self,
        hidden: Tensor,
        mask: Tensor | None = None,
        state: MixerState | None = None,
        return_state: bool = False,
    ) -> Tensor | tuple[Tensor, MixerState]:
        """Full sequence: ``hidden: (b, l, d)``, ``mask: (b, l)`` -> ``(b, l, d)`` [, state]."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        conv_out = self.conv(x, None if state is None else state.conv, mask, activation="silu",
                             return_state=return_state)
        if return_state:
            x, conv_state = conv_out
        else:
            x = conv_out
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = self._delta(dt, mask)
        A = -torch.exp(_f32(self.A_log))
        # The kernel's layout is (b, channels, l).
        args = (x.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2))
        kernels = kernels_for(hidden) if self.config.use_kernels else None
        if kernels is not None and kernels.selective_scan_fn is not None and state is None:
            # The CUDA scan wants delta in the input dtype (bf16 under autocast); A, D in fp32.
            u, delta_k, *rest = args
            result = kernels.selective_scan_fn(u, delta_k.to(u.dtype), *rest, self.D.float(),
                                               z.transpose(1, 2), None, False, return_state)
        else:  # also for continuing from a state: selective_scan_fn takes no initial state
            initial = None if state is None else state.ssm
            result = selective_scan(*args, D=self.D, z=z.transpose(1, 2), return_last_state=return_state,
                                    initial_state=initial)
        y, final = result if return_state else (result, None)
        out = self.out_proj(y.transpose(1, 2).to(hidden.dtype))
        if return_state:
            return out, MixerState(conv=conv_state, ssm=_f32(final))
        return out

    def step(self, hidden: Tensor, state: MixerState,
             mask: Tensor | None = None) -> tuple[Tensor, MixerState]:
        """One token: ``hidden: (b, d)``, ``mask: (b,)`` -> ``(out: (b, d), new_state)``."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        x, conv_state = self.conv.step(x, state.conv, activation="silu")
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = self._delta(dt, mask)
        A = -torch.exp(_f32(self.A_log))
        y, ssm = selective_scan_step(state.ssm, x, delta, A, B, C, self.D, z)
        new_state = MixerState(conv=conv_state, ssm=ssm)
        if mask is not None:
            new_state = new_state.select(mask, state)
        return self.out_proj(y.to(hidden.dtype)), new_state

    def readout(self, hidden: Tensor, state: MixerState) -> Tensor:
        """Outputs for ``k`` alternative next tokens of each row, ``hidden: (b, k, d)`` -> ``(b, k, d)``:
        ``step`` from ``k`` copies of ``state`` without copying it (see ``Mamba2Mixer.readout``)."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        x = _conv_readout(self.conv, x, state.conv)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        work = state.ssm.dtype
        delta = self._delta(dt, None).to(work)  # (b, k, e)
        A = -torch.exp(_f32(self.A_log)).to(work)  # (e, n)
        u, B, C = x.to(work), B.to(work), C.to(work)
        decay = torch.exp(delta.unsqueeze(-1) * A)  # (b, k, e, n)
        read = (decay * state.ssm.unsqueeze(1) * C.unsqueeze(2)).sum(-1)
        y = read + delta * u * (B * C).sum(-1, keepdim=True) + self.D.to(work) * u
        y = y * F.silu(z.to(work))
        return self.out_proj(y.to(hidden.dtype))

    def allocate_state(self, batch_size: int, device: torch.device | None = None,
                       dtype: torch.dtype | None = None) -> MixerState:
        """Zero state for ``batch_size`` rows (conv in ``dtype``, SSM in at least float32)."""
        device = device or self.in_proj.weight.device
        return MixerState(
            conv=self.conv.allocate_state(batch_size, device, dtype),
            ssm=torch.zeros(batch_size, self.d_inner, self.d_state, device=device,
                            dtype=_state_dtype(dtype, self.in_proj.weight)),
        )


MIXER_CLASSES: dict[str, type[nn.Module]] = {"mamba1": Mamba1Mixer, "mamba2": Mamba2Mixer}


def build_mixer(config: BackboneConfig, layer_idx: int = 0) -> Mamba1Mixer | Mamba2Mixer:
    """The mixer named by ``config.mixer``."""
    return MIXER_CLASSES[config.mixer](config, layer_idx)
