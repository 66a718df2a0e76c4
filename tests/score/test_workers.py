"""Scale-out: two Hydra-launched workers (joblib) plus a merge give exactly one worker's output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ehrfm.score import score

pytestmark = pytest.mark.slow

OUTPUTS = ("predictions.parquet", "risk_assessments.ndjson", "skipped.parquet")


def test_two_workers_and_a_merge_equal_one_run(scoring_world: dict[str, Path], tmp_path: Path) -> None:
    common = [f"bundle={scoring_world['bundle']}", f"input={scoring_world['meds']}"]
    single = score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]),
                   output=str(tmp_path / "one"))
    sharded = tmp_path / "two"
    command = [sys.executable, "-m", "ehrfm.cli", "score", "-m", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'multirun'}", "workers=2", "worker=0,1",
               *common, f"output={sharded}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "worker 0 of 2: scored 1 shards" in done.stdout and "worker 1 of 2: scored 1 shards" in done.stdout
    assert sorted(p.name for p in (sharded / "parts").iterdir()) == [
        "0.parquet", "0.skipped.parquet", "1.parquet", "1.skipped.parquet"]
    assert not (sharded / "predictions.parquet").exists(), "workers write parts only"
    merged = score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]), output=str(sharded))
    assert merged["shards_resumed"] == merged["shards"] == single["shards"] == 2
    for name in OUTPUTS:
        assert (sharded / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    counts = json.loads((sharded / "summary.json").read_text())
    assert counts["predictions"] == single["predictions"] and counts["patients_in_input"] == single["patients_in_input"]


def test_worker_settings_are_checked(scoring_world: dict[str, Path], tmp_path: Path) -> None:
    bundle = str(scoring_world["bundle"])
    with pytest.raises(ValueError, match=r"worker=2 must be in 0..1"):
        score(bundle=bundle, input=str(scoring_world["meds"]), output=str(tmp_path), workers=2, worker=2)
    with pytest.raises(ValueError, match="overwrite=true cannot be combined with worker"):
        score(bundle=bundle, input=str(scoring_world["meds"]), output=str(tmp_path), workers=2, worker=0,
              overwrite=True)
    with pytest.raises(ValueError, match="workers score a MEDS dataset; ingest the FHIR once first"):
        score(bundle=bundle, input=str(scoring_world["fhir"]), output=str(tmp_path), workers=2, worker=0)
