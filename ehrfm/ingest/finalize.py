"""The second half of ingest: per shard, resolve what needed the whole input, then write MEDS.

Workers could not know everything while reading files in parallel: whether a subject's Patient
was ever read, which copy of a duplicated resource came first, the code of a Medication kept in
another file, the start of the encounter a timeless Condition belongs to. Every subject's events
sit in one spill bucket, so each of these is a Polars join inside one shard. Resources that fail
are rejected whole, with the file and line they came from.
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
from ehrfm.ingest.sources import location_text
from ehrfm.ingest.worker import REJECT_SCHEMA

_RESOURCE_KEY = [SRC_FILE, SRC_ENTRY]


@dataclass
class FinalizeResult:
    written: Counter[str] = field(default_factory=Counter)  # resources with events, by type
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    events: int = 0
    shards: list[str] = field(default_factory=list)
    codes: set[str] = field(default_factory=set)
    patients: pl.DataFrame = field(default_factory=pl.DataFrame)  # patient_id, subject_id
    descriptions: dict[str, str] = field(default_factory=dict)  # Medication codes' displays


def read_patients(tmp: Path) -> pl.DataFrame:
    """Every Patient read, first copy wins; raises if two ids ever hash to one subject_id."""
    parts = sorted((tmp / "patients").glob("*.parquet"))
    if not parts:
        return pl.DataFrame(schema={"patient_id": pl.String(), schema.SUBJECT_ID: pl.Int64()})
    patients = (
        pl.read_parquet(parts)
        .sort(_RESOURCE_KEY)
        .unique("patient_id", keep="first", maintain_order=True)
        .select("patient_id", schema.SUBJECT_ID)
    )
    clash = patients.group_by(schema.SUBJECT_ID).agg(pl.col("patient_id")).filter(
        pl.col("patient_id").list.len() > 1
    )
    if clash.height:
        raise RuntimeError(f"subject_id hash collision between Patient ids {clash.row(0)[1]}; "
                           "please report this")
    return patients


def read_medications(tmp: Path) -> pl.DataFrame:
    """Every Medication read (id, code, description), in input order; one read of the spill."""
    parts = sorted((tmp / "medications").glob("*.parquet"))
    if not parts:
        return pl.DataFrame(
            schema={"medication_id": pl.String(), "code": pl.String(), "description": pl.String()}
        )
    return pl.read_parquet(parts).sort(_RESOURCE_KEY).select("medication_id", "code", "description")


def _medication_codes(medications: pl.DataFrame) -> pl.DataFrame:
    """id -> code for resolving references; the first Medication read with an id wins."""
    return (
        medications.unique("medication_id", keep="first", maintain_order=True)
        .select("medication_id", pl.col("code").alias("_med_code"))
    )


def _medication_descriptions(medications: pl.DataFrame) -> dict[str, str]:
    """code -> description, the first description read for a code winning."""
    frame = medications.drop_nulls("description").unique("code", keep="first", maintain_order=True)
    return dict(zip(frame["code"].to_list(), frame["description"].to_list()))


def find_duplicates(tmp: Path, files: list[str], partitions: int = 1) -> pl.DataFrame:
    """Later copies of any (resourceType, id) read more than once, across all shards.

    Only the identity columns are scanned, and in ``partitions`` passes over disjoint hash
    ranges of the identity, so memory follows one partition's resources rather than the whole
    input. The copy read first (file order, then position in the file) wins; each later copy
    gets a detail naming where the first was.
    """
    parts = sorted((tmp / "events").glob("bucket=*/*.parquet"))
    empty = pl.DataFrame(schema={SRC_FILE: pl.Int32(), SRC_ENTRY: pl.Int64(), "_duplicate_of": pl.String()})
    if not parts:
        return empty
    identity = [schema.RESOURCE_TYPE, schema.RESOURCE_ID]
    found: list[pl.DataFrame] = []
    for partition in range(partitions):
        keys = (
            pl.scan_parquet(parts)
            .select(*identity, *_RESOURCE_KEY)
            .filter(pl.col(schema.RESOURCE_ID).is_not_null())
            .filter(pl.concat_str(identity, separator="/").hash(seed=7) % partitions == partition)
            .unique()
        )
        repeated = keys.group_by(identity).agg(pl.len().alias("_copies")).filter(pl.col("_copies") > 1)
        found.append(
            keys.join(repeated.select(identity), on=identity, how="semi").collect(engine="streaming")
        )
    copies = pl.concat(found)
    if copies.height == 0:
        return empty
    copies = copies.sort(_RESOURCE_KEY).with_columns(
        pl.col(SRC_FILE).first().over(identity).alias("_first_file"),
        pl.col(SRC_ENTRY).first().over(identity).alias("_first_entry"),
        pl.int_range(pl.len()).over(identity).alias("_copy"),
    ).filter(pl.col("_copy") > 0)
    details = [
        f"{kind}/{rid} was already read from {files[f]} ({location_text(files[f], e)})"
        for kind, rid, f, e in copies.select(*identity, "_first_file", "_first_entry").iter_rows()
    ]
    return copies.select(*_RESOURCE_KEY).with_columns(pl.Series("_duplicate_of", details, dtype=pl.String()))


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


def finalize(tmp: Path, output: Path, files: list[str], config: IngestConfig,
             map_fn: Callable[..., Iterable[ShardResult]] = map) -> tuple[FinalizeResult, pl.DataFrame]:
    """Write ``data/<k>.parquet`` for every non-empty shard; return counts and finalize rejects.

    The whole-input tables (patients, medications, duplicates) are small and written once to
    ``tmp``; each shard is then finished by :func:`finalize_shard`, through ``map_fn`` (the
    ingest's process pool), so shards run in parallel and no process holds more than one.
    """
    shards = plan_shards(tmp, config)
    shared = tmp / "finalize"
    shared.mkdir(parents=True, exist_ok=True)
    patients = read_patients(tmp)
    medications = read_medications(tmp)
    patients.write_parquet(shared / "patients.parquet")
    _medication_codes(medications).write_parquet(shared / "medications.parquet")
    find_duplicates(tmp, files, partitions=len(shards)).write_parquet(shared / "duplicates.parquet")
    data_dir = output / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(index, [str(f) for f in shard_files]) for index, shard_files in enumerate(shards) if shard_files]
    result = FinalizeResult(patients=patients, descriptions=_medication_descriptions(medications))
    rejects: list[pl.DataFrame] = []
    for shard in map_fn(finalize_shard, [j[0] for j in jobs], [j[1] for j in jobs], [str(tmp)] * len(jobs),
                        [str(data_dir)] * len(jobs)):
        result.written.update(shard.written)
        result.codes.update(shard.codes)
        result.events += shard.events
        if shard.shard:
            result.shards.append(shard.shard)
        rejects.extend(shard.rejects)
    file_names = pl.DataFrame({SRC_FILE: list(range(len(files))), "source_file": files},
                              schema={SRC_FILE: pl.Int32(), "source_file": pl.String()})
    reject_frame = _reject_rows(rejects, file_names)
    for row in reject_frame.group_by("resource_type", "reason").len().iter_rows():
        result.rejected[(row[0], row[1])] += row[2]
    result.shards.sort(key=lambda name: int(name.split(".")[0]))
    return result, reject_frame


@dataclass
class ShardResult:
    written: Counter[str]
    codes: set[str]
    events: int
    shard: str | None
    rejects: list[pl.DataFrame]


def finalize_shard(shard_index: int, shard_files: list[str], tmp: str, data_dir: str) -> ShardResult:
    """Resolve, sort and write one output shard from its spill files."""
    shared = Path(tmp) / "finalize"
    events = pl.read_parquet(shard_files)
    events, rejects = _resolve(events, pl.read_parquet(shared / "patients.parquet"),
                               pl.read_parquet(shared / "medications.parquet"),
                               pl.read_parquet(shared / "duplicates.parquet"))
    if events.height == 0:
        return ShardResult(Counter(), set(), 0, None, rejects)
    events = events.sort([schema.SUBJECT_ID, schema.TIME, SRC_FILE, SRC_ENTRY, SEQ], nulls_last=False)
    written = events.select(_RESOURCE_KEY + [schema.RESOURCE_TYPE]).unique()
    counts = Counter(dict(written[schema.RESOURCE_TYPE].value_counts().iter_rows()))
    codes = set(events[schema.CODE].unique().to_list())
    table = schema.to_meds_table(events.with_columns(pl.col(schema.TIME).cast(pl.Datetime("us"))))
    path = Path(data_dir) / f"{shard_index}.parquet"
    pq.write_table(table, path)
    return ShardResult(counts, codes, table.num_rows, path.name, rejects)


def _resolve(events: pl.DataFrame, patients: pl.DataFrame, medications: pl.DataFrame,
             duplicates: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """Apply the whole-input checks in a fixed order; each rejected resource gets one reason."""
    rejects: list[pl.DataFrame] = []

    def reject(keys: pl.DataFrame, reason: str, detail: pl.Expr) -> None:
        nonlocal events
        if keys.height == 0:
            return
        keys = keys.select(_RESOURCE_KEY).unique()
        rows = (
            events.join(keys, on=_RESOURCE_KEY, how="semi")
            .group_by(_RESOURCE_KEY)
            .agg(pl.all().first())
            .select(*_RESOURCE_KEY, schema.RESOURCE_TYPE, schema.RESOURCE_ID,
                    pl.lit(reason).alias("reason"), detail.alias("detail"))
        )
        rejects.append(rows)
        events = events.join(keys, on=_RESOURCE_KEY, how="anti")

    # 1. Duplicate resources (found across the whole input by find_duplicates).
    copies = events.join(duplicates, on=_RESOURCE_KEY, how="inner")
    if copies.height:
        events = events.join(duplicates, on=_RESOURCE_KEY, how="left")
        reject(copies, "duplicate resource", pl.col("_duplicate_of"))
        events = events.drop("_duplicate_of")

    # 2. Subjects whose Patient resource never came.
    orphans = events.join(patients.select(schema.SUBJECT_ID), on=schema.SUBJECT_ID, how="anti")
    reject(orphans, "unknown patient",
           pl.format("refers to Patient/{}, which is not in the input", pl.col(PATIENT)))

    # 3. Medications referenced by id, resolved against every Medication resource read.
    pending = events.filter(pl.col(MEDICATION_REF).is_not_null())
    if pending.height:
        events = events.join(medications, left_on=MEDICATION_REF, right_on="medication_id", how="left")
        missing = events.filter(pl.col(MEDICATION_REF).is_not_null() & pl.col("_med_code").is_null())
        reject(missing, "unresolved medication",
               pl.format("medicationReference Medication/{} is not in the input", pl.col(MEDICATION_REF)))
        events = events.with_columns(
            pl.coalesce(schema.CODE, "_med_code").alias(schema.CODE)
        ).drop("_med_code")

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
    return events, rejects


def _reject_rows(rejects: list[pl.DataFrame], file_names: pl.DataFrame) -> pl.DataFrame:
    if not rejects:
        return pl.DataFrame(schema=REJECT_SCHEMA)
    frame = pl.concat(rejects, how="vertical_relaxed").join(file_names, on=SRC_FILE, how="left")
    locations = [location_text(path, position)
                 for path, position in zip(frame["source_file"], frame[SRC_ENTRY])]
    return frame.with_columns(
        pl.Series("location", locations, dtype=pl.String()),
        pl.lit(None, dtype=pl.String()).alias("excerpt"),
    ).select(list(REJECT_SCHEMA))
