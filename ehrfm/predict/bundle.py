"""A finetuned model bundle: everything needed to score with a model, in one directory.

``ehrfm finetune`` writes one bundle per head (``<output>/<head>/model``); ``ehrfm evaluate``
reads its calibrators and adds held-out results to its card; scoring loads it whole::

    config.json, model.safetensors   the MultitaskModel (save_pretrained; safetensors, no pickle)
    tokenizer/                        the EventTokenizer it was trained with
    tasks/<task>.yaml                 the definition of every task it answers
    calibration.json                  per task, the calibrator fit on tuning predictions
    model_card.json, model_card.md    training data, tasks and label counts, metrics, limits

Loading reads JSON, YAML and safetensors only, and instantiates only ehrfm's own classes; every
mismatch between the parts (a tokenizer whose vocabulary is not the model's, a task file that
is not one of the model's tasks, a calibrator for an unknown task) fails with
:class:`BundleError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ehrfm.outputs import write_text_atomic
from ehrfm.predict.calibration import Calibrator, calibrator_from_dict

__all__ = [
    "CALIBRATION_FILE",
    "CARD_JSON",
    "CARD_MD",
    "TASKS_DIR",
    "TOKENIZER_DIR",
    "BundleError",
    "file_digest",
    "read_calibrators",
    "read_card",
    "read_task_files",
    "write_calibrators",
    "write_card",
    "write_task_files",
]

TOKENIZER_DIR = "tokenizer"
TASKS_DIR = "tasks"
CALIBRATION_FILE = "calibration.json"
CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
CALIBRATION_FORMAT = "ehrfm-calibration"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (weights and calibrators identify the model a result came from)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class BundleError(ValueError):
    """A model bundle's file is missing, unreadable, or does not match the rest of the bundle."""


def write_task_files(model_dir: Path, tasks: list[Any]) -> None:
    """``tasks/<name>.yaml`` for each task definition (``TaskDefinition.to_mapping``)."""
    for task in tasks:
        write_text_atomic(model_dir / TASKS_DIR / f"{task.name}.yaml", yaml.safe_dump(task.to_mapping(), sort_keys=False))


def read_task_files(model_dir: Path, task_names: list[str]) -> list[Any]:
    """The bundle's task definitions, in ``task_names`` order; each file must define its task."""
    from ehrfm.tasks import TaskDefinitionError, load_task

    folder = model_dir / TASKS_DIR
    present = sorted(p.stem for p in folder.glob("*.yaml"))
    if sorted(task_names) != present:
        raise BundleError(f"{folder}: holds task files {present}, but the model answers {sorted(task_names)}")
    tasks = []
    for name in task_names:
        path = folder / f"{name}.yaml"
        try:
            task = load_task(path)
        except (TaskDefinitionError, OSError, yaml.YAMLError) as err:
            raise BundleError(f"{path}: not a valid task definition: {err}") from err
        if task.name != name:
            raise BundleError(f"{path}: defines task {task.name!r}, expected {name!r}")
        tasks.append(task)
    return tasks


def write_calibrators(model_dir: Path, calibrators: dict[str, Calibrator], fit_on: dict[str, Any]) -> None:
    """``calibration.json``: one fitted calibrator per task and what it was fit on."""
    payload = {"format": CALIBRATION_FORMAT, "fit_on": fit_on,
               "tasks": {task: calibrator.to_dict() for task, calibrator in calibrators.items()}}
    write_text_atomic(model_dir / CALIBRATION_FILE, json.dumps(payload, indent=2) + "\n")


def _read_json(path: Path, what: str) -> Any:
    """The JSON in ``path``; a missing or unreadable file is a :class:`BundleError` naming it."""
    if not path.is_file():
        raise BundleError(f"{path}: missing; a bundle written by `ehrfm finetune` carries {what}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: not valid JSON ({err})") from err


def read_calibrators(model_dir: Path, task_names: list[str]) -> dict[str, Calibrator]:
    """Per task, the calibrator saved in ``calibration.json`` (every task must have one)."""
    path = model_dir / CALIBRATION_FILE
    payload = _read_json(path, "its calibrators")
    if not isinstance(payload, dict) or payload.get("format") != CALIBRATION_FORMAT or not isinstance(
            payload.get("tasks"), dict):
        raise BundleError(f"{path}: not an ehrfm calibration file (format {CALIBRATION_FORMAT!r} with 'tasks')")
    saved = payload["tasks"]
    if sorted(saved) != sorted(task_names):
        raise BundleError(f"{path}: calibrates tasks {sorted(saved)}, but the model answers {sorted(task_names)}")
    out = {}
    for task in task_names:
        try:
            out[task] = calibrator_from_dict(saved[task])
        except ValueError as err:
            raise BundleError(f"{path}: task {task!r}: {err}") from err
    return out


@dataclass
class _Section:
    title: str
    lines: list[str]


def _card_markdown(card: dict[str, Any]) -> str:
    data, tasks = card.get("training_data", {}), card.get("tasks", {})
    sections = [
        _Section("Model", [f"- name: `{card.get('name')}`; ehrfm {card.get('ehrfm_version')}; "
                           f"head `{card.get('head')}`; {card.get('parameters', 0):,} parameters",
                           f"- backbone: {card.get('backbone', {})}"]),
        _Section("Intended use", [card.get("intended_use", "")]),
        _Section("Limits", [f"- {limit}" for limit in card.get("limits", [])]),
        _Section("Training data", [f"- {key}: {value}" for key, value in data.items()]),
        _Section("Tasks", ["| task | description | window end | train rows / positives | tuning rows / positives |",
                           "|---|---|---|---|---|"]
                 + [f"| {name} | {t.get('description', '')} | {t.get('window_end')} | "
                    f"{t.get('train_rows')} / {t.get('train_positives')} | "
                    f"{t.get('tuning_rows')} / {t.get('tuning_positives')} |" for name, t in tasks.items()]),
        _Section("Tuning metrics", [f"- {name}: AUROC {t.get('tuning_auroc')}" for name, t in tasks.items()]),
        _Section("Calibration", [f"- {name}: {t.get('calibrator')}" for name, t in tasks.items()]),
    ]
    held_out = card.get("held_out")
    if held_out:
        sections.append(_Section("Held-out results (ehrfm evaluate)", [held_out.get("table", "")]))
    body = "\n\n".join(f"## {s.title}\n\n" + "\n".join(s.lines) for s in sections)
    return f"# Model card: {card.get('name')}\n\n{body}\n"


def write_card(model_dir: Path, card: dict[str, Any]) -> None:
    """``model_card.json`` and its readable ``model_card.md``."""
    write_text_atomic(model_dir / CARD_JSON, json.dumps(card, indent=2, default=str) + "\n")
    write_text_atomic(model_dir / CARD_MD, _card_markdown(card))


def read_card(model_dir: Path) -> dict[str, Any]:
    path = model_dir / CARD_JSON
    card = _read_json(path, "its model card")
    if not isinstance(card, dict):
        raise BundleError(f"{path}: a model card is a JSON object")
    return card
