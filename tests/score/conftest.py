"""A finetuned model bundle on ehrfm's synthetic patients, built once for the scoring tests.

The backbone is a freshly initialised tiny model finetuned for one epoch: these tests check
scoring's plumbing (equality with evaluation, resume, atomic output, FHIR out), not its science.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ehrfm
from ehrfm.finetune import finetune
from ehrfm.model import BackboneConfig, EHRLanguageModel
from ehrfm.synthetic.fhir_generator import write_synthetic_fhir
from ehrfm.tokenize import EventTokenizer, TokenType
from ehrfm.tokenize.tokenize_meds import fit_on_train

TASKS = ["inpatient_admission_1y", "emergency_visit_90d"]


@pytest.fixture(scope="session")
def scoring_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scoring")
    write_synthetic_fhir(root / "fhir", n_patients=120, seed=3)
    pretrain = root / "pretrain"
    ehrfm.ingest_fhir(root / "fhir", pretrain / "meds", workers=1, num_shards=2)
    tokenizer = fit_on_train(EventTokenizer(min_count=2), pretrain / "meds")
    torch.manual_seed(0)
    config = BackboneConfig.preset("tiny", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
                                   n_token_types=len(TokenType))
    EHRLanguageModel(config).save_pretrained(pretrain / "model")
    tokenizer.save_pretrained(pretrain / "model" / "tokenizer")
    finetune(input=str(pretrain), output=str(root / "mtf"), tasks=TASKS, heads=["task_per_task"],
             trainer={"max_epochs": 1, "enable_progress_bar": False},
             data={"context_length": 256, "tokens_per_batch": 4096}, optim={"warmup_steps": 2})
    return {"root": root, "fhir": root / "fhir", "meds": pretrain / "meds", "finetune": root / "mtf",
            "bundle": root / "mtf" / "task_per_task" / "model"}
