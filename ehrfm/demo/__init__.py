"""``ehrfm demo``: the flow on ehrfm's built-in synthetic patients (nothing is downloaded).

>>> from ehrfm.demo import DemoConfig
>>> DemoConfig().n_patients
60
"""

from .config import DemoConfig
from .run import run_demo

__all__ = ["DemoConfig", "run_demo"]
