"""Safe Countdown verifier and TRL reward functions.

Reward levels follow TinyZero: 0.0 without an ``<answer>...</answer>`` span, 0.1 when the (last) answer is
wrong or invalid, 1.0 when correct; ``strict=True`` gives 1.0 / 0.0.

Correct means: the answer is an infix expression over ASCII integer literals, binary ``+ - * /`` and
parentheses; the literals are exactly the given numbers as a multiset (each used once, all used); its exact
value (``fractions.Fraction``) equals the target. Whitespace, including newlines, is ignored between tokens,
but two literals separated only by whitespace are two tokens (so ``1 2`` is not ``12``).

Rejected (score 0.1): ``**``, ``//``, ``%``, decimals, unary minus/plus, ``=``, letters, unicode digits,
``×``/``÷`` (not accepted as aliases, to stay comparable with TinyZero's charset), leading-zero literals
such as ``05``, division by zero, and anything over the size bounds below.

Model output is untrusted, so nothing is ever eval'd: a regex tokenizer (no backtracking) feeds an iterative
shunting-yard evaluator with hard caps on answer size, literal digits and nesting depth. Every input scores
in bounded time and nothing raises.
"""

from __future__ import annotations

import numbers
import operator
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from rewards.format import check_batch, check_lengths, completion_text, extract_answer

__all__ = [
    "completion_text",
    "countdown_reward",
    "countdown_strict_reward",
    "evaluate_expression",
    "extract_answer",
    "is_correct",
    "parse_answer",
    "score",
]

NO_ANSWER, WRONG_ANSWER, CORRECT = 0.0, 0.1, 1.0

MAX_RAW_ANSWER_CHARS = 4096  # answer body before whitespace removal; a real answer is never this long
MAX_ANSWER_CHARS = 256  # non-whitespace characters in the answer body
MAX_LITERAL_DIGITS = 18
MAX_DEPTH = 64  # open parentheses at once
MAX_NUMS = 64  # guard against absurd task rows

# One token per match; `bad` catches any other single character. All alternatives are atomic, so linear.
_TOKEN_RE = re.compile(r"(?P<num>[0-9]+)|(?P<op>[-+*/()])|(?P<ws>\s+)|(?P<bad>.)", re.DOTALL)
_INT_STR_RE = re.compile(rf"[+-]?[0-9]{{1,{MAX_LITERAL_DIGITS}}}")
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


class _Invalid(Exception):
    """Answer is not a well-formed expression within bounds."""


def _tokenize(expr: str) -> list[str | int]:
    """Operators/parentheses as str, literals as int. Raises _Invalid."""
    if len(expr) > MAX_RAW_ANSWER_CHARS:
        raise _Invalid
    tokens: list[str | int] = []
    chars = 0
    for m in _TOKEN_RE.finditer(expr):
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "bad":
            raise _Invalid
        text = m.group()
        chars += len(text)
        if chars > MAX_ANSWER_CHARS:
            raise _Invalid
        if kind == "num":
            if len(text) > MAX_LITERAL_DIGITS or (len(text) > 1 and text[0] == "0"):
                raise _Invalid
            tokens.append(int(text))
        else:
            tokens.append(text)
    return tokens


Operation = tuple[Fraction, str, Fraction, Fraction]  # (left, op, right, result): "left op right = result"


def _apply(values: list[Fraction], op: str, steps: list[Operation] | None = None) -> None:
    right = values.pop()
    left = values.pop()
    if op == "+":
        result = left + right
    elif op == "-":
        result = left - right
    elif op == "*":
        result = left * right
    else:
        if right == 0:
            raise _Invalid
        result = left / right
    values.append(result)
    if steps is not None:
        steps.append((left, op, right, result))


def _evaluate_tokens(tokens: list[str | int], steps: list[Operation] | None = None) -> Fraction:
    """Iterative shunting-yard over binary operators only; a small state machine rejects unary signs,
    adjacent literals, empty parentheses and unbalanced input. Raises _Invalid.

    ``steps`` (optional) receives every operation in evaluation order."""
    values: list[Fraction] = []
    ops: list[str] = []
    depth = 0
    expect_operand = True
    for tok in tokens:
        if expect_operand:
            if isinstance(tok, int):
                values.append(Fraction(tok))
                expect_operand = False
            elif tok == "(":
                depth += 1
                if depth > MAX_DEPTH:
                    raise _Invalid
                ops.append(tok)
            else:  # binary operator or ")" where an operand belongs (covers unary +/-, "**", "//", "()")
                raise _Invalid
        elif tok == ")":
            while ops and ops[-1] != "(":
                _apply(values, ops.pop(), steps)
            if not ops:
                raise _Invalid
            ops.pop()
            depth -= 1
        elif isinstance(tok, str) and tok in _PREC:
            while ops and ops[-1] != "(" and _PREC[ops[-1]] >= _PREC[tok]:  # left-associative
                _apply(values, ops.pop(), steps)
            ops.append(tok)
            expect_operand = True
        else:  # literal or "(" right after an operand: concatenation / implicit multiplication
            raise _Invalid
    if expect_operand:
        raise _Invalid  # empty input or trailing operator
    while ops:
        op = ops.pop()
        if op == "(":
            raise _Invalid
        _apply(values, op, steps)
    return values[0]


def evaluate_expression(expr: Any) -> Fraction | None:
    """Exact value of an answer expression under the rules above, or None if it is invalid."""
    if not isinstance(expr, str):
        return None
    try:
        return _evaluate_tokens(_tokenize(expr))
    except Exception:  # noqa: BLE001 - _Invalid, plus belt and braces for untrusted input
        return None


@dataclass(frozen=True)
class ParsedAnswer:
    """A valid answer expression: its literals (in order), its operations in evaluation order, its value."""

    literals: tuple[int, ...]
    steps: tuple[Operation, ...]
    value: Fraction


def parse_answer(expr: Any) -> ParsedAnswer | None:
    """The answer expression as `score` reads it (same tokenizer, bounds and evaluator), or None if invalid.

    ``steps`` are the binary operations in the order the evaluator performs them (precedence, then left to
    right), each ``(left, op, right, result)`` with exact fractions: what a step-by-step check recomputes.
    """
    if not isinstance(expr, str):
        return None
    try:
        tokens = _tokenize(expr)
        steps: list[Operation] = []
        value = _evaluate_tokens(tokens, steps)
    except Exception:  # noqa: BLE001 - _Invalid, plus belt and braces for untrusted input
        return None
    return ParsedAnswer(tuple(t for t in tokens if isinstance(t, int)), tuple(steps), value)


def _as_int(x: Any) -> int | None:
    """Integer from an int, numpy/torch integer, integral float, or decimal string; None otherwise."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, float):
        return int(x) if x.is_integer() else None
    if isinstance(x, str):
        s = x.strip()
        return int(s) if _INT_STR_RE.fullmatch(s) else None
    try:
        return operator.index(x)
    except Exception:  # noqa: BLE001
        return None


def _as_target(x: Any) -> Fraction | None:
    if isinstance(x, Fraction):
        return x
    if isinstance(x, float) and x == x and abs(x) != float("inf"):
        return Fraction(x)  # exact; a non-integral float target simply can't be hit by integer-ish inputs
    value = _as_int(x)
    return None if value is None else Fraction(value)


def _as_nums(nums: Any) -> list[int] | None:
    if nums is None or isinstance(nums, (str, bytes, dict)):
        return None
    try:
        items = list(nums)
    except Exception:  # noqa: BLE001
        return None
    if not items or len(items) > MAX_NUMS:
        return None
    out = [_as_int(n) for n in items]
    return None if any(n is None for n in out) else out  # type: ignore[return-value]


def is_correct(answer: Any, target: Any, nums: Any) -> bool:
    """Whether the answer expression uses exactly ``nums`` (multiset) and evaluates exactly to ``target``."""
    try:
        if not isinstance(answer, str):
            return False
        want_target, want_nums = _as_target(target), _as_nums(nums)
        if want_target is None or want_nums is None:
            return False
        tokens = _tokenize(answer)
        # Check the literals before doing any arithmetic: only the task's own numbers are ever multiplied.
        if Counter(t for t in tokens if isinstance(t, int)) != Counter(want_nums):
            return False
        return _evaluate_tokens(tokens) == want_target
    except Exception:  # noqa: BLE001
        return False


def score(completion: str, target: int, nums: list[int], *, strict: bool = False) -> float:
    """Score one completion string. Non-str completions score 0.0; garbage target/nums can't be correct."""
    try:
        if not isinstance(completion, str):
            return NO_ANSWER
        answer = extract_answer(completion)
        if answer is None:
            return NO_ANSWER
        if is_correct(answer, target, nums):
            return CORRECT
        return NO_ANSWER if strict else WRONG_ANSWER
    except Exception:  # noqa: BLE001
        return NO_ANSWER


def _batch(
    completions: Sequence[Any], target: Sequence[Any], nums: Sequence[Any], strict: bool
) -> list[float]:
    check_batch(
        "countdown_strict" if strict else "countdown", completions=completions, target=target, nums=nums
    )
    check_lengths("countdown", completions, targets=target, **{"nums rows": nums})
    return [
        score(completion_text(c), t, n, strict=strict)
        for c, t, n in zip(completions, target, nums, strict=True)
    ]


def countdown_reward(
    completions: Sequence[Any], target: Sequence[Any], nums: Sequence[Any], **kwargs: Any
) -> list[float]:
    """TRL reward function: TinyZero levels 0.0 / 0.1 / 1.0 per completion (``target``/``nums`` per row)."""
    return _batch(completions, target, nums, strict=False)


def countdown_strict_reward(
    completions: Sequence[Any], target: Sequence[Any], nums: Sequence[Any], **kwargs: Any
) -> list[float]:
    """TRL reward function: 1.0 for a correct answer, else 0.0 (accuracy)."""
    return _batch(completions, target, nums, strict=True)
