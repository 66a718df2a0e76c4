"""ehrfm's labels agree with ACES's own: aces-cli runs the shipped ACES configs unchanged on the
ingested Synthea set and on the MIMIC-IV-on-FHIR-shaped population, and its rows are ehrfm's.

ACES (``es-aces``) pins ``polars<2``, so it cannot live in ehrfm's environment: it runs from its
own virtual environment, named by ``EHRFM_ACES_CLI`` (the path of its ``aces-cli``; ``.ci/run``
creates one) or found on ``PATH``. ACES's rows are also stored in ``data/aces/`` (one table per
dataset: ``subject_id``, ``prediction_time`` and one column per task, null where the time is not
one of that task's rows). With ACES present the test checks the stored rows are still what ACES
writes (``EHRFM_ACES_REGENERATE=1`` rewrites them); without it ehrfm is compared with the stored
rows, and the test says so in its report. Under CI a missing ACES fails.

What "agree" means, for every built-in task, unsampled:

* ACES's rows are exactly ehrfm's candidates that are kept or dropped only by censoring, with
  the same ``boolean_value`` (ACES has no censoring; see ``ehrfm.tasks.aces.post_steps``);
* ehrfm's post-steps applied to ACES's rows give exactly ehrfm's labels, and with sampling too.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import polars as pl
import pytest

from ehrfm.meds_dataset import data_shards, scan_events
from ehrfm.tasks import ACES_CONFIGS_DIR, Sampling, builtin_task_names, candidate_table, load_task
from ehrfm.tasks.aces import apply_ehrfm_post_steps

pytestmark = pytest.mark.slow

STORED = Path(__file__).parent / "data" / "aces"
KEY = ["subject_id", "prediction_time"]
TASKS = builtin_task_names()


def _aces_cli() -> str | None:
    configured = os.environ.get("EHRFM_ACES_CLI")
    if configured:
        if not Path(configured).is_file():
            pytest.fail(f"EHRFM_ACES_CLI={configured}: no such file (the aces-cli of ACES's own venv)")
        return configured
    return shutil.which("aces-cli")


def _run_aces(cli: str, meds: Path, out: Path) -> pl.DataFrame:
    """aces-cli on every shard of ``meds`` for every built-in task: one wide table (see above)."""
    shards = [str(p.relative_to(meds / "data").with_suffix("")) for p in data_shards(meds)]
    for task in TASKS:
        shutil.copy(ACES_CONFIGS_DIR / f"{task}.yaml", out / f"{task}.yaml")
    command = [cli, "-m", "data=sharded", "data.standard=meds", f"data.root={meds / 'data'}",
               f"data.shard={','.join(shards)}", f"cohort_dir={out}", f"cohort_name={','.join(TASKS)}"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, f"{' '.join(command)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    tables = []
    for task in TASKS:
        files = [out / task / f"{shard}.parquet" for shard in shards]
        missing = [str(f) for f in files if not f.is_file()]
        assert not missing, f"aces-cli wrote no {missing}"
        tables.append(pl.read_parquet(files).select(*KEY, pl.col("boolean_value").alias(task)))
    wide = tables[0]
    for table in tables[1:]:
        wide = wide.join(table, on=KEY, how="full", coalesce=True)
    return wide.sort(KEY)


def _stored(name: str) -> pl.DataFrame:
    path = STORED / f"{name}.parquet"
    assert path.is_file(), f"no stored ACES rows at {path}: run with ACES and EHRFM_ACES_REGENERATE=1"
    return pl.read_parquet(path)


def _aces_rows(name: str, meds: Path, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    cli = _aces_cli()
    if cli is None:
        if os.environ.get("CI"):
            pytest.fail("ACES is not installed here, and CI must compare with ACES itself: set EHRFM_ACES_CLI")
        warnings.warn(f"aces-cli not found: ehrfm is compared with the stored ACES rows of {name}, "
                      "not with a fresh ACES run (set EHRFM_ACES_CLI)", stacklevel=2)
        return _stored(name)
    fresh = _run_aces(cli, meds, tmp_path_factory.mktemp(f"aces_{name}"))
    if os.environ.get("EHRFM_ACES_REGENERATE"):
        STORED.mkdir(parents=True, exist_ok=True)
        fresh.write_parquet(STORED / f"{name}.parquet", compression="zstd", compression_level=19, statistics=False)
    assert fresh.equals(_stored(name)), (
        f"ACES's rows on {name} differ from the stored ones in {STORED}: rerun with EHRFM_ACES_REGENERATE=1 "
        "after checking why (a changed fixture, ingest or shipped ACES config)")
    return fresh


@pytest.fixture(scope="module", params=["synthea", "mimic_shaped"])
def dataset(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(ACES's rows, the dataset's events) of one dataset."""
    if request.param == "synthea":
        meds = request.getfixturevalue("synthea_meds")
    else:
        _, meds = request.getfixturevalue("mimic")
    return _aces_rows(request.param, meds, tmp_path_factory), scan_events(meds).collect()


def _task_rows(wide: pl.DataFrame, task: str) -> pl.DataFrame:
    return wide.filter(pl.col(task).is_not_null()).select(*KEY, pl.col(task).alias("boolean_value"))


@pytest.mark.parametrize("task", TASKS)
def test_aces_rows_are_ehrfms_candidates_before_censoring(dataset, task: str) -> None:
    wide, events = dataset
    unsampled = dataclasses.replace(load_task(task), sampling=Sampling())
    candidates = candidate_table(unsampled, events)
    before_censoring = (candidates.filter(pl.col("excluded_by").is_null() | (pl.col("excluded_by") == "censored"))
                        .select(*KEY, "boolean_value").sort(KEY))
    aces = _task_rows(wide, task)
    assert aces.height > 0 and aces["boolean_value"].sum() > 0  # a cohort with positives, not an empty agreement
    assert aces.select(KEY).equals(before_censoring.select(KEY))
    # ehrfm leaves boolean_value null on censored rows; ACES calls them negatives
    seen = before_censoring.join(aces, on=KEY, suffix="_aces").filter(pl.col("boolean_value").is_not_null())
    assert (seen["boolean_value"] == seen["boolean_value_aces"]).all()


@pytest.mark.parametrize("task", TASKS)
def test_ehrfms_post_steps_on_aces_rows_give_ehrfms_labels(dataset, task: str) -> None:
    wide, events = dataset
    builtin = load_task(task)
    aces = _task_rows(wide, task)
    for sampled in (False, True):
        chosen = builtin if sampled else dataclasses.replace(builtin, sampling=Sampling())
        ehrfm = (candidate_table(chosen, events).filter(pl.col("excluded_by").is_null())
                 .select(*KEY, "boolean_value").sort(KEY))
        assert apply_ehrfm_post_steps(aces, chosen, events, sample=sampled).equals(ehrfm), f"sampled={sampled}"
