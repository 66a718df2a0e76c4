"""EHR input embedding: token + continuous time + age + visit index + token type.

Shape legend: ``b`` batch, ``l`` length, ``d`` model width, ``f`` sinusoid frequencies.

Time is the delicate stream. ``time_days`` arrives as float64 days since 1970: around 20,000,
where a float32 step is 2**-9 day (about 3 minutes), and a sinusoid with a one-hour period would
then see a phase error of ~0.5 rad, i.e. noise. So (1) time is made relative to the patient's
first real token (the *time origin*, kept in the recurrent state for ``step``), which also makes
the model invariant to calendar shifts in de-identified data, and (2) each phase
``t * omega`` is formed in float64 and reduced modulo ``2 pi`` *before* the cast to float32.
Phases are then exact to float32 precision at every frequency, and the learned part (a linear
projection of the sinusoids) runs in the model's dtype.

Padding never contributes: padded positions get a zero embedding and are masked out of every
downstream computation by the mixers; NaN times or ages (unknown) become zero features plus a
"missing" indicator, so they can never poison a batch.

>>> import torch
>>> from ehrfm.model.config import BackboneConfig
>>> emb = EHREmbedding(BackboneConfig.preset("tiny", vocab_size=50))
>>> batch = {
...     "input_ids": torch.tensor([[1, 7, 9, 0]]),
...     "time_days": torch.tensor([[19000.0, 19000.5, 19010.0, 0.0]], dtype=torch.float64),
...     "age_years": torch.tensor([[40.0, 40.0, 40.1, 0.0]]),
...     "visit_index": torch.tensor([[0, 1, 2, 0]]),
...     "token_type": torch.tensor([[1, 7, 7, 0]]),
... }
>>> mask = batch["input_ids"] != 0
>>> origin = first_real_time(batch["time_days"], mask)
>>> origin.tolist()
[19000.0]
>>> out = emb(batch, mask, origin)
>>> out.shape, bool(out[0, 3].abs().sum() == 0)
(torch.Size([1, 4, 64]), True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .config import BackboneConfig

__all__ = ["STREAMS", "EHREmbedding", "first_real_time", "sinusoid_features"]

STREAMS = ("input_ids", "time_days", "age_years", "visit_index", "token_type")
"""Keys every batch must carry (``attention_mask`` is optional: default ``input_ids != pad``)."""

TWO_PI = 2.0 * math.pi


def first_real_time(time_days: Tensor, mask: Tensor) -> Tensor:
    """Time of each row's first real token: ``(b, l)`` float64, ``(b, l)`` bool -> ``(b,)`` float64.

    NaN for rows with no real token (or a NaN time there): the origin is then still unset.
    """
    has_any = mask.any(dim=1)
    first = mask.long().argmax(dim=1)  # index of the first True (0 if none)
    t = time_days.gather(1, first.unsqueeze(1)).squeeze(1).to(torch.float64)
    return torch.where(has_any, t, torch.full_like(t, float("nan")))


def sinusoid_features(values: Tensor, periods: Tensor, dtype: torch.dtype) -> Tensor:
    """``sin``/``cos`` of ``2 pi values / period`` with the phase reduced in float64.

    Args:
        values: ``(...)`` float64, finite (callers replace NaN first).
        periods: ``(f,)`` float64.
        dtype: output dtype.

    Returns:
        ``(..., 2 f)``.
    """
    phase = torch.remainder(values.unsqueeze(-1) * (TWO_PI / periods), TWO_PI).to(dtype)
    return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)


def _geometric_periods(low: float, high: float, count: int, device: torch.device) -> Tensor:
    # Built on the fly in float64 (never a buffer: model.to(bfloat16) would round a buffer).
    if count == 1:
        return torch.tensor([high], dtype=torch.float64, device=device)
    return torch.logspace(math.log10(low), math.log10(high), count, dtype=torch.float64, device=device)


class EHREmbedding(nn.Module):
    """Sum of five embeddings of the aligned input streams; zero at padding.

    - ``input_ids``: learned table (row ``pad_token_id`` fixed at zero; tied to the LM head).
    - ``time_days``: sinusoids of days since the time origin (periods from
      ``time_min_period_days`` to ``time_max_period_days``) plus a signed log of that gap and a
      missing flag, projected linearly.
    - ``age_years``: sinusoids (periods 1-200 years), ``age / 100`` and a missing flag, projected.
    - ``visit_index``: learned table, indices clamped to ``max_visit_index - 1``.
    - ``token_type``: learned table of ``n_token_types`` rows.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.token = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.token_type = nn.Embedding(config.n_token_types, d)
        self.visit = nn.Embedding(config.max_visit_index, d)
        self.time_proj = nn.Linear(2 * config.n_time_frequencies + 2, d)
        self.age_proj = nn.Linear(2 * config.n_age_frequencies + 2, d)
        self.dropout = nn.Dropout(config.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.initializer_range
        for table in (self.token, self.token_type, self.visit):
            nn.init.normal_(table.weight, std=std)
        with torch.no_grad():
            self.token.weight[self.config.pad_token_id].zero_()
        for proj in (self.time_proj, self.age_proj):
            nn.init.normal_(proj.weight, std=std)
            nn.init.zeros_(proj.bias)

    def time_features(self, time_days: Tensor, time_origin: Tensor, dtype: torch.dtype) -> Tensor:
        """``(b, l)`` float64 days, ``(b,)`` float64 origin -> ``(b, l, 2 f + 2)``."""
        cfg = self.config
        rel = time_days.to(torch.float64) - time_origin.to(torch.float64).unsqueeze(1)
        missing = ~torch.isfinite(rel)
        rel = torch.where(missing, torch.zeros_like(rel), rel)
        periods = _geometric_periods(
            cfg.time_min_period_days, cfg.time_max_period_days, cfg.n_time_frequencies, rel.device
        )
        waves = sinusoid_features(rel, periods, dtype) * (~missing).unsqueeze(-1)
        # Signed log gap: a monotone cue the sinusoids lack (about 1 at a day, 4 at 100 years).
        log_gap = (torch.sign(rel) * torch.log1p(rel.abs()) / 10.0).to(dtype)
        return torch.cat([waves, log_gap.unsqueeze(-1), missing.to(dtype).unsqueeze(-1)], dim=-1)

    def age_features(self, age_years: Tensor, dtype: torch.dtype) -> Tensor:
        """``(b, l)`` years (NaN if unknown) -> ``(b, l, 2 f + 2)``."""
        age = age_years.to(torch.float64)
        missing = ~torch.isfinite(age)
        age = torch.where(missing, torch.zeros_like(age), age)
        periods = _geometric_periods(1.0, 200.0, self.config.n_age_frequencies, age.device)
        waves = sinusoid_features(age, periods, dtype) * (~missing).unsqueeze(-1)
        return torch.cat(
            [waves, (age / 100.0).to(dtype).unsqueeze(-1), missing.to(dtype).unsqueeze(-1)], dim=-1
        )

    def forward(self, batch: Mapping[str, Tensor], mask: Tensor, time_origin: Tensor) -> Tensor:
        """Embed a batch.

        Args:
            batch: the five ``STREAMS``, each ``(b, l)``: ``input_ids`` int64, ``time_days``
                float64 days since the epoch, ``age_years`` float, ``visit_index`` int,
                ``token_type`` int.
            mask: ``(b, l)`` bool, True at real tokens.
            time_origin: ``(b,)`` float64 time that counts as day 0 for each row.

        Returns:
            ``(b, l, d)``, exactly zero at padded positions.
        """
        ids = batch["input_ids"]
        pad = self.config.pad_token_id
        # Padded slots may hold anything (e.g. -100): never index the tables with it.
        ids = torch.where(mask, ids, torch.full_like(ids, pad)).long()
        types = torch.where(mask, batch["token_type"].long(), torch.zeros_like(ids))
        visits = torch.where(mask, batch["visit_index"].long(), torch.zeros_like(ids))
        visits = visits.clamp(0, self.config.max_visit_index - 1)
        dtype = self.token.weight.dtype
        x = self.token(ids) + self.token_type(types) + self.visit(visits)
        x = x + self.time_proj(self.time_features(batch["time_days"], time_origin, dtype))
        x = x + self.age_proj(self.age_features(batch["age_years"], dtype))
        x = self.dropout(x)
        return x * mask.unsqueeze(-1).to(x.dtype)
