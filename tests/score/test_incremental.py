"""Incremental rescoring: continuing saved states after new events equals a full rescore.

The "new events" are each patient's last day: the first run sees every patient without it and
saves their states; the second sees everything and continues those states over the last day only.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from ehrfm.meds_dataset import data_shards, shard_id
from ehrfm.model import BackboneConfig, MultitaskModel
from ehrfm.predict.states import STATE_SUFFIX, HistoryStates, StateFileError
from ehrfm.score import RiskModel, score
from ehrfm.tokenize import TokenType

pytestmark = pytest.mark.slow

KEYS = ["subject_id", "prediction_time", "task"]
# Continuing a state runs the same float32 arithmetic in another grouping (chunked scan from a
# state vs. one pass): probabilities agree to a few ulps of float32, far below any clinical use.
ATOL = 1e-5


def _without_last_day(events: pl.DataFrame) -> pl.DataFrame:
    last_day = pl.col("time").max().over("subject_id").dt.truncate("1d")
    return events.filter(pl.col("time").is_null() | (pl.col("time") < last_day))


@pytest.fixture(scope="module")
def bundles(scoring_world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The finetuned (Mamba-2) bundle, and the same bundle with a Mamba-1 model of its vocabulary."""
    mamba1 = tmp_path_factory.mktemp("mamba1") / "model"
    shutil.copytree(scoring_world["bundle"], mamba1)
    trained = RiskModel.from_pretrained(scoring_world["bundle"]).model
    torch.manual_seed(1)
    config = BackboneConfig.preset("tiny", mixer="mamba1", vocab_size=trained.config.vocab_size,
                                   pad_token_id=trained.config.pad_token_id, n_token_types=len(TokenType))
    MultitaskModel(config, trained.task_names, trained.prompt_token_ids.tolist(),
                   head=trained.head_name).save_pretrained(mamba1)
    assert trained.config.mixer == "mamba2"
    return {"mamba2": scoring_world["bundle"], "mamba1": mamba1}


@pytest.fixture(scope="module")
def earlier_meds(scoring_world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
                 copy_meds: Callable[..., Path]) -> Path:
    return copy_meds(scoring_world["meds"], tmp_path_factory.mktemp("earlier") / "meds", _without_last_day)


def _predictions(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(folder / "prediction_details.parquet").sort(KEYS)


@pytest.mark.parametrize("mixer", ["mamba2", "mamba1"])
def test_continuing_saved_states_equals_a_full_rescore(mixer: str, bundles: dict[str, Path],
                                                       earlier_meds: Path, scoring_world: dict[str, Path],
                                                       tmp_path: Path) -> None:
    bundle, meds = str(bundles[mixer]), str(scoring_world["meds"])
    common = {"bundle": bundle, "context_length": 8192}  # long enough that no history is cropped
    first = score(**common, input=str(earlier_meds), output=str(tmp_path / "yesterday"), save_states=True)
    assert sorted(p.name for p in (tmp_path / "yesterday" / "states").iterdir()) == sorted(
        f"{shard_id(earlier_meds, shard)}{STATE_SUFFIX}" for shard in data_shards(earlier_meds))
    assert first["state_bytes_per_history"] > 0
    incremental = score(**common, input=meds, output=str(tmp_path / "today"),
                        states_from=str(tmp_path / "yesterday" / "states"))
    full = score(**common, input=meds, output=str(tmp_path / "full"))
    assert incremental["continued_rows"] == first["scored_rows"] > 100
    assert full["continued_rows"] == 0
    a, b = _predictions(tmp_path / "today"), _predictions(tmp_path / "full")
    assert a.select(KEYS).equals(b.select(KEYS))
    np.testing.assert_allclose(a["predicted_boolean_probability"], b["predicted_boolean_probability"],
                               rtol=0, atol=ATOL)
    # the last day really is new: today's scores are not yesterday's
    old = _predictions(tmp_path / "yesterday")
    assert not np.allclose(old["predicted_boolean_probability"], a["predicted_boolean_probability"], atol=ATOL)


def test_a_back_dated_event_makes_its_history_read_whole(bundles: dict[str, Path], earlier_meds: Path,
                                                          scoring_world: dict[str, Path], tmp_path: Path,
                                                          copy_meds: Callable[..., Path]) -> None:
    """A result filed today but dated years ago changes the history the state has read."""
    common = {"bundle": str(bundles["mamba2"]), "context_length": 8192}
    score(**common, input=str(earlier_meds), output=str(tmp_path / "yesterday"), save_states=True)
    meds = scoring_world["meds"]
    events = pl.read_parquet(meds / "data" / "train" / "0.parquet")
    patient = events.filter(pl.col("time").is_not_null())["subject_id"][0]
    first_time = events.filter(pl.col("subject_id") == patient, pl.col("time").is_not_null())["time"].min()
    late_arrival = events.filter(pl.col("subject_id") == patient, pl.col("time") == first_time).head(1)

    def backdate(shard: pl.DataFrame) -> pl.DataFrame:
        if patient not in shard["subject_id"]:
            return shard
        row = late_arrival.with_columns(pl.col("time") + pl.duration(hours=1))
        return pl.concat([shard, row]).sort("subject_id", "time", maintain_order=True, nulls_last=False)

    today = copy_meds(meds, tmp_path / "today_meds", backdate)
    incremental = score(**common, input=str(today), output=str(tmp_path / "today"),
                        states_from=str(tmp_path / "yesterday" / "states"))
    full = score(**common, input=str(today), output=str(tmp_path / "full"))
    assert incremental["continued_rows"] == full["scored_rows"] - 1  # every patient but that one
    a, b = _predictions(tmp_path / "today"), _predictions(tmp_path / "full")
    np.testing.assert_allclose(a["predicted_boolean_probability"], b["predicted_boolean_probability"],
                               rtol=0, atol=ATOL)


def test_cropped_histories_still_equal_a_full_rescore(bundles: dict[str, Path], earlier_meds: Path,
                                                      scoring_world: dict[str, Path], tmp_path: Path) -> None:
    """With the bundle's context (256 tokens) most histories are cropped, and a crop that drops
    older events no longer starts with what the state has read: those are read whole."""
    bundle, meds = str(bundles["mamba2"]), scoring_world["meds"]
    score(bundle=bundle, input=str(earlier_meds), output=str(tmp_path / "yesterday"), save_states=True)
    incremental = score(bundle=bundle, input=str(meds), output=str(tmp_path / "today"),
                        states_from=str(tmp_path / "yesterday" / "states"))
    full = score(bundle=bundle, input=str(meds), output=str(tmp_path / "full"))
    risk = RiskModel.from_pretrained(bundle)
    events = pl.concat([pl.read_parquet(shard) for shard in data_shards(meds)])
    rows = pl.read_parquet(tmp_path / "full" / "prediction_details.parquet").select("subject_id", "prediction_time")
    whole = risk._histories(events, rows.unique(), context_length=10**6)[0]["length"]
    assert (whole > risk.context_length).sum() > full["scored_rows"] // 2, "most synthetic histories are cropped"
    assert 0 < incremental["continued_rows"] < full["scored_rows"] // 2
    a, b = _predictions(tmp_path / "today"), _predictions(tmp_path / "full")
    np.testing.assert_allclose(a["predicted_boolean_probability"], b["predicted_boolean_probability"],
                               rtol=0, atol=ATOL)


def test_states_of_another_model_are_refused(bundles: dict[str, Path], earlier_meds: Path, tmp_path: Path) -> None:
    score(bundle=str(bundles["mamba1"]), input=str(earlier_meds), output=str(tmp_path / "m1"), save_states=True)
    with pytest.raises(StateFileError, match=r"0.states.safetensors: saved by another model"):
        score(bundle=str(bundles["mamba2"]), input=str(earlier_meds), output=str(tmp_path / "m2"),
              states_from=str(tmp_path / "m1" / "states"))
    broken = tmp_path / "m1" / "states" / f"held_out-0{STATE_SUFFIX}"  # the first shard, data/held_out/0
    broken.write_bytes(broken.read_bytes()[:100])
    risk = RiskModel.from_pretrained(bundles["mamba1"])
    with pytest.raises(StateFileError, match=r"0.states.safetensors: not a readable states file"):
        HistoryStates.load(broken, risk.model.backbone, model_digest=risk.weights_digest)
