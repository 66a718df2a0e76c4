"""tokenize_dataset and the ``ehrfm tokenize`` stage on MEDS directories written in code."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from meds_builders import event, events_frame, patient, visit, write_meds

from ehrfm.meds_dataset import MedsDatasetError, MissingMedsFileError
from ehrfm.resources import conf_dir
from ehrfm.tokenize import EventTokenizer, tokenize_dataset
from ehrfm.tokenize.stage import run_tokenize_stage


def dataset(root: Path, shards: int = 2) -> Path:
    rows = []
    for s in range(1, 13):
        rows += patient(s)
        rows += visit(s, f"e{s}", "2020-01-01 08:00", "2020-01-01 09:00", "AMB",
                      event(s, "2020-01-01 08:30", "LOINC/2160-0", float(s), unit="mg/dL", encounter=f"e{s}"))
    # only held-out subjects carry this code and these extreme values: fitting must not see them
    rows += [event(11, "2020-06-01", "SNOMED/held-out-only"), event(12, "2020-06-01", "SNOMED/held-out-only"),
             event(11, "2020-06-02", "LOINC/2160-0", 1e6, unit="mg/dL")]
    rows += [event(13, None, "GENDER/male")]  # a static-only subject
    splits = {s: "train" for s in range(1, 9)} | {9: "tuning", 10: "tuning", 11: "held_out", 12: "held_out",
                                                  13: "train", 14: "held_out"}  # 14 has no events at all
    return write_meds(root, events_frame(rows), splits, shards=shards,
                      descriptions={"LOINC/2160-0": "Creatinine"})


def read_split(output: Path, split: str) -> pl.DataFrame:
    return pl.read_parquet(sorted((output / "data" / split).glob("*.parquet"))).sort("subject_id")


def test_tokenize_dataset_fits_on_train_only_and_writes_every_split(tmp_path: Path) -> None:
    meds = dataset(tmp_path / "meds")
    summary = tokenize_dataset(meds, EventTokenizer(min_count=1, min_values_for_bins=5), tmp_path / "out")
    tok = EventTokenizer.from_pretrained(tmp_path / "out" / "tokenizer")
    assert "SNOMED/held-out-only" not in tok.vocabulary_
    assert tok.value_bins_["edges"][0].to_list()[-1] < 1e6  # edges from train values only
    assert {p.name for p in (tmp_path / "out" / "data").iterdir()} == {"train", "tuning", "held_out"}
    assert read_split(tmp_path / "out", "train")["subject_id"].to_list() == [1, 2, 3, 4, 5, 6, 7, 8, 13]
    held = read_split(tmp_path / "out", "held_out")
    assert held["subject_id"].to_list() == [11, 12]
    assert tok.convert_tokens_to_ids(["[UNK:SNOMED]"])[0] in held["input_ids"][0].to_list()
    assert summary["splits"]["train"]["sequences"] == 9
    assert summary["splits"]["train"]["prefix_only_sequences"] == 1
    assert summary["splits"]["held_out"]["unk_tokens"] == 2
    assert summary["subjects_without_events"] == 1 and summary["subjects_without_split"] == 0
    assert summary["total"]["sequences"] == 13
    assert summary["total"]["tokens"] == sum(read_split(tmp_path / "out", s)["length"].sum()
                                             for s in ("train", "tuning", "held_out"))
    assert orjson.loads((tmp_path / "out" / "summary.json").read_bytes())["splits"] == summary["splits"]


def test_shard_layout_does_not_change_the_sequences(tmp_path: Path) -> None:
    one = tokenize_dataset(dataset(tmp_path / "a", shards=1), EventTokenizer(min_count=1), tmp_path / "out1")
    three = tokenize_dataset(dataset(tmp_path / "b", shards=3), EventTokenizer(min_count=1),
                             tmp_path / "out3")
    assert one["splits"] == three["splits"]
    for split in ("train", "tuning", "held_out"):
        assert read_split(tmp_path / "out1", split).equals(read_split(tmp_path / "out3", split))


def test_loading_a_saved_tokenizer_and_choosing_splits(tmp_path: Path) -> None:
    meds = dataset(tmp_path / "meds")
    EventTokenizer(min_count=1).fit(events_frame(patient(1))).save_pretrained(tmp_path / "tok")
    summary = tokenize_dataset(meds, tmp_path / "tok", tmp_path / "out", splits=["tuning"], max_length=6)
    assert list(summary["splits"]) == ["tuning"] and summary["tokenizer"]["source"] == str(tmp_path / "tok")
    assert summary["tokenizer"]["fitted_on"] is None
    tuning = read_split(tmp_path / "out", "tuning")
    assert tuning["length"].max() <= 6 and tuning["truncated_tokens"].min() > 0


def test_a_fitted_tokenizer_is_used_as_is(tmp_path: Path) -> None:
    meds = dataset(tmp_path / "meds")
    tok = EventTokenizer(min_count=1).fit(events_frame(patient(1)))
    summary = tokenize_dataset(meds, tok, tmp_path / "out")
    assert summary["tokenizer"]["fitted_on"] is None and summary["tokenizer"]["vocab_size"] == tok.vocab_size
    assert "LOINC/2160-0" not in tok.vocabulary_  # not refit on the dataset


def test_output_is_not_overwritten_by_accident(tmp_path: Path) -> None:
    meds = dataset(tmp_path / "meds")
    tokenize_dataset(meds, EventTokenizer(min_count=1), tmp_path / "out")
    with pytest.raises(FileExistsError, match=r"out/data: already exists; pass overwrite=True"):
        tokenize_dataset(meds, EventTokenizer(min_count=1), tmp_path / "out")
    tokenize_dataset(meds, EventTokenizer(min_count=1), tmp_path / "out", overwrite=True)


def test_missing_metadata_and_empty_train_split_are_named(tmp_path: Path) -> None:
    meds = dataset(tmp_path / "meds")
    (meds / "metadata" / "subject_splits.parquet").unlink()
    with pytest.raises(MissingMedsFileError, match=r"subject_splits.parquet: missing"):
        tokenize_dataset(meds, EventTokenizer(), tmp_path / "out")
    meds = dataset(tmp_path / "meds2")
    pl.DataFrame({"subject_id": [1], "split": ["tuning"]}).write_parquet(
        meds / "metadata" / "subject_splits.parquet"
    )
    with pytest.raises(MedsDatasetError, match=r"no subject has split 'train'"):
        tokenize_dataset(meds, EventTokenizer(), tmp_path / "out")
    meds = dataset(tmp_path / "meds3")
    for shard in (meds / "data").glob("*.parquet"):
        shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"meds3/data: no \*.parquet shards"):
        tokenize_dataset(meds, EventTokenizer(), tmp_path / "out")


def test_hydra_stage_runs_from_the_composed_config(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    meds = dataset(tmp_path / "meds")
    overrides = [f"input={meds}", f"output={tmp_path / 'out'}", "tokenizer.min_count=1",
                 f"save_tokenizer_to={tmp_path / 'saved'}"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="tokenize", overrides=overrides)
        summary = run_tokenize_stage(cfg)
        assert summary["total"]["sequences"] == 13
        assert (tmp_path / "out" / "tokenize_config.yaml").is_file()
        assert "held_out" in capsys.readouterr().out
        # second run loads the saved tokenizer instead of fitting
        cfg = compose(config_name="tokenize", overrides=[f"input={meds}", f"output={tmp_path / 'out2'}",
                                                          f"tokenizer_dir={tmp_path / 'saved'}"])
        again = run_tokenize_stage(cfg)
        assert again["tokenizer"]["fitted_on"] is None and again["splits"] == summary["splits"]
        cfg = compose(config_name="tokenize")
        with pytest.raises(ValueError, match=r"tokenize: set input=<value>"):
            run_tokenize_stage(cfg)
