"""Which files an ingest reads: folders, globs and files in; FHIR files and reasoned leftovers out.

Rules (the same for a folder and for a glob that reaches the same files):

* A file whose name ends in ``.json``, ``.ndjson`` or ``.jsonl``, optionally followed by a
  compression suffix (``.gz``, ``.bz2``, ``.xz``, ``.zst``, ``.zstd``), is read. So is any other
  file whose decoded content starts like JSON (``{`` or ``[``): exports with no extension or an
  unusual one are not lost. A Git LFS pointer is read too, so that it is reported as one.
* Everything else is *ignored with a reason* (``not JSON``, ``hidden``, ``broken symbolic
  link``, ...), and the reasons are counted in the ingest summary: nothing is skipped silently.
* Symbolic links to files and folders are followed. Each real folder is searched once, so a link
  loop ends the walk instead of repeating it.
* Names starting with ``.`` are hidden (``.git``, editor files, ehrfm's own scratch folders):
  hidden folders are not searched, hidden files are ignored, each with that reason.
* A file named explicitly is always read, whatever its name.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ehrfm.ingest.byte_streams import LFS_POINTER_PREFIX, UnsupportedFile, sniff

FHIR_NAME = re.compile(r"\.(json|ndjson|jsonl)(\.(gz|bz2|xz|zst|zstd))?$", re.IGNORECASE)
_GLOB_MAGIC = re.compile(r"[*?\[]")


class InputError(ValueError):
    """An input path that names no readable FHIR file."""


@dataclass
class Discovery:
    """The files to read (sorted, de-duplicated by real path) and the ones left aside, with why."""

    files: list[Path] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def ignored_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(reason for _, reason in self.ignored).items()))


def discover_inputs(inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> Discovery:
    """Every FHIR file named by ``inputs`` (files, folders searched recursively, globs).

    Raises :class:`InputError` naming an input that does not exist or holds no FHIR file.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: dict[Path, None] = {}
    ignored: list[tuple[str, str]] = []
    for item in inputs:
        text = os.fspath(item)
        mine = Discovery()
        if _GLOB_MAGIC.search(text):
            _glob(text, mine)
        else:
            path = Path(text)
            if path.is_dir():
                _walk(path, mine, set())
            elif path.is_file():
                mine.files.append(path)
            elif path.is_symlink():
                raise InputError(f"input {text!r} is a broken symbolic link")
            else:
                raise InputError(f"input {text!r} does not exist")
        if not mine.files:
            why = "; ".join(f"{n} {r}" for r, n in mine.ignored_by_reason().items())
            raise InputError(f"input {text!r} holds no FHIR files (looked for .json, .ndjson and .jsonl, "
                             f"compressed or not, and for JSON content){f': ignored {why}' if why else ''}")
        for path in mine.files:
            found.setdefault(path.resolve(), None)
        ignored.extend(mine.ignored)
    return Discovery(sorted(found), sorted(set(ignored)))


def discover_files(inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[Path]:
    """The files :func:`discover_inputs` would read, sorted by real path."""
    return discover_inputs(inputs).files


def _consider(path: Path, into: Discovery) -> None:
    """Decide about one file met while walking a folder or expanding a glob."""
    if path.name.startswith("."):
        into.ignored.append((str(path), "hidden"))
    elif not path.exists():
        into.ignored.append((str(path), "broken symbolic link"))
    elif not path.is_file():
        into.ignored.append((str(path), "not a regular file"))
    elif FHIR_NAME.search(path.name):
        into.files.append(path)
    else:
        reason = _content_reason(path)
        if reason is None:
            into.files.append(path)
        else:
            into.ignored.append((str(path), reason))


def _content_reason(path: Path) -> str | None:
    """None when the file's content looks like JSON (or must be reported when read), else why not."""
    try:
        head = sniff(path)
    except (OSError, UnsupportedFile, EOFError, ValueError):
        return None  # the reader reports what is wrong with it, as a reject
    if head.startswith((b"{", b"[")) or head.startswith(LFS_POINTER_PREFIX):
        return None
    return "not JSON" if head else "empty, not JSON"


def _walk(root: Path, into: Discovery, seen: set[tuple[int, int]]) -> None:
    for path, is_dir in _entries(root, seen, into):
        if not is_dir:
            _consider(path, into)


def _entries(root: Path, seen: set[tuple[int, int]], into: Discovery,
             depth: int | None = None) -> Iterator[tuple[Path, bool]]:
    """Every entry below ``root`` (depth first, sorted), following links, each real folder once.

    ``depth`` (None: unlimited) is how many levels of entries to list.
    """
    if depth is not None and depth <= 0:
        return
    try:
        stat = root.stat()
    except OSError as exc:
        into.ignored.append((str(root), f"unreadable folder ({exc.strerror})"))
        return
    identity = (stat.st_dev, stat.st_ino)
    if identity in seen:
        into.ignored.append((str(root), "folder already searched (symbolic link)"))
        return
    seen.add(identity)
    try:
        children = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError as exc:
        into.ignored.append((str(root), f"unreadable folder ({exc.strerror})"))
        return
    for entry in children:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()  # follows symbolic links
        except OSError:
            is_dir = False
        if is_dir:
            if entry.name.startswith("."):
                into.ignored.append((str(path), "hidden folder"))
                continue
            yield path, True
            yield from _entries(path, seen, into, None if depth is None else depth - 1)
        else:
            yield path, False


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob over ``/``-separated paths: ``**`` spans folders, ``*`` and ``?`` do not.

    >>> bool(glob_regex("a/**/*.json").match("a/b/c/x.json")), bool(glob_regex("a/*.json").match("a/b/x.json"))
    (True, False)
    >>> bool(glob_regex("a/**").match("a/b/c")), bool(glob_regex("a/[xy]*").match("a/yz"))
    (True, True)
    """
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := _class_end(pattern, i)) > 0:
            body = pattern[i + 1:end]
            if body[0] in "!^":
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _class_end(pattern: str, start: int) -> int:
    """Index of the ``]`` closing the character class opened at ``start``, or -1."""
    j = start + 1
    if j < len(pattern) and pattern[j] in "!^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    return pattern.find("]", j)


def _glob(pattern: str, into: Discovery) -> None:
    """Files matching ``pattern``; matched folders are searched whole, as a folder input is."""
    normalized = pattern.replace(os.sep, "/")
    parts = normalized.split("/")
    fixed = next(i for i, part in enumerate(parts) if _GLOB_MAGIC.search(part))
    base = Path("/".join(parts[:fixed]) or ("/" if normalized.startswith("/") else "."))
    if not base.is_dir():
        return
    rest = parts[fixed:]
    regex = glob_regex("/".join(rest))
    depth = None if any("**" in part for part in rest) else len(rest)
    seen: set[tuple[int, int]] = set()
    matched_dirs: list[Path] = []
    for path, is_dir in _entries(base, set(), Discovery(), depth):
        relative = path.relative_to(base).as_posix()
        if not regex.match(relative):
            continue
        if is_dir:
            if not any(parent in matched_dirs for parent in path.parents):
                matched_dirs.append(path)
        elif not any(parent in matched_dirs for parent in path.parents):
            _consider(path, into)
    for folder in matched_dirs:
        _walk(folder, into, seen)
