"""Timed event tokenizer: MEDS events to model-ready token sequences with aligned time streams.

``EventTokenizer`` learns a vocabulary and value bins from the train split and turns events into
token ids plus four aligned streams (time, age, visit index, token type). ``tokenize_dataset``
runs it over a whole MEDS directory (``run_tokenize(TokenizeConfig(...))`` is the ``ehrfm
tokenize`` stage); ``decode`` prints what the model sees as a readable timeline;
:mod:`.crop` cuts an already tokenized sequence to a context length by the same rule.

>>> from ehrfm.tokenize import EventTokenizer
>>> EventTokenizer(min_count=10)
EventTokenizer(min_count=10)
"""

from .config import TokenizeConfig
from .decode import decode, decode_frame
from .errors import EventsFormatError, NotFittedError, TokenizerFormatError
from .sequence_schema import SEQUENCE_SCHEMA, TokenType
from .tokenize_meds import run_tokenize, tokenize_dataset
from .tokenizer import FORMAT_VERSION, EventTokenizer, MissingTokenizerFileError

__all__ = [
    "FORMAT_VERSION",
    "SEQUENCE_SCHEMA",
    "EventTokenizer",
    "EventsFormatError",
    "MissingTokenizerFileError",
    "NotFittedError",
    "TokenType",
    "TokenizeConfig",
    "TokenizerFormatError",
    "decode",
    "decode_frame",
    "run_tokenize",
    "tokenize_dataset",
]
