"""``ehrfm score``: the Hydra stage around :func:`ehrfm.score.run.score`."""

from __future__ import annotations

from typing import Any

from ehrfm.typed_config import from_mapping, stage_mapping

from .config import ScoreConfig
from .run import score


def run_score_stage(cfg: Any) -> dict[str, Any]:
    """The whole ``ehrfm score`` stage from the composed ``conf/score.yaml``."""
    summary = score(from_mapping(ScoreConfig, stage_mapping(cfg, where="score"), where="score"))
    if "worker" in summary:
        print(f"worker {summary['worker']} of {summary['workers']}: scored {summary['shards_scored']} shards "
              f"({summary['patients_in_shards']} patients), {summary['shards_resumed']} were already done; "
              "run once more without worker to merge")
        return summary
    print(f"scored {summary['scored_patients']} patients ({summary['predictions']} predictions, "
          f"{summary['patients_per_s']} patients/s); skipped {summary['skipped_rows']} rows "
          f"{summary['skipped_by_reason']}; outputs in {summary['output']}")
    return summary
