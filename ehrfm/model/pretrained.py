"""``save_pretrained`` / ``from_pretrained``: a directory of ``config.json`` + ``model.safetensors``.

No pickle anywhere on the load path: the config is JSON and the weights are safetensors, so a
model directory from an untrusted source cannot run code. (Lightning ``.ckpt`` files are for
resuming training only.)

``config.json``::

    {"format": "ehrfm-model", "format_version": 1, "model_class": "EHRLanguageModel",
     "config": {... BackboneConfig fields ...}}

Tied weights (the LM head shares the token embedding) are stored once and re-tied on load.
A ``MambaBackbone`` can be loaded from an ``EHRLanguageModel`` directory (its ``backbone.``
weights), which is how task heads start from a pretrained model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import BackboneConfig

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "MissingPretrainedFileError",
    "PretrainedFormatError",
    "PretrainedMixin",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "ehrfm-model"
FORMAT_VERSION = 1

T = TypeVar("T", bound="PretrainedMixin")


class PretrainedFormatError(ValueError):
    """A model directory exists but a file in it is unreadable or does not match the model."""


class MissingPretrainedFileError(FileNotFoundError):
    """The model directory, or a file it must contain, does not exist."""


def _storage_key(t: Tensor) -> tuple[int, int, tuple[int, ...], tuple[int, ...]]:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))


def _aliases(state: dict[str, Tensor]) -> dict[str, str]:
    """``{alias_key: first_key}`` for entries that are views of an earlier entry (tied weights)."""
    first: dict[Any, str] = {}
    out: dict[str, str] = {}
    for key, tensor in state.items():
        sk = _storage_key(tensor)
        if sk in first:
            out[key] = first[sk]
        else:
            first[sk] = key
    return out


def _tied_parameter_names(model: nn.Module) -> set[str]:
    """Names of parameters that are the same tensor as an earlier one (saved once, re-tied on load)."""
    first: dict[int, str] = {}
    tied = set()
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in first:
            tied.add(name)
        else:
            first[id(parameter)] = name
    return tied


def _header_shapes(path: Path, prefix: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` from a safetensors header (no tensor data read), keys under ``prefix``."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise PretrainedFormatError(f"{path}: unreadable safetensors file ({exc})") from exc
    return {key[len(prefix):]: shape for key, shape in shapes.items() if key.startswith(prefix)}


class PretrainedMixin:
    """Adds ``save_pretrained`` / ``from_pretrained`` to an ``nn.Module`` built from a ``BackboneConfig``.

    Subclasses set ``config`` in ``__init__(config)``. ``loadable_from`` maps another model
    class name to the key prefix under which this model's weights sit in that class's files.
    """

    config: BackboneConfig
    loadable_from: ClassVar[dict[str, str]] = {}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
        assert isinstance(self, nn.Module)
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        tied = _aliases(state)
        weights = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k not in tied}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_class": type(self).__name__,
                "config": self.config.to_dict()}
        extra = self.extra_config()
        if extra:
            meta["extra"] = extra
        (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        save_file(weights, str(out / WEIGHTS_NAME),
                  metadata={"format": "pt", "model_class": type(self).__name__})
        return out

    def extra_config(self) -> dict[str, Any]:
        """JSON-able settings beyond the ``BackboneConfig`` (e.g. task names); stored as ``"extra"``."""
        return {}

    @classmethod
    def build_from_config(cls: type[T], config: BackboneConfig, extra: dict[str, Any]) -> T:
        """The empty model that ``from_pretrained`` fills; override when ``extra_config`` is used."""
        return cls(config)  # type: ignore[call-arg]

    @classmethod
    def read_config(cls, directory: str | Path) -> tuple[str, BackboneConfig]:
        """``(model_class, config)`` from ``directory/config.json``, with errors naming the file."""
        model_class, config, _ = cls.read_meta(directory)
        return model_class, config

    @classmethod
    def read_meta(cls, directory: str | Path) -> tuple[str, BackboneConfig, dict[str, Any]]:
        """``(model_class, config, extra)`` from ``directory/config.json``."""
        path = Path(directory) / CONFIG_NAME
        if not Path(directory).is_dir():
            raise MissingPretrainedFileError(f"model directory not found: {directory}")
        if not path.is_file():
            raise MissingPretrainedFileError(
                f"{path}: missing (a model directory holds {CONFIG_NAME} and {WEIGHTS_NAME})"
            )
        try:
            meta = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PretrainedFormatError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise PretrainedFormatError(
                f"{path}: not an ehrfm model config (expected \"format\": \"{FORMAT}\")"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise PretrainedFormatError(
                f"{path}: format_version {meta.get('format_version')!r}; this ehrfm reads {FORMAT_VERSION}"
            )
        if not isinstance(meta.get("config"), dict):
            raise PretrainedFormatError(f"{path}: \"config\" must be an object")
        try:
            config = BackboneConfig.from_dict(meta["config"])
        except (TypeError, ValueError) as exc:
            raise PretrainedFormatError(f"{path}: {exc}") from exc
        extra = meta.get("extra", {})
        if not isinstance(extra, dict):
            raise PretrainedFormatError(f"{path}: \"extra\" must be an object, got {extra!r}")
        return str(meta.get("model_class", "")), config, extra

    @classmethod
    def from_pretrained(cls: type[T], directory: str | Path, map_location: str | torch.device = "cpu") -> T:
        """Rebuild the model from ``directory`` (see module docstring); weights must match exactly."""
        model_class, config, extra = cls.read_meta(directory)
        if model_class == cls.__name__:
            prefix = ""
        elif model_class in cls.loadable_from:
            prefix = cls.loadable_from[model_class]
        else:
            raise PretrainedFormatError(
                f"{Path(directory) / CONFIG_NAME}: holds a {model_class!r}, "
                f"which {cls.__name__}.from_pretrained cannot load"
            )
        path = Path(directory) / WEIGHTS_NAME
        if not path.is_file():
            raise MissingPretrainedFileError(
                f"{path}: missing (a model directory holds {CONFIG_NAME} and {WEIGHTS_NAME})"
            )
        # The config is checked against the weights' header (read without the tensor data)
        # before anything is built: a config far larger than its weights fails here, not after
        # allocating it.
        header = _header_shapes(path, prefix)
        held = sum(math.prod(shape) for shape in header.values())
        needed = config.dominant_parameter_count()
        if needed > 1.5 * held + 1_000_000:
            raise PretrainedFormatError(
                f"{path}: holds {held:,} parameters, but {Path(directory) / CONFIG_NAME} describes a model "
                f"of about {needed:,}: the config and the weights do not belong together")
        try:
            model = (cls.build_from_config(config, extra) if model_class == cls.__name__
                     else cls.build_from_config(config, {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise PretrainedFormatError(
                f"{Path(directory) / CONFIG_NAME}: bad \"extra\" settings ({exc})"
            ) from exc
        assert isinstance(model, nn.Module)
        expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
        tied = _tied_parameter_names(model)
        missing = sorted(set(expected) - set(header) - tied)
        unexpected = sorted(set(header) - set(expected))
        if missing or unexpected:
            raise PretrainedFormatError(
                f"{path}: weights do not match {config!r}: "
                f"missing {missing[:10]}, unexpected {unexpected[:10]}"
            )
        for key, shape in header.items():
            if shape != expected[key]:
                raise PretrainedFormatError(
                    f"{path}: {key} has shape {shape}, the config needs {expected[key]}"
                )
        try:
            stored = load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as exc:
            raise PretrainedFormatError(f"{path}: unreadable safetensors file ({exc})") from exc
        if prefix:
            stored = {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}
        for key, tensor in stored.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise PretrainedFormatError(f"{path}: {key} holds NaN or infinite values")
        # strict=False only because tied aliases are absent; everything else was checked above.
        model.load_state_dict(stored, strict=False)
        return model.to(map_location)  # type: ignore[return-value]
