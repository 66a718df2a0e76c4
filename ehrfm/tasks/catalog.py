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
from typing import Any

import yaml

from .concepts import ConceptSets
from .definition import TaskDefinition, TaskDefinitionError

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
_SUFFIXES = (".yaml", ".yml")


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice (plain PyYAML keeps the last silently)."""


def _no_duplicate_keys(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def builtin_task_names() -> list[str]:
    """Names of the tasks that ship with ehrfm, sorted."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


# Bounds on a task file, checked before its content is built: a task is a page of YAML, and a
# file from elsewhere must not make ehrfm spend unbounded memory or time (an alias "bomb" whose
# nine-fold nested aliases expand to millions of nodes, nesting thousands of levels deep).
MAX_TASK_FILE_BYTES = 1 << 20
MAX_YAML_DEPTH = 50
MAX_YAML_NODES = 100_000
_OPENS = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
          yaml.FlowSequenceStartToken)
_CLOSES = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _check_nesting(text: str) -> None:
    """Refuse nesting deeper than ``MAX_YAML_DEPTH`` (scanned token by token: no recursion)."""
    depth = 0
    for token in yaml.scan(text):
        if isinstance(token, _OPENS):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ValueError(f"nested more than {MAX_YAML_DEPTH} levels deep (line {token.start_mark.line + 1})")
        elif isinstance(token, _CLOSES):
            depth -= 1


def _expanded_size(root: yaml.Node) -> int:
    """Nodes the document holds once every alias is expanded (aliases share composed nodes)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = ([item for pair in node.value for item in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if children_done or not children:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def read_yaml_file(path: str | Path, *, what: str = "task file") -> Any:
    """Read one small YAML file safely: bounded size, depth and aliases; a key given twice refused.

    Errors (:class:`TaskDefinitionError`) name the file. Task and concept files both use it.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TASK_FILE_BYTES:
            raise TaskDefinitionError(f"{path}: {path.stat().st_size:,} bytes; a {what} holds at most "
                                      f"{MAX_TASK_FILE_BYTES:,}")
        raw = path.read_bytes()
    except OSError as err:
        raise TaskDefinitionError(f"{path}: cannot read the {what} ({err.strerror or err})") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TaskDefinitionError(f"{path}: not UTF-8 text (byte {err.start}); save the {what} as UTF-8") from None
    try:
        _check_nesting(text)
        root = yaml.compose(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        if root is not None and _expanded_size(root) > MAX_YAML_NODES:
            raise ValueError(f"expands to more than {MAX_YAML_NODES:,} values once its aliases are resolved")
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise TaskDefinitionError(f"{path}: not valid YAML: {err}") from None
    except ValueError as err:
        raise TaskDefinitionError(f"{path}: {err}") from None


def read_task_file(path: str | Path, *, concepts: ConceptSets | None = None) -> TaskDefinition:
    """Parse and validate one task YAML file; errors name the file.

    ``concepts`` resolves the concept names the file uses (default: the shipped concept sets).
    """
    data = read_yaml_file(path)
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
