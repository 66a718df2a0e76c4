"""Post-hoc calibrators, fit on the tuning split and applied to held-out probabilities.

- ``temperature``: one parameter ``T > 0``; calibrated ``p = sigmoid(logit(p) / T)``. ``T`` is
  fit by minimizing the negative log-likelihood on the tuning rows (L-BFGS-B over ``log T``,
  bounded to ``T`` in [0.01, 100]). Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` before the
  logit so that 0 and 1 stay finite. It is monotone, so AUROC is unchanged.
- ``isotonic``: scikit-learn's ``IsotonicRegression`` (non-decreasing step function, clipped to
  [0, 1] outside the tuning range). It can merge scores into ties, so AUROC may move a little.
- ``none``: the identity, for reference.

A calibrator sees only what is passed to ``fit``; the report passes tuning rows only. A fitted
calibrator is plain data (``to_dict``: the temperature, or the isotonic knots) and
:func:`calibrator_from_dict` rebuilds it without unpickling anything, so a model bundle can
carry the calibrator that evaluation reported and that scoring applies.

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
>>> calibrator_from_dict(cal.to_dict()).transform([0.9]) == cal.transform([0.9])
array([ True])
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

    def to_dict(self) -> dict[str, Any]: ...


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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}


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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "temperature": self.temperature}

    def __repr__(self) -> str:
        return f"TemperatureScaling(temperature={self.temperature:.4g})"


class IsotonicCalibration:
    """Monotone step function from scikit-learn's ``IsotonicRegression`` (clipped outside the range).

    The fitted function is kept as its knots and applied by linear interpolation between them
    (what ``IsotonicRegression.predict`` computes), so a calibrator rebuilt from its knots gives
    exactly the same probabilities.

    >>> cal = IsotonicCalibration().fit([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    >>> cal.transform([0.1, 0.25, 0.4]).tolist()
    [0.0, 0.5, 1.0]
    >>> IsotonicCalibration(**{k: v for k, v in cal.to_dict().items() if k != "name"}).transform([0.25]).tolist()
    [0.5]
    """

    name = "isotonic"

    def __init__(self, x: Any = None, y: Any = None) -> None:
        self._x = None if x is None else np.asarray(x, dtype=np.float64)
        self._y = None if y is None else np.asarray(y, dtype=np.float64)
        if self._x is not None:
            if self._y is None or self._x.shape != self._y.shape or self._x.ndim != 1 or not len(self._x):
                raise ValueError("isotonic knots need x and y: equal-length, non-empty 1-D lists")
            if (np.diff(self._x) < 0).any() or (np.diff(self._y) < 0).any():
                raise ValueError("isotonic knots must be non-decreasing in x and in y")
            if not (np.isfinite(self._x).all() and np.isfinite(self._y).all()) or self._y.min() < 0 or self._y.max() > 1:
                raise ValueError("isotonic knots must be finite, with y in [0, 1]")

    def fit(self, probabilities: Any, labels: Any) -> IsotonicCalibration:
        p, y = _checked(probabilities, labels)
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        self._x = np.asarray(model.X_thresholds_, dtype=np.float64)
        self._y = np.asarray(model.y_thresholds_, dtype=np.float64)
        return self

    def transform(self, probabilities: Any) -> np.ndarray:
        if self._x is None or self._y is None:
            raise RuntimeError("IsotonicCalibration.transform called before fit")
        p, _ = _checked(probabilities)
        return np.interp(p, self._x, self._y)

    def params(self) -> dict[str, Any]:
        return {} if self._x is None else {"n_thresholds": int(len(self._x))}

    def to_dict(self) -> dict[str, Any]:
        if self._x is None or self._y is None:
            raise RuntimeError("IsotonicCalibration.to_dict called before fit")
        return {"name": self.name, "x": self._x.tolist(), "y": self._y.tolist()}


CALIBRATORS: dict[str, type] = {
    "none": IdentityCalibration,
    "temperature": TemperatureScaling,
    "isotonic": IsotonicCalibration,
}


def calibrator_from_dict(values: dict[str, Any]) -> Calibrator:
    """Rebuild a fitted calibrator from ``to_dict`` output; bad or unknown content raises ``ValueError``."""
    if not isinstance(values, dict) or values.get("name") not in CALIBRATORS:
        raise ValueError(f"not a calibrator: {values!r:.200}; expected a 'name' among {sorted(CALIBRATORS)}")
    params = {k: v for k, v in values.items() if k != "name"}
    expected = {"none": set(), "temperature": {"temperature"}, "isotonic": {"x", "y"}}[values["name"]]
    if set(params) != expected:
        raise ValueError(f"calibrator {values['name']!r} needs exactly {sorted(expected)}; got {sorted(params)}")
    if values["name"] == "temperature" and not (isinstance(params["temperature"], (int, float))
                                                and 0 < float(params["temperature"]) < float("inf")):
        raise ValueError(f"temperature must be a positive finite number, got {params['temperature']!r}")
    return CALIBRATORS[values["name"]](**params)


def make_calibrator(name: str) -> Calibrator:
    """A fresh, unfitted calibrator by registry name (``none``, ``temperature``, ``isotonic``)."""
    try:
        return CALIBRATORS[name]()
    except KeyError:
        raise ValueError(f"unknown calibrator {name!r}; choose one of {sorted(CALIBRATORS)}") from None
