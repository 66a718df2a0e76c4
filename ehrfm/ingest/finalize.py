"""The second half of ingest: per shard, resolve what needed the whole input, then write MEDS.

Workers could not know everything while reading files in parallel: whether a subject's Patient
was ever read, which copy of a duplicated resource came first, the code of a Medication kept in
another file, the start of the encounter a timeless Condition belongs to. Every subject's events
sit in one spill bucket, so each of these is a Polars join inside one shard. Resources that fail
are rejected whole, with the file and line they came from.

Output: ``data/<split>/<n>.parquet`` (split-sharded, as MEDS-Transforms, MEDS-Tab and
meds-torch-data read MEDS), each subject in one file of their split's folder, sorted by subject
then time; ``n`` counts from 0 in every split folder.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from ehrfm import schema
from ehrfm.ingest.config import SPILL_BUCKETS, IngestConfig
from ehrfm.ingest.events import (
    MEDICATION_REF,
    NEEDS_ENCOUNTER_TIME,
    PATIENT,
    SEQ,
    SRC_ENTRY,
    SRC_FILE,
)
from ehrfm.ingest.fhirtime import BIRTH_SLACK_US
from ehrfm.ingest.sources import location_text, read_records
from ehrfm.ingest.subjects import split_for
from ehrfm.ingest.worker import (
    IDENTIFIERS,
    LOCATED_SCHEMA,
    MEDICATION_SCHEMA,
    PATIENT_SCHEMA,
    REJECT_SCHEMA,
    content_hash,
    last_updated,
)
from ehrfm.progress import track

_RESOURCE_KEY = [SRC_FILE, SRC_ENTRY]


_IDENTITY = [schema.RESOURCE_TYPE, schema.RESOURCE_ID]
_REMOVED_SCHEMA = {SRC_FILE: pl.Int32(), SRC_ENTRY: pl.Int64(), "_reason": pl.String(), "_detail": pl.String()}


@dataclass
class FinalizeResult:
    written: Counter[str] = field(default_factory=Counter)  # resources with events, by type
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    events: int = 0
    removed_events: int = 0  # events of resources rejected or quarantined here
    added_events: int = 0  # events added here: a medication mix becomes one event per ingredient
    shards: list[str] = field(default_factory=list)
    codes: set[str] = field(default_factory=set)
    patients: pl.DataFrame = field(default_factory=pl.DataFrame)  # patient_id, subject_id, split
    descriptions: dict[str, str] = field(default_factory=dict)  # Medication codes' displays


def _spill(tmp: Path, kind: str, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    parts = sorted((tmp / kind).glob("*.parquet"))
    return pl.read_parquet(parts) if parts else pl.DataFrame(schema=columns)


def standing_patients(copies: pl.DataFrame, removed: pl.DataFrame) -> pl.DataFrame:
    """Every Patient (of the spilled ``copies``) with a copy that stands: not deleted, not a
    losing duplicate. Raises if two ids ever hash to one subject_id.
    """
    patients = copies.join(removed, on=_RESOURCE_KEY, how="anti") if removed.height else copies
    patients = (
        patients.sort(_RESOURCE_KEY)
        .unique("patient_id", keep="first", maintain_order=True)
        .select("patient_id", schema.SUBJECT_ID, IDENTIFIERS, *_RESOURCE_KEY)
    )
    clash = patients.group_by(schema.SUBJECT_ID).agg(pl.col("patient_id")).filter(
        pl.col("patient_id").list.len() > 1
    )
    if clash.height:
        raise RuntimeError(f"subject_id hash collision between Patient ids {clash.row(0)[1]}; "
                           "please report this")
    return patients


class SubjectIdentifierError(ValueError):
    """``subject_id_system`` is set, and a Patient lacks that identifier or its value is not an integer."""


def subject_ids_from_identifier(patients: pl.DataFrame, system: str, files: list[str]) -> pl.DataFrame:
    """``patients`` with ``_output_subject_id``: the integer value of their ``system`` identifier.

    Raises :class:`SubjectIdentifierError` naming the file, the Patient, the system and the value
    when a Patient lacks it, holds a non-integer, or shares its value with another Patient.
    """
    values = []
    for patient_id, identifiers, src_file, src_entry in patients.select(
            "patient_id", IDENTIFIERS, *_RESOURCE_KEY).iter_rows():
        where = f"{files[src_file]} ({location_text(src_entry)}): Patient/{patient_id}"
        found = [item["value"] for item in identifiers or () if item["system"] == system]
        if not found:
            seen = sorted({str(item["system"]) for item in identifiers or ()})
            raise SubjectIdentifierError(f"{where} has no identifier with system {system!r} "
                                         f"(subject_id_system); its identifier systems: {seen}")
        text = found[0].strip()
        if not (text.isascii() and text.lstrip("-").isdigit()) or not -(1 << 63) <= int(text) < (1 << 63):
            raise SubjectIdentifierError(f"{where}: identifier {system}|{found[0]!r} is not an integer, "
                                         "so it cannot be the subject_id (subject_id_system)")
        values.append(int(text))
    frame = patients.with_columns(pl.Series("_output_subject_id", values, dtype=pl.Int64()))
    clash = frame.group_by("_output_subject_id").agg(pl.col("patient_id")).filter(pl.col("patient_id").list.len() > 1)
    if clash.height:
        value, ids = clash.row(0)
        raise SubjectIdentifierError(f"Patients {sorted(ids)} share the identifier {system}|{value}, "
                                     "so it cannot be the subject_id (subject_id_system)")
    return frame


def read_medications(tmp: Path, removed: pl.DataFrame) -> pl.DataFrame:
    """Every Medication copy that stands, one row per ingredient of a mix, in input order."""
    medications = _spill(tmp, "medications", MEDICATION_SCHEMA)
    if removed.height:
        medications = medications.join(removed, on=_RESOURCE_KEY, how="anti")
    return medications.sort([*_RESOURCE_KEY, "ingredient"])


_MIX_DEPTH = 8  # a mix of mixes is followed this deep; deeper (or a cycle) is a problem, not a hang


def _medication_codes(medications: pl.DataFrame) -> pl.DataFrame:
    """id -> code rows for resolving references: one row per Medication, or per ingredient of a mix.

    ``_med_code`` is null when the Medication cannot give a code; ``_med_problem`` then says why
    for a mix (an ingredient that is missing or has no code). The first copy of an id read wins.
    """
    first = medications.unique("medication_id", keep="first", maintain_order=True).select(
        "medication_id", *_RESOURCE_KEY)
    rows = medications.join(first, on=["medication_id", *_RESOURCE_KEY], how="semi")
    parts: dict[str, list[tuple[str | None, str | None]]] = {}
    for med_id, code, ref in rows.select("medication_id", "code", "ingredient_ref").iter_rows():
        parts.setdefault(med_id, []).append((code, ref))

    def codes_of(med_id: str, depth: int) -> tuple[list[str], str | None]:
        """(codes, problem) of one Medication, following ingredient references."""
        found: list[str] = []
        for code, ref in parts[med_id]:
            if code is not None:
                found.append(code)
            elif ref is None:
                return [], None  # no code and no ingredients: "has no code"
            elif ref not in parts:
                return [], f"its ingredient Medication/{ref} is not in the input"
            elif depth >= _MIX_DEPTH:
                return [], f"its ingredients nest deeper than {_MIX_DEPTH} Medications (a cycle?)"
            else:
                inner, problem = codes_of(ref, depth + 1)
                if not inner:
                    return [], problem or f"its ingredient Medication/{ref} has no code"
                found.extend(inner)
        return found, None

    out_rows = []
    for med_id in parts:
        codes, problem = codes_of(med_id, 0)
        if codes:
            out_rows.extend((med_id, code, None, position) for position, code in enumerate(codes))
        else:
            out_rows.append((med_id, None, problem, 0))
    return pl.DataFrame(out_rows, orient="row", schema={
        "medication_id": pl.String(), "_med_code": pl.String(), "_med_problem": pl.String(),
        "_ingredient": pl.Int32()}).with_columns(pl.lit(True).alias("_med_known"))


def _medication_descriptions(medications: pl.DataFrame) -> dict[str, str]:
    """code -> description, the first description read for a code winning."""
    frame = (medications.drop_nulls(["code", "description"])
             .unique("code", keep="first", maintain_order=True))
    return dict(zip(frame["code"].to_list(), frame["description"].to_list()))


def _patient_notes(tmp: Path, patients: pl.DataFrame, removed_patients: pl.DataFrame) -> pl.DataFrame:
    """Why a Patient id that events refer to is not among the patients: rejected, or deleted."""
    parts = sorted((tmp / "rejects").glob("*.parquet"))
    rejects = (pl.scan_parquet(parts) if parts else pl.LazyFrame(schema=REJECT_SCHEMA)).filter(
        (pl.col("resource_type") == "Patient") & pl.col("resource_id").is_not_null()
    ).collect()
    # The first reject of an id in input order (a stable sort by file keeps each file's read order),
    # whichever way the files were spread over workers or jobs.
    rejected = rejects.sort("source_file", maintain_order=True).unique(
        "resource_id", keep="first", maintain_order=True).select(
        pl.col("resource_id").alias(PATIENT),
        pl.format("which was rejected ({}: {})", pl.col("reason"), pl.col("detail")).alias("_note"),
    )
    gone = removed_patients.select(
        pl.col(schema.RESOURCE_ID).alias(PATIENT), pl.format("which was removed ({})", pl.col("_reason")).alias("_note")
    )
    return (pl.concat([rejected, gone]).unique(PATIENT, keep="first", maintain_order=True)
            .join(patients.select(pl.col("patient_id").alias(PATIENT)), on=PATIENT, how="anti"))


def _copy_facts(copies: pl.DataFrame, files: list[str], config: IngestConfig) -> pl.DataFrame:
    """``last_updated`` and ``content_hash`` of each copy, read again from its file."""
    wanted: dict[int, set[int]] = {}
    for file_index, entry in copies.select(SRC_FILE, SRC_ENTRY).iter_rows():
        wanted.setdefault(file_index, set()).add(entry)
    rows = []
    for file_index, positions in sorted(wanted.items()):
        for record in read_records(Path(files[file_index]), replace_bad_utf8=config.replace_bad_utf8,
                                   max_line_bytes=config.max_line_bytes,
                                   max_document_bytes=config.max_document_bytes):
            if record.resource is not None and record.position in positions:
                rows.append((file_index, record.position, last_updated(record.resource),
                             content_hash(record.resource)))
    facts = pl.DataFrame(rows, orient="row", schema={SRC_FILE: pl.Int32(), SRC_ENTRY: pl.Int64(),
                                                     "last_updated": pl.Int64(), "content_hash": pl.Int64()})
    return copies.join(facts, on=_RESOURCE_KEY, how="left")


def resolve_copies(tmp: Path, files: list[str], config: IngestConfig, partitions: int = 1) -> pl.DataFrame:
    """Resource copies that do not stand, with why: deleted, or a losing duplicate.

    * A transaction DELETE removes every copy of its resource read before it (file order, then
      position); a copy read after it (re-created) stands.
    * Of the copies left of one (resourceType, id), the one with the latest ``meta.lastUpdated``
      stands; copies without one rank below copies with one; ties go to the copy read first.
      Losers are a "duplicate resource" when their content (without ``meta``) equals the
      winner's, else a "conflicting duplicate"; both name the copy kept.

    Only resources that are deleted or read more than once are held in memory, one hash range
    of identities (of ``partitions``) at a time; the files holding copies that compete are read
    again for their ``meta.lastUpdated`` and content (an input read twice whole costs twice).
    """
    event_parts = sorted((tmp / "events").glob("bucket=*/*.parquet"))
    resource_parts = sorted((tmp / "resources").glob("*.parquet"))
    deletes = _spill(tmp, "deletes", LOCATED_SCHEMA)
    if not event_parts and not resource_parts:
        return pl.DataFrame(schema=_REMOVED_SCHEMA)
    columns = [*_IDENTITY, *_RESOURCE_KEY]
    sources = [pl.scan_parquet(parts).select(columns) for parts in (event_parts, resource_parts) if parts]
    last_delete = (deletes.sort(_RESOURCE_KEY).group_by(_IDENTITY).agg(
        pl.col(SRC_FILE).last().alias("_del_file"), pl.col(SRC_ENTRY).last().alias("_del_entry")))
    found: list[pl.DataFrame] = []
    for partition in range(partitions):
        keys = (pl.concat(sources)
                .filter(pl.col(schema.RESOURCE_ID).is_not_null())
                .filter(pl.concat_str(_IDENTITY, separator="/").hash(seed=7) % partitions == partition)
                .unique())
        repeated = (keys.group_by(_IDENTITY).agg(pl.len().alias("_copies"))
                    .filter(pl.col("_copies") > 1).select(_IDENTITY))
        if last_delete.height:
            repeated = pl.concat([repeated, last_delete.lazy().select(_IDENTITY)]).unique()
        found.append(keys.join(repeated, on=_IDENTITY, how="semi").collect(engine="streaming"))
    copies = pl.concat(found)
    if copies.height == 0:
        return pl.DataFrame(schema=_REMOVED_SCHEMA)
    removed: list[pl.DataFrame] = []
    copies = copies.join(last_delete, on=_IDENTITY, how="left")
    is_deleted = pl.col("_del_file").is_not_null() & (
        (pl.col(SRC_FILE) < pl.col("_del_file"))
        | ((pl.col(SRC_FILE) == pl.col("_del_file")) & (pl.col(SRC_ENTRY) < pl.col("_del_entry"))))
    deleted = copies.filter(is_deleted)
    if deleted.height:
        where = [f"{files[f]} ({location_text(e)})" for f, e in deleted.select("_del_file", "_del_entry").iter_rows()]
        removed.append(deleted.select(
            *_RESOURCE_KEY, pl.lit("deleted").alias("_reason"),
            pl.format("{}/{} is deleted by a transaction DELETE read later, in {}", *[pl.col(c) for c in _IDENTITY],
                      pl.Series(where, dtype=pl.String())).alias("_detail")))
    standing = copies.filter(~is_deleted)
    standing = standing.join(standing.group_by(_IDENTITY).len("_standing"), on=_IDENTITY).filter(
        pl.col("_standing") > 1)
    standing = _copy_facts(standing, files, config).sort(
        [pl.col("last_updated"), pl.col(SRC_FILE), pl.col(SRC_ENTRY)],
        descending=[True, False, False], nulls_last=True,
    ).with_columns(
        pl.int_range(pl.len()).over(_IDENTITY).alias("_rank"),
        pl.col(SRC_FILE).first().over(_IDENTITY).alias("_win_file"),
        pl.col(SRC_ENTRY).first().over(_IDENTITY).alias("_win_entry"),
        pl.col("content_hash").first().over(_IDENTITY).alias("_win_hash"),
        pl.col("last_updated").first().over(_IDENTITY).alias("_win_updated"),
    ).filter(pl.col("_rank") > 0)
    if standing.height:
        details = []
        reasons = []
        for kind, rid, win_file, win_entry, same, updated, win_updated in standing.select(
                *_IDENTITY, "_win_file", "_win_entry", pl.col("content_hash") == pl.col("_win_hash"),
                "last_updated", "_win_updated").iter_rows():
            kept = f"{files[win_file]} ({location_text(win_entry)})"
            if same:
                reasons.append("duplicate resource")
                details.append(f"{kind}/{rid} was also read from {kept}, with the same content; that copy is kept")
            else:
                rule = ("its meta.lastUpdated is later" if win_updated is not None and (updated is None or updated < win_updated)
                        else "it was read first (meta.lastUpdated does not decide)")
                reasons.append("conflicting duplicate")
                details.append(f"{kind}/{rid} differs from the copy in {kept}, which is kept because {rule}")
        removed.append(standing.select(*_RESOURCE_KEY).with_columns(
            pl.Series("_reason", reasons, dtype=pl.String()), pl.Series("_detail", details, dtype=pl.String())))
    if not removed:
        return pl.DataFrame(schema=_REMOVED_SCHEMA)
    return pl.concat(removed).select(list(_REMOVED_SCHEMA)).cast(_REMOVED_SCHEMA)  # type: ignore[arg-type]


def plan_shards(tmp: Path, config: IngestConfig) -> list[list[Path]]:
    """Spill files of each output shard; bucket b goes to shard b % num_shards."""
    bucket_files = {
        b: sorted((tmp / "events" / f"bucket={b}").glob("*.parquet")) for b in range(SPILL_BUCKETS)
    }
    if config.num_shards == "auto":
        files = [f for fs in bucket_files.values() for f in fs]
        total = pl.scan_parquet(files).select(pl.len()).collect().item() if files else 0
        num_shards = max(1, min(SPILL_BUCKETS, math.ceil(total / config.events_per_shard)))
    else:
        num_shards = int(config.num_shards)
    shards: list[list[Path]] = [[] for _ in range(num_shards)]
    for bucket, files in bucket_files.items():
        shards[bucket % num_shards].extend(files)
    return shards


def with_splits(patients: pl.DataFrame, ratios: dict[str, float]) -> pl.DataFrame:
    """``patients`` plus each one's ``split``, drawn from its Patient id (the same id, the same split
    in every run): the one assignment both the shard folders and ``subject_splits.parquet`` use."""
    splits = [split_for(pid, ratios) for pid in patients["patient_id"]]
    return patients.with_columns(pl.Series(schema.SPLIT, splits, dtype=pl.String()))


def number_shards(data_dir: Path) -> list[str]:
    """Rename each split folder's shards to ``0.parquet, 1.parquet, ...`` in patient-shard order.

    Patient shard k is written as ``<split>/<k>.parquet``; a split that holds no subject of a
    shard gets no file, so the numbers have gaps that MEDS readers do not expect. Names only
    ever go down, in increasing order, so a rename never overwrites a file not yet renamed.
    Returns the final names relative to ``data_dir`` (``train/0.parquet``, ...).
    """
    names: list[str] = []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        for number, path in enumerate(sorted(folder.glob("*.parquet"), key=lambda p: int(p.stem))):
            target = folder / f"{number}.parquet"
            if path != target:
                path.rename(target)
            names.append(f"{folder.name}/{target.name}")
    return names


def finalize(tmp: Path, output: Path, files: list[str], config: IngestConfig,
             map_fn: Callable[..., Iterable[ShardResult]] = map) -> tuple[FinalizeResult, pl.DataFrame]:
    """Write ``data/<split>/<n>.parquet`` for every non-empty shard and split; return counts and
    finalize rejects.

    The whole-input tables (patients, medications, duplicates) are small and written once to
    ``tmp``; each shard is then finished by :func:`finalize_shard`, through ``map_fn`` (the
    ingest's process pool), so shards run in parallel and no process holds more than one.
    """
    shards = plan_shards(tmp, config)
    shared = tmp / "finalize"
    shared.mkdir(parents=True, exist_ok=True)
    removed = resolve_copies(tmp, files, config, partitions=len(shards))
    patient_copies = _spill(tmp, "patients", PATIENT_SCHEMA)
    patients = standing_patients(patient_copies, removed)
    if config.subject_id_system is not None:
        patients = subject_ids_from_identifier(patients, config.subject_id_system, files)
    patients = with_splits(patients, config.split_ratios)
    medications = read_medications(tmp, removed)
    removed_patients = patient_copies.join(removed, on=_RESOURCE_KEY, how="inner").select(
        pl.col("patient_id").alias(schema.RESOURCE_ID), "_reason")
    patients.drop(IDENTIFIERS).write_parquet(shared / "patients.parquet")
    _patient_notes(tmp, patients, removed_patients).write_parquet(shared / "patient_notes.parquet")
    _medication_codes(medications).write_parquet(shared / "medications.parquet")
    removed.write_parquet(shared / "removed.parquet")
    data_dir = output / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir = output / "quarantine" if config.before_birth == "quarantine" else None
    jobs = [(index, [str(f) for f in shard_files]) for index, shard_files in enumerate(shards) if shard_files]
    if "_output_subject_id" in patients.columns:  # what metadata shows: the subject_id written
        patients = patients.with_columns(pl.col("_output_subject_id").alias(schema.SUBJECT_ID)).drop(
            "_output_subject_id")
    result = FinalizeResult(patients=patients.drop(_RESOURCE_KEY),
                            descriptions=_medication_descriptions(medications))
    rejects: list[pl.DataFrame] = []
    for shard in track(map_fn(finalize_shard, [j[0] for j in jobs], [j[1] for j in jobs], [str(tmp)] * len(jobs),
                              [str(data_dir)] * len(jobs), [quarantine_dir and str(quarantine_dir)] * len(jobs)),
                       desc="ingest: shards", unit="shard", total=len(jobs)):
        result.written.update(shard.written)
        result.codes.update(shard.codes)
        result.events += shard.events
        result.removed_events += shard.removed_events
        result.added_events += shard.added_events
        rejects.extend(shard.rejects)
    file_names = pl.DataFrame({SRC_FILE: list(range(len(files))), "source_file": files},
                              schema={SRC_FILE: pl.Int32(), "source_file": pl.String()})
    reject_frame = _reject_rows(rejects, file_names)
    for row in reject_frame.group_by("resource_type", "reason").len().iter_rows():
        result.rejected[(row[0], row[1])] += row[2]
    result.shards = number_shards(data_dir)
    return result, reject_frame


@dataclass
class ShardResult:
    written: Counter[str]
    codes: set[str]
    events: int
    files: list[str]  # relative to the data folder: <split>/<shard index>.parquet
    rejects: list[pl.DataFrame]
    removed_events: int = 0
    added_events: int = 0


class IngestIntegrityError(RuntimeError):
    """The events about to be written do not match what was read: never written silently."""


def finalize_shard(shard_index: int, shard_files: list[str], tmp: str, data_dir: str,
                   quarantine_dir: str | None = None) -> ShardResult:
    """Resolve, sort and write one output shard from its spill files, one file per split.

    The split comes from the finalize folder's patients table (see :func:`with_splits`);
    every event left has a patient, so every event has a split.
    """
    shared = Path(tmp) / "finalize"
    events = pl.read_parquet(shard_files)
    spilled = events.height
    twice = events.select(_RESOURCE_KEY + [SEQ]).is_duplicated().sum()
    if twice:
        raise IngestIntegrityError(
            f"shard {shard_index}: {twice} events appear more than once in the spill (two processes "
            "wrote into one run's scratch folder?); nothing was written, run the ingest again")
    resolved = _resolve(events, pl.read_parquet(shared / "patients.parquet"),
                        pl.read_parquet(shared / "medications.parquet"),
                        pl.read_parquet(shared / "removed.parquet"),
                        pl.read_parquet(shared / "patient_notes.parquet"))
    events, rejects = resolved.events, resolved.rejects
    if quarantine_dir is not None and resolved.quarantined is not None and resolved.quarantined.height:
        Path(quarantine_dir).mkdir(parents=True, exist_ok=True)
        # sorted as the data is, so the file does not depend on the order the spill was read in
        held = resolved.quarantined.sort([schema.SUBJECT_ID, schema.TIME, SRC_FILE, SRC_ENTRY, SEQ], nulls_last=False)
        table = schema.to_meds_table(held.with_columns(pl.col(schema.TIME).cast(pl.Datetime("us"))))
        pq.write_table(table, Path(quarantine_dir) / f"{shard_index}.parquet")
    removed_events = spilled + resolved.added - events.height
    if events.height == 0:
        return ShardResult(Counter(), set(), 0, [], rejects, removed_events, resolved.added)
    events = events.sort([schema.SUBJECT_ID, schema.TIME, SRC_FILE, SRC_ENTRY, SEQ], nulls_last=False)
    written = events.select(_RESOURCE_KEY + [schema.RESOURCE_TYPE]).unique()
    counts = Counter(dict(written[schema.RESOURCE_TYPE].value_counts().iter_rows()))
    codes = set(events[schema.CODE].unique().to_list())
    splits = pl.read_parquet(shared / "patients.parquet")
    if "_output_subject_id" in splits.columns:  # _resolve already wrote the identifier's subject_id
        splits = splits.with_columns(pl.col("_output_subject_id").alias(schema.SUBJECT_ID))
    splits = splits.select(schema.SUBJECT_ID, schema.SPLIT)
    events = events.join(splits, on=schema.SUBJECT_ID, how="left", maintain_order="left")
    if events[schema.SPLIT].null_count():
        raise IngestIntegrityError(f"shard {shard_index}: {events[schema.SPLIT].null_count()} events belong to no "
                                   "split (their subject is not among the patients); nothing was written")
    written_files, rows = [], 0
    for split in sorted(events[schema.SPLIT].unique().to_list()):
        # a filter keeps the sorted order, so each split's file is sorted too
        part = events.filter(pl.col(schema.SPLIT) == split)
        table = schema.to_meds_table(part.with_columns(pl.col(schema.TIME).cast(pl.Datetime("us"))))
        folder = Path(data_dir) / split
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"{shard_index}.parquet")
        written_files.append(f"{split}/{shard_index}.parquet")
        rows += table.num_rows
    return ShardResult(counts, codes, rows, written_files, rejects, removed_events, resolved.added)


@dataclass
class _Resolved:
    events: pl.DataFrame
    rejects: list[pl.DataFrame]
    quarantined: pl.DataFrame | None = None
    added: int = 0  # events added by resolving medication mixes


def _resolve(events: pl.DataFrame, patients: pl.DataFrame, medications: pl.DataFrame,
             removed: pl.DataFrame, patient_notes: pl.DataFrame) -> _Resolved:
    """Apply the whole-input checks in a fixed order; each rejected resource gets one reason."""
    rejects: list[pl.DataFrame] = []
    quarantined: list[pl.DataFrame] = []

    def reject(keys: pl.DataFrame, reason: str | pl.Expr, detail: pl.Expr, *, keep: bool = False) -> None:
        """Reject the resources of ``keys`` (events of ``events``, whose columns ``detail`` may use)."""
        nonlocal events
        if keys.height == 0:
            return
        rows = (
            keys.group_by(_RESOURCE_KEY, maintain_order=True)
            .agg(pl.all().first())
            .select(*_RESOURCE_KEY, schema.RESOURCE_TYPE, schema.RESOURCE_ID,
                    (pl.lit(reason) if isinstance(reason, str) else reason).alias("reason"),
                    detail.alias("detail"))
        )
        rejects.append(rows)
        if keep:
            quarantined.append(events.join(rows.select(_RESOURCE_KEY), on=_RESOURCE_KEY, how="semi"))
        events = events.join(rows.select(_RESOURCE_KEY), on=_RESOURCE_KEY, how="anti")

    # 1. Copies deleted by a transaction DELETE, and losing duplicates (see resolve_copies).
    if removed.height:
        gone = events.join(removed, on=_RESOURCE_KEY, how="inner")
        reject(gone, pl.col("_reason"), pl.col("_detail"))

    # 2. Subjects whose Patient resource never came (or was rejected, or deleted).
    orphans = events.join(patients.select(schema.SUBJECT_ID), on=schema.SUBJECT_ID, how="anti")
    if orphans.height:
        orphans = orphans.join(patient_notes, on=PATIENT, how="left")
        reject(orphans, "unknown patient",
               pl.format("refers to Patient/{}, {}", pl.col(PATIENT),
                         pl.col("_note").fill_null("which is not in the input")))

    # 3. Medications referenced by id, resolved against every Medication resource read.
    added = 0
    pending = events.filter(pl.col(MEDICATION_REF).is_not_null())
    if pending.height:
        before = events.height
        events = events.join(medications, left_on=MEDICATION_REF, right_on="medication_id", how="left")
        added = events.height - before
        unresolved = pl.col(MEDICATION_REF).is_not_null() & pl.col("_med_code").is_null()
        reject(events.filter(unresolved & pl.col("_med_known").is_null()), "unresolved medication",
               pl.format("medicationReference Medication/{} is not in the input", pl.col(MEDICATION_REF)))
        reject(events.filter(unresolved & pl.col("_med_known").is_not_null()), "no code",
               pl.format("medicationReference Medication/{} is in the input but {}", pl.col(MEDICATION_REF),
                         pl.col("_med_problem").fill_null("has no code")))
        # A mix joined one row per ingredient: number the resource's events again, in order.
        events = events.sort([*_RESOURCE_KEY, SEQ, "_ingredient"], nulls_last=False).with_columns(
            pl.coalesce(schema.CODE, "_med_code").alias(schema.CODE),
            (pl.int_range(pl.len()).over(_RESOURCE_KEY)).cast(pl.Int32).alias(SEQ),
        ).drop("_med_code", "_med_known", "_med_problem", "_ingredient")

    # 4. Times taken from the start of the resource's encounter.
    if events[NEEDS_ENCOUNTER_TIME].any():
        starts = (
            events.filter(pl.col(schema.CODE).str.starts_with(schema.VISIT_START_PREFIX + "/"))
            .group_by(schema.SUBJECT_ID, schema.ENCOUNTER_ID)
            .agg(pl.col(schema.TIME).min().alias("_encounter_start"))
        )
        events = events.join(starts, on=[schema.SUBJECT_ID, schema.ENCOUNTER_ID], how="left")
        events = events.with_columns(
            pl.when(pl.col(NEEDS_ENCOUNTER_TIME)).then(pl.col("_encounter_start"))
            .otherwise(pl.col(schema.TIME)).alias(schema.TIME)
        )
        missing = events.filter(pl.col(NEEDS_ENCOUNTER_TIME) & pl.col(schema.TIME).is_null())
        reject(missing, "missing time",
               pl.format("no time of its own, and Encounter/{} of this patient was not found",
                         pl.col(schema.ENCOUNTER_ID)))
        events = events.drop("_encounter_start")

    # 5. Events before the patient's birth: a negative age is an error in the source, not a fact.
    births = (events.filter(pl.col(schema.CODE) == schema.BIRTH_CODE)
              .group_by(schema.SUBJECT_ID).agg(pl.col(schema.TIME).min().alias("_birth")))
    if births.height:
        timed = events.join(births, on=schema.SUBJECT_ID, how="inner").filter(
            pl.col(schema.TIME) < pl.col("_birth") - BIRTH_SLACK_US)
        as_date = [pl.col(c).cast(pl.Datetime("us")).dt.strftime("%Y-%m-%d %H:%M") for c in (schema.TIME, "_birth")]
        reject(timed, "before birth",
               pl.format("an event at {} is before the patient's birth ({})", *as_date), keep=True)

    # 6. subject_id from a Patient identifier (subject_id_system): every check above used the hash.
    held = pl.concat(quarantined) if quarantined else None
    if "_output_subject_id" in patients.columns:
        mapping = patients.select(schema.SUBJECT_ID, "_output_subject_id")

        def remap(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.join(mapping, on=schema.SUBJECT_ID, how="left").with_columns(
                pl.col("_output_subject_id").alias(schema.SUBJECT_ID)).drop("_output_subject_id")
        events = remap(events)
        held = remap(held) if held is not None else None
    return _Resolved(events, rejects, held, added)


def _reject_rows(rejects: list[pl.DataFrame], file_names: pl.DataFrame) -> pl.DataFrame:
    if not rejects:
        return pl.DataFrame(schema=REJECT_SCHEMA)
    frame = pl.concat(rejects, how="vertical_relaxed").join(file_names, on=SRC_FILE, how="left")
    locations = [location_text(position) for position in frame[SRC_ENTRY]]
    return frame.with_columns(
        pl.Series("location", locations, dtype=pl.String()),
        pl.lit(None, dtype=pl.String()).alias("excerpt"),
    ).select(list(REJECT_SCHEMA))
