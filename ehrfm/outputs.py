"""Claiming a stage's output folder: refuse to clobber earlier results unless told to.

A stage names the files and folders it writes; if any already exists it refuses (naming the
first one) unless ``overwrite``, and then removes exactly those paths, never anything else
in the folder.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> (out / "summary.json").write_text("{}")
2
>>> prepare_output(out, ["summary.json", "data"], overwrite=False)
Traceback (most recent call last):
...
FileExistsError: .../summary.json: already exists; pass overwrite=True (overwrite=true) to replace it
>>> prepare_output(out, ["summary.json", "data"], overwrite=True)
[]
>>> (out / "summary.json").exists()
False
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl

__all__ = ["OutputOverlapsInputError", "ensure_output_dir", "meds_protected", "prepare_output", "refuse_overlap", "write_atomic",
           "write_parquet_atomic", "write_text_atomic"]


class OutputOverlapsInputError(ValueError):
    """The output folder is, contains, or lies inside something the stage reads."""


def refuse_overlap(output: str | Path, protected: Iterable[str | Path], *, key: str = "output") -> None:
    """Refuse an ``output`` that is, contains, or lies inside any ``protected`` path.

    A stage never writes where it reads: with ``overwrite`` it would otherwise delete its own
    inputs (an ingest with ``output`` set to the FHIR folder), and files it writes would be read
    back as input by the next run.

    >>> refuse_overlap("/data/fhir", ["/data/fhir/a.json"])
    Traceback (most recent call last):
    ...
    ehrfm.outputs.OutputOverlapsInputError: output=/data/fhir contains the input /data/fhir/a.json; ...
    >>> refuse_overlap("/data/meds_out", ["/data/fhir"])  # siblings are fine
    """
    out = Path(output).resolve()
    for item in protected:
        path = Path(item).resolve()
        if path == out:
            relation = "is the input"
        elif out in path.parents:
            relation = "contains the input"
        elif path in out.parents:
            relation = "lies inside the input"
        else:
            continue
        raise OutputOverlapsInputError(
            f"{key}={output} {relation} {item}; ehrfm never writes where it reads (with overwrite it "
            "would delete its own input): choose an output folder outside the inputs")


def meds_protected(meds_dir: str | Path) -> list[Path]:
    """What an output must stay clear of when a stage reads the MEDS dataset ``meds_dir``."""
    return [Path(meds_dir) / "data", Path(meds_dir) / "metadata"]


def prepare_output(output: str | Path, owned: Iterable[str | Path], *, overwrite: bool) -> list[Path]:
    """Create ``output``; refuse (or with ``overwrite`` remove) the ``owned`` paths already in it.

    ``owned`` are paths relative to ``output`` (files or folders) that this stage writes.
    Returns the paths that remain afterwards (none: they were removed or never existed).
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"{output}: the output must be a folder, and this is a file")
    ensure_output_dir(output)
    existing = [output / part for part in owned if (output / part).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]}: already exists; pass overwrite=True (overwrite=true) "
                              "to replace it")
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return [p for p in existing if p.exists()]


def ensure_output_dir(output: str | Path) -> Path:
    """Create the output folder, or say plainly why it cannot be written (not a raw OSError)."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"{output}: the output must be a folder, and this is a file")
    blocker = next((parent for parent in output.parents if parent.exists() and not parent.is_dir()), None)
    if blocker is not None:
        raise NotADirectoryError(f"{output}: cannot create the output folder: {blocker} is a file")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise PermissionError(f"{output}: cannot create the output folder (permission denied); "
                              "choose a location you can write to") from None
    if not os.access(output, os.W_OK | os.X_OK):
        raise PermissionError(f"{output}: the output folder is not writable; choose a location you can write to")
    return output


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(temporary)`` on a temporary sibling of ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary sibling, then rename it over ``path``: never a half-written file."""
    return write_atomic(path, lambda temporary: temporary.write_text(text))


def write_parquet_atomic(frame: pl.DataFrame, path: str | Path) -> Path:
    """``frame.write_parquet`` to a temporary sibling, then a rename (see :func:`write_text_atomic`).

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.parquet"
    >>> _ = write_parquet_atomic(pl.DataFrame({"a": [1]}), target)
    >>> sorted(p.name for p in target.parent.iterdir()), pl.read_parquet(target)["a"].to_list()
    (['x.parquet'], [1])
    """
    return write_atomic(path, frame.write_parquet)
