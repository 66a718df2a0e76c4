"""The tokenizer on the 615-patient Synthea set (ingested once per session): cutoff, decode vs FHIR,
round trips, and the whole stage."""

from __future__ import annotations

import datetime as dt
import gzip
from collections import Counter
from pathlib import Path

import orjson
import polars as pl
import pytest

from ehrfm.meds_dataset import train_events
from ehrfm.tokenize import EventTokenizer, TokenType, tokenize_dataset
from ehrfm.tokenize.decode import decode, decode_frame

pytestmark = pytest.mark.slow

EVENT_TYPES = [int(TokenType.EVENT), int(TokenType.VISIT_START), int(TokenType.VISIT_END)]
STREAMS = ("input_ids", "time_days", "age_years", "visit_index", "token_type")


@pytest.fixture(scope="module")
def events(synthea_meds: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((synthea_meds / "data").rglob("*.parquet")))


@pytest.fixture(scope="module")
def tokenizer(synthea_meds: Path) -> EventTokenizer:
    # min_count=1: every train code has its own token, so decode can be compared code by code
    return EventTokenizer(min_count=1).fit(train_events(synthea_meds))


@pytest.fixture(scope="module")
def sequences(tokenizer: EventTokenizer, events: pl.DataFrame) -> pl.DataFrame:
    return tokenizer.transform(events)


def test_every_subject_has_an_aligned_time_ordered_sequence(sequences: pl.DataFrame,
                                                            events: pl.DataFrame) -> None:
    assert sequences.height == events["subject_id"].n_unique() == 615
    for column in ("time_days", "age_years", "visit_index", "token_type"):
        assert (sequences[column].list.len() == sequences["length"]).all(), column
    assert (sequences["time_days"].list.diff(null_behavior="drop").list.min() >= 0).all()
    # one event token per timed event: nothing dropped, nothing invented
    event_tokens = sequences["token_type"].explode().is_in(EVENT_TYPES).sum()
    assert event_tokens == events.filter(pl.col("time").is_not_null()).height
    # visit starts are numbered 1, 2, 3, ... per subject, and there is one per encounter
    starts = (
        sequences.select("subject_id", "visit_index", "token_type")
        .explode("visit_index", "token_type")
        .filter(pl.col("token_type") == int(TokenType.VISIT_START))
        .with_columns(pl.int_range(1, pl.len() + 1).over("subject_id").alias("expected"))
    )
    assert starts.height == events.filter(pl.col("code").str.starts_with("VISIT_START/")).height > 0
    assert (starts["visit_index"] == starts["expected"]).all()


def test_cutoff_never_lets_an_event_at_or_after_it_through(tokenizer: EventTokenizer,
                                                           events: pl.DataFrame) -> None:
    timed = events.filter(pl.col("time").is_not_null())
    # cutoff at each subject's median event time: that event and its same-time siblings must go
    cutoffs = timed.group_by("subject_id").agg(
        pl.col("time").sort().get(pl.len() // 2).alias("prediction_time")
    )
    seq = tokenizer.transform(events, cutoff=cutoffs)
    assert seq.height == cutoffs.height
    tokens = seq.select(
        "subject_id", "prediction_time", pl.col("time_days"), pl.col("token_type")
    ).explode("time_days", "token_type").filter(
        pl.col("token_type").is_in(EVENT_TYPES + [int(TokenType.VALUE)])
    )
    cutoff_days = (pl.col("prediction_time").dt.epoch("us").cast(pl.Float64)) / 86_400_000_000
    leaked = tokens.filter(pl.col("time_days") >= cutoff_days)
    assert leaked.height == 0, leaked.head()
    # and nothing strictly before the cutoff is lost
    before = timed.join(cutoffs, on="subject_id").filter(pl.col("time") < pl.col("prediction_time"))
    kept = tokens.filter(pl.col("token_type").is_in(EVENT_TYPES)).group_by("subject_id").len()
    want = before.group_by("subject_id").len()
    assert kept.sort("subject_id").equals(want.sort("subject_id"))
    at_cutoff = timed.join(cutoffs, on="subject_id").filter(pl.col("time") == pl.col("prediction_time"))
    assert at_cutoff.height >= cutoffs.height  # the test really had events exactly at the cutoff
    # what is kept is exactly the start of the uncut sequence: no stream depends on the future
    full = tokenizer.transform(events).select("subject_id", *STREAMS)
    cut = seq.select("subject_id", "length", *STREAMS).join(full, on="subject_id", suffix="_full")
    for column in STREAMS:
        same = cut.select(
            (pl.col(column) == pl.col(f"{column}_full").list.head(pl.col("length"))).all()
        ).item()
        assert same, column


def _utc(text: str) -> dt.datetime:
    return (dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.timezone.utc)
            .replace(tzinfo=None))


def _fhir_facts(bundle: dict) -> tuple[str, Counter, list[tuple[dt.datetime, str, float]]]:
    """(patient id, Counter of (time, code) for encounters/conditions/immunizations, quantities)."""
    facts: Counter = Counter()
    quantities = []
    patient_id = ""
    for entry in bundle["entry"]:
        r = entry["resource"]
        kind = r["resourceType"]
        if kind == "Patient":
            patient_id = r["id"]
        elif kind == "Encounter":
            cls = r["class"]["code"]
            facts[(_utc(r["period"]["start"]), f"VISIT_START/{cls}")] += 1
            facts[(_utc(r["period"]["end"]), f"VISIT_END/{cls}")] += 1
        elif kind == "Condition" and "onsetDateTime" in r:
            facts[(_utc(r["onsetDateTime"]), f"SNOMED/{r['code']['coding'][0]['code']}")] += 1
        elif kind == "Immunization":
            facts[(_utc(r["occurrenceDateTime"]), f"CVX/{r['vaccineCode']['coding'][0]['code']}")] += 1
        elif kind == "Observation" and "valueQuantity" in r and "effectiveDateTime" in r:
            code = f"LOINC/{r['code']['coding'][0]['code']}"
            quantities.append((_utc(r["effectiveDateTime"]), code, float(r["valueQuantity"]["value"])))
            facts[(_utc(r["effectiveDateTime"]), code)] += 1
    return patient_id, facts, quantities


def test_decode_matches_the_fhir_source_for_sampled_patients(
    shared_data: Path, synthea_meds: Path, tokenizer: EventTokenizer, sequences: pl.DataFrame
) -> None:
    subjects = pl.read_parquet(synthea_meds / "metadata" / "subjects.parquet")
    bundles = sorted(p for p in (shared_data / "synthea-r4").glob("*.json.gz") if "Information" not in p.name)
    checked = 0
    for path in bundles[::123]:  # five patients spread over the alphabet
        patient_id, facts, quantities = _fhir_facts(orjson.loads(gzip.decompress(path.read_bytes())))
        assert facts and quantities, path.name
        subject = subjects.filter(pl.col("fhir_patient_id") == patient_id)["subject_id"].item()
        row = sequences.filter(pl.col("subject_id") == subject).row(0, named=True)
        frame = decode_frame(tokenizer, row, codes=synthea_meds)
        decoded = Counter(zip(frame["time"].to_list(), frame["token"].to_list()))
        missing = facts - decoded
        assert not missing, f"{path.name}: FHIR facts absent from the decoded sequence: {list(missing)[:5]}"
        for prefix in ("VISIT_START/", "VISIT_END/"):  # visits come only from encounters: exact match
            assert {k: v for k, v in decoded.items() if k[1].startswith(prefix)} == {
                k: v for k, v in facts.items() if k[1].startswith(prefix)
            }
        # every quantity's value token covers the source value
        tokens = frame["token"].to_list()
        times = frame["time"].to_list()
        bins = tokenizer.value_bins_
        for when, code, value in quantities:
            positions = [i for i, (t, k) in enumerate(zip(times, tokens)) if t == when and k == code]
            value32 = float(pl.Series([value], dtype=pl.Float32).cast(pl.Float64)[0])
            ok = False
            for i in positions:
                token = tokens[i + 1]
                assert token.startswith("VALUE/"), (path.name, code, token)
                if token == "VALUE/ANY":
                    ok = True
                    continue
                b = int(token.removeprefix("VALUE/Q"))
                for edges in bins.filter(pl.col("code") == code)["edges"].to_list():
                    lo = edges[b - 2] if b >= 2 else -float("inf")
                    hi = edges[b - 1] if b - 1 < len(edges) else float("inf")
                    ok |= lo < value32 <= hi
            assert ok, (path.name, when, code, value)
        text = decode(tokenizer, row, codes=synthea_meds)
        assert "VISIT_START/" in text and ("(Body Height)" in text or "(Body Weight)" in text)
        checked += 1
    assert checked == 5


def test_save_load_and_refit_are_exact_on_real_data(
    tmp_path: Path, synthea_meds: Path, tokenizer: EventTokenizer, events: pl.DataFrame,
    sequences: pl.DataFrame,
) -> None:
    tokenizer.save_pretrained(tmp_path / "a")
    assert EventTokenizer.from_pretrained(tmp_path / "a").transform(events).equals(sequences)
    EventTokenizer(min_count=1).fit(train_events(synthea_meds)).save_pretrained(tmp_path / "b")
    for name in ("tokenizer_config.json", "vocab.jsonl", "value_bins.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_stage_on_real_data(tmp_path: Path, synthea_meds: Path) -> None:
    summary = tokenize_dataset(synthea_meds, EventTokenizer(), tmp_path / "tokens")
    splits = pl.read_parquet(synthea_meds / "metadata" / "subject_splits.parquet")["split"].value_counts()
    assert {name: s["sequences"] for name, s in summary["splits"].items()} == dict(splits.iter_rows())
    assert summary["total"]["sequences"] == 615 and summary["subjects_without_events"] == 0
    assert 0 < summary["splits"]["train"]["unk_rate"] < summary["splits"]["held_out"]["unk_rate"] < 0.05
