"""Building blocks of the scoring tests."""

from __future__ import annotations

from pathlib import Path

import torch

from ehrfm.model import BackboneConfig, EHRLanguageModel
from ehrfm.tokenize import EventTokenizer, TokenType
from ehrfm.tokenize.tokenize_meds import fit_on_train


def write_untrained_model(pretrain: Path, *, min_count: int) -> None:
    """What ``ehrfm finetune`` reads from a pretrain output, with a freshly initialised tiny model:
    ``model/`` and ``model/tokenizer`` (fit on ``pretrain/meds``'s train split)."""
    tokenizer = fit_on_train(EventTokenizer(min_count=min_count), pretrain / "meds")
    torch.manual_seed(0)
    config = BackboneConfig.preset("tiny", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
                                   n_token_types=len(TokenType))
    EHRLanguageModel(config).save_pretrained(pretrain / "model")
    tokenizer.save_pretrained(pretrain / "model" / "tokenizer")
