"""Encode a string column as (distinct values, per-row index): string work once per distinct value.

>>> import polars as pl
>>> values, index = distinct_index(pl.Series(["b", None, "a", "b"]))
>>> values.to_list(), index.tolist()
(['b', 'a'], [0, -1, 1, 0])
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.compute as pc


def distinct_index(values: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """Distinct non-null strings (first-seen order) and, per row, the index of its value
    (-1 for null). Arrow's dictionary encoding does this in one hashing pass, about twice as
    fast as Polars' unique-then-replace."""
    # string_view export is zero-copy; the default large_string export copies every string
    encoded = pc.dictionary_encode(values.cast(pl.String).to_arrow(compat_level=pl.CompatLevel.newest()))
    index = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return pl.Series(values.name, encoded.dictionary, dtype=pl.String), index
