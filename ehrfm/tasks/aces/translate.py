"""ACES task config -> ehrfm task mapping: what maps is translated exactly, the rest is refused.

ACES (``es-aces``, the task language of the MEDS ecosystem) describes a cohort as predicates
over codes, a trigger predicate and a tree of windows hanging off the trigger, each window
bounded by time offsets (``trigger + 24h``, ``start + 365d``), the record's start/end (``null``)
or the next/previous event of a predicate (``start -> discharge``), and constrained by counts
(``has: {death: (None, 0)}``). ehrfm's task model is narrower: one trigger, one prediction time at
a fixed offset, one fixed-length outcome window after it, history exclusions and an age floor.
Every ACES feature is either translated so that both label the same rows (before ehrfm's
post-steps, see below), or refused with the file, the window or predicate and the feature named.

============================================  ================================================
ACES                                          ehrfm
============================================  ================================================
predicate ``code: X``                         ``codes: [X]``
predicate ``code: {any: [X, Y]}``             ``codes: [X, Y]``
predicate ``code: {regex: "^X"}`` /           ``prefixes: [X]`` / ``codes: [X]`` (a literal after
``{regex: "^X$"}``                            ``^``; ``.*`` at the end is allowed); other regexes
                                              are refused
predicate ``expr: or(a, b)``                  the union of a's and b's codes and prefixes
``trigger: p``                                ``trigger`` codes/prefixes of ``p``
window with ``index_timestamp``, at           ``trigger.offset: d`` (``prediction_time = trigger +
``trigger + d``                               d``; ``d >= 0``, whole seconds)
window with ``label: p`` from ``pt + a``      ``prediction_window: {start: a, end: b}`` and the
(``start_inclusive: false``) to ``pt + b``    ``label`` codes of ``p``; ACES's count > 0 is
(``end_inclusive: true``), no ``has``         ehrfm's ``boolean_value``
``has: {p: (None, 0)}`` on a window from      ``exclusions.history`` codes of ``p``. ``MEDS_DEATH``
``null`` (``start_inclusive: true``) to the   is dropped from them: ehrfm always excludes
prediction time (``end_inclusive: true``)     prediction times at or after death
``has: {b: (1, None)}``, ``b`` exactly        ``observation.min_age_years: D / 365.25d``
``MEDS_BIRTH``, on a window from ``null`` to  (ehrfm's age is in 365.25-day years, so both keep
``pt - D`` (both ends inclusive)              ``prediction_time - birth >= D``)
windows without ``has``, ``label`` or         nothing (they do not filter rows)
``index_timestamp``; ``description``,
``metadata``
============================================  ================================================

Refused, naming the feature: ``value_min``/``value_max`` and other-column predicates (ehrfm
matches codes only), ``and(...)`` (ehrfm matches single events, ACES co-occurrence at one
timestamp), ``static``/``patient_demographics``, the special predicates as trigger, label or
constraint (``_RECORD_START``: ACES's record starts at the first timed event, ``MEDS_BIRTH``
included, ehrfm's ``min_history`` at the first other one; ``_ANY_EVENT``: ehrfm has no minimum
event count; ``_RECORD_END``: see censoring below), event-bound boundaries (``start -> p``,
``end <- p``: ehrfm's windows have fixed lengths), windows to the end of the record (``end:
null``), counts other than ``(None, 0)`` (and ``(1, None)`` for the age floor), constraints on
windows other than "record start to the prediction time", inclusivity other than ehrfm's
``(pt + start, pt + end]``, and durations in months or years (pytimeparse, which ACES uses, has
none either).

Post-steps that ehrfm applies to every task, and that an ACES config cannot say
(:func:`ehrfm.tasks.aces.apply_ehrfm_post_steps` applies them to ACES's own rows):

* censoring: a negative whose window runs past the subject's last record is dropped (never
  labelled negative). ACES can only drop rows whose window contains the record's end
  (``_RECORD_END: (None, 0)``), which drops the positives whose record ends in the window too
  (every death), so the shipped ACES configs leave censoring to ehrfm;
* prediction times at or after ``MEDS_DEATH`` are dropped (the shipped configs state it as
  ``death: (None, 0)`` up to the prediction time, so this drops nothing more there);
* sampling (``max_per_subject``): not part of the cohort definition in ACES; pass ``sampling``.

>>> mapping = aces_to_mapping({
...     "predicates": {"discharge": {"code": {"regex": "^VISIT_END/"}}, "death": {"code": "MEDS_DEATH"}},
...     "trigger": "discharge",
...     "windows": {
...         "input": {"start": None, "end": "trigger + 1s", "start_inclusive": True,
...                   "end_inclusive": True, "has": {"death": "(None, 0)"}, "index_timestamp": "end"},
...         "target": {"start": "input.end", "end": "start + 30 days", "start_inclusive": False,
...                    "end_inclusive": True, "label": "death"},
...     },
... }, source="death_30d.yaml")
>>> mapping["trigger"], mapping["prediction_window"], mapping["label"]
({'codes': [], 'prefixes': ['VISIT_END/'], 'offset': '1s'}, {'start': '0s', 'end': '30d'}, {'codes': ['MEDS_DEATH'], 'prefixes': []})
>>> aces_to_mapping({"predicates": {"hr": {"code": "HR", "value_min": 100}}, "trigger": "hr",
...                  "windows": {}}, source="tachy.yaml")
Traceback (most recent call last):
...
ehrfm.tasks.aces.translate.AcesTranslationError: tachy.yaml: predicates.hr: value_min: not supported: ehrfm tasks match codes only, not numeric values
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ehrfm.schema import BIRTH_CODE, DEATH_CODE

from ..definition import TaskDefinitionError
from ..durations import format_duration
from ..labeler import DAYS_PER_YEAR

__all__ = ["SPECIAL_PREDICATES", "AcesTranslationError", "aces_to_mapping", "looks_like_aces"]

ANY_EVENT, RECORD_START, RECORD_END = "_ANY_EVENT", "_RECORD_START", "_RECORD_END"
SPECIAL_PREDICATES = (ANY_EVENT, RECORD_START, RECORD_END)
TOP_LEVEL_KEYS = ("predicates", "trigger", "windows", "patient_demographics", "description", "metadata")
WINDOW_KEYS = ("start", "end", "start_inclusive", "end_inclusive", "has", "label", "index_timestamp")
_PLAIN_KEYS = ("code", "value_min", "value_max", "value_min_inclusive", "value_max_inclusive", "static")

_SPECIAL_WHY = {
    RECORD_START: ("ACES's record starts at the subject's first timed event, MEDS_BIRTH included, while "
                   "ehrfm's observation.min_history counts from the first event other than MEDS_BIRTH; "
                   "set min_history in an ehrfm task file instead"),
    ANY_EVENT: ("ehrfm has no minimum count of events (ACES counts timestamps with any event); "
                "its observation.min_history is a duration"),
    RECORD_END: ("ACES drops the row whenever the record ends in this window, positives included; "
                 "ehrfm instead always censors the rows whose outcome is not seen and whose window runs "
                 "past the last record (a post-step): remove this constraint"),
}


def _near(key: object, allowed: tuple[str, ...]) -> str:
    """`` (did you mean 'label'?)`` for a misspelt key, else nothing."""
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class AcesTranslationError(TaskDefinitionError):
    """An ACES config that is invalid, or uses a feature ehrfm's task model cannot express.

    The message names the file, the place (``windows.target.has.death``) and the feature.
    """


def looks_like_aces(data: Any) -> bool:
    """Whether a parsed YAML mapping is an ACES task config rather than an ehrfm task file.

    >>> looks_like_aces({"trigger": "admission", "windows": {}}), looks_like_aces({"name": "x"})
    (True, False)
    """
    return (isinstance(data, Mapping) and "prompt_token" not in data
            and ("windows" in data or isinstance(data.get("trigger"), str)))


# -- small parsers -------------------------------------------------------------------------------

_UNITS: dict[str, dt.timedelta] = {}
for _names, _size in ((("w", "wk", "wks", "week", "weeks"), dt.timedelta(weeks=1)),
                      (("d", "day", "days"), dt.timedelta(days=1)),
                      (("h", "hr", "hrs", "hour", "hours"), dt.timedelta(hours=1)),
                      (("m", "min", "mins", "minute", "minutes"), dt.timedelta(minutes=1)),  # pytimeparse: m = min
                      (("s", "sec", "secs", "second", "seconds"), dt.timedelta(seconds=1))):
    _UNITS.update(dict.fromkeys(_names, _size))
_TERM = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*,?")


def _duration(text: str) -> dt.timedelta:
    """``'365d'``, ``'24 hours'``, ``'1 day 2 hours'`` (pytimeparse's unit forms) -> timedelta."""
    total, position = dt.timedelta(0), 0
    while position < len(text):
        match = _TERM.match(text, position)
        if match is None or match.group(2).lower() not in _UNITS:
            break
        total += float(match.group(1)) * _UNITS[match.group(2).lower()]
        position = match.end()
    if position < len(text) or not text.strip():
        raise ValueError(f"{text.strip()!r} is not a duration ehrfm reads: a number and a unit (s, min, h, d, w), "
                         "e.g. '365d', '24 hours', '1 day 2 hours'; months and years have no fixed length")
    if total % dt.timedelta(seconds=1):
        raise ValueError(f"{text.strip()!r} is not a whole number of seconds")
    return total


@dataclass(frozen=True)
class _Point:
    """A window boundary resolved against the trigger: ``trigger + offset``, or the record's start/end."""

    kind: str  # "trigger", "record_start" or "record_end"
    offset: dt.timedelta = dt.timedelta(0)

    def describe(self, offset: dt.timedelta) -> str:
        if self.kind != "trigger":
            return f"the {self.kind.replace('_', ' ')}"
        delta = self.offset - offset
        sign = "+" if delta >= dt.timedelta(0) else "-"
        return f"prediction time {sign} {format_duration(abs(delta))}"


@dataclass(frozen=True)
class _Window:
    name: str
    raw: Mapping[str, Any]
    start_inclusive: bool
    end_inclusive: bool
    has: dict[str, tuple[int | None, int | None]]
    label: str | None
    index_timestamp: str | None


class _Translator:
    """One translation: holds the config and where it came from, so every error can name both."""

    def __init__(self, data: Any, source: str) -> None:
        self.source = source
        if not isinstance(data, Mapping):
            raise self.fail("<top level>", "expected an ACES task config (a mapping with predicates, trigger "
                            f"and windows), got {type(data).__name__}")
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                raise self.fail(str(key), f"unknown key {str(key)!r}{_near(key, TOP_LEVEL_KEYS)}; an ACES config "
                                f"holds {', '.join(TOP_LEVEL_KEYS)}")
        if data.get("patient_demographics"):
            raise self.unsupported("patient_demographics", "static patient demographics",
                                   "ehrfm tasks have no filters on static codes")
        self.predicates = self.mapping(data.get("predicates") or {}, "predicates")
        self.description = data.get("description")
        if self.description is not None and not isinstance(self.description, str):
            raise self.fail("description", "expected a string")
        self.trigger = data.get("trigger")
        if not isinstance(self.trigger, str) or not self.trigger.strip():
            raise self.fail("trigger", f"expected the name of a predicate, got {self.trigger!r}")
        self.windows = {str(name): self.window(str(name), raw)
                        for name, raw in self.mapping(data.get("windows") or {}, "windows").items()}
        self.resolved: dict[tuple[str, str], _Point] = {}
        self.resolving: set[tuple[str, str]] = set()

    # errors
    def fail(self, where: str, problem: str) -> AcesTranslationError:
        return AcesTranslationError(f"{self.source}: {where}: {problem}")

    def unsupported(self, where: str, feature: str, why: str) -> AcesTranslationError:
        return self.fail(where, f"{feature}: not supported: {why}")

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        return value

    # windows
    def window(self, name: str, raw: Any) -> _Window:
        where = f"windows.{name}"
        raw = self.mapping(raw, where)
        for key in raw:
            if key not in WINDOW_KEYS:
                raise self.fail(f"{where}.{key}", f"unknown window key {str(key)!r}{_near(key, WINDOW_KEYS)}; "
                                f"allowed: {', '.join(WINDOW_KEYS)}")
        flags = []
        for key in ("start_inclusive", "end_inclusive"):
            if not isinstance(raw.get(key), bool):
                raise self.fail(f"{where}.{key}", f"expected true or false (ACES requires it), got {raw.get(key)!r}")
            flags.append(raw[key])
        has = {str(pred): self.count(bound, f"{where}.has.{pred}")
               for pred, bound in self.mapping(raw.get("has") or {}, f"{where}.has").items()}
        index = raw.get("index_timestamp")
        if index not in (None, "start", "end"):
            raise self.fail(f"{where}.index_timestamp", f"expected start or end, got {index!r}")
        label = raw.get("label")
        if label is not None and not isinstance(label, str):
            raise self.fail(f"{where}.label", f"expected the name of a predicate, got {label!r}")
        return _Window(name, raw, flags[0], flags[1], has, label, index)

    def count(self, value: Any, where: str) -> tuple[int | None, int | None]:
        """``"(None, 0)"`` (ACES writes counts as a string) or a two-item list -> (min, max)."""
        items = value.strip().strip("()").split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or len(items) != 2:
            raise self.fail(where, f"expected a count range such as '(None, 0)' or '(1, None)', got {value!r}")
        bounds: list[int | None] = []
        for item in items:
            text = str(item).strip() if item is not None else "None"
            if text in ("None", "", "null"):
                bounds.append(None)
            elif re.fullmatch(r"\d+", text):
                bounds.append(int(text))
            else:
                raise self.fail(where, f"expected whole numbers or None in the count range, got {value!r}")
        return bounds[0], bounds[1]

    def boundary(self, window: _Window, side: str) -> tuple[str | None, dt.timedelta]:
        """``trigger + 1s`` -> ("trigger", 1s); ``null`` -> (None, 0). Event bounds are refused."""
        where = f"windows.{window.name}.{side}"
        text = window.raw.get(side)
        if text is None:
            return None, dt.timedelta(0)
        if not isinstance(text, str):
            raise self.fail(where, f"expected a boundary such as 'trigger + 24h', got {text!r}")
        if "->" in text or "<-" in text:
            raise self.unsupported(where, f"event-bound boundary {text.strip()!r}",
                                   "ehrfm's windows have fixed lengths after the prediction time, not 'until the "
                                   "next/previous event of a predicate'")
        if "+" in text and "-" in text:
            raise self.fail(where, f"a boundary has one '+' or '-', got {text!r}")
        reference, sign, amount = text, 1, ""
        for operator, factor in (("+", 1), ("-", -1)):
            if operator in text:
                reference, amount = text.split(operator, 1)
                sign = factor
        reference = reference.strip()
        if not re.fullmatch(r"\w+(\.(start|end))?", reference):
            raise self.fail(where, f"expected 'trigger', 'start', 'end' or '<window>.start'/'<window>.end' before "
                            f"the offset, got {reference!r}")
        try:
            offset = sign * _duration(amount) if amount else dt.timedelta(0)
        except ValueError as err:
            raise self.fail(where, str(err)) from None
        return reference, offset

    def point(self, name: str, side: str) -> _Point:
        """Where ``name``'s ``side`` lies relative to the trigger (resolving references, once)."""
        key = (name, side)
        if key in self.resolved:
            return self.resolved[key]
        where = f"windows.{name}.{side}"
        if key in self.resolving:
            raise self.fail(where, "the windows reference each other in a cycle")
        self.resolving.add(key)
        window = self.windows[name]
        reference, offset = self.boundary(window, side)
        other = "end" if side == "start" else "start"
        other_reference, _ = self.boundary(window, other)
        if reference not in (None, "start", "end") and other_reference not in (None, "start", "end"):
            raise self.fail(where, "exactly one of start and end references the trigger or another window, the "
                            "other is null or references it (ACES's rule)")
        if reference is None:
            point = _Point("record_start" if side == "start" else "record_end")
        elif reference == "trigger":
            point = _Point("trigger", offset)
        elif reference in ("start", "end"):
            if reference == side:
                raise self.fail(where, f"a window's {side} cannot reference itself")
            if other_reference in (None, "start", "end"):
                raise self.fail(where, "exactly one of start and end references the trigger or another window, "
                                "the other is null or references it (ACES's rule)")
            point = self.shift(self.point(name, other), offset, where)
        else:
            target, _, target_side = reference.partition(".")
            if not target_side:
                raise self.fail(where, f"unknown reference {reference!r}: the trigger is 'trigger', a window's "
                                "boundaries are '<window>.start' and '<window>.end'")
            if target not in self.windows:
                raise self.fail(where, f"references the undefined window {target!r}; windows: "
                                f"{', '.join(self.windows) or 'none'}")
            point = self.shift(self.point(target, target_side), offset, where)
        if point.kind == "record_end":
            raise self.unsupported(where, "a window to the end of the record",
                                   "ehrfm's prediction windows have a fixed length; give one, e.g. 'start + 365d'")
        self.resolving.discard(key)
        self.resolved[key] = point
        return point

    def shift(self, point: _Point, offset: dt.timedelta, where: str) -> _Point:
        if point.kind != "trigger":
            if offset:
                raise self.unsupported(where, f"an offset from the {point.kind.replace('_', ' ')}",
                                       "ehrfm times are relative to the trigger")
            return point
        return _Point("trigger", point.offset + offset)

    # predicates
    def codes(self, name: str, where: str, stack: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
        """The (codes, prefixes) a predicate matches; ``where`` is what referenced it."""
        if name in SPECIAL_PREDICATES:
            raise self.unsupported(where, f"the special predicate {name}", _SPECIAL_WHY[name])
        if name not in self.predicates:
            raise self.fail(where, f"predicate {name!r} is not defined; predicates: "
                            f"{', '.join(map(str, self.predicates)) or 'none'}")
        if name in stack:
            raise self.fail(f"predicates.{name}", f"predicates refer to each other in a cycle: {' -> '.join((*stack, name))}")
        here = f"predicates.{name}"
        spec = self.mapping(self.predicates[name], here)
        if "expr" in spec:
            return self.derived(name, spec, here, (*stack, name))
        for key in spec:
            if key not in _PLAIN_KEYS:
                raise self.unsupported(f"{here}.{key}", f"a constraint on the column {str(key)!r} (ACES other_cols)",
                                       "ehrfm tasks match codes only")
        for key in ("value_min", "value_max"):
            if spec.get(key) is not None:
                raise self.unsupported(here, key, "ehrfm tasks match codes only, not numeric values")
        if spec.get("static"):
            raise self.unsupported(f"{here}.static", "a static predicate", "ehrfm tasks have no filters on static codes")
        return self.code(spec.get("code"), f"{here}.code")

    def code(self, code: Any, where: str) -> tuple[list[str], list[str]]:
        if isinstance(code, str) and code:
            return [code], []
        if isinstance(code, Mapping) and len(code) == 1 and "any" in code:
            items = code["any"]
            if not isinstance(items, list) or not items or not all(isinstance(c, str) and c for c in items):
                raise self.fail(f"{where}.any", f"expected a non-empty list of codes, got {items!r}")
            return list(items), []
        if isinstance(code, Mapping) and len(code) == 1 and "regex" in code:
            return self.regex(code["regex"], f"{where}.regex")
        raise self.fail(where, f"expected a code, {{any: [codes]}} or {{regex: pattern}}, got {code!r}")

    def regex(self, pattern: Any, where: str) -> tuple[list[str], list[str]]:
        """``^X`` -> prefix X, ``^X$`` -> code X (X literal; ``\\.`` and ``\\/`` escapes read as the character)."""
        if not isinstance(pattern, str) or not pattern:
            raise self.fail(where, f"expected a non-empty regular expression, got {pattern!r}")
        match = re.fullmatch(r"\^((?:[^\\.^$*+?()\[\]{}|]|\\[\\./\-^$*+?()\[\]{}|])*)(\.\*)?(\$)?", pattern)
        if match is None or not match.group(1) or (match.group(2) and match.group(3)):
            raise self.unsupported(where, f"the regular expression {pattern!r}",
                                   "ehrfm matches exact codes and prefixes; write '^PREFIX' or '^CODE$' with a "
                                   "literal after '^', or list the codes with 'any'")
        literal = re.sub(r"\\(.)", r"\1", match.group(1))
        return ([literal], []) if match.group(3) else ([], [literal])

    def derived(self, name: str, spec: Mapping[str, Any], where: str,
                stack: tuple[str, ...]) -> tuple[list[str], list[str]]:
        for key in spec:
            if key != "expr":
                raise self.unsupported(f"{where}.{key}", f"the derived-predicate key {str(key)!r}",
                                       "ehrfm reads only 'expr' of a derived predicate")
        expr = spec["expr"]
        match = re.fullmatch(r"\s*(and|or)\((.*)\)\s*", expr) if isinstance(expr, str) else None
        if match is None:
            raise self.fail(f"{where}.expr", f"expected 'or(a, b, ...)' or 'and(a, b, ...)', got {expr!r}")
        if match.group(1) == "and":
            raise self.unsupported(f"{where}.expr", f"{expr.strip()!r} (and)",
                                   "ehrfm matches one event's code; ACES's and() needs several predicates at one "
                                   "timestamp")
        codes: list[str] = []
        prefixes: list[str] = []
        for part in (p.strip() for p in match.group(2).split(",")):
            more_codes, more_prefixes = self.codes(part, f"{where}.expr", stack)
            codes += [c for c in more_codes if c not in codes]
            prefixes += [p for p in more_prefixes if p not in prefixes]
        return codes, prefixes

    # the whole task
    def only(self, attribute: str, what: str) -> _Window:
        chosen = [w for w in self.windows.values() if getattr(w, attribute) is not None]
        if len(chosen) != 1:
            names = ", ".join(w.name for w in chosen) or "none"
            raise self.fail("windows", f"ehrfm needs exactly one window with {attribute!r} ({what}); found {names}")
        return chosen[0]

    def translate(self) -> dict[str, Any]:
        for name in self.windows:  # every boundary must resolve, even of windows that constrain nothing
            self.point(name, "start"), self.point(name, "end")
        trigger_codes, trigger_prefixes = self.codes(self.trigger, "trigger")

        index = self.only("index_timestamp", "the prediction time")
        where = f"windows.{index.name}.index_timestamp"
        at = self.point(index.name, index.index_timestamp or "end")
        if at.kind != "trigger":
            raise self.unsupported(where, f"a prediction time at the {at.kind.replace('_', ' ')}",
                                   "ehrfm predicts at a fixed offset from the trigger")
        if at.offset < dt.timedelta(0):
            raise self.unsupported(where, "a prediction time before the trigger",
                                   "ehrfm's trigger.offset is zero or positive")
        offset = at.offset

        target = self.only("label", "the outcome")
        where = f"windows.{target.name}"
        opens, closes = self.point(target.name, "start"), self.point(target.name, "end")
        if opens.kind != "trigger" or opens.offset < offset:
            raise self.unsupported(f"{where}.start", f"a label window starting at {opens.describe(offset)}",
                                   "ehrfm's prediction window starts at or after the prediction time")
        if closes.kind != "trigger" or closes.offset <= opens.offset:
            raise self.fail(f"{where}.end", "the label window must end after it starts")
        if target.start_inclusive or not target.end_inclusive:
            raise self.unsupported(where, f"start_inclusive: {str(target.start_inclusive).lower()}, end_inclusive: "
                                   f"{str(target.end_inclusive).lower()} on the label window",
                                   "ehrfm's window (prediction_time + start, prediction_time + end] is open at the "
                                   "start and closed at the end: use start_inclusive: false, end_inclusive: true")
        for predicate in target.has:
            if predicate in SPECIAL_PREDICATES:
                raise self.unsupported(f"{where}.has.{predicate}", f"a constraint on {predicate}",
                                       _SPECIAL_WHY[predicate])
        if target.has:
            raise self.unsupported(f"{where}.has", "constraints on the label window",
                                   "ehrfm cannot filter rows on what happens after the prediction time")
        label_codes, label_prefixes = self.codes(target.label or "", f"{where}.label")

        history_codes: list[str] = []
        history_prefixes: list[str] = []
        min_age: float | None = None
        for window in self.windows.values():
            for predicate, bounds in window.has.items():
                place = f"windows.{window.name}.has.{predicate}"
                if predicate in SPECIAL_PREDICATES:
                    raise self.unsupported(place, f"a constraint on {predicate}", _SPECIAL_WHY[predicate])
                codes, prefixes = self.codes(predicate, place)
                start, end = self.point(window.name, "start"), self.point(window.name, "end")
                from_record_start = start.kind == "record_start" and window.start_inclusive
                if (from_record_start and end == _Point("trigger", offset) and window.end_inclusive
                        and bounds in ((None, 0), (0, 0))):
                    # ehrfm always drops prediction times at or after death, so MEDS_DEATH here adds nothing
                    history_codes += [c for c in codes if c not in history_codes and c != DEATH_CODE]
                    history_prefixes += [p for p in prefixes if p not in history_prefixes]
                elif (from_record_start and end.kind == "trigger" and end.offset <= offset and window.end_inclusive
                      and bounds == (1, None) and (codes, prefixes) == ([BIRTH_CODE], [])):
                    years = (offset - end.offset) / dt.timedelta(days=DAYS_PER_YEAR)
                    min_age = years if min_age is None else max(min_age, years)
                elif from_record_start and end == _Point("trigger", offset) and window.end_inclusive:
                    raise self.unsupported(place, f"the count range {bounds}",
                                           "before the prediction time ehrfm can only exclude a code ((None, 0)) "
                                           f"or require {BIRTH_CODE} at least some time before it ((1, None))")
                else:
                    shape = (f"{'[' if window.start_inclusive else '('}{start.describe(offset)}, "
                             f"{end.describe(offset)}{']' if window.end_inclusive else ')'}")
                    raise self.unsupported(place, f"a constraint on the window {shape}",
                                           "ehrfm's only constraints are on the whole history up to the prediction "
                                           "time: start: null with start_inclusive: true, ending at the prediction "
                                           "time with end_inclusive: true")
        mapping: dict[str, Any] = {
            "description": (self.description or "").strip(),
            "trigger": {"codes": trigger_codes, "prefixes": trigger_prefixes, "offset": format_duration(offset)},
            "prediction_window": {"start": format_duration(opens.offset - offset),
                                  "end": format_duration(closes.offset - offset)},
            "label": {"codes": label_codes, "prefixes": label_prefixes},
        }
        if min_age is not None:
            mapping["observation"] = {"min_age_years": min_age}
        if history_codes or history_prefixes:
            mapping["exclusions"] = {"history": {"codes": history_codes, "prefixes": history_prefixes}}
        return mapping


def aces_to_mapping(data: Any, *, source: str = "<ACES config>") -> dict[str, Any]:
    """The ehrfm task mapping (without name, prompt token or sampling) of a parsed ACES config.

    Raises :class:`AcesTranslationError` naming ``source``, the place and the feature for anything
    ehrfm cannot express exactly (see the module docstring).
    """
    return _Translator(data, source).translate()
