"""Every docstring example in the ehrfm package, and in tokenizers/README.md, runs as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import ehrfm

REPO = Path(__file__).resolve().parents[1]
MODULES = sorted(
    ["ehrfm"] + [info.name for info in pkgutil.walk_packages(ehrfm.__path__, prefix="ehrfm.")]
)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHRFM_CACHE", str(tmp_path))
    result = doctest.testmod(importlib.import_module(name), optionflags=FLAGS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_tokenizers_readme_examples() -> None:
    result = doctest.testfile(str(REPO / "tokenizers" / "README.md"), module_relative=False, optionflags=FLAGS)
    assert result.attempted > 0 and result.failed == 0
