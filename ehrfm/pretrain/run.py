"""``pretrain(...)``: FHIR or MEDS or tokens in, a pretrained ``EHRLanguageModel`` out.

One call runs whatever is missing: ingest (when ``input`` is FHIR), tokenize (when it is not a
tokenized dataset), then Lightning training. Outputs under ``output``::

    meds/ tokens/            built here when the input is not already tokenized
    checkpoints/last.ckpt    for resuming only (ckpt_path=last)
    model/                   config.json + model.safetensors of the best validation epoch (+ tokenizer/)
    logs/csv, logs/tensorboard
    metrics.json             validation perplexity per epoch, unigram baseline, padding share
    pretrain_config.yaml     the settings of the run

``ehrfm pretrain`` (:mod:`ehrfm.pretrain.stage`) is this function behind Hydra.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor

from ehrfm.tokenize import EventTokenizer, tokenize_dataset
from ehrfm.tokenize.sequence_schema import TokenType
from ehrfm.training import build_trainer, logged_epochs, restore_best
from ehrfm.typed_config import resolve_config, to_mapping

from .config import PretrainConfig
from .datamodule import TokenSequenceDataModule
from .module import PretrainModule
from .unigram import unigram_perplexity

log = logging.getLogger("ehrfm.pretrain")

MONITOR = "val/perplexity"


def _is_tokens_dir(path: Path) -> bool:
    return (path / "tokenizer").is_dir() and (path / "data").is_dir()


def prepare_tokens(config: PretrainConfig) -> Path:
    """The token shards to train on, building MEDS and tokens into ``output`` when they are missing."""
    output = Path(config.output)
    inputs = [config.input] if isinstance(config.input, str) else list(config.input or [])
    if len(inputs) == 1 and _is_tokens_dir(Path(inputs[0])):
        return Path(inputs[0])
    tokens_dir = output / "tokens"
    if _is_tokens_dir(tokens_dir):  # built by an earlier (interrupted) run into this output
        return tokens_dir
    from ehrfm.ingest import ensure_meds
    from ehrfm.resources import example_fhir_dir

    meds_dir = ensure_meds(inputs or [str(example_fhir_dir())], output / "meds")
    log.info("tokenizing %s -> %s", meds_dir, tokens_dir)
    tokenize_dataset(meds_dir, EventTokenizer(**config.tokenizer), tokens_dir, overwrite=True)
    return tokens_dir


def pretrain(config: PretrainConfig | Mapping[str, Any] | None = None, /, **settings: Any) -> dict[str, Any]:
    """Pretrain a model; returns the metrics (also written to ``metrics.json``).

    Takes a :class:`PretrainConfig`, a mapping of its settings, or its settings as keywords
    (``pretrain(input="meds/", output="runs/pt", model={"d_model": 128})``).
    """
    config = resolve_config(PretrainConfig, config, settings, where="pretrain")
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "pretrain_config.yaml").write_text(yaml.safe_dump(to_mapping(config), sort_keys=False))
    L.seed_everything(config.seed, workers=True)
    tokens_dir = prepare_tokens(config)
    tokenizer = EventTokenizer.from_pretrained(tokens_dir / "tokenizer")
    datamodule = TokenSequenceDataModule(
        tokens_dir, tokenizer.pad_token_id, context_length=config.data.context_length,
        tokens_per_batch=config.data.tokens_per_batch, num_workers=config.data.num_workers, seed=config.seed,
    )
    datamodule.setup()
    model_config = {**config.model, "vocab_size": tokenizer.vocab_size,
                    "pad_token_id": tokenizer.pad_token_id, "n_token_types": len(TokenType)}
    trainer, checkpoint = build_trainer(output, config.trainer, monitor=MONITOR, mode="min", save_last=True,
                                        callbacks=[LearningRateMonitor(logging_interval="step")])
    steps_per_epoch = math.ceil(len(datamodule.train_dataloader()) / max(1, int(config.trainer.get(
        "accumulate_grad_batches", 1))))
    max_epochs = int(config.trainer.get("max_epochs") or 1)
    optim = config.optim
    module = PretrainModule(model_config, learning_rate=optim.learning_rate, weight_decay=optim.weight_decay,
                            warmup_steps=optim.warmup_steps, total_steps=steps_per_epoch * max_epochs)
    ckpt_path = config.ckpt_path
    if ckpt_path == "last":
        last = output / "checkpoints" / "last.ckpt"
        ckpt_path = str(last) if last.is_file() else None
    # A checkpoint is read as weights and plain data only (never unpickled code), whatever
    # torch's default for weights_only is in the installed version.
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    per_epoch = [{"epoch": int(row["epoch"] or 0), "val_perplexity": row[MONITOR],
                  "val_loss": row["val/loss"]}
                 for row in logged_epochs(trainer, MONITOR, [MONITOR, "val/loss"])]
    metrics: dict[str, Any] = {
        "validation": per_epoch,
        "best_val_perplexity": min((e["val_perplexity"] for e in per_epoch), default=None),
    }
    assert datamodule.train_set is not None and datamodule.val_set is not None
    metrics["unigram_perplexity"] = unigram_perplexity(datamodule.train_set, datamodule.val_set,
                                                       tokenizer.vocab_size)
    metrics["padding_fraction"] = datamodule.padding_report()
    metrics["global_step"] = trainer.global_step
    metrics["parameters"] = sum(p.numel() for p in module.model.parameters())
    if trainer.is_global_zero:
        restore_best(module, checkpoint, fast_dev_run=bool(config.trainer.get("fast_dev_run")))
        module.model.save_pretrained(output / "model")
        tokenizer.save_pretrained(output / "model" / "tokenizer")
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _print_metrics(metrics)
    return metrics


def _print_metrics(metrics: dict[str, Any]) -> None:
    best = metrics["best_val_perplexity"]
    unigram = metrics["unigram_perplexity"]
    print(f"validation perplexity: best {best if best is None else round(best, 3)} "
          f"vs unigram baseline {unigram:.3f}; {metrics['parameters']:,} parameters, "
          f"{metrics['global_step']} steps; padding share {metrics['padding_fraction']}")
