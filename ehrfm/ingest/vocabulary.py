"""FHIR code systems to short vocabulary names, and codes as ``VOCAB/code``.

The table is data: ``vocabularies.yaml`` shipped in this package (MIMIC-IV on FHIR and the usual
US systems), extended by the ingest keys ``vocabularies`` (system URI -> name) and
``vocabulary_files`` (more YAML files in the same layout). :class:`Vocabularies` holds one
such table; the module functions use the shipped one.

>>> code_from_coding({"system": "http://loinc.org", "code": "2160-0"})
'LOINC/2160-0'
>>> code_from_coding({"system": "http://snomed.info/sct", "code": "44054006"})
'SNOMED/44054006'
>>> code_from_coding({"system": "http://mimic.mit.edu/fhir/mimic/CodeSystem/mimic-diagnosis-icd10",
...                   "code": "I6201"})
'ICD10CM/I62.01'
>>> code_from_coding({"system": "http://example.org/fhir/CodeSystem/local-labs", "code": "K1"})
'example.org_fhir_CodeSystem_local-labs~70a59b/K1'
>>> code_from_coding({"code": "K1"})
'NOSYSTEM/K1'
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ehrfm.ingest.code_formats import FORMATS, category

NO_SYSTEM_VOCAB = "NOSYSTEM"
TEXT_VOCAB = "TEXT"  # a CodeableConcept with only text: kept, never dropped
SHIPPED_TABLE = "vocabularies.yaml"

_NON_NAME_CHARS = re.compile(r"[^A-Za-z0-9.\-]+")
_VOCAB_NAME = re.compile(r"[A-Za-z0-9_\-]+")  # no "/" (VOCAB/code splits on it), no "~" (hashed names)
_TABLE_KEYS = frozenset({"vocabularies", "systems", "preferred", "name_identifier_systems"})
_VOCAB_KEYS = frozenset({"format", "code_is_name", "parents"})
# Bounds the per-table cache of normalised codes (ICD has ~100k codes; free-text codes are unbounded).
_CACHE_LIMIT = 500_000


class VocabularyTableError(ValueError):
    """A vocabulary table (shipped, a user file, or the ``vocabularies`` key) is malformed."""


@dataclass(frozen=True)
class VocabularyRules:
    """How one vocabulary writes its codes (see ``vocabularies.yaml``)."""

    format: str = "none"
    code_is_name: bool = False
    parents: tuple[str, ...] = ()


@dataclass
class Vocabularies:
    """One system -> vocabulary table with its per-vocabulary rules, and the lookups ingest makes.

    Lookups are cached per system (a dict hit per coding on the hot path); only vocabularies
    with a format run a normaliser, itself cached per code.

    >>> table = Vocabularies.load(extra={"http://hospital.example/labs": "HOSP_LAB"})
    >>> table.code_from_coding({"system": "http://hospital.example/labs", "code": " K1 "})
    'HOSP_LAB/K1'
    >>> table.code_from_coding({"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "E8889"})
    'ICD9CM/E888.9'
    """

    systems: dict[str, str]
    rules: dict[str, VocabularyRules] = field(default_factory=dict)
    preferred: tuple[str, ...] = ()
    name_identifier_systems: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self._preference = {name: rank for rank, name in enumerate(self.preferred)}
        # system -> (vocabulary name, normaliser or None)
        self._by_system: dict[str | None, tuple[str, Callable[[str], str] | None]] = {}
        self._normalised: dict[tuple[str, str], str] = {}

    # -- building -------------------------------------------------------------------------
    @classmethod
    def load(cls, extra: Mapping[str, str] | None = None, files: Iterable[str | Path] = ()) -> Vocabularies:
        """The shipped table, then each of ``files``, then ``extra`` (system -> name); later wins."""
        shipped = resources.files("ehrfm.ingest").joinpath(SHIPPED_TABLE).read_text(encoding="utf-8")
        tables = [(f"ehrfm/ingest/{SHIPPED_TABLE}", yaml.safe_load(shipped))]
        for path in files:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise VocabularyTableError(f"vocabulary_files: cannot read {path}: {exc}") from None
            tables.append((str(path), yaml.safe_load(text)))
        if extra:
            tables.append(("ingest key 'vocabularies'", {"systems": dict(extra)}))
        systems: dict[str, str] = {}
        rules: dict[str, VocabularyRules] = {}
        preferred: tuple[str, ...] = ()
        names: set[str] = set()
        for source, data in tables:
            _merge(source, data, systems, rules, names)
            if isinstance(data, dict) and data.get("preferred") is not None:
                preferred = tuple(_names(source, "preferred", data["preferred"]))
        return cls(systems, rules, preferred, frozenset(names))

    # -- lookups --------------------------------------------------------------------------
    def names(self) -> set[str]:
        """Every vocabulary name the table can write (not the hashed names of unknown systems)."""
        return {*self.systems.values(), *self.rules, NO_SYSTEM_VOCAB}

    def vocabulary_for_system(self, system: str | None) -> str:
        """Short vocabulary name of a ``Coding.system``; see :func:`vocabulary_for_system`."""
        return self._entry(system)[0]

    def _entry(self, system: str | None) -> tuple[str, Callable[[str], str] | None]:
        hit = self._by_system.get(system)
        if hit is None:
            if not system:
                name = NO_SYSTEM_VOCAB
            else:
                name = self.systems.get(system) or self.systems.get(system.rstrip("/")) or _readable_vocab(system)
            rules = self.rules.get(name)
            hit = (name, FORMATS[rules.format] if rules is not None and rules.format != "none" else None)
            self._by_system[system] = hit
        return hit

    def code_from_coding(self, coding: dict[str, Any]) -> str | None:
        """``VOCAB/code`` for one FHIR Coding (code normalised), or None when it carries no code."""
        code = coding.get("code")
        if not code:
            return None
        system = coding.get("system")
        hit = self._by_system.get(system)  # the hot path: one dict hit per coding
        name, normalise = hit if hit is not None else self._entry(system)
        try:
            code = code.strip()
        except AttributeError:  # a number where FHIR wants a string: kept as its text
            code = str(code).strip()
        if normalise is None:
            return f"{name}/{code}" if code else None
        key = (name, code)
        done = self._normalised.get(key)
        if done is None:
            if len(self._normalised) > _CACHE_LIMIT:
                self._normalised.clear()
            value = normalise(code)
            done = self._normalised[key] = f"{name}/{value}" if value else ""
        return done or None

    def code_from_concept(self, concept: Any) -> tuple[str, str | None] | None:
        """(``VOCAB/code``, display) for a CodeableConcept, or None when it holds nothing usable.

        With several codings, the one from the earliest ``preferred`` vocabulary wins (others keep
        their order after those). The display is the winner's, else the concept's text, else
        another coding's display, else the code itself for a vocabulary whose codes are names.
        """
        if not isinstance(concept, dict):
            return None
        codings = concept.get("coding")
        if type(codings) is list and len(codings) == 1 and type(codings[0]) is dict:
            # The common case (one coding): no ranking needed.
            coding = codings[0]
            code = self.code_from_coding(coding)
            if code is not None:
                return code, coding.get("display") or concept.get("text") or self.name_of(code)
        found = self.codes_of_concept(concept)
        if found:
            best = min(range(len(found)), key=lambda i: (self._rank(found[i][0], i)))
            code, display = found[best]
            display = display or concept.get("text") or next((d for _, d in found if d), None)
            return code, display or self.name_of(code) or next(
                (self.name_of(c) for c, _ in found if self.name_of(c)), None)
        text = concept.get("text")
        if isinstance(text, str) and text.strip():
            return f"{TEXT_VOCAB}/{text.strip()}", text.strip()
        return None

    def codes_of_concept(self, concept: Any) -> list[tuple[str, str | None]]:
        """(``VOCAB/code``, display) of every usable coding of a CodeableConcept, in order."""
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(codings, list):
            return []
        found = []
        for coding in codings:
            if isinstance(coding, dict):
                code = self.code_from_coding(coding)
                if code is not None:
                    display = coding.get("display")
                    found.append((code, display if isinstance(display, str) and display else None))
        return found

    def _rank(self, code: str, position: int) -> int:
        return self._preference.get(code.split("/", 1)[0], len(self._preference) + position)

    def name_of(self, code: str) -> str | None:
        """The code's value when its vocabulary's codes are names (``MIMIC_IV_Drug``), else None."""
        vocab, _, value = code.partition("/")
        rules = self.rules.get(vocab)
        return value if rules is not None and rules.code_is_name else None

    def parents_in_concept(self, found: list[tuple[str, str | None]]) -> list[tuple[str, str]]:
        """(code, parent) pairs the table knows among one concept's codings (NDC -> RxNorm)."""
        pairs = []
        for code, _ in found:
            rules = self.rules.get(code.split("/", 1)[0])
            if rules is None or not rules.parents:
                continue
            pairs.extend((code, other) for other, _ in found
                         if other != code and other.split("/", 1)[0] in rules.parents)
        return pairs

    def parent_codes(self, code: str) -> list[str]:
        """Parents known from the code alone: the 3-character ICD category (``ICD10CM/I62``)."""
        vocab, _, value = code.partition("/")
        head = category(vocab, value)
        return [f"{vocab}/{head}"] if head is not None else []


def _names(source: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and _VOCAB_NAME.fullmatch(v) for v in value):
        raise VocabularyTableError(f"{source}: {key} must be a list of vocabulary names ([A-Za-z0-9_-]), "
                                   f"got {value!r}")
    return value


def _merge(source: str, data: Any, systems: dict[str, str], rules: dict[str, VocabularyRules],
           name_systems: set[str]) -> None:
    """Check one table and fold it into the running one; errors name the source, key and value."""
    if data is None:
        return
    if not isinstance(data, dict):
        raise VocabularyTableError(f"{source}: a vocabulary table is a mapping, got {type(data).__name__}")
    unknown = set(data) - _TABLE_KEYS
    if unknown:
        raise VocabularyTableError(f"{source}: unknown key(s) {sorted(unknown)}; known: {sorted(_TABLE_KEYS)}")
    for system, name in (data.get("systems") or {}).items():
        if not isinstance(system, str) or not system:
            raise VocabularyTableError(f"{source}: systems: a system must be a URI string, got {system!r}")
        if not isinstance(name, str) or not _VOCAB_NAME.fullmatch(name):
            raise VocabularyTableError(f"{source}: systems[{system!r}] must be a vocabulary name "
                                       f"([A-Za-z0-9_-], no '/'), got {name!r}")
        systems[system] = name
    for name, spec in (data.get("vocabularies") or {}).items():
        if not isinstance(name, str) or not _VOCAB_NAME.fullmatch(name):
            raise VocabularyTableError(f"{source}: vocabularies: bad vocabulary name {name!r}")
        spec = spec or {}
        if not isinstance(spec, dict) or set(spec) - _VOCAB_KEYS:
            raise VocabularyTableError(f"{source}: vocabularies.{name} must be a mapping with keys "
                                       f"{sorted(_VOCAB_KEYS)}, got {spec!r}")
        fmt = spec.get("format", "none")
        if fmt not in FORMATS:
            raise VocabularyTableError(f"{source}: vocabularies.{name}.format must be one of "
                                       f"{sorted(FORMATS)}, got {fmt!r}")
        code_is_name = spec.get("code_is_name", False)
        if not isinstance(code_is_name, bool):
            raise VocabularyTableError(f"{source}: vocabularies.{name}.code_is_name must be true/false, "
                                       f"got {code_is_name!r}")
        parents = _names(source, f"vocabularies.{name}.parents", spec.get("parents", []))
        rules[name] = VocabularyRules(fmt, code_is_name, tuple(parents))
    identifiers = data.get("name_identifier_systems") or []
    if not isinstance(identifiers, list) or not all(isinstance(s, str) for s in identifiers):
        raise VocabularyTableError(f"{source}: name_identifier_systems must be a list of URIs, got {identifiers!r}")
    name_systems.update(identifiers)


@functools.lru_cache(maxsize=8)
def _cached(extra: tuple[tuple[str, str], ...], files: tuple[str, ...]) -> Vocabularies:
    return Vocabularies.load(dict(extra), files)


def vocabularies_for(extra: Mapping[str, str] | None = None, files: Iterable[str] = ()) -> Vocabularies:
    """The table for these settings, built once per process (workers ask for it per batch)."""
    return _cached(tuple(sorted((extra or {}).items())), tuple(str(f) for f in files))


def shipped() -> Vocabularies:
    """The table shipped in the package, without user additions."""
    return vocabularies_for()


_readable_cache: dict[str, str] = {}


def _readable_vocab(system: str) -> str:
    cached = _readable_cache.get(system)
    if cached is None:
        bare = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:(//)?", "", system)
        if system.startswith("urn:"):
            bare = system[4:]
        readable = _NON_NAME_CHARS.sub("_", bare).strip("_") or "system"
        # Folding separators can map two URIs to one name; a short digest of the exact URI keeps
        # them apart while the name stays readable and stable across runs.
        digest = hashlib.blake2b(system.encode("utf-8"), digest_size=3).hexdigest()
        cached = f"{readable}~{digest}"
        _readable_cache[system] = cached
    return cached


def vocabulary_for_system(system: str | None) -> str:
    """Short vocabulary name of a FHIR ``Coding.system`` in the shipped table.

    An unknown system gets a stable readable name made from the URI itself (scheme dropped,
    separators turned into ``_``) plus ``~`` and a 6-hex digest of the exact URI, so two
    different systems do not share a name and nothing is dropped.

    >>> vocabulary_for_system("http://loinc.org")
    'LOINC'
    >>> vocabulary_for_system("urn:oid:1.2.3.4")
    'oid_1.2.3.4~5fd4db'
    """
    return shipped().vocabulary_for_system(system)


def code_from_coding(coding: dict[str, Any]) -> str | None:
    """``VOCAB/code`` for one FHIR Coding in the shipped table, or None when it carries no code."""
    return shipped().code_from_coding(coding)


def code_from_concept(concept: Any) -> tuple[str, str | None] | None:
    """(``VOCAB/code``, display) for a CodeableConcept in the shipped table.

    >>> code_from_concept({"coding": [{"system": "http://loinc.org", "code": "8302-2",
    ...                                "display": "Body Height"}]})
    ('LOINC/8302-2', 'Body Height')
    >>> code_from_concept({"text": "Patient feels dizzy"})
    ('TEXT/Patient feels dizzy', 'Patient feels dizzy')
    """
    return shipped().code_from_concept(concept)


def __getattr__(name: str) -> Any:
    # SYSTEM_TO_VOCAB and PREFERRED_VOCABS were module constants; they now come from the YAML table.
    if name == "SYSTEM_TO_VOCAB":
        return dict(shipped().systems)
    if name == "PREFERRED_VOCABS":
        return shipped().preferred
    raise AttributeError(name)
