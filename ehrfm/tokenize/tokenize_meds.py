"""Tokenizing a whole MEDS dataset: a MEDS directory in, token sequence shards per split out.

``tokenize_dataset`` is the work; ``run_tokenize`` runs it from a :class:`TokenizeConfig` (the
``ehrfm tokenize`` stage, see :mod:`ehrfm.tokenize.stage`).

Output layout (every file opens in any parquet/JSON viewer)::

    <output>/tokenizer/            the tokenizer used (save_pretrained), so outputs describe themselves
    <output>/data/<split>/<shard>.parquet   one row per subject, columns of SEQUENCE_SCHEMA; <shard>
                                            names the MEDS shard (``shard_id``: ``train-0``, or ``0``
                                            for a flat ``data/0.parquet``)
    <output>/summary.json          patients, tokens, length percentiles, UNK rate, per split

The tokenizer is fit on the ``train`` split only (from ``metadata/subject_splits.parquet``),
unless a fitted one is given. Shards are tokenized one at a time, so memory follows the
largest shard, not the dataset. Both MEDS layouts are read (``data/<split>/*.parquet`` and flat
``data/*.parquet``); with ``splits``, a split-sharded dataset is read in those folders only.

>>> import tempfile, ehrfm
>>> from ehrfm.resources import example_fhir_dir
>>> from ehrfm.tokenize import EventTokenizer
>>> meds = tempfile.mkdtemp()
>>> _ = ehrfm.ingest_fhir(example_fhir_dir(), meds, workers=1, overwrite=True)
>>> summary = tokenize_dataset(meds, EventTokenizer(min_count=2), tempfile.mkdtemp())
>>> summary["splits"]["train"]["sequences"] > 0, summary["tokenizer"]["fitted_on"]
(True, 'train')
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from meds import data_subdirectory

from ehrfm.meds_dataset import data_shards, read_splits, shard_id, train_events
from ehrfm.outputs import meds_protected, prepare_output, refuse_overlap
from ehrfm.progress import track
from ehrfm.schema import SPLIT, SUBJECT_ID, TRAIN
from ehrfm.typed_config import resolve_config

from .config import TokenizeConfig
from .errors import EventsFormatError
from .sequence_schema import INPUT_IDS, LENGTH, TOKEN_TYPE, TRUNCATED_TOKENS, TokenType
from .tokenizer import EventTokenizer

log = logging.getLogger("ehrfm.tokenize")

TOKENIZER_SUBDIR = "tokenizer"
SUMMARY_FILE = "summary.json"


def fit_on_train(tokenizer: EventTokenizer, meds_dir: str | Path) -> EventTokenizer:
    """Fit ``tokenizer`` on the train split of a MEDS directory; returns it."""
    return tokenizer.fit(train_events(meds_dir))


def _percentiles(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {}
    series = pl.Series(lengths, dtype=pl.Int64)
    return {
        "min": int(series.min()),  # type: ignore[arg-type]
        "p50": float(series.quantile(0.5, "nearest")),  # type: ignore[arg-type]
        "p90": float(series.quantile(0.9, "nearest")),  # type: ignore[arg-type]
        "p99": float(series.quantile(0.99, "nearest")),  # type: ignore[arg-type]
        "max": int(series.max()),  # type: ignore[arg-type]
        "mean": round(float(series.mean()), 3),  # type: ignore[arg-type]
    }


def tokenize_dataset(
    meds_dir: str | Path,
    tokenizer: EventTokenizer | str | Path,
    output_dir: str | Path,
    *,
    splits: Sequence[str] | None = None,
    max_length: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Tokenize every subject of a MEDS dataset; write shards per split and return the summary.

    ``tokenizer`` is a fitted :class:`EventTokenizer`, an unfitted one (fit here on the train
    split), or a saved tokenizer directory / shipped name (loaded with ``from_pretrained``).
    ``splits`` limits which splits are written (default: all). Subjects listed in the splits
    file without any event are counted as ``subjects_without_events``; subjects with events but
    no split are skipped and counted as ``subjects_without_split``.
    """
    started = time.perf_counter()
    meds_dir, output = Path(meds_dir), Path(output_dir)
    split_table = read_splits(meds_dir)
    tokenizer, origin = load_or_fit(tokenizer, meds_dir)
    max_length = int(tokenizer.max_length if max_length is None else max_length)
    wanted = set(splits) if splits is not None else None
    shards = data_shards(meds_dir, splits=wanted)

    refuse_overlap(output, meds_protected(meds_dir))
    prepare_output(output, [data_subdirectory, TOKENIZER_SUBDIR, SUMMARY_FILE], overwrite=overwrite)
    tokenizer.save_pretrained(output / TOKENIZER_SUBDIR)
    tally = tokenize_shards(meds_dir, shards, tokenizer, split_table, wanted, max_length, output / data_subdirectory)
    summary = build_summary(meds_dir, output, tokenizer, origin, max_length, len(shards), tally, split_table,
                            wanted, time.perf_counter() - started)
    write_summary(output, summary)
    return summary


def load_or_fit(tokenizer: EventTokenizer | str | Path, meds_dir: Path) -> tuple[EventTokenizer, dict[str, Any]]:
    """The fitted tokenizer to use, and where it came from (``source``, ``fitted_on``, for the summary).

    A directory or shipped name is loaded; an unfitted :class:`EventTokenizer` is fit here on the
    train split of ``meds_dir``; a fitted one is used as it is.
    """
    if isinstance(tokenizer, (str, Path)):
        return EventTokenizer.from_pretrained(tokenizer), {"source": str(tokenizer), "fitted_on": None}
    if not isinstance(tokenizer, EventTokenizer):
        raise TypeError(f"tokenizer must be an EventTokenizer or a directory, got {type(tokenizer).__name__}")
    if hasattr(tokenizer, "vocabulary_"):
        return tokenizer, {"source": None, "fitted_on": None}
    log.info("fitting the tokenizer on the %r split of %s", TRAIN, meds_dir)
    fit_on_train(tokenizer, meds_dir)
    return tokenizer, {"source": None, "fitted_on": TRAIN}


@dataclass
class ShardTally:
    """What tokenizing some shards gave: per-split counts and lengths, the subjects seen."""

    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> counts and "_lengths"
    subjects: list[pl.Series] = field(default_factory=list)  # subject ids seen in the shards (with events)
    without_split: int = 0


def tokenize_shards(meds_dir: Path, shards: Sequence[Path], tokenizer: EventTokenizer, split_table: pl.DataFrame,
                    wanted: set[str] | None, max_length: int, data_root: Path) -> ShardTally:
    """Tokenize each MEDS shard into ``data_root/<split>/<shard id>.parquet``; one shard in memory at a time."""
    unk_ids = tokenizer.unk_token_ids()
    tally = ShardTally()
    for shard in track(shards, desc="tokenize", unit="shard"):
        events = pl.read_parquet(shard)
        if SUBJECT_ID not in events.columns:
            raise EventsFormatError(
                f"{shard}: MEDS events need column {SUBJECT_ID!r}; found {events.columns}"
            )
        subjects = events.select(pl.col(SUBJECT_ID).cast(pl.Int64)).unique()
        tally.subjects.append(subjects[SUBJECT_ID])
        labelled = subjects.join(split_table, on=SUBJECT_ID, how="left")
        tally.without_split += labelled[SPLIT].null_count()
        labelled = labelled.drop_nulls(SPLIT)
        if wanted is not None:
            labelled = labelled.filter(pl.col(SPLIT).is_in(list(wanted)))
        if labelled.height == 0:
            continue
        # a filter keeps the shard's row order (it breaks ties among same-instant events)
        events = events.filter(pl.col(SUBJECT_ID).cast(pl.Int64).is_in(labelled[SUBJECT_ID].implode()))
        try:
            sequences = tokenizer.transform(events, max_length=max_length)
        except EventsFormatError as err:
            raise EventsFormatError(f"{shard}: {err}") from err
        sequences = sequences.join(labelled, on=SUBJECT_ID, how="left", maintain_order="left")
        for (split_name,), part in sequences.group_by(SPLIT, maintain_order=True):
            target = data_root / str(split_name) / f"{shard_id(meds_dir, shard)}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            part.drop(SPLIT).write_parquet(target)
            s = tally.stats.setdefault(str(split_name), new_split_stats())
            ids = part[INPUT_IDS].explode()
            s["sequences"] += part.height
            s["tokens"] += int(part[LENGTH].sum())
            s["unk_tokens"] += int(ids.is_in(unk_ids).sum())
            s["truncated_sequences"] += int((part[TRUNCATED_TOKENS] > 0).sum())
            s["truncated_tokens"] += int(part[TRUNCATED_TOKENS].sum())
            # Prefix-only: no token past the prefix (static-only subjects, or all events cut off).
            s["prefix_only_sequences"] += int((part[TOKEN_TYPE].list.max() < int(TokenType.INTERVAL)).sum())
            s["_lengths"].extend(part[LENGTH].to_list())
    return tally


SPLIT_COUNTS = ("sequences", "tokens", "unk_tokens", "truncated_sequences", "truncated_tokens",
                "prefix_only_sequences")


def new_split_stats() -> dict[str, Any]:
    """Zeroed counts of one split, in the order the summary lists them, and its sequence lengths."""
    return {**dict.fromkeys(SPLIT_COUNTS, 0), "_lengths": []}


def build_summary(meds_dir: Path, output: Path, tokenizer: EventTokenizer, origin: dict[str, Any], max_length: int,
                  shard_count: int, tally: ShardTally, split_table: pl.DataFrame, wanted: set[str] | None,
                  seconds: float) -> dict[str, Any]:
    """``summary.json``'s content from the tally of every shard (one run's, or every job's together)."""
    seen = tally.subjects
    present = pl.concat(seen).unique() if seen else pl.Series(SUBJECT_ID, [], pl.Int64)
    # only the splits asked for were read, so only their subjects can be found without events
    listed = split_table if wanted is None else split_table.filter(pl.col(SPLIT).is_in(list(wanted)))
    without_events = listed.filter(~pl.col(SUBJECT_ID).is_in(present.implode()))
    split_summaries = {}
    for name in sorted(tally.stats):
        s = dict(tally.stats[name])
        lengths = s.pop("_lengths")
        s["unk_rate"] = round(s["unk_tokens"] / s["tokens"], 6) if s["tokens"] else 0.0
        s["length"] = _percentiles(lengths)
        split_summaries[name] = s
    return {
        "meds_dir": str(meds_dir),
        "output_dir": str(output),
        "tokenizer": {
            "source": origin["source"],
            "fitted_on": origin["fitted_on"],
            "saved_to": str(output / TOKENIZER_SUBDIR),
            "vocab_size": tokenizer.vocab_size,
        },
        "max_length": max_length,
        "shards": shard_count,
        "splits": split_summaries,
        "total": {
            "sequences": sum(s["sequences"] for s in split_summaries.values()),
            "tokens": sum(s["tokens"] for s in split_summaries.values()),
        },
        "subjects_without_events": without_events.height,
        "subjects_without_split": tally.without_split,
        "seconds": round(seconds, 3),
    }


def write_summary(output: Path, summary: dict[str, Any]) -> None:
    (output / SUMMARY_FILE).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")


def run_tokenize(config: TokenizeConfig | Mapping[str, Any] | None = None, /,
                 **settings: Any) -> dict[str, Any]:
    """The ``ehrfm tokenize`` stage as a Python call; returns the summary.

    Takes a :class:`TokenizeConfig`, a mapping of its settings, or its settings as keywords.
    Loads ``tokenizer_dir`` when given, else fits an ``EventTokenizer(**config.tokenizer)`` on the
    train split; optionally saves the tokenizer used to ``save_tokenizer_to`` as well. With
    ``job`` set it runs one step of a run split into jobs (:mod:`ehrfm.tokenize.jobs`): the fit
    and each job return a short dict of what they did (``"step"``), the merge the summary.
    """
    config = resolve_config(TokenizeConfig, config, settings, where="tokenize")
    if config.job.mode != "single":  # the fit step, one job, or the merge (ehrfm.tokenize.jobs)
        from .jobs import run_tokenize_jobs

        summary = run_tokenize_jobs(config)
        if config.job.mode != "merge":
            return summary
    else:
        tokenizer: EventTokenizer | str = (str(config.tokenizer_dir) if config.tokenizer_dir
                                           else EventTokenizer(**config.tokenizer))
        summary = tokenize_dataset(config.input, tokenizer, config.output, splits=config.splits,
                                   max_length=config.history_tokens, overwrite=config.overwrite)
    if config.save_tokenizer_to:
        EventTokenizer.from_pretrained(summary["tokenizer"]["saved_to"]).save_pretrained(
            config.save_tokenizer_to
        )
        summary["tokenizer"]["also_saved_to"] = str(config.save_tokenizer_to)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print(f"tokenized {summary['meds_dir']} -> {summary['output_dir']} "
          f"(vocab {summary['tokenizer']['vocab_size']}, max_length {summary['max_length']}, "
          f"{summary['seconds']} s)")
    print(f"{'split':<10} {'sequences':>10} {'tokens':>12} {'p50':>7} {'p90':>7} {'max':>7} "
          f"{'unk rate':>9} {'truncated':>9}")
    for name, s in summary["splits"].items():
        length = s["length"]
        print(f"{name:<10} {s['sequences']:>10} {s['tokens']:>12} {length.get('p50', 0):>7.0f} "
              f"{length.get('p90', 0):>7.0f} "
              f"{length.get('max', 0):>7} {s['unk_rate']:>9.4f} {s['truncated_sequences']:>9}")
