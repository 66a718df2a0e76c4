"""Settings of ``ehrfm demo``; ``conf/demo.yaml`` holds the same keys for the CLI."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DemoConfig"]


@dataclass
class DemoConfig:
    """Where the demo writes, how many synthetic patients it makes, and how long it trains."""

    output: str = "ehrfm_out/demo"
    n_patients: int = 60
    seed: int = 7
    workers: int = 0  # ingest processes; 0 = one per CPU core
    min_count: int = 2  # tokenizer vocabulary threshold (the population is small)
    epochs: int = 12
