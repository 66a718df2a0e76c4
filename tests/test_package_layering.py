"""The package's layering, read from the source: one stage per folder, stages never import each
other's runners, evaluation never imports finetuning.

Run as a script to print which ehrfm package imports which::

    python tests/test_package_layering.py
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ehrfm"
# Stage packages: each is one `ehrfm <stage>` command.
STAGE_PACKAGES = {"ingest": "ingest", "tokenize": "tokenize", "pretrain": "pretrain", "label": "tasks",
                  "finetune": "finetune", "evaluate": "evaluate", "score": "score", "demo": "demo"}


def _imports(path: Path) -> set[str]:
    """Absolute ``ehrfm.*`` modules imported by one file (relative imports resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {name for name in found if name == "ehrfm" or name.startswith("ehrfm.")}


def import_map() -> dict[str, set[str]]:
    """``{"ehrfm.<package or module>": {imported ehrfm.<package or module>, ...}}``."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        source = ".".join(parts[:2]).removesuffix(".__init__")
        for name in _imports(path):
            target = ".".join(name.split(".")[:2])
            if target != source:
                edges[source].add(target)
    return dict(edges)


def _files_of(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def test_every_stage_is_one_package_with_a_runner_and_a_config() -> None:
    for stage, package in STAGE_PACKAGES.items():
        folder = PACKAGE / package
        assert (folder / "__init__.py").is_file() and (folder / "stage.py").is_file(), stage
        assert (folder / "config.py").is_file(), f"{stage}: a typed config"


def test_no_stage_imports_another_stages_runner() -> None:
    for package in STAGE_PACKAGES.values():
        for path in _files_of(package):
            for name in _imports(path):
                parts = name.split(".")
                if len(parts) >= 3 and parts[1] in STAGE_PACKAGES.values() and parts[1] != package:
                    assert parts[2] not in ("stage", "run"), f"{path} imports {name}"


def test_evaluate_does_not_import_finetune_and_shared_packages_import_no_stage() -> None:
    edges = import_map()
    assert "ehrfm.finetune" not in edges.get("ehrfm.evaluate", set())
    for shared in ("ehrfm.predict", "ehrfm.model", "ehrfm.ops", "ehrfm.batching", "ehrfm.training",
                   "ehrfm.meds_dataset", "ehrfm.schema", "ehrfm.typed_config", "ehrfm.outputs", "ehrfm.jobs"):
        stages = {f"ehrfm.{p}" for p in STAGE_PACKAGES.values()} - {"ehrfm.tokenize", "ehrfm.tasks"}
        assert not edges.get(shared, set()) & stages, (shared, edges.get(shared))


if __name__ == "__main__":
    for source, targets in sorted(import_map().items()):
        print(f"{source:<22} -> {', '.join(sorted(targets))}")
