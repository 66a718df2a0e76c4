"""``ehrfm finetune`` then ``ehrfm evaluate`` end to end on ehrfm's synthetic patients.

The backbone is an untrained tiny model (this checks the plumbing, not the science; the real
comparison runs on Synthea with ``experiment=synthea_mtf``). Tasks: a built-in one and a
user-written YAML file, as a user would add one.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

import ehrfm
from ehrfm.cli import compose_stage
from ehrfm.evaluate.stage import run_evaluate_stage
from ehrfm.finetune.stage import run_finetune_stage
from ehrfm.model import BackboneConfig, EHRLanguageModel, MultitaskModel
from ehrfm.schema import prediction_schema
from ehrfm.synthetic.fhir_generator import write_synthetic_fhir
from ehrfm.tokenize import EventTokenizer
from ehrfm.tokenize.sequence_schema import TokenType
from ehrfm.tokenize.tokenize_meds import fit_on_train

USER_TASK = """\
name: acute_visit_1y
description: An inpatient or emergency visit within a year after an encounter ends.
prompt_token: "[TASK_007]"
trigger:
  prefixes: [VISIT_END/]
  offset: 1s
prediction_window:
  start: 0s
  end: 365d
label:
  codes: [VISIT_START/IMP, VISIT_START/EMER]
sampling:
  max_per_subject: 5
"""

MODELS = {"mamba_mtf_task_shared", "mamba_mtf_task_per_task", "linear_probe", "lightgbm",
          "logistic_regression"}


@pytest.fixture(scope="module")
def pretrain_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `ehrfm pretrain` leaves behind: meds/ and model/ (+ model/tokenizer)."""
    root = tmp_path_factory.mktemp("finetune_stage")
    write_synthetic_fhir(root / "fhir", n_patients=120, seed=3)
    ehrfm.ingest_fhir(root / "fhir", root / "pretrain" / "meds", workers=1)
    tokenizer = fit_on_train(EventTokenizer(min_count=2), root / "pretrain" / "meds")
    torch.manual_seed(0)
    config = BackboneConfig.preset("tiny", vocab_size=tokenizer.vocab_size,
                                   pad_token_id=tokenizer.pad_token_id, n_token_types=len(TokenType))
    EHRLanguageModel(config).save_pretrained(root / "pretrain" / "model")
    tokenizer.save_pretrained(root / "pretrain" / "model" / "tokenizer")
    (root / "acute_visit_1y.yaml").write_text(USER_TASK)
    return root / "pretrain"


_compose = compose_stage


def test_experiments_chain_the_outputs_of_pretrain_finetune_and_evaluate() -> None:
    pretrain = _compose("pretrain", ["experiment=synthea_small"])
    finetune = _compose("finetune", ["experiment=synthea_mtf"])
    evaluate = _compose("evaluate", ["experiment=synthea_mtf"])
    assert finetune.input == pretrain.output == "ehrfm_out/synthea_small"
    assert evaluate.input == finetune.output == "ehrfm_out/synthea_mtf"
    assert list(finetune.heads) == ["task_shared", "task_per_task"]


@pytest.mark.slow
def test_finetune_then_evaluate(pretrain_output: Path, tmp_path: Path) -> None:
    user_task = pretrain_output.parent / "acute_visit_1y.yaml"
    out = tmp_path / "mtf"
    summary = run_finetune_stage(_compose("finetune", [
        f"input={pretrain_output}", f"output={out}",
        f"tasks=[inpatient_admission_1y,{user_task}]", "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "data.context_length=256", "data.tokens_per_batch=4096", "optim.warmup_steps=2",
    ]))
    tasks = ["inpatient_admission_1y", "acute_visit_1y"]
    assert summary["tasks"] == tasks
    assert ((out / "labels" / "inpatient_admission_1y" / "0.parquet").is_file()
            and (out / "labels" / "acute_visit_1y" / "0.parquet").is_file())
    assert summary["best_head"] in ("task_shared", "task_per_task")
    for head in ("task_shared", "task_per_task"):
        metrics = summary["heads"][head]
        assert metrics["global_step"] > 0 and 0.0 <= metrics["best_tuning_mean_auroc"] <= 1.0
        assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
        model = MultitaskModel.from_pretrained(out / head / "model")
        assert model.task_names == tasks and model.head_name == head
        tokenizer = EventTokenizer.from_pretrained(out / head / "model" / "tokenizer")
        assert model.prompt_token_ids.tolist() == tokenizer.convert_tokens_to_ids(["[TASK_001]",
                                                                                   "[TASK_007]"])
    # The finetuned weights moved away from the pretrained ones (training happened).
    pretrained = EHRLanguageModel.from_pretrained(pretrain_output / "model").backbone.state_dict()
    finetuned = MultitaskModel.from_pretrained(out / "task_shared" / "model").backbone.state_dict()
    assert any(not torch.equal(pretrained[k], finetuned[k]) for k in pretrained)

    result = run_evaluate_stage(_compose("evaluate", [f"input={out}", "n_bootstrap=50"]))
    evaluation = Path(result["output"])
    assert evaluation == out / "evaluation"
    predictions = pl.read_parquet(evaluation / "prediction_details.parquet")
    assert set(predictions["model"].unique()) == MODELS
    assert set(predictions["split"].unique()) == {"tuning", "held_out"}
    # the same rows, one MEDS prediction file per task, model and split (what meds-evaluation reads)
    for (task, model, split), rows in predictions.group_by("task", "model", "split"):
        meds = pq.read_table(evaluation / "predictions" / task / model / split / "0.parquet")
        assert meds.schema.equals(prediction_schema()) and meds.num_rows == rows.height
    # Every model is scored on exactly the same labelled rows of each task and split.
    for (task, split), group in predictions.group_by("task", "split"):
        keys = {model: set(rows.select("subject_id", "prediction_time", "boolean_value").iter_rows())
                for (model,), rows in group.group_by("model")}
        reference = keys.pop("lightgbm")
        assert all(rows == reference for rows in keys.values()), (task, split)
    results = json.loads((evaluation / "results.json").read_text())
    assert results and (evaluation / "results.md").read_text().count("|") > 10
    for task in tasks:
        assert ((evaluation / f"{task}_roc.png").is_file()
                and (evaluation / f"{task}_calibration.png").is_file())
    # Each head's model directory is a bundle; evaluation applied its saved calibrators and filled
    # in the card's held-out results.
    from ehrfm.predict.bundle import read_calibrators, read_card

    for head in ("task_shared", "task_per_task"):
        bundle = out / head / "model"
        assert sorted(p.stem for p in (bundle / "tasks").glob("*.yaml")) == sorted(tasks)
        saved = read_calibrators(bundle, tasks)
        card = read_card(bundle)
        assert card["held_out"]["results"] and "| task |" in (bundle / "model_card.md").read_text()
        assert card["training_data"]["code_vocabulary_size"] == EventTokenizer.from_pretrained(
            bundle / "tokenizer").vocab_size
        for row in results["results"]:
            if row["model"] == f"mamba_mtf_{head}":
                assert row["calibrator"]["params"] == saved[row["task"]].params()
                assert "saved in the model bundle" in row["note"]


@pytest.mark.slow
def test_sigterm_during_finetuning_exits_non_zero_and_leaves_no_final_model(pretrain_output: Path,
                                                                           tmp_path: Path) -> None:
    """As a scheduler or a pipeline's Ctrl-C would: the next stage must not run on a half-done one."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "mtf"
    command = [sys.executable, "-m", "ehrfm.cli", "finetune", f"input={pretrain_output}", f"output={out}",
               "tasks=[inpatient_admission_1y]", "heads=[task_shared]", "trainer.max_epochs=200",
               "trainer.enable_progress_bar=false", "early_stopping.patience=1000",
               "data.context_length=256", "data.tokens_per_batch=4096"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("task_shared/**/events.out.tfevents*")):  # training has started
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "finetuning did not start within 5 minutes"
        time.sleep(0.5)
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-3000:]
    assert "ehrfm finetune: stopped by SIGTERM before it finished" in stderr
    assert not (out / "task_shared" / "model" / "model.safetensors").exists()
    assert not (out / "finetune_summary.json").exists()
