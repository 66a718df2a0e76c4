"""``ehrfm pretrain``: every experiment composes and runs; resume continues; DDP runs on gloo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ehrfm.cli import compose_stage
from ehrfm.model import EHRLanguageModel
from ehrfm.pretrain import pretrain
from ehrfm.pretrain.stage import run_pretrain_stage
from ehrfm.resources import conf_dir

EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "pretrain_experiment").glob("*.yaml"))
SMALL_DATA = ["data.context_length=256", "data.tokens_per_batch=1024", "trainer.enable_progress_bar=false"]


def _compose(overrides: list[str]):
    return compose_stage("pretrain", overrides)


def test_an_experiment_overrides_the_stage_defaults() -> None:
    cfg = _compose(["experiment=synthea_small"])
    assert cfg.model.d_model == 256 and cfg.trainer.max_epochs == 8 and cfg.data.tokens_per_batch == 8192
    assert cfg.output == "ehrfm_out/synthea_small" and cfg.input.endswith("synthea-r4")


def test_python_call_runs_without_hydra_and_matches_the_cli_defaults(tokens_dir: Path,
                                                                     tmp_path: Path) -> None:
    metrics = pretrain(input=str(tokens_dir), output=str(tmp_path), trainer={"fast_dev_run": True,
                       "enable_progress_bar": False}, data={"context_length": 256, "tokens_per_batch": 1024})
    assert metrics["global_step"] == 1
    assert EHRLanguageModel.from_pretrained(tmp_path / "model").config.d_model == _compose([]).model.d_model


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_with_fast_dev_run(experiment: str, tokens_dir: Path, tmp_path: Path) -> None:
    cfg = _compose([f"experiment={experiment}", f"output={tmp_path}", f"input={tokens_dir}",
                    "+trainer.fast_dev_run=true", *SMALL_DATA])
    metrics = run_pretrain_stage(cfg)
    assert metrics["global_step"] == 1
    model = EHRLanguageModel.from_pretrained(tmp_path / "model")
    assert model.config.d_model == cfg.model.d_model


def test_training_beats_unigram_and_resume_continues_the_step_count(tokens_dir: Path, tmp_path: Path) -> None:
    common = [f"input={tokens_dir}", *SMALL_DATA, "optim.warmup_steps=2", "optim.learning_rate=3e-3"]
    straight = run_pretrain_stage(_compose([f"output={tmp_path / 'a'}", "trainer.max_epochs=4", *common]))
    assert straight["best_val_perplexity"] < straight["unigram_perplexity"]
    first = run_pretrain_stage(_compose([f"output={tmp_path / 'b'}", "trainer.max_epochs=2", *common]))
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file()
    resumed = run_pretrain_stage(_compose([f"output={tmp_path / 'b'}", "trainer.max_epochs=4",
                                           "ckpt_path=last", *common]))
    assert first["global_step"] * 2 == resumed["global_step"] == straight["global_step"]
    logs = (list((tmp_path / "a" / "logs").rglob("metrics.csv"))
            + list((tmp_path / "a" / "logs").rglob("events.*")))
    assert len(logs) >= 2, "CSV and TensorBoard logs"


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_gloo(tokens_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ehrfm.cli", "pretrain", "trainer=ddp_cpu", f"output={tmp_path}",
         f"input={tokens_dir}", "trainer.max_epochs=1", *SMALL_DATA],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    printed = result.stdout + result.stderr
    assert "MEMBER: 1/2" in printed and "MEMBER: 2/2" in printed, "two ranks must have joined"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] >= 1 and metrics["best_val_perplexity"] is not None
