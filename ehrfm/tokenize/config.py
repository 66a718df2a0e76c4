"""Settings of one ``ehrfm tokenize`` run; ``conf/tokenize.yaml`` holds the same keys for the CLI.

>>> config = TokenizeConfig(input="meds", output="tokens", tokenizer={"min_count": 10})
>>> config.tokenizer["min_count"], config.tokenizer["num_task_tokens"]
(10, 16)
>>> TokenizeConfig(input="meds", output="tokens", tokenizer={"min_cnt": 10})
Traceback (most recent call last):
...
ehrfm.typed_config.ConfigError: tokenize: unknown key 'tokenizer.min_cnt'
(did you mean 'tokenizer.min_count'?)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ehrfm.typed_config import check_call_keys, conf_group

__all__ = ["TokenizeConfig", "tokenizer_settings"]


def tokenizer_settings(values: dict[str, Any], *, where: str) -> dict[str, Any]:
    """``conf/tokenizer/default.yaml`` updated with ``values``, checked against ``EventTokenizer``."""
    from .tokenizer import EventTokenizer

    check_call_keys(values, EventTokenizer.__init__, where=where, prefix="tokenizer.")
    return conf_group("tokenizer", "default", **values)


@dataclass
class TokenizeConfig:
    """``input`` (a MEDS dataset) -> ``output`` (tokenizer/, data/<split>/*.parquet, summary.json).

    ``tokenizer`` holds ``EventTokenizer`` parameters for a tokenizer fit here on the train
    split; ``tokenizer_dir`` loads a fitted one instead. ``history_tokens`` is how many tokens each
    subject's history keeps (the prefix and the newest whole events); ``None`` takes the
    tokenizer's ``max_length``.
    """

    input: str
    output: str
    tokenizer: dict[str, Any] = field(default_factory=dict)
    tokenizer_dir: str | None = None
    save_tokenizer_to: str | None = None
    history_tokens: int | None = None
    splits: list[str] | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.tokenizer = tokenizer_settings(dict(self.tokenizer), where="tokenize")
        if self.history_tokens is not None and self.history_tokens < 1:
            raise ValueError(f"history_tokens must be a positive number of tokens, got {self.history_tokens}")
