"""Optional dependencies: a setting that needs a missing extra says which; training runs without
tensorboard (CSV logs only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

import ehrfm.extras
import ehrfm.training
from ehrfm.extras import MissingExtraError, has_module
from ehrfm.ingest.config import IngestConfig
from ehrfm.training import build_trainer


def test_dotted_names_of_missing_parents_are_not_installed() -> None:
    assert has_module("fhir.resources")  # the dev extra has it
    assert not has_module("surely_not_installed_parent.child")


def test_strict_ingest_without_fhir_resources_names_the_extra_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    IngestConfig(inputs=["x"], output="y", strict=True)  # installed: accepted
    monkeypatch.setattr(ehrfm.extras, "has_module", lambda name: name != "fhir.resources")
    with pytest.raises(MissingExtraError, match=r'strict=true .* pip install "ehrfm\[fhir\]"'):
        IngestConfig(inputs=["x"], output="y", strict=True)
    IngestConfig(inputs=["x"], output="y")  # the default does not need it


@pytest.mark.parametrize("installed", [True, False])
def test_training_logs_to_csv_always_and_to_tensorboard_when_installed(installed: bool, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ehrfm.training, "has_module", lambda name: installed)
    trainer, _ = build_trainer(tmp_path, {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False},
                               monitor="val_loss", mode="min")
    kinds = [type(logger) for logger in trainer.loggers]
    assert kinds == ([CSVLogger, TensorBoardLogger] if installed else [CSVLogger])
