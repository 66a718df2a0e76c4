"""Errors the tokenizer raises on purpose, so callers can catch them by name."""

from __future__ import annotations


class NotFittedError(ValueError, AttributeError):
    """An ``EventTokenizer`` was used before ``fit`` (or ``from_pretrained``).

    Subclasses both ``ValueError`` and ``AttributeError`` like scikit-learn's error of the same
    name, so code written against scikit-learn catches it unchanged.
    """


class TokenizerFormatError(ValueError):
    """A saved tokenizer directory cannot be read: wrong format version, bad or missing file."""


class EventsFormatError(ValueError):
    """A MEDS events frame lacks a column, has a column of the wrong dtype, or a null key."""
