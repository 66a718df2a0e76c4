"""Settings of one ``ehrfm pretrain`` run; ``conf/pretrain.yaml`` composes the same keys for the CLI.

Defaults come from the same files the CLI composes (``conf/model/tiny.yaml``,
``conf/trainer/cpu.yaml``, ``conf/tokenizer/default.yaml``), so ``pretrain()`` from Python and
``ehrfm pretrain`` from a shell start from one place; given ``model`` and ``trainer`` settings
update those defaults.

>>> config = PretrainConfig(output="runs/x", model={"d_model": 128})
>>> config.model["d_model"], config.model["n_layers"], config.data.context_length
(128, 2, 2048)
>>> PretrainConfig(model={"d_modle": 128})
Traceback (most recent call last):
...
ehrfm.typed_config.ConfigError: pretrain: unknown key 'model.d_modle' (did you mean 'model.d_model'?)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ehrfm.training import check_trainer_settings
from ehrfm.typed_config import check_keys, conf_group

__all__ = ["PretrainConfig", "PretrainData", "PretrainOptim", "check_model_settings"]

# Model fields that come from the tokenizer, never from the config.
VOCABULARY_FIELDS = ("vocab_size", "pad_token_id", "n_token_types")


def check_model_settings(values: dict[str, Any], *, where: str) -> dict[str, Any]:
    """``BackboneConfig`` fields (less the tokenizer's): keys checked, values tried on a real config."""
    import dataclasses

    from ehrfm.model import BackboneConfig

    known = [f.name for f in dataclasses.fields(BackboneConfig) if f.name not in VOCABULARY_FIELDS]
    check_keys(values, known, where=where, prefix="model.")
    BackboneConfig(**values)  # a bad value fails now, not after tokenizing
    return values


@dataclass
class PretrainData:
    """``context_length``: tokens per training sequence (the prefix and the newest whole events)."""

    context_length: int = 2048
    tokens_per_batch: int = 16384  # padded tokens per batch; batches hold sequences of similar length
    num_workers: int = 0


@dataclass
class PretrainOptim:
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50


@dataclass
class PretrainConfig:
    """``input`` -> ``output`` (model/, checkpoints/, logs/, metrics.json; meds/ and tokens/ if built).

    ``input`` is an ``ehrfm tokenize`` output, a MEDS dataset, or FHIR files and folders (told
    apart by what they contain; missing steps are run into ``output``); ``None`` uses ehrfm's
    built-in synthetic patients. ``tokenizer`` holds ``EventTokenizer`` parameters used when
    tokenizing here. ``ckpt_path``: ``last`` or a ``.ckpt`` file to resume from.
    """

    input: str | list[str] | None = None
    output: str = "ehrfm_out/pretrain"
    seed: int = 0
    ckpt_path: str | None = None
    model: dict[str, Any] = field(default_factory=lambda: conf_group("model", "tiny"))
    trainer: dict[str, Any] = field(default_factory=lambda: conf_group("trainer", "cpu"))
    tokenizer: dict[str, Any] = field(default_factory=dict)
    data: PretrainData = field(default_factory=PretrainData)
    optim: PretrainOptim = field(default_factory=PretrainOptim)

    def __post_init__(self) -> None:
        from ehrfm.tokenize.config import tokenizer_settings

        # Given settings update the defaults (a Python caller names only what it changes).
        self.model = check_model_settings({**conf_group("model", "tiny"), **self.model}, where="pretrain")
        self.trainer = check_trainer_settings({**conf_group("trainer", "cpu"), **self.trainer},
                                              where="pretrain")
        self.tokenizer = tokenizer_settings(dict(self.tokenizer), where="pretrain")
        if self.data.context_length < 8:
            raise ValueError(f"data.context_length must be at least 8 tokens, got {self.data.context_length}")
