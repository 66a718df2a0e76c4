"""Stable subject ids and splits derived from the FHIR Patient id alone.

Both are pure functions of the id, so the same patient gets the same ``subject_id`` and the same
split in every run, on every machine, and in incremental re-ingests; no global state is needed
while files are processed in parallel.

>>> subject_id_for("018f428e-34f6-4707-8009-5ad742f901e7") == subject_id_for(
...     "018f428e-34f6-4707-8009-5ad742f901e7")
True
>>> split_for("p1", {"train": 0.8, "tuning": 0.1, "held_out": 0.1}) in {"train", "tuning", "held_out"}
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

_INT63 = (1 << 63) - 1


def subject_id_for(patient_key: str) -> int:
    """Non-negative int64 from the Patient id (first 8 bytes of BLAKE2b)."""
    digest = hashlib.blake2b(patient_key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _INT63


def split_fraction(patient_key: str) -> float:
    """A uniform number in [0, 1) from the Patient id, independent of :func:`subject_id_for`."""
    digest = hashlib.blake2b(patient_key.encode("utf-8"), digest_size=8, person=b"ehrfm-split").digest()
    return int.from_bytes(digest, "big") / float(1 << 64)


def split_for(patient_key: str, ratios: Mapping[str, float]) -> str:
    """The split whose cumulative ratio band holds the patient's :func:`split_fraction`."""
    validate_ratios(ratios)
    total = sum(ratios.values())
    point = split_fraction(patient_key) * total
    running = 0.0
    name = ""
    for name, ratio in ratios.items():
        running += ratio
        if point < running:
            return name
    return name


def validate_ratios(ratios: Mapping[str, float]) -> None:
    if not ratios:
        raise ValueError("split ratios are empty: give e.g. {train: 0.8, tuning: 0.1, held_out: 0.1}")
    bad = {name: value for name, value in ratios.items()
           if not (isinstance(value, (int, float)) and value >= 0)}
    if bad or sum(ratios.values()) <= 0:
        raise ValueError(f"split ratios must be non-negative numbers with a positive sum, got {dict(ratios)}")
