"""Benchmark: ``ehrfm score`` on the Synthea set replicated, one pass vs one pass per task,
incremental vs full rescoring.

Run by hand, never as a test::

    python bench/bench_score.py                                # sizes 1000 10000 100000
    python bench/bench_score.py --sizes 1000 10000 --context-length 128

The bundle: the ``small`` preset, freshly initialised and finetuned for two steps on Synthea
(speed does not depend on what the weights learned), with the four default tasks. Every
measurement runs ``score(...)`` in its own subprocess, so each peak RSS (``getrusage`` of that
process) belongs to that run alone; patients/s counts every patient of the input, wall time from
the call to the summary.

1. Population: the 615-patient Synthea MEDS set copied with fresh subject ids to each size, one
   shard per copy (615 patients), scored at each patient's last event.
2. One pass vs per task: the same population scored once for all tasks, and once per task
   (what one finetuned model per task, EHRMamba-style, costs).
3. Incremental: "yesterday" is every patient without their last day of events, scored with
   ``save_states``; "today" is the full data, scored from those states vs from scratch, with a
   context long enough that no history is cropped (so the two must agree; the largest absolute
   difference is printed).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import OtherLoad  # noqa: E402  (CPU other processes took: timings move with it)

REPO = Path(__file__).resolve().parents[1]
SYNTHEA = REPO.parent / "shared" / "data" / "synthea-r4"
TASKS = ["mortality_1y", "inpatient_admission_1y", "emergency_visit_90d", "new_prediabetes_3y"]


def prepare_bundle(meds: Path, work: Path) -> Path:
    """A small-preset bundle on Synthea (random init, two finetuning steps)."""
    import torch

    from ehrfm.finetune import finetune
    from ehrfm.model import BackboneConfig, EHRLanguageModel
    from ehrfm.tokenize import EventTokenizer, TokenType
    from ehrfm.tokenize.tokenize_meds import fit_on_train

    bundle = work / "mtf" / "task_shared" / "model"
    if bundle.is_dir():
        return bundle
    pretrain = work / "pretrain"
    pretrain.mkdir(parents=True, exist_ok=True)
    if not (pretrain / "meds").exists():
        (pretrain / "meds").symlink_to(meds.resolve(), target_is_directory=True)
    tokenizer = fit_on_train(EventTokenizer(min_count=5), meds)
    torch.manual_seed(0)
    config = BackboneConfig.preset("small", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
                                   n_token_types=len(TokenType))
    EHRLanguageModel(config).save_pretrained(pretrain / "model")
    tokenizer.save_pretrained(pretrain / "model" / "tokenizer")
    finetune(input=str(pretrain), output=str(work / "mtf"), tasks=TASKS, heads=["task_shared"],
             trainer={"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 4,
                      "enable_progress_bar": False},
             data={"context_length": 512, "tokens_per_batch": 16384}, optim={"warmup_steps": 1})
    return bundle


def replicate(meds: Path, target: Path, patients: int) -> Path:
    """``meds`` copied (fresh, dense subject ids) until it holds ``patients``; one shard per copy."""
    if (target / "metadata" / "subjects.parquet").is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)
    (target / "data").mkdir(parents=True)
    (target / "metadata").mkdir()
    events = pl.concat([pl.read_parquet(s) for s in sorted((meds / "data").rglob("*.parquet"))])
    subjects = pl.read_parquet(meds / "metadata" / "subjects.parquet")
    rank = (events.select("subject_id").unique().sort("subject_id").with_row_index("rank")
            .with_columns(pl.col("rank").cast(pl.Int64)))
    n = rank.height
    copies, mapped = -(-patients // n), []
    for k in range(copies):
        keep = rank.head(patients - k * n) if (k + 1) * n > patients else rank
        shard = events.join(keep, on="subject_id", how="inner", maintain_order="left")
        shard.with_columns((pl.col("rank") + k * n).alias("subject_id")).drop("rank").write_parquet(
            target / "data" / f"{k:05d}.parquet")
        mapped.append(subjects.join(keep, on="subject_id", how="inner").with_columns(
            (pl.col("rank") + k * n).alias("subject_id"),
            pl.col("fhir_patient_id") + f"-copy{k}").drop("rank"))
    pl.concat(mapped).write_parquet(target / "metadata" / "subjects.parquet")
    shutil.copy(meds / "metadata" / "codes.parquet", target / "metadata" / "codes.parquet")
    shutil.copy(meds / "metadata" / "dataset.json", target / "metadata" / "dataset.json")
    return target


def without_last_day(meds: Path, target: Path) -> Path:
    if (target / "metadata").is_dir():
        return target
    shutil.copytree(meds / "metadata", target / "metadata")
    for shard in sorted((meds / "data").rglob("*.parquet")):
        out = target / shard.relative_to(meds)
        out.parent.mkdir(parents=True, exist_ok=True)
        events = pl.read_parquet(shard)
        last_day = pl.col("time").max().over("subject_id").dt.truncate("1d")
        events.filter(pl.col("time").is_null() | (pl.col("time") < last_day)).write_parquet(out)
    return target


def count_subjects(meds: Path) -> int:
    return pl.scan_parquet(str(meds / "data" / "**" / "*.parquet")).select(pl.col("subject_id").n_unique()).collect().item()


def longest_histories(meds: Path, target: Path, count: int) -> Path:
    """The ``count`` patients of ``meds`` with the most events, as a MEDS dataset of their own."""
    if (target / "metadata").is_dir():
        return target
    events = pl.scan_parquet(str(meds / "data" / "**" / "*.parquet"))
    keep = set(events.group_by("subject_id").len().sort("len", descending=True).head(count)
               .collect()["subject_id"].to_list())
    shutil.copytree(meds / "metadata", target / "metadata")
    for shard in sorted((meds / "data").rglob("*.parquet")):
        out = target / shard.relative_to(meds)
        out.parent.mkdir(parents=True, exist_ok=True)
        pl.read_parquet(shard).filter(pl.col("subject_id").is_in(list(keep))).write_parquet(out)
    return target


def incremental_vs_full(bundle: str, today: Path, work: Path, label: str) -> None:
    """Yesterday (each patient without their last day) saved as states; today from them vs whole."""
    yesterday = without_last_day(today, work / "yesterday_meds")
    events_today = pl.scan_parquet(str(today / "data" / "**" / "*.parquet")).select(pl.len()).collect().item()
    events_yesterday = pl.scan_parquet(str(yesterday / "data" / "**" / "*.parquet")).select(pl.len()).collect().item()
    common = {"bundle": bundle, "context_length": 16384}
    saved = run(**common, input=str(yesterday), output=str(work / "yesterday"), save_states=True)
    incremental = run(**common, input=str(today), output=str(work / "today_incremental"),
                      states_from=str(work / "yesterday" / "states"))
    full = run(**common, input=str(today), output=str(work / "today_full"))
    a = pl.read_parquet(work / "today_incremental" / "prediction_details.parquet")
    b = pl.read_parquet(work / "today_full" / "prediction_details.parquet")
    joined = a.join(b, on=["subject_id", "prediction_time", "task"])
    difference = (joined["predicted_boolean_probability"] - joined["predicted_boolean_probability_right"]).abs()
    states_mb = sum(p.stat().st_size for p in (work / "yesterday" / "states").iterdir()) / 2**20
    new = events_today - events_yesterday
    print(f"  {label}: {events_today / saved['patients']:.0f} events per patient, the new day "
          f"{new:,} events ({100 * new / events_today:.1f}%)")
    print(f"    yesterday with save_states: {saved['seconds']:.1f} s, peak {saved['maxrss_mb']:.0f} MB; states on "
          f"disk {states_mb:.1f} MB ({saved['state_bytes'] / 1024:.0f} KiB per patient)")
    print(f"    today incremental: {incremental['seconds']:.1f} s ({incremental['continued']} of "
          f"{incremental['scored_rows']} histories continued), peak {incremental['maxrss_mb']:.0f} MB")
    print(f"    today full rescore: {full['seconds']:.1f} s, peak {full['maxrss_mb']:.0f} MB")
    print(f"    speed-up {full['seconds'] / incremental['seconds']:.1f}x; max |p_incremental - p_full| = "
          f"{difference.max():.2e} over {joined.height} predictions")


def child(args: argparse.Namespace) -> None:
    from ehrfm.score import score

    settings = json.loads(args.settings)
    started = time.perf_counter()
    summary = score(**settings)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "patients": summary["patients_in_input"],
                      "scored_rows": summary["scored_rows"], "continued": summary["continued_rows"],
                      "state_bytes": summary["state_bytes_per_history"],
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run(**settings: Any) -> dict[str, Any]:
    settings = {"risk_assessments": False, "overwrite": True, **settings}
    done = subprocess.run([sys.executable, __file__, "_child", "--settings", json.dumps(settings)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--context-length", type=int, default=128,
                        help="history tokens per patient in the population runs (keeps 2 CPU cores busy "
                             "for minutes, not hours; the ratio runs use the bundle's or a longer one)")
    parser.add_argument("--work", type=Path, default=None, help="keep inputs and the bundle here")
    parser.add_argument("--skip", nargs="*", default=[], choices=["population", "tasks", "incremental"])
    parser.add_argument("--longest", type=int, default=100,
                        help="also measure incremental rescoring on this many longest Synthea histories")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ehrfm-bench-score-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        bench(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def bench(args: argparse.Namespace, work: Path) -> None:
    load = OtherLoad()
    meds = work / "synthea_meds"
    if not (meds / "metadata" / "subjects.parquet").is_file():
        import ehrfm

        ehrfm.ingest_fhir([str(SYNTHEA)], meds, workers=2)
    bundle = str(prepare_bundle(meds, work))
    print(f"bundle: {bundle} (small preset, tasks {TASKS}); work folder {work}")

    if "population" not in args.skip:
        print(f"\n1. population scaling, all {len(TASKS)} tasks in one pass, context_length={args.context_length}")
        print(f"{'patients':>9} {'shards':>6} {'seconds':>9} {'patients/s':>11} {'peak RSS MB':>12}")
        for size in args.sizes:
            population = replicate(meds, work / f"population_{size}", size)
            result = run(bundle=bundle, input=str(population), output=str(work / f"scores_{size}"),
                         context_length=args.context_length)
            shards = len(list((population / "data").glob("*.parquet")))
            print(f"{result['patients']:>9} {shards:>6} {result['seconds']:>9.1f} "
                  f"{result['patients'] / result['seconds']:>11.1f} {result['maxrss_mb']:>12.0f}", flush=True)

    if "tasks" not in args.skip:
        population = replicate(meds, work / "population_1000", 1000)
        print("\n2. one history pass for all tasks vs one pass per task (1000 patients, the bundle's context)")
        together = run(bundle=bundle, input=str(population), output=str(work / "scores_all_tasks"))
        apart = [run(bundle=bundle, input=str(population), output=str(work / f"scores_{t}"), tasks=[t])
                 for t in TASKS]
        seconds_apart = sum(r["seconds"] for r in apart)
        each = " + ".join(f"{r['seconds']:.1f}" for r in apart)
        print(f"all tasks, one pass: {together['seconds']:.1f} s; one pass per task: {seconds_apart:.1f} s "
              f"({each}); ratio {seconds_apart / together['seconds']:.2f}x")

    if "incremental" not in args.skip:
        print("\n3. incremental vs full rescore after a day of new events (context 16384: no history cropped)")
        longest = longest_histories(meds, work / "synthea_longest", args.longest)
        for label, population in ((f"Synthea, all {count_subjects(meds)} patients", meds),
                                  (f"the {args.longest} longest Synthea histories", longest)):
            incremental_vs_full(bundle, population, work / f"incremental_{population.name}", label)
    print("\n" + load.line("bench"))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        parser = argparse.ArgumentParser()
        parser.add_argument("_child")
        parser.add_argument("--settings", required=True)
        child(parser.parse_args())
    else:
        main()
