"""Progress bars for the long stages: visible in a terminal, silent in logs.

Every stage that runs long (ingest, tokenize, label, evaluate, score) reports through
:func:`progress_bar`, so all of them behave the same way:

* on a terminal (stderr is a TTY) a tqdm bar with the count, the rate and the time left;
* in a CI log, a batch job's output file or a pipe, nothing: a bar redrawn with carriage
  returns is a wall of noise there, and the stage's summary line says what was done;
* ``EHRFM_PROGRESS=1`` forces bars on (e.g. ``tail -f`` on a Slurm log), ``EHRFM_PROGRESS=0``
  forces them off (a terminal shared with other output).

>>> bar = progress_bar(total=3, desc="demo", unit="file")  # stderr is not a terminal here
>>> bar.disable
True
>>> bar.close()
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_enabled", "track"]

T = TypeVar("T")
ENV = "EHRFM_PROGRESS"


def progress_enabled() -> bool | None:
    """``True``/``False`` when ``EHRFM_PROGRESS`` forces bars on or off, else ``None`` (tqdm's
    rule: shown only when stderr is a terminal)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    return None


def progress_bar(*, total: int | float | None, desc: str, unit: str = "it", **options: Any) -> tqdm:
    """A tqdm bar for one stage step; ``desc`` names the step (``"ingest"``, ``"labels"``).

    Redrawn at most once a second: the bars run beside worker processes on a few cores."""
    forced = progress_enabled()
    return tqdm(total=total, desc=desc, unit=unit, disable=None if forced is None else not forced,
                mininterval=1.0, dynamic_ncols=True, leave=False, **options)


def track(items: Iterable[T], *, desc: str, unit: str = "it", total: int | None = None) -> Iterator[T]:
    """``items`` with a progress bar over them (the length is taken from ``items`` if it has one).

    >>> list(track([1, 2, 3], desc="demo"))
    [1, 2, 3]
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(total=total, desc=desc, unit=unit) as bar:
        for item in items:
            yield item
            bar.update(1)
