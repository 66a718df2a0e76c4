"""Cropping a tokenized sequence gives what the tokenizer's own truncation gives."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from meds_builders import event, events_frame, patient, visit

from ehrfm.tokenize import EventTokenizer, TokenType
from ehrfm.tokenize.crop import crop_positions, event_starts, prefix_length


def _population() -> pl.DataFrame:
    rows = []
    for subject in range(1, 6):
        rows += patient(subject, birth="1960-01-01", sex="female" if subject % 2 else "male")
        for k in range(8):
            start, end = f"2020-0{1 + k // 4}-{10 + k:02d} 08:00", f"2020-0{1 + k // 4}-{10 + k:02d} 17:00"
            rows += visit(subject, f"e{subject}{k}", start, end, "AMB",
                          event(subject, start, "LOINC/1", float(k + subject), encounter=f"e{subject}{k}"),
                          event(subject, start, "SNOMED/2", text="pos" if k % 2 else None,
                                encounter=f"e{subject}{k}"))
    return events_frame(rows)


@pytest.mark.parametrize("length", [6, 9, 14, 23, 40])
def test_crop_equals_the_tokenizers_truncation(length: int) -> None:
    events = _population()
    tokenizer = EventTokenizer(min_count=1, min_values_for_bins=2).fit(events)
    full = tokenizer.transform(events)
    truncated = tokenizer.transform(events, max_length=length)
    for whole, cut in zip(full.iter_rows(named=True), truncated.iter_rows(named=True), strict=True):
        types = np.array(whole["token_type"])
        kept = crop_positions(types, length)
        assert np.array(whole["input_ids"])[kept].tolist() == cut["input_ids"]
        assert np.array(whole["token_type"])[kept].tolist() == cut["token_type"]


def test_event_boundaries_never_split_a_value_from_its_code() -> None:
    types = np.array([TokenType.SPECIAL, TokenType.DEMOGRAPHIC, TokenType.INTERVAL, TokenType.VISIT_START,
                      TokenType.EVENT, TokenType.VALUE, TokenType.EVENT, TokenType.TEXT, TokenType.VISIT_END])
    assert prefix_length(types) == 2
    assert event_starts(types).tolist() == [2, 4, 6, 8]
    for length in range(3, 10):
        kept = crop_positions(types, length)
        assert len(kept) <= length and kept[:2].tolist() == [0, 1]
        assert len(kept) == 2 or int(types[kept[2]]) not in (TokenType.VALUE, TokenType.TEXT)
    with pytest.raises(ValueError, match="prefix has 2 tokens"):
        crop_positions(types, 2)
