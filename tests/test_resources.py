"""Shipped files are found, and example data is generated once into the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehrfm import resources


def test_conf_dir_holds_every_stage_config() -> None:
    from ehrfm.cli import STAGES

    for name in STAGES:
        assert (resources.conf_dir() / f"{name}.yaml").is_file(), name


def test_example_fhir_dir_is_generated_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHRFM_CACHE", str(tmp_path))
    first = resources.example_fhir_dir(n_patients=3, seed=1)
    assert first.is_relative_to(tmp_path) and (first / ".complete").is_file()
    stamp = (first / ".complete").stat().st_mtime_ns
    assert resources.example_fhir_dir(n_patients=3, seed=1) == first
    assert (first / ".complete").stat().st_mtime_ns == stamp
    assert resources.example_fhir_dir(n_patients=4, seed=1) != first
