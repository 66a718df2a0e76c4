"""The counts of one ingest run: what was read, written, skipped and rejected, by type and reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class IngestSummary:
    """Counts that must add up: for every resource type, read = written + skipped + rejected."""

    files: int
    read: dict[str, int]
    written: dict[str, int]
    skipped: dict[str, dict[str, int]]  # type -> reason -> count
    rejected: dict[str, dict[str, int]]  # type -> reason -> count
    events: int
    subjects: int
    shards: int
    seconds: float
    input_bytes: int
    balance_errors: list[str] = field(default_factory=list)
    # Files met in the inputs and not read, by reason (hidden, not JSON, ...), with examples.
    ignored_files: dict[str, int] = field(default_factory=dict)
    ignored_examples: dict[str, list[str]] = field(default_factory=dict)
    # Parts left out of resources that were written (one bad Observation.component), type -> reason.
    parts_skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    # A merge of independent jobs (job.count > 1): each job's share (index, files, input_bytes,
    # read, events); None for an ordinary run, whose summary then has no "jobs" key.
    jobs: list[dict[str, int]] | None = None

    @classmethod
    def from_counts(cls, *, files: int, read: Counter[str], skipped: Counter[tuple[str, str]],
                    rejected: Counter[tuple[str, str]], written: Counter[str], events: int, subjects: int,
                    shards: int, seconds: float, input_bytes: int,
                    ignored: list[tuple[str, str]] | None = None,
                    parts_skipped: Counter[tuple[str, str]] | None = None,
                    jobs: list[dict[str, int]] | None = None) -> IngestSummary:
        def nest(counter: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
            nested: dict[str, dict[str, int]] = {}
            for (kind, reason), count in sorted(counter.items()):
                nested.setdefault(kind, {})[reason] = count
            return nested

        summary = cls(files=files, read=dict(sorted(read.items())), written=dict(sorted(written.items())),
                      skipped=nest(skipped), rejected=nest(rejected), events=events, subjects=subjects,
                      shards=shards, seconds=seconds, input_bytes=input_bytes,
                      parts_skipped=nest(parts_skipped or Counter()), jobs=jobs)
        for path, reason in ignored or ():
            summary.ignored_files[reason] = summary.ignored_files.get(reason, 0) + 1
            examples = summary.ignored_examples.setdefault(reason, [])
            if len(examples) < 5:
                examples.append(path)
        summary.balance_errors = summary._check_balance()
        if jobs is not None:
            summary.balance_errors += summary._check_jobs()
        return summary

    def _check_jobs(self) -> list[str]:
        """The jobs' shares add up to the whole: every file and every resource read once."""
        errors = []
        for key, whole in (("files", self.files), ("input_bytes", self.input_bytes), ("read", self.resources_read)):
            parts = sum(job[key] for job in self.jobs or ())
            if parts != whole:
                errors.append(f"jobs: {key} adds up to {parts} over {len(self.jobs or ())} jobs, but the input has {whole}")
        return errors

    def _check_balance(self) -> list[str]:
        errors = []
        for kind in sorted(set(self.read) | set(self.written) | set(self.skipped) | set(self.rejected)):
            out = self.written.get(kind, 0) + sum(self.skipped.get(kind, {}).values()) + sum(
                self.rejected.get(kind, {}).values())
            if out != self.read.get(kind, 0):
                errors.append(f"{kind}: read {self.read.get(kind, 0)} but accounted {out}")
        return errors

    @property
    def balanced(self) -> bool:
        return not self.balance_errors

    @property
    def resources_read(self) -> int:
        return sum(self.read.values())

    @property
    def resources_written(self) -> int:
        return sum(self.written.values())

    @property
    def resources_skipped(self) -> int:
        return sum(sum(v.values()) for v in self.skipped.values())

    @property
    def resources_rejected(self) -> int:
        return sum(sum(v.values()) for v in self.rejected.values())

    def rejected_by_reason(self) -> dict[str, int]:
        reasons: Counter[str] = Counter()
        for by_reason in self.rejected.values():
            reasons.update(by_reason)
        return dict(sorted(reasons.items()))

    def totals(self) -> dict[str, int]:
        return {"read": self.resources_read, "written": self.resources_written,
                "skipped": self.resources_skipped, "rejected": self.resources_rejected}

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "input_bytes": self.input_bytes, "seconds": round(self.seconds, 3),
            "subjects": self.subjects, "events": self.events, "shards": self.shards,
            "totals": self.totals(), "balanced": self.balanced,
            "rejected_by_reason": self.rejected_by_reason(),
            "read": self.read, "written": self.written, "skipped": self.skipped, "rejected": self.rejected,
            "parts_skipped": self.parts_skipped,
            "ignored_files": self.ignored_files, "ignored_examples": self.ignored_examples,
            **({"jobs": self.jobs} if self.jobs is not None else {}),
        }

    def table(self) -> str:
        """A fixed-width table a person reads at the end of a run."""
        kinds = sorted(set(self.read))
        lines = [f"{'resource type':<28}{'read':>9}{'written':>9}{'skipped':>9}{'rejected':>9}"]
        for kind in kinds:
            lines.append(
                f"{kind:<28}{self.read.get(kind, 0):>9}{self.written.get(kind, 0):>9}"
                f"{sum(self.skipped.get(kind, {}).values()):>9}{sum(self.rejected.get(kind, {}).values()):>9}"
            )
        t = self.totals()
        lines.append(f"{'TOTAL':<28}{t['read']:>9}{t['written']:>9}{t['skipped']:>9}{t['rejected']:>9}")
        if self.rejected:
            lines.append("rejected by reason: "
                         + ", ".join(f"{r} {n}" for r, n in self.rejected_by_reason().items()))
        if self.parts_skipped:
            lines.append("parts left out of written resources: " + ", ".join(
                f"{kind} {reason} {n}" for kind, by in self.parts_skipped.items() for reason, n in by.items()))
        if self.ignored_files:
            lines.append("files not read: " + ", ".join(f"{r} {n}" for r, n in sorted(self.ignored_files.items()))
                         + " (examples in metadata/ingest_summary.json)")
        mb = self.input_bytes / 1e6
        lines.append(
            f"{self.files} files, {mb:.1f} MB -> {self.subjects} subjects, {self.events} events in "
            f"{self.shards} shard(s), {self.seconds:.1f} s "
            f"({t['read'] / max(self.seconds, 1e-9):,.0f} resources/s)"
        )
        return "\n".join(lines)
