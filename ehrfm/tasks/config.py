"""Settings of one ``ehrfm label`` run; ``conf/label.yaml`` holds the same keys for the CLI.

>>> LabelConfig(input="meds", output="labels").tasks[0]
'mortality_1y'
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_TASKS", "LabelConfig"]

DEFAULT_TASKS = ("mortality_1y", "inpatient_admission_1y", "emergency_visit_90d", "new_prediabetes_3y")


@dataclass
class LabelConfig:
    """``input`` (a MEDS dataset) -> ``output`` (<task>/0.parquet, _details/, summary.json).

    ``tasks`` are built-in task names (``builtin_task_names()``) or paths to task YAML files.
    ``concept_sets`` are site concept files (the layout of ``ehrfm/tasks/concepts.yaml``) that
    add or replace the concepts task files name, e.g. a hospital's local encounter classes.
    """

    input: str
    output: str
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    concept_sets: list[str] = field(default_factory=list)
    overwrite: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):  # tasks=mortality_1y on the command line
            self.tasks = [self.tasks]
        if isinstance(self.concept_sets, str):
            self.concept_sets = [self.concept_sets]
        if not self.tasks:
            raise ValueError("tasks must be a non-empty list of built-in task names or task YAML paths")
