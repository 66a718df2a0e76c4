"""``MambaBackbone``: EHR embedding -> residual blocks (RMSNorm, mixer) -> final RMSNorm.

Shape legend: ``b`` batch, ``l`` length, ``d`` d_model.

Two ways to run it, with the same numbers:

- ``forward(batch)``: whole sequences (training, scoring a history). With ``return_state`` it
  also returns the recurrent state after each row's last real token.
- ``step(tokens, state)``: one new token per row in ``O(1)``, for updating a patient's risk
  as events arrive without reprocessing the history.
- ``readout(tokens, state)``: ``k`` alternative next tokens per row (the task prompts after a
  history), each as ``step`` would give it, reading the state once and keeping no new state.

>>> import torch
>>> from ehrfm.model import BackboneConfig, MambaBackbone
>>> model = MambaBackbone(BackboneConfig.preset("tiny", vocab_size=40)).eval()
>>> b, l = 2, 6
>>> batch = {
...     "input_ids": torch.randint(1, 40, (b, l)),
...     "time_days": 19000 + torch.arange(l, dtype=torch.float64).expand(b, l),
...     "age_years": torch.full((b, l), 50.0),
...     "visit_index": torch.ones(b, l, dtype=torch.long),
...     "token_type": torch.full((b, l), 7),
... }
>>> hidden, state = model(batch, return_state=True)
>>> new = {"input_ids": torch.tensor([3, 4]),
...        "time_days": torch.tensor([19010.0, 19011.0], dtype=torch.float64),
...        "age_years": torch.tensor([50.0, 50.0]), "visit_index": torch.tensor([2, 2]),
...        "token_type": torch.tensor([7, 7])}
>>> h_next, state = model.step(new, state)
>>> hidden.shape, h_next.shape
(torch.Size([2, 6, 64]), torch.Size([2, 64]))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import BackboneConfig
from .embeddings import STREAMS, EHREmbedding, first_real_time
from .mixers import MixerState, RMSNorm, build_mixer
from .pretrained import PretrainedMixin

__all__ = ["BackboneState", "MambaBackbone", "ResidualBlock", "resolve_mask"]


@dataclass
class BackboneState:
    """Recurrent state of a whole backbone, for ``step`` and continued ``forward``.

    ``layers``: one :class:`~ehrfm.model.mixers.MixerState` per block.
    ``time_origin``: ``(b,)`` float64 time of each row's first real token (NaN until one is seen).
    """

    layers: list[MixerState]
    time_origin: Tensor

    @property
    def batch_size(self) -> int:
        return self.time_origin.shape[0]


def resolve_mask(batch: Mapping[str, Tensor], pad_token_id: int) -> Tensor:
    """``attention_mask`` as bool, or ``input_ids != pad_token_id`` when it is absent."""
    mask = batch.get("attention_mask")
    if mask is None:
        return batch["input_ids"] != pad_token_id
    return mask.bool()


def _is_left_padded(mask: Tensor) -> bool:
    """True when every row is padding followed by real tokens (no real -> pad transition)."""
    return not bool((mask[:, :-1] & ~mask[:, 1:]).any())


def _check_batch(batch: Mapping[str, Tensor], ndim: int) -> None:
    missing = [key for key in STREAMS if key not in batch]
    if missing:
        raise KeyError(
            f"batch is missing {missing}; a batch carries {list(STREAMS)} (+ optional attention_mask)"
        )
    shape = batch["input_ids"].shape
    if len(shape) != ndim:
        raise ValueError(f"input_ids must have {ndim} dims, got shape {tuple(shape)}")
    for key in (*STREAMS, "attention_mask"):
        if key in batch and batch[key] is not None and batch[key].shape != shape:
            raise ValueError(
                f"batch[{key!r}] has shape {tuple(batch[key].shape)}, input_ids has {tuple(shape)}"
            )


class ResidualBlock(nn.Module):
    """``x + mixer(norm(x))``; padded positions of the residual stream are kept at zero."""

    def __init__(self, config: BackboneConfig, layer_idx: int) -> None:
        super().__init__()
        self.norm = RMSNorm(config.d_model, eps=config.norm_eps)
        self.mixer = build_mixer(config, layer_idx)

    def forward(
        self, x: Tensor, mask: Tensor, state: MixerState | None = None, return_state: bool = False
    ) -> tuple[Tensor, MixerState | None]:
        """``x: (b, l, d)``, ``mask: (b, l)`` -> ``(x', state or None)``."""
        out = self.mixer(self.norm(x), mask, state, return_state)
        out, new_state = out if return_state else (out, None)
        return x + out * mask.unsqueeze(-1).to(out.dtype), new_state

    def step(self, x: Tensor, state: MixerState, mask: Tensor) -> tuple[Tensor, MixerState]:
        """``x: (b, d)``, ``mask: (b,)`` -> ``(x', new_state)``."""
        out, new_state = self.mixer.step(self.norm(x), state, mask)
        return x + out * mask.unsqueeze(-1).to(out.dtype), new_state

    def readout(self, x: Tensor, state: MixerState) -> Tensor:
        """``x: (b, k, d)``: ``k`` alternative next tokens per row -> ``(b, k, d)``, no new state."""
        return x + self.mixer.readout(self.norm(x), state)


class MambaBackbone(PretrainedMixin, nn.Module):
    """Embedding + ``n_layers`` residual Mamba blocks + final norm; returns hidden states."""

    loadable_from = {"EHRLanguageModel": "backbone.", "MultitaskModel": "backbone."}

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = EHREmbedding(config)
        self.layers = nn.ModuleList([ResidualBlock(config, i) for i in range(config.n_layers)])
        self.norm_f = RMSNorm(config.d_model, eps=config.norm_eps)

    def forward(
        self,
        batch: Mapping[str, Tensor],
        state: BackboneState | None = None,
        return_state: bool = False,
    ) -> Tensor | tuple[Tensor, BackboneState]:
        """Hidden states for whole sequences.

        Args:
            batch: ``input_ids`` (b, l) int64, ``time_days`` (b, l) float64 days since the
                epoch, ``age_years`` (b, l), ``visit_index`` (b, l), ``token_type`` (b, l),
                optional ``attention_mask`` (b, l) bool (default ``input_ids != pad``).
                Padding may be anywhere (right, left, holes); it never changes the outputs
                of real tokens.
            state: continue from this state (e.g. a history processed in pieces).
            return_state: also return the state after each row's last real token.

        Returns:
            ``hidden: (b, l, d)`` (zero at padding) [, ``BackboneState``].
        """
        _check_batch(batch, 2)
        mask = resolve_mask(batch, self.config.pad_token_id)
        # The mixers are exact for padding on the right or the left. Any other pattern (holes) is
        # packed to the right first, so each real token sees exactly the real tokens before it.
        order = None
        if (mask[:, 1:] & ~mask[:, :-1]).any() and not _is_left_padded(mask):
            order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real tokens first, in order
            batch = {key: value.gather(1, order) if key in STREAMS else value for key, value in batch.items()}
            mask = mask.gather(1, order)
        origin = first_real_time(batch["time_days"], mask)
        if state is not None:
            origin = torch.where(torch.isnan(state.time_origin), origin, state.time_origin)
        x = self.embedding(batch, mask, origin)
        use_checkpoint = (self.config.gradient_checkpointing and self.training and torch.is_grad_enabled()
                          and state is None and not return_state)
        layer_states: list[MixerState] = []
        for i, layer in enumerate(self.layers):
            if use_checkpoint:
                x, _ = checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x, layer_state = layer(x, mask, None if state is None else state.layers[i], return_state)
                if layer_state is not None:
                    layer_states.append(layer_state)
        hidden = self.norm_f(x) * mask.unsqueeze(-1).to(x.dtype)
        if order is not None:  # back to the caller's positions
            hidden = torch.zeros_like(hidden).scatter(1, order.unsqueeze(-1).expand_as(hidden), hidden)
        if return_state:
            return hidden, BackboneState(layers=layer_states, time_origin=origin)
        return hidden

    def step(self, tokens: Mapping[str, Tensor], state: BackboneState) -> tuple[Tensor, BackboneState]:
        """Advance every row by one token in ``O(1)``.

        Args:
            tokens: the same keys as a batch, each ``(b,)``; rows whose ``attention_mask`` is
                False (or whose id is the pad id) do not advance.
            state: from :meth:`allocate_state` or ``forward(..., return_state=True)``.

        Returns:
            ``(hidden: (b, d), new_state)``.
        """
        _check_batch(tokens, 1)
        mask = resolve_mask(tokens, self.config.pad_token_id)
        # A row's first real token sets its time origin.
        origin = torch.where(
            torch.isnan(state.time_origin) & mask, tokens["time_days"].to(torch.float64), state.time_origin
        )
        as_seq = {key: value.unsqueeze(1) for key, value in tokens.items() if value is not None}
        x = self.embedding(as_seq, mask.unsqueeze(1), origin).squeeze(1)
        new_layers = []
        for layer, layer_state in zip(self.layers, state.layers):
            x, layer_state = layer.step(x, layer_state, mask)
            new_layers.append(layer_state)
        hidden = self.norm_f(x) * mask.unsqueeze(-1).to(x.dtype)
        return hidden, BackboneState(layers=new_layers, time_origin=origin)

    def readout(self, tokens: Mapping[str, Tensor], state: BackboneState) -> Tensor:
        """Hidden states for ``k`` alternative next tokens of each row, none of them kept.

        Args:
            tokens: the stream keys, each ``(b, k)``: ``k`` candidates after each row's state
                (every task's prompt token after one history). All are real tokens.
            state: the rows' state (``forward(..., return_state=True)``), ``b`` rows.

        Returns:
            ``(b, k, d)``: what ``step`` would give for each candidate from a copy of ``state``,
            at ``O(b)`` state reads instead of ``O(b * k)`` state copies.
        """
        _check_batch(tokens, 2)
        mask = torch.ones_like(tokens["input_ids"], dtype=torch.bool)
        first = tokens["time_days"][:, 0].to(torch.float64)
        origin = torch.where(torch.isnan(state.time_origin), first, state.time_origin)
        x = self.embedding({key: value for key, value in tokens.items() if key != "attention_mask"}, mask, origin)
        for layer, layer_state in zip(self.layers, state.layers):
            x = layer.readout(x, layer_state)
        return self.norm_f(x)

    def allocate_state(self, batch_size: int, device: torch.device | str | None = None) -> BackboneState:
        """Empty state (no token seen) for ``batch_size`` rows."""
        device = torch.device(device) if device is not None else self.norm_f.weight.device
        dtype = self.norm_f.weight.dtype
        return BackboneState(
            layers=[layer.mixer.allocate_state(batch_size, device, dtype) for layer in self.layers],
            time_origin=torch.full((batch_size,), float("nan"), dtype=torch.float64, device=device),
        )

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameter count (optionally without the embedding tables and projections)."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            for p in self.embedding.parameters():
                params.pop(id(p), None)
        return sum(p.numel() for p in params.values())
