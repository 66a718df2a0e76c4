"""Every ``nn.Module`` of ehrfm: config, EHR embedding, Mamba mixers, backbone, heads, the
multitask prompted model, optimizer parameter groups, save/load.

>>> from ehrfm.model import BackboneConfig, EHRLanguageModel
>>> model = EHRLanguageModel(BackboneConfig.preset("tiny", vocab_size=100))
>>> model.config.mixer
'mamba2'
"""

from .backbone import BackboneState, MambaBackbone, ResidualBlock
from .config import PRESETS, BackboneConfig
from .embeddings import STREAMS, EHREmbedding
from .heads import HEADS, NextTokenHead, build_head, register_head, task_head_names
from .language_model import EHRLanguageModel
from .mixers import Mamba1Mixer, Mamba2Mixer, MixerState
from .multitask import PROMPT_KEYS, MultitaskModel, last_token_hidden
from .optim import param_groups
from .pretrained import MissingPretrainedFileError, PretrainedFormatError
from .task_heads import PerTaskHead, SharedTaskHead

__all__ = [
    "HEADS",
    "PRESETS",
    "PROMPT_KEYS",
    "STREAMS",
    "BackboneConfig",
    "BackboneState",
    "EHREmbedding",
    "EHRLanguageModel",
    "Mamba1Mixer",
    "Mamba2Mixer",
    "MambaBackbone",
    "MissingPretrainedFileError",
    "MixerState",
    "MultitaskModel",
    "NextTokenHead",
    "PerTaskHead",
    "PretrainedFormatError",
    "ResidualBlock",
    "SharedTaskHead",
    "build_head",
    "last_token_hidden",
    "param_groups",
    "register_head",
    "task_head_names",
]
