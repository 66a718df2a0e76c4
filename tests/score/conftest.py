"""A finetuned model bundle on ehrfm's synthetic patients, built once for the scoring tests.

The backbone is a freshly initialised tiny model finetuned for one epoch: these tests check
scoring's plumbing (equality with evaluation, resume, atomic output, FHIR out), not its science.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from score_builders import write_untrained_model

import ehrfm
from ehrfm.finetune import finetune
from ehrfm.synthetic.fhir_generator import write_synthetic_fhir

TASKS = ["inpatient_admission_1y", "emergency_visit_90d"]


@pytest.fixture(scope="session")
def scoring_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scoring")
    write_synthetic_fhir(root / "fhir", n_patients=120, seed=3)
    pretrain = root / "pretrain"
    ehrfm.ingest_fhir(root / "fhir", pretrain / "meds", workers=1, num_shards=2)
    write_untrained_model(pretrain, min_count=2)
    finetune(input=str(pretrain), output=str(root / "mtf"), tasks=TASKS, heads=["task_per_task"],
             trainer={"max_epochs": 1, "enable_progress_bar": False},
             data={"context_length": 256, "tokens_per_batch": 4096}, optim={"warmup_steps": 2})
    return {"root": root, "fhir": root / "fhir", "meds": pretrain / "meds", "finetune": root / "mtf",
            "bundle": root / "mtf" / "task_per_task" / "model"}


def _copy_meds(source: Path, target: Path, keep: Callable[[pl.DataFrame], pl.DataFrame]) -> Path:
    shutil.copytree(source / "metadata", target / "metadata")
    for shard in sorted((source / "data").rglob("*.parquet")):
        out = target / shard.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        keep(pl.read_parquet(shard)).write_parquet(out)
    return target


@pytest.fixture(scope="session")
def copy_meds() -> Callable[[Path, Path, Callable[[pl.DataFrame], pl.DataFrame]], Path]:
    """``copy_meds(source, target, keep)``: a MEDS dataset like ``source`` (same metadata, same
    shards) with ``keep`` applied to each shard's events."""
    return _copy_meds
