"""Vocabulary, value bins and time tokens, each checked on its own."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from ehrfm.schema import CODE, NUMERIC_VALUE, UNIT
from ehrfm.tokenize.errors import TokenizerFormatError
from ehrfm.tokenize.time_tokens import (
    BIRTH_YEAR_UNKNOWN,
    INTERVAL_TOKENS,
    birth_year_token,
    birth_year_tokens,
    interval_bucket,
)
from ehrfm.tokenize.value_bins import (
    EDGES,
    VALUE_FALLBACK_TOKEN,
    assign_value_tokens,
    fit_value_bins,
    load_value_bins,
    save_value_bins,
)
from ehrfm.tokenize.vocabulary import KIND_LEARNED, KIND_UNK, UNK_TOKEN, Vocabulary

# -- vocabulary --------------------------------------------------------------------------------


def test_vocabulary_min_count_and_per_vocabulary_unk() -> None:
    vocab = Vocabulary.build(
        num_task_tokens=3,
        structural=["INTERVAL/LT", "VALUE/ANY"],
        learned_counts={"LOINC/a": 5, "LOINC/b": 4, "SNOMED/c": 9, "MEDS_BIRTH": 5, "TEXT/No": 2},
        min_count=5,
    )
    assert vocab.tokens[:4] == ["[PAD]", "[CLS]", "[UNK]", "[MASK]"]
    assert vocab.tokens[4:7] == ["[TASK_000]", "[TASK_001]", "[TASK_002]"]
    learned = [t for t, k in zip(vocab.tokens, vocab.kinds) if k == KIND_LEARNED]
    assert learned == ["LOINC/a", "MEDS_BIRTH", "SNOMED/c"]  # sorted, LOINC/b and TEXT/No too rare
    unks = [t for t, k in zip(vocab.tokens, vocab.kinds) if k == KIND_UNK]
    assert unks == ["[UNK:LOINC]", "[UNK:SNOMED]", "[UNK:TEXT]"]
    assert vocab.id_of("LOINC/b") == vocab.id_of("[UNK:LOINC]")
    assert vocab.id_of("TEXT/No") == vocab.id_of("[UNK:TEXT]")
    assert vocab.id_of("ICD10/X") == vocab.id_of(UNK_TOKEN)  # vocabulary never seen in train
    assert vocab.id_of("NOPREFIX") == vocab.id_of(UNK_TOKEN)
    assert vocab.counts[vocab.id_of("SNOMED/c")] == 9


def test_vocabulary_is_independent_of_count_order() -> None:
    counts = {f"LOINC/{i}": i % 7 + 1 for i in range(50)}
    a = Vocabulary.build(num_task_tokens=1, structural=[], learned_counts=counts, min_count=3)
    b = Vocabulary.build(num_task_tokens=1, structural=[], learned_counts=dict(reversed(counts.items())),
                         min_count=3)
    assert a == b


def test_vocabulary_save_load_roundtrip_and_errors(tmp_path) -> None:
    vocab = Vocabulary.build(num_task_tokens=1, structural=["X/1"],
                             learned_counts={"A/tab\there": 3, 'Q/"q"': 3}, min_count=1)
    path = tmp_path / "vocab.jsonl"
    vocab.save(path)
    assert Vocabulary.load(path) == vocab
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join([lines[0], lines[2], lines[1]]) + b"\n")
    with pytest.raises(TokenizerFormatError, match=r"vocab.jsonl:2: id 2 out of order"):
        Vocabulary.load(path)
    path.write_bytes(lines[0] + b"\nnot json\n")
    with pytest.raises(TokenizerFormatError, match=r"vocab.jsonl:2"):
        Vocabulary.load(path)


def test_vocabulary_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="min_count must be >= 1, got 0"):
        Vocabulary.build(num_task_tokens=0, structural=[], learned_counts={}, min_count=0)


# -- value bins --------------------------------------------------------------------------------


def _values(code: str, unit: str | None, values: list[float | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {CODE: [code] * len(values), UNIT: [unit] * len(values), NUMERIC_VALUE: values},
        schema={CODE: pl.String, UNIT: pl.String, NUMERIC_VALUE: pl.Float32},
    )


def test_quantile_edges_match_numpy_and_bins_match_searchsorted() -> None:
    rng = np.random.default_rng(0)
    train = rng.lognormal(3, 1, 500).astype(np.float32)
    bins = fit_value_bins(_values("LOINC/x", "mg", train.tolist()).lazy(), num_bins=10, min_values=20)
    edges = bins[EDGES][0].to_list()
    expected = np.unique(np.quantile(train.astype(np.float64), [i / 10 for i in range(1, 10)]))
    assert edges == expected.tolist()  # bit for bit
    test = rng.lognormal(3, 1.5, 300).astype(np.float32)
    out = assign_value_tokens(_values("LOINC/x", "mg", test.tolist()), bins, num_bins=10)
    want = np.searchsorted(np.asarray(edges), test.astype(np.float64), side="left") + 1
    assert out["value_bin"].to_list() == want.tolist()
    assert set(out["value_bin"].to_list()) == set(range(1, 11))


def test_value_on_an_edge_goes_to_the_lower_bin() -> None:
    bins = fit_value_bins(_values("LOINC/x", None, [float(v) for v in range(1, 101)]).lazy(), num_bins=4,
                          min_values=4)
    assert bins[EDGES][0].to_list() == [25.75, 50.5, 75.25]  # exact in float32 too
    probe = _values("LOINC/x", None, [25.75, 25.76, 75.25, 75.26, -1e9])
    assert assign_value_tokens(probe, bins, num_bins=4)["value_bin"].to_list() == [1, 2, 3, 4, 1]


def test_sparse_pair_lookup_matches_the_dense_table(monkeypatch) -> None:
    import ehrfm.tokenize.value_bins as value_bins

    rng = np.random.default_rng(1)
    codes = [f"LOINC/{i % 7}" for i in range(700)]
    units = [["mg", "g", None][i % 3] for i in range(700)]
    frame = pl.DataFrame({CODE: codes, UNIT: units, NUMERIC_VALUE: rng.normal(size=700)})
    bins = fit_value_bins(frame.lazy(), num_bins=5, min_values=20)
    dense = assign_value_tokens(frame, bins, num_bins=5)["value_token"].to_list()
    monkeypatch.setattr(value_bins, "DENSE_PAIR_LIMIT", 0)
    assert assign_value_tokens(frame, bins, num_bins=5)["value_token"].to_list() == dense
    assert len(set(dense)) == 5


def test_bins_are_unit_aware() -> None:
    kg = _values("LOINC/w", "kg", [float(v) for v in range(50, 100)])
    lb = _values("LOINC/w", "[lb_av]", [float(v) for v in range(110, 220)])
    bins = fit_value_bins(pl.concat([kg, lb]).lazy(), num_bins=4, min_values=10)
    assert bins.height == 2 and set(bins[UNIT]) == {"kg", "[lb_av]"}
    # 100 is above every kg value but below every lb value: it must rank differently per unit.
    probe = pl.concat([_values("LOINC/w", "kg", [100.0]), _values("LOINC/w", "[lb_av]", [100.0])])
    assert assign_value_tokens(probe, bins, num_bins=4)["value_token"].to_list() == ["VALUE/Q04", "VALUE/Q01"]


def test_sparse_unknown_and_non_finite_values_fall_back() -> None:
    train = pl.concat([_values("LOINC/many", None, [float(v) for v in range(100)]),
                       _values("LOINC/few", None, [1.0, 2.0])])
    bins = fit_value_bins(train.lazy(), num_bins=10, min_values=50)
    assert bins.filter(pl.col(CODE) == "LOINC/few")[EDGES][0].to_list() == []
    probe = pl.concat(
        [
            _values("LOINC/few", None, [1.5]),
            _values("LOINC/never-seen", None, [3.0]),
            _values("LOINC/many", None, [math.nan, None, math.inf, 42.0]),
        ]
    )
    tokens = assign_value_tokens(probe, bins, num_bins=10)["value_token"].to_list()
    assert tokens == [VALUE_FALLBACK_TOKEN, VALUE_FALLBACK_TOKEN, None, None, None, "VALUE/Q05"]


def test_all_null_values_give_no_bins() -> None:
    bins = fit_value_bins(_values("LOINC/empty", "mg", [None] * 100).lazy(), num_bins=10, min_values=5)
    assert bins.height == 0


def test_constant_code_gets_one_bin() -> None:
    bins = fit_value_bins(_values("LOINC/c", None, [7.0] * 60).lazy(), num_bins=10, min_values=5)
    assert bins[EDGES][0].to_list() == [7.0]
    out = assign_value_tokens(_values("LOINC/c", None, [7.0, 8.0]), bins, num_bins=10)
    assert out["value_token"].to_list() == ["VALUE/Q01", "VALUE/Q02"]


def test_value_bins_file_roundtrip_and_errors(tmp_path) -> None:
    bins = fit_value_bins(_values("LOINC/x", "mg", [0.1 * v for v in range(100)]).lazy(), num_bins=10,
                          min_values=5)
    path = tmp_path / "value_bins.json"
    save_value_bins(bins, path)
    loaded = load_value_bins(path)
    assert loaded.equals(bins)
    path.write_text('[{"code": "LOINC/x", "unit": null, "count": 3, "edges": [2.0, 1.0]}]')
    with pytest.raises(TokenizerFormatError,
                       match=r"value_bins.json: entry 0 \('LOINC/x'\) edges must be strictly increasing"):
        load_value_bins(path)
    path.write_text('[{"code": "LOINC/x"}]')
    with pytest.raises(TokenizerFormatError,
                       match="value_bins.json: entry 0 must be an object with code, unit, count, edges"):
        load_value_bins(path)


# -- time tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "token"),
    [
        (1.0, "INTERVAL/W0"),
        (6.99, "INTERVAL/W0"),
        (7.0, "INTERVAL/W1"),
        (21.0, "INTERVAL/W3"),
        (27.99, "INTERVAL/W3"),
        (28.0, "INTERVAL/M1"),
        (59.9, "INTERVAL/M1"),
        (60.0, "INTERVAL/M2"),
        (330.0, "INTERVAL/M11"),
        (364.99, "INTERVAL/M11"),
        (365.0, "INTERVAL/LT"),
        (20000.0, "INTERVAL/LT"),
    ],
)
def test_interval_buckets(days: float, token: str) -> None:
    assert INTERVAL_TOKENS[int(interval_bucket(np.array([days]))[0])] == token


def test_birth_year_buckets_clamp_to_fixed_range() -> None:
    got = [birth_year_token(y, 5) for y in (None, 1700, 1983, 1985, 2100)]
    assert got == [BIRTH_YEAR_UNKNOWN, "BIRTH_YEAR/1880", "BIRTH_YEAR/1980", "BIRTH_YEAR/1985",
                   "BIRTH_YEAR/2030"]
    assert set(got) <= set(birth_year_tokens(5))
