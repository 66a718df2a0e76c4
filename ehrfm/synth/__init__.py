"""``ehrfm synth``: write a simulated population with planted, known risk (see :mod:`ehrfm.synthetic`)."""

from .config import SynthConfig
from .run import run_synth

__all__ = ["SynthConfig", "run_synth"]
