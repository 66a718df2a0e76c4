"""Finding and reading task files: ehrfm's built-ins by name, or any YAML file by path.

Built-in tasks are YAML files in ``ehrfm/tasks/builtin/`` (inside the package, so they ship in
the wheel); each yields a non-degenerate cohort on the Synthea data. ``ehrfm/tasks/templates/``
holds standard tasks that this data cannot support (30-day readmission, long stay, one-year new
diagnoses), ready for real data: load them by path. A user adds a task by writing such a file.

>>> builtin_task_names()
['emergency_visit_90d', 'inpatient_admission_1y', 'mortality_1y', 'new_prediabetes_3y']
>>> load_task("inpatient_admission_1y").prompt_token
'[TASK_001]'
>>> load_task(TEMPLATES_DIR / "readmission_30d.yaml").window.end
datetime.timedelta(days=30)
>>> [t.name for t in load_tasks(["mortality_1y", "emergency_visit_90d"])]
['mortality_1y', 'emergency_visit_90d']
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .aces import ACES_KEY, looks_like_aces, task_from_aces_file
from .concepts import ConceptSets
from .definition import TaskDefinition, TaskDefinitionError
from .yaml_files import UnreadableYamlError, read_yaml_file

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
_SUFFIXES = (".yaml", ".yml")


def builtin_task_names() -> list[str]:
    """Names of the tasks that ship with ehrfm, sorted."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def read_task_file(path: str | Path, *, concepts: ConceptSets | None = None) -> TaskDefinition:
    """Parse and validate one task YAML file; errors name the file.

    ``concepts`` resolves the concept names the file uses (default: the shipped concept sets).
    A file with an ``aces:`` key is an ehrfm task whose logic is an ACES task config (see
    :mod:`ehrfm.tasks.aces`); an ACES config itself is refused with how to wrap it.
    """
    try:
        data = read_yaml_file(path, what="task file")
    except UnreadableYamlError as err:
        raise TaskDefinitionError(str(err)) from None
    if isinstance(data, dict) and ACES_KEY in data:
        return task_from_aces_file(data, source=path)
    if looks_like_aces(data):
        raise TaskDefinitionError(
            f"{path}: this is an ACES task config, not an ehrfm task file: write an ehrfm task file with "
            f"name, prompt_token and '{ACES_KEY}: <path to this file>' (see ehrfm.tasks.aces), or call "
            "ehrfm.tasks.task_from_aces")
    return TaskDefinition.from_mapping(data, source=str(path), concepts=concepts)


def load_task(name_or_path: str | Path | TaskDefinition, *,
              concepts: ConceptSets | None = None) -> TaskDefinition:
    """A built-in task by name (``"mortality_1y"``) or a task YAML file by path.

    A string that names an existing file, or ends in ``.yaml``/``.yml``, is read as a path;
    anything else must be a built-in name. A :class:`TaskDefinition` is returned as is.
    ``concepts`` resolves the concept names of a file (default: the shipped concept sets).
    """
    if isinstance(name_or_path, TaskDefinition):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if path.is_file() or path.suffix in _SUFFIXES or len(path.parts) > 1:
        if not path.is_file():
            raise TaskDefinitionError(f"{path}: no such task file")
        return read_task_file(path, concepts=concepts)
    builtin = BUILTIN_DIR / f"{text}.yaml"
    if not builtin.is_file():
        raise TaskDefinitionError(
            f"{text!r}: not a built-in task and not a file; "
            f"built-in tasks: {', '.join(builtin_task_names())} "
            "(or give the path to a task YAML file)")
    return read_task_file(builtin, concepts=concepts)


def load_tasks(names_or_paths: Iterable[str | Path | TaskDefinition], *,
               concepts: ConceptSets | None = None) -> list[TaskDefinition]:
    """Several tasks at once; two tasks may share neither a name nor a prompt token.

    Both must be unique because the name names the label file and the prompt token tells a
    multitask model which question it answers.
    """
    if isinstance(names_or_paths, (str, Path)):
        raise TypeError("load_tasks takes a list of names or paths; "
                        f"got the single value {str(names_or_paths)!r}: "
                        "use load_task, or wrap it in a list")
    tasks = [load_task(item, concepts=concepts) for item in names_or_paths]
    by_name: dict[str, TaskDefinition] = {}
    by_token: dict[str, TaskDefinition] = {}
    for task in tasks:
        if task.name in by_name:
            raise TaskDefinitionError(f"{task.source}: name: {task.name!r} is also the name of the task in "
                                      f"{by_name[task.name].source}; task names must be unique")
        if task.prompt_token in by_token:
            raise TaskDefinitionError(
                f"{task.source}: prompt_token: {task.prompt_token!r} is already used by task "
                f"{by_token[task.prompt_token].name!r} ({by_token[task.prompt_token].source}); "
                "every task needs its own prompt token")
        by_name[task.name] = task
        by_token[task.prompt_token] = task
    return tasks
