"""Settings of ``ehrfm synth``; ``conf/synth.yaml`` holds the same keys for the CLI.

>>> SynthConfig(output="pop").format
'ndjson'
>>> SynthConfig(output="pop", format="csv")
Traceback (most recent call last):
...
ValueError: synth: format='csv': expected one of bundle, ndjson
"""

from __future__ import annotations

from dataclasses import dataclass

from ehrfm.synthetic.population import FORMATS

__all__ = ["SynthConfig"]


@dataclass
class SynthConfig:
    """``n_patients`` simulated patients of population ``seed`` -> ``output``/fhir + truth."""

    output: str
    n_patients: int = 1000
    seed: int = 0
    format: str = "ndjson"  # bundle: a transaction Bundle per patient; ndjson: Bulk FHIR per type
    gzip: bool = False
    notes: bool = False  # DocumentReference progress and discharge notes
    imaging: bool = False  # ImagingStudy chest X-rays at emergency visits and admissions
    workers: int = 0  # processes; 0 = one per CPU core
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"synth: format={self.format!r}: expected one of {', '.join(FORMATS)}")
        if self.n_patients < 1:
            raise ValueError(f"synth: n_patients={self.n_patients}: expected at least 1")
        if self.workers < 0:
            raise ValueError(f"synth: workers={self.workers}: expected 0 (one per core) or more")
