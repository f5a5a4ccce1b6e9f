"""Grade-school maths word problems: `openai/gsm8k` for users with the hub, and an offline generator.

The generator writes templated word problems (shopping, sharing, saving, rates, fractions) at template levels
1-3, chains of one to four arithmetic steps (`MathProblem.level` is the number of steps), each with its worked solution as one line per
step (``12 × 3 = 36``) and an exact integer answer. A problem is in the test split when a hash of its question
says so, so the same question can never sit in both splits, whatever seed or size produced it.

The reasoning format the maths recipes teach is the Countdown one: the steps in ``<think>…</think>``, then the
number in ``<answer>…</answer>`` (`rewards.maths` also accepts GSM8K's trailing ``#### N``).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

GSM8K_HUB_ID = "openai/gsm8k"
GSM8K_HUB_CONFIG = "main"
# Commit not known offline: "main" moves. Pin the full commit sha here before publishing results.
GSM8K_HUB_REVISION = "main"
GENERATED = "gsm8k"  # dataset_name of the offline generator
INSTRUCTION = (
    "Solve the problem. Think step by step inside <think> </think>, then give only the final number inside "
    "<answer> </answer>."
)
TEST_SHARE = 5  # one question in TEST_SHARE goes to the test split
LEVELS = (1, 2, 3)

NAMES = [
    "Ava",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Isla",
    "Jonah",
    "Kemi",
    "Luca",
    "Maya",
    "Noor",
]
ITEMS = [
    "apples",
    "pencils",
    "stickers",
    "cookies",
    "marbles",
    "books",
    "cards",
    "shells",
    "stamps",
    "candles",
]
GOODS = [
    ("notebook", "notebooks"),
    ("pen", "pens"),
    ("sandwich", "sandwiches"),
    ("ticket", "tickets"),
    ("plant", "plants"),
]
WORKERS = [
    ("baker", "loaves"),
    ("printer", "pages"),
    ("farmer", "eggs"),
    ("tailor", "shirts"),
    ("potter", "bowls"),
]
FRACTIONS = [
    (1, 2, "half"),
    (1, 3, "a third"),
    (1, 4, "a quarter"),
    (3, 4, "three quarters"),
    (2, 3, "two thirds"),
]


@dataclass(frozen=True)
class MathProblem:
    question: str
    steps: tuple[str, ...]  # "a op b = c", one per arithmetic step
    answer: int
    level: int
    family: str

    @property
    def solution(self) -> str:
        """The worked solution in the recipes' reasoning format."""
        return f"<think>\n{chr(10).join(self.steps)}\n</think>\n<answer>{self.answer}</answer>"


def is_test_question(question: str) -> bool:
    """The split of a question: fixed by its text alone."""
    digest = hashlib.sha256(" ".join(question.lower().split()).encode()).digest()
    return digest[0] % TEST_SHARE == 0


def _step(a: int, op: str, b: int) -> tuple[str, int]:
    value = {"+": a + b, "-": a - b, "×": a * b, "÷": a // b}[op]
    return f"{a} {op} {b} = {value}", value


def _chain(steps: list[str], a: int, op: str, b: int) -> int:
    """One more worked step appended to ``steps``; its result."""
    line, value = _step(a, op, b)
    steps.append(line)
    return value


# Each family draws its numbers and returns (question, steps, answer) at a level (1-3 steps).
def _shopping(rng: random.Random, level: int) -> tuple[str, list[str], int]:
    name, many = rng.choice(NAMES), rng.choice(GOODS)
    count, price = rng.randint(2, 12), rng.randint(2, 15)
    step, total = _step(count, "×", price)
    steps, question = [step], f"{name} buys {count} {many} at ${price} each."
    if level >= 2:
        extra = rng.randint(3, 40)
        total = _chain(steps, total, "+", extra)
        question += f" {name} also pays ${extra} for delivery."
    if level >= 3:
        paid = (total // 10 + 1 + rng.randint(0, 5)) * 10
        total = _chain(steps, paid, "-", total)
        return question + f" {name} pays with ${paid}. How much change does {name} get back?", steps, total
    return question + f" How much does {name} spend in dollars?", steps, total


def _sharing(rng: random.Random, level: int) -> tuple[str, list[str], int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    friends = rng.randint(2, 9)
    if level == 1:
        total = friends * rng.randint(2, 12)
        step, value = _step(total, "÷", friends)
        question = f"{name} has {total} {item} and shares them equally among {friends} friends."
        return question + f" How many {item} does each friend get?", [step], value
    bags, k = rng.randint(2, 6), rng.randint(1, 3)
    step, total = _step(bags, "×", friends * k)  # bags of friends x k: the total shares out evenly
    steps = [step]
    question = f"{name} buys {bags} bags of {item} with {friends * k} {item} in each bag."
    if level == 3:
        kept = friends * rng.randint(1, bags * k - 1)
        total = _chain(steps, total, "-", kept)
        question += f" {name} keeps {kept} {item}."
    value = _chain(steps, total, "÷", friends)
    others = "the rest" if level == 3 else "them"
    question += f" {name} shares {others} equally among {friends} friends. How many does each friend get?"
    return question, steps, value


def _saving(rng: random.Random, level: int) -> tuple[str, list[str], int]:
    name = rng.choice(NAMES)
    weekly, weeks = rng.randint(3, 25), rng.randint(2, 12)
    step, total = _step(weekly, "×", weeks)
    steps, question = [step], f"{name} saves ${weekly} every week for {weeks} weeks."
    if level >= 2:
        gift = rng.randint(5, 60)
        total = _chain(steps, total, "+", gift)
        question += f" A grandparent then gives {name} ${gift}."
    if level >= 3:
        spent = rng.randint(1, total - 1)
        total = _chain(steps, total, "-", spent)
        question += f" {name} spends ${spent} on a game."
    return question + f" How many dollars does {name} have now?", steps, total


def _rates(rng: random.Random, level: int) -> tuple[str, list[str], int]:
    worker, product = rng.choice(WORKERS)
    per_hour, hours = rng.randint(3, 20), rng.randint(2, 9)
    step, total = _step(per_hour, "×", hours)
    steps, question = [step], f"A {worker} makes {per_hour} {product} an hour and works for {hours} hours."
    if level >= 2:
        days = rng.randint(2, 6)
        total = _chain(steps, total, "×", days)
        question += f" The {worker} works like this for {days} days."
    if level >= 3:
        sold = rng.randint(1, total - 1)
        total = _chain(steps, total, "-", sold)
        return question + f" {sold} {product} are sold. How many {product} are left?", steps, total
    return question + f" How many {product} does the {worker} make in total?", steps, total


def _fractions(rng: random.Random, level: int) -> tuple[str, list[str], int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    num, den, words = rng.choice(FRACTIONS)
    total = den * rng.randint(2, 15)
    steps = []
    part = _chain(steps, total, "÷", den)
    if num != 1:
        part = _chain(steps, part, "×", num)
    question = f"{name} has {total} {item} and gives away {words} of them."
    if level == 1 and num == 1:
        return question + f" How many {item} does {name} give away?", steps, part
    left = _chain(steps, total, "-", part)
    if level >= 3:
        found = rng.randint(2, 30)
        left = _chain(steps, left, "+", found)
        return (
            question + f" Then {name} finds {found} more. How many {item} does {name} have now?",
            steps,
            left,
        )
    return question + f" How many {item} does {name} have left?", steps, left


FAMILIES: dict[str, Callable[[random.Random, int], tuple[str, list[str], int]]] = {
    "shopping": _shopping,
    "sharing": _sharing,
    "saving": _saving,
    "rates": _rates,
    "fractions": _fractions,
}


def _problems(seed: int, levels: tuple[int, ...]) -> Iterator[MathProblem]:
    rng = random.Random(seed)
    names = sorted(FAMILIES)
    while True:
        family, level = rng.choice(names), rng.choice(levels)
        question, steps, answer = FAMILIES[family](rng, level)
        yield MathProblem(question, tuple(steps), answer, len(steps), family)


def generate_problems(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    levels: tuple[int, ...] = LEVELS,
    max_tries: int | None = None,
) -> list[MathProblem]:
    """``n`` distinct problems of ``split`` ("train" or "test"), reproducible from ``seed``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n < 0 or not levels or any(level not in LEVELS for level in levels):
        raise ValueError(f"need n >= 0 and levels from {LEVELS}, got n={n}, levels={levels}")
    want_test = split == "test"
    out: list[MathProblem] = []
    seen: set[str] = set()
    tries = 0
    limit = max_tries or max(1000, 200 * n)
    for problem in _problems(seed, tuple(levels)):
        if len(out) >= n:
            break
        tries += 1
        if tries > limit:
            raise ValueError(f"only {len(out)} distinct {split} problems in {limit} draws; ask for fewer")
        if problem.question in seen or is_test_question(problem.question) != want_test:
            continue
        seen.add(problem.question)
        out.append(problem)
    return out


def gsm8k_prompt(question: str) -> list[dict[str, str]]:
    """The conversational prompt of a problem (the SFT, RL and evaluation prompts are the same)."""
    return [{"role": "user", "content": f"{INSTRUCTION}\n\n{question}"}]


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def hub_solution(worked: str) -> str:
    """A GSM8K worked answer in the reasoning format: the steps (calculator notes dropped), then the number."""
    steps = _CALCULATOR.sub("", worked.rsplit("####", 1)[0]).strip()
    return f"<think>\n{steps}\n</think>\n<answer>{gsm8k_final_answer(worked)}</answer>"


def gsm8k_rows(
    dataset_name: str | None, split: str, n: int, *, seed: int = 0, revision: str | None = None
) -> list[dict]:
    """``n`` rows {question, answer, solution} of ``split``: generated problems, or the hub's."""
    if dataset_name in (None, GENERATED):
        return [
            {"question": p.question, "answer": str(p.answer), "solution": p.solution}
            for p in generate_problems(n, split=split, seed=seed)
        ]
    if dataset_name != GSM8K_HUB_ID:
        raise ValueError(f"unknown GSM8K source {dataset_name!r}; use {GENERATED!r} or {GSM8K_HUB_ID!r}")
    from datasets import load_dataset

    try:
        data = load_dataset(
            GSM8K_HUB_ID, GSM8K_HUB_CONFIG, split=split, revision=revision or GSM8K_HUB_REVISION
        )
    except Exception as exc:  # noqa: BLE001 - offline, or the hub refused: say what to use instead
        raise FileNotFoundError(
            f"cannot load {GSM8K_HUB_ID} ({type(exc).__name__}: {str(exc)[:200]}); offline, use the generated "
            f"problems (dataset_name: {GENERATED})"
        ) from None
    rows = []
    for row in data.select(range(min(n, len(data)))):
        rows.append(
            {
                "question": row["question"],
                "answer": gsm8k_final_answer(row["answer"]),
                "solution": hub_solution(row["answer"]),
            }
        )
    return rows


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def gsm8k_final_answer(solution: str) -> str:
    """The number after ``####`` in a GSM8K solution (commas dropped)."""
    if "####" not in solution:
        raise ValueError("a GSM8K solution ends with '#### <answer>'")
    tail = solution.rsplit("####", 1)[1].strip()
    match = _NUMBER.search(tail)
    if not match:
        raise ValueError(f"no number after '####' in {tail[:40]!r}")
    return match.group(0).replace(",", "")
