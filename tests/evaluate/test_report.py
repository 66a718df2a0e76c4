"""evaluate_predictions: files written, CIs formatted, calibrators fit on tuning rows only."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ehrfm.evaluate.report import evaluate_predictions
from ehrfm.predict.metrics import auroc
from ehrfm.predict.tables import FrameFormatError

CI = r"\d\.\d{3,4} \[\d\.\d{3,4}, \d\.\d{3,4}\]"


def _predictions(seed: int = 0, n_subjects: int = 120, rows_per_subject: int = 3) -> pl.DataFrame:
    """Two tasks x two models; the 'sharp' model is informative but overconfident."""
    rng = np.random.default_rng(seed)
    frames = []
    for task in ("mortality", "long stay"):
        subjects = np.repeat(np.arange(n_subjects), rows_per_subject)
        split = np.array(["train", "tuning", "held_out"])[subjects % 3]
        z = rng.normal(0, 1.5, subjects.size)
        y = rng.random(subjects.size) < 1 / (1 + np.exp(-z))
        times = [dt.datetime(2020, 1, 1) + dt.timedelta(days=int(i % rows_per_subject))
                 for i in range(subjects.size)]
        for model, prob in (("sharp", 1 / (1 + np.exp(-3 * z))),
                            ("noisy", 1 / (1 + np.exp(-(z + rng.normal(0, 2, z.size)))))):
            frames.append(pl.DataFrame({
                "task": task, "model": model, "split": split, "subject_id": subjects,
                "prediction_time": times,
                "boolean_value": y, "predicted_boolean_probability": prob,
            }))
    return pl.concat(frames)


def _flip(frame: pl.DataFrame, split: str, column: str = "boolean_value") -> pl.DataFrame:
    if column == "boolean_value":
        value = ~pl.col("boolean_value")
    else:
        value = 1 - pl.col("predicted_boolean_probability")
    return frame.with_columns(pl.when(pl.col("split") == split).then(value).otherwise(pl.col(column))
                              .alias(column))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    return evaluate_predictions(_predictions(), tmp_path_factory.mktemp("report"), n_bootstrap=200, seed=0)


def test_files_are_written(report) -> None:
    out: Path = report.output_dir
    names = {p.name for p in report.files}
    assert names == {"results.json", "results.md", "mortality_roc.png", "mortality_calibration.png",
                     "long_stay_roc.png", "long_stay_calibration.png"}
    for path in report.files:
        assert path.is_file() and path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.json").exists()


def test_markdown_has_a_table_per_task_with_intervals_and_a_summary(report) -> None:
    md = (report.output_dir / "results.md").read_text()
    assert "## mortality" in md and "## long stay" in md
    assert ("| model | n (patients) | positives | AUROC [95% CI] | AUPRC [95% CI] | Brier [95% CI] | "
            "Brier after calibration | ECE before → after |") in md
    rows = [line for line in md.splitlines() if line.startswith("| sharp |") or line.startswith("| noisy |")]
    table_rows = [r for r in rows if "→" in r]
    assert len(table_rows) == 4
    for row in table_rows:
        # AUROC, AUPRC, Brier before and after, ECE before and after
        assert len(re.findall(CI, row)) == 6, row
        assert re.search(rf"{CI} → {CI}", row)
    assert "mean AUROC" in md
    summary = [line for line in md.splitlines() if re.match(r"\| (sharp|noisy) \| 2 \| \d\.\d{3} \|$", line)]
    assert len(summary) == 2


def test_json_holds_every_metric_before_and_after(report) -> None:
    data = json.loads((report.output_dir / "results.json").read_text())
    assert data["calibration"] == {"method": "temperature", "fit_on": "tuning"}
    assert data["bootstrap"]["n_bootstrap"] == 200 and data["bootstrap"]["unit"] == "subject"
    assert len(data["results"]) == 4
    for result in data["results"]:
        assert result["held_out_subjects"] == 40 and result["held_out_rows"] == 120
        for stage in ("before_calibration", "after_calibration"):
            for name in ("auroc", "auprc", "brier", "ece"):
                ci = result[stage]["intervals"][name]
                assert ci["lower"] < ci["upper"], (stage, name)
                if name != "ece":  # ECE is biased upward under resampling: its interval may sit above it
                    assert ci["lower"] <= ci["estimate"] <= ci["upper"], (stage, name)
    sharp = next(r for r in data["results"] if r["model"] == "sharp" and r["task"] == "mortality")
    assert sharp["calibrator"]["params"]["temperature"] > 1.5  # overconfident scores get softened
    means = {row["model"]: row["mean_auroc"] for row in data["summary"]}
    assert means["sharp"] > means["noisy"]


def test_metrics_are_computed_on_held_out_rows_and_calibration_helps_the_overconfident_model(report) -> None:
    held = _predictions().filter(pl.col("split") == "held_out", pl.col("task") == "mortality",
                                 pl.col("model") == "sharp")
    result = next(r for r in report.results if r.task == "mortality" and r.model == "sharp")
    assert result.before.intervals["auroc"].estimate == pytest.approx(
        auroc(held["boolean_value"], held["predicted_boolean_probability"]))
    assert result.after.intervals["auroc"].estimate == pytest.approx(
        result.before.intervals["auroc"].estimate)
    assert result.after.intervals["ece"].estimate < result.before.intervals["ece"].estimate
    table = report.table()
    assert table.height == 4 and "ece_after_upper" in table.columns


@pytest.mark.parametrize("calibration", ["temperature", "isotonic"])
def test_calibrators_never_see_held_out(calibration: str, tmp_path: Path) -> None:
    frame = _predictions()
    grid = np.linspace(0, 1, 101)

    def fitted(f: pl.DataFrame, name: str) -> dict:
        rep = evaluate_predictions(f, tmp_path / name, calibration=calibration, n_bootstrap=20)
        return {(r.task, r.model): r.fitted_calibrator.transform(grid) for r in rep.results}

    base = fitted(frame, "base")
    for name, corrupted in (("labels", _flip(frame, "held_out")),
                            ("scores", _flip(frame, "held_out", "predicted_boolean_probability"))):
        other = fitted(corrupted, name)
        assert all(np.array_equal(base[k], other[k]) for k in base), name
    # the comparison can fail: corrupting the tuning labels moves every calibrator
    moved = fitted(_flip(frame, "tuning"), "tuning")
    assert all(not np.array_equal(base[k], moved[k]) for k in base)


def test_every_model_of_a_task_gets_the_same_draws(tmp_path: Path) -> None:
    frame = _predictions().filter(pl.col("task") == "mortality")
    twin = frame.filter(pl.col("model") == "sharp").with_columns(model=pl.lit("sharp twin"))
    rep = evaluate_predictions(pl.concat([frame, twin]), tmp_path, n_bootstrap=100, seed=3)
    by_model = {r.model: r for r in rep.results}
    assert by_model["sharp"].before.intervals == by_model["sharp twin"].before.intervals
    assert np.array_equal(by_model["sharp"].before.replicates["auroc"],
                          by_model["sharp twin"].before.replicates["auroc"])


def test_one_class_tuning_falls_back_to_no_calibration(tmp_path: Path) -> None:
    frame = _predictions().with_columns(
        boolean_value=pl.when(pl.col("split") == "tuning").then(True).otherwise(pl.col("boolean_value"))
    )
    rep = evaluate_predictions(frame, tmp_path, calibration="isotonic", n_bootstrap=20)
    assert all(r.calibrator == "none" and "one class" in r.note for r in rep.results)
    assert "one class" in (tmp_path / "results.md").read_text()


def test_bad_requests_fail_early(tmp_path: Path) -> None:
    frame = _predictions()
    with pytest.raises(ValueError, match="unknown calibrator"):
        evaluate_predictions(frame, tmp_path, calibration="platt")
    with pytest.raises(FrameFormatError, match="no held_out rows"):
        evaluate_predictions(frame.filter(pl.col("split") != "held_out"), tmp_path, n_bootstrap=10)
    with pytest.raises(FrameFormatError, match="share"):
        evaluate_predictions(pl.concat([frame, frame.head(1)]), tmp_path, n_bootstrap=10)


def test_one_class_held_out_reports_undefined_values_as_n_a_and_null(tmp_path: Path) -> None:
    frame = _predictions().filter(pl.col("task") == "mortality").with_columns(
        boolean_value=pl.when(pl.col("split") == "held_out").then(False).otherwise(pl.col("boolean_value"))
    )
    rep = evaluate_predictions(frame, tmp_path, n_bootstrap=20)
    assert all(r.before.n_skipped == 20 for r in rep.results)
    md = (tmp_path / "results.md").read_text()
    assert "| n/a | n/a |" in md and "20 of 20 replicates skipped" in md
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["results"][0]["before_calibration"]["intervals"]["auroc"]["estimate"] is None
    assert data["summary"][0]["mean_auroc"] is None


def test_the_bootstrap_shows_progress_over_task_model_pairs_when_asked(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EHRFM_PROGRESS", "1")
    evaluate_predictions(_predictions(n_subjects=30), tmp_path, n_bootstrap=20, seed=0)
    err = capsys.readouterr().err
    assert "evaluate: bootstrap (20 resamples)" in err and "/4 " in err  # 2 tasks x 2 models
