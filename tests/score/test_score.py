"""``ehrfm score`` and ``RiskModel``: same numbers as evaluation, FHIR out, resume, atomic output."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pyarrow.parquet as pq
import pytest

from ehrfm.cli import compose_stage
from ehrfm.evaluate import evaluate
from ehrfm.meds_dataset import data_shards, read_splits, scan_events, shard_id
from ehrfm.predict.cohort import read_task_labels
from ehrfm.score import RiskModel, score
from ehrfm.score.risk_assessment import validate_risk_assessment
from ehrfm.score.risk_model import NO_EVENTS
from ehrfm.score.stage import run_score_stage
from ehrfm.tokenize import EventTokenizer
from ehrfm.tokenize.vocabulary import Vocabulary

pytestmark = pytest.mark.slow

TASKS = ["inpatient_admission_1y", "emergency_visit_90d"]  # what conftest.scoring_world finetunes


def _held_out_times(world: dict[str, Path]) -> pl.DataFrame:
    labels = read_task_labels(world["finetune"] / "labels", TASKS)
    held_out = read_splits(world["meds"]).filter(pl.col("split") == "held_out")
    return labels.join(held_out, on="subject_id").select("subject_id", "prediction_time").unique()


def test_scoring_fhir_gives_evaluations_probabilities(scoring_world: dict[str, Path], tmp_path: Path) -> None:
    result = evaluate(input=str(scoring_world["finetune"]), output=str(tmp_path / "evaluation"),
                      linear_probe=False, baselines=False, n_bootstrap=10)
    evaluated = (pl.read_parquet(Path(result["output"]) / "prediction_details.parquet")
                 .filter(pl.col("model") == "mamba_mtf_task_per_task", pl.col("split") == "held_out"))
    times = _held_out_times(scoring_world)
    times.write_parquet(tmp_path / "times.parquet")
    summary = score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["fhir"]),
                    output=str(tmp_path / "scores"), prediction_times=str(tmp_path / "times.parquet"),
                    calibrated=False)
    scored = pl.read_parquet(tmp_path / "scores" / "prediction_details.parquet")
    joined = evaluated.join(scored, on=["subject_id", "prediction_time", "task"], how="inner")
    assert joined.height == evaluated.height > 0, "every evaluated held-out row is scored"
    np.testing.assert_allclose(joined["predicted_boolean_probability_right"].to_numpy(),
                               joined["predicted_boolean_probability"].to_numpy(), rtol=0, atol=1e-6)
    assert summary["scored_rows"] == times.height - summary["skipped_rows"]
    assert scored["fhir_patient_id"].null_count() == 0


def test_meds_prediction_files_of_evaluate_and_score_agree(scoring_world: dict[str, Path], tmp_path: Path) -> None:
    """Both write the MEDS prediction schema exactly, one file per task (evaluate: and model and
    split), which meds-evaluation validates and scores unchanged."""
    from ehrfm.schema import prediction_schema

    schema_module = pytest.importorskip("meds_evaluation.schema", reason="meds-evaluation is in the dev extra")
    from meds_evaluation.evaluate import evaluate_binary_classification

    evaluation = Path(evaluate(input=str(scoring_world["finetune"]), output=str(tmp_path / "evaluation"),
                               linear_probe=False, baselines=False, n_bootstrap=10)["output"])
    model = "mamba_mtf_task_per_task"
    details = pl.read_parquet(evaluation / "prediction_details.parquet")
    times = _held_out_times(scoring_world)
    times.write_parquet(tmp_path / "times.parquet")
    score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]), output=str(tmp_path / "scores"),
          prediction_times=str(tmp_path / "times.parquet"), calibrated=False,
          labels_dir=str(scoring_world["finetune"] / "labels"))
    for task in TASKS:
        files = {"evaluate": evaluation / "predictions" / task / model / "held_out" / "0.parquet",
                 "score": tmp_path / "scores" / "predictions" / task / "0.parquet"}
        tables = {name: pq.read_table(path) for name, path in files.items()}
        for table in tables.values():
            assert table.schema.equals(prediction_schema())
            schema_module.PredictionSchema.validate(table)
        for path in files.values():
            evaluate_binary_classification(pl.read_parquet(path))  # meds-evaluation-cli's own call
        evaluated, scored = (pl.from_arrow(t) for t in tables.values())
        expected = details.filter(pl.col("task") == task, pl.col("model") == model, pl.col("split") == "held_out")
        assert evaluated.height == expected.height > 0
        joined = evaluated.join(scored, on=["subject_id", "prediction_time"], how="inner")
        assert joined.height == evaluated.height, "score at the held-out label times gives every row"
        assert joined["boolean_value"].equals(joined["boolean_value_right"]), "the observed labels came along"
        np.testing.assert_allclose(joined["predicted_boolean_probability"].to_numpy(),
                                   joined["predicted_boolean_probability_right"].to_numpy(), atol=1e-6)


def test_calibrated_scores_use_the_bundles_calibrators(scoring_world: dict[str, Path]) -> None:
    risk = RiskModel.from_pretrained(scoring_world["bundle"])
    raw = risk.predict(scoring_world["meds"], calibrated=False)
    calibrated = risk.predict(scoring_world["meds"])
    assert raw.select("subject_id", "task").equals(calibrated.select("subject_id", "task"))
    for task in TASKS:
        p = raw.filter(pl.col("task") == task)["predicted_boolean_probability"].to_numpy()
        q = calibrated.filter(pl.col("task") == task)["predicted_boolean_probability"].to_numpy()
        np.testing.assert_allclose(q, risk.calibrators[task].transform(p))
    # last_event: one second after each patient's last event, that event in the history
    last = (scan_events(scoring_world["meds"]).group_by("subject_id")
            .agg(pl.col("time").max()).collect())
    check = raw.filter(pl.col("task") == TASKS[0]).join(last, on="subject_id")
    assert (check["prediction_time"] == check["time"] + dt.timedelta(seconds=1)).all()


def test_risk_assessments_are_valid_fhir(scoring_world: dict[str, Path], tmp_path: Path) -> None:
    summary = score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]), output=str(tmp_path))
    lines = (tmp_path / "risk_assessments.ndjson").read_text().splitlines()
    assert len(lines) == summary["predictions"] > 0
    predictions = pl.read_parquet(tmp_path / "prediction_details.parquet")
    # Without labels_dir no outcome is known: the MEDS files carry a null boolean_value.
    from ehrfm.schema import prediction_schema
    for task in TASKS:
        meds = pq.read_table(tmp_path / "predictions" / task / "0.parquet")
        assert meds.schema.equals(prediction_schema()) and meds.column("boolean_value").null_count == meds.num_rows
        assert meds.num_rows == predictions.filter(pl.col("task") == task).height
    for line, row in zip(lines, predictions.iter_rows(named=True), strict=True):
        resource = validate_risk_assessment(orjson.loads(line))
        assert resource.subject.reference == f"Patient/{row['fhir_patient_id']}"
        assert resource.prediction[0].outcome.coding[0].code == row["task"]
        assert float(resource.prediction[0].probabilityDecimal) == pytest.approx(row["predicted_boolean_probability"])
        assert resource.prediction[0].whenPeriod.end is not None


def test_rerun_resumes_and_writes_identical_files(scoring_world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "scores"
    first = score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]), output=str(out))
    shards = data_shards(scoring_world["meds"])
    assert first["shards"] == len(shards) > 1 and first["shards_resumed"] == 0
    files = {name: (out / name).read_bytes() for name in ("prediction_details.parquet", "risk_assessments.ndjson")}
    last = shard_id(scoring_world["meds"], shards[-1])
    (out / "parts" / f"{last}.parquet").unlink()  # as if the run had been killed during the last shard
    (out / "prediction_details.parquet").unlink()
    again = score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]), output=str(out))
    assert again["shards_resumed"] == len(shards) - 1
    assert {name: (out / name).read_bytes() for name in files} == files
    with pytest.raises(FileExistsError, match="other settings"):
        score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]), output=str(out),
              tasks=[TASKS[0]])
    narrower = score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]), output=str(out),
                     tasks=[TASKS[0]], overwrite=True)
    assert narrower["shards_resumed"] == 0
    assert set(pl.read_parquet(out / "prediction_details.parquet")["task"]) == {TASKS[0]}


def test_overwrite_leaves_files_ehrfm_did_not_write(scoring_world: dict[str, Path], tmp_path: Path) -> None:
    from ehrfm.outputs import NotWrittenByEhrfmError

    out = tmp_path / "team_folder"
    out.mkdir()
    (out / "summary.json").write_text('{"owner": "the analytics team"}')
    with pytest.raises(NotWrittenByEhrfmError, match=r"summary.json: ehrfm did not write this"):
        score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]), output=str(out),
              overwrite=True)
    assert (out / "summary.json").read_text() == '{"owner": "the analytics team"}'


def test_an_interrupted_run_leaves_no_file_that_looks_complete(scoring_world: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    original = RiskModel.score_events

    def failing(self: RiskModel, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the operator's Ctrl-C during the second shard
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RiskModel, "score_events", failing)
    out = tmp_path / "scores"
    with pytest.raises(KeyboardInterrupt):
        score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]), output=str(out))
    assert not (out / "prediction_details.parquet").exists() and not (out / "summary.json").exists()
    first = shard_id(scoring_world["meds"], data_shards(scoring_world["meds"])[0])  # held_out-0
    assert sorted(p.name for p in (out / "parts").iterdir()) == [f"{first}.parquet", f"{first}.skipped.parquet"]
    monkeypatch.setattr(RiskModel, "score_events", original)
    resumed = score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]), output=str(out))
    assert resumed["shards_resumed"] == 1 and (out / "prediction_details.parquet").is_file()


def test_skips_are_reported_with_their_reason(scoring_world: dict[str, Path], tmp_path: Path) -> None:
    risk = RiskModel.from_pretrained(scoring_world["bundle"])
    early = dt.datetime(1900, 1, 1, tzinfo=dt.timezone.utc)  # before every birth: no history at all
    batch = risk.score_events(pl.read_parquet(scoring_world["meds"] / "data" / "train" / "0.parquet"),
                              pl.DataFrame({"subject_id": [], "prediction_time": []},
                                           schema={"subject_id": pl.Int64, "prediction_time": pl.Datetime("us")}))
    assert batch.predictions.height == 0
    summary = score(bundle=str(scoring_world["bundle"]), input=str(scoring_world["meds"]), output=str(tmp_path),
                    as_of=early.isoformat())
    assert summary["scored_rows"] == 0 and summary["skipped_by_reason"] == {NO_EVENTS: summary["skipped_rows"]}
    assert pl.read_parquet(tmp_path / "skipped.parquet")["reason"].unique().to_list() == [NO_EVENTS]


def test_the_library_api_names_what_is_wrong(scoring_world: dict[str, Path]) -> None:
    import ehrfm

    risk = ehrfm.RiskModel.from_pretrained(scoring_world["bundle"])
    assert risk.tasks == TASKS and risk.card["tasks"][TASKS[0]]["train_rows"] > 0
    events = pl.read_parquet(scoring_world["meds"] / "data" / "train" / "0.parquet")
    with pytest.raises(KeyError, match=r"unknown task\(s\) \['sepsis'\]"):
        risk.predict(events, tasks=["sepsis"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['code'\]"):
        risk.predict(events.drop("code"))
    with pytest.raises(ValueError, match="has no time zone"):
        risk.predict(events, prediction_times=dt.datetime(2020, 1, 1))
    from_pandas = risk.predict(events.to_pandas(), prediction_times=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
    from_polars = risk.predict(events, prediction_times=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
    assert from_pandas.equals(from_polars) and from_polars.height > 0
    embedded = risk.embed(events)
    assert embedded["embedding"].list.len().unique().to_list() == [risk.model.config.d_model]


def test_the_cli_stage_runs_from_the_composed_config(scoring_world: dict[str, Path], tmp_path: Path) -> None:
    cfg = compose_stage("score", [f"bundle={scoring_world['bundle']}", f"input={scoring_world['meds']}",
                                  f"output={tmp_path}", "risk_assessments=false"])
    summary = run_score_stage(cfg)
    assert summary["scored_patients"] > 0 and not (tmp_path / "risk_assessments.ndjson").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["predictions"] == summary["predictions"]


def test_tampered_bundles_are_refused_with_the_file_named(scoring_world: dict[str, Path], tmp_path: Path) -> None:
    from ehrfm.model import PretrainedFormatError
    from ehrfm.predict.bundle import BundleError

    def copy() -> Path:
        target = tmp_path / f"bundle{len(list(tmp_path.iterdir()))}"
        shutil.copytree(scoring_world["bundle"], target)
        return target

    weights = copy() / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(PretrainedFormatError, match=r"model.safetensors: unreadable safetensors"):
        RiskModel.from_pretrained(weights.parent)
    config = copy() / "config.json"
    meta = json.loads(config.read_text())
    meta["config"]["d_model"] *= 2
    config.write_text(json.dumps(meta))
    with pytest.raises(PretrainedFormatError, match="model.safetensors: .* has shape"):
        RiskModel.from_pretrained(config.parent)
    meta["config"]["d_model"] //= 2
    meta["config"]["surprise"] = 1
    config.write_text(json.dumps(meta))
    with pytest.raises(PretrainedFormatError, match="config.json"):
        RiskModel.from_pretrained(config.parent)
    bundle = copy()
    other = EventTokenizer(min_count=40).fit(pl.read_parquet(scoring_world["meds"] / "data" / "train" / "0.parquet"))
    assert other.vocab_size != RiskModel.from_pretrained(bundle).tokenizer.vocab_size
    shutil.rmtree(bundle / "tokenizer")
    other.save_pretrained(bundle / "tokenizer")  # a tokenizer fit elsewhere: another vocabulary
    with pytest.raises(BundleError, match=r"tokenizer: the tokenizer has \d+ tokens, the model in .* was built"):
        RiskModel.from_pretrained(bundle)
    bundle = copy()  # same size, two tokens swapped, the tokenizer's own hash updated to match
    vocab_file = bundle / "tokenizer" / "vocab.jsonl"
    lines = vocab_file.read_bytes().splitlines()
    first, second = orjson.loads(lines[-1]), orjson.loads(lines[-2])
    first["token"], second["token"] = second["token"], first["token"]
    lines[-1], lines[-2] = orjson.dumps(first), orjson.dumps(second)
    vocab_file.write_bytes(b"\n".join(lines) + b"\n")
    config_file = bundle / "tokenizer" / "tokenizer_config.json"
    tokenizer_config = json.loads(config_file.read_text())
    tokenizer_config["fit"]["vocabulary_sha256"] = Vocabulary.load(vocab_file).content_hash()
    config_file.write_text(json.dumps(tokenizer_config))
    with pytest.raises(BundleError, match=r"tokenizer: its vocabulary is not the one the model was finetuned with"):
        RiskModel.from_pretrained(bundle)
    bundle = copy()
    (bundle / "tasks" / f"{TASKS[0]}.yaml").unlink()
    with pytest.raises(BundleError, match=r"tasks: holds task files"):
        RiskModel.from_pretrained(bundle)
    bundle = copy()
    calibration = json.loads((bundle / "calibration.json").read_text())
    calibration["tasks"][TASKS[0]] = {"name": "temperature", "temperature": -3}
    (bundle / "calibration.json").write_text(json.dumps(calibration))
    with pytest.raises(BundleError, match=rf"calibration.json: task '{TASKS[0]}': temperature must be"):
        RiskModel.from_pretrained(bundle)
