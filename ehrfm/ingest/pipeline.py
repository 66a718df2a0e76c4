"""``ingest_fhir``: FHIR R4 files in, a MEDS v0.4 dataset directory out."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from meds import CodeMetadataSchema, SubjectSplitSchema

import ehrfm
from ehrfm import schema
from ehrfm.ingest.config import IngestConfig
from ehrfm.ingest.finalize import IngestIntegrityError, finalize
from ehrfm.ingest.partitions import (
    batch_to_json,
    check_job_balance,
    check_job_files,
    file_facts,
    file_shares,
    job_settings,
    link_spills,
)
from ehrfm.ingest.sources import discover_inputs
from ehrfm.ingest.summary import IngestSummary
from ehrfm.ingest.vocabulary import vocabularies_for
from ehrfm.ingest.worker import IDENTIFIERS, REJECT_SCHEMA, BatchResult, ingest_batch
from ehrfm.jobs import (
    assign_by_size,
    clear_job_dir,
    job_dir,
    read_manifests,
    refuse_finished_output,
    remove_job_dirs,
    rerun_hint,
    write_manifest,
)
from ehrfm.meds_dataset import mark_complete
from ehrfm.outputs import ensure_output_dir, exclusive_output, prepare_output, refuse_overlap
from ehrfm.progress import progress_bar

log = logging.getLogger(__name__)

_OUTPUT_PARTS = ("data", "metadata", "rejects", "quarantine")
_TMP = ".ehrfm_tmp"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def ingest_fhir(inputs: Any, output: str | Path, **settings: Any) -> IngestSummary | IngestJobResult:
    """Read FHIR R4 files and write a MEDS v0.4 dataset to ``output``.

    ``inputs`` is a path, a glob, or a list of them (Bundle ``.json[.gz]``, Bulk ``.ndjson[.gz]``,
    directories searched recursively). ``settings`` are the fields of :class:`IngestConfig`.
    Returns the run's counts; every resource read is written, skipped by type, or rejected with
    its reason in ``rejects/rejects.parquet``. With ``job={"index": k, "count": n}`` it runs job k
    of n and returns that job's :class:`IngestJobResult`; ``job={"count": n}`` merges (see
    :mod:`ehrfm.ingest.partitions`).

    >>> import tempfile, ehrfm
    >>> from ehrfm.resources import example_fhir_dir
    >>> out = tempfile.mkdtemp()
    >>> summary = ehrfm.ingest_fhir(example_fhir_dir(), out, workers=1)
    >>> summary.balanced and summary.resources_written > 0
    True
    """
    config = IngestConfig(inputs=inputs, output=str(output), **settings)
    return run_ingest(config)


def run_ingest(config: IngestConfig) -> IngestSummary | IngestJobResult:
    """Run one ingest: a whole one, one job's partial (``job.index``), or the merge of the partials.

    An ordinary run and the merge return the dataset's :class:`IngestSummary`; a job returns its
    :class:`IngestJobResult` (its share of the counts).
    """
    started = time.perf_counter()
    discovery = discover_inputs(config.inputs)
    files = discovery.files
    output = Path(config.output)
    folders = [Path(i) for i in config.inputs if Path(i).is_dir()]
    refuse_overlap(output, [*folders, *files])
    if config.job.mode == "job":
        return _run_job(config, files, started)
    merging = config.job.mode == "merge"
    # The merge checks every partial before it touches the output (overwrite removes the old dataset).
    partials = _read_partials(config, files) if merging else None
    with exclusive_output(output, "ingest"):
        prepare_output(output, _OUTPUT_PARTS, overwrite=config.overwrite)
        # A private scratch folder per run: workers of an earlier run that was killed can never write
        # into this one's. Scratch folders left by runs that died are removed (only ehrfm's, by name;
        # the lock says no live run is using them).
        for stale in output.glob(f"{_TMP}*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP}-", dir=output))
        try:
            workers = min(config.worker_count, len(files))
            with _worker_pool(workers) as pool:
                map_fn = pool.map if pool is not None else map
                if partials is not None:
                    batch = partials.batch
                    link_spills(partials.spills, tmp)
                else:
                    batch = _map_files(list(enumerate(files)), config, tmp, pool, workers)
                file_names = [str(p) for p in files]
                try:
                    final, finalize_rejects = finalize(tmp, output, file_names, config, map_fn)
                except BrokenProcessPool:
                    raise _worker_died("writing the output shards to", [str(output / "data")], workers) from None
            patients = final.patients
            descriptions = {**final.descriptions,
                            **{code: found[2] for code, found in batch.descriptions.items()}}
            if batch.events + final.added_events != final.events + final.removed_events:
                raise IngestIntegrityError(
                    f"the workers emitted {batch.events} events (+{final.added_events} medication-mix "
                    "ingredients) but finalize saw "
                    f"{final.events + final.removed_events} ({final.events} written, {final.removed_events} "
                    "rejected): events were lost or added between the two steps; nothing is marked complete")
            _write_rejects(tmp, output, finalize_rejects)
            seconds = time.perf_counter() - started
            summary = IngestSummary.from_counts(
                files=len(files), read=batch.read, skipped=batch.skipped,
                rejected=batch.rejected + final.rejected, written=final.written, events=final.events,
                subjects=patients.height, shards=len(final.shards),
                # a merge's time is what every job and the merge spent (CPU time of the whole ingest)
                seconds=seconds + (partials.seconds if partials is not None else 0.0),
                input_bytes=sum(p.stat().st_size for p in files),
                ignored=discovery.ignored, parts_skipped=batch.parts_skipped,
                jobs=partials.jobs if partials is not None else None,
            )
            _write_metadata(output, config, summary, patients, final.codes, descriptions, batch.parents)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not summary.balanced:
        raise RuntimeError(f"ingest counts do not add up (a bug in ehrfm): {summary.totals()}")
    if partials is not None:
        remove_job_dirs(output, "ingest", config.job.count)
    return summary


@dataclass
class IngestJobResult:
    """What one ingest job (``job.index=k``) did: its share of the files and of the counts."""

    index: int
    count: int
    folder: str  # the job's partial folder
    files: int
    input_bytes: int
    batch: BatchResult
    seconds: float

    def table(self) -> str:
        """One line a person reads at the end of the job."""
        read = sum(self.batch.read.values())
        return (f"ingest job {self.index} of {self.count}: {self.files} files, {self.input_bytes / 1e6:.1f} MB, "
                f"{read} resources read, {self.batch.events} events spilled in {self.seconds:.1f} s -> "
                f"{self.folder} (merge with job.count={self.count} and no job.index once every job is done)")


def _run_job(config: IngestConfig, files: list[Path], started: float) -> IngestJobResult:
    """Job ``k`` of ``n``: map its share of the files into its own partial folder, nothing else."""
    index, count = config.job.index, config.job.count
    assert index is not None
    output = ensure_output_dir(config.output)
    refuse_finished_output(output, _OUTPUT_PARTS, config.overwrite)
    shares = file_shares(files, count)
    mine = [(i, path) for i, path in enumerate(files) if shares[i] == index]
    folder = job_dir(output, "ingest", index, count)
    with exclusive_output(folder, "ingest-job"):
        clear_job_dir(folder, keep=[".ehrfm-ingest-job.lock"])
        spill = folder / "spill"
        spill.mkdir()
        workers = min(config.worker_count, len(mine))
        with _worker_pool(workers) as pool:
            batch = _map_files(mine, config, spill, pool, workers)
        seconds = time.perf_counter() - started
        write_manifest(folder, {
            "stage": "ingest", "index": index, "count": count, "settings": job_settings(config),
            "files": [[i, *file_facts(path)] for i, path in mine], "counts": batch_to_json(batch),
            "seconds": round(seconds, 3),
        })
    return IngestJobResult(index, count, str(folder), len(mine), sum(p.stat().st_size for _, p in mine),
                           batch, seconds)


@dataclass
class _Partials:
    """The merge's view of the jobs: their spills, their counts merged, their accounting."""

    spills: list[Path]
    batch: BatchResult
    seconds: float
    jobs: list[dict[str, Any]]


def _read_partials(config: IngestConfig, files: list[Path]) -> _Partials:
    """Every job's partial, checked (present, complete, same settings, disjoint, its share, unchanged)."""
    count = config.job.count
    manifests = read_manifests(config.output, "ingest", count, job_settings(config), rerun=rerun_hint("ingest", count))
    check_job_files(manifests, files)
    total = BatchResult()
    jobs = []
    for manifest in manifests:
        folder = job_dir(config.output, "ingest", manifest["index"], count)
        batch = check_job_balance(manifest, f"{folder / 'job.json'}")
        total.merge(batch)
        jobs.append({"index": manifest["index"], "files": len(manifest["files"]),
                     "input_bytes": sum(f[2] for f in manifest["files"]), "read": sum(batch.read.values()),
                     "events": batch.events})
    return _Partials([job_dir(config.output, "ingest", i, count) / "spill" for i in range(count)], total,
                     sum(float(m["seconds"]) for m in manifests), jobs)


def _batches(files: list[tuple[int, Path]], count: int) -> list[list[tuple[int, str]]]:
    """Split (run-wide index, file) pairs into up to ``count`` batches of similar byte size."""
    shares = assign_by_size([path.stat().st_size for _, path in files], count)
    batches: list[list[tuple[int, str]]] = [[] for _ in range(count)]
    for (index, path), share in zip(files, shares):
        batches[share].append((index, str(path)))
    return [batch for batch in batches if batch]


@contextlib.contextmanager
def _worker_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """Spawned worker processes (Polars' thread pool does not survive fork); None for one."""
    if workers <= 1:
        yield None
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        yield pool


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: a worker is killed as soon as the driver dies, even by SIGKILL (Linux).

    Otherwise the workers of a killed run keep going and write their spill and shards into
    folders a rerun is already using.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl (another libc): the private scratch folder still holds
            pass
    if os.getppid() != parent_pid:  # the driver died before prctl took effect
        os._exit(1)


class IngestWorkerDied(RuntimeError):
    """A worker process was killed (most often by the out-of-memory killer) during an ingest."""


def _worker_died(doing: str, files: list[str], workers: int) -> IngestWorkerDied:
    shown = ", ".join(files[:5]) + (f" (+{len(files) - 5} more)" if len(files) > 5 else "")
    return IngestWorkerDied(
        f"an ingest worker process died while {doing} {shown}: it ended abruptly, most often killed "
        "by the out-of-memory killer (or it could not start: a worker re-imports the script that called "
        f"ingest, so run it from a file, not from stdin). Nothing was written. Rerun with fewer workers "
        f"(workers={workers} now; workers=1 needs the least memory), or check how large those files are")


def _map_files(files: list[tuple[int, Path]], config: IngestConfig, tmp: Path,
               pool: ProcessPoolExecutor | None, workers: int) -> BatchResult:
    """Map ``files`` (pairs of run-wide file index and path) into the spill in ``tmp``; sum the counts.

    A progress bar counts files and resources per second (per batch of files from the pool,
    per file in one process).
    """
    total = BatchResult()
    bar = progress_bar(total=len(files), desc="ingest", unit="file")
    clock = time.perf_counter()

    def advance(done_files: int, resources: int) -> None:
        bar.update(done_files)
        bar.set_postfix_str(f"{resources / max(time.perf_counter() - clock, 1e-9):,.0f} resources/s", refresh=False)

    if pool is None:
        indexed = [(i, str(p)) for i, p in files]
        with bar:
            total.merge(ingest_batch(indexed, config, str(tmp), on_file=lambda read: advance(1, read)))
        return total
    # Several batches per worker keep every core busy when file sizes are uneven.
    batches = _batches(files, workers * 4)
    done = 0
    try:
        with bar:
            for result in pool.map(ingest_batch, batches, [config] * len(batches), [str(tmp)] * len(batches)):
                total.merge(result)
                advance(len(batches[done]), sum(total.read.values()))
                done += 1
    except BrokenProcessPool:
        # Results arrive in order, so the batches from the first missing one on were in flight.
        running = [path for batch in batches[done:done + workers] for _, path in batch]
        raise _worker_died("reading one of", running, workers) from None
    return total


def _write_rejects(tmp: Path, output: Path, finalize_rejects: pl.DataFrame) -> None:
    parts = sorted((tmp / "rejects").glob("*.parquet"))
    frames = [pl.read_parquet(p) for p in parts] + [finalize_rejects]
    rejects = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame(schema=REJECT_SCHEMA)
    (output / "rejects").mkdir(parents=True, exist_ok=True)
    rejects.sort("source_file", maintain_order=True).write_parquet(output / "rejects" / "rejects.parquet")


def _write_metadata(output: Path, config: IngestConfig, summary: IngestSummary, patients: pl.DataFrame,
                    codes: set[str], descriptions: dict[str, str],
                    parents: dict[str, set[str]] | None = None) -> None:
    meta = output / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    dataset = {
        "dataset_name": config.name,
        "dataset_version": datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "etl_name": "ehrfm.ingest",
        "etl_version": ehrfm.__version__,
        "meds_version": "0.4.1",
        "created_at": datetime.now(timezone.utc).isoformat(),
        "raw_source_id_columns": [schema.RESOURCE_ID, schema.ENCOUNTER_ID],
        "code_modifier_columns": [schema.UNIT],
        "other_extension_columns": [schema.RESOURCE_TYPE],
    }

    parents = parents or {}
    # Codes written, and codes the data says something about (a display, a parent) though another
    # coding of their concept was the one written (the NDC beside a Medication's RxNorm code).
    all_codes = sorted(codes | set(descriptions) | set(parents))
    vocab = vocabularies_for(config.vocabularies, config.vocabulary_files)

    def parents_of(code: str) -> list[str] | None:
        # The ICD category from the code itself, then parents seen beside it (an NDC's RxNorm).
        found = [*vocab.parent_codes(code), *sorted(parents.get(code, ()))]
        return found or None

    code_table = pa.table({
        "code": pa.array(all_codes, pa.string()),
        "description": pa.array([descriptions.get(c) for c in all_codes], pa.string()),
        "parent_codes": pa.array([parents_of(c) for c in all_codes], pa.list_(pa.string())),
    })
    CodeMetadataSchema.validate(code_table)
    pq.write_table(code_table, meta / "codes.parquet")

    # the splits the data folders were written by (finalize.with_splits), so folder and file agree
    patients = patients.sort(schema.SUBJECT_ID)
    split_table = pa.table({
        schema.SUBJECT_ID: pa.array(patients[schema.SUBJECT_ID].to_list(), pa.int64()),
        schema.SPLIT: pa.array(patients[schema.SPLIT].to_list(), pa.string()),
    })
    SubjectSplitSchema.validate(split_table)
    pq.write_table(split_table, meta / "subject_splits.parquet")
    # identifiers: Patient.identifier as {system, value} pairs, so results join back to hospital tables.
    patients.select(schema.SUBJECT_ID, pl.col("patient_id").alias("fhir_patient_id"), IDENTIFIERS).write_parquet(
        meta / "subjects.parquet"
    )
    (meta / "ingest_summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    mark_complete(output, dataset)  # last: a dataset without it is one an interrupted run left


def ensure_meds(inputs: Sequence[str | Path], target: str | Path) -> Path:
    """A MEDS dataset for ``inputs``: the input itself when it holds event shards, else FHIR ingested
    into ``target``. A dataset already complete in ``target`` (an earlier run) is reused.
    """
    from ehrfm.meds_dataset import has_event_shards, is_meds_dataset

    if len(inputs) == 1 and has_event_shards(inputs[0]):
        return Path(inputs[0])
    target = Path(target)
    if not is_meds_dataset(target):
        log.info("ingesting %s -> %s", ", ".join(map(str, inputs)), target)
        print(run_ingest(IngestConfig(inputs=[str(i) for i in inputs], output=str(target), overwrite=True)).table())
    return target
