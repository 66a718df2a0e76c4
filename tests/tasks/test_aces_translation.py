"""ACES task configs read as ehrfm tasks: the shipped configs are the built-ins, what maps is
translated exactly, and every ACES feature ehrfm cannot express is refused by name.

Agreement with ACES's own labels (aces-cli on the same data) is in test_aces_agreement.py.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from ehrfm.tasks import (
    ACES_CONFIGS_DIR,
    AcesTranslationError,
    Sampling,
    TaskDefinitionError,
    builtin_task_names,
    label_task,
    load_task,
    load_tasks,
    task_from_aces,
)
from ehrfm.tasks.aces import aces_to_mapping, post_step_reasons, with_predicates

MORTALITY = ACES_CONFIGS_DIR / "mortality_1y.yaml"


def _mortality() -> dict[str, Any]:
    return yaml.safe_load(MORTALITY.read_text())


@pytest.mark.parametrize("name", builtin_task_names())
def test_every_builtin_ships_an_aces_config_that_translates_to_it_exactly(name: str) -> None:
    builtin = load_task(name)
    config = ACES_CONFIGS_DIR / f"{name}.yaml"
    assert config.is_file(), f"built-in task {name} has no ACES config in {ACES_CONFIGS_DIR}"
    task = task_from_aces(config, prompt_token=builtin.prompt_token, sampling=builtin.sampling)
    assert task == builtin
    assert task.description == builtin.description


def test_every_shipped_aces_config_is_a_builtin() -> None:
    assert sorted(p.stem for p in ACES_CONFIGS_DIR.glob("*.yaml")) == builtin_task_names()


def test_translation_reads_acess_code_forms_and_duration_spellings() -> None:
    config = {
        "predicates": {
            "visit_end": {"code": {"regex": "^VISIT_END/.*"}},
            "exact": {"code": {"regex": "^ICD10CM/E11\\.9$"}},
            "listed": {"code": {"any": ["SNOMED/1", "SNOMED/2"]}},
            "outcome": {"expr": "or(exact, listed, visit_end)"},
            "death": {"code": "MEDS_DEATH"},
        },
        "trigger": "visit_end",
        "windows": {
            "gap": {"start": "trigger", "end": "start + 1 day 2 hours", "start_inclusive": True,
                    "end_inclusive": True, "index_timestamp": "end"},
            "target": {"start": "gap.end + 30 minutes", "end": "start + 2 weeks", "start_inclusive": False,
                       "end_inclusive": True, "label": "outcome"},
        },
    }
    task = task_from_aces(config, name="forms", prompt_token="[TASK_005]")
    assert task.trigger.match.prefixes == ("VISIT_END/",)
    assert task.trigger.offset == dt.timedelta(days=1, hours=2)
    assert task.window.start == dt.timedelta(minutes=30)
    assert task.window.end == dt.timedelta(minutes=30, weeks=2)
    assert task.label.match.codes == ("ICD10CM/E11.9", "SNOMED/1", "SNOMED/2")
    assert task.label.match.prefixes == ("VISIT_END/",)
    assert task.exclusions.history.is_empty  # no constraint windows: nothing excluded


def test_an_age_floor_window_becomes_min_age_in_ehrfm_years() -> None:
    task = task_from_aces(ACES_CONFIGS_DIR / "new_prediabetes_3y.yaml", prompt_token="[TASK_003]")
    assert task.observation.min_age_years == 18.0  # 6574 days 12 hours = 18 x 365.25 days
    assert "ICD10CM/E11." in task.exclusions.history.prefixes
    assert "MEDS_DEATH" not in task.exclusions.history.codes  # ehrfm always drops times at/after death


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        if value is _DROP:
            node.pop(last)
        else:
            node[last] = value
    return change


_DROP = object()
_LATER_LABEL = {"start": "input.end", "end": "start + 30d", "start_inclusive": False, "end_inclusive": True,
                "label": "death"}

# (what the config does wrong, the change, what the message must say: file, place and feature)
BAD_CONFIGS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("numeric value bound", _set("predicates.death.value_min", 1), "predicates.death: value_min: not supported"),
    ("other column", _set("predicates.death.unit", "mg"), "predicates.death.unit: a constraint on the column 'unit'"),
    ("and()", lambda c: (c["predicates"].update(both={"expr": "and(death, encounter_end)"}),
                         c["windows"]["target"].update(label="both")), "predicates.both.expr: 'and(death, encounter_end)'"),
    ("static predicate", _set("predicates.death.static", True), "predicates.death.static: a static predicate"),
    ("demographics", _set("patient_demographics", {"male": {"code": "SEX/M"}}),
     "patient_demographics: static patient demographics: not supported"),
    ("event-bound end", _set("windows.target.end", "start -> death"),
     "windows.target.end: event-bound boundary 'start -> death': not supported"),
    ("window to the record's end", _set("windows.target.end", None),
     "windows.target.end: a window to the end of the record: not supported"),
    ("closed label window start", _set("windows.target.start_inclusive", True),
     "windows.target: start_inclusive: true, end_inclusive: true on the label window: not supported"),
    ("undefined predicate", _set("windows.target.label", "dead"),
     "windows.target.label: predicate 'dead' is not defined; predicates: encounter_end, death"),
    ("predicate cycle", lambda c: (c["predicates"].update(a={"expr": "or(b, death)"}, b={"expr": "or(a)"}),
                                   c["windows"]["target"].update(label="a")), "cycle: a -> b -> a"),
    ("regex without ^", _set("predicates.encounter_end.code", {"regex": "VISIT_END"}),
     "predicates.encounter_end.code.regex: the regular expression 'VISIT_END': not supported"),
    ("regex alternation", _set("predicates.encounter_end.code", {"regex": "^VISIT_(END|START)/"}),
     "the regular expression '^VISIT_(END|START)/': not supported"),
    ("months", _set("windows.target.end", "start + 12 months"),
     "windows.target.end: '12 months' is not a duration"),
    ("fractional seconds", _set("windows.target.end", "start + 0.5s"), "'0.5s' is not a whole number of seconds"),
    ("_ANY_EVENT count", _set("windows.input.has._ANY_EVENT", "(5, None)"),
     "windows.input.has._ANY_EVENT: a constraint on _ANY_EVENT: not supported"),
    ("_RECORD_END on the label", _set("windows.target.has", {"_RECORD_END": "(None, 0)"}),
     "windows.target.has._RECORD_END: a constraint on _RECORD_END: not supported"),
    ("_RECORD_START trigger", _set("trigger", "_RECORD_START"), "trigger: the special predicate _RECORD_START"),
    ("label window constraint", _set("windows.target.has", {"death": "(None, 0)"}),
     "windows.target.has: constraints on the label window: not supported"),
    ("count not a range", _set("windows.input.has.death", "(some, 0)"),
     "windows.input.has.death: expected whole numbers or None in the count range, got '(some, 0)'"),
    ("required count", _set("windows.input.has.death", "(1, None)"),
     "windows.input.has.death: the count range (1, None): not supported"),
    ("constraint on a recent window", _set("windows.recent", {
        "start": "end - 30d", "end": "input.end", "start_inclusive": False, "end_inclusive": True,
        "has": {"death": "(None, 0)"}}),
     "windows.recent.has.death: a constraint on the window (prediction time - 30d, prediction time + 0s]"),
    ("no trigger", _set("trigger", _DROP), "trigger: expected the name of a predicate, got None"),
    ("window cycle", _set("windows.input.end", "target.start"), "the windows reference each other in a cycle"),
    ("undefined window", _set("windows.target.start", "inpt.end"),
     "windows.target.start: references the undefined window 'inpt'; windows: input, target"),
    ("misspelt key", _set("windowz", {}), "windowz: unknown key 'windowz' (did you mean 'windows'?)"),
    ("misspelt window key", _set("windows.target.lable", "death"),
     "windows.target.lable: unknown window key 'lable' (did you mean 'label'?)"),
    ("prediction before trigger", _set("windows.input.end", "trigger - 1h"),
     "windows.input.index_timestamp: a prediction time before the trigger: not supported"),
    ("two label windows", _set("windows.other", _LATER_LABEL),
     "windows: ehrfm needs exactly one window with 'label' (the outcome); found target, other"),
    ("no prediction time", _set("windows.input.index_timestamp", _DROP),
     "windows: ehrfm needs exactly one window with 'index_timestamp' (the prediction time); found none"),
    ("inclusivity missing", _set("windows.input.start_inclusive", _DROP),
     "windows.input.start_inclusive: expected true or false (ACES requires it), got None"),
]


@pytest.mark.parametrize(("change", "expected"), [(c, e) for _, c, e in BAD_CONFIGS],
                         ids=[what for what, _, _ in BAD_CONFIGS])
def test_bad_or_unsupported_aces_configs_are_refused_by_name(change: Callable, expected: str) -> None:
    config = _mortality()
    change(config)
    with pytest.raises(AcesTranslationError) as caught:
        aces_to_mapping(config, source="site/mortality.yaml")
    assert str(caught.value).startswith("site/mortality.yaml: ")
    assert expected in str(caught.value)


def test_a_config_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(AcesTranslationError, match=r"x.yaml: <top level>: expected an ACES task config"):
        aces_to_mapping(["trigger"], source="x.yaml")


def test_a_predicates_file_overrides_predicates_as_aces_cli_does(tmp_path: Path) -> None:
    site = tmp_path / "mimic_predicates.yaml"
    site.write_text("description: MIMIC's codes\npredicates:\n  death:\n    code: {any: [MEDS_DEATH, DEATH/HOSPITAL]}\n"
                    "  extra:\n    code: UNUSED\n")
    task = task_from_aces(MORTALITY, prompt_token="[TASK_000]", predicates=site)
    assert task.label.match.codes == ("MEDS_DEATH", "DEATH/HOSPITAL")
    assert task.trigger.match.prefixes == ("VISIT_END/",)  # not overridden: kept
    bad = tmp_path / "bad.yaml"
    bad.write_text("predicate:\n  death: {code: X}\n")
    with pytest.raises(AcesTranslationError, match=r"bad.yaml: predicate: unknown key 'predicate'"):
        task_from_aces(MORTALITY, prompt_token="[TASK_000]", predicates=bad)
    assert with_predicates({"trigger": "x"}, None, source="s") == {"trigger": "x"}


def _wrapper(folder: Path, text: str) -> Path:
    (folder / "mortality_aces.yaml").write_text(MORTALITY.read_text())
    path = folder / "task.yaml"
    path.write_text(text)
    return path


def test_a_task_file_with_aces_labels_like_the_builtin(tmp_path: Path) -> None:
    path = _wrapper(tmp_path, 'name: death_aces\nprompt_token: "[TASK_009]"\naces: mortality_aces.yaml\n'
                              "sampling: {max_per_subject: 5, seed: 0}\n")
    task = load_task(path)
    assert task.name == "death_aces" and task.prompt_token == "[TASK_009]"
    assert dataclasses.replace(task, name="mortality_1y", prompt_token="[TASK_000]") == load_task("mortality_1y")
    t = dt.datetime
    events = pl.DataFrame({
        "subject_id": [1, 1, 1, 2, 2, 2],
        "time": [t(2020, 1, 1), t(2020, 6, 1), t(2022, 1, 1), t(2020, 1, 1), t(2020, 3, 1), t(2022, 1, 1)],
        "code": ["VISIT_END/AMB", "MEDS_DEATH", "VISIT_END/AMB", "VISIT_END/IMP", "VISIT_END/AMB", "LAB/X"],
    })
    assert label_task(task, events).drop("encounter_id").equals(
        label_task(load_task("mortality_1y"), events).drop("encounter_id"))
    assert [t.name for t in load_tasks([path, "mortality_1y"])] == ["death_aces", "mortality_1y"]


@pytest.mark.parametrize(("text", "expected"), [
    ('name: x\nprompt_token: "[TASK_009]"\naces: missing.yaml\n', "task.yaml: aces: no such ACES task config"),
    ('name: x\nprompt_token: "[TASK_009]"\naces: mortality_aces.yaml\ntrigger: {codes: [A]}\n',
     "task.yaml: trigger: unknown key 'trigger' in a task file with 'aces:'"),
    ('name: x\naces: mortality_aces.yaml\n', "task.yaml: prompt_token: required key is missing"),
    ('name: x\nprompt_token: "[TASK_009]"\naces: 3\n', "task.yaml: aces: expected the path of an ACES task config"),
    ('name: x\nprompt_token: "[TASK_009]"\naces: mortality_aces.yaml\naces_predicates: nope.yaml\n',
     "task.yaml: aces_predicates: no such predicates file"),
    ('name: X!\nprompt_token: "[TASK_009]"\naces: mortality_aces.yaml\n', "task.yaml: name:"),
])
def test_bad_task_files_with_aces_name_the_task_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(TaskDefinitionError) as caught:
        load_task(_wrapper(tmp_path, text))
    assert expected in str(caught.value)


def test_an_aces_config_given_as_a_task_file_says_how_to_use_it(tmp_path: Path) -> None:
    path = tmp_path / "mortality.yaml"
    path.write_text(MORTALITY.read_text())
    with pytest.raises(TaskDefinitionError, match=r"mortality.yaml: this is an ACES task config, not an ehrfm task"):
        load_task(path)


def test_an_aces_config_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(MORTALITY.read_text() + "\ntrigger: encounter_end\n")
    with pytest.raises(AcesTranslationError, match=r"twice.yaml: not valid YAML: .*given twice"):
        task_from_aces(path, prompt_token="[TASK_000]")


def test_post_steps_name_the_rule_that_drops_each_aces_row() -> None:
    t = dt.datetime
    events = pl.DataFrame({"subject_id": [1, 1, 2], "time": [t(2020, 1, 1), t(2021, 6, 1), t(2020, 1, 1)],
                           "code": ["VISIT_END/AMB", "MEDS_DEATH", "VISIT_END/AMB"]})
    rows = pl.DataFrame({"subject_id": [1, 1, 2], "prediction_time": [t(2020, 1, 1), t(2021, 7, 1), t(2020, 1, 1)],
                         "boolean_value": [False, False, False]})
    task = dataclasses.replace(load_task("mortality_1y"), sampling=Sampling(max_per_subject=1))
    reasons = post_step_reasons(rows, task, events)["excluded_by"].to_list()
    assert reasons == [None, "after_death", "censored"]  # subject 2's year is not observed


def test_a_negated_task_has_no_aces_post_steps() -> None:
    from ehrfm.tasks import TEMPLATES_DIR
    rows = pl.DataFrame({"subject_id": [1], "prediction_time": [dt.datetime(2020, 1, 1)], "boolean_value": [True]})
    events = pl.DataFrame({"subject_id": [1], "time": [dt.datetime(2020, 1, 1)], "code": ["A"]})
    negated = [p for p in TEMPLATES_DIR.glob("*.yaml") if load_task(p).label.negate]
    assert negated, "a template with negate: true is expected (long stay)"
    with pytest.raises(ValueError, match="negated label has no ACES counterpart"):
        post_step_reasons(rows, load_task(negated[0]), events)


def test_the_mapping_is_not_changed_by_translation() -> None:
    config = _mortality()
    before = copy.deepcopy(config)
    aces_to_mapping(config)
    assert config == before
