"""``ehrfm finetune``: multitask prompted finetuning of a pretrained backbone.

- :mod:`.run`: :func:`finetune`, the whole stage as a Python call (:mod:`.stage` is its CLI).
- :mod:`.config`: :class:`FinetuneConfig`.
- :mod:`.module`: the LightningModule (masked multitask loss, tuning AUROC per task).

The model itself (:class:`ehrfm.model.MultitaskModel`) and the cohort, datasets and inference
it trains on (:mod:`ehrfm.predict`) are shared with evaluation and scoring.

>>> from ehrfm.finetune import FinetuneConfig
>>> FinetuneConfig().heads
['task_shared', 'task_per_task']
"""

from .config import FinetuneConfig
from .run import finetune

__all__ = ["FinetuneConfig", "finetune"]
