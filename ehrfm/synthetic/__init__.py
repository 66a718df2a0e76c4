"""Synthetic FHIR written by ehrfm itself: the small example generator and the patient simulator.

:mod:`ehrfm.synthetic.simulator` draws histories from planted dynamics
(:mod:`ehrfm.synthetic.dynamics`) whose true risk for the built-in tasks is known;
:func:`write_population` writes them (``ehrfm synth``), :func:`true_risks` scores label rows
with the planted risk. :mod:`ehrfm.synthetic.fhir_generator` is the small example set the
current ``ehrfm demo`` uses.
"""

from .dynamics import TASK_OUTCOMES, Truth, true_risk
from .population import load_truth, true_risks, write_population
from .simulator import simulate_patient

__all__ = ["TASK_OUTCOMES", "Truth", "load_truth", "simulate_patient", "true_risk", "true_risks",
           "write_population"]
