"""The code summary reward (rewards.code_summary): hand-computed ROUGE-L times the length window, hostile
output, and property-based fuzzing."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.code_summary import MAX_WORDS, code_summary_reward, summary_score
from rewards.registry import REWARDS, build_reward_funcs

REF = "Return the sum of two numbers."  # tokens: return the sum of two number(s) -> 6


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        (REF, 1.0),
        # LCS 3 of 3 and 6 tokens: P 1, R 1/2, F1 2/3; 3 words is inside the window
        ("Return the sum.", 2 / 3),
        # stemming: returns -> return, sums -> sum
        ("Returns the sums", 2 / 3),
        # one word: F1 = 2 * 1 * (1/6) / (7/6) = 2/7, window 1/3 (one word of the three the window starts at)
        ("Sum", (2 / 7) * (1 / 3)),
        # 30 words holding the reference: P 6/30, R 1, F1 1/3; window 1 - (30 - 25) / 25 = 0.8
        (REF + " x" * 24, (1 / 3) * 0.8),
        # twice the window's top or more: 0 whatever the overlap
        ((REF + " ") * 9, 0.0),
        ("Open a socket and listen.", 0.0),  # no shared word
        ("", 0.0),
        ("   \n\t ", 0.0),
    ],
)
def test_hand_computed(summary: str, expected: float) -> None:
    assert code_summary_reward([summary], reference=[REF]) == [pytest.approx(expected)]


def test_conversational_completions_and_registry() -> None:
    completion = [{"role": "assistant", "content": "Return the sum."}]
    assert code_summary_reward([completion], reference=[REF]) == [pytest.approx(2 / 3)]
    assert REWARDS["code_summary"]() is code_summary_reward

    class Args:
        reward_funcs = ["code_summary"]

        def reward_settings(self, name, max_completion_length=None):
            return {}

    (built,) = build_reward_funcs(Args())
    assert built([REF], reference=[REF]) == [1.0]


def test_missing_or_bad_references_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="no `reference` column"):
        code_summary_reward(["Return the sum."])
    with pytest.raises(ValueError, match="2 completions but 1 references"):
        code_summary_reward(["a", "b"], reference=[REF])
    with pytest.raises(TypeError, match="each `reference` must be a string, got int"):
        code_summary_reward(["a"], reference=[3])
    with pytest.raises(TypeError, match="completions must be a list"):
        code_summary_reward("Return the sum.", reference=[REF])


def test_hostile_output_scores_low_and_fast() -> None:
    hostile = [
        None,
        42,
        {"content": None},
        "return " * 200_000,  # far past the window: not scored at all
        "a." * 500_000,  # one "word" of a million characters: scored on its first characters only
        "\x00\ud800" + "Return the sum",
        "<think>" * 10_000,
        REF * 1000,  # one long run-on string without spaces between copies
    ]
    started = time.perf_counter()
    scores = code_summary_reward(hostile, reference=[REF] * len(hostile))
    assert time.perf_counter() - started < 5
    assert scores[:5] == [0.0, 0.0, 0.0, 0.0, pytest.approx(scores[4])]
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert scores[3] == 0.0 and scores[4] < 0.1


WORDS = st.sampled_from(["return", "the", "sum", "of", "two", "numbers", "socket", "open", "x", "A", "."])


@settings(max_examples=200, deadline=None)
@given(
    summary=st.one_of(st.text(max_size=200), st.lists(WORDS, max_size=60).map(" ".join)),
    reference=st.lists(WORDS, min_size=1, max_size=20).map(" ".join),
)
def test_scores_are_bounded_and_pasting_everything_is_not_a_win(summary: str, reference: str) -> None:
    (score,) = code_summary_reward([summary], reference=[reference])
    assert isinstance(score, float) and math.isfinite(score) and 0.0 <= score <= 1.0
    if len(summary.split()) >= 2 * MAX_WORDS:
        assert score == 0.0
    assert score == summary_score(summary, reference)
