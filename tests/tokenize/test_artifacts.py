"""save_pretrained / from_pretrained, Hydra instantiation, and decode."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import polars as pl
import pytest
from meds_builders import event, events_frame, patient, visit

from ehrfm.cli import compose_stage
from ehrfm.tokenize import EventTokenizer, MissingTokenizerFileError, TokenizeConfig, TokenizerFormatError
from ehrfm.tokenize.decode import decode, decode_frame
from ehrfm.tokenize.tokenizer import BINS_FILE, CONFIG_FILE, VOCAB_FILE
from ehrfm.typed_config import from_mapping, stage_mapping


def cohort(n: int = 30) -> pl.DataFrame:
    rows = []
    for s in range(1, n + 1):
        rows += patient(s, "male" if s % 2 else "female", f"19{40 + s}-03-0{1 + s % 9}")
        for v in range(s % 4 + 1):
            enc = f"{s}-{v}"
            day = f"20{10 + v}-0{1 + s % 9}-1{v}"
            rows += visit(s, enc, f"{day} 08:00", f"{day} 09:00", "AMB" if v else "EMER",
                          event(s, f"{day} 08:10", "LOINC/2160-0", 0.5 + (s * 7 + v) % 13 / 10, unit="mg/dL",
                                encounter=enc),
                          event(s, f"{day} 08:20", "LOINC/72166-2",
                                text=["SNOMED/266919005", "SNOMED/8517006"][s % 2], encounter=enc),
                          event(s, f"{day} 08:30", f"SNOMED/{s % 5}", encounter=enc))
    return events_frame(rows)


@pytest.fixture
def fitted() -> EventTokenizer:
    return EventTokenizer(min_count=2, min_values_for_bins=5).fit(cohort())


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_roundtrip_restores_identical_behaviour(tmp_path: Path, fitted: EventTokenizer) -> None:
    fitted.save_pretrained(tmp_path / "tok")
    assert sorted(files(tmp_path / "tok")) == sorted([CONFIG_FILE, VOCAB_FILE, BINS_FILE])
    loaded = EventTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.get_params() == {**fitted.get_params(), "note_resource_types": ["DocumentReference"]}
    assert loaded.vocabulary_ == fitted.vocabulary_
    assert loaded.value_bins_.equals(fitted.value_bins_)
    assert loaded.transform(cohort()).equals(fitted.transform(cohort()))
    loaded.save_pretrained(tmp_path / "again")
    assert files(tmp_path / "again") == files(tmp_path / "tok")


def test_refit_gives_byte_identical_files_whatever_the_row_order(tmp_path: Path) -> None:
    EventTokenizer(min_count=2, min_values_for_bins=5).fit(cohort()).save_pretrained(tmp_path / "a")
    shuffled = cohort().sample(fraction=1.0, shuffle=True, seed=11)
    EventTokenizer(min_count=2, min_values_for_bins=5).fit(shuffled.lazy()).save_pretrained(tmp_path / "b")
    assert files(tmp_path / "a") == files(tmp_path / "b")
    EventTokenizer(min_count=20, min_values_for_bins=5).fit(cohort()).save_pretrained(tmp_path / "c")
    assert files(tmp_path / "c")[VOCAB_FILE] != files(tmp_path / "a")[VOCAB_FILE]  # the check can fail


def _edit_config(directory: Path, **changes) -> None:
    path = directory / CONFIG_FILE
    config = orjson.loads(path.read_bytes())
    for key, value in changes.items():
        if key in config:
            config[key] = value
        else:
            config["params"][key] = value
    path.write_bytes(orjson.dumps(config))


def test_wrong_format_version_names_file_and_versions(tmp_path: Path, fitted: EventTokenizer) -> None:
    fitted.save_pretrained(tmp_path)
    _edit_config(tmp_path, format_version=999)
    with pytest.raises(TokenizerFormatError,
                       match=rf"{CONFIG_FILE}: format_version 999 is not supported "
                             r".* reads format_version 1"):
        EventTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("missing", [CONFIG_FILE, VOCAB_FILE, BINS_FILE])
def test_missing_file_is_named(tmp_path: Path, fitted: EventTokenizer, missing: str) -> None:
    fitted.save_pretrained(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(MissingTokenizerFileError, match=rf"{missing}: missing") as info:
        EventTokenizer.from_pretrained(tmp_path)
    assert isinstance(info.value, FileNotFoundError)


def test_unknown_or_inconsistent_parameters_are_rejected(tmp_path: Path, fitted: EventTokenizer) -> None:
    fitted.save_pretrained(tmp_path)
    _edit_config(tmp_path, min_cont=3)
    with pytest.raises(TokenizerFormatError, match=r"unknown parameter\(s\) \['min_cont'\]"):
        EventTokenizer.from_pretrained(tmp_path)
    fitted.save_pretrained(tmp_path)
    _edit_config(tmp_path, num_value_bins=5)  # the vocabulary was built for 10 bins
    with pytest.raises(TokenizerFormatError,
                       match=rf"{VOCAB_FILE}: fixed tokens do not match the parameters"):
        EventTokenizer.from_pretrained(tmp_path)


def test_corrupt_json_and_unknown_names(tmp_path: Path, fitted: EventTokenizer) -> None:
    fitted.save_pretrained(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(TokenizerFormatError, match=rf"{CONFIG_FILE}: not valid JSON"):
        EventTokenizer.from_pretrained(tmp_path)
    with pytest.raises(MissingTokenizerFileError,
                       match=r"no-such-tokenizer: no such tokenizer directory; shipped tokenizers:"):
        EventTokenizer.from_pretrained("no-such-tokenizer")


def test_tokenize_config_builds_the_tokenizer_and_saves_plain_json(tmp_path: Path) -> None:
    config = from_mapping(TokenizeConfig, stage_mapping(compose_stage(
        "tokenize", ["input=/x", "output=/y", "tokenizer.min_count=2"]), where="tokenize"), where="tokenize")
    tok = EventTokenizer(**config.tokenizer)
    assert tok.min_count == 2 and not hasattr(tok, "vocabulary_")
    assert set(config.tokenizer) == set(tok.get_params())  # the config file names every parameter
    tok.fit(cohort()).save_pretrained(tmp_path)
    params = orjson.loads((tmp_path / CONFIG_FILE).read_bytes())["params"]
    assert params["note_resource_types"] == ["DocumentReference"] and params["min_count"] == 2


# -- decode ----------------------------------------------------------------------------------------


def test_decode_frame_recovers_exact_times_and_tokens(fitted: EventTokenizer) -> None:
    events = cohort()
    row = fitted.transform(events).row(0, named=True)
    frame = decode_frame(fitted, row)
    assert frame["token"].to_list() == fitted.convert_ids_to_tokens(row["input_ids"])
    source = events.filter((pl.col("subject_id") == 1) & pl.col("time").is_not_null()).sort("time")
    codes = frame.filter(pl.col("token_type").is_in(["EVENT", "VISIT_START", "VISIT_END"]))
    recovered = list(zip(codes["time"].to_list(), codes["token"].to_list()))
    expected = [(t, c if fitted.vocabulary_.id_of(c) != fitted.vocabulary_.id_of("[UNK]") else "[UNK]")
                for t, c in zip(source["time"].to_list(), source["code"].to_list())]
    assert sorted(recovered, key=lambda x: x[0]) == sorted(expected, key=lambda x: x[0])


def test_decode_text_shows_descriptions_values_and_prefix(fitted: EventTokenizer) -> None:
    descriptions = pl.DataFrame({"code": ["LOINC/2160-0", "SNOMED/266919005"],
                                 "description": ["Creatinine", "Never smoker"]})
    seq = fitted.transform(cohort())
    text = decode(fitted, seq.filter(pl.col("subject_id") == 2), codes=descriptions)
    lines = text.splitlines()
    assert (lines[0].startswith("subject 2: ")
            and lines[1].startswith("prefix: [CLS] GENDER/female BIRTH_YEAR/1940"))
    lab = next(line for line in lines if "LOINC/2160-0" in line)
    assert "(Creatinine) VALUE/Q" in lab and "mg/dL]" in lab
    assert "TEXT/SNOMED/266919005 (Never smoker)" in text
    assert fitted.decode(seq.row(1, named=True), codes=descriptions) == text


def test_decode_reads_codes_from_a_meds_dir_and_rejects_bad_input(tmp_path: Path,
                                                                  fitted: EventTokenizer) -> None:
    (tmp_path / "metadata").mkdir()
    pl.DataFrame({"code": ["LOINC/2160-0"], "description": ["Creatinine"]}).write_parquet(
        tmp_path / "metadata" / "codes.parquet"
    )
    seq = fitted.transform(cohort())
    assert "(Creatinine)" in decode(fitted, seq.row(0, named=True), codes=tmp_path)
    with pytest.raises(ValueError, match="decode takes one sequence; got a frame with 30 rows"):
        decode(fitted, seq)
    with pytest.raises(FileNotFoundError, match="no code metadata file"):
        decode(fitted, seq.row(0, named=True), codes=tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['time_days'\]"):
        decode(fitted, {"input_ids": [1]})


def test_decode_marks_unknown_times() -> None:
    events = events_frame([event(5, None, "GENDER/male"), event(5, "2001-01-01", "SNOMED/1")])
    tok = EventTokenizer(min_count=1).fit(events)
    seq = tok.transform(events, cutoff=dt.datetime(2000, 1, 1))  # nothing before: prefix at the cutoff
    frame = decode_frame(tok, seq.row(0, named=True))
    assert frame["time"].to_list() == [dt.datetime(2000, 1, 1)] * 3
    static = tok.transform(events.filter(pl.col("time").is_null()))
    assert decode_frame(tok, static.row(0, named=True))["time"].to_list() == [None] * 3


def test_decode_fused_tokens_shows_their_value_range() -> None:
    tok = EventTokenizer(min_count=1, min_values_for_bins=5, value_tokens="fused").fit(cohort())
    text = decode(tok, tok.transform(cohort()).row(0, named=True))
    lab = next(line for line in text.splitlines() if "LOINC/2160-0|Q" in line)
    assert lab.rstrip().endswith("mg/dL]") and "VALUE/" not in lab


def test_a_vocabulary_with_swapped_tokens_is_refused(tmp_path: Path, fitted: EventTokenizer) -> None:
    fitted.save_pretrained(tmp_path)
    lines = (tmp_path / VOCAB_FILE).read_bytes().splitlines()
    first, second = orjson.loads(lines[-1]), orjson.loads(lines[-2])
    first["token"], second["token"] = second["token"], first["token"]
    lines[-1], lines[-2] = orjson.dumps(first), orjson.dumps(second)
    (tmp_path / VOCAB_FILE).write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(TokenizerFormatError, match=rf"{VOCAB_FILE}: the tokens do not match the vocabulary_sha256"):
        EventTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["/etc/passwd", "../vocab.jsonl", "sub/vocab.jsonl", "..", "", 7])
def test_tokenizer_files_must_lie_inside_its_folder(tmp_path: Path, fitted: EventTokenizer, name: object) -> None:
    fitted.save_pretrained(tmp_path / "tok")
    config = orjson.loads((tmp_path / "tok" / CONFIG_FILE).read_bytes())
    config["files"]["vocabulary"] = name
    (tmp_path / "tok" / CONFIG_FILE).write_bytes(orjson.dumps(config))
    with pytest.raises(TokenizerFormatError, match=r"files.vocabulary must be a file name inside"):
        EventTokenizer.from_pretrained(tmp_path / "tok")


SECRET = "Jane Doe, MRN 12345"  # what a file that is not a vocabulary might hold


@pytest.mark.parametrize(("file", "content", "message"), [
    (VOCAB_FILE, SECRET, r"vocab.jsonl:1: not a JSON object with id, token, kind and count"),
    (VOCAB_FILE, '{"id": 0, "token": ["' + SECRET + '"], "kind": "special", "count": 0}',
     r"vocab.jsonl:1: token must be a string"),
    (BINS_FILE, '[{"code": "LOINC/1", "unit": null, "count": 3, "edges": [null, 1]}]',
     r"entry 0 \('LOINC/1'\): edges must be a list of finite numbers"),
    (BINS_FILE, '[{"code": "LOINC/1", "unit": null, "count": "3", "edges": [0, 1]}]',
     r"entry 0 \('LOINC/1'\): count must be an integer"),
    (BINS_FILE, '[{"code": 5, "unit": null, "count": 3, "edges": [0, 1]}]', r"entry 0: code must be a string"),
    (BINS_FILE, '[{"secret": "' + SECRET + '"}]', r"entry 0 must be an object with code, unit, count, edges"),
])
def test_tampered_files_give_a_format_error_without_echoing_their_content(
        tmp_path: Path, fitted: EventTokenizer, file: str, content: str, message: str) -> None:
    fitted.save_pretrained(tmp_path)
    (tmp_path / file).write_text(content + "\n")
    with pytest.raises(TokenizerFormatError, match=message) as caught:
        EventTokenizer.from_pretrained(tmp_path)
    assert SECRET not in str(caught.value)


def test_absurd_task_token_counts_are_refused(tmp_path: Path, fitted: EventTokenizer) -> None:
    fitted.save_pretrained(tmp_path)
    _edit_config(tmp_path, num_task_tokens=10**9)
    with pytest.raises((TokenizerFormatError, ValueError), match=r"num_task_tokens must be at most 1000"):
        EventTokenizer.from_pretrained(tmp_path)
