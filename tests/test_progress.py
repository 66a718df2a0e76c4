"""Progress bars: on when forced or on a terminal, silent in logs (no carriage-return walls)."""

from __future__ import annotations

import io

import pytest

from ehrfm.progress import progress_bar, progress_enabled, track


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("on", True), ("0", False), ("off", False),
                                                 ("", None), ("maybe", None)])
def test_the_environment_variable_forces_bars_on_or_off(value: str, expected: bool | None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHRFM_PROGRESS", value)
    assert progress_enabled() is expected


def test_a_log_file_gets_no_bar_and_a_terminal_gets_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EHRFM_PROGRESS", raising=False)
    log, terminal = io.StringIO(), _Terminal()
    for stream in (log, terminal):
        with progress_bar(total=4, desc="ingest", unit="file", file=stream) as bar:
            bar.update(4)
    assert log.getvalue() == ""
    assert "ingest:" in terminal.getvalue() and "/4 " in terminal.getvalue()  # drawn (cleared at the end)


def test_forced_off_silences_a_terminal_and_forced_on_shows_in_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHRFM_PROGRESS", "0")
    terminal = _Terminal()
    with progress_bar(total=2, desc="labels", file=terminal) as bar:
        bar.update(2)
    assert terminal.getvalue() == ""
    monkeypatch.setenv("EHRFM_PROGRESS", "1")
    log = io.StringIO()
    with progress_bar(total=2, desc="labels", file=log) as bar:
        bar.update(2)
    assert "labels:" in log.getvalue() and "/2 " in log.getvalue()


def test_track_yields_every_item_in_order() -> None:
    assert list(track(iter("abc"), desc="x")) == ["a", "b", "c"]
