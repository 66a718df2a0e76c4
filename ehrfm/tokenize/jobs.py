"""``ehrfm tokenize`` as independent jobs over the MEDS shards: fit once, tokenize in n jobs, merge.

The vocabulary and the value bins are fit on the whole train split, so no job can fit its own:
the tokenizer comes first. Either ``tokenizer_dir`` names a saved one, or a fit step
(``job.count=n job.fit=true``) fits it on train and saves it as ``<output>/tokenizer``, exactly as
one run does. Job k of n (``job.index=k``) then tokenizes MEDS shards k, k+n, ... of the sorted
shard list (as ``ehrfm score`` shares its shards) into its partial folder
``<output>/.ehrfm-jobs/tokenize/job-<k>-of-<n>/`` with a tally of its counts and lengths; the
merge (``job.count=n``, no ``job.index``) checks every partial, links their token shards into
``<output>/data`` and writes ``summary.json`` from the tallies: what one run writes, byte for
byte, but for ``seconds``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
from meds import data_subdirectory

from ehrfm.jobs import (
    JOBS_DIR,
    JobMismatchError,
    MissingJobError,
    OverlappingJobsError,
    check_settings,
    clear_job_dir,
    job_dir,
    jsonable,
    link_or_copy,
    read_manifests,
    refuse_finished_output,
    remove_job_dirs,
    rerun_hint,
    write_manifest,
)
from ehrfm.meds_dataset import data_shards, read_splits, shard_id
from ehrfm.outputs import ensure_output_dir, exclusive_output, meds_protected, prepare_output, refuse_overlap
from ehrfm.schema import SPLIT, SUBJECT_ID
from ehrfm.typed_config import to_mapping

from .config import TokenizeConfig
from .tokenize_meds import (
    SPLIT_COUNTS,
    SUMMARY_FILE,
    TOKENIZER_SUBDIR,
    ShardTally,
    build_summary,
    load_or_fit,
    new_split_stats,
    tokenize_shards,
    write_summary,
)
from .tokenizer import EventTokenizer

__all__ = ["run_tokenize_jobs", "tokenizer_digest"]

STAGE = "tokenize"
FIT_MANIFEST = "fit.json"
# Settings that change nothing in the token shards or the summary may differ between the steps.
_FREE = {"output", "overwrite", "save_tokenizer_to", "job"}


def run_tokenize_jobs(config: TokenizeConfig) -> dict[str, Any]:
    """Run the step ``config.job`` names: the fit, one job, or the merge (which returns the summary)."""
    mode = config.job.mode
    if mode == "fit":
        return _fit(config)
    if mode == "job":
        return _job(config)
    if mode == "merge":
        return _merge(config)
    raise ValueError(f"tokenize: job.count={config.job.count} without job.index is an ordinary run, not a job step")


def job_settings(config: TokenizeConfig) -> dict[str, Any]:
    """The settings the fit, every job and the merge must share, as JSON."""
    return jsonable({key: value for key, value in to_mapping(config).items() if key not in _FREE})


def tokenizer_digest(tokenizer: EventTokenizer) -> str:
    """SHA-256 over the files ``save_pretrained`` writes (byte-identical for the same tokenizer)."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        digest = hashlib.sha256()
        for path in sorted(Path(folder).iterdir()):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _fit_path(output: Path) -> Path:
    return output / JOBS_DIR / STAGE / FIT_MANIFEST


def _fit(config: TokenizeConfig) -> dict[str, Any]:
    """Fit the tokenizer on train once, save it as ``<output>/tokenizer``: the jobs load it."""
    meds_dir, output = Path(config.input), Path(config.output)
    if config.tokenizer_dir:
        raise ValueError(f"tokenize job.fit=true: tokenizer_dir={config.tokenizer_dir} is fitted already; "
                         "run the jobs (job.index=...) with it directly")
    refuse_overlap(output, meds_protected(meds_dir))
    read_splits(meds_dir)  # a dataset without splits fails here, before anything is claimed
    prepare_output(output, [data_subdirectory, TOKENIZER_SUBDIR, SUMMARY_FILE], overwrite=config.overwrite)
    shutil.rmtree(output / JOBS_DIR / STAGE, ignore_errors=True)  # partials made with an earlier tokenizer
    tokenizer, origin = load_or_fit(EventTokenizer(**config.tokenizer), meds_dir)
    tokenizer.save_pretrained(output / TOKENIZER_SUBDIR)
    from ehrfm.outputs import write_text_atomic

    manifest = {"stage": "tokenize-fit", "settings": job_settings(config), "origin": origin,
                "tokenizer": tokenizer_digest(tokenizer)}
    write_text_atomic(_fit_path(output), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return {"step": "fit", "count": config.job.count, "vocab_size": tokenizer.vocab_size,
            "saved_to": str(output / TOKENIZER_SUBDIR)}


def _tokenizer_for_jobs(config: TokenizeConfig) -> tuple[EventTokenizer, dict[str, Any], str]:
    """The tokenizer every job uses: ``tokenizer_dir``, or the one the fit step saved in the output."""
    output = Path(config.output)
    if config.tokenizer_dir:
        tokenizer = EventTokenizer.from_pretrained(config.tokenizer_dir)
        return tokenizer, {"source": str(config.tokenizer_dir), "fitted_on": None}, tokenizer_digest(tokenizer)
    fit = _fit_path(output)
    if not fit.is_file():
        raise MissingJobError(
            f"tokenize: {fit} is missing: without tokenizer_dir, the jobs need the tokenizer fit once first "
            f"(on the whole train split): ehrfm tokenize <same settings> job.count={config.job.count} job.fit=true")
    manifest = json.loads(fit.read_text())
    check_settings(manifest["settings"], job_settings(config), where=f"{fit} (the fit step)")
    tokenizer = EventTokenizer.from_pretrained(output / TOKENIZER_SUBDIR)
    digest = tokenizer_digest(tokenizer)
    if digest != manifest["tokenizer"]:
        raise JobMismatchError(f"{output / TOKENIZER_SUBDIR}: not the tokenizer the fit step saved ({fit}); "
                               "run the fit step again, then the jobs")
    return tokenizer, manifest["origin"], digest


def _shares(config: TokenizeConfig) -> tuple[list[Path], set[str] | None]:
    wanted = set(config.splits) if config.splits is not None else None
    return data_shards(config.input, splits=wanted), wanted


def _job(config: TokenizeConfig) -> dict[str, Any]:
    """Job k of n: tokenize shards k, k+n, ... into the partial folder, with their tally."""
    started = time.perf_counter()
    index, count = config.job.index, config.job.count
    assert index is not None
    meds_dir, output = Path(config.input), ensure_output_dir(config.output)
    refuse_overlap(output, meds_protected(meds_dir))
    refuse_finished_output(output, [data_subdirectory, SUMMARY_FILE], config.overwrite)
    tokenizer, _, digest = _tokenizer_for_jobs(config)
    max_length = int(tokenizer.max_length if config.history_tokens is None else config.history_tokens)
    shards, wanted = _shares(config)
    mine = [shard for i, shard in enumerate(shards) if i % count == index]
    folder = job_dir(output, STAGE, index, count)
    with exclusive_output(folder, "tokenize-job"):
        clear_job_dir(folder, keep=[".ehrfm-tokenize-job.lock"])
        tally = tokenize_shards(meds_dir, mine, tokenizer, read_splits(meds_dir), wanted, max_length,
                                folder / data_subdirectory)
        pl.DataFrame({SPLIT: [name for name, s in tally.stats.items() for _ in s["_lengths"]],
                      "length": [n for s in tally.stats.values() for n in s["_lengths"]]},
                     schema={SPLIT: pl.String, "length": pl.Int64}).write_parquet(folder / "lengths.parquet")
        seen = pl.concat(tally.subjects).unique() if tally.subjects else pl.Series(SUBJECT_ID, [], pl.Int64)
        seen.to_frame(SUBJECT_ID).write_parquet(folder / "subjects.parquet")
        stats = {name: {key: s[key] for key in SPLIT_COUNTS} for name, s in tally.stats.items()}
        seconds = time.perf_counter() - started
        write_manifest(folder, {
            "stage": STAGE, "index": index, "count": count, "settings": job_settings(config), "tokenizer": digest,
            "shards": [shard_id(meds_dir, s) for s in mine], "stats": stats, "without_split": tally.without_split,
            "seconds": round(seconds, 3),
        })
    return {"step": "job", "index": index, "count": count, "folder": str(folder), "shards": len(mine),
            "sequences": sum(s["sequences"] for s in stats.values()), "seconds": round(seconds, 3)}


def _merge(config: TokenizeConfig) -> dict[str, Any]:
    """Check every job's partial, link the token shards into ``data/``, write the summary."""
    started = time.perf_counter()
    count = config.job.count
    meds_dir, output = Path(config.input), Path(config.output)
    refuse_overlap(output, meds_protected(meds_dir))
    manifests = read_manifests(output, STAGE, count, job_settings(config),
                               rerun=rerun_hint(STAGE, count))
    tokenizer, origin, digest = _tokenizer_for_jobs(config)
    for manifest in manifests:
        if manifest["tokenizer"] != digest:
            raise JobMismatchError(f"tokenize merge: job {manifest['index']} of {count} used another tokenizer than "
                                   f"{config.tokenizer_dir or output / TOKENIZER_SUBDIR}; rerun it")
    shards, wanted = _shares(config)
    _check_shares(manifests, [shard_id(meds_dir, s) for s in shards])
    max_length = int(tokenizer.max_length if config.history_tokens is None else config.history_tokens)
    owned = [data_subdirectory, SUMMARY_FILE] + ([TOKENIZER_SUBDIR] if config.tokenizer_dir else [])
    prepare_output(output, owned, overwrite=config.overwrite)
    if config.tokenizer_dir:  # as one run does; after a fit step the fit already saved it here
        tokenizer.save_pretrained(output / TOKENIZER_SUBDIR)
    tally = ShardTally()
    for manifest in manifests:
        folder = job_dir(output, STAGE, manifest["index"], count)
        _link_tree(folder / data_subdirectory, output / data_subdirectory)
        lengths = pl.read_parquet(folder / "lengths.parquet")
        for name, counts in manifest["stats"].items():
            s = tally.stats.setdefault(name, new_split_stats())
            for key in SPLIT_COUNTS:
                s[key] += counts[key]
            s["_lengths"].extend(lengths.filter(pl.col(SPLIT) == name)["length"].to_list())
        tally.subjects.append(pl.read_parquet(folder / "subjects.parquet")[SUBJECT_ID])
        tally.without_split += manifest["without_split"]
    seconds = time.perf_counter() - started + sum(float(m["seconds"]) for m in manifests)
    summary = build_summary(meds_dir, output, tokenizer, origin, max_length, len(shards), tally,
                            read_splits(meds_dir), wanted, seconds)
    write_summary(output, summary)
    _fit_path(output).unlink(missing_ok=True)
    remove_job_dirs(output, STAGE, count)  # and the jobs folders, once nothing else is in them
    return summary


def _check_shares(manifests: list[dict[str, Any]], names: list[str]) -> None:
    """Each job tokenized exactly shards k, k+n, ... of the dataset's shards, and no two the same."""
    count = len(manifests)
    owner: dict[str, int] = {}
    for manifest in manifests:
        for name in manifest["shards"]:
            if name in owner:
                raise OverlappingJobsError(f"tokenize merge: jobs {owner[name]} and {manifest['index']} both "
                                           f"tokenized shard {name}: their partials overlap")
            owner[name] = manifest["index"]
    for manifest in manifests:
        expected = [name for i, name in enumerate(names) if i % count == manifest["index"]]
        if manifest["shards"] != expected:
            raise JobMismatchError(f"tokenize merge: job {manifest['index']} of {count} tokenized shards "
                                   f"{manifest['shards']}, but its share of the dataset is {expected} now "
                                   "(the dataset changed since it ran?); rerun it")


def _link_tree(source: Path, target: Path) -> None:
    """Link every token shard under ``source`` to the same place under ``target``."""
    for path in sorted(source.rglob("*.parquet")) if source.is_dir() else ():
        link_or_copy(path, target / path.relative_to(source))
