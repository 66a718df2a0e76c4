"""A seeded, version-stable hash of (subject, prediction time) for choosing rows to keep.

Polars' own ``hash`` may change between Polars releases; this one is plain SplitMix64 arithmetic
in NumPy, so the same seed keeps the same rows on every machine and every version, and a row's
fate never depends on which other rows are present.

>>> import datetime as dt, polars as pl
>>> frame = pl.DataFrame({"subject_id": [1, 1],
...                       "prediction_time": [dt.datetime(2020, 1, 1), dt.datetime(2021, 1, 1)]})
>>> keys = stable_keys(frame["subject_id"], frame["prediction_time"], seed=0)
>>> again = stable_keys(frame["subject_id"], frame["prediction_time"], seed=0)
>>> keys.dtype, keys.n_unique(), keys.equals(again)
(UInt64, 2, True)
"""

from __future__ import annotations

import numpy as np
import polars as pl

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: spreads every input bit over the whole 64-bit output."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stable_keys(subject_ids: pl.Series, times: pl.Series, seed: int) -> pl.Series:
    """One pseudo-random ``UInt64`` per row, a pure function of (seed, subject_id, time in µs)."""
    subjects = subject_ids.cast(pl.Int64).to_numpy().astype(np.int64).view(np.uint64)
    micros = times.cast(pl.Datetime("us")).dt.epoch("us").to_numpy().astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):  # wrap-around is the point of the arithmetic
        x = _mix(np.uint64(seed) * _GOLDEN + subjects)
        x = _mix(x + _GOLDEN + micros)
    return pl.Series("sample_key", x, dtype=pl.UInt64)
