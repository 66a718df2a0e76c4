"""Task YAML: parsing into frozen dataclasses, strict validation with useful messages, catalogs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import pytest
import yaml
from task_builders import BASE, alias_bomb, frame, ts

from ehrfm.tasks import (
    BUILTIN_DIR,
    TEMPLATES_DIR,
    TaskDefinition,
    TaskDefinitionError,
    builtin_task_names,
    label_task,
    load_task,
    load_tasks,
    parse_duration,
)
from ehrfm.tasks.definition import PROMPT_TOKENS

EXPECTED_BUILTINS = ["emergency_visit_90d", "inpatient_admission_1y", "mortality_1y", "new_prediabetes_3y"]
TEMPLATES = sorted(p.stem for p in TEMPLATES_DIR.glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_for(tmp_path: Path, data: dict) -> str:
    path = write(tmp_path, yaml.safe_dump(data))
    with pytest.raises(TaskDefinitionError) as info:
        load_task(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message  # every message names the file first
    return message


def with_(**sections) -> dict:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


# -- built-ins and templates ------------------------------------------------------------------


def test_builtin_names_are_the_files_and_the_documented_set() -> None:
    assert builtin_task_names() == EXPECTED_BUILTINS
    for name in builtin_task_names():
        task = load_task(name)
        assert task.name == name and task.description and Path(task.source).parent == BUILTIN_DIR


def test_builtin_prompt_tokens_are_distinct_and_start_at_000() -> None:
    tokens = sorted(t.prompt_token for t in load_tasks(builtin_task_names()))
    assert tokens == list(PROMPT_TOKENS[: len(tokens)])


def test_templates_load_together_with_the_builtins() -> None:
    assert TEMPLATES == ["long_stay_7d", "new_ckd_1y", "new_hyperlipidemia_1y", "new_hypertension_1y",
                         "new_t2_diabetes_1y", "readmission_30d"]
    tasks = load_tasks([*builtin_task_names(), *(TEMPLATES_DIR / f"{n}.yaml" for n in TEMPLATES)])
    assert [t.name for t in tasks[len(EXPECTED_BUILTINS):]] == TEMPLATES


def test_every_task_uses_an_offset_so_the_trigger_is_in_the_input_or_documents_why() -> None:
    # Visit-end triggers add 1s (the whole visit, VISIT_END included, is input); long stay adds 24h.
    for task in load_tasks([*builtin_task_names(), *(TEMPLATES_DIR / f"{n}.yaml" for n in TEMPLATES)]):
        assert task.trigger.offset in (dt.timedelta(seconds=1), dt.timedelta(hours=24)), task.name


def test_to_mapping_round_trips() -> None:
    for name in builtin_task_names():
        task = load_task(name)
        again = TaskDefinition.from_mapping(yaml.safe_load(yaml.safe_dump(task.to_mapping())))
        assert again == task


def test_definitions_are_frozen() -> None:
    task = load_task("mortality_1y")
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.window.end = None  # type: ignore[misc]


def test_defaults_of_optional_sections() -> None:
    task = TaskDefinition.from_mapping(BASE)
    assert task.description == "" and task.sampling.max_per_subject is None and task.sampling.seed == 0
    assert task.exclusions.history.is_empty and not task.exclusions.encounter_ended
    assert task.observation.min_history == dt.timedelta(0) and task.observation.min_age_years is None
    assert not task.label.same_encounter and not task.label.negate


# -- a user's own task file -------------------------------------------------------------------


def test_user_yaml_task_from_tmp_path_loads_and_labels(tmp_path: Path) -> None:
    path = write(tmp_path, """
# Hospital admission within a week after an emergency visit.
name: admission_after_ed_7d
description: Inpatient admission within 7 days after an emergency visit ends.
prompt_token: "[TASK_015]"
trigger:
  codes: [VISIT_END/EMER]
  offset: 1s
prediction_window:
  end: 7d
label:
  codes: [VISIT_START/IMP]
""", "admission_after_ed_7d.yml")
    task = load_task(str(path))
    assert task.name == "admission_after_ed_7d" and task.source == str(path)
    events = frame((1, "2020-01-01", "VISIT_START/EMER", "a"), (1, "2020-01-01 05:00", "VISIT_END/EMER", "a"),
                   (1, "2020-01-03", "VISIT_START/IMP", "b"), (1, "2020-03-01", "VISIT_END/IMP", "b"))
    labels = label_task(task, events)
    assert labels.select("prediction_time", "boolean_value", "outcome_time").rows() == [
        (ts("2020-01-01 05:00:01"), True, ts("2020-01-03"))]
    # A user task can join the built-ins when its prompt token is free.
    assert [t.name for t in load_tasks([*builtin_task_names(), path])][-1] == "admission_after_ed_7d"


# -- validation errors name file, key path and value -------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = error_for(tmp_path, with_(trigerr={}))
    assert "trigerr: unknown key 'trigerr' (did you mean 'trigger'?)" in message


def test_unknown_nested_key(tmp_path: Path) -> None:
    message = error_for(tmp_path, with_(label={"same_encouter": True}))
    assert "label.same_encouter: unknown key 'same_encouter' (did you mean 'same_encounter'?)" in message


@pytest.mark.parametrize("value, why", [
    ("30 days", "not a duration"),
    ("1y", "'y' is not a fixed length"),
    ("3m", "'m' is ambiguous"),
    ("-1d", "not a duration"),
    ("1.5h", "not a duration"),
    ("10fortnights", "unknown unit 'fortnights'"),
])
def test_bad_duration(tmp_path: Path, value: str, why: str) -> None:
    message = error_for(tmp_path, with_(prediction_window={"end": value}))
    assert f"prediction_window.end: {why}" in message and message.endswith(f"got {value!r}")


def test_duration_must_be_a_string(tmp_path: Path) -> None:
    message = error_for(tmp_path, with_(trigger={"offset": 0}))
    assert "trigger.offset: expected a duration string like '24h', not int; got 0" in message


@pytest.mark.parametrize("section, value, expected", [
    ({"label": {"negate": "yes"}}, "'yes'", "label.negate: expected true or false"),
    ({"sampling": {"max_per_subject": 2.5}}, "2.5",
     "sampling.max_per_subject: expected a whole number or null"),
    ({"sampling": {"max_per_subject": True}}, "True",
     "sampling.max_per_subject: expected a whole number or null"),
    ({"sampling": {"max_per_subject": 0}}, "0", "sampling.max_per_subject: must be >= 1"),
    ({"sampling": {"seed": -1}}, "-1", "sampling.seed: must be >= 0"),
    ({"label": {"codes": "MEDS_DEATH"}}, "'MEDS_DEATH'",
     "label.codes: expected a list of codes; write [MEDS_DEATH]"),
    ({"label": {"codes": ["A", 3]}}, "3", "label.codes[1]: expected a non-empty code string"),
    ({"label": {"codes": []}}, None, "label: needs at least one entry in 'codes', 'prefixes' or 'concepts'"),
    ({"observation": {"min_age_years": "18"}}, "'18'", "observation.min_age_years: expected a number"),
    ({"observation": {"min_age_years": 70, "max_age_years": 60}}, "60",
     "observation.max_age_years: must be >= min_age_years (70)"),
    ({"prediction_window": {"start": "30d", "end": "30d"}}, "'30d'",
     "prediction_window.end: must be longer than start (30d)"),
    ({"name": "Mortality 1y"}, "'Mortality 1y'", "name: expected lowercase letters"),
    ({"name": 7}, "7", "name: expected a string, not int"),
    ({"prompt_token": "[TASK_016]"}, "'[TASK_016]'",
     "prompt_token: expected one of the tokenizer's reserved tokens [TASK_000]..[TASK_015]"),
    ({"trigger": ["VISIT_END/IMP"]}, "['VISIT_END/IMP']", "trigger: expected a mapping of keys to values"),
])
def test_bad_types_and_values(tmp_path: Path, section: dict, value: str | None, expected: str) -> None:
    message = error_for(tmp_path, with_(**section))
    assert expected in message, message
    if value is not None:
        assert message.endswith(f"got {value}"), message


def test_unquoted_prompt_token_gets_a_yaml_hint(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE).replace("'[TASK_007]'", "[TASK_007]")
    with pytest.raises(TaskDefinitionError,
                       match=re.escape('quote it in YAML: prompt_token: "[TASK_000]"; got [\'TASK_007\']')):
        load_task(write(tmp_path, text))


def test_missing_required_keys(tmp_path: Path) -> None:
    data = with_()
    del data["label"]
    assert "label: required key is missing" in error_for(tmp_path, data)
    data = with_()
    data["trigger"] = {"codes": ["X"]}
    assert "trigger.offset: required key is missing" in error_for(tmp_path, data)
    data = with_(trigger={"offset": None})
    assert ("trigger.offset: expected a duration such as '0s' or '1s', not null; got None"
            in error_for(tmp_path, data))
    data = with_()
    data["prediction_window"] = {"start": "0s"}
    assert "prediction_window.end: required key is missing" in error_for(tmp_path, data)


def test_not_a_mapping_and_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(TaskDefinitionError,
                       match=r"task.yaml: <top level>: expected a mapping .*; got \['a', 'b'\]"):
        load_task(write(tmp_path, "[a, b]\n"))
    with pytest.raises(TaskDefinitionError, match=r"task.yaml: not valid YAML"):
        load_task(write(tmp_path, "name: [unclosed\n"))


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE) + "name: again\n"
    with pytest.raises(TaskDefinitionError, match=r"key 'name' is given twice"):
        load_task(write(tmp_path, text))


def test_unknown_builtin_and_missing_file() -> None:
    with pytest.raises(TaskDefinitionError, match=r"'mortality_2y': not a built-in task .* mortality_1y"):
        load_task("mortality_2y")
    with pytest.raises(TaskDefinitionError, match=r"nowhere/task.yaml: no such task file"):
        load_task("nowhere/task.yaml")
    with pytest.raises(TypeError, match="wrap it in a list"):
        load_tasks("mortality_1y")  # type: ignore[arg-type]


def test_duplicate_prompt_tokens_are_refused_naming_both(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump(with_(name="mine", prompt_token="[TASK_000]")), "mine.yaml")
    with pytest.raises(TaskDefinitionError) as info:
        load_tasks(["mortality_1y", path])
    message = str(info.value)
    assert message.startswith(f"{path}: prompt_token: '[TASK_000]' is already used by task 'mortality_1y'")
    assert str(BUILTIN_DIR / "mortality_1y.yaml") in message


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump(with_(name="mortality_1y", prompt_token="[TASK_014]")))
    with pytest.raises(TaskDefinitionError, match=r"name: 'mortality_1y' is also the name of the task in"):
        load_tasks(["mortality_1y", path])


@pytest.mark.parametrize("text, expected", [("1s", dt.timedelta(seconds=1)),
                                            ("90min", dt.timedelta(minutes=90)),
                                            ("24h", dt.timedelta(days=1)), ("2w", dt.timedelta(days=14)),
                                            ("0s", dt.timedelta(0)), ("365d", dt.timedelta(days=365))])
def test_parse_duration_accepts(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "d", "1", "1 d", "1D", "+1d", "1d2h", " 1d", "1e3s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# -- files that would take unbounded memory or time -------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    (lambda: f"name: {alias_bomb()}\n", r"expands to more than 100,000 values once its aliases are resolved"),
    (lambda: yaml.safe_dump(BASE) + f"description: {alias_bomb()}\n", r"expands to more than 100,000 values"),
    (lambda: "name: x\ntrigger: " + "[" * 10_000 + "]" * 10_000 + "\n", r"nested more than 50 levels deep"),
    (lambda: "name: x\n" + "#" * (2 << 20) + "\n", r"bytes; a task file holds at most 1,048,576"),
])
def test_hostile_task_files_fail_fast_naming_the_file(tmp_path: Path, text, expected: str) -> None:
    import resource
    import time

    path = write(tmp_path, text())
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(TaskDefinitionError, match=rf"^{re.escape(str(path))}: .*{expected}"):
        load_task(path)
    assert time.perf_counter() - started < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_bytes(yaml.safe_dump({**BASE, "description": "café"}, allow_unicode=True).encode("latin-1"))
    with pytest.raises(TaskDefinitionError, match=r"task.yaml: not UTF-8 text \(byte \d+\)"):
        load_task(path)


@pytest.mark.parametrize("window", ["1000000000d", "99999999999999999999s", "80000d"])
def test_windows_longer_than_a_life_are_refused(tmp_path: Path, window: str) -> None:
    message = error_for(tmp_path, with_(prediction_window={"start": "0s", "end": window}))
    assert "longer than any clinical window (at most 73200d)" in message


def test_anchors_within_bounds_still_work(tmp_path: Path) -> None:
    text = """\
name: unit_task
prompt_token: "[TASK_007]"
trigger: {codes: &outcome_codes [TRIGGER, OTHER], offset: 0s}
prediction_window: {start: 0s, end: 10d}
label: {codes: *outcome_codes}
"""
    task = load_task(write(tmp_path, text))
    assert list(task.label.match.codes) == list(task.trigger.match.codes) == ["TRIGGER", "OTHER"]
