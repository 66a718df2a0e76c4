"""The ehrfm model: config, EHR embedding, Mamba mixers, backbone, heads, save/load.

>>> from ehrfm.model import BackboneConfig, EHRLanguageModel
>>> model = EHRLanguageModel(BackboneConfig.preset("tiny", vocab_size=100))
>>> model.config.mixer
'mamba2'
"""

from .backbone import BackboneState, MambaBackbone, ResidualBlock
from .config import PRESETS, BackboneConfig
from .embeddings import STREAMS, EHREmbedding
from .heads import HEADS, NextTokenHead, build_head, register_head
from .language_model import EHRLanguageModel
from .task_heads import PerTaskHead, SharedTaskHead
from .mixers import Mamba1Mixer, Mamba2Mixer, MixerState
from .pretrained import MissingPretrainedFileError, PretrainedFormatError

__all__ = [
    "HEADS",
    "PRESETS",
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
    "NextTokenHead",
    "PerTaskHead",
    "PretrainedFormatError",
    "ResidualBlock",
    "SharedTaskHead",
    "build_head",
    "register_head",
]
