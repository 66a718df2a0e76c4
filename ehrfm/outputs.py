"""Claiming a stage's output folder: refuse to clobber earlier results unless told to.

A stage names the files and folders it writes; if any already exists it refuses (naming the
first one) unless ``overwrite``. Each claimed part is recorded in the folder's marker
(``.ehrfm-output.json``) before the stage writes it, and ``overwrite`` removes only parts that
the marker lists: what ehrfm wrote. A user's own ``data/`` in the folder is never removed.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> prepare_output(out, ["summary.json", "data"], overwrite=False)
[]
>>> (out / "summary.json").write_text("{}")  # what the stage writes
2
>>> prepare_output(out, ["summary.json", "data"], overwrite=False)
Traceback (most recent call last):
...
FileExistsError: .../summary.json: already exists; pass overwrite=True (overwrite=true) to replace it
>>> prepare_output(out, ["summary.json", "data"], overwrite=True)
[]
>>> (out / "summary.json").exists()
False
>>> (out / "notes.txt").write_text("mine")  # not ehrfm's: overwrite refuses to remove it
4
>>> prepare_output(out, ["notes.txt"], overwrite=True)
Traceback (most recent call last):
...
ehrfm.outputs.NotWrittenByEhrfmError: .../notes.txt: ehrfm did not write this ...
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import polars as pl

__all__ = ["MARKER_FILE", "NotWrittenByEhrfmError", "OutputInUseError", "OutputOverlapsInputError", "ensure_output_dir",
           "exclusive_output", "meds_protected", "prepare_output", "record_written", "refuse_overlap", "remove_written", "write_atomic", "write_parquet_atomic",
           "write_text_atomic"]

MARKER_FILE = ".ehrfm-output.json"
"""The marker in an output folder: which of its parts ehrfm wrote (the only ones ``overwrite`` removes)."""


class OutputOverlapsInputError(ValueError):
    """The output folder is, contains, or lies inside something the stage reads."""


class OutputInUseError(RuntimeError):
    """Another ehrfm run is writing to the same output folder right now."""


class NotWrittenByEhrfmError(FileExistsError):
    """``overwrite`` found a part that the folder's marker does not say ehrfm wrote."""


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

    ``owned`` are paths relative to ``output`` (files or folders) that this stage writes; they are
    recorded in the marker before the stage writes them, so a run that dies half-way can be
    overwritten too. Returns the paths that remain afterwards (none: they were removed or never
    existed).
    """
    output = ensure_output_dir(output)
    owned = [Path(part) for part in owned]
    existing = [output / part for part in owned if (output / part).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]}: already exists; pass overwrite=True (overwrite=true) "
                              "to replace it")
    remove_written(output, existing)
    record_written(output, owned)
    return [p for p in existing if p.exists()]


def _marker_parts(output: Path) -> set[str]:
    marker = output / MARKER_FILE
    if not marker.is_file():
        return set()
    try:
        parts = json.loads(marker.read_text())["parts"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{marker}: not an ehrfm output marker ({error}); remove it, and the outputs "
                         "it was meant to describe, by hand") from None
    return {str(part) for part in parts}


def record_written(output: str | Path, parts: Iterable[str | Path]) -> None:
    """Add ``parts`` (relative to ``output``) to the folder's marker: ehrfm writes them."""
    output = Path(output)
    known = _marker_parts(output)
    wanted = known | {Path(part).as_posix() for part in parts}
    if wanted != known:
        write_text_atomic(output / MARKER_FILE, json.dumps({"written_by": "ehrfm", "parts": sorted(wanted)},
                                                           indent=2) + "\n")


def remove_written(output: str | Path, paths: Iterable[str | Path]) -> None:
    """Remove ``paths`` (inside ``output``), each of which the marker must list; else remove none.

    Refusing as a whole keeps a folder either as it was or fully cleared of ehrfm's parts.
    """
    output = Path(output)
    paths = [Path(path) for path in paths if Path(path).exists() or Path(path).is_symlink()]
    known = _marker_parts(output)
    for path in paths:
        if path.relative_to(output).as_posix() not in known:
            raise NotWrittenByEhrfmError(
                f"{path}: ehrfm did not write this (it is not listed in {output / MARKER_FILE}), so "
                "overwrite will not remove it; move it away, or choose another output folder")
    for path in paths:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


@contextlib.contextmanager
def exclusive_output(output: str | Path, stage: str) -> Iterator[Path]:
    """Hold ``output`` for one run of ``stage``: a second run into the same folder is refused.

    The lock (an advisory ``flock`` on a file in the folder) dies with the process that holds it,
    so a killed run never blocks the next one; while it is held, nothing another run left in the
    folder (its scratch space, its half-written parts) can be in use by a live process.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with exclusive_output(folder, "ingest"):
    ...     with exclusive_output(folder, "ingest"):
    ...         pass
    Traceback (most recent call last):
    ...
    ehrfm.outputs.OutputInUseError: ...: another ehrfm ingest is writing to this folder now; ...
    """
    output = ensure_output_dir(output)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): runs are not guarded against each other
        yield output
        return
    with open(output / f".ehrfm-{stage}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputInUseError(f"{output}: another ehrfm {stage} is writing to this folder now; wait for it "
                                   "to finish, or choose another output") from None
        try:
            yield output
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
