"""Countdown data: solver, generation, splits, prompt templates, warm-start traces and row validation.

Correctness is checked against helpers written here (brute force over all expression trees with Fraction
arithmetic, a tiny recursive-descent evaluator), never against the module's own code and never with eval.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction
from functools import cache

import pytest

from posttrain import countdown as cd
from posttrain.countdown import (
    BASE_TEMPLATE,
    PROMPT_TEMPLATES,
    CountdownTask,
    build_sft_records,
    canonical_key,
    generate_tasks,
    make_prompt,
    make_warmstart_completion,
    solve,
    solve_steps,
    split_tasks,
    validate_countdown_rows,
)

# --------------------------------------------------------------------------------------------------------------
# Independent reference helpers
# --------------------------------------------------------------------------------------------------------------


@cache
def _reachable(values: tuple[Fraction, ...]) -> frozenset[Fraction]:
    """Every value of every expression tree over the multiset (any op order, fractions and negatives allowed)."""
    if len(values) == 1:
        return frozenset(values)
    out: set[Fraction] = set()
    n = len(values)
    for mask in range(1, 1 << n):
        if not mask & 1 or mask == (1 << n) - 1:  # left part always holds index 0: each split once
            continue
        left = tuple(sorted(values[i] for i in range(n) if mask >> i & 1))
        right = tuple(sorted(values[i] for i in range(n) if not mask >> i & 1))
        for a in _reachable(left):
            for b in _reachable(right):
                out.update((a + b, a - b, b - a, a * b))
                if b:
                    out.add(a / b)
                if a:
                    out.add(b / a)
    return frozenset(out)


def brute_force_solvable(nums, target) -> bool:
    return Fraction(target) in _reachable(tuple(sorted(Fraction(x) for x in nums)))


@cache
def _sos_solvable(values: tuple[int, ...], target: int) -> bool:
    """Reference for the SoS rules: +, *, larger-smaller, exact larger/smaller on a sorted multiset."""
    if len(values) == 1:
        return values[0] == target
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            lo, hi = values[i], values[j]  # sorted, so values[i] <= values[j]
            rest = values[:i] + values[i + 1 : j] + values[j + 1 :]
            results = {lo + hi, hi - lo, lo * hi}
            if lo and hi % lo == 0:
                results.add(hi // lo)
            if any(_sos_solvable(tuple(sorted(rest + (c,))), target) for c in results):
                return True
    return False


def evaluate(text: str) -> tuple[Fraction, list[int]]:
    """Value and integer literals of an infix expression with + - * / and parentheses (no unary minus)."""
    tokens = re.findall(r"\d+|[-+*/()]|\S", text)
    pos = 0
    literals: list[int] = []

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def expr():
        value = term()
        while peek() in ("+", "-"):
            value = value + term() if take() == "+" else value - term()
        return value

    def term():
        value = factor()
        while peek() in ("*", "/"):
            if take() == "*":
                value *= factor()
            else:
                divisor = factor()
                assert divisor != 0, f"division by zero in {text!r}"
                value /= divisor
        return value

    def factor():
        tok = take() if peek() is not None else None
        if tok == "(":
            value = expr()
            assert take() == ")", f"unbalanced parentheses in {text!r}"
            return value
        assert tok is not None and tok.isdigit(), f"unexpected token {tok!r} in {text!r}"
        literals.append(int(tok))
        return Fraction(int(tok))

    value = expr()
    assert pos == len(tokens), f"trailing tokens in {text!r}"
    return value, literals


def test_reference_evaluator_sanity():
    assert evaluate("(44 + 35) + 19") == (98, [44, 35, 19])
    assert evaluate("10 - 2 * 3") == (4, [10, 2, 3])
    assert evaluate("(1 + 2) / 3") == (1, [1, 2, 3])
    assert brute_force_solvable([3, 3, 8, 8], 24)  # needs 8 / (3 - 8 / 3): fractions allowed here
    assert not brute_force_solvable([1, 1, 1], 10)


def assert_solution(expr: str, nums, target) -> None:
    value, literals = evaluate(expr)
    assert value == target, (expr, target)
    assert Counter(literals) == Counter(nums), (expr, nums)


# --------------------------------------------------------------------------------------------------------------
# Solver
# --------------------------------------------------------------------------------------------------------------


def test_solve_known_cases():
    assert solve([44, 19, 35], 98) == "(44 + 19) + 35"
    assert solve_steps([44, 19, 35], 98) == [(44, "+", 19, 63), (63, "+", 35, 98)]
    assert solve([1, 2, 3, 4], 24) == "((1 + 2) + 3) * 4"
    assert solve([1, 1, 1], 10) is None and solve_steps([1, 1, 1], 10) is None
    assert solve([3, 3, 8, 8], 24) is None  # only reachable through a fraction: not allowed by SoS rules
    assert solve([7], 7) == "7"
    assert_solution(solve([95, 5, 3], 57), [95, 5, 3], 57)  # needs exact division
    with pytest.raises(ValueError, match="nums"):
        solve([], 3)


def test_solve_is_exhaustive_and_correct_on_random_cases():
    rng = random.Random(123)
    for _ in range(300):
        nums = [rng.randint(1, 25) for _ in range(rng.choice((2, 3, 4)))]
        target = rng.randint(1, 100)
        expr = solve(nums, target)
        assert (expr is not None) == _sos_solvable(tuple(sorted(nums)), target), (nums, target)
        if expr is not None:
            assert_solution(expr, nums, target)
            steps = solve_steps(nums, target)
            assert steps[-1][3] == target and len(steps) == len(nums) - 1
            for a, op, b, c in steps:
                assert evaluate(f"{a} {op} {b}")[0] == c and c >= 0


def test_solve_is_deterministic():
    # Speed is measured in benchmarks/, not asserted here.
    cd._search.cache_clear()
    rng = random.Random(7)
    cases = [([rng.randint(1, 99) for _ in range(4)], rng.randint(1, 100)) for _ in range(100)]
    first = [solve(n, t) for n, t in cases]
    cd._search.cache_clear()
    assert [solve(n, t) for n, t in cases] == first


# --------------------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(300, 3), (200, 4)])
def test_generated_tasks_are_solvable_distinct_and_in_range(n, k):
    tasks = generate_tasks(n, num_numbers=k, seed=11)
    assert len(tasks) == n
    assert len({t.key for t in tasks}) == n
    for t in tasks:
        assert isinstance(t, CountdownTask) and isinstance(t.nums, tuple) and len(t.nums) == k
        assert 10 <= t.target <= 100 and all(1 <= x <= 30 for x in t.nums)
        assert brute_force_solvable(t.nums, t.target), t
        assert_solution(t.solution, t.nums, t.target)
        assert canonical_key(t.target, t.nums) == (t.target, tuple(sorted(t.nums)))


def test_generate_mixed_sizes_and_custom_ranges():
    tasks = generate_tasks(
        100, num_numbers=(3, 4), min_number=5, max_number=50, min_target=20, max_target=60, seed=3
    )
    sizes = Counter(len(t.nums) for t in tasks)
    assert set(sizes) == {3, 4} and min(sizes.values()) > 35  # uniform size mix
    assert all(20 <= t.target <= 60 and all(5 <= x <= 50 for x in t.nums) for t in tasks)


def test_generate_is_deterministic_by_seed():
    assert generate_tasks(50, seed=5) == generate_tasks(50, seed=5)
    assert generate_tasks(50, seed=5) != generate_tasks(50, seed=6)
    assert generate_tasks(20, seed=5) == generate_tasks(50, seed=5)[:20]  # prefix-stable
    assert generate_tasks(0) == []


def test_generate_can_exhaust_a_small_space():
    # numbers in [1, 3], two numbers, targets in [1, 4]: few puzzles exist; all solvable ones must be found
    space = [(t, (a, b)) for t in range(1, 5) for a in range(1, 4) for b in range(a, 4)]
    solvable = {(t, n) for t, n in space if _sos_solvable(n, t)}
    tasks = generate_tasks(
        len(solvable), num_numbers=2, min_number=1, max_number=3, min_target=1, max_target=4
    )
    assert {t.key for t in tasks} == solvable


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": -1}, "n must be"),
        ({"n": 5, "min_number": 10, "max_number": 5}, "min_number"),
        ({"n": 5, "min_target": 50, "max_target": 40}, "min_target"),
        ({"n": 5, "min_number": 0}, "min_number"),
        ({"n": 5, "num_numbers": 1}, "num_numbers"),
        ({"n": 5, "num_numbers": ()}, "num_numbers"),
        ({"n": 5, "num_numbers": 9}, "num_numbers"),
        ({"n": 100, "num_numbers": 2, "max_number": 3, "min_target": 1, "max_target": 4}, "n=100 exceeds"),
        # room for 33 keys, none solvable (two numbers <= 2 cannot reach 50): bounded search, then a clear error
        ({"n": 5, "num_numbers": 2, "max_number": 2, "min_target": 50, "max_target": 60}, "could not find"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_tasks(**kwargs)


# --------------------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------------------


def test_split_tasks_is_disjoint_by_key_and_keeps_duplicates_together():
    base = generate_tasks(60, seed=2)
    # permuted copies share a key with their original: they must land in the same split
    dupes = [CountdownTask(t.target, tuple(reversed(t.nums)), t.solution) for t in base[:20]]
    tasks = base + dupes
    train, test = split_tasks(tasks, test_size=15, seed=0)
    train_keys, test_keys = {t.key for t in train}, {t.key for t in test}
    assert not train_keys & test_keys
    assert len(test_keys) == 15 and len(train) + len(test) == len(tasks)
    assert split_tasks(tasks, test_size=15, seed=0) == (train, test)
    assert split_tasks(tasks, test_size=15, seed=1) != (train, test)
    _, test_frac = split_tasks(base, test_size=0.25, seed=0)
    assert len(test_frac) == 15
    with pytest.raises(ValueError, match="test_size"):
        split_tasks(base, test_size=61, seed=0)
    with pytest.raises(ValueError, match="test_size"):
        split_tasks(base, test_size=1.5, seed=0)


# --------------------------------------------------------------------------------------------------------------
# Prompt templates
# --------------------------------------------------------------------------------------------------------------

EXPECTED_INSTRUCTION = (
    "Using the numbers [44, 19, 35], create an equation that equals 98. You can use basic arithmetic operations "
    "(+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. And return the "
    "final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
)


def test_prompt_templates_exact_text():
    assert set(PROMPT_TEMPLATES) == {"chat", "base", "compact", "short"}
    expected_base = (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
        "assistant first thinks about the reasoning process in the mind and then provides the user with the "
        "answer.\nUser: " + EXPECTED_INSTRUCTION + "\nAssistant: Let me solve this step by step.\n<think>"
    )
    assert make_prompt((44, 19, 35), 98, template="base") == expected_base
    assert BASE_TEMPLATE.format(numbers=[44, 19, 35], target=98) == expected_base
    assert make_prompt([44, 19, 35], 98) == [{"role": "user", "content": EXPECTED_INSTRUCTION}]
    assert make_prompt([44, 19, 35], 98, "chat", system_prompt="Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": EXPECTED_INSTRUCTION},
    ]
    with pytest.raises(ValueError, match=r"valid names: \['base', 'chat', 'compact', 'short'\]"):
        make_prompt([1, 2], 3, template="nope")
    with pytest.raises(ValueError, match="system_prompt"):
        make_prompt([1, 2], 3, template="base", system_prompt="x")


# --------------------------------------------------------------------------------------------------------------
# Warm-start traces
# --------------------------------------------------------------------------------------------------------------

_STEP = re.compile(r"^(\d+) ([-+*/]) (\d+) = (\d+)(\. That matches the target\.|, not (\d+)\.)?$")
_GIVE_UP = re.compile(r"^I could not reach (\d+)\. My closest attempt is (.+) = (\d+)\.$")


def check_trace(text: str, task: CountdownTask, template: str, max_failed_tries: int) -> bool:
    """Validate a warm-start completion line by line; returns whether the final answer is correct."""
    if template == "chat":
        assert text.startswith("<think>\n")
        text = text[len("<think>") :]
    assert text.startswith("\n") and "<think>" not in text
    think, sep, answer_part = text.partition("\n</think>\n")
    assert sep and re.fullmatch(r"<answer>[^<>\n]+</answer>", answer_part), text
    answer = answer_part[len("<answer>") : -len("</answer>")]
    value, literals = evaluate(answer)
    assert Counter(literals) == Counter(task.nums), text  # always well formed, all numbers used once
    lines = think[1:].split("\n")
    retries = 0
    for line in lines:
        if line == "Let me try another way.":
            retries += 1
            continue
        if (m := _GIVE_UP.match(line)) is not None:
            assert line is lines[-1] and int(m.group(1)) == task.target
            assert m.group(2) == answer and evaluate(m.group(2))[0] == int(m.group(3)) != task.target
            continue
        m = _STEP.match(line)
        assert m is not None, f"unexpected line {line!r} in {text!r}"
        a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        assert evaluate(f"{a} {op} {b}")[0] == c, line  # every intermediate result is real
        if m.group(6) is not None:
            assert int(m.group(6)) == task.target != c
        if m.group(5) and m.group(5).startswith(". That"):
            assert c == task.target and line is lines[-1]
    correct = value == task.target
    assert correct == lines[-1].endswith("That matches the target.")
    assert retries <= max_failed_tries
    return correct


def test_warmstart_without_failed_tries_is_the_solution():
    task = CountdownTask(98, (44, 19, 35), "(44 + 19) + 35")
    text = make_warmstart_completion(task, rng=random.Random(0))
    assert text == (
        "<think>\n44 + 19 = 63\n63 + 35 = 98. That matches the target.\n</think>\n<answer>(44 + 19) + 35</answer>"
    )
    base = make_warmstart_completion(task, rng=random.Random(0), template="base")
    assert "<think>" + base == text


@pytest.mark.parametrize("template", ["chat", "base"])
def test_warmstart_traces_are_valid_and_failed_share_matches(template):
    tasks = generate_tasks(400, num_numbers=(3, 4), seed=9)
    rng = random.Random(0)
    results = [
        check_trace(
            make_warmstart_completion(
                t, rng=rng, max_failed_tries=2, failed_trace_share=0.5, template=template
            ),
            t,
            template,
            max_failed_tries=2,
        )
        for t in tasks
    ]
    failed_share = 1 - sum(results) / len(results)
    assert 0.4 <= failed_share <= 0.6


def test_warmstart_failed_try_counts_and_determinism():
    tasks = generate_tasks(200, seed=1)
    texts = [
        make_warmstart_completion(t, rng=random.Random(i), max_failed_tries=3) for i, t in enumerate(tasks)
    ]
    assert all(check_trace(x, t, "chat", max_failed_tries=3) for x, t in zip(texts, tasks, strict=True))
    retries = Counter(x.count("Let me try another way.") for x in texts)
    assert set(retries) == {0, 1, 2, 3}
    again = [
        make_warmstart_completion(t, rng=random.Random(i), max_failed_tries=3) for i, t in enumerate(tasks)
    ]
    assert again == texts
    always_failed = [
        make_warmstart_completion(t, rng=random.Random(0), failed_trace_share=1.0) for t in tasks[:50]
    ]
    assert not any(
        check_trace(x, t, "chat", max_failed_tries=0) for x, t in zip(always_failed, tasks[:50], strict=True)
    )
    with pytest.raises(ValueError, match="failed_trace_share"):
        make_warmstart_completion(tasks[0], rng=random.Random(0), failed_trace_share=1.5)
    with pytest.raises(ValueError, match="max_failed_tries"):
        make_warmstart_completion(tasks[0], rng=random.Random(0), max_failed_tries=-1)
    with pytest.raises(ValueError, match="no solution"):
        make_warmstart_completion(CountdownTask(10, (1, 1, 1), ""), rng=random.Random(0))


def test_build_sft_records_formats():
    tasks = generate_tasks(5, seed=0)
    chat = build_sft_records(tasks, template="chat", seed=1, max_failed_tries=1)
    base = build_sft_records(tasks, template="base", seed=1, max_failed_tries=1)
    for t, c, b in zip(tasks, chat, base, strict=True):
        assert set(c) == set(b) == {"prompt", "completion", "target", "nums"}
        assert c["target"] == t.target and c["nums"] == list(t.nums)
        assert c["prompt"] == make_prompt(t.nums, t.target) and c["completion"][0]["role"] == "assistant"
        assert len(c["completion"]) == 1 and c["completion"][0]["content"].startswith("<think>\n")
        assert isinstance(b["prompt"], str) and b["prompt"].endswith("step by step.\n<think>")
        assert isinstance(b["completion"], str) and b["completion"].startswith("\n")
    assert build_sft_records(tasks, seed=1, max_failed_tries=1) == chat


# --------------------------------------------------------------------------------------------------------------
# Row validation and hub loaders (hub replaced by an in-memory fake: nothing is downloaded)
# --------------------------------------------------------------------------------------------------------------


def test_validate_countdown_rows():
    good = [{"target": 98, "nums": [44, 19, 35]}, {"target": 5, "nums": (2, 3), "extra": "ok"}]
    assert validate_countdown_rows(good, "demo") == [(98, (44, 19, 35)), (5, (2, 3))]
    bad_rows = [
        ({"nums": [1, 2]}, "'target'"),
        ({"target": 5}, "'nums'"),
        ({"target": "5", "nums": [1, 2]}, "'target'"),
        ({"target": -1, "nums": [1, 2]}, "'target'"),
        ({"target": 5, "nums": [1, "2"]}, "'nums'"),
        ({"target": 5, "nums": [1, 2.0]}, "'nums'"),
        ({"target": 5, "nums": [True, 2]}, "'nums'"),
        ({"target": 5, "nums": "12"}, "'nums'"),
        ({"target": 5, "nums": [3]}, "'nums'"),
    ]
    for row, field in bad_rows:
        with pytest.raises(ValueError, match=r"^my/data: row 1: ") as err:
            validate_countdown_rows([good[0], row], "my/data")
        assert field in str(err.value)
    with pytest.raises(ValueError, match="row 0"):
        validate_countdown_rows(["not a dict"], "x")


def test_hub_loaders_with_fake_hub(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split, revision):
        calls.append((name, split, revision))
        if name == cd.COUNTDOWN_HUB_ID:
            rows = [{"target": 98, "nums": [44, 19, 35]}, {"target": 98, "nums": [35, 44, 19]}]
            rows += [{"target": t.target, "nums": list(t.nums)} for t in generate_tasks(30, seed=8)]
            return datasets.Dataset.from_list(rows)
        query = BASE_TEMPLATE.format(numbers=[44, 19, 35], target=98).removesuffix("\n<think>")
        return datasets.Dataset.from_list(
            [{"query": query, "completion": " <think>\nabc</think>\n<answer>x</answer>"}]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    train, test = cd.load_hub_countdown_tasks(test_size=5, seed=0)
    assert calls[-1] == (cd.COUNTDOWN_HUB_ID, "train", cd.COUNTDOWN_HUB_REVISION)
    assert (cd.COUNTDOWN_HUB_ID, cd.COUNTDOWN_HUB_REVISION) == (
        "Jiayi-Pan/Countdown-Tasks-3to4",
        "408f70d177020686d34a56bba5952feb45aaaee4",
    )
    assert len(train) + len(test) == 31 and len(test) == 5  # the permuted duplicate is dropped
    assert not {t.key for t in train} & {t.key for t in test}
    assert all(t.solution and evaluate(t.solution)[0] == t.target for t in train + test)

    base = cd.load_hub_warmstart("test")
    assert calls[-1] == (cd.WARMSTART_HUB, "test", cd.WARMSTART_HUB_REVISION)
    assert base[0]["prompt"].endswith("Let me solve this step by step.") and base[0]["nums"] == [44, 19, 35]
    chat = cd.load_hub_warmstart("test", template="chat")
    assert chat[0]["prompt"] == make_prompt([44, 19, 35], 98) and chat[0]["target"] == 98
    assert chat[0]["completion"] == [
        {"role": "assistant", "content": "<think>\nabc</think>\n<answer>x</answer>"}
    ]


def test_compact_template_sends_its_short_system_prompt():
    from posttrain.countdown import COMPACT_SYSTEM_PROMPT

    messages = make_prompt([44, 19, 35], 98, "compact")
    assert messages[0] == {"role": "system", "content": COMPACT_SYSTEM_PROMPT}
    assert messages[1]["content"].startswith("Numbers: [44, 19, 35]\nTarget: 98\n")


def test_direct_solutions_have_no_think_block_and_are_correct():
    from rewards.countdown import score

    tasks = generate_tasks(50, seed=9)
    for task in tasks:
        chat = make_warmstart_completion(task, rng=random.Random(0), think=False)
        assert chat.startswith("<answer>") and chat.endswith("</answer>") and "<think>" not in chat
        assert score(chat, task.target, list(task.nums)) == 1.0
        base = make_warmstart_completion(task, rng=random.Random(0), think=False, template="base")
        assert base.startswith("\n</think>\n<answer>")


def test_short_template_names_only_numbers_and_target():
    assert make_prompt([44, 19, 35], 98, "short") == [
        {"role": "system", "content": "Countdown"},
        {"role": "user", "content": "Numbers: 44 19 35\nTarget: 98"},
    ]
    assert make_prompt([44, 19, 35], 98, "short", system_prompt="S")[0] == {"role": "system", "content": "S"}


# Backward traces: "a-b=c" steps, a need line (values the last step needs) and a have line per last number.
_BACKWARD_STEP = re.compile(r"^(\d+)([-+*/])(\d+)=(\d+)$")


def _check_step(step: str) -> tuple[int, str, int, int]:
    match = _BACKWARD_STEP.match(step)
    assert match, step
    a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
    exact = {"+": a + b, "-": a - b, "*": a * b, "/": Fraction(a, b)}[op]
    assert exact == c and c >= 0, f"wrong arithmetic in trace: {step}"
    return a, op, b, c


def test_backward_traces_check_every_last_number_in_prompt_order():
    from posttrain.countdown import make_backward_completion

    tasks = generate_tasks(400, seed=21, num_numbers=3)
    fallbacks = 0
    for task in tasks:
        text = make_backward_completion(task)
        head, _, answer_part = text.partition("</think>\n")
        assert (
            head.startswith("<think>\n")
            and answer_part.startswith("<answer>")
            and answer_part.endswith("</answer>")
        )
        assert_solution(answer_part[len("<answer>") : -len("</answer>")], task.nums, task.target)
        lines = head[len("<think>\n") :].rstrip("\n").split("\n")
        found = lines[-1].startswith("found ")
        body = lines[:-1] if found else lines
        assert len(body) % 2 == 0 and 2 <= len(body) <= 6
        for block, x in zip(range(0, len(body), 2), task.nums, strict=False):  # tries stop at a match
            need = [_check_step(s) for s in body[block].split()]
            have_text = body[block + 1].removesuffix(" no")
            have = [_check_step(s) for s in have_text.split()]
            # every need step has the target and this block's last number as operands, in either order
            assert all({a, b} == {task.target, x} or (a, b) == (task.target, x) for a, _, b, _ in need)
            rest = list(task.nums)
            rest.remove(x)
            assert all(sorted((a, b)) == sorted(rest) for a, _, b, _ in have)
            is_last = block == len(body) - 2
            needs, haves = {c for *_, c in need}, {c for *_, c in have}
            if not is_last or not found:
                assert body[block + 1].endswith(" no") and not needs & haves
        if found:
            value = int(lines[-1].split()[1])
            assert value in {c for *_, c in (_check_step(s) for s in body[-2].split())}
            assert value in {c for *_, c in (_check_step(s) for s in body[-1].split())}
        else:
            fallbacks += 1
            assert len(body) == 6  # all three last numbers tried before the solver's expression
    assert fallbacks < len(tasks) * 0.05  # the inverses cover ~98% of 3-number tasks


def test_backward_style_through_the_record_builders():
    from rewards.countdown import score

    tasks = generate_tasks(20, seed=3, num_numbers=3)
    records = build_sft_records(tasks, template="short", style="backward")
    for task, record in zip(tasks, records, strict=True):
        content = record["completion"][0]["content"]
        assert "found" in content or content.count(" no") == 3
        assert score(content, task.target, list(task.nums)) == 1.0
    direct = build_sft_records(tasks[:2], template="short", style="backward", think=False)
    assert direct[0]["completion"][0]["content"].startswith("<answer>")  # think=False: direct answers win
    base = make_warmstart_completion(tasks[0], rng=random.Random(0), template="base", style="backward")
    assert base.startswith("\n") and not base.startswith("<think>")  # the base prompt pre-seeds "<think>"
    with pytest.raises(ValueError, match="3 positive numbers"):
        make_warmstart_completion(
            generate_tasks(1, seed=1, num_numbers=4)[0], rng=random.Random(0), style="backward"
        )
    with pytest.raises(ValueError, match="own search"):
        make_warmstart_completion(tasks[0], rng=random.Random(0), style="backward", max_failed_tries=2)
    with pytest.raises(ValueError, match="valid names"):
        make_warmstart_completion(tasks[0], rng=random.Random(0), style="sideways")


def test_countdown_arguments_check_the_warmstart_style():
    from posttrain.configs import CountdownArguments

    assert CountdownArguments(warmstart_style="backward").warmstart_style == "backward"
    with pytest.raises(ValueError, match="warmstart_style='sideways'"):
        CountdownArguments(warmstart_style="sideways")
    with pytest.raises(ValueError, match="3-number tasks only"):
        CountdownArguments(warmstart_style="backward", countdown_num_numbers=[3, 4])
    CountdownArguments(warmstart_style="backward", warmstart_think=False, countdown_num_numbers=[4])  # direct
