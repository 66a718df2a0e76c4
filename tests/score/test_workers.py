"""Scale-out: two Hydra-launched workers (joblib) plus a merge give exactly one worker's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ehrfm.meds_dataset import data_shards, shard_id
from ehrfm.score import score

pytestmark = pytest.mark.slow

OUTPUTS = ("prediction_details.parquet", "predictions/inpatient_admission_1y/0.parquet", "risk_assessments.ndjson", "skipped.parquet")


def test_two_workers_and_a_merge_equal_one_run(scoring_world: dict[str, Path], tmp_path: Path) -> None:
    common = [f"bundle={scoring_world['bundle']}", f"input={scoring_world['meds']}"]
    # joblib's workers each run with cpu_count // n_jobs OpenMP threads (1 here), and a float sum
    # split over another thread count rounds differently in the last bit: the reference run uses
    # the workers' thread count, so what is compared is the sharding alone.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        single = score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]),
                       output=str(tmp_path / "one"))
    finally:
        torch.set_num_threads(threads)
    sharded = tmp_path / "two"
    command = [sys.executable, "-m", "ehrfm.cli", "score", "-m", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'multirun'}", "workers=2", "worker=0,1",
               *common, f"output={sharded}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = data_shards(scoring_world["meds"])
    halves = (len(shards) + 1) // 2, len(shards) // 2  # worker k scores shards k, k + 2, ...
    assert (f"worker 0 of 2: scored {halves[0]} shards" in done.stdout
            and f"worker 1 of 2: scored {halves[1]} shards" in done.stdout)
    names = [shard_id(scoring_world["meds"], s) for s in shards]
    assert sorted(p.name for p in (sharded / "parts").iterdir()) == sorted(
        f"{n}{suffix}" for n in names for suffix in (".parquet", ".skipped.parquet"))
    assert not (sharded / "prediction_details.parquet").exists(), "workers write parts only"
    merged = score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]), output=str(sharded))
    assert merged["shards_resumed"] == merged["shards"] == single["shards"] == len(shards)
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
