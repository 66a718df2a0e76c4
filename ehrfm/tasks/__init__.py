"""Clinical prediction tasks defined in YAML, labelled leak-free and censored on MEDS events.

A task file names its trigger (which events create prediction times), observation rules, the
prediction window, the label predicate, exclusions and sampling; see
:mod:`ehrfm.tasks.definition` for the rules and ``ehrfm/tasks/builtin/*.yaml`` for examples.
``label_meds_dataset`` writes one MEDS label file per task (``run_label(LabelConfig(...))`` is
the ``ehrfm label`` stage). ACES task configs (the MEDS ecosystem's task language) become
ehrfm tasks through :func:`task_from_aces` or a task file with ``aces:`` (:mod:`ehrfm.tasks.aces`).

>>> from ehrfm.tasks import builtin_task_names, load_task
>>> task = load_task("mortality_1y")
>>> task.name, task.prompt_token, str(task.window.end)
('mortality_1y', '[TASK_000]', '365 days, 0:00:00')
"""

from .aces import ACES_CONFIGS_DIR, AcesTranslationError, task_from_aces
from .catalog import BUILTIN_DIR, TEMPLATES_DIR, builtin_task_names, load_task, load_tasks, read_task_file
from .concepts import BUILTIN_CONCEPTS_FILE, Concept, ConceptError, ConceptSets
from .config import LabelConfig
from .definition import (
    CodeMatch,
    Exclusions,
    LabelRule,
    Observation,
    PredictionWindow,
    Sampling,
    TaskDefinition,
    TaskDefinitionError,
    Trigger,
)
from .durations import format_duration, parse_duration
from .label_meds import label_meds_dataset, run_label, to_meds_labels
from .labeler import EXCLUSION_REASONS, candidate_table, label_task

__all__ = [
    "ACES_CONFIGS_DIR",
    "BUILTIN_CONCEPTS_FILE",
    "BUILTIN_DIR",
    "EXCLUSION_REASONS",
    "TEMPLATES_DIR",
    "AcesTranslationError",
    "CodeMatch",
    "Concept",
    "ConceptError",
    "ConceptSets",
    "Exclusions",
    "LabelConfig",
    "LabelRule",
    "Observation",
    "PredictionWindow",
    "Sampling",
    "TaskDefinition",
    "TaskDefinitionError",
    "Trigger",
    "builtin_task_names",
    "candidate_table",
    "format_duration",
    "label_meds_dataset",
    "label_task",
    "load_task",
    "load_tasks",
    "parse_duration",
    "read_task_file",
    "run_label",
    "task_from_aces",
    "to_meds_labels",
]
