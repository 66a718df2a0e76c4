"""``ehrfm synth``: the Hydra stage around :func:`ehrfm.synth.run.run_synth`."""

from __future__ import annotations

from typing import Any

from ehrfm.typed_config import from_mapping, stage_mapping

from .config import SynthConfig
from .run import run_synth


def run_synth_stage(cfg: Any) -> dict[str, Any]:
    """The whole ``ehrfm synth`` stage from the composed ``conf/synth.yaml``."""
    summary = run_synth(from_mapping(SynthConfig, stage_mapping(cfg, where="synth"), where="synth"))
    total = sum(summary["resources"].values())
    print(f"{summary['patients']:,} patients, {total:,} resources in {summary['seconds']} s "
          f"({summary['patients'] / max(summary['seconds'], 1e-9):,.0f} patients/s)")
    for kind, count in summary["resources"].items():
        print(f"  {kind:<20} {count:>10,}")
    print(f"FHIR: {summary['fhir']}   truth: {summary['output']}/truth.jsonl.gz   "
          f"next: ehrfm ingest input={summary['fhir']} output=...")
    return summary
