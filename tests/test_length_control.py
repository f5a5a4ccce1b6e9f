"""Length-controlled win rate: a hand-solved fit, recovery of a known length effect on simulated outcomes,
degenerate inputs, the length-matched estimate, length statistics, and properties under hypothesis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.length_control import (
    fit_length_control,
    length_matched_win_rate,
    length_report,
    length_stats,
    text_length,
)


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_two_length_groups_solved_by_hand():
    # 8 prompts where the policy is 10 characters longer (6 wins), 4 where it is 10 shorter (1 win). The model
    # has one parameter per group, so the unpenalised fit reproduces both rates: a + phi*x = logit(3/4),
    # a - phi*x = logit(1/4), i.e. a = 0, phi = ln 3 / x with x = tanh(10 / sigma), sigma = std(d) = 10*sqrt(8/9).
    y = [1] * 6 + [0] * 2 + [1] * 1 + [0] * 3
    len_policy, len_reference = [20] * 8 + [10] * 4, [10] * 8 + [20] * 4
    fit = fit_length_control(y, len_policy, len_reference, l2=0.0)
    x = math.tanh(1 / math.sqrt(8 / 9))
    assert fit["reason"] is None and fit["n"] == 12
    assert fit["sigma"] == pytest.approx(10 * math.sqrt(8 / 9))
    assert fit["intercept"] == pytest.approx(0.0, abs=1e-9)
    assert fit["phi"] == pytest.approx(math.log(3) / x, rel=1e-9)
    assert fit["win_rate"] == pytest.approx(0.5, abs=1e-9)  # while the raw win rate is 7/12
    # The small default L2 on phi shrinks it a little and leaves the intercept at 0 (the design is symmetric).
    shrunk = fit_length_control(y, len_policy, len_reference)
    assert 0 < shrunk["phi"] < fit["phi"] and shrunk["win_rate"] == pytest.approx(0.5, abs=0.02)


def test_a_tie_is_half_a_win_and_half_a_loss():
    # Every row doubled, each tie as one win and one loss: the same likelihood up to a factor 2, the same fit.
    y = [1, 0, 0.5, 1, 0.5, 0, 1, 0]
    lp, lr = [30, 10, 25, 40, 12, 8, 50, 20], [20, 20, 20, 20, 20, 20, 20, 20]
    doubled_y, doubled_lp, doubled_lr = [], [], []
    for yi, a, b in zip(y, lp, lr, strict=True):
        doubled_y += [1, 0] if yi == 0.5 else [yi, yi]
        doubled_lp += [a, a]
        doubled_lr += [b, b]
    one = fit_length_control(y, lp, lr, l2=0.0)
    two = fit_length_control(doubled_y, doubled_lp, doubled_lr, l2=0.0)
    assert one["win_rate"] == pytest.approx(two["win_rate"], abs=1e-8)
    assert one["phi"] == pytest.approx(two["phi"], abs=1e-7)


def simulate(n: int, a: float, phi: float, seed: int):
    """Outcomes drawn from sigmoid(a + phi * tanh(d / sigma)) with the policy mostly longer."""
    rng = np.random.default_rng(seed)
    len_reference = rng.integers(50, 400, n).astype(float)
    len_policy = np.maximum(1.0, len_reference + rng.normal(150, 100, n))
    d = len_policy - len_reference
    p = 1 / (1 + np.exp(-(a + phi * np.tanh(d / d.std()))))
    return (rng.random(n) < p).astype(float), len_policy, len_reference


def test_recovers_the_win_rate_at_equal_length():
    a, phi = -0.4, 1.5
    y, lp, lr = simulate(4000, a, phi, seed=0)
    fit = fit_length_control(y, lp, lr)
    raw = y.mean()
    assert abs(raw - sigmoid(a)) > 0.2  # the judge's taste for length inflates the raw rate
    assert fit["win_rate"] == pytest.approx(sigmoid(a), abs=0.05)
    assert fit["phi"] == pytest.approx(phi, abs=0.4)
    assert fit["iterations"] < 20


def test_no_length_effect_leaves_the_rate_alone():
    y, lp, lr = simulate(4000, 0.3, 0.0, seed=1)
    fit = fit_length_control(y, lp, lr)
    assert abs(fit["phi"]) < 0.3
    assert fit["win_rate"] == pytest.approx(sigmoid(0.3), abs=0.06)


@pytest.mark.parametrize(
    "y, lp, lr, fragment",
    [
        ([1, 1, 1, 1, 1, 1], [1, 2, 3, 4, 5, 6], [3] * 6, "every prompt is a win"),
        ([0, 0, 0, 0, 0], [1, 2, 3, 4, 5], [3] * 5, "every prompt is a loss"),
        ([0.5] * 6, [1, 2, 3, 4, 5, 6], [3] * 6, "every prompt is a tie"),
        ([1, 0, 1, 0, 1, 0], [5] * 6, [5] * 6, "length difference is the same"),
        ([1, 0, 1, 0, 1, 0], [9, 8, 7, 6, 5, 4], [7, 6, 5, 4, 3, 2], "length difference is the same"),
        ([1, 0, 1, 0], [1, 2, 3, 4], [2] * 4, "at least 5"),
        ([], [], [], "at least 5"),
    ],
)
def test_degenerate_inputs_give_none_with_a_reason(y, lp, lr, fragment):
    fit = fit_length_control(y, lp, lr)
    assert fit["win_rate"] is None and fit["phi"] is None and fit["intercept"] is None
    assert fragment in fit["reason"]


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="sizes differ"):
        fit_length_control([1, 0], [1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_length_control([2, 0, 1, 0, 1], [1, 2, 3, 4, 5], [1] * 5)


def test_separated_outcomes_stay_finite():
    # Every longer answer wins, every shorter one loses: phi would run off to infinity without the L2.
    y = [1, 1, 1, 0, 0, 0]
    fit = fit_length_control(y, [20, 30, 40, 5, 6, 7], [10] * 6)
    assert fit["reason"] is None and math.isfinite(fit["phi"]) and fit["phi"] > 3
    assert 0 < fit["win_rate"] < 1


def test_length_matched_pairs_by_hand():
    y = [1, 0, 0.5, 1, 0]
    lp = [100, 100, 0, 50, 81]
    lr = [90, 70, 0, 10, 100]  # |d| <= 20% of the longer: 10 <= 20 yes, 30 no, 0 yes, 40 no, 19 <= 20 yes
    m = length_matched_win_rate(y, lp, lr)
    assert m["n"] == 3 and (m["wins"], m["ties"], m["losses"]) == (1, 1, 1)
    assert m["win_rate"] == pytest.approx(0.5)
    assert length_matched_win_rate([1], [100], [10])["win_rate"] is None


def test_lengths_in_characters_and_words():
    assert text_length("two words", "chars") == 9 and text_length(" two  words\n", "words") == 2
    with pytest.raises(ValueError):
        text_length("x", "tokens")
    stats = length_stats(["a b", "abcd", ""])
    assert stats == {"mean_chars": 7 / 3, "median_chars": 3.0, "mean_words": 1.0, "median_words": 1.0}
    assert length_stats([])["mean_chars"] is None


def test_length_report_skips_failed_rows():
    rows = [
        {"outcome": o, "policy_response": "x" * lp, "reference_response": "y y " * lr}
        for o, lp, lr in [("win", 40, 5), ("loss", 5, 10), ("tie", 12, 3), ("win", 60, 4), ("loss", 3, 9)]
    ] + [{"outcome": "failed", "policy_response": "z" * 999, "reference_response": ""}]
    report = length_report(rows)
    assert report["length_control"]["chars"]["fit"]["n"] == 5
    assert report["lengths"]["policy"]["mean_chars"] == pytest.approx((40 + 5 + 12 + 60 + 3) / 5)
    assert report["lengths"]["reference"]["median_words"] == 10.0  # "y y " * 5 -> 10 words
    assert report["length_controlled_win_rate"] == report["length_control"]["chars"]["fit"]["win_rate"]
    assert report["length_effect"] == report["length_control"]["chars"]["fit"]["phi"] > 0
    assert report["length_matched_n"] == report["length_control"]["chars"]["matched"]["n"]
    assert set(report["length_control"]) == {"chars", "words"}


outcomes = st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=0, max_size=40)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), y=outcomes)
def test_fit_never_crashes_and_is_symmetric(data, y):
    n = len(y)
    lp = data.draw(st.lists(st.integers(0, 2000), min_size=n, max_size=n))
    lr = data.draw(st.lists(st.integers(0, 2000), min_size=n, max_size=n))
    fit = fit_length_control(y, lp, lr)
    if fit["reason"] is not None:
        assert fit["win_rate"] is None
        return
    assert 0 < fit["win_rate"] < 1 and math.isfinite(fit["phi"])
    # Swapping policy and reference turns every win into a loss and flips d: the rate mirrors, phi stays.
    swapped = fit_length_control([1 - v for v in y], lr, lp)
    assert swapped["win_rate"] == pytest.approx(1 - fit["win_rate"], abs=1e-6)
    assert swapped["phi"] == pytest.approx(fit["phi"], abs=1e-5)
    # Lengths in other units (x3, as characters vs a fixed-width encoding): sigma scales, nothing else changes.
    scaled = fit_length_control(y, [3 * v for v in lp], [3 * v for v in lr])
    assert scaled["win_rate"] == pytest.approx(fit["win_rate"], abs=1e-6)
