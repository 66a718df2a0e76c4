"""``ehrfm pretrain``: next-event pretraining of the Mamba backbone with Lightning.

- :mod:`.run`: :func:`pretrain`, the whole stage as a Python call (:mod:`.stage` is its CLI).
- :mod:`.config`: :class:`PretrainConfig` (model, trainer, tokenizer, data, optim settings).
- :mod:`.token_dataset`: token shards of a split as a torch dataset, cropped to the context.
- :mod:`.datamodule`: the LightningDataModule (train / tuning, length-bucketed batches).
- :mod:`.module`: the LightningModule (next-token loss, validation perplexity).
- :mod:`.unigram`: the unigram perplexity every pretrained model must beat.

>>> from ehrfm.pretrain import PretrainConfig
>>> PretrainConfig().model["mixer"]
'mamba2'
"""

from .config import PretrainConfig, PretrainData, PretrainOptim
from .run import pretrain

__all__ = ["PretrainConfig", "PretrainData", "PretrainOptim", "pretrain"]
