"""``run_demo(...)``: ingest, tokenize and pretrain on ehrfm's built-in synthetic patients.

Ingest (FHIR -> MEDS), tokenize (MEDS -> token sequences), pretrain (a tiny Mamba for a few
epochs), each written under ``output`` where a person can open it, each through the same
Python call a user makes (``ehrfm.ingest.run_ingest``, ``ehrfm.tokenize.tokenize_dataset``,
``ehrfm.pretrain.pretrain``). The patients come from :mod:`ehrfm.synthetic`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ehrfm.ingest import IngestConfig, run_ingest
from ehrfm.pretrain import pretrain
from ehrfm.resources import example_fhir_dir
from ehrfm.tokenize import EventTokenizer, tokenize_dataset
from ehrfm.typed_config import conf_group, resolve_config

from .config import DemoConfig

log = logging.getLogger("ehrfm.demo")

__all__ = ["run_demo"]


def run_demo(config: DemoConfig | Mapping[str, Any] | None = None, /, **settings: Any) -> dict[str, Any]:
    """Run the demo; returns the ingest summary, tokenize summary and pretraining metrics."""
    config = resolve_config(DemoConfig, config, settings, where="demo")
    output = Path(config.output)
    fhir = example_fhir_dir(n_patients=config.n_patients, seed=config.seed)
    print(f"[1/3] ingest: {config.n_patients} synthetic patients ({fhir}) -> {output / 'meds'}")
    summary = run_ingest(IngestConfig(inputs=[str(fhir)], output=str(output / "meds"), workers=config.workers,
                                      overwrite=True))
    print(summary.table())
    print(f"[2/3] tokenize -> {output / 'tokens'}")
    tokens = tokenize_dataset(output / "meds", EventTokenizer(min_count=config.min_count), output / "tokens",
                              overwrite=True)
    for split, stats in sorted(tokens["splits"].items()):
        print(f"  {split:<9} {stats['sequences']:>5} sequences {stats['tokens']:>8} tokens")
    print(f"[3/3] pretrain a tiny Mamba -> {output / 'pretrain'}")
    # conf/pretrain_experiment/demo_tiny.yaml holds the demo's pretraining settings, so that
    # `ehrfm pretrain experiment=demo_tiny` trains the same model.
    experiment = conf_group("pretrain_experiment", "demo_tiny")
    experiment.pop("output", None)
    trainer = {**experiment.pop("trainer", {}), "max_epochs": config.epochs, "enable_progress_bar": False}
    metrics = pretrain(experiment, input=str(output / "tokens"), output=str(output / "pretrain"),
                       trainer=trainer)
    print(f"demo done: {output}/meds (MEDS), {output}/tokens (sequences), {output}/pretrain/model (weights)")
    return {"ingest": summary.to_dict(), "tokenize": tokens, "pretrain": metrics}
