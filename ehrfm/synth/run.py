"""``run_synth(...)``: simulate a population into ``output`` (FHIR under ``fhir/``, truth beside it)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ehrfm.outputs import prepare_output, record_written
from ehrfm.synthetic.population import TRUTH_FILE, write_population
from ehrfm.typed_config import resolve_config

from .config import SynthConfig

__all__ = ["run_synth"]

WRITTEN = ("fhir", TRUTH_FILE, "population.json")


def run_synth(config: SynthConfig | Mapping[str, Any] | None = None, /, **settings: Any) -> dict[str, Any]:
    """Write the population; returns ``population.json``'s content plus ``seconds``.

    >>> import tempfile
    >>> summary = run_synth(output=tempfile.mkdtemp(), n_patients=2, workers=1)
    >>> summary["patients"], summary["resources"]["Patient"]
    (2, 2)
    """
    config = resolve_config(SynthConfig, config, settings, where="synth")
    output = Path(config.output)
    prepare_output(output, WRITTEN, overwrite=config.overwrite)
    record_written(output, WRITTEN)
    started = time.perf_counter()
    summary = write_population(output, n_patients=config.n_patients, seed=config.seed, format=config.format,
                               gzip=config.gzip, notes=config.notes, imaging=config.imaging,
                               workers=config.workers)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary
