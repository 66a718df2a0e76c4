"""One task definition labels Synthea and MIMIC alike: concept sets instead of dataset codes.

The built-in tasks name concepts (``ehrfm/tasks/concepts.yaml``); here they run on a
MIMIC-IV-on-FHIR-shaped population (``mimic_population.py``: ACUTE/EMER/OBSENC/SS/AMB encounter
classes, ICD-9-CM and ICD-10-CM diagnoses without dots, Conditions timed by an Encounter in
another file) and every label is recomputed from the population's own ground truth. The Synthea
side is ``test_tasks_real_data.py``.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import polars as pl
import pytest
from mimic_population import Population
from task_builders import alias_bomb

from ehrfm.tasks import (
    ConceptError,
    ConceptSets,
    TaskDefinition,
    TaskDefinitionError,
    builtin_task_names,
    load_task,
    run_label,
)
from ehrfm.tasks.concepts import parse_concepts

PREDIABETES = {"ICD10CM/R73.03", "ICD9CM/790.29"}
TYPE_2_DIABETES = {"ICD10CM/E11.9", "ICD9CM/250.00"}


@pytest.fixture(scope="module")
def labelled(mimic: tuple[Population, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    _, meds = mimic
    out = tmp_path_factory.mktemp("labels")
    return {"summary": run_label(input=str(meds), output=str(out), tasks=builtin_task_names()), "dir": out}


def _naive(time: dt.datetime) -> dt.datetime:
    return time.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _details(labelled: dict, task: str) -> pl.DataFrame:
    return pl.read_parquet(labelled["dir"] / "_details" / f"{task}.parquet")


def _expected(population: Population, task: str, pid: str, at: dt.datetime) -> bool:
    """The label of patient ``pid`` recomputed from the population's own records, not by ehrfm's labeler."""
    ends = {"mortality_1y": 365, "inpatient_admission_1y": 365, "emergency_visit_90d": 90,
            "new_prediabetes_3y": 1095}
    window_end = at + dt.timedelta(days=ends[task])

    def inside(time: dt.datetime) -> bool:
        return at < _naive(time) <= window_end

    if task == "mortality_1y":
        return pid in population.deaths and inside(population.deaths[pid])
    if task == "new_prediabetes_3y":
        return any(p == pid and code in PREDIABETES and inside(t) for p, code, t in population.conditions)
    klass = {"inpatient_admission_1y": "ACUTE", "emergency_visit_90d": "EMER"}[task]
    return any(e.patient == pid and e.klass == klass and inside(e.start) for e in population.encounters)


@pytest.mark.parametrize("task", builtin_task_names())
def test_every_builtin_task_labels_the_mimic_shaped_population(labelled: dict, mimic, task: str) -> None:
    population, _ = mimic
    counts = labelled["summary"]["tasks"][task]["all"]
    assert labelled["summary"]["tasks"][task]["unmatched"] == []
    assert counts["positives"] > 0 and counts["negatives"] > 0, counts
    rows = _details(labelled, task)
    assert rows.height == counts["rows"]
    patient = population.patient_of_subject()
    for subject, at, value in rows.select("subject_id", "prediction_time", "boolean_value").iter_rows():
        assert value == _expected(population, task, patient[subject], at), (task, subject, at, value)


def test_prediabetes_rows_are_adults_free_of_both_diagnoses_after_an_ambulatory_visit(labelled, mimic) -> None:
    population, _ = mimic
    ids = population.patient_of_subject()
    ambulatory_ends = {(e.patient, _naive(e.end)) for e in population.encounters if e.klass == "AMB"}
    rows = _details(labelled, "new_prediabetes_3y")
    assert rows.height > 0
    for subject, at, trigger in rows.select("subject_id", "prediction_time", "trigger_time").iter_rows():
        pid = ids[subject]
        assert (pid, trigger) in ambulatory_ends
        assert (at.date() - population.patients[pid]).days >= 18 * 365
        history = {code for p, code, t in population.conditions if p == pid and _naive(t) <= at}
        assert not history & (PREDIABETES | TYPE_2_DIABETES), (subject, at, history)


def test_dataset_specific_codes_find_nothing_on_mimic_and_say_so(mimic, tmp_path: Path, caplog) -> None:
    """The old Synthea-only definition (VISIT_START/IMP) is the failure class concepts fix."""
    _, meds = mimic
    task = tmp_path / "synthea_only.yaml"
    task.write_text("name: synthea_only\nprompt_token: '[TASK_010]'\n"
                    "trigger: {prefixes: [VISIT_END/], offset: 1s}\n"
                    "prediction_window: {end: 365d}\nlabel: {codes: [VISIT_START/IMP]}\n")
    with caplog.at_level(logging.WARNING, logger="ehrfm.tasks"):
        summary = run_label(input=str(meds), output=str(tmp_path / "labels"), tasks=[str(task)])
    assert summary["tasks"]["synthea_only"]["all"]["positives"] == 0
    assert summary["tasks"]["synthea_only"]["unmatched"] == ["its label (VISIT_START/IMP)"]
    assert "synthea_only: its label (VISIT_START/IMP) match no code" in caplog.text


def test_a_site_concept_file_extends_a_builtin_task_without_editing_it(mimic, labelled, tmp_path: Path) -> None:
    population, meds = mimic
    site = tmp_path / "site_concepts.yaml"
    site.write_text("inpatient_admission:\n  description: our hospital counts short stays as admissions\n"
                    "  codes: [VISIT_START/ACUTE, VISIT_START/SS]\n")
    summary = run_label(input=str(meds), output=str(tmp_path / "labels"), tasks=["inpatient_admission_1y"],
                        concept_sets=[str(site)])
    rows = pl.read_parquet(tmp_path / "labels" / "_details" / "inpatient_admission_1y.parquet")
    ids = population.patient_of_subject()
    for subject, at, value in rows.select("subject_id", "prediction_time", "boolean_value").iter_rows():
        expected = any(e.patient == ids[subject] and e.klass in ("ACUTE", "SS")
                       and at < _naive(e.start) <= at + dt.timedelta(days=365) for e in population.encounters)
        assert value == expected
    before = labelled["summary"]["tasks"]["inpatient_admission_1y"]["all"]["positives"]
    assert summary["tasks"]["inpatient_admission_1y"]["all"]["positives"] > before


def test_builtin_concepts_resolve_to_the_codes_each_vocabulary_writes() -> None:
    concepts = ConceptSets.load()
    task = load_task("new_prediabetes_3y")
    assert set(task.label.match.codes) == {"SNOMED/15777000", "ICD10CM/R73.03", "ICD9CM/790.29"}
    assert {"SNOMED/44054006", "ICD10CM/E11", "ICD9CM/250.02"} <= set(task.exclusions.history.codes)
    assert "ICD10CM/E11." in task.exclusions.history.prefixes
    assert load_task("inpatient_admission_1y").label.match.codes == concepts["inpatient_admission"].codes
    assert load_task("mortality_1y").trigger.match.prefixes == ("VISIT_END/",)


def test_codes_and_concepts_combine_without_duplicates() -> None:
    task = load_task("inpatient_admission_1y").to_mapping()
    task["label"] = {"codes": ["VISIT_START/IMP", "LOCAL/ADMIT"], "concepts": ["inpatient_admission"]}

    codes = TaskDefinition.from_mapping(task).label.match.codes
    assert codes == ("VISIT_START/IMP", "LOCAL/ADMIT", "VISIT_START/ACUTE", "VISIT_START/NONAC")


def test_an_unknown_concept_names_the_file_the_key_and_a_near_name(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_text("name: t\nprompt_token: '[TASK_010]'\ntrigger: {concepts: [encounter_end], offset: 1s}\n"
                    "prediction_window: {end: 30d}\nlabel: {concepts: [inpatient_admisson]}\n")
    with pytest.raises(TaskDefinitionError) as err:
        load_task(path)
    message = str(err.value)
    assert f"{path}: label.concepts[0]: unknown concept 'inpatient_admisson'" in message
    assert "did you mean 'inpatient_admission'?" in message


@pytest.mark.parametrize("text, expected", [
    ("just text\n", "expected a mapping of concept names to code lists"),
    ("sepsis: [A41.9]\n", "sepsis: expected a mapping with codes and/or prefixes"),
    ("sepsis: {code: [ICD10CM/A41.9]}\n", "sepsis.code: unknown key 'code' (did you mean 'codes'?)"),
    ("sepsis: {description: none}\n", "sepsis: a concept needs at least one entry in codes or prefixes"),
    ("sepsis: {codes: ICD10CM/A41.9}\n", "sepsis.codes: expected a list of code strings"),
    ("sepsis: {codes: ['']}\n", "sepsis.codes[0]: expected a non-empty code string"),
    ("sepsis: {codes: [ICD10CM/A41.9]}\nsepsis: {codes: [ICD9CM/038.9]}\n", "key 'sepsis' is given twice"),
    (f"sepsis: {{codes: {alias_bomb()}}}\n", "expands to more than 100,000 values"),
])
def test_bad_concept_files_are_refused_with_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "concepts.yaml"
    path.write_text(text)
    with pytest.raises(ConceptError) as err:
        ConceptSets.load([path])
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)


def test_a_site_file_replaces_a_concept_by_name_and_adds_new_ones() -> None:
    site = parse_concepts({"death": {"codes": ["MEDS_DEATH", "LOCAL/DECEASED"]},
                           "sepsis": {"codes": ["ICD10CM/A41.9"], "prefixes": ["ICD10CM/A41."]}}, "site.yaml")
    merged = ConceptSets({**ConceptSets.load(), **site})
    assert merged["death"].codes == ("MEDS_DEATH", "LOCAL/DECEASED")
    assert merged["sepsis"].prefixes == ("ICD10CM/A41.",)
    assert merged["prediabetes"] == ConceptSets.load()["prediabetes"]
