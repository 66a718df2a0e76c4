#!/usr/bin/env python
"""Simulator speed bench: can ``ehrfm synth`` feed the scale benchmarks? (issue 13)

One run prints, for the same population:

1. ``ehrfm synth`` (``write_population``, Bulk ndjson) with 1 and with ``--workers`` processes:
   patients/s, resources/s and MB/s written;
2. its peer, measured in the same run on the files just written: ``ehrfm ingest`` with the same
   number of workers (resources/s). Generation faster than ingest means the simulator is never
   the bottleneck of an ingest-scale bench;
3. the projected time for 100,000 patients at the measured rate.

    python bench/bench_synth.py                    # 4,000 patients (about 2 minutes on 2 cores)
    python bench/bench_synth.py --patients 20000
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from ehrfm.ingest import ingest_fhir
from ehrfm.synthetic import write_population


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        rows = []
        for workers in sorted({1, args.workers}):
            out = root / f"w{workers}"
            started = time.perf_counter()
            summary = write_population(out, n_patients=args.patients, seed=0, workers=workers)
            seconds = time.perf_counter() - started
            resources = sum(summary["resources"].values())
            rows.append((f"ehrfm synth, {workers} worker(s)", seconds, args.patients / seconds, resources / seconds,
                         _size_mb(out / "fhir") / seconds))
        fhir = root / f"w{args.workers}" / "fhir"
        started = time.perf_counter()
        ingested = ingest_fhir([str(fhir)], root / "meds", workers=args.workers)
        seconds = time.perf_counter() - started
        rows.append((f"peer: ehrfm ingest, {args.workers} worker(s)", seconds, args.patients / seconds,
                     ingested.resources_read / seconds, _size_mb(fhir) / seconds))
        print(f"{args.patients:,} patients, {resources:,} resources, {_size_mb(fhir):,.0f} MB of ndjson")
        print(f"{'':<36} {'seconds':>8} {'patients/s':>11} {'resources/s':>12} {'MB/s':>7}")
        for name, secs, patients, per_second, mb in rows:
            print(f"{name:<36} {secs:>8.1f} {patients:>11,.0f} {per_second:>12,.0f} {mb:>7.1f}")
        fastest = rows[-2][2]
        print(f"synth / ingest throughput: {rows[-2][3] / rows[-1][3]:.2f}x; "
              f"100,000 patients at {fastest:,.0f} patients/s: {100_000 / fastest / 60:.1f} min")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process (the parent; workers are separate): {peak:,.0f} MB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
