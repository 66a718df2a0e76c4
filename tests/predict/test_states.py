"""Saved history states: the file round trip, and continuing them equals reading histories whole."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from ehrfm.model import BackboneConfig, MultitaskModel
from ehrfm.predict.cohort import LABELS, Cohort
from ehrfm.predict.inference import predict_tasks, predict_tasks_continuing
from ehrfm.predict.states import HistoryStates, StateFileError
from ehrfm.tokenize import TokenType

VOCAB = 60
TASKS = ["a", "b", "c"]


def _cohort(lengths: list[int], seed: int = 0) -> Cohort:
    """Random histories (prefix token, then events at increasing times) with their prompt values."""
    rng = np.random.default_rng(seed)
    rows = []
    for subject, length in enumerate(lengths):
        times = 19000.0 + np.sort(rng.uniform(0, 400, length))
        types = [int(TokenType.SPECIAL)] + [int(TokenType.EVENT)] * (length - 1)
        rows.append({
            "subject_id": subject, "prediction_time": dt.datetime(2023, 1, 1),
            "input_ids": [1, *rng.integers(5, VOCAB, length - 1).tolist()], "time_days": times.tolist(),
            "age_years": (50 + (times - times[0]) / 365.25).tolist(),
            "visit_index": np.minimum(np.arange(length) // 4, 30).tolist(), "token_type": types, "length": length,
            "prompt_time_days": float(times[-1] + 1), "prompt_age_years": 51.0,
            "prompt_visit_index": int((length - 1) // 4), LABELS: [float("nan")] * len(TASKS)})
    frame = pl.DataFrame(rows).with_columns(pl.col("time_days").cast(pl.List(pl.Float64)),
                                            pl.col("age_years").cast(pl.List(pl.Float32)),
                                            pl.col(LABELS).cast(pl.List(pl.Float32)))
    return Cohort(frame, TASKS)


def _truncated(cohort: Cohort, keep: list[int]) -> Cohort:
    """Each row's first ``keep[i]`` tokens (the history as it was earlier)."""
    frame = cohort.frame.with_columns(pl.Series("_keep", keep))
    streams = ["input_ids", "time_days", "age_years", "visit_index", "token_type"]
    return Cohort(frame.with_columns([pl.col(s).list.head(pl.col("_keep")) for s in streams])
                  .with_columns(pl.col("_keep").alias("length")).drop("_keep"), cohort.task_names)


@pytest.fixture(params=["mamba2", "mamba1"])
def model(request: pytest.FixtureRequest) -> MultitaskModel:
    torch.manual_seed(0)
    config = BackboneConfig.preset("tiny", vocab_size=VOCAB, mixer=request.param, n_token_types=len(TokenType))
    return MultitaskModel(config, TASKS, prompt_token_ids=[2, 3, 4]).eval()


def test_continuing_saved_states_equals_reading_histories_whole(model: MultitaskModel) -> None:
    today = _cohort([40, 75, 9, 120, 33])
    yesterday = _truncated(today, [30, 75, 1, 64, 33])  # row 1 and 4: nothing new; row 2: prefix only
    saved = predict_tasks_continuing(model, yesterday, keep_states=True, tokens_per_batch=256).states
    assert saved is not None and saved.n_tokens.tolist() == [30, 75, 1, 64, 33]
    result = predict_tasks_continuing(model, today, saved=saved, tokens_per_batch=256)
    assert result.continued.all()
    full = predict_tasks(model, today, tokens_per_batch=256)
    np.testing.assert_allclose(result.probabilities, full, rtol=0, atol=1e-5)
    # continuing and keeping again gives the states of reading the whole history
    again = predict_tasks_continuing(model, today, saved=saved, keep_states=True, tokens_per_batch=256).states
    whole = predict_tasks_continuing(model, today, keep_states=True, tokens_per_batch=256).states
    assert again.n_tokens.tolist() == whole.n_tokens.tolist() and (again.digest == whole.digest).all()
    for a, b in zip(again.state.layers, whole.state.layers):
        torch.testing.assert_close(a.ssm, b.ssm, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.conv, b.conv)


def test_a_history_that_changed_is_read_whole(model: MultitaskModel) -> None:
    today = _cohort([40, 50])
    saved = predict_tasks_continuing(model, _truncated(today, [20, 20]), keep_states=True).states
    changed = today.frame.with_columns(
        pl.when(pl.col("subject_id") == 0).then(pl.col("input_ids").list.eval(pl.element().reverse()))
        .otherwise(pl.col("input_ids")).alias("input_ids"))
    result = predict_tasks_continuing(model, Cohort(changed, TASKS), saved=saved)
    assert result.continued.tolist() == [False, True]
    np.testing.assert_allclose(result.probabilities, predict_tasks(model, Cohort(changed, TASKS)), atol=1e-5)
    # a saved state longer than today's history (an earlier prediction time) is not continued
    shorter = predict_tasks_continuing(model, _truncated(today, [10, 10]), saved=saved)
    assert not shorter.continued.any()
    empty = HistoryStates.empty(model.backbone, 0)
    assert not predict_tasks_continuing(model, today, saved=empty).continued.any()


def test_state_files_round_trip_and_refuse_what_does_not_fit(model: MultitaskModel, tmp_path: Path) -> None:
    states = predict_tasks_continuing(model, _cohort([12, 30]), keep_states=True).states
    path = tmp_path / "0.states.safetensors"
    states.save(path, model_digest="abc")
    loaded = HistoryStates.load(path, model.backbone, model_digest="abc")
    assert loaded.subject_id.tolist() == [0, 1] and (loaded.digest == states.digest).all()
    for a, b in zip(loaded.state.layers, states.state.layers):
        assert torch.equal(a.ssm, b.ssm) and torch.equal(a.conv, b.conv)
    with pytest.raises(StateFileError, match="saved by another model"):
        HistoryStates.load(path, model.backbone, model_digest="other")
    wider = MultitaskModel(BackboneConfig.preset("tiny", vocab_size=VOCAB, mixer=model.config.mixer, d_model=128,
                                                 n_token_types=len(TokenType)), TASKS, [2, 3, 4])
    with pytest.raises(StateFileError, match=r"layer0.conv has per-history shape"):
        HistoryStates.load(path, wider.backbone, model_digest="abc")
    assert list(tmp_path.iterdir()) == [path], "no temporary file left behind"
