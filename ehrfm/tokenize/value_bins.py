"""Per-(code, unit) quantile bins for numeric values, fit on the train split only.

Bins are keyed by code *and* unit: a code recorded in two units (body weight in kg and in lb)
gets two independent sets of edges, so a value is never ranked against numbers in another unit.
A key with fewer than ``min_values`` finite values in train gets no edges; its values become the
fallback token ``VALUE/ANY`` ("a value was recorded"), as do values of codes never seen in train.

Edges are the ``i / num_bins`` quantiles (linear interpolation), deduplicated, so a code with few
distinct values (a 0/1 flag) gets as many bins as it has distinct cut points. A value ``v`` goes
to bin ``1 + #{edges < v}``, i.e. numpy's ``searchsorted(edges, v, side="left")`` plus one.

>>> import polars as pl
>>> values = pl.DataFrame({"code": ["LOINC/x"] * 4, "unit": ["mg"] * 4,
...                        "numeric_value": [1.0, 2.0, 3.0, 4.0]})
>>> bins = fit_value_bins(values.lazy(), num_bins=2, min_values=4)
>>> bins.select("code", "unit", "count", "edges").row(0)
('LOINC/x', 'mg', 4, [2.5])
>>> assign_value_tokens(values, bins, num_bins=2)["value_token"].to_list()
['VALUE/Q01', 'VALUE/Q01', 'VALUE/Q02', 'VALUE/Q02']
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from ehrfm.schema import CODE, NUMERIC_VALUE, UNIT

from .distinct import distinct_index
from .errors import TokenizerFormatError

VALUE_PREFIX = "VALUE"
VALUE_FALLBACK_TOKEN = f"{VALUE_PREFIX}/ANY"
VALUE_TOKEN_COLUMN = "value_token"
BIN_COLUMN = "value_bin"  # 1-based bin, null where the fallback applies
EDGES = "edges"
COUNT = "count"

# Units are join keys; a null unit and "" both mean "no unit" (nulls never match in joins).
_UNIT_KEY = "_unit_key"
_KEY = "_key"
DENSE_PAIR_LIMIT = 4_000_000  # table cells (8 bytes each) before switching to sorted pairs


def value_tokens(num_bins: int) -> list[str]:
    """The fixed value tokens for ``num_bins`` bins: ``VALUE/Q01`` .. and the fallback."""
    if num_bins < 2:  # one bin would say no more than VALUE/ANY
        raise ValueError(f"num_value_bins must be >= 2, got {num_bins!r}")
    return [f"{VALUE_PREFIX}/Q{b:02d}" for b in range(1, num_bins + 1)] + [VALUE_FALLBACK_TOKEN]


def finite_value_expr() -> pl.Expr:
    """True where ``numeric_value`` holds a usable number (NaN and +-inf are treated as absent)."""
    value = pl.col(NUMERIC_VALUE).cast(pl.Float64)
    return value.is_not_null() & value.is_finite()


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's own linear interpolation (``numpy.quantile``, method="linear"), bit for bit."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def fit_value_bins(events: pl.LazyFrame, num_bins: int, min_values: int) -> pl.DataFrame:
    """Quantile edges per (code, unit) from train events; sparse keys get an empty edge list.

    Returns columns ``code``, ``unit`` (null when absent), ``count`` (finite values seen) and
    ``edges`` (sorted, distinct float64), sorted by code then unit so saved files are stable.
    Quantiles equal ``numpy.quantile(values, i / num_bins)`` exactly. They are computed from
    one sort of all values rather than Polars' per-group quantile aggregation, which needs
    about five times the memory; memory still grows with the number of train values (about
    40 bytes each), as exact quantiles must.
    """
    value_tokens(num_bins)  # validates num_bins
    values = (
        events.filter(finite_value_expr())
        .select(CODE, pl.col(UNIT).fill_null("").alias(_UNIT_KEY), pl.col(NUMERIC_VALUE).cast(pl.Float64))
        .collect(engine="streaming")  # keeps only these three columns of valued rows in memory
    )
    codes, code_index = distinct_index(values[CODE])
    units, unit_index = distinct_index(values[_UNIT_KEY])
    pair = code_index * max(len(units), 1) + unit_index
    value = values[NUMERIC_VALUE].to_numpy()
    # Sort by (key, value) in two passes: values first, then a stable sort by key, which numpy
    # does as a radix sort when keys fit 16 bits; twice as fast as np.lexsort here.
    by_value = np.argsort(value)
    keys = pair[by_value]
    order = by_value[np.argsort(keys.astype(np.uint16) if keys.size and keys.max() < 2**16 else keys,
                                kind="stable")]
    ordered = value[order]
    pairs, starts, counts = np.unique(pair[order], return_index=True, return_counts=True)
    probs = np.asarray([i / num_bins for i in range(1, num_bins)])
    position = (counts[:, None] - 1) * probs[None, :]  # numpy's "linear" virtual index
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, counts[:, None] - 1)
    quantiles = _lerp(ordered[starts[:, None] + below], ordered[starts[:, None] + above], position - below)
    # Quantiles ascend along each row; keep each row's distinct values, and none for sparse keys.
    distinct = np.ones_like(quantiles, dtype=bool)
    distinct[:, 1:] = quantiles[:, 1:] != quantiles[:, :-1]
    distinct &= (counts >= min_values)[:, None]
    offsets = np.zeros(len(pairs) + 1, dtype=np.int64)
    np.cumsum(distinct.sum(axis=1), out=offsets[1:])
    edges = pl.from_arrow(
        pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(quantiles[distinct], pa.float64()))
    )
    n_units = max(len(units), 1)
    unit = (units.gather(pl.Series(pairs % n_units, dtype=pl.Int64)) if len(units)
            else pl.Series([], dtype=pl.String))
    return (
        pl.DataFrame(
            {
                CODE: (codes.gather(pl.Series(pairs // n_units, dtype=pl.Int64)) if len(codes)
                       else pl.Series([], dtype=pl.String)),
                UNIT: unit,
                COUNT: pl.Series(counts, dtype=pl.Int64),
                EDGES: edges,
            },
            schema={CODE: pl.String, UNIT: pl.String, COUNT: pl.Int64, EDGES: pl.List(pl.Float64)},
        )
        .with_columns(pl.when(pl.col(UNIT) == "").then(None).otherwise(pl.col(UNIT)).alias(UNIT))
        .sort(CODE, UNIT, nulls_last=False)
    )


@dataclass(frozen=True)
class BinTable:
    """Fitted bins in the form used to assign them: a key per (code, unit) and an edge matrix.

    Row ``k`` of ``edges`` holds key ``k``'s edges padded with +inf, so counting ``edges < v``
    along a row gives the bin without any per-key branching.
    """

    keys: pl.DataFrame  # code, _unit_key, _key
    edges: np.ndarray  # (keys, max edges) float64

    @classmethod
    def from_frame(cls, bins: pl.DataFrame) -> BinTable:
        binned = bins.filter(pl.col(EDGES).list.len() > 0)
        width = int(binned[EDGES].list.len().max() or 0) if binned.height else 0
        edges = np.full((binned.height, width), np.inf)
        for k, row in enumerate(binned[EDGES].to_list()):  # one pass over keys, not events
            edges[k, : len(row)] = row
        keys = binned.select(
            CODE,
            pl.col(UNIT).fill_null("").alias(_UNIT_KEY),
            pl.int_range(pl.len(), dtype=pl.Int64).alias(_KEY),
        )
        return cls(keys=keys, edges=edges)

    def assign(self, codes: pl.Series, units: pl.Series, values: pl.Series) -> np.ndarray:
        """Per row: -1 without a finite value, 0 for the fallback (no bins for its code and
        unit), else the 1-based bin ``1 + #{edges < value}``."""
        distinct, code_index = distinct_index(codes)
        return self.assign_indexed(code_index, distinct, units, values)

    def assign_indexed(self, code_index: np.ndarray, codes: pl.Series, units: pl.Series,
                       values: pl.Series) -> np.ndarray:
        """:meth:`assign` for rows whose code is given as an index into distinct ``codes``.

        Strings are matched once per distinct (code, unit) pair, not once per row.
        """
        value = values.cast(pl.Float64).to_numpy()
        out = np.full(len(value), -1, dtype=np.int32)
        rows = np.flatnonzero(np.isfinite(value))
        out[rows] = 0
        if rows.size == 0 or self.keys.height == 0:
            return out
        unit_names, unit_index = distinct_index(units.gather(pl.Series(rows)).fill_null(""))
        n_units = len(unit_names)
        # (code, unit) -> key through a dense table when it is small (the usual case: hundreds
        # of codes, tens of units), else through the distinct pairs present.
        pair = code_index[rows] * n_units + unit_index
        if len(codes) * n_units <= DENSE_PAIR_LIMIT:
            present = self.keys.join(
                pl.DataFrame(
                    {CODE: codes, "_code_index": pl.int_range(len(codes), eager=True, dtype=pl.Int64)}
                ),
                on=CODE,
            ).join(
                pl.DataFrame(
                    {_UNIT_KEY: unit_names, "_unit_index": pl.int_range(n_units, eager=True, dtype=pl.Int64)}
                ),
                on=_UNIT_KEY,
            )
            table = np.full(len(codes) * n_units, -1, dtype=np.int64)
            table[(present["_code_index"] * n_units + present["_unit_index"]).to_numpy()] = (
                present[_KEY].to_numpy()
            )
            key = table[pair]
        else:
            pairs, inverse = np.unique(pair, return_inverse=True)
            wanted = pl.DataFrame({CODE: codes.gather(pl.Series(pairs // n_units)),
                                   _UNIT_KEY: unit_names.gather(pl.Series(pairs % n_units))})
            key = (wanted.join(self.keys, on=[CODE, _UNIT_KEY], how="left", maintain_order="left")[_KEY]
                   .fill_null(-1).to_numpy()[inverse])
        found = key >= 0
        binned = np.zeros(rows.size, dtype=np.int32)
        edges, probe = self.edges[key[found]], value[rows[found]]
        counted = np.ones(len(probe), dtype=np.int32)
        for column in range(edges.shape[1]):  # at most num_bins - 1 vectorized comparisons
            counted += edges[:, column] < probe
        binned[found] = counted
        out[rows] = binned
        return out


def value_token_ids(bin_numbers: np.ndarray, token_id: Callable[[str], int], num_bins: int) -> np.ndarray:
    """Token ids for :meth:`BinTable.assign` output (-1 where there is no value)."""
    table = np.asarray([token_id(VALUE_FALLBACK_TOKEN)] + [token_id(t) for t in value_tokens(num_bins)[:-1]],
                       dtype=np.int32)
    return np.where(bin_numbers >= 0, table[np.maximum(bin_numbers, 0)], -1).astype(np.int32)


def assign_value_tokens(events: pl.DataFrame, bins: pl.DataFrame | BinTable, num_bins: int) -> pl.DataFrame:
    """Add ``value_bin`` (1-based, null for the fallback) and ``value_token`` columns.

    ``events`` must hold ``code``, ``unit`` and ``numeric_value``; rows without a finite value
    get null in both. The readable form of :meth:`BinTable.assign`, used when fitting fused
    tokens and in tests.
    """
    table = bins if isinstance(bins, BinTable) else BinTable.from_frame(bins)
    numbers = table.assign(events[CODE], events[UNIT], events[NUMERIC_VALUE])
    names = np.asarray([None, VALUE_FALLBACK_TOKEN, *value_tokens(num_bins)[:-1]], dtype=object)
    return events.with_columns(
        pl.Series(BIN_COLUMN, np.where(numbers > 0, numbers, 0), dtype=pl.Int32).replace(0, None),
        pl.Series(VALUE_TOKEN_COLUMN, names[numbers + 1], dtype=pl.String),
    )


def save_value_bins(bins: pl.DataFrame, path: Path) -> None:
    """Write bins as JSON (one object per key), stable bytes for identical bins."""
    records = [
        {"code": code, "unit": unit, "count": int(count), "edges": [float(e) for e in edges]}
        for code, unit, count, edges in bins.select(CODE, UNIT, COUNT, EDGES).iter_rows()
    ]
    path.write_bytes(orjson.dumps(records, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def load_value_bins(path: Path) -> pl.DataFrame:
    """Read bins written by :func:`save_value_bins`; errors name the file and the bad entry."""
    try:
        records = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as err:
        raise TokenizerFormatError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(records, list):
        raise TokenizerFormatError(f"{path}: expected a JSON list of bins, got {type(records).__name__}")
    for i, rec in enumerate(records):
        # Errors say what is wrong without quoting the entry: the file may not be what it claims.
        if not isinstance(rec, dict) or not {"code", "unit", "count", "edges"} <= rec.keys():
            raise TokenizerFormatError(f"{path}: entry {i} must be an object with code, unit, count, edges")
        if not isinstance(rec["code"], str) or not (rec["unit"] is None or isinstance(rec["unit"], str)):
            raise TokenizerFormatError(f"{path}: entry {i}: code must be a string and unit a string or null")
        count = rec["count"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise TokenizerFormatError(f"{path}: entry {i} ({rec['code']!r}): count must be an integer >= 0")
        edges = rec["edges"]
        if not isinstance(edges, list) or not all(
                isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) for e in edges):
            raise TokenizerFormatError(f"{path}: entry {i} ({rec['code']!r}): edges must be a list of finite numbers")
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise TokenizerFormatError(
                f"{path}: entry {i} ({rec['code']!r}) edges must be strictly increasing"
            )
    return pl.DataFrame(
        {
            CODE: [r["code"] for r in records],
            UNIT: [r["unit"] for r in records],
            COUNT: [r["count"] for r in records],
            EDGES: [[float(e) for e in r["edges"]] for r in records],
        },
        schema={CODE: pl.String(), UNIT: pl.String(), COUNT: pl.Int64(), EDGES: pl.List(pl.Float64())},
    )
