"""Cropping a token sequence to a context length: the patient prefix plus the newest whole events.

The same rule as the tokenizer's own ``max_length`` truncation, applied to sequences that were
already tokenized (a pretraining window, a cached history at a prediction time): keep the
leading prefix (``[CLS]``, demographics and static facts, task prompts), then as many of the
most recent events as fit, never part of one. An event is its interval token (if any), its code
token, and the value and text tokens that follow the code; a window therefore never opens on
an orphan ``VALUE/*`` or ``TEXT/*`` token whose code was cut away.

>>> import numpy as np
>>> from ehrfm.tokenize.sequence_schema import TokenType as T
>>> types = np.array([T.SPECIAL, T.DEMOGRAPHIC, T.INTERVAL, T.VISIT_START, T.EVENT, T.VALUE, T.EVENT,
...                   T.VISIT_END])
>>> event_starts(types).tolist()
[2, 4, 6, 7]
>>> crop_positions(types, 6).tolist()   # prefix (2) + the newest whole events that fit in 4
[0, 1, 4, 5, 6, 7]
>>> crop_positions(types, 5).tolist()   # [EVENT, VALUE] no longer fits whole: it goes entirely
[0, 1, 6, 7]
>>> crop_positions(types, 20).tolist() == list(range(8))
True
"""

from __future__ import annotations

import numpy as np

from .sequence_schema import TokenType

__all__ = ["PREFIX_TYPES", "crop_positions", "event_starts", "prefix_length"]

# Token types of the leading patient prefix, always kept.
PREFIX_TYPES = (int(TokenType.SPECIAL), int(TokenType.DEMOGRAPHIC), int(TokenType.TASK))
# Tokens that belong to the event before them (a value, a text value).
_CONTINUATION_TYPES = (int(TokenType.VALUE), int(TokenType.TEXT))


def prefix_length(token_types: np.ndarray) -> int:
    """How many leading tokens form the patient prefix."""
    not_prefix = ~np.isin(token_types, PREFIX_TYPES)
    return int(np.argmax(not_prefix)) if not_prefix.any() else len(token_types)


def event_starts(token_types: np.ndarray) -> np.ndarray:
    """Positions (after the prefix) where an event begins: its interval token, else its code."""
    types = np.asarray(token_types)
    start = prefix_length(types)
    body = types[start:]
    continuation = np.isin(body, _CONTINUATION_TYPES)
    after_interval = np.zeros(len(body), dtype=bool)
    after_interval[1:] = body[:-1] == int(TokenType.INTERVAL)
    return np.flatnonzero(~continuation & ~after_interval) + start


def crop_positions(token_types: np.ndarray, length: int) -> np.ndarray:
    """Positions to keep so that at most ``length`` tokens remain: the prefix, then whole events.

    A sequence that already fits is kept whole. Raises ``ValueError`` when the prefix alone is
    longer than ``length``.
    """
    types = np.asarray(token_types)
    n = len(types)
    if n <= length:
        return np.arange(n)
    prefix = prefix_length(types)
    if prefix >= length:
        raise ValueError(f"the patient prefix has {prefix} tokens, as many as or more than the "
                         f"context length {length}: raise the context length")
    starts = event_starts(types)
    fitting = starts[starts >= n - (length - prefix)]
    first = int(fitting[0]) if len(fitting) else n
    return np.concatenate([np.arange(prefix), np.arange(first, n)])
