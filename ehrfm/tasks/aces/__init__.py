"""ACES task configs as ehrfm tasks: translate what maps exactly, refuse the rest by name.

:func:`task_from_aces` reads an ACES YAML (or its parsed mapping) and returns the
:class:`~ehrfm.tasks.TaskDefinition` that labels the same rows; the mapping table, the refused
features and how ehrfm's censoring and sampling relate to ACES are in
:mod:`ehrfm.tasks.aces.translate` and :mod:`ehrfm.tasks.aces.post_steps`.

``ehrfm label`` takes an ACES config through an ordinary ehrfm task file that names it with
``aces:`` (a path relative to the task file) and adds what ACES has no words for::

    name: mortality_1y_aces
    prompt_token: "[TASK_010]"
    aces: mortality_1y.yaml          # an ACES config, read by aces-cli unchanged
    aces_predicates: mimic.yaml      # optional: per-dataset predicates (aces-cli predicates_path=)
    sampling: {max_per_subject: 5}   # optional; description: optional (default: the ACES one)

``ACES_CONFIGS_DIR`` holds an ACES config of each built-in task; each translates to its
built-in exactly, and ACES labels the same rows as ehrfm with it (``tests/tasks/test_aces_agreement.py``):

>>> from ehrfm.tasks import Sampling, load_task
>>> task = task_from_aces(ACES_CONFIGS_DIR / "mortality_1y.yaml", prompt_token="[TASK_000]",
...                       sampling=Sampling(max_per_subject=5))
>>> task == load_task("mortality_1y")
True
>>> task.trigger.match.prefixes, str(task.window.end), task.label.match.codes
(('VISIT_END/',), '365 days, 0:00:00', ('MEDS_DEATH',))
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..definition import Sampling, TaskDefinition, TaskDefinitionError
from ..yaml_files import UnreadableYamlError, read_yaml_file
from .post_steps import POST_STEPS, apply_ehrfm_post_steps, post_step_reasons
from .translate import SPECIAL_PREDICATES, AcesTranslationError, aces_to_mapping, looks_like_aces

__all__ = [
    "ACES_CONFIGS_DIR",
    "ACES_KEY",
    "ACES_PREDICATES_KEY",
    "POST_STEPS",
    "SPECIAL_PREDICATES",
    "AcesTranslationError",
    "aces_to_mapping",
    "apply_ehrfm_post_steps",
    "looks_like_aces",
    "post_step_reasons",
    "read_aces_config",
    "task_from_aces",
    "task_from_aces_file",
    "with_predicates",
]

ACES_CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
ACES_KEY = "aces"  # the key of an ehrfm task file that points at an ACES config
ACES_PREDICATES_KEY = "aces_predicates"  # optional: a predicates file that overrides the config's
WRAPPER_KEYS = ("name", "description", "prompt_token", ACES_KEY, ACES_PREDICATES_KEY, "sampling")
PREDICATES_FILE_KEYS = ("predicates", "patient_demographics", "description", "metadata")


def read_aces_config(path: str | Path) -> Any:
    """The parsed ACES YAML at ``path`` (same size, depth and duplicate-key bounds as task files)."""
    try:
        return read_yaml_file(path, what="ACES task config")
    except UnreadableYamlError as err:
        raise AcesTranslationError(str(err)) from None


def with_predicates(data: Any, predicates: str | Path | Mapping[str, Any] | None, *,
                    source: str) -> Any:
    """``data`` with its predicates overridden by a predicates file, as ``aces-cli predicates_path=``
    does (MEDS-DEV keeps one such file per dataset): same-named predicates are replaced, new ones
    added. ``predicates`` is the file's path or its parsed mapping; ``None`` returns ``data``.
    """
    if predicates is None:
        return data
    where = str(predicates) if isinstance(predicates, (str, Path)) else f"{source} (predicates)"
    override = read_aces_config(predicates) if isinstance(predicates, (str, Path)) else predicates
    if not isinstance(override, Mapping):
        raise AcesTranslationError(f"{where}: <top level>: expected a predicates file (a mapping with "
                                   f"'predicates'), got {type(override).__name__}")
    for key in override:
        if key not in PREDICATES_FILE_KEYS:
            raise AcesTranslationError(f"{where}: {key}: unknown key {str(key)!r}; a predicates file holds "
                                       f"{', '.join(PREDICATES_FILE_KEYS)}")
    if not isinstance(data, Mapping):
        return data  # the translator names what is wrong with the config itself
    merged = dict(data)
    for key in ("predicates", "patient_demographics"):
        extra = override.get(key) or {}
        if not isinstance(extra, Mapping):
            raise AcesTranslationError(f"{where}: {key}: expected a mapping of names to predicates, "
                                       f"got {type(extra).__name__}")
        if extra:
            merged[key] = {**(data.get(key) or {}), **extra}
    return merged


def _name_from(source: str) -> str:
    """A task name from a file name: ``In-Hospital Mortality.yaml`` -> ``in_hospital_mortality``."""
    name = re.sub(r"[^a-z0-9_]+", "_", Path(source).stem.lower()).strip("_")
    return name if re.match(r"[a-z]", name) else f"task_{name}"


def task_from_aces(config: str | Path | Mapping[str, Any], *, prompt_token: str, name: str | None = None,
                   description: str | None = None, sampling: Sampling | Mapping[str, Any] | None = None,
                   predicates: str | Path | Mapping[str, Any] | None = None,
                   source: str | None = None) -> TaskDefinition:
    """The ehrfm task of an ACES config (a YAML path or its parsed mapping).

    ``name`` defaults to the file's stem; ``description`` to the config's ``description``;
    ``sampling`` (ehrfm's, not ACES's) to none. ``predicates`` overrides the config's predicates
    (see :func:`with_predicates`). Errors name the file (``source`` for a mapping), the window or
    predicate and the feature that does not map.
    """
    if isinstance(config, (str, Path)):
        source = source or str(config)
        data = read_aces_config(config)
    else:
        source = source or "<ACES config>"
        data = config
    mapping = aces_to_mapping(with_predicates(data, predicates, source=source), source=source)
    if name is None:
        if source.startswith("<"):
            raise TaskDefinitionError(f"{source}: give name=...: a mapping has no file name to take it from")
        name = _name_from(source)
    if isinstance(sampling, Sampling):
        sampling = dataclasses.asdict(sampling)
    mapping = {"name": name, "prompt_token": prompt_token, **mapping}
    if description is not None:
        mapping["description"] = description
    if sampling is not None:
        mapping["sampling"] = dict(sampling)
    return TaskDefinition.from_mapping(mapping, source=source)


def _file_key(data: Mapping[str, Any], key: str, source: Path, what: str, missing: str, *,
              required: bool) -> Path | None:
    """The existing file a task-file key names, relative to the task file (None when optional and
    absent); errors name the task file, the key, and the file as ``what`` / ``missing``."""
    target = data.get(key)
    if target is None and not required:
        return None
    if not isinstance(target, str) or not target.strip():
        raise TaskDefinitionError(f"{source}: {key}: expected the path of an {what}; got {target!r}")
    path = Path(target) if Path(target).is_absolute() else source.parent / target
    if not path.is_file():
        raise TaskDefinitionError(f"{source}: {key}: no such {missing}: {path}")
    return path


def task_from_aces_file(data: Mapping[str, Any], *, source: str | Path) -> TaskDefinition:
    """An ehrfm task file whose ``aces:`` key names an ACES config (``data`` is its parsed YAML).

    The ACES path is relative to the task file. Errors in the task file name it and the key;
    errors in the ACES config name that file.
    """
    source = Path(source)
    for key in data:
        if key not in WRAPPER_KEYS:
            raise TaskDefinitionError(f"{source}: {key}: unknown key {str(key)!r} in a task file with "
                                      f"'{ACES_KEY}:'; allowed: {', '.join(WRAPPER_KEYS)} (the task logic "
                                      "belongs in the ACES config)")
    for key in ("name", "prompt_token"):
        if key not in data:
            raise TaskDefinitionError(f"{source}: {key}: required key is missing")
    path = _file_key(data, ACES_KEY, source, "ACES task config", "ACES task config", required=True)
    predicates = _file_key(data, ACES_PREDICATES_KEY, source, "ACES predicates file", "predicates file",
                           required=False)
    mapping = aces_to_mapping(with_predicates(read_aces_config(path), predicates, source=str(path)),
                              source=str(path))
    mapping = {"name": data["name"], "prompt_token": data["prompt_token"], **mapping}
    for key in ("description", "sampling"):
        if key in data:
            mapping[key] = data[key]
    # name, prompt_token and sampling come from the task file: its checks name it
    return TaskDefinition.from_mapping(mapping, source=str(source))
