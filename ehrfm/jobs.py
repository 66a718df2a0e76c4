"""Independent jobs of one stage run: ``job.index=k job.count=n``, then a merge with ``job.count=n``.

A stage that outgrows one machine runs as ``n`` jobs (Hydra multirun: joblib locally, submitit
on Slurm), each over a disjoint share of the work, each writing only its own *partial* folder
``<output>/.ehrfm-jobs/<stage>/job-<k>-of-<n>/``; a last run with the same settings, ``job.count=n``
and no ``job.index`` checks that every partial is there, complete, made with the same settings
and disjoint from the others, and merges them into exactly what one run writes.

A partial is complete once its ``job.json`` exists: the job writes it last (atomically), so a
job that was killed, or is still running, leaves a partial the merge refuses by name.

This module holds what ingest and tokenize share: the ``job`` settings, the partial folders,
their manifests and the checks; each stage decides what its jobs compute and how they merge.

>>> JobSpec(index=1, count=2).mode, JobSpec(count=2).mode, JobSpec().mode
('job', 'merge', 'single')
>>> job_dir("out", "ingest", 1, 2).as_posix()
'out/.ehrfm-jobs/ingest/job-1-of-2'
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["JOBS_DIR", "MANIFEST", "IncompleteJobError", "JobMismatchError", "JobSpec", "MissingJobError",
           "OverlappingJobsError", "assign_by_size", "check_settings", "clear_job_dir", "job_dir",
           "link_or_copy", "read_manifests", "refuse_finished_output", "remove_job_dirs", "rerun_hint",
           "write_manifest"]

JOBS_DIR = ".ehrfm-jobs"  # hidden: never read back as input, never one of a stage's output parts
MANIFEST = "job.json"
_FORMAT = 1


class MissingJobError(FileNotFoundError):
    """The merge found no partial for a job: it never ran (or ran into another output)."""


class IncompleteJobError(RuntimeError):
    """A job's partial has no ``job.json``: the job was stopped, failed, or is still running."""


class JobMismatchError(ValueError):
    """A job ran with other settings, another ``job.count``, or over inputs that changed since."""


class OverlappingJobsError(ValueError):
    """Two jobs' partials hold the same piece of work (a file, a shard): merging would count it twice."""


@dataclass
class JobSpec:
    """Which share of a stage's work this run does.

    ``count=1, index=None`` (the default) is an ordinary run. ``index=k`` (0..count-1) is job k of
    ``count``: it writes only its partial. ``count>1`` without ``index`` is the merge.
    """

    index: int | None = None
    count: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"job.count must be a positive integer, got {self.count!r}")
        if self.index is not None and (isinstance(self.index, bool) or not isinstance(self.index, int)
                                       or not 0 <= self.index < self.count):
            raise ValueError(f"job.index must be an integer in 0..{self.count - 1} (job.count={self.count}), "
                             f"got {self.index!r}")

    @property
    def mode(self) -> str:
        """``"single"`` (one ordinary run), ``"job"`` (one job's partial) or ``"merge"``."""
        if self.index is not None:
            return "job"
        return "merge" if self.count > 1 else "single"

    @classmethod
    def of(cls, value: JobSpec | Mapping[str, Any] | None) -> JobSpec:
        """A :class:`JobSpec` from itself, a mapping of its keys (``{"index": 0, "count": 2}``) or None."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        known = [f.name for f in fields(cls)]
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise ValueError(f"unknown key 'job.{unknown[0]}' (job takes {', '.join(known)})")
            return cls(**dict(value))
        raise ValueError(f"job must be a mapping of {', '.join(known)}, got {value!r}")


def job_dir(output: str | Path, stage: str, index: int, count: int) -> Path:
    """The partial folder of job ``index`` of ``count`` of ``stage`` under ``output``."""
    return Path(output) / JOBS_DIR / stage / f"job-{index}-of-{count}"


def assign_by_size(sizes: Sequence[int], count: int) -> list[int]:
    """The job of each item: biggest first, each to the job with the fewest bytes so far.

    A pure function of the sizes and their order in the (sorted) list, so every job and the merge
    compute the same assignment; ties go to the lower job and the earlier item.

    >>> assign_by_size([10, 1, 1, 8], 2)
    [0, 1, 1, 1]
    """
    loads = [0] * count
    jobs = [0] * len(sizes)
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        target = loads.index(min(loads))
        jobs[index] = target
        loads[target] += sizes[index]
    return jobs


def rerun_hint(stage: str, count: int) -> str:
    """The command line that reruns job ``{index}`` of ``count``, for :func:`read_manifests`'s errors."""
    return f"ehrfm {stage} <same settings> job.count={count} job.index={{index}}"


def refuse_finished_output(output: Path, parts: Sequence[str], overwrite: bool) -> None:
    """A job over an output that already holds a stage's result: refuse before the work, not at the merge."""
    existing = [output / part for part in parts if (output / part).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]}: already exists; pass overwrite=True (overwrite=true) to replace "
                              "it (the merge replaces it; jobs write only their partials)")


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (its folder made), or copy it where links fail.

    A merge links rather than moves, so the partials stay whole until it has succeeded and a
    failed merge can simply run again; across file systems a copy is as good.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def clear_job_dir(folder: Path, keep: Sequence[str] = ()) -> None:
    """Empty a job's own partial folder before it (re)runs: what a killed earlier try left is scratch."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if entry.name in keep:
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``job.json`` last and atomically: its presence says the partial is complete."""
    from ehrfm.outputs import write_text_atomic

    body = {"format": _FORMAT, **manifest}
    return write_text_atomic(folder / MANIFEST, json.dumps(body, indent=1, sort_keys=True) + "\n")


def read_manifests(output: str | Path, stage: str, count: int, settings: Mapping[str, Any],
                   *, rerun: str) -> list[dict[str, Any]]:
    """Every job's manifest, in job order, each checked: present, complete, same settings.

    ``rerun`` is the command line that reruns a job (with ``{index}`` for its index), quoted in
    the errors. Raises :class:`MissingJobError`, :class:`IncompleteJobError` or
    :class:`JobMismatchError`, naming the job and its folder.
    """
    manifests = []
    for index in range(count):
        folder = job_dir(output, stage, index, count)
        how = rerun.format(index=index)
        if not folder.is_dir():
            others = sorted(p.name for p in folder.parent.glob("job-*")) if folder.parent.is_dir() else []
            seen = f"; partials found: {', '.join(others)}" if others else ""
            raise MissingJobError(f"{stage} merge: job {index} of {count} (job.index={index}) has not run: "
                                  f"{folder} does not exist{seen}. Run it ({how}), then merge again")
        path = folder / MANIFEST
        if not path.is_file():
            raise IncompleteJobError(f"{stage} merge: job {index} of {count} (job.index={index}) is incomplete: "
                                     f"{path} is missing (the job was stopped, failed, or is still running). "
                                     f"Rerun it ({how}), then merge again")
        try:
            manifest = json.loads(path.read_text())
        except ValueError as error:
            raise IncompleteJobError(f"{path}: not a readable job manifest ({error}); rerun job {index} "
                                     f"({how})") from None
        for key, wanted in (("stage", stage), ("index", index), ("count", count), ("format", _FORMAT)):
            if manifest.get(key) != wanted:
                raise JobMismatchError(f"{path}: {key} is {manifest.get(key)!r}, the merge expects {wanted!r}; "
                                       f"rerun job {index} ({how})")
        check_settings(manifest.get("settings", {}), settings, where=f"{path} (job.index={index})")
        manifests.append(manifest)
    return manifests


def check_settings(found: Mapping[str, Any], wanted: Mapping[str, Any], *, where: str) -> None:
    """Refuse a job made with other settings than the merge's, naming the first key that differs."""
    wanted = jsonable(wanted)
    for key in sorted(set(found) | set(wanted)):
        if found.get(key) != wanted.get(key):
            raise JobMismatchError(f"{where} ran with {key}={found.get(key)!r} but this run has "
                                   f"{key}={wanted.get(key)!r}: every step (fit, jobs, merge) needs the same settings")


def jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as JSON reads them back (tuples become lists), so settings compare equal."""
    return json.loads(json.dumps(dict(values), default=list, sort_keys=True))


def remove_job_dirs(output: str | Path, stage: str, count: int) -> None:
    """After a merge: remove the partials it merged, and the jobs folders if nothing else is left."""
    for index in range(count):
        shutil.rmtree(job_dir(output, stage, index, count), ignore_errors=True)
    for folder in (Path(output) / JOBS_DIR / stage, Path(output) / JOBS_DIR):
        try:
            os.rmdir(folder)
        except OSError:  # not empty (another count's partials, another stage's): left as it is
            break
