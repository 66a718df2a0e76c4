"""label_meds_dataset and the ``ehrfm label`` stage on a small MEDS directory written in code."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml
from hydra import compose, initialize_config_dir
from meds import LabelSchema
from omegaconf import OmegaConf
from task_builders import BASE, frame, ts, write_meds_dir

from ehrfm.resources import conf_dir
from ehrfm.tasks import EXCLUSION_REASONS, builtin_task_names, label_meds_dataset
from ehrfm.tasks.stage import run_label_stage

MORTALITY_ROWS = [
    # subject 1 (train): two visits, dies 200 days after the second
    (1, None, "GENDER/F"), (1, "1950-01-01", "MEDS_BIRTH"),
    (1, "2019-01-01 09:00", "VISIT_START/AMB", "a"), (1, "2019-01-01 09:30", "VISIT_END/AMB", "a"),
    (1, "2019-06-01 09:00", "VISIT_START/IMP", "b"), (1, "2019-06-03 09:00", "VISIT_END/IMP", "b"),
    (1, "2019-12-20", "MEDS_DEATH"),
    # subject 2 (tuning): alive, records for years after one visit; a late visit is censored
    (2, "1980-01-01", "MEDS_BIRTH"), (2, "2015-01-01 09:00", "VISIT_START/AMB", "c"),
    (2, "2015-01-01 10:00", "VISIT_END/AMB", "c"), (2, "2020-01-01 09:00", "VISIT_START/AMB", "d"),
    (2, "2020-01-01 10:00", "VISIT_END/AMB", "d"),
    # subject 3 (held_out): one visit, record stops 30 days later: censored
    (3, "1970-01-01", "MEDS_BIRTH"), (3, "2020-01-01 09:00", "VISIT_START/EMER", "e"),
    (3, "2020-01-01 12:00", "VISIT_END/EMER", "e"), (3, "2020-01-31", "LOINC/1"),
    # subject 4: no split listed
    (4, "2000-01-01 09:00", "VISIT_START/AMB", "f"), (4, "2000-01-01 10:00", "VISIT_END/AMB", "f"),
    (4, "2003-01-01", "LOINC/1"),
]
SPLITS = {1: "train", 2: "tuning", 3: "held_out"}


@pytest.fixture
def meds_dir(tmp_path: Path) -> Path:
    return write_meds_dir(tmp_path / "meds", frame(*MORTALITY_ROWS), SPLITS)


def test_writes_meds_labels_details_and_summary(meds_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels"
    summary = label_meds_dataset(meds_dir, ["mortality_1y"], out)
    table = pq.read_table(out / "mortality_1y" / "0.parquet")
    LabelSchema.validate(table)
    labels = pl.from_arrow(table)
    assert labels.rows() == [
        (1, ts("2019-01-01 09:30:01"), True),
        (1, ts("2019-06-03 09:00:01"), True),
        (2, ts("2015-01-01 10:00:01"), False),
        (4, ts("2000-01-01 10:00:01"), False),
    ]
    details = pl.read_parquet(out / "_details" / "mortality_1y.parquet")
    assert details.select(labels.columns).equals(labels)
    assert details["outcome_time"].to_list() == [ts("2019-12-20"), ts("2019-12-20"), None, None]
    assert details["split"].to_list() == ["train", "train", "tuning", "no_split"]

    written = json.loads((out / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    task = written["tasks"]["mortality_1y"]
    assert task["prompt_token"] == "[TASK_000]" and task["window"] == {"start": "0s", "end": "365d"}
    assert list(task["splits"]) == ["train", "tuning", "held_out", "no_split"]
    assert task["all"]["rows"] == 4 and task["all"]["candidates"] == 6
    assert task["all"]["excluded"] == {r: (2 if r == "censored" else 0) for r in EXCLUSION_REASONS}
    assert task["splits"]["train"] == {"rows": 2, "positives": 2, "negatives": 0, "subjects": 1,
                                       "candidates": 2, "excluded": {r: 0 for r in EXCLUSION_REASONS}}
    assert task["splits"]["held_out"]["rows"] == 0 and task["splits"]["held_out"]["excluded"]["censored"] == 1
    assert task["splits"]["tuning"]["excluded"]["censored"] == 1
    assert task["splits"]["no_split"]["rows"] == 1


def test_refuses_to_overwrite_unless_asked(meds_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels"
    label_meds_dataset(meds_dir, ["mortality_1y"], out)
    with pytest.raises(FileExistsError, match=r"mortality_1y: already exists; pass overwrite=True"):
        label_meds_dataset(meds_dir, ["mortality_1y"], out)
    label_meds_dataset(meds_dir, ["mortality_1y"], out, overwrite=True)
    # Another task in the same folder is fine.
    label_meds_dataset(meds_dir, ["emergency_visit_90d"], tmp_path / "labels2")


def test_every_builtin_labels_a_small_dataset(meds_dir: Path, tmp_path: Path) -> None:
    summary = label_meds_dataset(meds_dir, builtin_task_names(), tmp_path / "labels")
    assert sorted(summary["tasks"]) == builtin_task_names()
    for name in builtin_task_names():
        LabelSchema.validate(pq.read_table(tmp_path / "labels" / name / "0.parquet"))


def test_user_task_file_and_bad_inputs(meds_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": "mine",
                                    "trigger": {"prefixes": ["VISIT_END/"], "offset": "1s"}}))
    summary = label_meds_dataset(meds_dir, [str(path)], tmp_path / "labels")
    assert summary["tasks"]["mine"]["source"] == str(path)
    with pytest.raises(ValueError, match="no tasks given"):
        label_meds_dataset(meds_dir, [], tmp_path / "labels3")
    with pytest.raises(FileNotFoundError, match=r"no \*.parquet shards"):
        label_meds_dataset(tmp_path / "empty", ["mortality_1y"], tmp_path / "labels4")


def test_missing_splits_file_counts_everyone_as_no_split(meds_dir: Path, tmp_path: Path) -> None:
    (meds_dir / "metadata" / "subject_splits.parquet").unlink()
    summary = label_meds_dataset(meds_dir, ["mortality_1y"], tmp_path / "labels")
    assert list(summary["tasks"]["mortality_1y"]["splits"]) == ["no_split"]


def test_hydra_stage_from_the_composed_config(meds_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "labels"
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="label",
                      overrides=[f"input={meds_dir}", f"output={out}", "tasks=[mortality_1y]"])
        summary = run_label_stage(cfg)
        assert summary["tasks"]["mortality_1y"]["all"]["rows"] == 4
        assert (out / "mortality_1y" / "0.parquet").is_file() and (out / "label_config.yaml").is_file()
        assert "mortality_1y" in capsys.readouterr().out
        with pytest.raises(ValueError, match=r"label: set input=<value>"):
            run_label_stage(compose(config_name="label", overrides=[f"output={out}"]))


def test_label_yaml_lists_exactly_the_builtins() -> None:
    cfg = OmegaConf.load(conf_dir() / "label.yaml")
    assert sorted(cfg.tasks) == builtin_task_names()
    assert OmegaConf.to_container(cfg.defaults) == [{"hydra": "ehrfm"},
                                                    {"override hydra/job_logging": "stdout"}, "_self_"]


def test_labelling_shows_a_progress_bar_over_tasks_when_asked(meds_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    label_meds_dataset(meds_dir, builtin_task_names(), tmp_path / "quiet")
    assert "label:" not in capsys.readouterr().err  # stderr is no terminal here: no bar
    monkeypatch.setenv("EHRFM_PROGRESS", "1")
    label_meds_dataset(meds_dir, builtin_task_names(), tmp_path / "shown")
    err = capsys.readouterr().err
    assert "label:" in err and f"/{len(builtin_task_names())} " in err and "task" in err
