"""Output folders: clear refusals for files, unwritable places and overlaps with the inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ehrfm.outputs import OutputOverlapsInputError, ensure_output_dir, prepare_output, refuse_overlap


def test_an_output_that_is_a_file_or_lies_under_one_is_named(tmp_path: Path) -> None:
    (tmp_path / "report.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"report.txt: the output must be a folder, and this is a file"):
        prepare_output(tmp_path / "report.txt", ["data"], overwrite=True)
    with pytest.raises(NotADirectoryError, match=r"out: cannot create the output folder: .*report.txt is a file"):
        ensure_output_dir(tmp_path / "report.txt" / "sub" / "out")


def test_an_unwritable_output_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # os.access is what decides (the tests may run as root, who can write anywhere)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match=r"the output folder is not writable"):
        ensure_output_dir(tmp_path / "out")


@pytest.mark.parametrize(("output", "protected", "relation"), [
    ("in", ["in"], "is the input"),
    ("in/out", ["in"], "lies inside the input"),
    (".", ["in/a.json"], "contains the input"),
])
def test_overlaps_are_refused(tmp_path: Path, output: str, protected: list[str], relation: str) -> None:
    with pytest.raises(OutputOverlapsInputError, match=relation):
        refuse_overlap(tmp_path / output, [tmp_path / p for p in protected])


def test_overlap_sees_through_symlinks(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    os.symlink(tmp_path / "in", tmp_path / "alias")
    with pytest.raises(OutputOverlapsInputError, match="is the input"):
        refuse_overlap(tmp_path / "alias", [tmp_path / "in"])
    refuse_overlap(tmp_path / "out", [tmp_path / "in"])  # a sibling is fine


def test_overwrite_goes_by_the_marker(tmp_path: Path) -> None:
    from ehrfm.outputs import MARKER_FILE, NotWrittenByEhrfmError

    out = tmp_path / "out"
    prepare_output(out, ["data", "summary.json"], overwrite=False)
    # a run that died while writing: the claimed parts are already in the marker
    (out / "data").mkdir()
    (out / "data" / "0.parquet").write_text("half")
    (out / "summary.json").write_text("{}")
    (out / "mine.txt").write_text("user")
    assert prepare_output(out, ["data", "summary.json"], overwrite=True) == []
    assert sorted(p.name for p in out.iterdir()) == [MARKER_FILE, "mine.txt"]
    # another stage claiming a user's file in the same folder is refused, and removes nothing
    (out / "summary.json").write_text("{}")
    with pytest.raises(NotWrittenByEhrfmError, match=r"mine.txt: ehrfm did not write this"):
        prepare_output(out, ["summary.json", "mine.txt"], overwrite=True)
    assert (out / "summary.json").exists() and (out / "mine.txt").read_text() == "user"


def test_a_damaged_marker_is_named(tmp_path: Path) -> None:
    from ehrfm.outputs import MARKER_FILE

    (tmp_path / MARKER_FILE).write_text("not json")
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match=r"\.ehrfm-output\.json: not an ehrfm output marker"):
        prepare_output(tmp_path, ["data"], overwrite=True)
    assert (tmp_path / "data").is_dir()
