"""The frozen-backbone linear probe fits on train, chooses on tuning, never reads held_out."""

from __future__ import annotations

import numpy as np

from ehrfm.evaluate.linear_probe import fit_probe


def test_probe_never_fits_on_held_out() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = (x[:, 1] - x[:, 2] + 0.5 * rng.normal(size=400) > 0).astype(float)
    split = np.array(["train"] * 250 + ["tuning"] * 75 + ["held_out"] * 75)
    probs, chosen = fit_probe(x, y, split)
    corrupted = y.copy()
    corrupted[split == "held_out"] = 1 - corrupted[split == "held_out"]
    probs_corrupted, chosen_corrupted = fit_probe(x, corrupted, split)
    np.testing.assert_allclose(probs, probs_corrupted)
    assert chosen == chosen_corrupted
    from sklearn.metrics import roc_auc_score

    held = split == "held_out"
    assert roc_auc_score(y[held], probs[held]) > 0.85
