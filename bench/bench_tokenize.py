"""Benchmark: EventTokenizer (vectorized Polars) vs a straightforward per-patient Python tokenizer.

Run by hand, never as a test::

    python bench/bench_tokenize.py                       # ingests ../shared/data/synthea-r4 first
    python bench/bench_tokenize.py --meds path/to/meds   # any MEDS dataset
    python bench/bench_tokenize.py --replicate 10 --skip-reference-above 1

For each input size (the dataset as is, and replicated ``--replicate`` times with fresh subject
ids) every implementation runs in its own subprocess, so each peak RSS
(``resource.getrusage``) belongs to that run alone. Fit reads the train split; transform
tokenizes every shard. The reference implements the same rules with Python loops over patients
and events (it lives only here); its output is compared token for token with EventTokenizer's,
so the ratio printed compares two implementations of one specification.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
SYNTHEA = REPO.parent / "shared" / "data" / "synthea-r4"

# free_text_tokens=True: the reference below implements the rule that learns every short text value.
PARAMS = {"min_count": 5, "num_value_bins": 10, "min_values_for_bins": 50, "max_length": 16384,
          "free_text_tokens": True}


# ---------------------------------------------------------------------------------------------
# The reference: the same rules, one patient and one event at a time, in plain Python.
# ---------------------------------------------------------------------------------------------

US_PER_DAY = 86_400_000_000
EPOCH = np.datetime64("1970-01-01T00:00:00", "us")


class ReferenceTokenizer:
    """Per-patient Python twin of EventTokenizer (separate value tokens), for timing and parity."""

    def __init__(self, min_count: int, num_value_bins: int, min_values_for_bins: int,
                 max_length: int) -> None:
        self.min_count = min_count
        self.num_bins = num_value_bins
        self.min_values = min_values_for_bins
        self.max_length = max_length
        self.max_text = 48
        self.notes = {"DocumentReference"}
        self.bucket = 5

    @staticmethod
    def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
        return frame.to_dicts()

    def _text_token(self, e: dict[str, Any]) -> str | None:
        text = e["text_value"]
        if text is None or e["resource_type"] in self.notes:
            return None
        text = text.strip()
        if not text or len(text) > self.max_text:
            return None
        return "TEXT/" + text

    @staticmethod
    def _finite(v: Any) -> bool:
        return v is not None and math.isfinite(v)

    def fit(self, rows: list[dict[str, Any]]) -> ReferenceTokenizer:
        from ehrfm.tokenize.time_tokens import INTERVAL_TOKENS, SEX_TOKENS, birth_year_tokens
        from ehrfm.tokenize.value_bins import value_tokens
        from ehrfm.tokenize.vocabulary import Vocabulary

        counts: Counter[str] = Counter()
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        for e in rows:
            counts[e["code"]] += 1
            if e["time"] is None:
                continue
            text = self._text_token(e)
            if text:
                counts[text] += 1
            if self._finite(e["numeric_value"]):
                values[(e["code"], e["unit"] or "")].append(float(e["numeric_value"]))
        self.edges: dict[tuple[str, str], list[float]] = {}
        probs = [i / self.num_bins for i in range(1, self.num_bins)]
        for key, vals in values.items():
            if len(vals) >= self.min_values:
                qs = np.quantile(np.asarray(vals, dtype=np.float64), probs)
                self.edges[key] = sorted(set(float(q) for q in qs))
        structural = [*SEX_TOKENS, *birth_year_tokens(self.bucket), *INTERVAL_TOKENS,
                      *value_tokens(self.num_bins)]
        self.vocab = Vocabulary.build(num_task_tokens=16, structural=structural, learned_counts=counts,
                                      min_count=self.min_count)
        return self

    def _interval(self, gap_days: float) -> str:
        d = math.floor(gap_days)
        if d < 28:
            return f"INTERVAL/W{d // 7}"
        if d < 365:
            return f"INTERVAL/M{min(11, max(1, d // 30))}"
        return "INTERVAL/LT"

    def _patient(self, subject: int, events: list[dict[str, Any]]) -> dict[str, Any]:
        static = sorted({e["code"] for e in events if e["time"] is None})
        timed = [e for e in events if e["time"] is not None]

        def priority(e: dict[str, Any]) -> int:
            c = e["code"]
            if c == "MEDS_BIRTH":
                return 0
            if c.startswith("VISIT_START/"):
                return 1
            if c.startswith("VISIT_END/"):
                return 3
            return 4 if c == "MEDS_DEATH" else 2

        timed.sort(key=lambda e: (e["time"], priority(e), e["_row"]))
        births = [e["time"] for e in timed if e["code"] == "MEDS_BIRTH"]
        birth = min(births) if births else None
        starts = 0
        encounter_visit: dict[str, int] = {}
        body: list[tuple[int, str, float, float, int, int]] = []  # (event, token, days, age, visit, type)
        previous = None
        for n, e in enumerate(timed):
            t = e["time"]
            is_start = e["code"].startswith("VISIT_START/")
            if is_start:
                starts += 1
                if e["encounter_id"] is not None and e["encounter_id"] not in encounter_visit:
                    encounter_visit[e["encounter_id"]] = starts
            in_started_encounter = e["encounter_id"] in encounter_visit
            visit = encounter_visit[e["encounter_id"]] if in_started_encounter else starts
            micros = (t - EPOCH_DT) // ONE_US
            days = micros / US_PER_DAY
            age = ((t - birth) // ONE_US) / (US_PER_DAY * 365.25) if birth is not None else math.nan
            if previous is not None and (is_start or not in_started_encounter):
                gap = ((t - previous) // ONE_US) / US_PER_DAY
                if gap >= 1.0:
                    body.append((n, self._interval(gap), days, age, visit, 4))
            kind = 5 if is_start else 6 if e["code"].startswith("VISIT_END/") else 7
            body.append((n, e["code"], days, age, visit, kind))
            if self._finite(e["numeric_value"]):
                edges = self.edges.get((e["code"], e["unit"] or ""))
                token = ("VALUE/ANY" if edges is None
                         else f"VALUE/Q{bisect.bisect_left(edges, float(e['numeric_value'])) + 1:02d}")
                body.append((n, token, days, age, visit, 8))
            text = self._text_token(e)
            if text:
                body.append((n, text, days, age, visit, 9))
            previous = t
        sex = next((c for c in static if c.startswith("GENDER/")), None)
        year = birth.year if birth is not None else None
        if year is None:
            birth_token = "BIRTH_YEAR/unknown"
        else:
            year = min(max(year, 1880), 2030)
            birth_token = f"BIRTH_YEAR/{year - year % self.bucket}"
        prefix = ["[CLS]", sex or "GENDER/unknown", birth_token] + [c for c in static if c != sex]
        budget = self.max_length - len(prefix)
        # keep whole events from the end while they fit
        kept_from = len(body)
        i = len(body)
        while i > 0:
            j = i - 1
            while j > 0 and body[j - 1][0] == body[i - 1][0]:
                j -= 1
            if len(body) - j > budget:
                break
            kept_from = j
            i = j
        kept = body[kept_from:]
        first_days = kept[0][2] if kept else math.nan
        first_age = kept[0][3] if kept else math.nan
        ids = [self.vocab.id_of(t) for t in prefix] + [self.vocab.id_of(b[1]) for b in kept]
        return {
            "subject_id": subject,
            "input_ids": ids,
            "time_days": [first_days] * len(prefix) + [b[2] for b in kept],
            "age_years": [first_age] * len(prefix) + [b[3] for b in kept],
            "visit_index": [0] * len(prefix) + [b[4] for b in kept],
            "token_type": [1] + [3] * (len(prefix) - 1) + [b[5] for b in kept],
            "truncated_tokens": len(body) - len(kept),
        }

    def transform(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_subject: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for n, e in enumerate(rows):
            e["_row"] = n
            by_subject[e["subject_id"]].append(e)
        return [self._patient(s, by_subject[s]) for s in sorted(by_subject)]


import datetime as _dt  # noqa: E402  (kept beside its only use)

EPOCH_DT = _dt.datetime(1970, 1, 1)
ONE_US = _dt.timedelta(microseconds=1)


# ---------------------------------------------------------------------------------------------
# Child processes: one implementation on one input, timing fit and transform, reporting RSS.
# ---------------------------------------------------------------------------------------------


def _shards(meds: Path) -> list[Path]:
    return sorted((meds / "data").glob("*.parquet"))


def run_fast(meds: Path, out: Path | None) -> dict[str, Any]:
    from ehrfm.meds_dataset import train_events
    from ehrfm.tokenize import EventTokenizer

    t0 = time.perf_counter()
    tok = EventTokenizer(**PARAMS).fit(train_events(meds))
    fit_s = time.perf_counter() - t0
    tokens = patients = 0
    t0 = time.perf_counter()
    for i, shard in enumerate(_shards(meds)):
        seq = tok.transform(pl.read_parquet(shard))
        tokens += int(seq["length"].sum())
        patients += seq.height
        if out is not None and i == 0:
            seq.write_parquet(out / "fast_shard0.parquet")
    transform_s = time.perf_counter() - t0
    if out is not None:
        tok.save_pretrained(out / "fast_tokenizer")
    return {"fit_s": fit_s, "transform_s": transform_s, "tokens": tokens, "patients": patients,
            "train_subjects": tok.n_train_subjects_, "train_events": tok.n_train_events_,
            "vocab": tok.vocab_size}


def run_reference(meds: Path, out: Path | None) -> dict[str, Any]:
    splits = pl.read_parquet(meds / "metadata" / "subject_splits.parquet")
    train_ids = set(splits.filter(pl.col("split") == "train")["subject_id"].to_list())
    t0 = time.perf_counter()
    train_rows = [r for shard in _shards(meds) for r in pl.read_parquet(shard).to_dicts()
                  if r["subject_id"] in train_ids]
    ref = ReferenceTokenizer(**PARAMS).fit(train_rows)
    fit_s = time.perf_counter() - t0
    del train_rows
    tokens = patients = 0
    t0 = time.perf_counter()
    for i, shard in enumerate(_shards(meds)):
        seqs = ref.transform(pl.read_parquet(shard).to_dicts())
        tokens += sum(len(s["input_ids"]) for s in seqs)
        patients += len(seqs)
        if out is not None and i == 0:
            pl.DataFrame(seqs).write_parquet(out / "reference_shard0.parquet")
    transform_s = time.perf_counter() - t0
    if out is not None:
        (out / "reference_vocab.json").write_text(json.dumps(ref.vocab.tokens))
        (out / "reference_edges.json").write_text(
            json.dumps({f"{k[0]}|{k[1]}": v for k, v in sorted(ref.edges.items())}))
    return {"fit_s": fit_s, "transform_s": transform_s, "tokens": tokens, "patients": patients,
            "vocab": len(ref.vocab)}


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM starts afresh at exec; ru_maxrss would
    also count the parent's memory at fork (Linux keeps it across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def child_main(kind: str, meds: Path, out: Path | None) -> None:
    result = (run_fast if kind == "fast" else run_reference)(meds, out)
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result))


def run_child(kind: str, meds: Path, out: Path | None) -> dict[str, Any]:
    cmd = ([sys.executable, __file__, "--child", kind, "--meds", str(meds)]
           + (["--out", str(out)] if out else []))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{proc.stderr[-3000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


# ---------------------------------------------------------------------------------------------
# Inputs and parity
# ---------------------------------------------------------------------------------------------


def replicate(meds: Path, target: Path, times: int) -> Path:
    """Copy a MEDS dir ``times`` over with fresh subject ids (one shard per copy of each shard).

    Ids are renumbered densely (copy k, subject r -> k * n + r) because ingest ids use the full
    int64 range and cannot simply be offset.
    """
    shutil.rmtree(target, ignore_errors=True)
    (target / "data").mkdir(parents=True)
    (target / "metadata").mkdir()
    splits = pl.read_parquet(meds / "metadata" / "subject_splits.parquet")
    rank = (splits.select("subject_id").unique().sort("subject_id").with_row_index("rank")
            .with_columns(pl.col("rank").cast(pl.Int64)))
    n = rank.height

    def renumber(frame: pl.DataFrame, k: int) -> pl.DataFrame:
        columns = frame.columns
        return frame.join(rank, on="subject_id", how="left", maintain_order="left").with_columns(
            (pl.col("rank") + k * n).alias("subject_id")
        ).select(columns)

    for k in range(times):
        for shard in _shards(meds):
            renumber(pl.read_parquet(shard), k).write_parquet(target / "data" / f"{k}_{shard.stem}.parquet")
    pl.concat([renumber(splits, k) for k in range(times)]).write_parquet(
        target / "metadata" / "subject_splits.parquet")
    shutil.copy(meds / "metadata" / "codes.parquet", target / "metadata" / "codes.parquet")
    shutil.copy(meds / "metadata" / "dataset.json", target / "metadata" / "dataset.json")
    return target


def parity(out: Path) -> str:
    fast = pl.read_parquet(out / "fast_shard0.parquet").sort("subject_id")
    ref = pl.read_parquet(out / "reference_shard0.parquet").sort("subject_id")
    vocab_fast = [json.loads(line)["token"]
                  for line in (out / "fast_tokenizer" / "vocab.jsonl").read_text().splitlines()]
    vocab_ref = json.loads((out / "reference_vocab.json").read_text())
    bins = json.loads((out / "fast_tokenizer" / "value_bins.json").read_text())
    edges_fast = {f"{b['code']}|{b['unit'] or ''}": b["edges"] for b in bins if b["edges"]}
    edges_ref = json.loads((out / "reference_edges.json").read_text())
    max_edge_diff = max(
        (abs(a - b) / max(abs(a), 1e-12)
         for k in edges_fast for a, b in zip(edges_fast[k], edges_ref.get(k, []))), default=0.0
    )
    problems = []
    if vocab_fast != vocab_ref:
        problems.append("vocabularies differ")
    if set(edges_fast) != set(edges_ref) or any(len(edges_fast[k]) != len(edges_ref[k]) for k in edges_fast):
        problems.append("value-bin keys or counts differ")
    columns = ["subject_id", "input_ids", "visit_index", "token_type", "truncated_tokens"]
    same_tokens = fast.select(columns).cast({"input_ids": pl.List(pl.Int64), "visit_index": pl.List(pl.Int64),
                                             "token_type": pl.List(pl.Int64),
                                             "truncated_tokens": pl.Int64}).equals(
        ref.select(columns).cast({"input_ids": pl.List(pl.Int64), "visit_index": pl.List(pl.Int64),
                                  "token_type": pl.List(pl.Int64), "truncated_tokens": pl.Int64})
    )
    if not same_tokens:
        problems.append("token/visit/type streams differ")
    for stream in ("time_days", "age_years"):
        a = fast[stream].explode().to_numpy()
        b = ref[stream].explode().to_numpy()
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
            problems.append(f"{stream} differs")
    status = "IDENTICAL" if not problems else "DIFFERENT: " + "; ".join(problems)
    return (f"{status} ({fast.height} subjects of shard 0; "
            f"max relative bin-edge difference {max_edge_diff:.1e})")


def ingest_synthea(target: Path) -> Path:
    """Ingest in a subprocess, so this parent process stays small."""
    code = (
        "import sys; from ehrfm.ingest import ingest_fhir; "
        "ingest_fhir(inputs=[sys.argv[1]], output=sys.argv[2], workers=2, overwrite=True)"
    )
    subprocess.run([sys.executable, "-c", code, str(SYNTHEA), str(target)], check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meds", type=Path,
                        help="MEDS dataset dir (default: ingest ../shared/data/synthea-r4)")
    parser.add_argument("--replicate", type=int, default=10)
    parser.add_argument("--skip-reference-above", type=int, default=10,
                        help="largest replication the reference runs on")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per implementation and size; the fastest is shown")
    parser.add_argument("--child", choices=["fast", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.meds, args.out)
        return

    work = Path(tempfile.mkdtemp(prefix="bench_tokenize_"))
    try:
        meds = args.meds or ingest_synthea(work / "meds_1x")
        inputs = {1: meds}
        if args.replicate > 1:
            inputs[args.replicate] = replicate(meds, work / f"meds_{args.replicate}x", args.replicate)
        print(f"input: {meds}  (x{args.replicate} replica: fresh subject ids, one shard per copy)")
        print(f"params: {PARAMS}; CPU cores: {len(__import__('os').sched_getaffinity(0))}; "
              f"best of {args.repeats} runs per row, each in a fresh process (first-call warm-up included)\n")
        header = (f"{'input':<6} {'impl':<10} {'fit s':>7} {'fit pat/s':>10} {'fit ev/s':>10} {'xform s':>8} "
                  f"{'tokens/s':>11} {'pat/s':>9} {'tokens':>10} {'RSS MB':>7}")
        print(header)
        print("-" * len(header))
        results: dict[tuple[int, str], dict[str, Any]] = {}
        for size, path in inputs.items():
            out = work / f"out_{size}"
            out.mkdir()
            kinds = ["fast"] + (["reference"] if size <= args.skip_reference_above else [])
            for kind in kinds:
                # The machine may be shared: keep each implementation's fastest fit and transform.
                runs = [run_child(kind, path, out) for _ in range(args.repeats)]
                r = dict(runs[0])
                r["fit_s"] = min(x["fit_s"] for x in runs)
                r["transform_s"] = min(x["transform_s"] for x in runs)
                r["peak_rss_mb"] = max(x["peak_rss_mb"] for x in runs)
                results[(size, kind)] = r
                train = results[(size, "fast")]
                print(f"{str(size) + 'x':<6} {kind:<10} {r['fit_s']:>7.2f} "
                      f"{train['train_subjects'] / r['fit_s']:>10.0f} "
                      f"{train['train_events'] / r['fit_s']:>10.0f} {r['transform_s']:>8.2f} "
                      f"{r['tokens'] / r['transform_s']:>11.0f} "
                      f"{r['patients'] / r['transform_s']:>9.0f} {r['tokens']:>10} {r['peak_rss_mb']:>7.0f}")
            if "reference" in kinds:
                f, ref = results[(size, "fast")], results[(size, "reference")]
                print(f"{'':<6} ratio      fit {ref['fit_s'] / f['fit_s']:.1f}x   "
                      f"transform {ref['transform_s'] / f['transform_s']:.1f}x   "
                      f"(reference time / EventTokenizer time); parity: {parity(out)}")
        sizes = sorted(inputs)
        if len(sizes) > 1:
            a, b = results[(sizes[0], "fast")], results[(sizes[-1], "fast")]
            print(f"\nEventTokenizer peak RSS {a['peak_rss_mb']:.0f} MB at 1x "
                  f"vs {b['peak_rss_mb']:.0f} MB at {sizes[-1]}x "
                  f"({b['tokens'] / a['tokens']:.1f}x the tokens)")
        # fused value tokens: shorter sequences, larger vocabulary (measured, not assumed)
        from ehrfm.meds_dataset import train_events
        from ehrfm.tokenize import EventTokenizer

        events = pl.read_parquet(_shards(meds))
        for mode in ("separate", "fused"):
            tok = EventTokenizer(**PARAMS, value_tokens=mode).fit(train_events(meds))
            seq = tok.transform(events)
            print(f"value_tokens={mode:<9} vocab {tok.vocab_size:>6}  tokens {int(seq['length'].sum()):>9}  "
                  f"mean length {seq['length'].mean():.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
