"""Multitask prompted finetuning: task prompts, the multitask cohort, training, scoring, probe.

>>> from ehrfm.finetune import MultitaskModel
>>> from ehrfm.model import BackboneConfig
>>> model = MultitaskModel(BackboneConfig.preset("tiny", vocab_size=40), ["mortality_1y"], [4])
>>> model.task_names, model.head_name
(['mortality_1y'], 'task_shared')
"""

from .cohort import Cohort, build_cohort, merge_task_labels, read_task_labels
from .model import MultitaskModel
from .probe import fit_probe, probe_predictions
from .scoring import embed_histories, predict_tasks, predictions_frame

__all__ = [
    "Cohort",
    "MultitaskModel",
    "build_cohort",
    "embed_histories",
    "fit_probe",
    "merge_task_labels",
    "predict_tasks",
    "predictions_frame",
    "probe_predictions",
    "read_task_labels",
]
