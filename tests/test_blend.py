"""kit.blend: ensemble weights (equal, by score, fitted) and the blend's score on rows they were not chosen on."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from kit.blend import blend, choose_weights, fit_blend, labels_at
from kit.errors import KitError

ROWS = 120


def _binary(p: np.ndarray) -> np.ndarray:
    return np.stack([1 - p, p], axis=-1)


@pytest.fixture()
def good_and_noise() -> tuple[np.ndarray, np.ndarray]:
    """Two runs on the same rows: one close to the labels, one coin flips."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, ROWS)
    good = np.clip(y + rng.normal(0, 0.35, ROWS), 0.01, 0.99)
    return np.stack([_binary(good), _binary(rng.uniform(size=ROWS))]), y


@pytest.mark.slow
def test_equal_weights_are_the_plain_mean(good_and_noise) -> None:
    probs, y = good_and_noise
    made = fit_blend("equal", probs, y, accuracy_score, 0.5, False, "hold-out")
    assert made.weights.tolist() == [0.5, 0.5] and made.threshold == 0.5
    expected = accuracy_score(y, (probs[:, :, 1].mean(axis=0) >= 0.5).astype(int))
    assert made.score["value"] == pytest.approx(expected)  # nothing chosen on the rows: all of them scored as they are
    assert made.run_scores[0] > 0.9 > 0.6 > made.run_scores[1]


def test_score_weights_follow_the_errors(good_and_noise) -> None:
    probs, y = good_and_noise
    weights = choose_weights("score", probs, y, accuracy_score)
    errors = [1 - accuracy_score(y, labels_at(p, None)) for p in probs]
    assert weights[0] / weights[1] == pytest.approx(errors[1] / errors[0])  # half the errors, twice the weight


@pytest.mark.slow
def test_fitted_weights_find_the_informative_run_and_beat_equal(good_and_noise) -> None:
    probs, y = good_and_noise
    fitted = fit_blend("fit", probs, y, accuracy_score, None, True, "hold-out")
    equal = fit_blend("equal", probs, y, accuracy_score, None, True, "hold-out")
    assert fitted.weights[0] > 0.95 and fitted.weights.sum() == pytest.approx(1.0)
    assert fitted.score["value"] > equal.score["value"]
    assert "weights and threshold chosen on the other 4 of 5 parts" in fitted.score["what"]


@pytest.mark.slow
def test_weights_fitted_on_noise_score_as_chance_on_rows_they_were_not_fitted_on() -> None:
    """Thirty coin-flip runs: weights fitted on all rows score well above chance on those rows; the reported score,
    each part blended with weights fitted on the other parts, does not."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, ROWS)
    probs = _binary(rng.uniform(size=(30, ROWS)))
    made = fit_blend("fit", probs, y, accuracy_score, 0.5, False, "hold-out")
    in_sample = accuracy_score(y, labels_at(blend(probs, made.weights), 0.5))
    low, high = made.score["interval"]
    assert in_sample > 0.6 and made.score["value"] < in_sample - 0.08
    assert low < 0.5 < high


def test_too_few_rows_leave_a_chosen_blend_unscored_and_unknown_rules_are_one_line() -> None:
    y = np.array([0, 1, 0])
    probs = np.stack([_binary(np.array([0.2, 0.7, 0.4]))] * 2)
    assert fit_blend("fit", probs, y, accuracy_score, 0.5, False, "hold-out").score is None
    with pytest.raises(KitError, match="unknown ensemble weights 'best'"):
        choose_weights("best", probs, y, accuracy_score)
