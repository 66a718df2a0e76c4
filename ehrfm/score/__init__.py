"""``ehrfm score``: population risk scoring with a finetuned model bundle, and ``RiskModel``.

- :mod:`.risk_model`: :class:`RiskModel`, a bundle as one object (``predict``, ``embed``).
- :mod:`.run`: :func:`score`, the whole stage as a Python call (:mod:`.stage` is its CLI):
  shard by shard, resumable, atomic outputs, MEDS predictions and FHIR ``RiskAssessment``.
- :mod:`.risk_assessment`: predictions as FHIR R4 ``RiskAssessment`` resources.
- :mod:`.config`: :class:`ScoreConfig`.

>>> from ehrfm.score import ScoreConfig
>>> ScoreConfig(bundle="m", input="meds", output="out").calibrated
True
"""

from .config import ScoreConfig
from .risk_model import RiskModel
from .run import score

__all__ = ["RiskModel", "ScoreConfig", "score"]
