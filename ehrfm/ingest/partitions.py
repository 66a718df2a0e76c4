"""Ingest as independent jobs: which files each job reads, what its partial holds, and the merge's checks.

Job ``k`` of ``n`` (``job.index=k job.count=n``) discovers the inputs as any ingest does, takes
its share of the files (:func:`file_shares`: sizes balanced, a pure function of the sorted file
list) and runs the parallel half of ingest on them only: mapping resources to spilled events.
Every file keeps its index in the *whole* sorted list, so the spill of a job is exactly the part
of a single run's spill that comes from its files. The partial folder holds that spill and a
``job.json`` with the job's counts (read, mapped, skipped, rejected; descriptions and parents
of codes) and the size and modification time of every file it read.

The merge (``job.count=n``, no ``job.index``) runs the second half of ingest once over the
union of the spills: everything that needs the whole input (duplicates across files, patients
read in another file, a Medication in another file than its MedicationRequest, encounter times)
is resolved there exactly as in one run, so the dataset is the same, byte for byte.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ehrfm.ingest.config import IngestConfig
from ehrfm.ingest.worker import BatchResult
from ehrfm.jobs import JobMismatchError, OverlappingJobsError, assign_by_size, jsonable, link_or_copy

__all__ = ["batch_from_json", "batch_to_json", "check_job_files", "check_job_balance", "file_facts",
           "file_shares", "job_settings", "link_spills"]

# Settings that change nothing in the dataset (how many processes, how big a spill chunk, where
# it goes, whether it may replace an earlier one) may differ between jobs and the merge.
_FREE = {"output", "job", "overwrite", "workers", "chunk_events"}


def job_settings(config: IngestConfig) -> dict[str, Any]:
    """The settings every job and the merge must share (all but ``_FREE``), as JSON."""
    from ehrfm.typed_config import to_mapping

    return jsonable({key: value for key, value in to_mapping(config).items() if key not in _FREE})


def file_facts(path: Path) -> list[Any]:
    """``[path, size, mtime_ns]``: the merge refuses a file that changed after its job read it."""
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def file_shares(files: Sequence[Path], count: int) -> list[int]:
    """The job (0..count-1) that reads each file of the sorted list: sizes balanced, biggest first."""
    return assign_by_size([path.stat().st_size for path in files], count)


def check_job_files(manifests: Sequence[Mapping[str, Any]], files: Sequence[Path]) -> None:
    """Each job read exactly its share of ``files`` (the merge's own discovery), unchanged since.

    Raises :class:`OverlappingJobsError` when two jobs read one file and :class:`JobMismatchError`
    naming the job and the file otherwise (a file missing, added, changed, or read by another job).
    """
    count = len(manifests)
    owner: dict[int, int] = {}
    for manifest in manifests:
        for index, name, *_ in manifest["files"]:
            if index in owner:
                raise OverlappingJobsError(f"ingest merge: jobs {owner[index]} and {manifest['index']} both read "
                                           f"{name}: their partials overlap, so it would be counted twice")
            owner[index] = manifest["index"]
    shares = file_shares(files, count)
    for manifest in manifests:
        job = manifest["index"]
        read = {index: facts for index, *facts in manifest["files"]}
        expected = {index for index, share in enumerate(shares) if share == job}
        for index in sorted(expected | set(read)):
            path = files[index] if index < len(files) else None
            if index not in read:
                raise JobMismatchError(f"ingest merge: job {job} of {count} did not read {path}, which is in its "
                                       "share now (the inputs changed since it ran?); rerun it")
            if path is None or index not in expected:
                raise JobMismatchError(f"ingest merge: job {job} of {count} read {read[index][0]}, which is not "
                                       "in its share of the inputs now (the inputs changed since it ran?); rerun it")
            now = file_facts(path)
            if read[index] != now:
                raise JobMismatchError(f"ingest merge: {path} changed since job {job} of {count} read it "
                                       f"(size, modification time {read[index][1:]} then, {now[1:]} now); rerun it")


def check_job_balance(manifest: Mapping[str, Any], where: str) -> BatchResult:
    """A job's counts, checked: every resource it read was mapped, skipped or rejected."""
    batch = batch_from_json(manifest["counts"])
    for kind, read in sorted(batch.read.items()):
        out = batch.mapped[kind] + sum(n for (k, _), n in batch.skipped.items() if k == kind) + sum(
            n for (k, _), n in batch.rejected.items() if k == kind)
        if out != read:
            raise JobMismatchError(f"{where}: {kind}: read {read} but mapped, skipped and rejected {out}; "
                                   "the partial is damaged, rerun the job")
    return batch


def batch_to_json(batch: BatchResult) -> dict[str, Any]:
    """A job's :class:`BatchResult` as JSON (counters keyed by tuples become rows)."""
    def rows(counter: Counter[tuple[str, str]]) -> list[list[Any]]:
        return [[kind, reason, n] for (kind, reason), n in sorted(counter.items())]

    return {
        "read": dict(sorted(batch.read.items())), "mapped": dict(sorted(batch.mapped.items())),
        "skipped": rows(batch.skipped), "rejected": rows(batch.rejected), "parts_skipped": rows(batch.parts_skipped),
        "events": batch.events,
        "descriptions": [[code, *found] for code, found in sorted(batch.descriptions.items())],
        "parents": {code: sorted(parents) for code, parents in sorted(batch.parents.items())},
    }


def batch_from_json(values: Mapping[str, Any]) -> BatchResult:
    """The inverse of :func:`batch_to_json`."""
    def counter(rows: list[list[Any]]) -> Counter[tuple[str, str]]:
        return Counter({(kind, reason): n for kind, reason, n in rows})

    return BatchResult(
        read=Counter(values["read"]), mapped=Counter(values["mapped"]), skipped=counter(values["skipped"]),
        rejected=counter(values["rejected"]), parts_skipped=counter(values["parts_skipped"]),
        events=int(values["events"]),
        descriptions={code: (file, position, text) for code, file, position, text in values["descriptions"]},
        parents={code: set(parents) for code, parents in values["parents"].items()},
    )


def link_spills(spills: Sequence[Path], tmp: Path) -> int:
    """Link every job's spill files into one scratch folder (:func:`~ehrfm.jobs.link_or_copy`).

    Names get the job's number in front, so two jobs' parts never collide. Returns the number
    of files.
    """
    linked = 0
    for job, spill in enumerate(spills):
        for path in sorted(spill.rglob("*.parquet")):
            link_or_copy(path, tmp / path.parent.relative_to(spill) / f"j{job:05d}-{path.name}")
            linked += 1
    return linked
