"""Calibrators: temperature recovers a known temperature, isotonic fixes a miscalibrated score."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from ehrfm.predict.calibration import (
    CALIBRATORS,
    IdentityCalibration,
    IsotonicCalibration,
    TemperatureScaling,
    make_calibrator,
)
from ehrfm.predict.metrics import auroc, expected_calibration_error


def _scored(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True logits z, labels ~ Bernoulli(sigmoid(z)), reported probabilities sigmoid(T z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = rng.random(n) < expit(z)
    return expit(temperature * z), y


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_temperature_scaling_recovers_a_known_temperature(temperature: float) -> None:
    p, y = _scored(20_000, temperature, seed=1)
    fitted = TemperatureScaling().fit(p, y)
    assert fitted.temperature == pytest.approx(temperature, rel=0.08)
    assert fitted.params() == {"temperature": fitted.temperature}


def test_temperature_scaling_keeps_ranking_and_improves_calibration() -> None:
    p, y = _scored(5000, 3.0, seed=2)
    tuning_p, tuning_y = _scored(5000, 3.0, seed=3)
    calibrated = TemperatureScaling().fit(tuning_p, tuning_y).transform(p)
    assert auroc(y, calibrated) == pytest.approx(auroc(y, p))
    assert expected_calibration_error(y, calibrated) < 0.5 * expected_calibration_error(y, p)


def test_temperature_scaling_guards_probabilities_zero_and_one() -> None:
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.3, 0.7])
    y = np.array([0, 1, 1, 0, 0, 1])
    fitted = TemperatureScaling().fit(p, y)
    assert np.isfinite(fitted.temperature) and fitted.temperature > 0
    out = fitted.transform(p)
    assert np.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()


def test_isotonic_reduces_ece_on_a_miscalibrated_set() -> None:
    rng = np.random.default_rng(4)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        true = rng.random(n)
        return np.sqrt(true), rng.random(n) < true  # reported sqrt(p): too high everywhere

    tuning_p, tuning_y = draw(5000)
    test_p, test_y = draw(5000)
    calibrator = IsotonicCalibration().fit(tuning_p, tuning_y)
    assert expected_calibration_error(tuning_y, calibrator.transform(tuning_p)) < 0.02
    before = expected_calibration_error(test_y, test_p)
    after = expected_calibration_error(test_y, calibrator.transform(test_p))
    assert before > 0.1 and after < 0.04
    assert calibrator.params()["n_thresholds"] > 1
    out = calibrator.transform([-0.0, 1.0])
    assert (out >= 0).all() and (out <= 1).all()


def test_registry_and_identity() -> None:
    assert set(CALIBRATORS) == {"none", "temperature", "isotonic"}
    assert isinstance(make_calibrator("temperature"), TemperatureScaling)
    assert isinstance(make_calibrator("isotonic"), IsotonicCalibration)
    assert make_calibrator("none").fit([0.3], [1]).transform([0.3]).tolist() == [0.3]
    assert make_calibrator("temperature") is not make_calibrator("temperature")
    with pytest.raises(ValueError, match="unknown calibrator 'platt'"):
        make_calibrator("platt")
    assert IdentityCalibration().params() == {}


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TemperatureScaling().fit([0.2, 1.5], [0, 1])
    with pytest.raises(ValueError, match="shape"):
        TemperatureScaling().fit([0.2, 0.5], [0, 1, 1])
    with pytest.raises(ValueError, match="zero rows"):
        IsotonicCalibration().fit([], [])
    with pytest.raises(RuntimeError, match="before fit"):
        IsotonicCalibration().transform([0.5])


@pytest.mark.parametrize("name", ["none", "temperature", "isotonic"])
def test_a_saved_calibrator_gives_exactly_the_same_probabilities(name: str) -> None:
    import json

    from sklearn.isotonic import IsotonicRegression

    from ehrfm.predict.calibration import calibrator_from_dict

    rng = np.random.default_rng(1)
    p = rng.random(400)
    y = rng.random(400) < p**2
    fitted = make_calibrator(name).fit(p, y)
    rebuilt = calibrator_from_dict(json.loads(json.dumps(fitted.to_dict())))
    grid = np.linspace(-0.0, 1.0, 1001)
    np.testing.assert_array_equal(rebuilt.transform(grid), fitted.transform(grid))
    if name == "isotonic":  # the knots reproduce scikit-learn's own prediction
        reference = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y).predict(grid)
        np.testing.assert_allclose(fitted.transform(grid), reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("values", "message"), [
    ({"name": "platt"}, "not a calibrator"),
    ({"name": "temperature"}, r"needs exactly \['temperature'\]"),
    ({"name": "temperature", "temperature": -1.0}, "positive finite"),
    ({"name": "isotonic", "x": [0.1, 0.5], "y": [0.2]}, "equal-length"),
    ({"name": "isotonic", "x": [0.5, 0.1], "y": [0.2, 0.3]}, "non-decreasing"),
    ({"name": "isotonic", "x": [0.1, 0.5], "y": [0.2, 1.3]}, r"y in \[0, 1\]"),
])
def test_a_tampered_calibrator_is_refused(values: dict, message: str) -> None:
    from ehrfm.predict.calibration import calibrator_from_dict

    with pytest.raises(ValueError, match=message):
        calibrator_from_dict(values)
