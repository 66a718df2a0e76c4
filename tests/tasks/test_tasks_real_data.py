"""Every built-in task on the 615-patient Synthea set (ingested once per session): documented,
non-degenerate counts; no leakage through the tokenizer's cutoff; splits by patient; and the
vectorised labeler against the loop reference."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from task_builders import reference_candidates

from ehrfm.meds_dataset import train_events
from ehrfm.tasks import TEMPLATES_DIR, builtin_task_names, candidate_table, label_meds_dataset, load_task
from ehrfm.tokenize import EventTokenizer, TokenType
from ehrfm.tokenize.sequence_schema import MICROSECONDS_PER_DAY

pytestmark = pytest.mark.slow

SPLITS = ("train", "tuning", "held_out")
# The counts documented in the README's Tasks section: (positives, negatives, subjects) per split.
DOCUMENTED = {
    "mortality_1y": {"train": (56, 2315, 476), "tuning": (18, 304, 65), "held_out": (14, 345, 72)},
    "inpatient_admission_1y": {"train": (111, 2260, 476), "tuning": (19, 303, 65), "held_out": (18, 341, 72)},
    "emergency_visit_90d": {"train": (116, 2269, 477), "tuning": (12, 310, 65), "held_out": (17, 344, 73)},
    "new_prediabetes_3y": {"train": (84, 1772, 321), "tuning": (12, 245, 43), "held_out": (13, 273, 55)},
}
ROW_BUDGET = 3100  # what multitask finetuning on CPU affords per task (about 3,000 rows)


@pytest.fixture(scope="module")
def labelled(synthea_meds: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], float]:
    out = tmp_path_factory.mktemp("labels")
    started = time.perf_counter()
    summary = label_meds_dataset(synthea_meds, builtin_task_names(), out)
    return out, summary, time.perf_counter() - started


@pytest.fixture(scope="module")
def events(synthea_meds: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((synthea_meds / "data").rglob("*.parquet")))


@pytest.fixture(scope="module")
def splits(synthea_meds: Path) -> pl.DataFrame:
    return pl.read_parquet(synthea_meds / "metadata" / "subject_splits.parquet")


@pytest.fixture(scope="module")
def tokenizer(synthea_meds: Path) -> EventTokenizer:
    return EventTokenizer(min_count=1).fit(train_events(synthea_meds))


def details(labelled: tuple[Path, dict[str, Any], float], name: str) -> pl.DataFrame:
    return pl.read_parquet(labelled[0] / "_details" / f"{name}.parquet")


def test_builtins_are_the_documented_ones(labelled: tuple[Path, dict[str, Any], float]) -> None:
    assert sorted(DOCUMENTED) == builtin_task_names() == sorted(labelled[1]["tasks"])


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_counts_are_the_documented_non_degenerate_ones(labelled: tuple[Path, dict[str, Any], float],
                                                       name: str) -> None:
    summary = labelled[1]["tasks"][name]
    labels = details(labelled, name)
    for split in SPLITS:
        counts = summary["splits"][split]
        assert (
            (counts["positives"], counts["negatives"], counts["subjects"]) == DOCUMENTED[name][split]
        ), split
        part = labels.filter(pl.col("split") == split)
        assert counts["rows"] == part.height and counts["positives"] == part["boolean_value"].sum()
        # Non-degenerate: both classes everywhere, at least 10 positives to evaluate and tune on,
        # and those positives spread over several patients.
        assert counts["positives"] > 0 and counts["negatives"] > 0, split
        if split != "train":
            assert counts["positives"] >= 10, split
            assert part.filter("boolean_value")["subject_id"].n_unique() >= 4, split
    assert summary["all"]["rows"] <= ROW_BUDGET
    assert set(summary["splits"]) == set(SPLITS), "every labelled subject has a split"


def test_labelling_is_fast_and_repeatable(labelled: tuple[Path, dict[str, Any], float], synthea_meds: Path,
                                          tmp_path: Path) -> None:
    out, _, seconds = labelled
    assert seconds < 30, f"labelling {len(builtin_task_names())} tasks took {seconds:.1f} s"
    again = label_meds_dataset(synthea_meds, ["mortality_1y"], tmp_path)
    assert pl.read_parquet(tmp_path / "mortality_1y" / "0.parquet").equals(
        pl.read_parquet(out / "mortality_1y" / "0.parquet"))
    assert again["tasks"]["mortality_1y"]["all"] == labelled[1]["tasks"]["mortality_1y"]["all"]


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_no_input_token_at_or_after_the_prediction_time_and_outcomes_after_it(
    labelled: tuple[Path, dict[str, Any], float], events: pl.DataFrame, tokenizer: EventTokenizer, name: str
) -> None:
    labels = details(labelled, name)
    sequences = tokenizer.transform(events, cutoff=labels.select("subject_id", "prediction_time"))
    assert sequences.height == labels.height  # one sequence per (subject, prediction time)
    tokens = sequences.select(
        "subject_id", "prediction_time", "time_days", "token_type"
    ).explode("time_days", "token_type").with_columns(
        (pl.col("prediction_time").dt.epoch("us") / MICROSECONDS_PER_DAY).alias("pt_days")
    )
    timed = tokens.filter(pl.col("time_days").is_not_nan())
    assert timed.height > labels.height  # the check below is over real event tokens
    late = timed.filter(pl.col("time_days") >= pl.col("pt_days"))
    assert late.height == 0, late.head()
    # Untimed tokens are only the static prefix, never events.
    untimed_types = set(tokens.filter(pl.col("time_days").is_nan())["token_type"].unique().to_list())
    assert untimed_types <= {int(TokenType.SPECIAL), int(TokenType.DEMOGRAPHIC), int(TokenType.TASK)}

    # The label's defining event lies strictly after the prediction time, so never in the input.
    seen = labels.filter(pl.col("outcome_time").is_not_null())
    assert seen.height > 0 and (seen["outcome_time"] > seen["prediction_time"]).all()
    assert (labels["prediction_time"] > labels["trigger_time"]).all()
    task = load_task(name)
    assert (labels["boolean_value"] == (labels["outcome_time"].is_not_null() != task.label.negate)).all()
    # And the outcome event is in the subject's events, matching the label codes.
    found = labels.filter(pl.col("outcome_time").is_not_null()).join(
        events.filter(task.label.match.expr()).select("subject_id", pl.col("time").alias("outcome_time")),
        on=["subject_id", "outcome_time"], how="semi")
    assert found.height == seen.height


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_all_prediction_times_of_a_subject_fall_in_its_split(
    labelled: tuple[Path, dict[str, Any], float], splits: pl.DataFrame, name: str
) -> None:
    labels = pl.read_parquet(labelled[0] / name / "0.parquet")
    joined = labels.join(splits, on="subject_id", how="left")
    assert joined["split"].null_count() == 0
    assert (joined.group_by("subject_id").agg(pl.col("split").n_unique())["split"] == 1).all()
    # The details sidecar records the same split the splits file gives.
    recorded = details(labelled, name).select("subject_id", "prediction_time", "split")
    assert recorded.sort("subject_id", "prediction_time").equals(
        joined.select("subject_id", "prediction_time", "split").sort("subject_id", "prediction_time"))


def test_no_patient_crosses_splits_between_tasks(labelled: tuple[Path, dict[str, Any], float]) -> None:
    both = pl.concat([details(labelled, n).select("subject_id", "split") for n in builtin_task_names()])
    assert (both.group_by("subject_id").agg(pl.col("split").n_unique())["split"] == 1).all()


TEMPLATES = sorted(p.stem for p in TEMPLATES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", [*sorted(DOCUMENTED), *(f"templates/{n}" for n in TEMPLATES)])
def test_vectorised_labeler_matches_the_loop_reference(events: pl.DataFrame, name: str) -> None:
    task = load_task(TEMPLATES_DIR.parent / f"{name}.yaml" if name.startswith("templates/") else name)
    subjects = sorted(events["subject_id"].unique().to_list())
    deceased = events.filter(pl.col("code") == "MEDS_DEATH")["subject_id"].unique().sort().to_list()
    chosen = sorted(set(subjects[::20]) | set(deceased[::6]))
    part = events.filter(pl.col("subject_id").is_in(chosen))
    got = candidate_table(task, part).select(
        "subject_id", "prediction_time", "encounter_id", "excluded_by", "boolean_value", "outcome_time"
    ).to_dicts()
    expected = reference_candidates(task, part)
    assert len(got) == len(expected) > 0
    assert got == expected
