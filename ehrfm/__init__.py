"""ehrfm: foundation models on electronic health records.

FHIR R4 in, MEDS events, timed token sequences, Mamba backbones, calibrated risk out. Heavy
dependencies (torch, lightning) load only with the stages that need them, so
``import ehrfm`` stays cheap for analytics code and for ingest worker processes.

One sub-package per stage, each a Python call and an ``ehrfm <stage>`` command:
:mod:`ehrfm.ingest` (FHIR -> MEDS), :mod:`ehrfm.tokenize`, :mod:`ehrfm.tasks` (``ehrfm label``),
:mod:`ehrfm.pretrain`, :mod:`ehrfm.finetune`, :mod:`ehrfm.evaluate`, :mod:`ehrfm.demo`. Shared
by them: :mod:`ehrfm.model` (every ``nn.Module``), :mod:`ehrfm.predict` (cohorts at prediction
times, inference, calibration, metrics), :mod:`ehrfm.ops` (kernels), :mod:`ehrfm.schema` and
:mod:`ehrfm.meds_dataset` (columns and the MEDS-directory reader), :mod:`ehrfm.synthetic`.

The names below load on first use: ``ehrfm.ingest_fhir``, ``ehrfm.EventTokenizer``,
``ehrfm.load_task``/``load_tasks`` and ``ehrfm.RiskModel`` (a finetuned bundle that scores).

>>> import ehrfm
>>> ehrfm.load_task("mortality_1y").prompt_token
'[TASK_000]'
>>> ehrfm.EventTokenizer(min_count=3)
EventTokenizer(min_count=3)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# The public surface, loaded on first use: {name: module that defines it}.
_LAZY = {
    "ingest_fhir": "ehrfm.ingest",
    "IngestConfig": "ehrfm.ingest",
    "EventTokenizer": "ehrfm.tokenize",
    "load_task": "ehrfm.tasks",
    "load_tasks": "ehrfm.tasks",
    "RiskModel": "ehrfm.score.risk_model",
}

__all__ = ["__version__", *_LAZY]


def __dir__() -> list[str]:
    # The lazily loaded names are part of the public surface: dir(ehrfm) and tab completion show them.
    return sorted({*globals(), *_LAZY})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ehrfm' has no attribute {name!r}")
