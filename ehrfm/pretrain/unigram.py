"""Reference points a pretrained model must beat: the unigram next-token perplexity.

A model that learned nothing about order still learns token frequencies; its perplexity is
``exp(-mean log p(token))`` with ``p`` the train frequencies (add-one smoothed over the
vocabulary). Computed over exactly the targets the model is scored on (cropped windows,
every position after the first).
"""

from __future__ import annotations

import math

import numpy as np

from ehrfm.tokenize.sequence_schema import INPUT_IDS

from .token_dataset import TokenSequenceDataset


def _targets(dataset: TokenSequenceDataset) -> np.ndarray:
    ids = dataset._streams[INPUT_IDS].values
    return np.concatenate([ids[dataset._window(i)[1:]] for i in range(len(dataset))])


def unigram_perplexity(train: TokenSequenceDataset, evaluation: TokenSequenceDataset,
                       vocab_size: int) -> float:
    """Perplexity on ``evaluation`` of the add-one unigram distribution fit on ``train``."""
    counts = np.bincount(_targets(train), minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    targets = _targets(evaluation)
    return math.exp(-float(log_p[targets].mean()))
