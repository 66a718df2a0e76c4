"""Saved recurrent states: a patient's backbone state after their history, to continue from later.

A Mamba backbone's state after a history (per layer: the conv window and the SSM state, plus the
time origin) is all it needs to go on reading. :class:`HistoryStates` holds one such state per
history, with what is needed to trust it later:

- ``n_tokens``: how many history tokens the state has read;
- ``digest``: a 16-byte BLAKE2b digest of those tokens (all five streams), so a later history
  whose first ``n_tokens`` tokens differ (a back-dated event, a re-ingest that orders one
  instant differently, another tokenizer) is noticed and scored from scratch instead;
- ``prediction_time``: the time the state was saved at (information for the user).

Files are safetensors (no pickle): ``subject_id`` (n,), ``n_tokens`` (n,), ``digest`` (n, 16)
uint8, ``prediction_time_us`` (n,) int64 microseconds since 1970, ``time_origin`` (n,) float64,
``layer<i>.conv`` and ``layer<i>.ssm``; the metadata records the model's weights digest, so a
state is never continued by a model it did not come from.

>>> import torch
>>> from ehrfm.model import BackboneConfig, MambaBackbone
>>> backbone = MambaBackbone(BackboneConfig.preset("tiny", vocab_size=40))
>>> states = HistoryStates.empty(backbone, 0)
>>> len(states), states.bytes_per_history()
(0, 71728)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ehrfm.model import BackboneState, MambaBackbone
from ehrfm.model.mixers import MixerState
from ehrfm.outputs import write_atomic

__all__ = ["STATE_SUFFIX", "HistoryStates", "StateFileError", "stream_digest"]

STATE_SUFFIX = ".states.safetensors"
_FORMAT = "ehrfm-history-states"


class StateFileError(ValueError):
    """A saved-states file that cannot be used (names the file and what is wrong)."""


def stream_digest(streams: Sequence[np.ndarray]) -> bytes:
    """16-byte digest of aligned token streams (their bytes, in order, with their dtypes)."""
    digest = hashlib.blake2b(digest_size=16)
    for values in streams:
        digest.update(str(values.dtype).encode())
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.digest()


@dataclass
class HistoryStates:
    """One saved backbone state per history (row), with its token count and digest."""

    subject_id: np.ndarray
    n_tokens: np.ndarray
    digest: np.ndarray
    prediction_time_us: np.ndarray
    state: BackboneState

    def __len__(self) -> int:
        return len(self.subject_id)

    @classmethod
    def empty(cls, backbone: MambaBackbone, rows: int) -> HistoryStates:
        """Zero states for ``rows`` histories on the CPU (filled in by inference)."""
        return cls(subject_id=np.zeros(rows, np.int64), n_tokens=np.zeros(rows, np.int64),
                   digest=np.zeros((rows, 16), np.uint8), prediction_time_us=np.zeros(rows, np.int64),
                   state=backbone.allocate_state(rows, device="cpu"))

    def bytes_per_history(self) -> int:
        """Size of one saved state (conv + SSM of every layer, the origin, the bookkeeping)."""
        per_row = 8 + 8 + 16 + 8 + 8
        for layer in self.state.layers:
            per_row += layer.conv.shape[1:].numel() * layer.conv.element_size()
            per_row += layer.ssm.shape[1:].numel() * layer.ssm.element_size()
        return per_row

    def take(self, rows: np.ndarray | Tensor) -> HistoryStates:
        """The states of ``rows`` (indices), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        index = torch.from_numpy(rows)
        return HistoryStates(
            subject_id=self.subject_id[rows], n_tokens=self.n_tokens[rows],
            digest=self.digest[rows], prediction_time_us=self.prediction_time_us[rows],
            state=BackboneState(
                layers=[MixerState(conv=s.conv[index], ssm=s.ssm[index]) for s in self.state.layers],
                time_origin=self.state.time_origin[index]))

    @staticmethod
    def concat(parts: Sequence[HistoryStates]) -> HistoryStates:
        if not parts:
            raise ValueError("no states to concatenate")
        first = parts[0].state
        return HistoryStates(
            subject_id=np.concatenate([p.subject_id for p in parts]),
            n_tokens=np.concatenate([p.n_tokens for p in parts]),
            digest=np.concatenate([p.digest for p in parts]),
            prediction_time_us=np.concatenate([p.prediction_time_us for p in parts]),
            state=BackboneState(
                layers=[MixerState(conv=torch.cat([p.state.layers[i].conv for p in parts]),
                                   ssm=torch.cat([p.state.layers[i].ssm for p in parts]))
                        for i in range(len(first.layers))],
                time_origin=torch.cat([p.state.time_origin for p in parts])))

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | Path, *, model_digest: str) -> None:
        """Write to ``path`` atomically (a temporary sibling, then a rename)."""
        path = Path(path)
        tensors = {"subject_id": torch.from_numpy(self.subject_id.astype(np.int64)),
                   "n_tokens": torch.from_numpy(self.n_tokens.astype(np.int64)),
                   "digest": torch.from_numpy(self.digest.astype(np.uint8)),
                   "prediction_time_us": torch.from_numpy(self.prediction_time_us.astype(np.int64)),
                   "time_origin": self.state.time_origin.contiguous()}
        for i, layer in enumerate(self.state.layers):
            tensors[f"layer{i}.conv"] = layer.conv.contiguous()
            tensors[f"layer{i}.ssm"] = layer.ssm.contiguous()
        metadata = {"format": _FORMAT, "format_version": "1", "model_digest": model_digest,
                    "n_layers": str(len(self.state.layers))}
        write_atomic(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))

    @classmethod
    def load(cls, path: str | Path, backbone: MambaBackbone, *, model_digest: str) -> HistoryStates:
        """Read a file written by :meth:`save`; refuses states of another model or shape."""
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError) as error:
            raise StateFileError(f"{path}: not a readable states file ({error})") from None
        if metadata.get("format") != _FORMAT:
            raise StateFileError(f"{path}: format {metadata.get('format')!r}, expected {_FORMAT!r}")
        if metadata.get("model_digest") != model_digest:
            raise StateFileError(f"{path}: saved by another model (weights digest "
                                 f"{metadata.get('model_digest', '?')[:12]}..., this model's is "
                                 f"{model_digest[:12]}...); states continue only the model that made them")
        expected = cls.empty(backbone, 1).state
        layers = []
        for i, reference in enumerate(expected.layers):
            pair = []
            for part in ("conv", "ssm"):
                key = f"layer{i}.{part}"
                if key not in tensors:
                    raise StateFileError(f"{path}: missing tensor {key!r}")
                shape, want = tuple(tensors[key].shape[1:]), tuple(getattr(reference, part).shape[1:])
                if shape != want:
                    raise StateFileError(f"{path}: {key} has per-history shape {shape}, the model needs {want}")
                pair.append(tensors[key])
            layers.append(MixerState(conv=pair[0], ssm=pair[1]))
        if f"layer{len(expected.layers)}.conv" in tensors:
            raise StateFileError(f"{path}: holds more layers than the model's {len(expected.layers)}")
        n = tensors["subject_id"].shape[0]
        sizes = {key: value.shape[0] for key, value in tensors.items()}
        if any(size != n for size in sizes.values()):
            raise StateFileError(f"{path}: tensors disagree on the number of histories: {sizes}")
        return cls(subject_id=tensors["subject_id"].numpy(), n_tokens=tensors["n_tokens"].numpy(),
                   digest=tensors["digest"].numpy(), prediction_time_us=tensors["prediction_time_us"].numpy(),
                   state=BackboneState(layers=layers, time_origin=tensors["time_origin"]))
