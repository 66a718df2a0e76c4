"""One way from config to code: a stage's settings are a dataclass, built from a plain mapping.

Every stage has a config dataclass (``IngestConfig``, ``TokenizeConfig``, ``PretrainConfig``,
...). The CLI composes ``conf/<stage>.yaml`` with Hydra and hands the resulting mapping to
:func:`from_mapping`; Python callers build the dataclass directly or pass keyword arguments to
the stage's function (``ehrfm.pretrain.pretrain(output=..., model={"d_model": 128})``). Either
way, an unknown key fails with its full path and the closest known names, and a value of the
wrong type fails with the key and the value, before any work starts.

Nested dataclass fields are built recursively. Fields typed as ``dict`` are free-form mappings
whose keys the owning dataclass checks itself (see :func:`check_keys`), e.g. a model's
``BackboneConfig`` fields or ``lightning.Trainer`` arguments.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Optim:
...     learning_rate: float = 1e-3
>>> @dataclass
... class Run:
...     output: str = "out"
...     epochs: int = 1
...     optim: Optim = field(default_factory=Optim)
>>> from_mapping(Run, {"epochs": 3, "optim": {"learning_rate": 1}})
Run(output='out', epochs=3, optim=Optim(learning_rate=1.0))
>>> from_mapping(Run, {"optim": {"learnig_rate": 0.1}}, where="pretrain")
Traceback (most recent call last):
...
ehrfm.typed_config.ConfigError: pretrain: unknown key 'optim.learnig_rate'
(did you mean 'optim.learning_rate'?)
>>> from_mapping(Run, {"epochs": "three"}, where="pretrain")
Traceback (most recent call last):
...
ehrfm.typed_config.ConfigError: pretrain: 'epochs' must be an integer, got 'three'
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["ConfigError", "check_call_keys", "check_keys", "conf_group", "from_mapping", "resolve_config",
           "stage_mapping", "to_mapping"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A stage setting is unknown, missing or of the wrong type; the message names the key."""


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(values: Mapping[str, Any], known: Iterable[str], *, where: str, prefix: str = "") -> None:
    """Raise :class:`ConfigError` for the first key of ``values`` outside ``known``."""
    known = set(known)
    for key in values:
        if key not in known:
            full = f"{prefix}{key}"
            raise ConfigError(f"{where}: unknown key {full!r}{_suggest(full, [prefix + k for k in known])}")


def _type_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, str(kind))


def _coerce(value: Any, kind: Any, key: str, where: str) -> Any:
    """``value`` checked against the annotation ``kind`` (scalars, Optional, lists, dicts, dataclasses)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, where)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if errors else ConfigError(f"{where}: {key!r} cannot be {value!r}")
    if kind is Any:
        return value
    if dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key!r} must be a mapping of settings, got {value!r}")
        return from_mapping(kind, value, where=where, prefix=f"{key}.")
    if origin in (list, tuple) or kind in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) or isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key!r} must be a list, got {value!r}")
        args = typing.get_args(kind)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(items) if (origin or kind) is tuple else items
    if origin is dict or kind is dict or origin is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key!r} must be {_type_name(bool)}, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key!r} must be {_type_name(int)}, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key!r} must be {_type_name(float)}, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key!r} must be {_type_name(str)}, got {value!r}")
        return value
    return value


def _field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations; nested config classes are also found through their default factories
    (which covers dataclasses defined where ``get_type_hints`` cannot see them, e.g. a doctest)."""
    local = {f.default_factory.__name__: f.default_factory for f in dataclasses.fields(cls)
             if isinstance(f.default_factory, type)}
    return typing.get_type_hints(cls, localns=local)


def from_mapping(cls: type[T], values: Mapping[str, Any], *, where: str = "", prefix: str = "") -> T:
    """Build the dataclass ``cls`` from ``values``, rejecting unknown keys and mistyped values."""
    where = where or cls.__name__
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: settings must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    check_keys(values, fields, where=where, prefix=prefix)
    hints = _field_types(cls)
    kwargs = {name: _coerce(value, hints[name], f"{prefix}{name}", where) for name, value in values.items()}
    missing = [name for name, f in fields.items() if name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required setting(s) {[prefix + m for m in missing]}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def to_mapping(config: Any) -> dict[str, Any]:
    """The plain-dict form of a config dataclass (what ``from_mapping`` reads back)."""
    return dataclasses.asdict(config)


def check_call_keys(values: Mapping[str, Any], function: Any, *, where: str, prefix: str,
                    exclude: Iterable[str] = ()) -> None:
    """Raise :class:`ConfigError` for a key of ``values`` that ``function`` takes no argument for."""
    import inspect

    parameters = inspect.signature(function).parameters
    known = [name for name, p in parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in ("self", *exclude)]
    check_keys(values, known, where=where, prefix=prefix)


def conf_group(group: str, option: str, **updates: Any) -> dict[str, Any]:
    """The settings in ``conf/<group>/<option>.yaml`` (minus Hydra's own keys), with ``updates``.

    Config dataclasses use this as their default, so a Python call gets exactly the defaults
    that the CLI composes from the same file.
    """
    import yaml

    from ehrfm.resources import conf_dir

    path = conf_dir() / group / f"{option}.yaml"
    values = yaml.safe_load(path.read_text()) or {}
    values = {k: v for k, v in values.items() if k != "defaults" and not k.startswith("_")}
    return {**values, **updates}


def stage_mapping(cfg: Any, *, where: str) -> dict[str, Any]:
    """A composed Hydra config as a plain dict, without Hydra's own ``hydra`` node.

    A required value left unset (``???`` in the YAML) fails here, naming the key.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
        if missing:
            raise ConfigError(f"{where}: set {missing[0]}=<value> on the command line (required, no default)")
    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(values, dict)
    values.pop("hydra", None)
    return values


def resolve_config(cls: type[T], config: T | Mapping[str, Any] | None, settings: Mapping[str, Any],
                   *, where: str) -> T:
    """The config a stage function runs with: ``config`` itself, or built from a mapping and keywords."""
    if isinstance(config, cls):
        if settings:
            return from_mapping(cls, {**to_mapping(config), **settings}, where=where)
        return config
    return from_mapping(cls, {**dict(config or {}), **settings}, where=where)
