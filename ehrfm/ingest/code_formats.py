"""How a vocabulary writes its codes: ICD dots restored, surrounding whitespace stripped.

Sources differ (MIMIC-IV writes ICD codes without their dot, ``I6201``); MEDS ETLs write the
dotted form (``I62.01``), so the same diagnosis gets one code whichever export it came from.
A format is named per vocabulary in ``vocabularies.yaml``. A code that already holds a dot,
or is not longer than the category, is left as it is (stripped).

>>> FORMATS["icd10cm"]("I6201"), FORMATS["icd10cm"]("I62"), FORMATS["icd10cm"](" E11.9 ")
('I62.01', 'I62', 'E11.9')
>>> FORMATS["icd9cm"]("2859"), FORMATS["icd9cm"]("E8889"), FORMATS["icd9cm"]("V462")
('285.9', 'E888.9', 'V46.2')
>>> FORMATS["icd9proc"]("9671")
'96.71'
>>> category("ICD10CM", "I62.01"), category("ICD9CM", "E888.9"), category("ICD9Proc", "96.71")
('I62', 'E888', '96')
>>> category("LOINC", "2160-0") is None
True
"""

from __future__ import annotations

from collections.abc import Callable


def _dot_after(position: int) -> Callable[[str], str]:
    def normalise(code: str) -> str:
        code = code.strip()
        if "." in code or len(code) <= position:
            return code
        return f"{code[:position]}.{code[position:]}"
    return normalise


_icd9_diagnosis_default = _dot_after(3)
_icd9_external_cause = _dot_after(4)  # E-codes have a 4-character category (E888.9)


def _icd9cm(code: str) -> str:
    code = code.strip()
    return (_icd9_external_cause if code[:1] in ("E", "e") else _icd9_diagnosis_default)(code)


def _stripped(code: str) -> str:
    return code.strip()


FORMATS: dict[str, Callable[[str], str]] = {
    "none": _stripped,
    "icd10cm": _dot_after(3),
    "icd9cm": _icd9cm,
    "icd9proc": _dot_after(2),
}

# Vocabularies whose category (the part before the dot) is the code's parent in codes.parquet.
_CATEGORY_VOCABS = frozenset({"ICD10CM", "ICD10", "ICD9CM", "ICD9Proc"})


def category(vocabulary: str, code: str) -> str | None:
    """The parent category of a dotted ICD code (``I62.01`` -> ``I62``), or None."""
    if vocabulary not in _CATEGORY_VOCABS or "." not in code:
        return None
    head = code.split(".", 1)[0]
    return head or None
