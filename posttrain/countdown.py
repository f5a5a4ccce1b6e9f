"""Countdown tasks: generation, exact solver, TinyZero prompts, SFT warm-start traces and hub loaders.

Countdown: given a few integers and a target, build an arithmetic expression with + - * / that uses every
number exactly once and equals the target. Generation follows Stream-of-Search (Gandhi et al., 2024): sample a
target and numbers uniformly and keep the task only if the SoS solver finds a solution. The SoS rules combine two
remaining numbers at a time with a+b, a*b, larger-smaller and larger/smaller (only when exact), so every
intermediate value is a non-negative integer.

The warm-start builder is our offline stand-in for the ``Asap7772/cog_behav_all_strategies`` SFT data: it writes
short, regular reasoning traces with visible search (tries, checks against the target, backtracking).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral
from typing import Any

__all__ = [
    "WARMSTART_STYLES",
    "BASE_TEMPLATE",
    "CHAT_TEMPLATE",
    "COMPACT_SYSTEM_PROMPT",
    "COMPACT_TEMPLATE",
    "COUNTDOWN_HUB_ID",
    "COUNTDOWN_HUB_REVISION",
    "PROMPT_TEMPLATES",
    "SHORT_SYSTEM_PROMPT",
    "SHORT_TEMPLATE",
    "WARMSTART_HUB",
    "WARMSTART_HUB_REVISION",
    "CountdownTask",
    "build_sft_records",
    "canonical_key",
    "generate_tasks",
    "is_conversational_template",
    "load_hub_countdown_tasks",
    "load_hub_warmstart",
    "make_backward_completion",
    "make_prompt",
    "make_warmstart_completion",
    "solve",
    "solve_steps",
    "split_tasks",
    "validate_countdown_rows",
    "validate_warmstart_rows",
]

Step = tuple[int, str, int, int]  # (left, op, right, result): "left op right = result"


# --------------------------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CountdownTask:
    target: int
    nums: tuple[int, ...]
    solution: str  # one expression that reaches target ("" if none is known, e.g. some hub rows)

    @property
    def key(self) -> tuple[int, tuple[int, ...]]:
        return canonical_key(self.target, self.nums)


def canonical_key(target: int, nums: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """Order-free identity of a task: two tasks with the same key are the same puzzle."""
    return int(target), tuple(sorted(int(x) for x in nums))


# --------------------------------------------------------------------------------------------------------------
# Solver (Stream-of-Search rules)
# --------------------------------------------------------------------------------------------------------------

# A plan step is (i, j, op, swapped): combine the values at indices i < j of the current list; ``swapped`` means
# the right operand comes first (larger - smaller, larger / smaller). The two operands are removed and the result
# is put in front, so the search keeps extending the running value first ("44 + 19 = 63", "63 + 35 = 98"), which
# reads like a person's chain of steps. Plans are index based so the search can be memoised on the value tuple.
PlanStep = tuple[int, int, str, bool]


def _combine(a: int, b: int) -> list[tuple[str, bool, int]]:
    """Legal SoS combinations of a and b in the fixed try order +, -, *, /."""
    swapped = b > a
    hi, lo = (b, a) if swapped else (a, b)
    out = [("+", False, a + b), ("-", swapped, hi - lo), ("*", False, a * b)]
    if lo != 0 and hi % lo == 0:
        out.append(("/", swapped, hi // lo))
    return out


@lru_cache(maxsize=1 << 16)
def _search(values: tuple[int, ...], target: int) -> tuple[PlanStep, ...] | None:
    """First plan (in fixed pair/op order) that turns ``values`` into exactly ``target``."""
    n = len(values)
    if n == 1:
        return () if values[0] == target else None
    if n == 2:  # last step inlined: saves a call + cache lookup per op
        for op, swapped, c in _combine(values[0], values[1]):
            if c == target:
                return ((0, 1, op, swapped),)
        return None
    for i in range(n - 1):
        for j in range(i + 1, n):
            rest = values[:i] + values[i + 1 : j] + values[j + 1 :]
            for op, swapped, c in _combine(values[i], values[j]):
                sub = _search((c,) + rest, target)
                if sub is not None:
                    return ((i, j, op, swapped),) + sub
    return None


def _apply(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a // b


def _replay(values: Sequence[int], plan: Sequence[PlanStep]) -> tuple[list[Step], str, int]:
    """Execute a plan: returns (steps, fully parenthesised expression, final value)."""
    vals = list(values)
    exprs = [str(v) for v in vals]
    leaf = [True] * len(vals)
    steps: list[Step] = []
    for i, j, op, swapped in plan:
        (a, ea, la), (b, eb, lb) = (vals[i], exprs[i], leaf[i]), (vals[j], exprs[j], leaf[j])
        if swapped:
            (a, ea, la), (b, eb, lb) = (b, eb, lb), (a, ea, la)
        c = _apply(a, op, b)
        steps.append((a, op, b, c))
        expr = f"{ea if la else f'({ea})'} {op} {eb if lb else f'({eb})'}"
        keep = [k for k in range(len(vals)) if k not in (i, j)]
        vals = [c] + [vals[k] for k in keep]
        exprs = [expr] + [exprs[k] for k in keep]
        leaf = [False] + [leaf[k] for k in keep]
    return steps, exprs[0], vals[0]


def _check_inputs(nums: Sequence[int], target: int) -> tuple[tuple[int, ...], int]:
    values = tuple(int(x) for x in nums)
    if any(v != x for v, x in zip(values, nums, strict=True)) or int(target) != target:
        raise ValueError(f"nums and target must be integers, got nums={list(nums)!r}, target={target!r}")
    if not values:
        raise ValueError("nums must contain at least one number")
    if any(v < 0 for v in values):
        raise ValueError(f"nums must be non-negative (SoS rules), got {list(values)}")
    return values, int(target)


def solve_steps(nums: Sequence[int], target: int) -> list[Step] | None:
    """Steps ``(a, op, b, c)`` of the first SoS solution (``a op b = c``), or None if unsolvable."""
    values, target = _check_inputs(nums, target)
    plan = _search(values, target)
    return None if plan is None else _replay(values, plan)[0]


def solve(nums: Sequence[int], target: int) -> str | None:
    """Fully parenthesised expression (e.g. ``"(44 + 35) + 19"``) reaching target with all nums, or None.

    Exhaustive and deterministic: pairs are tried in index order (0,1), (0,2), ..., ops in order +, -, *, /,
    and the result of a step is placed before the remaining numbers (it is the next left operand).
    """
    values, target = _check_inputs(nums, target)
    plan = _search(values, target)
    return None if plan is None else _replay(values, plan)[1]


# --------------------------------------------------------------------------------------------------------------
# Generation and splits
# --------------------------------------------------------------------------------------------------------------

_MAX_NUM_NUMBERS = 6  # the exhaustive solver grows ~ n!^2 * 4^(n-1); 6 is already slow for rejection sampling
_MAX_CONSECUTIVE_MISSES = 20_000  # draws in a row without a new solvable task before we give up


def _num_multisets(k: int, size: int) -> int:
    """Number of multisets of ``size`` values from ``k`` possible values (upper bound on distinct keys)."""
    from math import comb

    return comb(k + size - 1, size)


def generate_tasks(
    n: int,
    *,
    num_numbers: int | Sequence[int] = 3,
    min_number: int = 1,
    max_number: int = 30,
    min_target: int = 10,
    max_target: int = 100,
    seed: int = 0,
    keep: Callable[[int, tuple[int, ...]], bool] | None = None,
) -> list[CountdownTask]:
    """``n`` distinct solvable tasks (distinct canonical keys), deterministic by ``seed``.

    ``keep(target, nums)``: return only tasks it accepts: the first ``n`` accepted tasks of the unfiltered stream
    (the same tasks as filtering a longer unfiltered list). With one number count the draws do not depend on the
    solver's answers, so rejected draws skip the solver (a held-out split keeps 1 in 10).

    Stream-of-Search style rejection sampling: target ~ U[min_target, max_target], each number
    ~ U[min_number, max_number]; keep the draw if :func:`solve` finds a solution and the key is new.
    ``num_numbers`` may be a sequence, e.g. ``(3, 4)``: the count is then drawn uniformly per task (before its
    rejection sampling, so sizes with a lower solve rate are not under-represented).
    """
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    counts = (num_numbers,) if isinstance(num_numbers, Integral) else tuple(num_numbers)
    if not counts:
        raise ValueError("num_numbers must be an int or a non-empty sequence of ints")
    for c in counts:
        if isinstance(c, bool) or not isinstance(c, Integral) or not 2 <= c <= _MAX_NUM_NUMBERS:
            raise ValueError(
                f"num_numbers entries must be ints in [2, {_MAX_NUM_NUMBERS}], got {num_numbers!r}"
            )
    if min_number < 1:
        raise ValueError(f"min_number must be >= 1, got {min_number}")
    if min_number > max_number:
        raise ValueError(f"min_number ({min_number}) must be <= max_number ({max_number})")
    if min_target < 0:
        raise ValueError(f"min_target must be >= 0, got {min_target}")
    if min_target > max_target:
        raise ValueError(f"min_target ({min_target}) must be <= max_target ({max_target})")
    n_values = max_number - min_number + 1
    n_targets = max_target - min_target + 1
    space = n_targets * sum(_num_multisets(n_values, c) for c in set(counts))
    if n > space:
        raise ValueError(
            f"n={n} exceeds the {space} distinct (target, nums) combinations possible with num_numbers="
            f"{num_numbers!r}, numbers in [{min_number}, {max_number}], targets in [{min_target}, {max_target}]; "
            "widen the ranges or lower n"
        )

    rng = random.Random(seed)
    tasks: list[CountdownTask] = []
    seen: set[tuple[int, tuple[int, ...]]] = set()
    misses = 0
    k = None
    while len(tasks) < n:
        if k is None:  # size drawn once per task, so the size mix stays uniform despite rejection sampling
            k = counts[0] if len(counts) == 1 else rng.choice(counts)
        target = rng.randint(min_target, max_target)
        nums = tuple(rng.randint(min_number, max_number) for _ in range(k))
        key = canonical_key(target, nums)
        wanted = keep is None or keep(target, nums)
        solution = None if key in seen or (not wanted and len(counts) == 1) else solve(nums, target)
        if solution is None:
            misses += 1
            if misses >= _MAX_CONSECUTIVE_MISSES:
                raise ValueError(
                    f"could not find a new solvable task in {misses} consecutive draws after {len(tasks)} of "
                    f"n={n} tasks (num_numbers={num_numbers!r}, numbers in [{min_number}, {max_number}], "
                    f"targets in [{min_target}, {max_target}]); widen the ranges or lower n"
                )
            continue
        # A solvable draw ends this task's draws, kept or not, so the stream of sizes stays the same.
        misses, k = 0, None
        seen.add(key)
        if wanted:
            tasks.append(CountdownTask(target=target, nums=nums, solution=solution))
    return tasks


def split_tasks(
    tasks: Sequence[CountdownTask], *, test_size: float, seed: int
) -> tuple[list[CountdownTask], list[CountdownTask]]:
    """Split by canonical key so that no puzzle appears in both splits.

    ``test_size`` is a number of distinct keys (int) or a fraction of them (float in (0, 1)). All tasks sharing
    a key land in the same split; the input order is kept inside each split.
    """
    keys = list(dict.fromkeys(t.key for t in tasks))  # first-seen order -> deterministic
    if isinstance(test_size, float) and not isinstance(test_size, bool):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size as a fraction must be in (0, 1), got {test_size}")
        n_test = round(test_size * len(keys))
    elif isinstance(test_size, Integral) and not isinstance(test_size, bool):
        n_test = int(test_size)
    else:
        raise TypeError(f"test_size must be an int or a float fraction, got {test_size!r}")
    if not 0 <= n_test <= len(keys):
        raise ValueError(
            f"test_size={test_size} must be between 0 and the number of distinct tasks ({len(keys)})"
        )
    random.Random(seed).shuffle(keys)
    test_keys = set(keys[:n_test])
    train = [t for t in tasks if t.key not in test_keys]
    test = [t for t in tasks if t.key in test_keys]
    return train, test


# --------------------------------------------------------------------------------------------------------------
# Prompt templates (TinyZero)
# --------------------------------------------------------------------------------------------------------------

_INSTRUCTION = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic "
    "operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. "
    "And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
)

# Raw-text prompt for base models; the "<think>" is pre-seeded, so completions continue right after it.
BASE_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer.\nUser: " + _INSTRUCTION + "\nAssistant: Let me solve this step by step.\n<think>"
)
# Content of the single user message for chat models; completions start with "<think>".
CHAT_TEMPLATE = _INSTRUCTION

# A short conversational variant for CPU runs: training and sampling cost scale with tokens, and the TinyZero
# instruction plus a chat template's default system prompt is ~3x the length of a 3-number solution trace.
COMPACT_TEMPLATE = (
    "Numbers: {numbers}\nTarget: {target}\nUse each number exactly once with + - * / and parentheses to reach "
    "the target. Think in <think> </think>, then give the equation in <answer> </answer>."
)
# Sent as an explicit system message with "compact" so chat templates don't insert their long default one.
COMPACT_SYSTEM_PROMPT = "You solve Countdown puzzles."

# The shortest prompt that still names the task: for fine-tuned models only (it explains nothing). On a CPU the
# prompt dominates the cost of short answers, and this one is ~2.5x shorter than "compact" once templated.
SHORT_TEMPLATE = "Numbers: {numbers}\nTarget: {target}"
SHORT_SYSTEM_PROMPT = "Countdown"

PROMPT_TEMPLATES: dict[str, str] = {
    "chat": CHAT_TEMPLATE,
    "base": BASE_TEMPLATE,
    "compact": COMPACT_TEMPLATE,
    "short": SHORT_TEMPLATE,
}
_CONVERSATIONAL = frozenset({"chat", "compact", "short"})
_SYSTEM_PROMPTS = {"compact": COMPACT_SYSTEM_PROMPT, "short": SHORT_SYSTEM_PROMPT}


def _template_name(template: str) -> str:
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; valid names: {sorted(PROMPT_TEMPLATES)}")
    return template


def is_conversational_template(template: str) -> bool:
    """True when prompts/completions of this template are message lists (TRL conversational format)."""
    return _template_name(template) in _CONVERSATIONAL


def make_prompt(
    nums: Sequence[int], target: int, template: str = "chat", system_prompt: str | None = None
) -> list[dict[str, str]] | str:
    """Countdown prompt: a message list for "chat" and "compact", a raw string for "base" (TinyZero texts)."""
    numbers = [int(x) for x in nums]
    text = PROMPT_TEMPLATES[_template_name(template)].format(
        numbers=" ".join(map(str, numbers)) if template == "short" else numbers, target=int(target)
    )
    if template not in _CONVERSATIONAL:
        if system_prompt is not None:
            raise ValueError(
                f"system_prompt is only supported by conversational templates {sorted(_CONVERSATIONAL)}"
            )
        return text
    if system_prompt is None:
        system_prompt = _SYSTEM_PROMPTS.get(template)
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    return messages + [{"role": "user", "content": text}]


# --------------------------------------------------------------------------------------------------------------
# SFT warm-start traces (offline replacement for cog_behav_all_strategies)
# --------------------------------------------------------------------------------------------------------------

_RETRY = "Let me try another way."
_GIVE_UP = "I could not reach {target}. My closest attempt is {expr} = {value}."


def _random_plan(values: Sequence[int], target: int, rng: random.Random) -> list[PlanStep]:
    """A random complete SoS plan. Options stay in a plausible range (no huge products) when possible."""
    vals = list(values)
    bound = 3 * max(target, *vals)
    plan: list[PlanStep] = []
    while len(vals) > 1:
        i, j = sorted(rng.sample(range(len(vals)), 2))
        options = _combine(vals[i], vals[j])
        plausible = [o for o in options if 0 < o[2] <= bound]
        op, swapped, c = rng.choice(plausible or options)
        plan.append((i, j, op, swapped))
        vals = [c] + [vals[k] for k in range(len(vals)) if k not in (i, j)]
    return plan


def _wrong_tries(
    values: Sequence[int], target: int, count: int, rng: random.Random, avoid: str | None
) -> list[tuple[list[Step], str, int]]:
    """Up to ``count`` distinct complete paths that miss the target (fewer if hard to find)."""
    tries: list[tuple[list[Step], str, int]] = []
    seen = {avoid}
    for _ in range(40 * count):
        if len(tries) == count:
            break
        steps, expr, value = _replay(values, _random_plan(values, target, rng))
        if value != target and expr not in seen:
            seen.add(expr)
            tries.append((steps, expr, value))
    return tries


def _try_lines(steps: Sequence[Step], target: int, success: bool) -> list[str]:
    lines = [f"{a} {op} {b} = {c}" for a, op, b, c in steps]
    lines[-1] += ". That matches the target." if success else f", not {target}."
    return lines


# Backward traces ("work back from the target"), for tasks of 3 numbers. The last step of any 3-number solution
# combines one number x with the result r of the other two, so the trace takes each x in prompt order, writes the
# values r would need (target - x or x - target, target + x, target / x when exact: the inverses of r + x,
# x - r, r - x and r * x) and then what the other two numbers can make (sum, difference, product, exact
# quotient). A value on both lines is the answer. Every line is one small operation on numbers in view, and
# spotting a value that appears on both lines is a copy, not a computation: easier for a small model than
# guessing a whole expression. Covers ~98% of 3-number tasks; the rest end with the solver's expression.
WARMSTART_STYLES = ("forward", "backward")


def _needs(target: int, x: int) -> list[tuple[str, int, str]]:
    """Values r with ``r op x = target`` (SoS rules): (written step, r, how x joins r in the answer)."""
    out = [
        (f"{target}-{x}={target - x}", target - x, "+")
        if target >= x
        else (f"{x}-{target}={x - target}", x - target, "x-"),
        (f"{target}+{x}={target + x}", target + x, "-"),
    ]
    if target % x == 0:
        out.append((f"{target}/{x}={target // x}", target // x, "*"))
    return out


def _haves(p: int, q: int) -> list[tuple[str, int, str]]:
    """What two numbers make under SoS rules: (written step, value, expression)."""
    hi, lo = max(p, q), min(p, q)
    out = [
        (f"{hi}{op}{lo}={value}", value, f"{hi} {op} {lo}")
        for op, value in (("+", hi + lo), ("-", hi - lo), ("*", hi * lo))
    ]
    if hi % lo == 0:
        out.append((f"{hi}/{lo}={hi // lo}", hi // lo, f"{hi} / {lo}"))
    return out


def make_backward_completion(task: CountdownTask) -> str:
    """Backward trace for a 3-number task (see the comment above WARMSTART_STYLES), ending in ``<answer>EXPR</answer>``."""
    values, target = _check_inputs(task.nums, task.target)
    if len(values) != 3 or 0 in values:
        raise ValueError(f"backward traces need 3 positive numbers, got {list(values)}")
    lines: list[str] = []
    answer = None
    for i, x in enumerate(values):
        p, q = (v for j, v in enumerate(values) if j != i)
        needs, haves = _needs(target, x), _haves(p, q)
        lines += [" ".join(step for step, _, _ in needs), " ".join(step for step, _, _ in haves)]
        match = next(((n, h) for n in needs for h in haves if n[1] == h[1]), None)
        if match is None:
            lines[-1] += " no"
            continue
        (_, value, join), (_, _, expr) = match
        lines.append(f"found {value}")
        answer = f"{x} - ({expr})" if join == "x-" else f"({expr}) {join} {x}"
        break
    if answer is None:  # none of the three last steps reaches it with these inverses: the solver's expression
        answer = solve(values, target)
        if answer is None:
            raise ValueError(f"task target={target} nums={list(values)} has no solution under SoS rules")
    return "<think>\n" + "\n".join(lines) + f"\n</think>\n<answer>{answer}</answer>"


def make_warmstart_completion(
    task: CountdownTask,
    *,
    rng: random.Random,
    max_failed_tries: int = 0,
    failed_trace_share: float = 0.0,
    template: str = "chat",
    think: bool = True,
    style: str = "forward",
) -> str:
    """Reasoning trace with visible search, ending in ``</think>\\n<answer>EXPR</answer>``.

    ``think=False`` gives a direct solution instead: just ``<answer>EXPR</answer>`` (for "base", whose prompt
    pre-seeds "<think>", the think block is closed first). Short completions train fastest on a CPU.

    Successful traces (probability ``1 - failed_trace_share``): 0..max_failed_tries wrong tries, each followed by
    "Let me try another way.", then the solver's path, verified against the target. Failed traces: 1..max(1,
    max_failed_tries) wrong tries and the closest one as a wrong but well-formed answer (all numbers used).
    For "chat" the text starts with "<think>"; for "base" it continues the prompt's pre-seeded "<think>".
    ``style="backward"`` writes a backward trace instead (3-number tasks; see `make_backward_completion`).
    """
    if style not in WARMSTART_STYLES:
        raise ValueError(f"unknown warm-start style {style!r}; valid names: {list(WARMSTART_STYLES)}")
    if style == "backward" and think:
        if max_failed_tries or failed_trace_share:
            raise ValueError(
                "backward traces have their own search: leave max_failed_tries and failed_trace_share at 0"
            )
        body = make_backward_completion(task)
        return body.removeprefix("<think>") if template == "base" else body
    if max_failed_tries < 0:
        raise ValueError(f"max_failed_tries must be >= 0, got {max_failed_tries}")
    if not 0.0 <= failed_trace_share <= 1.0:
        raise ValueError(f"failed_trace_share must be in [0, 1], got {failed_trace_share}")
    _template_name(template)
    values, target = _check_inputs(task.nums, task.target)
    plan = _search(values, target)
    if plan is None:
        raise ValueError(f"task target={target} nums={list(values)} has no solution under SoS rules")
    good_steps, good_expr, _ = _replay(values, plan)
    if not think:
        return (
            f"\n</think>\n<answer>{good_expr}</answer>"
            if template == "base"
            else f"<answer>{good_expr}</answer>"
        )

    failed = rng.random() < failed_trace_share
    n_wrong = rng.randint(1, max(1, max_failed_tries)) if failed else rng.randint(0, max_failed_tries)
    wrong = _wrong_tries(values, target, n_wrong, rng, avoid=good_expr)
    if failed and not wrong:  # every path hits the target (tiny tasks): fall back to a correct trace
        failed = False

    lines: list[str] = []
    for k, (steps, _, _) in enumerate(wrong):
        lines += _try_lines(steps, target, success=False)
        if not failed or k < len(wrong) - 1:
            lines.append(_RETRY)
    if failed:
        _, answer, value = min(wrong, key=lambda w: abs(w[2] - target))  # first closest on ties
        lines.append(_GIVE_UP.format(target=target, expr=answer, value=value))
    else:
        lines += _try_lines(good_steps, target, success=True)
        answer = good_expr
    body = "\n" + "\n".join(lines) + f"\n</think>\n<answer>{answer}</answer>"
    return body if template == "base" else "<think>" + body


def build_sft_records(
    tasks: Iterable[CountdownTask],
    *,
    template: str = "chat",
    seed: int = 0,
    max_failed_tries: int = 0,
    failed_trace_share: float = 0.0,
    system_prompt: str | None = None,
    think: bool = True,
    style: str = "forward",
) -> list[dict[str, Any]]:
    """TRL prompt-completion records (conversational for "chat", raw strings for "base") + target/nums."""
    conversational = is_conversational_template(template)
    rng = random.Random(seed)
    records = []
    for task in tasks:
        completion: Any = make_warmstart_completion(
            task,
            rng=rng,
            max_failed_tries=max_failed_tries,
            failed_trace_share=failed_trace_share,
            template=template,
            think=think,
            style=style,
        )
        if conversational:
            completion = [{"role": "assistant", "content": completion}]
        records.append(
            {
                "prompt": make_prompt(task.nums, task.target, template, system_prompt=system_prompt),
                "completion": completion,
                "target": int(task.target),
                "nums": [int(x) for x in task.nums],
            }
        )
    return records


# --------------------------------------------------------------------------------------------------------------
# Hub loaders (only for users with hub access; never needed offline)
# --------------------------------------------------------------------------------------------------------------

COUNTDOWN_HUB_ID = "Jiayi-Pan/Countdown-Tasks-3to4"
COUNTDOWN_HUB_REVISION = "408f70d177020686d34a56bba5952feb45aaaee4"

WARMSTART_HUB = "Asap7772/cog_behav_all_strategies"
# Commit not known offline: "main" is a moving target. Pin the commit sha here before publishing results.
WARMSTART_HUB_REVISION = "main"


def _is_int(x: Any) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _bad_row(dataset_name: str, index: int, message: str) -> ValueError:
    return ValueError(f"{dataset_name}: row {index}: {message}")


def validate_countdown_rows(
    rows: Iterable[Mapping[str, Any]], dataset_name: str
) -> list[tuple[int, tuple[int, ...]]]:
    """Check Countdown rows (``target`` int >= 0, ``nums`` list of >= 2 non-negative ints).

    Returns ``(target, nums)`` per row; raises ValueError naming the dataset, row index and field otherwise.
    """
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            found = type(row).__name__
            raise _bad_row(
                dataset_name, i, f"expected a mapping with fields 'target' and 'nums', got {found}"
            )
        for field in ("target", "nums"):
            if field not in row:
                raise _bad_row(dataset_name, i, f"missing field {field!r} (fields present: {sorted(row)})")
        target, nums = row["target"], row["nums"]
        if not _is_int(target) or target < 0:
            raise _bad_row(dataset_name, i, f"field 'target' must be a non-negative int, got {target!r}")
        if isinstance(nums, (str, bytes)) or not isinstance(nums, Sequence):
            raise _bad_row(dataset_name, i, f"field 'nums' must be a list of ints, got {type(nums).__name__}")
        if len(nums) < 2:
            raise _bad_row(dataset_name, i, f"field 'nums' must hold at least 2 numbers, got {list(nums)!r}")
        bad = [x for x in nums if not _is_int(x) or x < 0]
        if bad:
            msg = f"field 'nums' must hold non-negative ints, got {bad[0]!r} in {list(nums)!r}"
            raise _bad_row(dataset_name, i, msg)
        out.append((int(target), tuple(int(x) for x in nums)))
    return out


def validate_warmstart_rows(rows: Iterable[Mapping[str, Any]], dataset_name: str) -> None:
    """Check warm-start rows have non-empty string ``query`` and ``completion`` fields."""
    for i, row in enumerate(rows):
        for field in ("query", "completion"):
            if field not in row:
                raise _bad_row(dataset_name, i, f"missing field {field!r} (fields present: {sorted(row)})")
            if not isinstance(row[field], str) or not row[field].strip():
                raise _bad_row(dataset_name, i, f"field {field!r} must be a non-empty string")


def load_hub_countdown_tasks(
    split: str = "train",
    *,
    revision: str = COUNTDOWN_HUB_REVISION,
    test_size: float = 0,
    seed: int = 0,
    max_tasks: int | None = None,
) -> tuple[list[CountdownTask], list[CountdownTask]]:
    """TinyZero's Countdown tasks from the hub, deduplicated by key and split by key into (train, test).

    Keys are shuffled with ``seed`` and cut to ``max_tasks`` before solving (solving ~490k rows takes minutes).
    Tasks without an SoS solution keep ``solution=""``.
    """
    from datasets import load_dataset  # lazy: only hub users pay for it

    ds = load_dataset(COUNTDOWN_HUB_ID, split=split, revision=revision)
    pairs = validate_countdown_rows(ds, f"{COUNTDOWN_HUB_ID}@{revision}[{split}]")
    by_key: dict[tuple[int, tuple[int, ...]], tuple[int, tuple[int, ...]]] = {}
    for target, nums in pairs:  # first occurrence of each key wins
        by_key.setdefault(canonical_key(target, nums), (target, nums))
    chosen = list(by_key.values())
    if max_tasks is not None:
        random.Random(seed).shuffle(chosen)
        chosen = chosen[:max_tasks]
    tasks = [CountdownTask(target=t, nums=n, solution=solve(n, t) or "") for t, n in chosen]
    if not test_size:
        return tasks, []
    return split_tasks(tasks, test_size=test_size, seed=seed)


_QUERY_RE = re.compile(r"Using the numbers \[([0-9,\s]*)\], create an equation that equals (\d+)")


def load_hub_warmstart(
    split: str = "train",
    revision: str = WARMSTART_HUB_REVISION,
    *,
    template: str = "base",
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """Warm-start SFT records from ``cog_behav_all_strategies`` (columns query, completion).

    ``query`` is TinyZero raw text ending "\\nAssistant: Let me solve this step by step.". With "base" the
    records are the raw prompt/completion strings as published; with "chat" the prompt is rebuilt as our chat
    prompt and the completion becomes an assistant message starting at its "<think>". target/nums are parsed
    from the query (regex, no eval) so the records also work with the Countdown rewards.
    """
    from datasets import load_dataset  # lazy: only hub users pay for it

    conversational = is_conversational_template(template)
    if system_prompt is not None and not conversational:
        raise ValueError(
            f"system_prompt is only supported by conversational templates {sorted(_CONVERSATIONAL)}"
        )
    name = f"{WARMSTART_HUB}@{revision}[{split}]"
    ds = load_dataset(WARMSTART_HUB, split=split, revision=revision)
    validate_warmstart_rows(ds, name)
    records = []
    for i, row in enumerate(ds):
        match = _QUERY_RE.search(row["query"])
        if match is None:
            raise ValueError(f"{name}: row {i}: field 'query' does not contain a Countdown instruction")
        nums = [int(x) for x in match.group(1).split(",") if x.strip()]
        target = int(match.group(2))
        validate_countdown_rows([{"target": target, "nums": nums}], name)
        if conversational:
            text = row["completion"]
            start = text.find("<think>")
            content = text[start:] if start >= 0 else "<think>\n" + text.lstrip()
            prompt: Any = make_prompt(nums, target, template, system_prompt=system_prompt)
            completion: Any = [{"role": "assistant", "content": content}]
        else:
            prompt, completion = row["query"], row["completion"]
        records.append({"prompt": prompt, "completion": completion, "target": target, "nums": nums})
    return records
