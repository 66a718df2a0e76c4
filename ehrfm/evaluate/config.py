"""Settings of one ``ehrfm evaluate`` run; ``conf/evaluate.yaml`` holds the same keys for the CLI.

>>> EvaluateConfig(input="runs/mtf").calibration
'temperature'
>>> EvaluateConfig(calibration="platt")
Traceback (most recent call last):
...
ValueError: calibration must be one of ['isotonic', 'none', 'temperature'], got 'platt'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EvaluateConfig"]


@dataclass
class EvaluateConfig:
    """``input`` (an ``ehrfm finetune`` output) -> ``output`` (default ``<input>/evaluation``)."""

    input: str = "ehrfm_out/finetune"
    output: str | None = None
    linear_probe: bool = True  # frozen pretrained backbone + L2 logistic regression
    baselines: bool = True  # count features + LightGBM (EHRSHOT grid) and L2 logistic regression
    calibration: str = "temperature"  # fit on tuning, reported before/after
    n_bootstrap: int = 1000  # patient-level bootstrap replicates for the 95% CIs
    tokens_per_batch: int = 32768  # scoring batch size in padded tokens
    device: str | None = None  # default: cuda when available, else cpu
    seed: int = 0

    def __post_init__(self) -> None:
        from ehrfm.predict.calibration import CALIBRATORS

        names = sorted({*CALIBRATORS, "none"})
        if self.calibration not in names:
            raise ValueError(f"calibration must be one of {names}, got {self.calibration!r}")
        if self.n_bootstrap < 1:
            raise ValueError(f"n_bootstrap must be positive, got {self.n_bootstrap}")
