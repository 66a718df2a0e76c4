#!/usr/bin/env python
"""Ingest speed and memory bench (issue 2, "Speed and memory").

One run, on the same files, prints:

1. throughput (resources/s and MB/s of uncompressed JSON) of
   - ehrfm ingest (``ehrfm.ingest_fhir``, default workers = every core, output to a temp dir),
   - ``fhir.resources.R4B`` models (per resource ``get_fhir_model_class(rt).model_validate(r)``
     after ``json.loads`` of the Bundle file; timed on a deterministic subset of files),
   - plain stdlib ``json.loads`` (the floor), plus orjson and parse-only rows for information;
   and the ratios against the issue's targets (>= 10x fhir.resources, >= 1/3 of json.loads);
2. peak RSS of ingest at 1x and Nx the input (each patient Bundle replicated N times with every
   UUID rewritten, so each copy is a distinct patient), each run in a fresh subprocess.

Fair starting point: every path starts from the same ``.json.gz`` files on disk (page cache warm
after a warm-up pass) and includes gzip decompression, because ingest cannot be fed pre-decompressed
bytes. Parse-only and decompression-only numbers are printed too, so the split is visible.

    python bench/bench_ingest.py            # full run (about 4-6 minutes on 2 cores)
    python bench/bench_ingest.py --quick    # smoke run: every 10th file, 1 repeat, 1x only
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea-r4"
TARGET_VS_FHIR = 10.0
TARGET_VS_JSON = 1 / 3
_UUID = re.compile(rb"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})")
_PATIENT = re.compile(rb'"resourceType"\s*:\s*"Patient"')
_COPY_NAMESPACE = uuid.UUID("5f0c1e52-6b8e-4c0e-9a51-0e6b1c1d2a10")


# ---------------------------------------------------------------- measured paths (worker-safe)

def _read(path: str) -> bytes:
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as handle:
        return handle.read()


def json_file(path: str) -> tuple[int, int, float, float]:
    """stdlib json: (resources, uncompressed bytes, decompress seconds, parse seconds)."""
    t0 = time.perf_counter()
    raw = _read(path)
    t1 = time.perf_counter()
    bundle = json.loads(raw)
    t2 = time.perf_counter()
    return len(bundle.get("entry") or []), len(raw), t1 - t0, t2 - t1


def orjson_file(path: str) -> tuple[int, int, float, float]:
    import orjson

    t0 = time.perf_counter()
    raw = _read(path)
    t1 = time.perf_counter()
    bundle = orjson.loads(raw)
    t2 = time.perf_counter()
    return len(bundle.get("entry") or []), len(raw), t1 - t0, t2 - t1


def fhir_file(path: str) -> tuple[int, int, int]:
    """fhir.resources R4B, the way a user validates a Bundle's resources one by one:
    (resources, uncompressed bytes, resources that failed validation)."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    raw = _read(path)
    bundle = json.loads(raw)
    count = failed = 0
    for entry in bundle.get("entry") or []:
        res = entry.get("resource") or {}
        count += 1
        try:
            get_fhir_model_class(res["resourceType"]).model_validate(res)
        except (ValidationError, ValueError, TypeError, KeyError):
            failed += 1
    return count, len(raw), failed


def warm_fhir(types: list[str]) -> None:
    """Import the R4B model classes up front, so timings hold validation, not module imports."""
    from fhir.resources.R4B import get_fhir_model_class

    for name in types:
        get_fhir_model_class(name)


def _noop(_: int) -> None:
    time.sleep(0.05)


# ---------------------------------------------------------------- timing helpers

@dataclass
class Row:
    name: str
    procs: int
    files: int
    resources: int
    nbytes: int
    times: list[float]
    note: str = ""

    @property
    def seconds(self) -> float:
        return min(self.times)

    @property
    def rate(self) -> float:
        return self.resources / self.seconds

    @property
    def mbps(self) -> float:
        return self.nbytes / 1e6 / self.seconds


class Runner:
    """Runs a per-file function over files in a fresh pool of ``procs`` spawned processes (1 too:
    the bench process itself holds imports and objects that would slow its garbage collector),
    started and warmed BEFORE the clock starts. Worker start-up and imports are excluded, which
    favours the baselines: ehrfm's wall time includes starting its own workers."""

    def __init__(self, procs: int, init=None, initargs: tuple = ()) -> None:
        self.pool = multiprocessing.get_context("spawn").Pool(procs, initializer=init, initargs=initargs)
        self.pool.map(_noop, range(procs * 4), chunksize=1)  # every worker up and initialized

    def run(self, fn, files: list[str]) -> tuple[float, list[tuple]]:
        # biggest files first, so the last tasks are small and the processes finish together
        order = sorted(files, key=lambda p: -os.path.getsize(p))
        start = time.perf_counter()
        results = list(self.pool.imap_unordered(fn, order, chunksize=2))
        return time.perf_counter() - start, results

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


class OtherLoad:
    """CPU time the rest of the machine (other users) took while a section ran: busy CPU time from
    /proc/stat minus this bench's own (itself and its reaped children)."""

    def __init__(self) -> None:
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float]:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
        own = sum(getattr(resource.getrusage(who), f)
                  for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for f in ("ru_utime", "ru_stime"))
        return busy, own, time.perf_counter()

    def line(self, what: str) -> str:
        busy, own, wall = (b - a for a, b in zip(self.start, self._snapshot()))
        other = max(0.0, busy - own)
        cores = os.cpu_count() or 1
        return (f"other processes on the machine used {other:.0f} CPU-s during the {what} "
                f"({wall:.0f} s wall, "
                f"{100 * other / (wall * cores):.0f}% of {cores} cores); "
                f"the bench itself used {own:.0f} CPU-s")


# ---------------------------------------------------------------- part 1: throughput

def bench_throughput(files: list[str], fhir_files: list[str], fhir_label: str, repeats: int, workers: int,
                     tmp_root: Path, ingest_settings: dict) -> dict:
    import ehrfm

    print(f"warm-up: reading {len(files)} files once (page cache), counting uncompressed bytes ...",
          flush=True)
    total_bytes = sum(len(_read(p)) for p in files)
    fhir_bytes = sum(len(_read(p)) for p in fhir_files)
    fhir_types = sorted({e["resource"]["resourceType"] for p in fhir_files
                         for e in json.loads(_read(p)).get("entry") or [] if "resource" in e})
    import ehrfm.ingest  # noqa: F401  (imported before any clock starts)

    n_workers = ehrfm.IngestConfig(inputs=files, output="x", workers=workers).worker_count
    out = Path(tempfile.mkdtemp(prefix="ehrfm-bench-out-", dir=tmp_root))
    summaries = []

    def ingest_once():
        # wall time of the call: worker start-up, parsing, mapping and writing MEDS all included
        t0 = time.perf_counter()
        summary = ehrfm.ingest_fhir(files, out, workers=workers, overwrite=True, **ingest_settings)
        summaries.append(summary)
        return time.perf_counter() - t0, summary

    # Paths run round-robin, one repeat of each per round, so a burst of load from other users of
    # the machine hits all of them alike instead of one path's every repeat.
    procs_list = sorted({1, n_workers})
    load = OtherLoad()
    print("starting the baseline pools ...", flush=True)
    runners = {}
    try:
        for procs in procs_list:
            runners[("fhir", procs)] = Runner(procs, warm_fhir, (fhir_types,))
            runners[("json", procs)] = Runner(procs)
        runners[("orjson", 1)] = Runner(1)
        tasks = [("ehrfm", n_workers, ingest_once)]
        tasks += [("fhir", p, lambda p=p: runners[("fhir", p)].run(fhir_file, fhir_files))
                  for p in procs_list]
        tasks += [("json", p, lambda p=p: runners[("json", p)].run(json_file, files)) for p in procs_list]
        tasks += [("orjson", 1, lambda: runners[("orjson", 1)].run(orjson_file, files))]
        times: dict[tuple[str, int], list[float]] = {(k, p): [] for k, p, _ in tasks}
        results: dict[tuple[str, int], list] = {(k, p): [] for k, p, _ in tasks}
        for round_no in range(repeats):
            print(f"round {round_no + 1}/{repeats} ...", flush=True)
            for key, procs, once in tasks:
                seconds, result = once()
                times[(key, procs)].append(seconds)
                results[(key, procs)].append(result)
    finally:
        for runner in runners.values():
            runner.close()
        shutil.rmtree(out, ignore_errors=True)
    load_line = load.line("throughput runs")
    if not all(s.balanced for s in summaries):
        raise RuntimeError("ehrfm ingest counts did not add up")

    rows: list[Row] = [Row("ehrfm ingest (parse+map+write MEDS)", n_workers, len(files),
                           summaries[-1].resources_read, total_bytes, times[("ehrfm", n_workers)])]
    for procs in procs_list:
        last = results[("fhir", procs)][-1]
        failed = sum(r[2] for r in last)
        rows.append(Row("fhir.resources R4B per-resource validate", procs, len(fhir_files),
                        sum(r[0] for r in last), fhir_bytes, times[("fhir", procs)],
                        note=f"{failed} resources failed validation" if failed else ""))
    for procs in procs_list:
        rows.append(Row("json.loads", procs, len(files), sum(r[0] for r in results[("json", procs)][-1]),
                        total_bytes, times[("json", procs)]))
    rows.append(Row("orjson.loads (ehrfm's parser; info)", 1, len(files),
                    sum(r[0] for r in results[("orjson", 1)][-1]), total_bytes, times[("orjson", 1)]))
    # the parse-only and decompress-only shares, from the 1-process json.loads runs
    json_runs = results[("json", 1)]
    json_resources = sum(r[0] for r in json_runs[-1])
    rows.append(Row("json.loads, parse only (no gzip; info)", 1, len(files), json_resources, total_bytes,
                    [sum(r[3] for r in run) for run in json_runs],
                    note="per run: sum of per-file json.loads time"))
    rows.append(Row("gzip decompression only (info)", 1, len(files), json_resources, total_bytes,
                    [sum(r[2] for r in run) for run in json_runs], note="per run: sum of per-file gzip time"))

    print()
    print("== Throughput ==")
    print("Same starting point for every row: the .json.gz files on disk (page cache warm), gzip")
    print("decompression INCLUDED (ehrfm cannot be fed pre-decompressed bytes); rows marked 'info' split")
    print("that cost out. MB/s = uncompressed JSON bytes / wall seconds. ehrfm: wall time of ingest_fhir(),")
    print("starting its worker processes included. Other rows: a fresh pool of 'procs' processes, started")
    print("and warmed (imports done) before the clock starts, which favours them. fhir.resources:")
    print("json.loads of each Bundle file, then get_fhir_model_class(resourceType).model_validate(resource)")
    print("per entry (one resource at a time, as a user would for ndjson too; validating the whole Bundle")
    print(f"with the Bundle class is slower), timed on {fhir_label} "
          f"({len(fhir_files)} of {len(files)} files)")
    print(f"to keep the run short; its rates are per resource / per MB. "
          f"Best of {repeats} run(s), all listed.")
    print()
    header = (f"{'path':<42}{'procs':>5}{'files':>6}{'resources':>10}{'MB json':>9}{'best s':>8}"
              f"{'res/s':>10}{'MB/s':>8}  runs (s)")
    print(header)
    print("-" * len(header))
    for r in rows:
        runs = ", ".join(f"{t:.2f}" for t in r.times)
        print(f"{r.name:<42}{r.procs:>5}{r.files:>6}{r.resources:>10}{r.nbytes / 1e6:>9.1f}{r.seconds:>8.2f}"
              f"{r.rate:>10,.0f}{r.mbps:>8.1f}  {runs}{'  ' + r.note if r.note else ''}")

    ehr = rows[0]
    by = {(r.name, r.procs): r for r in rows}
    fhir1 = by[("fhir.resources R4B per-resource validate", 1)]
    fhirn = by[("fhir.resources R4B per-resource validate", n_workers)]
    json1 = by[("json.loads", 1)]
    jsonn = by[("json.loads", n_workers)]
    parse_only = by[("json.loads, parse only (no gzip; info)", 1)]

    def verdict(value: float, target: float) -> str:
        return "MET" if value >= target else "MISSED"

    print()
    print(f"Ratios (ehrfm resources/s / other resources/s; ehrfm uses {n_workers} processes)")
    lines = [
        ("vs fhir.resources R4B, 1 process (how a user runs it)", ehr.rate / fhir1.rate,
         TARGET_VS_FHIR, True),
        (f"vs fhir.resources R4B, {n_workers} processes (same cores)", ehr.rate / fhirn.rate,
         TARGET_VS_FHIR, True),
        ("vs json.loads, 1 process", ehr.rate / json1.rate, TARGET_VS_JSON, True),
        (f"vs json.loads, {n_workers} processes (same cores)", ehr.rate / jsonn.rate, TARGET_VS_JSON, True),
        (f"info: vs json.loads parse only x {n_workers} cores (no gzip)",
         ehr.rate / (parse_only.rate * n_workers), TARGET_VS_JSON, False),
    ]
    for label, value, target, judged in lines:
        goal = f">= {target:.3g}" if target >= 1 else f">= {target:.3f}"
        tail = (f"target {goal:<8} {verdict(value, target)}" if judged
                else "(not like-for-like: json gets no gzip)")
        print(f"  ehrfm {label:<60}{value:>7.2f}x  {tail}")
    print(load_line)
    return {"ehrfm_rate": ehr.rate}


# ---------------------------------------------------------------- part 2: peak RSS at 1x and Nx

def _replicate_one(task: tuple[str, str, int, bool]) -> tuple[int, int]:
    """Write ``copies`` of one Bundle file: copy 0 unchanged, copy k with every UUID u replaced by
    uuid5(u, k) (same length, so references, fullUrls and ids stay consistent and distinct)."""
    src, dest_dir, copies, is_patient = task
    name = Path(src).name
    stem = name[: -len(".json.gz")] if name.endswith(".json.gz") else Path(src).stem
    shutil.copyfile(src, Path(dest_dir) / name)
    raw = _read(src)
    if not is_patient or copies == 1:
        return 1, len(raw)
    parts = _UUID.split(raw)  # even indices: text, odd indices: UUIDs
    for k in range(1, copies):
        out = list(parts)
        for i in range(1, len(out), 2):
            out[i] = str(uuid.uuid5(_COPY_NAMESPACE, f"{out[i].decode().lower()}#{k}")).encode()
        with gzip.open(Path(dest_dir) / f"{stem}.copy{k}.json.gz", "wb", compresslevel=1) as handle:
            handle.write(b"".join(out))
    return copies, len(raw) * copies


def build_scaled(files: list[str], scale: int, dest: Path, procs: int) -> tuple[list[str], int]:
    """The Nx input: each patient Bundle N times (distinct patients), other bundles once."""
    tasks = []
    for p in files:
        raw = _read(p)
        tasks.append((p, str(dest), scale, bool(_PATIENT.search(raw))))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=procs, mp_context=ctx) as pool:
        results = list(pool.map(_replicate_one, sorted(tasks, key=lambda t: -os.path.getsize(t[0]))))
    out = sorted(str(p) for p in dest.iterdir())
    return out, sum(r[1] for r in results)


def _tree_rss_kib(root: int) -> int:
    """Current total RSS of ``root`` and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    stat = handle.read()
                parents[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        kids = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def child_ingest(args: argparse.Namespace) -> None:
    """Runs inside the fresh subprocess: one ingest, then its own and its workers' peak RSS."""
    import ehrfm

    files = Path(args.child_files).read_text().split("\n")
    settings = json.loads(args.child_settings)
    t0 = time.perf_counter()
    summary = ehrfm.ingest_fhir(files, args.child_output, workers=args.workers, overwrite=True, **settings)
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "seconds": seconds, "resources": summary.resources_read, "events": summary.events,
        "subjects": summary.subjects, "shards": summary.shards, "balanced": summary.balanced,
        # Linux ru_maxrss is KiB. RUSAGE_CHILDREN: the largest single waited-for child (the workers).
        "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children_maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }))


def run_ingest_subprocess(files: list[str], output: Path, workers: int, settings: dict, tmp: Path) -> dict:
    listing = tmp / f"files-{output.name}.txt"
    listing.write_text("\n".join(files))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", "--child-files", str(listing),
           "--child-output", str(output), "--child-settings", json.dumps(settings), "--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_tree = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not stop.is_set():
            peak_tree = max(peak_tree, _tree_rss_kib(proc.pid))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    stop.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ingest subprocess failed ({proc.returncode}):\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["wall"] = wall
    result["tree_peak_kib"] = peak_tree
    return result


def bench_memory(files: list[str], scale: int, workers: int, tmp_root: Path, settings: dict) -> None:
    work = Path(tempfile.mkdtemp(prefix="ehrfm-bench-rss-", dir=tmp_root))
    try:
        runs = []
        base_bytes = sum(len(_read(p)) for p in files)
        runs.append(("1x", files, base_bytes))
        if scale > 1:
            scaled_dir = work / f"input-{scale}x"
            scaled_dir.mkdir()
            t0 = time.perf_counter()
            print(f"building the {scale}x input in {scaled_dir} ...", flush=True)
            scaled, scaled_bytes = build_scaled(files, scale, scaled_dir, procs=os.cpu_count() or 1)
            gz = sum(os.path.getsize(p) for p in scaled)
            print(f"  {len(scaled)} files, {gz / 1e6:.0f} MB gz, {scaled_bytes / 1e6:.0f} MB JSON "
                  f"in {time.perf_counter() - t0:.0f} s", flush=True)
            runs.append((f"{scale}x", scaled, scaled_bytes))
        results = []
        load = OtherLoad()
        for label, run_files, nbytes in runs:
            print(f"ingest {label} in a fresh subprocess ...", flush=True)
            out = work / f"out-{label}"
            result = run_ingest_subprocess(run_files, out, workers, settings, work)
            shutil.rmtree(out, ignore_errors=True)
            results.append((label, len(run_files), nbytes, result))

        print()
        print("== Peak RSS at 1x and {}x ==".format(scale) if scale > 1 else "== Peak RSS at 1x ==")
        print("Each ingest runs in a fresh Python subprocess (default workers). Measured per run:")
        print("  driver  = ru_maxrss of the ingest's main process (RUSAGE_SELF, in the subprocess);")
        print("  worker  = largest ru_maxrss over its spawned worker processes (RUSAGE_CHILDREN of the")
        print("            subprocess: the max over waited-for children, not their sum);")
        print("  max     = max(driver, worker): the largest single process;")
        print("  tree    = peak of the summed VmRSS of the subprocess and all its descendants, sampled every")
        print("            50 ms from /proc (what the machine had to hold at once; may miss short spikes).")
        print("Nx input: every patient Bundle copied N times with all UUIDs rewritten (uuid5 of the old UUID")
        print("and the copy number), so each copy is a distinct patient; hospital/practitioner Bundles once.")
        print()
        header = (f"{'input':<6}{'files':>7}{'MB json':>9}{'resources':>11}{'events':>10}{'subjects':>9}"
                  f"{'shards':>7}{'seconds':>9}{'res/s':>9}{'MB/s':>7}{'driver MB':>10}{'worker MB':>10}"
                  f"{'max MB':>8}{'tree MB':>9}")
        print(header)
        print("-" * len(header))
        for label, n_files, nbytes, r in results:
            driver = r["self_maxrss_kib"] / 1024
            worker = r["children_maxrss_kib"] / 1024
            print(f"{label:<6}{n_files:>7}{nbytes / 1e6:>9.0f}{r['resources']:>11}{r['events']:>10}"
                  f"{r['subjects']:>9}"
                  f"{r['shards']:>7}{r['seconds']:>9.1f}{r['resources'] / r['seconds']:>9,.0f}"
                  f"{nbytes / 1e6 / r['seconds']:>7.1f}{driver:>10.0f}{worker:>10.0f}"
                  f"{max(driver, worker):>8.0f}"
                  f"{r['tree_peak_kib'] / 1024:>9.0f}")
        if len(results) > 1:
            first, last = results[0][3], results[-1][3]
            grow = lambda key: last[key] / first[key]  # noqa: E731
            peak0 = max(first["self_maxrss_kib"], first["children_maxrss_kib"])
            peak1 = max(last["self_maxrss_kib"], last["children_maxrss_kib"])
            print(f"{scale}x / 1x: resources {last['resources'] / first['resources']:.2f}x, "
                  f"largest-process peak RSS {peak1 / peak0:.2f}x, "
                  f"tree peak RSS {grow('tree_peak_kib'):.2f}x, "
                  f"driver {grow('self_maxrss_kib'):.2f}x, worker {grow('children_maxrss_kib'):.2f}x")
        print(load.line("ingest subprocesses"))
        bad = [label for label, _, _, r in results if not r["balanced"]]
        if bad:
            print(f"WARNING: counts did not add up for {bad}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder of FHIR Bundle .json.gz files")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: every 10th file, 1 repeat, peak RSS at 1x only (unless --scale)")
    parser.add_argument("--scale", type=int, default=None,
                        help="N of the Nx peak-RSS run (default 10; 1 skips it)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per path, best reported (default 5)")
    parser.add_argument("--workers", type=int, default=0, help="ingest workers (default 0: every core)")
    parser.add_argument("--tmp", type=Path, default=None, help="where temp dirs go (default: system temp)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra ingest setting, e.g. --set events_per_shard=500000 "
                             "(value parsed as JSON)")
    parser.add_argument("--memory-only", action="store_true", help="skip the throughput part")
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-files", help=argparse.SUPPRESS)
    parser.add_argument("--child-output", help=argparse.SUPPRESS)
    parser.add_argument("--child-settings", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child_ingest(args)
        return

    settings = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    scale = args.scale if args.scale is not None else (1 if args.quick else 10)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    if not args.data.is_dir():
        sys.exit(f"no data folder {args.data} (pass --data)")
    files = sorted(str(p) for p in args.data.iterdir() if p.name.endswith((".json.gz", ".json")))
    if not files:
        sys.exit(f"{args.data} holds no .json / .json.gz Bundle files")
    if args.quick:
        files = files[::10]
    fhir_files = files if args.quick else files[::10]
    fhir_label = "the same files" if args.quick else "every 10th file in name order"
    tmp_root = args.tmp or Path(tempfile.gettempdir())

    import fhir.resources
    import polars

    import ehrfm

    started = time.perf_counter()
    print(f"ehrfm {ehrfm.__version__}, fhir.resources {fhir.resources.__version__}, "
          f"polars {polars.__version__}, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"data: {args.data} ({len(files)} files{', quick: every 10th' if args.quick else ''}); "
          f"extra ingest settings: {settings or 'none'}")
    if not args.memory_only:
        bench_throughput(files, fhir_files, fhir_label, repeats, args.workers, tmp_root, settings)
        print()
    bench_memory(files, scale, args.workers, tmp_root, settings)
    print()
    print(f"bench finished in {time.perf_counter() - started:.0f} s; load average at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (other users of the machine skew timings)")


if __name__ == "__main__":
    main()
