"""Reading a small YAML file that may come from anywhere: bounded, and strict about repeated keys.

Task files and concept files are pages of YAML written by people, or sent from elsewhere: a key
given twice is refused (plain PyYAML keeps the last one silently), and a file may not make ehrfm
spend unbounded memory or time before its content is even checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_TASK_FILE_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "UnreadableYamlError", "read_yaml_file"]


class UnreadableYamlError(ValueError):
    """The file cannot be read, is not UTF-8 or valid YAML, or exceeds a bound; the message names it."""


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


# Bounds, checked before the content is built: a task or concept file is a page of YAML, and a
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


def read_yaml_file(path: str | Path, *, what: str = "YAML file") -> Any:
    """Read one small YAML file safely: bounded size, depth and aliases; a key given twice refused.

    Errors (:class:`UnreadableYamlError`) name the file. Task and concept files both use it.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TASK_FILE_BYTES:
            raise UnreadableYamlError(f"{path}: {path.stat().st_size:,} bytes; a {what} holds at most "
                                      f"{MAX_TASK_FILE_BYTES:,}")
        raw = path.read_bytes()
    except OSError as err:
        raise UnreadableYamlError(f"{path}: cannot read the {what} ({err.strerror or err})") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnreadableYamlError(f"{path}: not UTF-8 text (byte {err.start}); save the {what} as UTF-8") from None
    try:
        _check_nesting(text)
        root = yaml.compose(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        if root is not None and _expanded_size(root) > MAX_YAML_NODES:
            raise ValueError(f"expands to more than {MAX_YAML_NODES:,} values once its aliases are resolved")
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise UnreadableYamlError(f"{path}: not valid YAML: {err}") from None
    except ValueError as err:
        raise UnreadableYamlError(f"{path}: {err}") from None
