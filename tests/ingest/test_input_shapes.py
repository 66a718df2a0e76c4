"""Every shape real FHIR exports arrive in is read, or reported with a true reason: never lost.

Part of the bad-input catalogue (see ``test_bad_inputs.py``): files named wrongly or not at all,
other compressions and encodings, line endings, joined exports, arrays, nested and malformed
Bundles, transaction DELETEs, duplicate JSON keys, Git LFS pointers, unreadable files, size caps,
symbolic links, and the resolution of copies of one resource.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from pathlib import Path

import orjson
import polars as pl
import pytest
import zstandard
from fhir_builders import bundle, ingest, observation, patient, write_json, write_ndjson

from ehrfm.ingest.discovery import discover_inputs


def _values(run, resource_type: str = "Observation") -> dict[str, float]:
    rows = run.events.filter(pl.col("resource_type") == resource_type)
    return dict(zip(rows["resource_id"].to_list(), rows["numeric_value"].to_list()))


def _lines(*resources) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)


TWO = (patient("p1"), observation("o1", value=1.0))


# -- names, compression, encodings -----------------------------------------------------------

@pytest.mark.parametrize("name,payload", [
    ("ndjson-saved-as.json", _lines(*TWO)),
    ("bundle.json.bz2", bz2.compress(orjson.dumps(bundle(*TWO)))),
    ("lines.ndjson.xz", lzma.compress(_lines(*TWO))),
    ("lines.ndjson.zst", zstandard.ZstdCompressor().compress(_lines(*TWO))),
    ("gzip-inside.json", gzip.compress(orjson.dumps(bundle(*TWO)))),
    ("cr-only.ndjson", _lines(*TWO).replace(b"\n", b"\r")),
    ("crlf.ndjson", _lines(*TWO).replace(b"\n", b"\r\n")),
    ("utf16.json", orjson.dumps(bundle(*TWO), option=orjson.OPT_INDENT_2).decode().encode("utf-16")),
    ("utf16le-no-bom.ndjson", _lines(*TWO).decode().encode("utf-16-le")),
    ("utf32.ndjson", _lines(*TWO).decode().encode("utf-32")),
    ("bom-mid.ndjson", b"\xef\xbb\xbf" + orjson.dumps(TWO[0]) + b"\n\xef\xbb\xbf" + orjson.dumps(TWO[1]) + b"\n"),
    ("array.json", orjson.dumps(list(TWO))),
    ("pretty-array.json", orjson.dumps(list(TWO), option=orjson.OPT_INDENT_2)),
    ("joined.json", orjson.dumps(bundle(TWO[0]), option=orjson.OPT_INDENT_2) + b"\n\xef\xbb\xbf"
     + orjson.dumps(bundle(TWO[1]), option=orjson.OPT_INDENT_2)),
])
def test_shapes_that_are_read_in_full(tmp_path: Path, name: str, payload: bytes) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / name).write_bytes(payload)
    run = ingest(folder, tmp_path / "out")
    assert run.summary.written == {"Observation": 1, "Patient": 1}, run.rejects.to_dicts()
    assert _values(run) == {"o1": 1.0}
    assert run.summary.resources_rejected == 0


def test_files_without_a_known_extension_are_read_by_content(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "Patient").write_bytes(_lines(TWO[0]))
    (folder / "export.bz2").write_bytes(bz2.compress(_lines(TWO[1])))
    (folder / "README.txt").write_text("FHIR export of 2026-01-01\n")
    run = ingest(folder, tmp_path / "out")
    assert run.summary.written == {"Observation": 1, "Patient": 1}
    assert run.summary.ignored_files == {"not JSON": 1}
    assert run.summary_json["ignored_examples"]["not JSON"] == [str(folder / "README.txt")]


def test_hidden_files_and_folders_are_ignored_with_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_ndjson(folder / "a.ndjson", list(TWO))
    write_ndjson(folder / ".partial.ndjson", [observation("o2")])
    write_ndjson(folder / ".git" / "x.ndjson", [observation("o3")])
    run = ingest(folder, tmp_path / "out")
    assert _values(run) == {"o1": 1.0}
    assert run.summary_json["ignored_files"] == {"hidden": 1, "hidden folder": 1}


def test_zip_archive_is_reported_not_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_ndjson(folder / "a.ndjson", list(TWO))
    (folder / "more.json").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    run = ingest(folder, tmp_path / "out")
    row = run.only_reject("unsupported file")
    assert "extract it first" in row["detail"]


# -- symbolic links and globs ------------------------------------------------------------------

def test_symlinked_subfolder_is_read_and_a_loop_terminates(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write_ndjson(real / "Patient.ndjson", [TWO[0]])
    root = tmp_path / "in"
    write_ndjson(root / "Observation.ndjson", [TWO[1]])
    (root / "linked").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(root, target_is_directory=True)  # root -> linked -> loop -> root
    by_folder = discover_inputs([root])
    by_glob = discover_inputs([str(root / "**" / "*.ndjson")])
    assert by_folder.files == by_glob.files == sorted(
        [(root / "Observation.ndjson").resolve(), (real / "Patient.ndjson").resolve()])
    assert "folder already searched (symbolic link)" in dict((r, p) for p, r in by_folder.ignored)
    run = ingest(root, tmp_path / "out")
    assert run.summary.written == {"Observation": 1, "Patient": 1}


def test_folder_and_glob_select_the_same_files(tmp_path: Path) -> None:
    root = tmp_path / "in"
    write_ndjson(root / "a" / "Patient.ndjson", [TWO[0]])
    (root / "a" / "b").mkdir()
    (root / "a" / "b" / "noext").write_bytes(_lines(TWO[1]))
    (root / "a" / "notes.md").write_text("# notes")
    (root / "broken").symlink_to(root / "missing.ndjson")
    folder = discover_inputs([root])
    glob = discover_inputs([str(root / "**")])
    assert folder.files == glob.files
    assert folder.ignored_by_reason() == glob.ignored_by_reason() == {"broken symbolic link": 1, "not JSON": 1}


# -- Bundles -------------------------------------------------------------------------------------

def test_bundle_entry_that_is_not_an_array_is_rejected_by_name(tmp_path: Path) -> None:
    src = write_json(tmp_path / "b.json", {"resourceType": "Bundle", "id": "b1", "entry": {"resource": TWO[0]}})
    write_ndjson(tmp_path / "ok.ndjson", list(TWO))
    run = ingest([src, tmp_path / "ok.ndjson"], tmp_path / "out")
    row = run.only_reject("malformed Bundle")
    assert (row["resource_type"], row["resource_id"]) == ("Bundle", "b1")
    assert "Bundle.entry is an object, not an array" in row["detail"]


def test_nested_bundles_are_read_depth_first(tmp_path: Path) -> None:
    inner_a = bundle(TWO[0], kind="searchset")
    inner_b = bundle(TWO[1], observation("o2", value=2.0), kind="searchset")
    outer = {"resourceType": "Bundle", "type": "batch-response",
             "entry": [{"resource": inner_a, "response": {"status": "200"}},
                       {"resource": inner_b, "response": {"status": "200"}}]}
    write_json(tmp_path / "in" / "batch.json", outer)
    run = ingest(tmp_path / "in", tmp_path / "out")
    assert _values(run) == {"o1": 1.0, "o2": 2.0}
    assert run.summary.written == {"Observation": 2, "Patient": 1}


def test_empty_bundle_is_counted(tmp_path: Path) -> None:
    write_ndjson(tmp_path / "in" / "a.ndjson", list(TWO))
    write_json(tmp_path / "in" / "empty.json", {"resourceType": "Bundle", "type": "searchset", "total": 0})
    run = ingest(tmp_path / "in", tmp_path / "out")
    assert run.summary.skipped == {"Bundle": {"empty Bundle": 1}}


def test_transaction_delete_removes_what_was_read_before_it(tmp_path: Path) -> None:
    # a_: the resources; b_: a later transaction deletes o1 and the Patient p2; c_: o1 re-created.
    write_ndjson(tmp_path / "in" / "a_data.ndjson", [
        TWO[0], TWO[1], patient("p2"), observation("o-p2", "Patient/p2", value=5.0)])
    write_json(tmp_path / "in" / "b_tx.json", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": "Observation/o1"}},
        {"request": {"method": "DELETE", "url": "http://ehr.example/fhir/Patient/p2/_history/3"}},
        {"request": {"method": "DELETE", "url": "Observation?code=2160-0"}},
        {"request": {"method": "PATCH", "url": "Observation/o9"}, "resource": {"resourceType": "Binary"}},
    ]})
    run = ingest(tmp_path / "in", tmp_path / "out")
    assert _values(run) == {}
    assert run.summary.skipped["Observation"] == {"deleted (transaction DELETE)": 1}
    assert run.summary.skipped["Patient"] == {"deleted (transaction DELETE)": 1}
    deleted = {r["resource_id"]: r for r in run.reject_rows("deleted")}
    assert set(deleted) == {"o1", "p2"}
    assert "b_tx.json (entry 0)" in deleted["o1"]["detail"]
    orphan = run.only_reject("unknown patient")
    assert orphan["resource_id"] == "o-p2" and "Patient/p2, which was removed (deleted)" in orphan["detail"]
    unsupported = {r["detail"].split(" is ")[0]: r for r in run.reject_rows("unsupported request")}
    assert set(unsupported) == {"entry 2", "entry 3"}

    write_ndjson(tmp_path / "in" / "c_again.ndjson", [observation("o1", value=7.0)])
    again = ingest(tmp_path / "in", tmp_path / "out2")
    assert _values(again) == {"o1": 7.0}  # re-created after the DELETE: it stands


# -- duplicate keys ------------------------------------------------------------------------------

@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("key,twice", [
    ("resourceType", b'"resourceType":"Observation","resourceType":"Condition"'),
    ("id", b'"id":"o2","id":"o3"'),
    ("subject", b'"subject":{"reference":"Patient/p1"},"subject":{"reference":"Patient/p9"}'),
    ("value", b'"valueQuantity":{"value":1.0,"value":100.0}'),
])
def test_key_given_twice_rejects_only_that_resource(tmp_path: Path, strict: bool, key: str, twice: bytes) -> None:
    template = orjson.dumps(observation("o2", value=None))[:-1] + b"," + twice + b"}"
    if key in ("resourceType", "id", "subject"):
        template = b'{' + twice + b',"status":"final","code":{"text":"x"},"effectiveDateTime":"2020-01-01"}'
        if key != "subject":
            template = template[:-1] + b',"subject":{"reference":"Patient/p1"}}'
    src = write_ndjson(tmp_path / "x.ndjson", [*TWO, template])
    in_bundle = tmp_path / "b.json"
    in_bundle.write_bytes(orjson.dumps(bundle(*TWO))[:-2] + b',{"resource":' + template + b"}]}")
    for i, path in enumerate((src, in_bundle)):
        run = ingest(path, tmp_path / f"out{i}", strict=strict)
        row = run.only_reject("duplicate JSON key")
        assert "appears 2 times" in row["detail"]
        assert _values(run) == {"o1": 1.0}


# -- what cannot be read, said truly -------------------------------------------------------------

def test_git_lfs_pointer_is_named_as_one(tmp_path: Path) -> None:
    src = tmp_path / "Observation.ndjson"
    src.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 123456\n")
    write_ndjson(tmp_path / "Patient.ndjson", [TWO[0]])
    run = ingest([src, tmp_path / "Patient.ndjson"], tmp_path / "out")
    row = run.only_reject("Git LFS pointer")
    assert "git lfs pull" in row["detail"]


def test_permission_error_is_not_called_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ehrfm.ingest.sources as sources

    locked = write_ndjson(tmp_path / "locked.ndjson", [TWO[1]])
    write_ndjson(tmp_path / "Patient.ndjson", [TWO[0]])
    real_open = sources.open_decoded

    def refuse(path):
        if Path(path).name == "locked.ndjson":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path)

    monkeypatch.setattr(sources, "open_decoded", refuse)
    run = ingest([locked, tmp_path / "Patient.ndjson"], tmp_path / "out")
    row = run.only_reject("unreadable file")
    assert "Permission denied" in row["detail"] and "errno 13" in row["detail"]


def test_huge_line_from_a_small_gzip_is_capped_and_reading_goes_on(tmp_path: Path) -> None:
    huge = b'{"resourceType":"Observation","note":"' + b"x" * 5_000_000 + b'"}'
    src = tmp_path / "Observation.ndjson.gz"
    src.write_bytes(gzip.compress(_lines(TWO[0]) + huge + b"\n" + _lines(TWO[1])))
    assert src.stat().st_size < 50_000
    run = ingest(src, tmp_path / "out", max_line_bytes=1 << 20)
    row = run.only_reject("line too long")
    assert row["location"] == "line 2" and "5,000,0" in row["detail"] and "max_line_bytes" in row["detail"]
    assert _values(run) == {"o1": 1.0}


def test_document_over_the_size_cap_is_rejected_whole(tmp_path: Path) -> None:
    src = tmp_path / "big.json"
    src.write_bytes(orjson.dumps(bundle(*TWO, *[observation(f"q{i}") for i in range(200)]),
                                 option=orjson.OPT_INDENT_2))
    write_ndjson(tmp_path / "ok.ndjson", list(TWO))
    run = ingest([src, tmp_path / "ok.ndjson"], tmp_path / "out", max_document_bytes=4096)
    assert "max_document_bytes" in run.only_reject("file too large")["detail"]


# -- copies of one resource, deletions and references: truthful and by a documented rule -------

def test_latest_last_updated_wins_whatever_the_file_order(tmp_path: Path) -> None:
    old = patient("p1", gender="female", meta={"lastUpdated": "2021-01-01T00:00:00Z"})
    new = patient("p1", gender="male", meta={"lastUpdated": "2024-05-01T00:00:00Z"})
    write_ndjson(tmp_path / "in" / "a.ndjson", [new])
    write_ndjson(tmp_path / "in" / "b.ndjson", [old])
    write_ndjson(tmp_path / "in" / "c.ndjson", [observation("o1")])
    run = ingest(tmp_path / "in", tmp_path / "out")
    assert run.events.filter(pl.col("code").str.starts_with("GENDER/"))["code"].to_list() == ["GENDER/male"]
    row = run.only_reject("conflicting duplicate")
    assert row["source_file"].endswith("b.ndjson")
    assert "a.ndjson (line 1), which is kept because its meta.lastUpdated is later" in row["detail"]
    # Reversed file order, same winner.
    write_ndjson(tmp_path / "in2" / "a.ndjson", [old])
    write_ndjson(tmp_path / "in2" / "b.ndjson", [new])
    run2 = ingest(tmp_path / "in2", tmp_path / "out2")
    assert run2.events.filter(pl.col("code").str.starts_with("GENDER/"))["code"].to_list() == ["GENDER/male"]


def test_reference_rejects_say_what_really_happened(tmp_path: Path) -> None:
    rejected_patient = {"resourceType": "Patient", "id": "p-bad", "birthDate": "1970-13-45"}
    uncoded = {"resourceType": "Medication", "id": "m-uncoded", "status": "active"}
    med_request = {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
                   "subject": {"reference": "Patient/p1"}, "authoredOn": "2020-01-01",
                   "medicationReference": {"reference": "Medication/m-uncoded"}}
    write_ndjson(tmp_path / "in" / "Medication.ndjson", [uncoded])
    write_ndjson(tmp_path / "in" / "MedicationRequest.ndjson", [med_request])
    write_ndjson(tmp_path / "in" / "Observation.ndjson", [observation("o-bad", "Patient/p-bad")])
    write_ndjson(tmp_path / "in" / "Patient.ndjson", [TWO[0], rejected_patient])
    run = ingest(tmp_path / "in", tmp_path / "out")
    assert "Medication/m-uncoded is in the input but has no code" in run.only_reject("no code")["detail"]
    orphan = run.only_reject("unknown patient")
    assert "Patient/p-bad, which was rejected (invalid date" in orphan["detail"]


def test_events_before_birth_are_rejected_or_quarantined(tmp_path: Path) -> None:
    resources = [patient("p1", birth="2000-06-01"), observation("o-early", effective="1999-01-01T00:00:00Z"),
                 observation("o-tz", effective="2000-05-31T20:00:00-08:00"), observation("o-ok", value=3.0)]
    src = write_ndjson(tmp_path / "x.ndjson", resources)
    run = ingest(src, tmp_path / "out")
    row = run.only_reject("before birth")
    assert row["resource_id"] == "o-early" and "1999-01-01 00:00" in row["detail"] and "2000-06-01" in row["detail"]
    assert set(_values(run)) == {"o-tz", "o-ok"}  # within a day of the birth date: time zones
    assert not (tmp_path / "out" / "quarantine").exists()

    kept = ingest(src, tmp_path / "q", before_birth="quarantine")
    assert kept.only_reject("before birth")["resource_id"] == "o-early"
    quarantined = pl.read_parquet(tmp_path / "q" / "quarantine")
    assert quarantined["resource_id"].to_list() == ["o-early"]


def test_death_before_birth_rejects_the_patient(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [
        patient("p1", birth="2000-01-01", deceasedDateTime="1990-01-01"), observation("o1"), patient("p2")])
    run = ingest(src, tmp_path / "out")
    assert run.only_reject("death before birth")["resource_id"] == "p1"
    assert "which was rejected (death before birth" in run.only_reject("unknown patient")["detail"]


def test_out_of_range_utc_year_is_rejected_not_written(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [
        patient("p1"), observation("o-y0", effective="0001-01-01T00:00:00+14:00"),
        observation("o-y10k", effective="9999-12-31T23:00:00-05:00"), observation("o-ok", value=3.0)])
    run = ingest(src, tmp_path / "out")
    assert {r["resource_id"] for r in run.reject_rows("invalid date")} == {"o-y0", "o-y10k"}
    assert _values(run) == {"o-ok": 3.0}


# -- security labels and excerpts ----------------------------------------------------------------

def test_security_labels_are_carried_and_can_exclude(tmp_path: Path) -> None:
    confidential = {"security": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"},
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}]}
    src = write_ndjson(tmp_path / "x.ndjson", [
        TWO[0], observation("o-hiv", value=4.0, meta=confidential), observation("o-plain", value=2.0)])
    run = ingest(src, tmp_path / "out")
    labels = dict(zip(run.events["resource_id"].to_list(), run.events["security"].to_list()))
    assert labels["o-hiv"] == "HIV,R" and labels["o-plain"] is None

    excluded = ingest(src, tmp_path / "ex", exclude_security_labels=["HIV"])
    assert _values(excluded) == {"o-plain": 2.0}
    assert excluded.summary.skipped["Observation"] == {"excluded security label": 1}
    by_system = ingest(src, tmp_path / "ex2",
                       exclude_security_labels=["http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R"])
    assert _values(by_system) == {"o-plain": 2.0}


def test_reject_excerpts_can_be_dropped(tmp_path: Path) -> None:
    src = write_ndjson(tmp_path / "x.ndjson", [TWO[0], '{"resourceType": "Observation", "note": "Jane Doe'])
    assert "Jane Doe" in ingest(src, tmp_path / "a").only_reject("malformed JSON")["excerpt"]
    assert ingest(src, tmp_path / "b", reject_excerpts=False).only_reject("malformed JSON")["excerpt"] is None


def test_config_bounds_are_checked() -> None:
    from ehrfm.ingest.config import IngestConfig

    for bad in ({"max_line_bytes": 0}, {"max_document_bytes": True}, {"before_birth": "keep"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            IngestConfig(inputs=["x"], output="y", **bad)


# -- integrity -----------------------------------------------------------------------------------

def test_spill_written_twice_is_refused(tmp_path: Path) -> None:
    """Events that reach finalize twice (another process writing into the run) are never written."""
    from ehrfm.ingest.config import IngestConfig
    from ehrfm.ingest.finalize import IngestIntegrityError, finalize
    from ehrfm.ingest.worker import ingest_batch

    src = write_ndjson(tmp_path / "x.ndjson", list(TWO))
    config = IngestConfig(inputs=[str(src)], output=str(tmp_path / "out"), num_shards=1)
    tmp = tmp_path / "scratch"
    ingest_batch([(0, str(src))], config, str(tmp))
    for part in list((tmp / "events").glob("bucket=*/*.parquet")):
        os.link(part, part.with_name("copy-" + part.name))
    with pytest.raises(IngestIntegrityError, match="more than once"):
        finalize(tmp, tmp_path / "out", [str(src)], config)
