"""``ehrfm pretrain``: FHIR or MEDS or tokens in, a pretrained ``EHRLanguageModel`` out.

One command runs whatever is missing: ingest (when ``data.fhir_input`` is given and no MEDS
dataset exists), tokenize (when no token shards exist), then Lightning training. Outputs under
``output``::

    meds/ tokens/            built here when not given
    checkpoints/last.ckpt    for resuming only (ckpt_path=last)
    model/                   config.json + model.safetensors of the best validation epoch
    logs/csv, logs/tensorboard
    metrics.json             validation perplexity per epoch, unigram baseline, padding share
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from ehrfm.tokenize import EventTokenizer
from ehrfm.tokenize.sequence_schema import TokenType
from ehrfm.train.baselines import unigram_perplexity
from ehrfm.train.datamodule import TokenSequenceDataModule
from ehrfm.train.module import PretrainModule

log = logging.getLogger("ehrfm.pretrain")


def prepare_tokens(cfg: DictConfig, output: Path) -> Path:
    """The token shards to train on, building MEDS and tokens first when they are missing."""
    data = cfg.data
    if data.tokens_dir and (Path(data.tokens_dir) / "tokenizer").is_dir():
        return Path(data.tokens_dir)
    tokens_dir = Path(data.tokens_dir) if data.tokens_dir else output / "tokens"
    if (tokens_dir / "tokenizer").is_dir():
        return tokens_dir
    meds_dir = Path(data.meds_dir) if data.meds_dir else output / "meds"
    if not (meds_dir / "metadata" / "subject_splits.parquet").is_file():
        from ehrfm.ingest import IngestConfig, run_ingest
        from ehrfm.resources import example_fhir_dir

        inputs = [str(data.fhir_input)] if data.fhir_input else [str(example_fhir_dir())]
        log.info("ingesting %s -> %s", inputs[0], meds_dir)
        print(run_ingest(IngestConfig(inputs=inputs, output=str(meds_dir), overwrite=True)).table())
    from hydra.utils import instantiate

    from ehrfm.tokenize.stage import tokenize_dataset

    log.info("tokenizing %s -> %s", meds_dir, tokens_dir)
    tokenize_dataset(meds_dir, instantiate(cfg.tokenizer), tokens_dir, overwrite=True)
    return tokens_dir


def build_trainer(cfg: DictConfig, output: Path) -> L.Trainer:
    trainer_args: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore[assignment]
    checkpoint = ModelCheckpoint(dirpath=output / "checkpoints", filename="best", monitor="val/perplexity",
                                 mode="min", save_last=True)
    callbacks = [checkpoint, LearningRateMonitor(logging_interval="step")]
    loggers = [CSVLogger(output / "logs", name="csv"), TensorBoardLogger(output / "logs", name="tensorboard")]
    return L.Trainer(default_root_dir=str(output), callbacks=callbacks, logger=loggers,
                     use_distributed_sampler=False, **trainer_args)


def run_pretrain_stage(cfg: DictConfig) -> dict[str, Any]:
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "pretrain_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(int(cfg.seed), workers=True)
    tokens_dir = prepare_tokens(cfg, output)
    tokenizer = EventTokenizer.from_pretrained(tokens_dir / "tokenizer")
    datamodule = TokenSequenceDataModule(
        tokens_dir, tokenizer.pad_token_id, max_length=int(cfg.data.max_length),
        tokens_per_batch=int(cfg.data.tokens_per_batch), num_workers=int(cfg.data.num_workers), seed=int(cfg.seed),
    )
    datamodule.setup()
    model_config: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    model_config.update(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
                        n_token_types=len(TokenType))
    trainer = build_trainer(cfg, output)
    steps_per_epoch = math.ceil(len(datamodule.train_dataloader()) / max(1, int(cfg.trainer.get(
        "accumulate_grad_batches", 1))))
    max_epochs = int(cfg.trainer.get("max_epochs") or 1)
    module = PretrainModule(model_config, learning_rate=float(cfg.optim.learning_rate),
                            weight_decay=float(cfg.optim.weight_decay), warmup_steps=int(cfg.optim.warmup_steps),
                            total_steps=steps_per_epoch * max_epochs)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        last = output / "checkpoints" / "last.ckpt"
        ckpt_path = str(last) if last.is_file() else None
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    metrics = _collect_metrics(trainer, output)
    assert datamodule.train_set is not None and datamodule.val_set is not None
    metrics["unigram_perplexity"] = unigram_perplexity(datamodule.train_set, datamodule.val_set,
                                                       tokenizer.vocab_size)
    metrics["padding_fraction"] = datamodule.padding_report()
    metrics["global_step"] = trainer.global_step
    metrics["parameters"] = sum(p.numel() for p in module.model.parameters())
    if trainer.is_global_zero:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best and not cfg.trainer.get("fast_dev_run"):
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
        module.model.save_pretrained(output / "model")
        tokenizer.save_pretrained(output / "model" / "tokenizer")
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _print_metrics(metrics)
    return metrics


def _collect_metrics(trainer: L.Trainer, output: Path) -> dict[str, Any]:
    per_epoch: list[dict[str, float]] = []
    csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    if csv_logger is not None and Path(csv_logger.log_dir, "metrics.csv").is_file():
        import polars as pl

        frame = pl.read_csv(Path(csv_logger.log_dir, "metrics.csv"))
        if "val/perplexity" in frame.columns:
            rows = frame.filter(pl.col("val/perplexity").is_not_null())
            per_epoch = [{"epoch": int(r["epoch"]), "val_perplexity": float(r["val/perplexity"]),
                          "val_loss": float(r["val/loss"])} for r in rows.iter_rows(named=True)]
    return {"validation": per_epoch,
            "best_val_perplexity": min((e["val_perplexity"] for e in per_epoch), default=None)}


def _print_metrics(metrics: dict[str, Any]) -> None:
    best = metrics["best_val_perplexity"]
    unigram = metrics["unigram_perplexity"]
    print(f"validation perplexity: best {best if best is None else round(best, 3)} "
          f"vs unigram baseline {unigram:.3f}; {metrics['parameters']:,} parameters, "
          f"{metrics['global_step']} steps; padding share {metrics['padding_fraction']}")
