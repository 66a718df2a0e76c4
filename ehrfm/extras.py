"""Optional dependencies (pyproject extras): found without importing them, and a clear message
naming the extra to install when a setting needs one that is missing.

>>> has_module("json"), has_module("surely_not_installed_module")
(True, False)
>>> require_extra("surely_not_installed_module", "fhir", "strict=true")
Traceback (most recent call last):
...
ehrfm.extras.MissingExtraError: strict=true needs the Python package 'surely_not_installed_module', which is not installed: pip install "ehrfm[fhir]"
"""

from __future__ import annotations

import importlib.util

__all__ = ["MissingExtraError", "has_module", "require_extra"]


class MissingExtraError(ImportError):
    """A setting needs an optional dependency that is not installed; the message names the extra."""


def has_module(name: str) -> bool:
    """Whether ``name`` (``"fhir.resources"``) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def require_extra(module: str, extra: str, needed_by: str) -> None:
    """Raise :class:`MissingExtraError` unless ``module`` is installed; ``needed_by`` names the
    setting or command that needs it (``"strict=true"``)."""
    if not has_module(module):
        raise MissingExtraError(f"{needed_by} needs the Python package {module!r}, which is not installed: "
                                f'pip install "ehrfm[{extra}]"')
