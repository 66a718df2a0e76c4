"""The examples in the tokenizer's docstrings and in tokenizers/README.md run as written."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = [
    "ehrfm.tokenize",
    "ehrfm.tokenize.decode",
    "ehrfm.tokenize.distinct",
    "ehrfm.tokenize.events",
    "ehrfm.tokenize.sequence_schema",
    "ehrfm.tokenize.stage",
    "ehrfm.tokenize.time_tokens",
    "ehrfm.tokenize.tokenizer",
    "ehrfm.tokenize.value_bins",
    "ehrfm.tokenize.vocabulary",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_readme_examples() -> None:
    result = doctest.testfile(str(REPO / "tokenizers" / "README.md"), module_relative=False)
    assert result.attempted > 0 and result.failed == 0
