"""Unit tests of the private steps of ``build_sequences`` (the rules themselves are tested end to
end in test_tokenizer.py)."""

from __future__ import annotations

import numpy as np

from ehrfm.tokenize.sequences import _kept_events, _offsets, _segments, _token_starts, _visit_index


def test_kept_events_is_a_no_copy_slice_when_nothing_is_cut() -> None:
    seq = np.array([0, 0, 1, 1, 1])
    n_tokens = np.array([2, 1, 1, 3, 1])
    segment, first = _segments(seq)
    kept = _kept_events(seq, n_tokens, segment, first, room=np.array([3, 5]))
    assert kept == slice(None)
    assert np.shares_memory(seq[kept], seq)


def test_kept_events_keeps_whole_newest_events_per_sequence() -> None:
    seq = np.array([0, 0, 0, 1, 1])
    n_tokens = np.array([1, 2, 2, 3, 1])
    segment, first = _segments(seq)
    kept = _kept_events(seq, n_tokens, segment, first, room=np.array([3, 3]))
    # sequence 0: the last event (2 tokens) fits, adding the middle one (2 more) does not
    assert kept.tolist() == [2, 4]


def test_token_starts_leave_room_for_each_prefix() -> None:
    k_seq, k_tokens, n_prefix = np.array([0, 0, 2]), np.array([2, 1, 3]), np.array([3, 3, 3])
    offsets = _offsets(n_prefix + np.array([3, 0, 3]))
    start, body_at = _token_starts(k_seq, k_tokens, offsets, n_prefix)
    assert offsets.tolist() == [0, 6, 9, 15]
    assert start.tolist() == [3, 5, 12]
    assert body_at.tolist() == [3, 4, 5, 12, 13, 14]


def test_visit_index_is_the_same_whether_encounters_are_shared_or_not() -> None:
    # one subject as two sequences (two prediction times) sharing encounters 0 and 1
    seq = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    is_start = np.array([True, False, True, False] * 2)
    shared = np.array([0, 0, 1, -1] * 2)
    own = np.where(shared >= 0, shared + 2 * seq, -1)  # the same encounters, renumbered per sequence
    segment, first = _segments(seq)
    visit_shared, started_shared = _visit_index(seq, is_start, shared, segment, first)
    visit_own, started_own = _visit_index(seq, is_start, own, segment, first)
    assert visit_shared.tolist() == visit_own.tolist() == [1, 1, 2, 2] * 2
    assert started_shared.tolist() == started_own.tolist() == [True, True, True, False] * 2
