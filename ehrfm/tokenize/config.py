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

from ehrfm.jobs import JobSpec
from ehrfm.typed_config import check_call_keys, conf_group

__all__ = ["TokenizeConfig", "TokenizeJob", "tokenizer_settings"]


def tokenizer_settings(values: dict[str, Any], *, where: str) -> dict[str, Any]:
    """``conf/tokenizer/default.yaml`` updated with ``values``, checked against ``EventTokenizer``."""
    from .tokenizer import EventTokenizer

    check_call_keys(values, EventTokenizer.__init__, where=where, prefix="tokenizer.")
    return conf_group("tokenizer", "default", **values)


@dataclass
class TokenizeJob(JobSpec):
    """``job`` of ``ehrfm tokenize``: :class:`~ehrfm.jobs.JobSpec` plus the fit step.

    ``fit=True`` (with ``count=n``, no ``index``) fits the tokenizer once on the train split and
    saves it in the output, for the n jobs to load (see :mod:`ehrfm.tokenize.jobs`).

    >>> TokenizeJob(count=2, fit=True).mode, TokenizeJob(index=0, count=2).mode
    ('fit', 'job')
    """

    fit: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fit and (self.index is not None or self.count == 1):
            raise ValueError("job.fit=true is the step before the jobs: give job.count=<n> and no job.index "
                             f"(got job.index={self.index}, job.count={self.count})")

    @property
    def mode(self) -> str:
        """``"fit"``, or :attr:`JobSpec.mode` (``"single"``, ``"job"``, ``"merge"``)."""
        return "fit" if self.fit else super().mode


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
    # Independent jobs over the MEDS shards: fit once (job.fit), job.index=k of job.count=n, then merge.
    job: TokenizeJob = field(default_factory=TokenizeJob)

    def __post_init__(self) -> None:
        self.job = TokenizeJob.of(self.job)
        self.tokenizer = tokenizer_settings(dict(self.tokenizer), where="tokenize")
        if self.history_tokens is not None and self.history_tokens < 1:
            raise ValueError(f"history_tokens must be a positive number of tokens, got {self.history_tokens}")
