"""Countdown verifier: hand-computed cases, adversarial timing bounds, and property-based checks."""

from __future__ import annotations

import functools
import random
import time
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewards import completion_text, extract_answer
from rewards.countdown import (
    countdown_reward,
    countdown_strict_reward,
    evaluate_expression,
    is_correct,
    score,
)

LEVELS = {0.0, 0.1, 1.0}


def ans(body: str) -> str:
    return f"<think>working</think>\n<answer>{body}</answer>"


# ---------------------------------------------------------------- correct answers


@pytest.mark.parametrize(
    ("completion", "target", "nums"),
    [
        (ans("(44 + 35) + 19"), 98, [44, 19, 35]),
        (ans("44+35+19"), 98, [44, 19, 35]),
        (ans("  19 +\n 44\n + 35  "), 98, [44, 19, 35]),
        ("<answer>\n(44 + 35)\n+ 19\n</answer>", 98, [44, 19, 35]),  # multi-line body
        (ans("44 + 35 + 19") + "\nThat's it!\n\nDone.", 98, [44, 19, 35]),  # trailing text
        ("<answer>1 + 2</answer> no wait <answer>44 + 35 + 19</answer>", 98, [44, 19, 35]),  # last counts
        (ans("6 / (1 - 3 / 4)"), 24, [1, 3, 4, 6]),  # Fraction intermediate 1/4
        (ans("(8 - 2) * 5 / 3"), 10, [8, 2, 5, 3]),  # left-assoc * and /
        (ans("10 - 4 - 3"), 3, [10, 4, 3]),  # left-assoc -
        (ans("2 + 3 * 4"), 14, [2, 3, 4]),  # precedence
        (ans("((((2 + 3))) * 4)"), 20, [2, 3, 4]),  # redundant parentheses
        (ans("7 - 7 + 5"), 5, [7, 7, 5]),  # duplicate numbers used once each
        (ans("0 * 5 + 3"), 3, [0, 5, 3]),
        ("Assistant-free text <answer>3*4</answer>", 12, [3, 4]),  # no "Assistant:" marker needed
    ],
)
def test_correct(completion: str, target: int, nums: list[int]) -> None:
    assert score(completion, target, nums) == 1.0
    assert score(completion, target, nums, strict=True) == 1.0


# ---------------------------------------------------------------- no answer -> 0.0


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "44 + 35 + 19",
        "<think>44 + 35 + 19</think>",
        "<answer>44 + 35 + 19",  # unclosed
        "44 + 35 + 19</answer>",  # close only
        "</answer>44+35+19<answer>",  # wrong order
        "<ANSWER>44+35+19</ANSWER>",  # tags are case-sensitive
    ],
)
def test_no_answer(completion: str) -> None:
    assert score(completion, 98, [44, 19, 35]) == 0.0
    assert score(completion, 98, [44, 19, 35], strict=True) == 0.0


# ---------------------------------------------------------------- wrong / invalid -> 0.1


@pytest.mark.parametrize(
    ("body", "target", "nums"),
    [
        ("44 + 35 - 19", 98, [44, 19, 35]),  # wrong value
        ("44 + 35", 79 + 19, [44, 19, 35]),  # missing number
        ("44 + 35 + 19 + 19", 117, [44, 19, 35]),  # reused number
        ("44 + 35 + 19", 98, [44, 35]),  # extra number
        ("44**19**35", 98, [44, 19, 35]),  # power
        ("2**3 - 2", 6, [2, 3, 2]),
        ("7 // 2 + 1", 4, [7, 2, 1]),  # floor division
        ("7 % 4 + 2", 5, [7, 4, 2]),  # modulo
        ("10 / 2.5", 4, [2, 5, 10]),  # decimal trick
        ("12 + 3", 15, [1, 2, 3]),  # digit concatenation
        ("1 2 + 3", 15, [12, 3]),  # whitespace does not join literals
        ("-1 + 2 * 5", 9, [1, 2, 5]),  # unary minus
        ("+1 + 2 * 5", 11, [1, 2, 5]),  # unary plus
        ("2 * (-3 + 5)", 4, [2, 3, 5]),  # unary minus inside parentheses
        ("5 / (3 - 3) + 1", 1, [5, 3, 3, 1]),  # division by zero
        ("", 1, [1]),  # empty
        ("   \n ", 1, [1]),  # blank
        ("hello", 1, [1]),
        ("2 + 3 = 5", 5, [2, 3]),  # "=" rejected
        ("2 × 3", 6, [2, 3]),  # × not an alias
        ("6 ÷ 3", 2, [6, 3]),  # ÷ not an alias
        ("\u0662 + 3", 5, [2, 3]),  # Arabic-Indic digit two
        ("05 + 3", 8, [5, 3]),  # leading zero
        ("(2 + 3", 5, [2, 3]),  # unbalanced
        ("2 + 3)", 5, [2, 3]),
        ("()2 + 3", 5, [2, 3]),  # empty parentheses
        ("2(3)", 6, [2, 3]),  # implicit multiplication
        ("2 + 3 +", 5, [2, 3]),  # trailing operator
        ("2 ^ 3", 8, [2, 3]),
        ("x = 2 + 3", 5, [2, 3]),
    ],
)
def test_wrong_or_invalid(body: str, target: int, nums: list[int]) -> None:
    assert score(ans(body), target, nums) == pytest.approx(0.1)
    assert score(ans(body), target, nums, strict=True) == 0.0


def test_last_answer_wrong_after_correct() -> None:
    text = "<answer>44 + 35 + 19</answer> hmm, actually <answer>44 - 35 + 19</answer>"
    assert score(text, 98, [44, 19, 35]) == pytest.approx(0.1)


def test_unclosed_last_answer_falls_back_to_last_complete_span() -> None:
    text = "<answer>44 + 35 + 19</answer> and then <answer>44 - 35"
    assert score(text, 98, [44, 19, 35]) == 1.0


def test_first_close_after_last_open() -> None:
    assert extract_answer("<answer>1+2</answer> junk </answer>") == "1+2"
    assert extract_answer("<answer>a<answer>1+2</answer>") == "1+2"
    assert extract_answer("no tags") is None
    assert extract_answer(None) is None


def test_length_cap_invalid() -> None:
    body = "+".join(["1"] * 200)  # 399 chars > 256
    assert score(ans(body), 200, [1] * 200) == pytest.approx(0.1)


def test_garbage_target_and_nums() -> None:
    good = ans("44 + 35 + 19")
    for target in (None, "abc", float("nan"), float("inf"), [98], True, object()):
        assert score(good, target, [44, 19, 35]) == pytest.approx(0.1)  # type: ignore[arg-type]
    for nums in (None, "44 19 35", 7, [44, None, 35], [], {"a": 1}):
        assert score(good, 98, nums) == pytest.approx(0.1)  # type: ignore[arg-type]
    # lenient but exact coercions of dataset values
    assert score(good, "98", [44, 19, 35]) == 1.0
    assert score(good, 98.0, (44.0, 19, 35)) == 1.0


def test_non_str_completion_scores_zero() -> None:
    for completion in (None, 3, b"<answer>1</answer>", [{"content": "<answer>1</answer>"}]):
        assert score(completion, 1, [1]) == 0.0  # type: ignore[arg-type]


def test_evaluate_expression_exact() -> None:
    assert evaluate_expression("6/(1-3/4)") == Fraction(24)
    assert evaluate_expression("1/3") == Fraction(1, 3)
    assert evaluate_expression("1/0") is None
    assert evaluate_expression("__import__('os')") is None
    assert evaluate_expression(None) is None
    assert is_correct("1/3*3", 1, [1, 3, 3])


# ---------------------------------------------------------------- TRL reward functions


def test_countdown_reward_batch_and_conversational() -> None:
    completions = [
        "<answer>44 + 35 + 19</answer>",
        [{"role": "assistant", "content": "<think>x</think><answer>6/(1-3/4)</answer>"}],
        [{"role": "assistant", "content": "<answer>1+1</answer>"}],
        "nothing",
        None,
    ]
    targets = [98, 24, 3, 5, 5]
    nums = [[44, 19, 35], [1, 3, 4, 6], [1, 1], [5], [5]]
    assert countdown_reward(completions, target=targets, nums=nums) == pytest.approx(
        [1.0, 1.0, 0.1, 0.0, 0.0]
    )
    assert countdown_strict_reward(completions, target=targets, nums=nums, prompts=[None] * 5) == [
        1.0,
        1.0,
        0.0,
        0.0,
        0.0,
    ]
    assert countdown_reward.__name__ == "countdown_reward"
    assert countdown_strict_reward.__name__ == "countdown_strict_reward"


def test_countdown_reward_length_mismatch_is_loud() -> None:
    with pytest.raises(ValueError, match="completions"):
        countdown_reward(["a", "b"], target=[1], nums=[[1], [1]])


def test_completion_text() -> None:
    assert completion_text("abc") == "abc"
    assert completion_text({"role": "assistant", "content": "abc"}) == "abc"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "abc"}]}]) == "abc"
    msgs = [{"role": "assistant", "content": "a"}, {"role": "tool", "content": "t"}, {"content": "b"}]
    assert completion_text(msgs) == "a\nb"
    assert completion_text(None) == ""
    assert completion_text(42) == ""


# ---------------------------------------------------------------- adversarial inputs: bounded time

MB = 1 << 20


@functools.cache
def _adversarial_inputs() -> dict[str, tuple[str, int, list[int]]]:
    rng = random.Random(0)
    alphabet = "0123456789+-*/() \n<>/answerthink"
    return {
        "random_1mb": ("".join(rng.choices(alphabet, k=MB)), 24, [1, 2, 3, 4]),
        "random_1mb_in_answer": (
            "<answer>" + "".join(rng.choices("0123456789+-*/() ", k=MB)) + "</answer>",
            24,
            [1, 2, 3, 4],
        ),
        "parens_1mb": ("<answer>" + "(" * MB + "</answer>", 1, [1]),
        "parens_256": ("<answer>" + "(" * 127 + "1" + ")" * 127 + "</answer>", 1, [1]),
        "many_answer_tags": ("<answer>" * 100_000 + "1" + "</answer>" * 100_000, 1, [1]),
        "many_answer_spans": ("<answer>1+1</answer>" * 100_000, 2, [1, 1]),
        "unclosed_1mb": ("<answer>" + "1+" * (MB // 2), 1, [1]),
        "power_tower": ("<answer>9**9**9**9**9**9</answer>", 9, [9] * 6),
        "power_table": ("<answer>44**19**35</answer>", 98, [44, 19, 35]),
        "huge_literal": ("<answer>" + "9" * 100_000 + "</answer>", 1, [1]),
        "huge_product": ("<answer>" + "*".join(["999999999999999999"] * 13) + "</answer>", 1, [1]),
        "whitespace_1mb": ("<answer>" + " \n" * (MB // 2) + "1</answer>", 1, [1]),
    }


@pytest.mark.parametrize("name", sorted(_adversarial_inputs()))
def test_adversarial_bounded_time(name: str) -> None:
    completion, target, nums = _adversarial_inputs()[name]
    for strict in (False, True):
        start = time.perf_counter()
        result = score(completion, target, nums, strict=strict)
        elapsed = time.perf_counter() - start
        assert isinstance(result, float) and result in LEVELS
        assert elapsed < 0.5, f"{name}: {elapsed:.3f}s"


def test_power_table_hazard_is_wrong_not_hang() -> None:
    assert score("<answer>44**19**35</answer>", 98, [44, 19, 35]) == pytest.approx(0.1)


# ---------------------------------------------------------------- property-based

OPS = "+-*/"


@st.composite
def expr_trees(draw: st.DrawFn, max_leaves: int = 7) -> tuple[object, ...]:
    """Tree as ("num", n) or (op, left, right)."""
    n_leaves = draw(st.integers(1, max_leaves))

    def build(n: int) -> tuple[object, ...]:
        if n == 1:
            return ("num", draw(st.integers(0, 999)))
        k = draw(st.integers(1, n - 1))
        return (draw(st.sampled_from(OPS)), build(k), build(n - k))

    return build(n_leaves)


def tree_value(tree: tuple[object, ...]) -> Fraction | None:
    """Independent evaluator: recursion over the tree, exact Fractions, None on division by zero."""
    if tree[0] == "num":
        return Fraction(tree[1])  # type: ignore[arg-type]
    left, right = tree_value(tree[1]), tree_value(tree[2])  # type: ignore[arg-type]
    if left is None or right is None:
        return None
    op = tree[0]
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    return None if right == 0 else left / right


def leaves(tree: tuple[object, ...]) -> list[int]:
    if tree[0] == "num":
        return [tree[1]]  # type: ignore[list-item]
    return leaves(tree[1]) + leaves(tree[2])  # type: ignore[arg-type]


PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def render(tree: tuple[object, ...], minimal: bool, ws: str) -> str:
    """Fully parenthesised, or with only the parentheses precedence/associativity needs."""
    if tree[0] == "num":
        return str(tree[1])
    op, left, right = tree
    ls, rs = render(left, minimal, ws), render(right, minimal, ws)  # type: ignore[arg-type]
    if not minimal:
        return f"({ls}{ws}{op}{ws}{rs})"
    if left[0] != "num" and PREC[left[0]] < PREC[op]:  # type: ignore[index]
        ls = f"({ls})"
    if right[0] != "num" and (
        PREC[right[0]] < PREC[op] or (PREC[right[0]] == PREC[op] and op in "-/")  # type: ignore[index]
    ):
        rs = f"({rs})"
    return f"{ls}{ws}{op}{ws}{rs}"


PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(tree=expr_trees(), minimal=st.booleans(), ws=st.sampled_from(["", " ", "\n", " \n\t"]))
def test_random_trees_score_correct(tree: tuple[object, ...], minimal: bool, ws: str) -> None:
    value = tree_value(tree)
    expr = render(tree, minimal, ws)
    nums = leaves(tree)
    random.Random(len(expr)).shuffle(nums)
    if value is None:
        assert score(ans(expr), 0, nums) == pytest.approx(0.1)
        return
    assert evaluate_expression(expr) == value
    if value.denominator == 1:
        assert score(ans(expr), int(value), nums) == 1.0
        assert score(ans(expr), int(value) + 1, nums) == pytest.approx(0.1)
    if len(nums) > 1:  # dropping a number must fail the multiset check
        assert not is_correct(expr, value, nums[:-1])


_FRAGMENTS = st.sampled_from(
    ["<answer>", "</answer>", "<think>", "</think>", "(", ")", "+", "-", "*", "/", "**", "//", " ", "\n", "="]
)
_NUMS = st.lists(st.integers(0, 100), min_size=1, max_size=6)


@PROPS
@given(
    parts=st.lists(st.one_of(_FRAGMENTS, st.integers(0, 100).map(str), st.text(max_size=8)), max_size=40),
    target=st.one_of(st.integers(-1000, 1000), st.none(), st.text(max_size=5), st.floats()),
    nums=st.one_of(_NUMS, st.none(), st.lists(st.text(max_size=3), max_size=3)),
)
def test_arbitrary_text_never_raises(parts: list[str], target: object, nums: object) -> None:
    text = "".join(parts)
    for strict in (False, True):
        result = score(text, target, nums, strict=strict)  # type: ignore[arg-type]
        assert isinstance(result, float) and result in LEVELS
        if strict:
            assert result in {0.0, 1.0}
    assert countdown_reward([text], [target], [nums])[0] in LEVELS


_NO_TAGS = st.text(max_size=200).filter(lambda s: "<answer>" not in s and "</answer>" not in s)


@PROPS
@given(tree=expr_trees(max_leaves=5), prefix=_NO_TAGS, suffix=_NO_TAGS)
def test_correct_answer_embedded_in_text(tree: tuple[object, ...], prefix: str, suffix: str) -> None:
    value = tree_value(tree)
    if value is None or value.denominator != 1:
        return
    text = f"{prefix}<answer>{render(tree, True, ' ')}</answer>{suffix}"
    assert score(text, int(value), leaves(tree)) == 1.0
    assert countdown_reward([[{"role": "assistant", "content": text}]], [int(value)], [leaves(tree)]) == [1.0]
