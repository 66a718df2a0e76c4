"""``ehrfm <stage> --help``: the stage's own keys, with their comments and defaults.

Hydra's generic help lists every config group of the search path (including groups that belong
to other stages) and drops the comments that explain each key. This page is made from the
stage's YAML itself: its keys as written (defaults and comments), then each config group the
stage uses with the option chosen by default, the other options, and the keys of the default.

>>> page = stage_help("label", "MEDS dataset -> task labels")
>>> "usage: ehrfm label [key=value ...]" in page and "overwrite: false" in page
True
>>> "defaults:" in page  # Hydra's composition list is summarised, not shown raw
False
>>> print(stage_help("pretrain", "pretraining").split("Config groups")[1].splitlines()[1])
  model=tiny  (options: base, small, tiny)
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ehrfm.resources import conf_dir

__all__ = ["stage_help"]


def stage_help(stage: str, summary: str, conf: Path | None = None) -> str:
    """The help page of ``stage`` (its ``conf/<stage>.yaml``), as plain text."""
    conf = conf or conf_dir()
    text = (conf / f"{stage}.yaml").read_text()
    header = [line[2:] if line.startswith("# ") else line[1:] for line in _leading_comments(text)]
    groups = _groups(yaml.safe_load(text).get("defaults") or [])
    lines = [f"usage: ehrfm {stage} [key=value ...] [hydra flags]", ""]
    lines += header or [f"ehrfm {stage}: {summary}"]
    lines += ["", f"Keys (conf/{stage}.yaml; the value shown is the default):", ""]
    lines += ["  " + line for line in _body(text)]
    if groups:
        lines += ["", "Config groups (choose with GROUP=OPTION; the default's keys are under it):"]
        for group, chosen in groups:
            options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
            name = group.removeprefix(f"{stage}_")  # experiment=NAME on the command line
            lines.append(f"  {name}={chosen if chosen is not None else 'null'}  (options: {', '.join(options)})")
            if chosen is not None and (conf / group / f"{chosen}.yaml").is_file():
                body = _body((conf / group / f"{chosen}.yaml").read_text())
                lines += ["      " + line for line in body]
    lines += ["", f"Override any key: ehrfm {stage} key=value group.key=value", f"Print the composed config: "
              f"ehrfm {stage} --cfg job          Hydra's own help: ehrfm {stage} --hydra-help"]
    return "\n".join(lines).rstrip() + "\n"


def _leading_comments(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def _body(text: str) -> list[str]:
    """The YAML text without its leading comments, its ``defaults:`` list and ``# @package`` lines."""
    lines = text.splitlines()
    start = len(_leading_comments(text))
    kept: list[str] = []
    in_defaults = False
    for line in lines[start:]:
        if line.startswith("defaults:"):
            in_defaults = True
            continue
        if in_defaults:
            if line.startswith((" ", "-", "\t")) or not line.strip():
                continue
            in_defaults = False
        if line.startswith("# @package"):
            continue
        kept.append(line)
    while kept and not kept[0].strip():
        kept.pop(0)
    return kept


def _groups(defaults: list[object]) -> list[tuple[str, str | None]]:
    """``(group, default option)`` for each group the stage picks (not Hydra's own, not overrides)."""
    groups = []
    for item in defaults:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        (key, value), = item.items()
        if key.startswith("override ") or key == "hydra" or key.startswith("hydra/"):
            continue
        groups.append((key, value))
    return groups
