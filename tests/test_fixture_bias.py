"""Length and form alone must not tell the fixture's chosen reply from its rejected one (eval.fixture_bias)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.fixture_bias import (
    FEATURE_NAMES,
    fit_length_rule,
    fit_logistic,
    fixture_bias,
    form_features,
    length_rule_accuracy,
    main,
    pair_features,
    pairwise_accuracy,
    pick_longer_rate,
)

MAX_SHORTCUT_ACCURACY = 0.60


@pytest.fixture(scope="module")
def result() -> dict:
    return fixture_bias(seed=0)


# ---------------------------------------------------------------- hand-computed cases


def test_length_rule_by_hand() -> None:
    diffs = [5, 3, -2, 0]
    # Longer, t=0: 1 + 1 + 0 + 0.5 (a tie is a coin flip). t=2: 1 + 1 + 0.5 + 0.5. Shorter, t=0: 0 + 0 + 1 + 0.5.
    assert length_rule_accuracy(diffs, 1, 0) == pytest.approx(2.5 / 4)
    assert length_rule_accuracy(diffs, 1, 2) == pytest.approx(3 / 4)
    assert length_rule_accuracy(diffs, -1, 0) == pytest.approx(1.5 / 4)
    assert fit_length_rule(diffs) == (1, 2.0)
    assert pick_longer_rate(diffs) == pytest.approx(2.5 / 4)
    assert pick_longer_rate([]) == 0.5 and length_rule_accuracy([], 1, 0) == 0.5


def test_form_features_by_hand() -> None:
    f = dict(zip(FEATURE_NAMES, form_features("Paris."), strict=True))
    assert f == {
        **dict.fromkeys(FEATURE_NAMES, 0.0),
        "sentences": 1.0,
        "ends_with_period": 1.0,
        "words<=3": 1.0,
    }
    text = "'planet' has 6 letters.\n\nSo 6."
    f = dict(zip(FEATURE_NAMES, form_features(text), strict=True))
    assert f["sentences"] == 2 and f["newlines"] == 2 and f["digit_share"] == pytest.approx(2 / len(text))
    assert (
        f["has_quotes"] == 1
        and f["has_answer_tag"] == 0
        and f["ends_with_period"] == 1
        and f["words<=10"] == 1
    )
    f = dict(zip(FEATURE_NAMES, form_features("<answer>(74 - 9) + 48</answer>"), strict=True))
    assert (
        f["has_answer_tag"] == 1
        and f["ends_with_period"] == 0
        and f["words<=10"] == 1
        and f["sentences"] == 0
    )
    assert (
        form_features("It's what I'd say.")[FEATURE_NAMES.index("has_quotes")] == 0
    )  # apostrophes are no quotes


def test_logistic_regression_finds_a_form_signal_and_no_signal_where_there_is_none() -> None:
    # Chosen replies end with a period, rejected ones do not: form alone separates every pair.
    chosen = [f"Answer number {i}." for i in range(20)]
    rejected = [f"Answer number {i}" for i in range(20)]
    x = pair_features(chosen, rejected)
    w = fit_logistic(x)
    assert pairwise_accuracy(w, x) == 1.0
    assert w[FEATURE_NAMES.index("ends_with_period")] > 0
    # Same forms on both sides: every score difference is 0, every pair a coin flip.
    same = pair_features(chosen, [c.replace("Answer", "Result") for c in chosen])
    assert pairwise_accuracy(fit_logistic(same), same) == 0.5


# ---------------------------------------------------------------- properties


diff_lists = st.lists(st.integers(-500, 500), max_size=60)


@settings(max_examples=200, deadline=None)
@given(diffs=diff_lists, sign=st.sampled_from([1, -1]), threshold=st.integers(0, 600))
def test_flipping_every_pair_flips_the_accuracy(diffs: list[int], sign: int, threshold: int) -> None:
    if not diffs:
        return
    flipped = [-d for d in diffs]
    assert length_rule_accuracy(flipped, sign, threshold) == pytest.approx(
        1 - length_rule_accuracy(diffs, sign, threshold)
    )
    assert pick_longer_rate(flipped) == pytest.approx(1 - pick_longer_rate(diffs))


@settings(max_examples=200, deadline=None)
@given(diffs=diff_lists, threshold=st.integers(0, 600))
def test_the_fitted_rule_is_the_best_and_never_below_chance(diffs: list[int], threshold: int) -> None:
    sign, t = fit_length_rule(diffs)
    best = length_rule_accuracy(diffs, sign, t)
    assert best >= 0.5 - 1e-12
    assert best >= length_rule_accuracy(diffs, 1, threshold) - 1e-12
    assert best >= length_rule_accuracy(diffs, -1, threshold) - 1e-12


@settings(max_examples=50, deadline=None)
@given(texts=st.lists(st.tuples(st.text(max_size=80), st.text(max_size=80)), min_size=2, max_size=20))
def test_accuracies_are_bounded_and_order_free(texts: list[tuple[str, str]]) -> None:
    chosen, rejected = [a for a, _ in texts], [b for _, b in texts]
    x = pair_features(chosen, rejected)
    w = fit_logistic(x)
    assert np.all(np.isfinite(w))
    accuracy = pairwise_accuracy(w, x)
    assert 0.0 <= accuracy <= 1.0
    # Swapping chosen and rejected swaps the sign of the fitted weights, not the accuracy.
    assert pairwise_accuracy(fit_logistic(-x), -x) == pytest.approx(accuracy)


# ---------------------------------------------------------------- the fixture


@pytest.mark.parametrize("split", ["train_prefs", "test_prefs"])
def test_length_and_form_alone_cannot_separate_the_fixture(result: dict, split: str) -> None:
    r = result[split]
    assert r["length_only"] <= MAX_SHORTCUT_ACCURACY, r
    assert r["format_only"] <= MAX_SHORTCUT_ACCURACY, r
    assert 0.4 <= r["pick_longer"] <= 0.6, r
    # The wrong-looking-right pairs, the majority, give a shortcut nothing to hold on to.
    wrong = r["by_rejected_status"]["wrong"]
    assert wrong["pairs"] >= 0.6 * r["pairs"]
    assert abs(wrong["format_only"] - 0.5) <= 0.06 and abs(wrong["length_only"] - 0.5) <= 0.06


@pytest.mark.parametrize("split", ["train_prefs", "test_prefs"])
def test_fixture_lengths_are_realistic_and_matched(result: dict, split: str) -> None:
    s = result[split]["length_stats"]
    assert 0.8 <= s["median_ratio"] <= 1.25, s
    assert s["min_words"] <= 3, s  # terse answers...
    assert s["max_words"] > 80 and s["share_over_80_words"] > 0.005, s  # ...to a few short paragraphs
    assert s["quartiles_words"][2] >= 25, s


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "bias.json"
    main(["--json", str(out)])
    printed = capsys.readouterr().out
    assert "| train_prefs |" in printed and "| test_prefs |" in printed and "length rule" in printed
    written = json.loads(out.read_text())
    assert set(written) >= {"length_rule", "format_weights", "train_prefs", "test_prefs"}
    assert written["test_prefs"]["format_only"] <= MAX_SHORTCUT_ACCURACY
