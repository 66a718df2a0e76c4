"""``BackboneConfig``: the one dataclass that describes an ehrfm Mamba model, with size presets.

>>> cfg = BackboneConfig.preset("tiny", vocab_size=500)
>>> cfg.d_model, cfg.n_layers, cfg.mixer, cfg.state_size, cfg.n_heads
(64, 2, 'mamba2', 64, 8)
>>> BackboneConfig.from_dict(cfg.to_dict()) == cfg
True
>>> BackboneConfig(mixer="mamba3")
Traceback (most recent call last):
...
ValueError: BackboneConfig.mixer must be one of ('mamba1', 'mamba2'), got 'mamba3'
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["MIXERS", "PRESETS", "BackboneConfig"]

MIXERS = ("mamba1", "mamba2")

# Named sizes (torchtune-style builders as data). `base` matches the published EHR Mamba scale
# (~120M parameters: d_model 768, 32 layers); `small` is what pretrains on a CPU in minutes
# per epoch; `tiny` is for tests and smoke runs. No d_state here: left None, it follows the
# mixer (64 for Mamba-2, 16 for Mamba-1), so `preset("small", mixer="mamba1")` is a sensible
# Mamba-1 rather than one with a 4x larger state.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"d_model": 64, "n_layers": 2, "headdim": 16},
    "small": {"d_model": 256, "n_layers": 4, "headdim": 64},
    "base": {"d_model": 768, "n_layers": 32, "headdim": 64},
}


# Upper bounds on every size, checked before anything is built: a config.json from elsewhere
# must not make ehrfm allocate without limit (the largest is far above any real model).
SIZE_LIMITS = {
    "vocab_size": 10_000_000, "pad_token_id": 10_000_000, "n_token_types": 1024, "max_visit_index": 1_000_000,
    "n_time_frequencies": 4096, "n_age_frequencies": 4096, "d_model": 16384, "n_layers": 512, "expand": 16,
    "d_conv": 64, "d_state": 4096, "headdim": 4096, "ngroups": 1024, "chunk_size": 1 << 16,
    "gpu_chunk_size": 1 << 16, "dt_rank": 16384,
}
FLOAT_FIELDS = ("time_min_period_days", "time_max_period_days", "dt_min", "dt_max", "dt_init_floor",
                "norm_eps", "dropout", "initializer_range")


@dataclass
class BackboneConfig:
    """Everything needed to rebuild a backbone (saved as ``config.json`` by ``save_pretrained``).

    Vocabulary and streams:
        vocab_size: number of token ids (the tokenizer's vocabulary size).
        pad_token_id: id of ``[PAD]`` (0 in ehrfm tokenizers).
        n_token_types: size of the ``token_type`` stream's alphabet (``TokenType``: 10).
        max_visit_index: visit indices at or above this share the last embedding row.
        n_time_frequencies: sinusoid frequencies for the time-since-first-token stream.
        time_min_period_days, time_max_period_days: shortest/longest sinusoid period (days).
        n_age_frequencies: sinusoid frequencies for age; periods from 1 to 200 years.

    Mixer (``mixer="mamba2"`` is the default: its chunked form is fast on CPU):
        d_model: residual width. n_layers: number of residual blocks.
        expand: ``d_inner = expand * d_model``. d_conv: short causal conv width.
        d_state: SSM state size ``n``; ``None`` -> 64 for Mamba-2, 16 for Mamba-1.
        headdim: Mamba-2 head dim ``p`` (``n_heads = d_inner / headdim``). ngroups: B/C groups.
        chunk_size: Mamba-2 chunk length of the PyTorch reference (64-128 is fastest on CPU).
        gpu_chunk_size: chunk length passed to the Triton kernel (mamba-ssm's default, 256).
        dt_rank: Mamba-1 rank of the step-size projection; ``None`` -> ``ceil(d_model / 16)``.
        dt_min, dt_max, dt_init_floor: initial step sizes (log-uniform in [dt_min, dt_max]).
        a_init_range: Mamba-2 initial ``-A`` drawn uniformly in this range.

    Training:
        norm_eps: RMSNorm epsilon. dropout: on the embedding output.
        initializer_range: std of embedding/linear init.
        gradient_checkpointing: recompute blocks in backward (memory for long sequences).
        use_kernels: use mamba-ssm/causal-conv1d kernels when importable and on CUDA.
    """

    vocab_size: int = 4096
    pad_token_id: int = 0
    n_token_types: int = 10
    max_visit_index: int = 1024
    n_time_frequencies: int = 16
    time_min_period_days: float = 1.0 / 24.0
    time_max_period_days: float = 200.0 * 365.25
    n_age_frequencies: int = 8

    mixer: str = "mamba2"
    d_model: int = 128
    n_layers: int = 2
    expand: int = 2
    d_conv: int = 4
    d_state: int | None = None
    headdim: int = 32
    ngroups: int = 1
    chunk_size: int = 64
    gpu_chunk_size: int = 256
    dt_rank: int | None = None
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    a_init_range: tuple[float, float] = (1.0, 16.0)

    norm_eps: float = 1e-5
    dropout: float = 0.0
    initializer_range: float = 0.02
    gradient_checkpointing: bool = False
    use_kernels: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.a_init_range, (list, tuple)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.a_init_range):
            raise ValueError(f"BackboneConfig.a_init_range must be two numbers, got {self.a_init_range!r}")
        self.a_init_range = tuple(float(v) for v in self.a_init_range)  # JSON gives a list
        if self.mixer not in MIXERS:
            raise ValueError(f"BackboneConfig.mixer must be one of {MIXERS}, got {self.mixer!r}")
        for name, limit in SIZE_LIMITS.items():
            value = getattr(self, name)
            if value is None and name in ("d_state", "dt_rank"):
                continue
            smallest = 0 if name == "pad_token_id" else 1
            if not isinstance(value, int) or isinstance(value, bool) or not smallest <= value <= limit:
                kind = "a positive integer" if smallest else "an integer >= 0"
                raise ValueError(f"BackboneConfig.{name} must be {kind} of at most {limit:,}, got {value!r}")
        for name in FLOAT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"BackboneConfig.{name} must be a finite number, got {value!r}")
        if not all(math.isfinite(v) for v in self.a_init_range):
            raise ValueError(f"BackboneConfig.a_init_range must be finite, got {self.a_init_range}")
        for name in ("norm_eps", "dt_init_floor"):
            if getattr(self, name) <= 0:
                raise ValueError(f"BackboneConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.initializer_range < 0:
            raise ValueError(f"BackboneConfig.initializer_range must be >= 0, got {self.initializer_range}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"BackboneConfig.pad_token_id must be in [0, vocab_size={self.vocab_size}), "
                f"got {self.pad_token_id}"
            )
        if self.mixer == "mamba2":
            if self.d_inner % self.headdim:
                raise ValueError(
                    f"BackboneConfig: d_inner = expand * d_model = {self.d_inner} "
                    f"must be a multiple of headdim={self.headdim}"
                )
            if self.n_heads % self.ngroups:
                raise ValueError(
                    f"BackboneConfig: n_heads = {self.n_heads} must be a multiple of ngroups={self.ngroups}"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BackboneConfig.dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"BackboneConfig: need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        if not 0 < self.time_min_period_days <= self.time_max_period_days:
            raise ValueError(
                f"BackboneConfig: need 0 < time_min_period_days <= time_max_period_days, got "
                f"{self.time_min_period_days}, {self.time_max_period_days}"
            )
        if len(self.a_init_range) != 2 or not 0 < self.a_init_range[0] <= self.a_init_range[1]:
            raise ValueError(
                f"BackboneConfig.a_init_range must be (low, high) with 0 < low <= high, "
                f"got {self.a_init_range}"
            )

    # Derived sizes: properties, so a saved config stays exactly what the user wrote.
    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def state_size(self) -> int:
        if self.d_state is not None:
            return self.d_state
        return 64 if self.mixer == "mamba2" else 16

    @property
    def n_heads(self) -> int:
        """Mamba-2 heads."""
        return self.d_inner // self.headdim

    @property
    def time_step_rank(self) -> int:
        """Mamba-1 rank of the dt projection."""
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.d_model / 16)

    def dominant_parameter_count(self) -> int:
        """The parameters of the large matrices (embedding tables, projections): within a few
        percent of the whole model, computed without building it (loading checks a config
        against its weights file with it before allocating anything)."""
        d, e, n = self.d_model, self.d_inner, self.state_size
        tables = (self.vocab_size + self.max_visit_index + self.n_token_types) * d
        if self.mixer == "mamba2":
            per_layer = d * (2 * e + 2 * self.ngroups * n + self.n_heads) + e * d
        else:
            r = self.time_step_rank
            per_layer = d * 2 * e + e * (r + 2 * n) + r * e + e * n + e * d
        return tables + self.n_layers * per_layer

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BackboneConfig:
        """A named size (``tiny``, ``small``, ``base``) with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["a_init_range"] = list(self.a_init_range)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not be ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown BackboneConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)
