"""Post-hoc calibrators, fit on the tuning split and applied to held-out probabilities.

- ``temperature``: one parameter ``T > 0``; calibrated ``p = sigmoid(logit(p) / T)``. ``T`` is
  fit by minimizing the negative log-likelihood on the tuning rows (L-BFGS-B over ``log T``,
  bounded to ``T`` in [0.01, 100]). Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` before the
  logit so that 0 and 1 stay finite. It is monotone, so AUROC is unchanged.
- ``isotonic``: scikit-learn's ``IsotonicRegression`` (non-decreasing step function, clipped to
  [0, 1] outside the tuning range). It can merge scores into ties, so AUROC may move a little.
- ``none``: the identity, for reference.

A calibrator sees only what is passed to ``fit``; the report passes tuning rows only.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> z = rng.normal(0, 2, 5000)
>>> y = rng.random(5000) < 1 / (1 + np.exp(-z))
>>> overconfident = 1 / (1 + np.exp(-3 * z))
>>> cal = make_calibrator("temperature").fit(overconfident, y)
>>> round(cal.temperature, 1)
3.0
>>> sorted(CALIBRATORS)
['isotonic', 'none', 'temperature']
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression

EPS = 1e-7
_LOG_T_BOUNDS = (float(np.log(0.01)), float(np.log(100.0)))


class Calibrator(Protocol):
    """What the report needs from a calibrator."""

    name: str

    def fit(self, probabilities: Any, labels: Any) -> Calibrator: ...

    def transform(self, probabilities: Any) -> np.ndarray: ...

    def params(self) -> dict[str, Any]: ...


def _checked(probabilities: Any, labels: Any | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 1 or not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be a 1-D array of finite values in [0, 1]")
    if labels is None:
        return p, None
    y = np.asarray(labels).astype(np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in shape: {y.shape} vs {p.shape}")
    if p.size == 0:
        raise ValueError("cannot fit a calibrator on zero rows")
    return p, y


def _logits(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(p, EPS, 1 - EPS))


class IdentityCalibration:
    """Leaves probabilities as they are.

    >>> IdentityCalibration().fit([0.2], [1]).transform([0.2]).tolist()
    [0.2]
    """

    name = "none"

    def fit(self, probabilities: Any, labels: Any) -> IdentityCalibration:
        return self

    def transform(self, probabilities: Any) -> np.ndarray:
        return _checked(probabilities)[0].copy()

    def params(self) -> dict[str, Any]:
        return {}


class TemperatureScaling:
    """``p -> sigmoid(logit(p) / T)`` with ``T`` minimizing tuning NLL.

    >>> TemperatureScaling(temperature=2.0).transform([0.5, 0.8807970779778823]).round(4).tolist()
    [0.5, 0.7311]
    """

    name = "temperature"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = float(temperature)

    def fit(self, probabilities: Any, labels: Any) -> TemperatureScaling:
        p, y = _checked(probabilities, labels)
        z = _logits(p)

        def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
            scaled = z * np.exp(-theta[0])
            # log(1 + e^s) - y s, stable; d/dtheta = -(sigmoid(s) - y) * s
            loss = np.logaddexp(0.0, scaled) - y * scaled
            grad = -((expit(scaled) - y) * scaled).sum()
            return float(loss.sum()), np.array([grad])

        found = minimize(nll, x0=np.zeros(1), jac=True, method="L-BFGS-B", bounds=[_LOG_T_BOUNDS])
        self.temperature = float(np.exp(found.x[0]))
        return self

    def transform(self, probabilities: Any) -> np.ndarray:
        p, _ = _checked(probabilities)
        return expit(_logits(p) / self.temperature)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def __repr__(self) -> str:
        return f"TemperatureScaling(temperature={self.temperature:.4g})"


class IsotonicCalibration:
    """Monotone step function from scikit-learn's ``IsotonicRegression`` (clipped outside the range).

    >>> cal = IsotonicCalibration().fit([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    >>> cal.transform([0.1, 0.25, 0.4]).tolist()
    [0.0, 0.5, 1.0]
    """

    name = "isotonic"

    def __init__(self) -> None:
        self._model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        self._fitted = False

    def fit(self, probabilities: Any, labels: Any) -> IsotonicCalibration:
        p, y = _checked(probabilities, labels)
        self._model.fit(p, y)
        self._fitted = True
        return self

    def transform(self, probabilities: Any) -> np.ndarray:
        if not self._fitted:
            raise RuntimeError("IsotonicCalibration.transform called before fit")
        p, _ = _checked(probabilities)
        return np.asarray(self._model.predict(p), dtype=np.float64)

    def params(self) -> dict[str, Any]:
        if not self._fitted:
            return {}
        return {"n_thresholds": int(len(self._model.X_thresholds_))}


CALIBRATORS: dict[str, type] = {
    "none": IdentityCalibration,
    "temperature": TemperatureScaling,
    "isotonic": IsotonicCalibration,
}


def make_calibrator(name: str) -> Calibrator:
    """A fresh, unfitted calibrator by registry name (``none``, ``temperature``, ``isotonic``)."""
    try:
        return CALIBRATORS[name]()
    except KeyError:
        raise ValueError(f"unknown calibrator {name!r}; choose one of {sorted(CALIBRATORS)}") from None
