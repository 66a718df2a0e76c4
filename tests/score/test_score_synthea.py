"""Scoring the real Synthea export from its FHIR files gives ``ehrfm evaluate``'s held-out numbers.

A tiny freshly initialised backbone is finetuned for one epoch on the 615-patient Synthea MEDS
dataset (plumbing, not science); ``ehrfm score`` then ingests ``synthea-r4`` from the FHIR
Bundles itself and scores the held-out patients at the times evaluation used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest
from score_builders import write_untrained_model

from ehrfm.evaluate import evaluate
from ehrfm.finetune import finetune
from ehrfm.score import RiskModel, score
from ehrfm.score.risk_assessment import validate_risk_assessment

pytestmark = pytest.mark.slow

TASKS = ["mortality_1y", "inpatient_admission_1y"]
MODEL = "mamba_mtf_task_per_task"


@pytest.fixture(scope="module")
def synthea_finetuned(synthea_meds: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthea_score")
    pretrain = root / "pretrain"
    pretrain.mkdir()
    (pretrain / "meds").symlink_to(synthea_meds, target_is_directory=True)
    write_untrained_model(pretrain, min_count=5)
    finetune(input=str(pretrain), output=str(root / "mtf"), tasks=TASKS, heads=["task_per_task"],
             trainer={"max_epochs": 1, "enable_progress_bar": False},
             data={"context_length": 512, "tokens_per_batch": 16384}, optim={"warmup_steps": 2})
    return root / "mtf"


def test_scoring_synthea_fhir_gives_evaluations_held_out_probabilities(
        synthea_finetuned: Path, shared_data: Path, tmp_path: Path) -> None:
    result = evaluate(input=str(synthea_finetuned), output=str(tmp_path / "evaluation"),
                      linear_probe=False, baselines=False, n_bootstrap=10)
    evaluated = (pl.read_parquet(Path(result["output"]) / "prediction_details.parquet")
                 .filter(pl.col("model") == MODEL, pl.col("split") == "held_out"))
    assert set(evaluated["task"]) == set(TASKS) and evaluated["subject_id"].n_unique() > 50
    times = evaluated.select("subject_id", "prediction_time").unique()
    times.write_parquet(tmp_path / "times.parquet")
    bundle = synthea_finetuned / "task_per_task" / "model"
    outputs = {}
    fhir = str(shared_data / "synthea-r4")
    for calibrated in (False, True):
        out = tmp_path / f"scores_calibrated_{calibrated}"
        source = fhir if not calibrated else str(tmp_path / "scores_calibrated_False" / "meds")  # ingested once
        summary = score(bundle=str(bundle), input=source, output=str(out),
                        prediction_times=str(tmp_path / "times.parquet"), calibrated=calibrated)
        assert summary["scored_rows"] == times.height and summary["skipped_rows"] == 0
        outputs[calibrated] = pl.read_parquet(out / "prediction_details.parquet")
    joined = evaluated.join(outputs[False], on=["subject_id", "prediction_time", "task"], how="inner")
    assert joined.height == evaluated.height, "every evaluated held-out row is scored"
    np.testing.assert_allclose(joined["predicted_boolean_probability_right"].to_numpy(),
                               joined["predicted_boolean_probability"].to_numpy(), rtol=0, atol=1e-6)
    # calibrated scores: the bundle's saved calibrators, the ones evaluate's "after calibration" uses
    risk = RiskModel.from_pretrained(bundle)
    calibrated = evaluated.join(outputs[True], on=["subject_id", "prediction_time", "task"], how="inner")
    for task in TASKS:
        rows = calibrated.filter(pl.col("task") == task)
        np.testing.assert_allclose(rows["predicted_boolean_probability_right"].to_numpy(),
                                   risk.calibrators[task].transform(rows["predicted_boolean_probability"].to_numpy()),
                                   rtol=0, atol=1e-6)
    assert outputs[True]["fhir_patient_id"].null_count() == 0
    lines = (tmp_path / "scores_calibrated_True" / "risk_assessments.ndjson").read_text().splitlines()
    assert len(lines) == outputs[True].height
    for line in lines[:: max(1, len(lines) // 50)]:
        validate_risk_assessment(orjson.loads(line))
