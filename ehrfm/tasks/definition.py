"""A clinical prediction task as frozen, validated dataclasses, parsed from a plain mapping.

The mapping is what a task YAML file holds (see ``ehrfm/tasks/builtin/*.yaml``). Parsing is
strict: unknown keys, wrong types and bad values raise :class:`TaskDefinitionError`, whose
message names the file, the key path and quotes the bad value.

Time rules (the labeler implements exactly these):

* ``prediction_time = trigger time + trigger.offset``. Model inputs hold only events strictly
  before ``prediction_time``, so ``offset: 1s`` lets the trigger event itself into the input.
* The prediction window is ``(prediction_time + start, prediction_time + end]``: open at the
  start, so an outcome is always strictly after the prediction time and never in the input,
  whether a reader cuts inputs before the prediction time (ehrfm) or at it (the MEDS label
  convention). ``end: null`` means "until the subject's last record".

>>> task = TaskDefinition.from_mapping({
...     "name": "readmission_30d", "prompt_token": "[TASK_001]",
...     "trigger": {"codes": ["VISIT_END/IMP"], "offset": "1s"},
...     "prediction_window": {"end": "30d"},
...     "label": {"codes": ["VISIT_START/IMP"]},
... })
>>> task.trigger.offset, task.window.end, task.sampling.max_per_subject
(datetime.timedelta(seconds=1), datetime.timedelta(days=30), None)
>>> TaskDefinition.from_mapping({"name": "x", "prompt_token": "[TASK_001]", "trigerr": {}}, source="x.yaml")
Traceback (most recent call last):
...
ehrfm.tasks.definition.TaskDefinitionError: x.yaml: trigerr: unknown key 'trigerr' (did you mean 'trigger'?);
allowed: name, description, prompt_token, trigger, observation, prediction_window, label, exclusions, sampling
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ehrfm.schema import CODE
from ehrfm.tokenize.vocabulary import task_token

from .concepts import ConceptError, ConceptSets
from .durations import format_duration, parse_duration

# The tokenizer reserves [TASK_000]..[TASK_015] by default (EventTokenizer(num_task_tokens=16)).
NUM_PROMPT_TOKENS = 16
PROMPT_TOKENS: tuple[str, ...] = tuple(task_token(i) for i in range(NUM_PROMPT_TOKENS))
_NAME = re.compile(r"[a-z][a-z0-9_]*")  # the name is also the label file's name


class TaskDefinitionError(ValueError):
    """A task file or mapping is invalid; the message names the file, the key and the value."""


@dataclass(frozen=True)
class CodeMatch:
    """Codes matched exactly (``codes``) or by prefix (``prefixes``, e.g. ``VISIT_END/``)."""

    codes: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.codes and not self.prefixes

    def expr(self, column: str = CODE) -> pl.Expr:
        """A boolean Polars expression: does ``column`` match? (Always false when empty.)

        >>> match = CodeMatch(codes=("MEDS_DEATH",), prefixes=("VISIT_END/",))
        >>> codes = pl.DataFrame({"code": ["MEDS_DEATH", "VISIT_END/IMP", "VISIT_START/IMP"]})
        >>> codes.filter(match.expr())["code"].to_list()
        ['MEDS_DEATH', 'VISIT_END/IMP']
        """
        conditions = [pl.col(column).is_in(list(self.codes))] if self.codes else []
        conditions += [pl.col(column).str.starts_with(prefix) for prefix in self.prefixes]
        return pl.any_horizontal(conditions) if conditions else pl.lit(False)


@dataclass(frozen=True)
class Trigger:
    """Which events create prediction times, and how long after them the prediction is made."""

    match: CodeMatch
    offset: dt.timedelta


@dataclass(frozen=True)
class Observation:
    """What must be known at the prediction time for it to count."""

    min_history: dt.timedelta = dt.timedelta(0)  # first timed record (not MEDS_BIRTH) this long before
    min_age_years: float | None = None  # age at prediction time >= this (needs MEDS_BIRTH)
    max_age_years: float | None = None  # age at prediction time <= this


@dataclass(frozen=True)
class PredictionWindow:
    """``(prediction_time + start, prediction_time + end]``; ``end=None``: until the last record."""

    start: dt.timedelta = dt.timedelta(0)
    end: dt.timedelta | None = None


@dataclass(frozen=True)
class LabelRule:
    """Positive when an event matching ``match`` falls in the window (inverted when ``negate``)."""

    match: CodeMatch
    same_encounter: bool = False  # only events of the trigger's encounter_id count
    negate: bool = False  # "no such event within the window" tasks, e.g. long stay


@dataclass(frozen=True)
class Exclusions:
    """Prediction times dropped before labelling (prediction times at/after death always are)."""

    history: CodeMatch = field(default_factory=CodeMatch)  # a match at or before prediction_time
    encounter_ended: bool = False  # the trigger's encounter ended at or before prediction_time


@dataclass(frozen=True)
class Sampling:
    """At most ``max_per_subject`` prediction times per subject, chosen by a seeded hash."""

    max_per_subject: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class TaskDefinition:
    """One binary prediction task; build it with :meth:`from_mapping` or ``load_task``."""

    name: str
    prompt_token: str
    trigger: Trigger
    window: PredictionWindow
    label: LabelRule
    description: str = ""
    observation: Observation = field(default_factory=Observation)
    exclusions: Exclusions = field(default_factory=Exclusions)
    sampling: Sampling = field(default_factory=Sampling)
    source: str = field(default="<mapping>", compare=False)  # file it came from, for messages

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "<mapping>",
                     concepts: ConceptSets | None = None) -> TaskDefinition:
        """Validate a task mapping (a parsed YAML file); errors name ``source`` and the key.

        ``concepts`` resolves the concept names that ``trigger``, ``label`` and
        ``exclusions.history`` list under ``concepts:`` (default: ehrfm's shipped concept sets);
        the definition holds the resolved codes and prefixes.
        """
        return _parse_task(_Node(data, source, ""), concepts)

    def to_mapping(self) -> dict[str, Any]:
        """The task as a plain mapping in the YAML layout; ``from_mapping`` reads it back."""

        def codes(match: CodeMatch) -> dict[str, list[str]]:
            return {"codes": list(match.codes), "prefixes": list(match.prefixes)}

        return {
            "name": self.name,
            "description": self.description,
            "prompt_token": self.prompt_token,
            "trigger": {**codes(self.trigger.match), "offset": format_duration(self.trigger.offset)},
            "observation": {
                "min_history": format_duration(self.observation.min_history),
                "min_age_years": self.observation.min_age_years,
                "max_age_years": self.observation.max_age_years,
            },
            "prediction_window": {
                "start": format_duration(self.window.start),
                "end": None if self.window.end is None else format_duration(self.window.end),
            },
            "label": {**codes(self.label.match), "same_encounter": self.label.same_encounter,
                      "negate": self.label.negate},
            "exclusions": {"history": codes(self.exclusions.history),
                           "encounter_ended": self.exclusions.encounter_ended},
            "sampling": dataclasses.asdict(self.sampling),
        }


# -- parsing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """A value inside the task mapping plus where it sits, so every error can say so."""

    value: Any
    source: str
    path: str

    def fail(self, problem: str) -> TaskDefinitionError:
        where = f"{self.source}: {self.path or '<top level>'}"
        return TaskDefinitionError(f"{where}: {problem}; got {_quote(self.value)}")

    def child(self, key: str) -> _Node:
        return _Node(self.value.get(key), self.source, f"{self.path}.{key}" if self.path else key)

    def mapping(self, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> _Node:
        if not isinstance(self.value, Mapping):
            raise self.fail("expected a mapping of keys to values")
        for key in self.value:
            if key not in allowed:
                near = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                path = f"{self.path}.{key}" if self.path else str(key)
                raise TaskDefinitionError(
                    f"{self.source}: {path}: unknown key {str(key)!r}{hint}; allowed: {', '.join(allowed)}")
        for key in required:
            if key not in self.value:
                where = f"{self.path}.{key}" if self.path else key
                raise TaskDefinitionError(f"{self.source}: {where}: required key is missing")
        return self


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _string(node: _Node, *, allow_empty: bool = False) -> str:
    if isinstance(node.value, list) and len(node.value) == 1 and node.path.endswith("prompt_token"):
        # YAML reads an unquoted [TASK_000] as a one-element list.
        raise node.fail('expected a string; quote it in YAML: prompt_token: "[TASK_000]"')
    if not isinstance(node.value, str):
        raise node.fail(f"expected a string, not {type(node.value).__name__}")
    if not allow_empty and not node.value.strip():
        raise node.fail("must not be empty")
    return node.value


def _bool(node: _Node, default: bool) -> bool:
    if node.value is None:
        return default
    if not isinstance(node.value, bool):
        raise node.fail("expected true or false")
    return node.value


def _duration(node: _Node, default: dt.timedelta | None = None) -> dt.timedelta | None:
    if node.value is None:
        return default
    if not isinstance(node.value, str):
        raise node.fail(f"expected a duration string like '24h', not {type(node.value).__name__}")
    try:
        return parse_duration(node.value)
    except ValueError as err:
        raise node.fail(str(err)) from None


def _age(node: _Node) -> float | None:
    if node.value is None:
        return None
    if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
        raise node.fail("expected a number")
    if not 0 <= node.value <= 150:
        raise node.fail("expected an age in years between 0 and 150")
    return float(node.value)


def _integer(node: _Node, *, minimum: int, nullable: bool) -> int | None:
    if node.value is None and nullable:
        return None
    if isinstance(node.value, bool) or not isinstance(node.value, int):
        raise node.fail("expected a whole number" + (" or null" if nullable else ""))
    if node.value < minimum:
        raise node.fail(f"must be >= {minimum}")
    return node.value


def _code_list(node: _Node) -> tuple[str, ...]:
    if node.value is None:
        return ()
    if isinstance(node.value, str):
        raise node.fail(f"expected a list of codes; write [{node.value}]")
    if not isinstance(node.value, list):
        raise node.fail("expected a list of codes")
    for i, item in enumerate(node.value):
        if not isinstance(item, str) or not item.strip():
            raise _Node(item, node.source, f"{node.path}[{i}]").fail("expected a non-empty code string")
    return tuple(node.value)


def _code_match(node: _Node, *, required: bool, concepts: ConceptSets | None) -> CodeMatch:
    codes, prefixes = list(_code_list(node.child("codes"))), list(_code_list(node.child("prefixes")))
    named = node.child("concepts")
    for i, name in enumerate(_code_list(named)):
        try:
            concept = (concepts if concepts is not None else ConceptSets.load())[name]
        except ConceptError as err:
            raise _Node(name, node.source, f"{named.path}[{i}]").fail(str(err)) from None
        codes += [c for c in concept.codes if c not in codes]
        prefixes += [p for p in concept.prefixes if p not in prefixes]
    match = CodeMatch(codes=tuple(codes), prefixes=tuple(prefixes))
    if required and match.is_empty:
        raise node.fail("needs at least one entry in 'codes', 'prefixes' or 'concepts'")
    return match


def _parse_task(root: _Node, concepts: ConceptSets | None) -> TaskDefinition:
    root.mapping(("name", "description", "prompt_token", "trigger", "observation", "prediction_window",
                  "label", "exclusions", "sampling"),
                 required=("name", "prompt_token", "trigger", "prediction_window", "label"))
    name = _string(root.child("name"))
    if not _NAME.fullmatch(name):
        raise root.child("name").fail("expected lowercase letters, digits and '_', starting with a letter "
                                      "(it names the label file)")
    described = root.child("description")
    description = "" if described.value is None else _string(described, allow_empty=True)
    prompt = root.child("prompt_token")
    prompt_token = _string(prompt)
    if prompt_token not in PROMPT_TOKENS:
        raise prompt.fail("expected one of the tokenizer's reserved tokens "
                          f"{PROMPT_TOKENS[0]}..{PROMPT_TOKENS[-1]}")

    node = root.child("trigger").mapping(("codes", "prefixes", "concepts", "offset"), required=("offset",))
    offset = _duration(node.child("offset"))
    if offset is None:  # no default on purpose: the offset decides whether the trigger is input
        raise node.child("offset").fail("expected a duration such as '0s' or '1s', not null")
    trigger = Trigger(match=_code_match(node, required=True, concepts=concepts), offset=offset)

    node = root.child("observation")
    if node.value is None:
        observation = Observation()
    else:
        node.mapping(("min_history", "min_age_years", "max_age_years"))
        observation = Observation(
            min_history=_duration(node.child("min_history"), dt.timedelta(0)),  # type: ignore[arg-type]
            min_age_years=_age(node.child("min_age_years")),
            max_age_years=_age(node.child("max_age_years")),
        )
        if (observation.min_age_years is not None and observation.max_age_years is not None
                and observation.min_age_years > observation.max_age_years):
            raise node.child("max_age_years").fail(
                f"must be >= min_age_years ({observation.min_age_years:g})")

    node = root.child("prediction_window").mapping(("start", "end"), required=("end",))
    window = PredictionWindow(start=_duration(node.child("start"), dt.timedelta(0)),  # type: ignore[arg-type]
                              end=_duration(node.child("end")))
    if window.end is not None and window.end <= window.start:
        raise node.child("end").fail(f"must be longer than start ({format_duration(window.start)})")

    node = root.child("label").mapping(("codes", "prefixes", "concepts", "same_encounter", "negate"))
    label = LabelRule(match=_code_match(node, required=True, concepts=concepts),
                      same_encounter=_bool(node.child("same_encounter"), False),
                      negate=_bool(node.child("negate"), False))

    node = root.child("exclusions")
    if node.value is None:
        exclusions = Exclusions()
    else:
        node.mapping(("history", "encounter_ended"))
        history = node.child("history")
        if history.value is not None:
            history.mapping(("codes", "prefixes", "concepts"))
        exclusions = Exclusions(history=(_code_match(history, required=False, concepts=concepts)
                                         if history.value is not None
                                         else CodeMatch()),
                                encounter_ended=_bool(node.child("encounter_ended"), False))

    node = root.child("sampling")
    if node.value is None:
        sampling = Sampling()
    else:
        node.mapping(("max_per_subject", "seed"))
        sampling = Sampling(max_per_subject=_integer(node.child("max_per_subject"), minimum=1, nullable=True),
                            seed=_integer(node.child("seed"), minimum=0, nullable=True) or 0)

    return TaskDefinition(name=name, description=description.strip(), prompt_token=prompt_token,
                          trigger=trigger, window=window, label=label, observation=observation,
                          exclusions=exclusions, sampling=sampling, source=root.source)
