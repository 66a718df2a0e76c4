"""``ehrfm tokenize``: the Hydra stage around :func:`ehrfm.tokenize.tokenize_meds.run_tokenize`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ehrfm.typed_config import from_mapping, stage_mapping, to_mapping

from .config import TokenizeConfig
from .tokenize_meds import print_summary, run_tokenize


def run_tokenize_stage(cfg: Any) -> dict[str, Any]:
    """The whole ``ehrfm tokenize`` stage from the composed ``conf/tokenize.yaml``."""
    config = from_mapping(TokenizeConfig, stage_mapping(cfg, where="tokenize"), where="tokenize")
    summary = run_tokenize(config)
    if "step" in summary:  # the fit step or one job: they write nothing outside their own parts
        print(_step_line(summary))
        return summary
    (Path(config.output) / "tokenize_config.yaml").write_text(
        yaml.safe_dump(to_mapping(config), sort_keys=False)
    )
    print_summary(summary)
    return summary


def _step_line(result: dict[str, Any]) -> str:
    """What the fit step or a job did, in one line."""
    if result["step"] == "fit":
        return (f"tokenize fit for {result['count']} jobs: vocab {result['vocab_size']} -> {result['saved_to']} "
                f"(now the jobs: job.count={result['count']} job.index=0..{result['count'] - 1})")
    return (f"tokenize job {result['index']} of {result['count']}: {result['shards']} shards, "
            f"{result['sequences']} sequences in {result['seconds']} s -> {result['folder']} "
            f"(merge with job.count={result['count']} and no job.index once every job is done)")
