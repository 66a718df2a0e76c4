"""Concept sets: named code lists that keep task logic apart from each dataset's vocabulary.

A task file names *concepts* (``inpatient_admission``, ``prediabetes``) where it would otherwise
name one dataset's codes; a concept lists every code that means it in the vocabularies ehrfm
writes (SNOMED, ICD-10-CM, ICD-9-CM, HL7 encounter classes, ...), so one task definition labels
Synthea, MIMIC-IV on FHIR and a hospital's own export alike. The concepts that ship with ehrfm
are in ``ehrfm/tasks/concepts.yaml``; a site adds or replaces concepts with a file of the same
layout (``ehrfm label concept_sets=[site_concepts.yaml]``), which is how a local encounter class
or a local diagnosis code joins a built-in task without editing it.

>>> concepts = ConceptSets.load()
>>> concepts["inpatient_admission"].codes
('VISIT_START/IMP', 'VISIT_START/ACUTE', 'VISIT_START/NONAC')
>>> "ICD10CM/R73.03" in concepts["prediabetes"].codes
True
>>> concepts["inpatient_admisson"]
Traceback (most recent call last):
...
ehrfm.tasks.concepts.ConceptError: unknown concept 'inpatient_admisson' (did you mean 'inpatient_admission'?); concepts come from ...
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .yaml_files import UnreadableYamlError, read_yaml_file

__all__ = ["BUILTIN_CONCEPTS_FILE", "Concept", "ConceptError", "ConceptSets"]

BUILTIN_CONCEPTS_FILE = Path(__file__).resolve().parent / "concepts.yaml"
_KEYS = ("description", "codes", "prefixes")


class ConceptError(ValueError):
    """A concept file is invalid or a task names a concept that no file defines."""


@dataclass(frozen=True)
class Concept:
    """One concept: exact ``codes`` and code ``prefixes``, and the file that defined it."""

    name: str
    codes: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    description: str = ""
    source: str = field(default="<mapping>", compare=False)


def _code_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConceptError(f"{where}: expected a list of code strings; got {value!r}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ConceptError(f"{where}[{i}]: expected a non-empty code string; got {item!r}")
    return tuple(value)


def parse_concepts(data: Any, source: str) -> dict[str, Concept]:
    """Validate one concept file's mapping (``name -> {description, codes, prefixes}``)."""
    if not isinstance(data, Mapping):
        raise ConceptError(f"{source}: expected a mapping of concept names to code lists; got {data!r}")
    found: dict[str, Concept] = {}
    for name, body in data.items():
        if not isinstance(name, str) or not name.strip():
            raise ConceptError(f"{source}: concept names must be non-empty strings; got {name!r}")
        if not isinstance(body, Mapping):
            raise ConceptError(f"{source}: {name}: expected a mapping with codes and/or prefixes; got {body!r}")
        for key in body:
            if key not in _KEYS:
                near = difflib.get_close_matches(str(key), _KEYS, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConceptError(f"{source}: {name}.{key}: unknown key {key!r}{hint}; allowed: {', '.join(_KEYS)}")
        description = body.get("description") or ""
        if not isinstance(description, str):
            raise ConceptError(f"{source}: {name}.description: expected text; got {description!r}")
        concept = Concept(name=name, codes=_code_list(body.get("codes"), f"{source}: {name}.codes"),
                          prefixes=_code_list(body.get("prefixes"), f"{source}: {name}.prefixes"),
                          description=description.strip(), source=source)
        if not concept.codes and not concept.prefixes:
            raise ConceptError(f"{source}: {name}: a concept needs at least one entry in codes or prefixes")
        found[name] = concept
    return found


class ConceptSets(Mapping[str, Concept]):
    """The concepts a task may name: the shipped file, then site files (a later name replaces)."""

    def __init__(self, concepts: Mapping[str, Concept], sources: Iterable[str] = ()) -> None:
        self._concepts = dict(concepts)
        self.sources = tuple(sources)

    @classmethod
    def load(cls, files: Iterable[str | Path] = (), *, builtin: bool = True) -> ConceptSets:
        """The shipped concepts (unless ``builtin=False``) extended by ``files``, in order.

        Without files this is the shipped set, read once per process.
        """
        paths = [Path(f) for f in files]
        if builtin and not paths:
            return _builtin_concepts()
        return cls._read(([BUILTIN_CONCEPTS_FILE] if builtin else []) + paths)

    @classmethod
    def _read(cls, paths: list[Path]) -> ConceptSets:
        merged: dict[str, Concept] = {}
        for path in paths:
            try:
                data = read_yaml_file(path, what="concept file")
            except UnreadableYamlError as err:
                raise ConceptError(str(err)) from None
            merged.update(parse_concepts(data, str(path)))
        return cls(merged, [str(p) for p in paths])

    def __getitem__(self, name: str) -> Concept:
        try:
            return self._concepts[name]
        except KeyError:
            near = difflib.get_close_matches(name, list(self._concepts), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConceptError(f"unknown concept {name!r}{hint}; concepts come from "
                               f"{', '.join(self.sources) or 'no file'}: {', '.join(sorted(self._concepts))}"
                               ) from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._concepts)

    def __len__(self) -> int:
        return len(self._concepts)

    def __repr__(self) -> str:
        return f"ConceptSets({len(self)} concepts from {', '.join(self.sources) or 'a mapping'})"


@functools.lru_cache(maxsize=1)
def _builtin_concepts() -> ConceptSets:
    return ConceptSets._read([BUILTIN_CONCEPTS_FILE])
