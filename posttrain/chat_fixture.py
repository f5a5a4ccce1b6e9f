"""The offline fixture: chat and preference rows from task families whose answers are right by construction.

Rows come in the hub datasets' exact schemas (`posttrain.chat_data` loads them in place of the hub). Replies are
rendered in four styles, and a preference pair renders chosen and rejected in the same style, so they differ in
correctness, not in length or form; `rewards.chat_verifier` judges them and owns the shared vocabularies.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rewards.chat_verifier import CAPITALS, OPPOSITE_ALTERNATIVES, OPPOSITE_DECOYS, OPPOSITES

SMOLTALK_SPLITS = {"train": 2000, "test": 200}
ULTRAFEEDBACK_SPLITS = {
    "train_prefs": 2000,
    "test_prefs": 200,
    "train_sft": 2000,
    "test_sft": 200,
    "train_gen": 2000,
    "test_gen": 200,
}


def check_split(split: str, splits: dict[str, int], dataset: str) -> None:
    if split not in splits:
        raise ValueError(f"{dataset} has no split {split!r}; use one of {sorted(splits)}.")


# ----------------------------------------------------------------------------------------------------------
# Fixture: task families with answers right by construction
# ----------------------------------------------------------------------------------------------------------
#
# Every reply is rendered in one of four styles (terse answer, one sentence, answer + short explanation, a few
# short paragraphs), and every explanation ends with the answer it states. A preference pair draws its style and
# template choices once and renders chosen and rejected with them, so the two differ in correctness, not in
# length or form. Most rejected replies are wrong ones that look right (a near-miss value, stated as confidently,
# often with the slip inside the explanation); the rest are evasive replies (hedging about the topic at the
# chosen reply's length, never committing to an answer) and off-task ones (another prompt's answer, or a
# Countdown expression). `rewards.chat_verifier` judges all of them; its vocabularies are the fixture's.

_WORDS = (
    "planet river garden window silver bottle market candle forest pencil rocket island basket "
    "thunder violin mirror castle dragon lemon ticket jacket orange bridge summer winter"
).split()
_SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a concise assistant. Answer in one or two sentences.",
    "You are a friendly tutor who explains answers clearly.",
)
STYLES = ("terse", "sentence", "explain", "paragraphs")
_STYLE_WEIGHTS = (0.2, 0.3, 0.3, 0.2)
# The styles that suit each system prompt (None: no system prompt); SFT then sees replies that follow it.
_SMOLTALK_STYLES: dict[str | None, tuple[tuple[str, ...], tuple[float, ...]]] = {
    None: (STYLES, _STYLE_WEIGHTS),
    _SYSTEM_PROMPTS[0]: (STYLES, _STYLE_WEIGHTS),
    _SYSTEM_PROMPTS[1]: (("terse", "sentence"), (0.4, 0.6)),
    _SYSTEM_PROMPTS[2]: (("explain", "paragraphs"), (0.5, 0.5)),
}
# Families whose answer is a number: a no-answer reply to them holds no digits at all.
_NUMERIC_FAMILIES = ("arithmetic", "count_letters", "sort_numbers")
_DIGIT_FAMILIES = (*_NUMERIC_FAMILIES, "parity")  # their replies hold digits
# Rejected replies: mostly wrong-but-plausible, a minority evasive or off-task (train_prefs: 68/15/18). The mix
# differs by family so that digits tell nothing either: since a no-answer reply to a number question holds no
# digits, word questions get more no-answer replies, and theirs mostly hold digits (another prompt's numbers).
REJECTED_KINDS = ("wrong", "evasive", "off_task")
_REJECTED_WEIGHTS = {"number": (0.8, 0.1, 0.1), "parity": (0.7, 0.15, 0.15), "word": (0.4, 0.25, 0.35)}
_COUNTDOWN_SHARE = 1 / 3  # of the off-task replies, where a Countdown expression is off-task
_TAGGED_SHARE = 0.05  # pairs whose two replies both end in <answer> tags
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|\Z)")


@dataclass(frozen=True)
class ChatTask:
    """One fixture prompt: the question, its right answer, plausible wrong answers (never right), and the facts
    the reply templates need (the operands, the word, the numbers, the country, ...)."""

    question: str
    answer: Any
    wrong: tuple[Any, ...]
    facts: tuple[Any, ...]


def _distinct(candidates: Iterable[Any], *, not_in: Iterable[Any]) -> tuple[Any, ...]:
    """Candidates in order, without repeats and without the excluded values."""
    out: list[Any] = []
    excluded = list(not_in)
    for c in candidates:
        if c not in out and c not in excluded:
            out.append(c)
    return tuple(out)


# The generators draw from `rng` exactly as the earlier one-sentence fixture did, so the prompts (and the
# train/test split by prompt hash) are unchanged; the wrong candidates are derived without further draws.


def _arithmetic(rng: random.Random) -> ChatTask:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    op = rng.choice("+-*")
    value = a + b if op == "+" else a - b if op == "-" else a * b
    offset = rng.choice([-10, -2, -1, 1, 2, 10])
    sym = {"+": "+", "-": "-", "*": "×"}[op]
    question = rng.choice(["What is {a} {s} {b}?", "Compute {a} {s} {b}.", "Calculate {a} {s} {b}, please."])
    digits = str(abs(value))
    swapped = (
        int(digits[:-2] + digits[-1] + digits[-2]) * (1 if value >= 0 else -1) if len(digits) > 1 else value
    )
    # Near misses: a slip of one or ten, a carry dropped, two digits swapped, one operand too many or too few.
    near = [value + offset, value + 1, value - 1, value + 10, value - 10, swapped]
    if op == "*":
        near += [value + a, value - a, value + 100]
    wrong = _distinct(near, not_in=[value])
    return ChatTask(question.format(a=a, s=sym, b=b), value, wrong, (a, sym, b))


def _reverse(rng: random.Random) -> ChatTask:
    word = rng.choice(_WORDS)
    rev = word[::-1]
    # Anagrams of the word that look like its reversal: two neighbours swapped, a letter moved, the old rotation.
    swaps = [rev[:i] + rev[i + 1] + rev[i] + rev[i + 2 :] for i in range(len(rev) - 1)]
    near = swaps[1:3] + [rev[1:] + rev[0], word[1:] + word[0]] + swaps
    return ChatTask(f"Reverse the word '{word}'.", rev, _distinct(near, not_in=[rev, word]), (word,))


def _uppercase(rng: random.Random) -> ChatTask:
    words = " ".join(rng.sample(_WORDS, 2))
    first, second = words.split()
    near = [words.capitalize(), words.title(), f"{first.upper()} {second}", f"{first} {second.upper()}"]
    answer = words.upper()
    return ChatTask(
        f"Write '{words}' in capital letters.", answer, _distinct(near, not_in=[answer]), (words,)
    )


def _count_letters(rng: random.Random) -> ChatTask:
    word = rng.choice(_WORDS)
    n = len(word)
    offset = rng.choice([-2, -1, 1, 2])
    wrong = _distinct([n + offset, n + 1, n - 1], not_in=[n])
    return ChatTask(f"How many letters are in the word '{word}'?", n, wrong, (word,))


def _sort_numbers(rng: random.Random) -> ChatTask:
    nums = rng.sample(range(1, 100), rng.randint(3, 6))
    right = tuple(sorted(nums))
    shuffled = nums[:]
    while shuffled == sorted(nums):
        rng.shuffle(shuffled)
    # Unsorted, partly sorted (neighbours swapped, the smallest first but the rest as given), or descending.
    neighbours = [right[:i] + (right[i + 1], right[i]) + right[i + 2 :] for i in range(len(right) - 1)]
    rest = [x for x in nums if x != right[0]]
    near = [tuple(shuffled), *neighbours, (right[0], *rest), tuple(nums), right[::-1]]
    return ChatTask(
        f"Sort these numbers from smallest to largest: {', '.join(map(str, nums))}.",
        right,
        _distinct(near, not_in=[right]),
        (tuple(nums),),
    )


def _capital(rng: random.Random) -> ChatTask:
    country = rng.choice(sorted(CAPITALS))
    others = [c for k, c in sorted(CAPITALS.items()) if k != country]
    wrong = rng.choice(others)
    return ChatTask(
        f"What is the capital of {country}?",
        CAPITALS[country],
        _distinct([wrong, *others], not_in=[CAPITALS[country]]),
        (country,),
    )


def _opposite(rng: random.Random) -> ChatTask:
    word = rng.choice(sorted(OPPOSITES))
    wrong = rng.choice([w for w in sorted(OPPOSITES) if w != word])
    # A decoy of the same scale where there is one, else other words of the vocabulary (never a right opposite).
    right = [OPPOSITES[word], *OPPOSITE_ALTERNATIVES.get(word, ())]
    vocabulary = sorted({w for pair in OPPOSITES.items() for w in pair})
    near = [*OPPOSITE_DECOYS.get(word, ()), wrong, *vocabulary]
    return ChatTask(
        f"What is the opposite of '{word}'?",
        OPPOSITES[word],
        _distinct(near, not_in=[word, *right]),
        (word,),
    )


def _parity(rng: random.Random) -> ChatTask:
    n = rng.randint(1, 999)
    right, wrong = ("even", "odd") if n % 2 == 0 else ("odd", "even")
    return ChatTask(f"Is {n} even or odd?", right, (wrong,), (n,))


TASK_FAMILIES: dict[str, Callable[[random.Random], ChatTask]] = {
    "arithmetic": _arithmetic,
    "reverse": _reverse,
    "uppercase": _uppercase,
    "count_letters": _count_letters,
    "sort_numbers": _sort_numbers,
    "capital": _capital,
    "opposite": _opposite,
    "parity": _parity,
}


# ---- reply templates: every draw from `rng` is independent of the value, so a right and a wrong value rendered
# with the same seed get the same template, word for word, apart from the value (and the slip it implies).


@dataclass(frozen=True)
class _Parts:
    terse: str
    leads: list[str]  # one sentence that states the answer (the "sentence" style, an opening paragraph)
    steps: list[str]  # the method, in order
    checks: list[str]  # a check or a remark; one is used
    finals: list[str]  # a closing sentence stating the answer last
    remark: str  # a general remark that lengthens the longest style


def _show(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _finals(v: str, *specific: str) -> list[str]:
    return [*specific, f"So the answer is {v}.", f"Final answer: {v}.", f"Answer: **{v}**"]


def _arithmetic_parts(task: ChatTask, v: int, rng: random.Random) -> _Parts:
    a, sym, b = task.facts
    expr = f"{a} {sym} {b}"
    tens = lambda n: (n - n % 10, n % 10)  # noqa: E731 - a one-line helper
    if sym in "+-" and b >= 10 and b % 10:
        t, u = tens(b)
        mid, verb = (a + t, "add") if sym == "+" else (a - t, "take away")
        steps = [
            f"First {verb} the tens: {a} {sym} {t} = {mid}.",
            f"Then {verb} the ones: {mid} {sym} {u} = {v}.",
        ]
    elif sym == "+" and a >= 10 and a % 10:
        t, u = tens(a)
        steps = [f"First add the tens: {b} + {t} = {b + t}.", f"Then add the ones: {b + t} + {u} = {v}."]
    elif sym == "×" and (b >= 10 and b % 10 or a >= 10 and a % 10):
        x, y = (a, b) if b >= 10 and b % 10 else (b, a)
        t, u = tens(y)
        steps = [
            f"Split {y} into {t} + {u}.",
            f"Then {x} × {t} = {x * t} and {x} × {u} = {x * u}.",
            f"Adding the two parts: {x * t} + {x * u} = {v}.",
        ]
    else:
        verb = {"+": f"Adding {b} to {a}", "-": f"Taking {b} away from {a}", "×": f"Multiplying {a} by {b}"}[
            sym
        ]
        steps = [f"{verb} gives {v}."]
    inverse = {"+": f"{v} - {b} = {a}", "-": f"{v} + {b} = {a}", "×": f"{v} ÷ {b} = {a}"}[sym]
    ra, rb = (round(n, -1) or n for n in (a, b))
    estimate = ra + rb if sym == "+" else ra - rb if sym == "-" else ra * rb
    return _Parts(
        terse=str(v),
        leads=[
            f"{expr} = {v}.",
            f"{expr} equals {v}.",
            f"The result of {expr} is {v}.",
            f"{expr} comes to {v}.",
        ],
        steps=steps,
        checks=[
            f"As a check, {inverse}.",
            f"A quick estimate agrees: {ra} {sym} {rb} is about {estimate}, close to {v}.",
        ],
        finals=_finals(str(v), f"So {expr} = {v}.", f"That gives {v}."),
        remark="Splitting a number into tens and ones keeps every step easy enough to do in your head.",
    )


def _spell(letters: Iterable[str], rng: random.Random) -> str:
    return rng.choice([", ", "-", " "]).join(letters)


def _reverse_parts(task: ChatTask, v: str, rng: random.Random) -> _Parts:
    (w,) = task.facts
    return _Parts(
        terse=v,
        leads=[
            f"Reversed, '{w}' is '{v}'.",
            f"'{w}' spelled backwards is '{v}'.",
            f"Read from the end, '{w}' becomes '{v}'.",
            f"The reverse of '{w}' is '{v}'.",
        ],
        steps=[
            f"Take the letters of '{w}' from the last one to the first: {_spell(v, rng)}.",
            f"Joined together, they spell '{v}'.",
        ],
        checks=[
            f"As a check, reading '{v}' backwards gives '{w}' again.",
            "Both words use the same letters, each exactly once, only in the reverse order.",
        ],
        finals=_finals(f"'{v}'", f"So the reversed word is '{v}'.", f"So '{w}' reversed is '{v}'."),
        remark="Writing the letters out one at a time makes it easy to see that none was skipped or swapped.",
    )


def _uppercase_parts(task: ChatTask, v: str, rng: random.Random) -> _Parts:
    (phrase,) = task.facts
    (w1, w2), (v1, v2) = phrase.split(), v.split()
    return _Parts(
        terse=v,
        leads=[
            f"In capital letters: {v}.",
            f"Here it is in capitals: {v}",
            f"'{phrase}' in capital letters is {v}.",
            f"Written in capitals, it reads {v}.",
        ],
        steps=[
            "Each letter is replaced by its capital form, and the space between the words stays where it is.",
            f"'{w1}' becomes {v1} and '{w2}' becomes {v2}.",
        ],
        checks=[
            "Every letter is now a capital, and the spelling has not changed.",
            "No letter was added or dropped: only the case changed.",
        ],
        finals=_finals(v, f"So the result is {v}.", f"In capitals: {v}."),
        remark="Spaces and punctuation have no capital form, so they stay exactly as they were.",
    )


def _count_parts(task: ChatTask, v: int, rng: random.Random) -> _Parts:
    (w,) = task.facts
    n, h = len(w), len(w) // 2
    letters = list(w)
    for i in range(v - n):  # a wrong count spells the word with a letter doubled...
        letters.insert(h + i, letters[h + i])
    del letters[h : h + max(0, n - v)]  # ...or with letters left out: the slip is in the spelling
    return _Parts(
        terse=str(v),
        leads=[
            f"The word '{w}' has {v} letters.",
            f"'{w}' is {v} letters long.",
            f"There are {v} letters in '{w}'.",
            f"'{w}' contains {v} letters.",
        ],
        steps=[f"Spelled out, the word is {_spell(letters, rng)}.", f"Counting them one by one gives {v}."],
        checks=[
            f"As a check, '{w[:h]}' has {h} letters and '{w[h:]}' has {v - h}, and {h} + {v - h} = {v}.",
            "A repeated letter counts every time it appears, so nothing is counted twice or skipped.",
        ],
        finals=_finals(str(v), f"So '{w}' has {v} letters.", f"The count is {v}."),
        remark="Each position in the word holds one letter, so the count is simply the number of positions.",
    )


def _sort_parts(task: ChatTask, v: tuple[int, ...], rng: random.Random) -> _Parts:
    show, k = _show(v), len(v)
    return _Parts(
        terse=show,
        leads=[
            f"From smallest to largest: {show}.",
            f"Sorted: {show}.",
            f"In ascending order: {show}.",
            f"The numbers in order are {show}.",
        ],
        steps=[
            f"The list has to start at {v[0]} and end at {v[-1]}.",
            f"Picking the smallest remaining number each time gives {v[0]}, then {v[1]}, and so on.",
            f"Putting them all together gives {show}.",
        ],
        checks=[
            f"Each number is larger than the one before it, and all {k} numbers from the question are still there.",
            f"Comparing neighbours pair by pair confirms the order, and none of the {k} numbers was dropped.",
        ],
        finals=_finals(show, f"So the sorted list is {show}.", f"The answer is {show}."),
        remark="Taking the smallest remaining number again and again needs more steps for long lists, but it is "
        "easy to check by hand.",
    )


def _capital_parts(task: ChatTask, v: str, rng: random.Random) -> _Parts:
    (c,) = task.facts
    return _Parts(
        terse=v,
        leads=[f"The capital of {c} is {v}.", f"{c}'s capital is {v}.", f"The capital city of {c} is {v}."],
        steps=["A capital is the city where the national government sits.", f"For {c}, that city is {v}."],
        checks=[
            f"{v} is the seat of the national government of {c}.",
            "A common mix-up is to name a country's best-known city instead; what counts is the seat of "
            "government.",
        ],
        finals=_finals(v, f"So the capital of {c} is {v}.", f"The answer is {v}."),
        remark="Most ministries and foreign embassies are based there as well.",
    )


def _opposite_parts(task: ChatTask, v: str, rng: random.Random) -> _Parts:
    (w,) = task.facts
    return _Parts(
        terse=v,
        leads=[
            f"The opposite of '{w}' is '{v}'.",
            f"The antonym of '{w}' is '{v}'.",
            f"'{w}' is paired with its opposite, '{v}'.",
        ],
        steps=[
            "An opposite names the other end of the same scale.",
            f"'{w}' sits at one end of that scale, and '{v}' sits at the other.",
        ],
        checks=[
            f"You can test it in a sentence: whatever is not '{w}' at all is '{v}'.",
            "Many words have more than one opposite, but this is the one dictionaries usually give first.",
        ],
        finals=_finals(f"'{v}'", f"So the opposite of '{w}' is '{v}'.", f"The answer is '{v}'."),
        remark="Opposites come in pairs, so naming one end of a scale tells you where the other end is.",
    )


def _parity_parts(task: ChatTask, v: str, rng: random.Random) -> _Parts:
    (n,) = task.facts
    d, r = n % 10, 0 if v == "even" else 1
    return _Parts(
        terse=v,
        leads=[f"{n} is {v}.", f"The number {n} is {v}.", f"{n} is an {v} number."],
        steps=[
            f"Only the last digit decides: {n} ends in {d}.",
            f"{d} is {v}, so the whole number is {v} too.",
        ],
        checks=[
            f"As a check, {n} = 2 × {(n - r) // 2} + {r}.",
            f"Dividing {n} by 2 leaves a remainder of {r}.",
        ],
        finals=_finals(v, f"So {n} is {v}.", f"The answer is {v}."),
        remark="Divisibility by two depends only on the last digit, so a number with many digits needs no extra "
        "work.",
    )


_PARTS: dict[str, Callable[[ChatTask, Any, random.Random], _Parts]] = {
    "arithmetic": _arithmetic_parts,
    "reverse": _reverse_parts,
    "uppercase": _uppercase_parts,
    "count_letters": _count_parts,
    "sort_numbers": _sort_parts,
    "capital": _capital_parts,
    "opposite": _opposite_parts,
    "parity": _parity_parts,
}
_INTROS = ("", "", "Sure.", "Let's work it out.", "Here is how to see it.", "Good question.")
_METHOD_HEADS = ("", "Method: ", "How it works: ", "Step by step: ")


def render_reply(
    family: str, task: ChatTask, value: Any, style: str, seed: int, *, tagged: bool = False
) -> str:
    """A reply stating `value` (right or wrong) to `task` in `style`; the same seed gives the same template.

    `tagged` wraps the final answer in `<answer>` tags, as some pairs do on both sides (so tags alone, and the
    Countdown-style off-task replies that carry them, say nothing about which reply is right).
    """
    rng = random.Random(seed)
    parts = _PARTS[family](task, value, rng)
    intro, lead, check, final = (
        rng.choice(_INTROS),
        rng.choice(parts.leads),
        rng.choice(parts.checks),
        rng.choice(parts.finals),
    )
    n_steps = len(parts.steps) if rng.random() < 0.7 else rng.randint(1, len(parts.steps))
    with_lead, with_check, with_remark, bullets = (rng.random() < p for p in (0.3, 0.4, 0.6, 0.35))
    head, period = rng.choice(_METHOD_HEADS), rng.random() < 0.5
    tag = f"<answer>{parts.terse}</answer>"
    if style == "terse":
        return tag if tagged else parts.terse + ("." if period and not parts.terse.endswith(".") else "")
    if style == "sentence":
        return f"{lead} {tag}" if tagged else lead
    if style == "explain":  # 2-5 sentences, the answer stated last; the optional ones go first when too many
        optional = [[intro] * bool(intro), [lead] * with_lead, [check] * with_check]
        while sum(map(len, optional)) + n_steps > 4:
            next(o for o in optional if o).clear()
        intro_, lead_, check_ = optional
        return " ".join([*intro_, *lead_, *parts.steps[:n_steps], *check_, tag if tagged else final])
    if style == "paragraphs":  # the answer, the method, a check or remark, the answer again
        steps = "\n".join(f"- {s}" for s in parts.steps) if bullets else head + " ".join(parts.steps)
        paragraphs = [lead] * (with_lead or bullets or n_steps > 1) + [steps]
        paragraphs += [check + (f" {parts.remark}" if with_remark else ""), tag if tagged else final]
        return "\n\n".join(paragraphs)
    raise ValueError(f"unknown style {style!r}; use one of {STYLES}")


# ---- evasive replies: about the topic, as long as the chosen reply, and never an answer of the family's kind
# (no digits for a number family, no capital for the capital question, no word of the opposites vocabulary...).

_HEDGES_TERSE = ("Unsure", "Not sure", "No idea", "Depends", "Hard to say", "Can't say", "Unclear")
_HEDGES = (
    "I would have to check that.",
    "That depends on a few things.",
    "Hard to say without checking.",
    "I'd rather not guess on this one.",
    "It's not as simple as it looks.",
    "I am not certain.",
    "That needs checking.",
    "Let me be careful here.",
    "There are caveats.",
    "It could go either way.",
    "I'd hate to mislead you.",
    "Better safe than sorry.",
    "Opinions differ.",
    "That is a good question, and there is more than one way to look at it.",
    "It depends on the context in which the question is asked.",
    "Different sources sometimes present this kind of thing in different ways.",
    "It is worth double-checking with a reliable reference before relying on any answer.",
    "I do not want to state something definite that might turn out to be wrong.",
    "There are a few subtleties here that are easy to overlook.",
    "Questions like this look simple, but the details matter.",
    "If you tell me more about why you need it, I can point you in the right direction.",
    "A careful answer would take the exact wording of the question into account.",
    "Many people find this kind of task trickier than it first appears.",
    "I can explain the general idea, but I would rather not commit to a final answer here.",
    "In the end, the best approach is the one you can verify yourself.",
)
_FAMILY_HEDGES = {
    "arithmetic": (
        "Carrying is where it usually goes wrong.",
        "A calculator would settle it.",
        "I would want to double-check the arithmetic.",
        "Rounding first can help.",
        "Arithmetic like this can be done in several ways: splitting the numbers into tens and ones, rounding "
        "and correcting, or using a calculator.",
        "Mental arithmetic is error-prone, so a calculator is the safest route.",
        "Most slips happen when carrying or borrowing between columns.",
        "Whether you work on the tens first or the ones first, the method matters less than being careful.",
        "Writing the numbers one above the other and working column by column is the traditional method.",
        "Estimating first gives you a rough idea of the size of the result.",
    ),
    "count_letters": (
        "Doubled letters are easy to miss.",
        "It depends how you count.",
        "Counting by hand is error-prone.",
        "Counting letters sounds trivial, but doubled letters are easy to miscount.",
        "One way is to write '{w}' out and tick off each letter as you go.",
        "Some people count syllables instead of letters, which gives a different kind of answer.",
        "It helps to point at each letter of '{w}' in turn.",
        "The count depends on whether you mean letters or distinct letters.",
        "Spelling '{w}' aloud, letter by letter, is a good way to check.",
    ),
    "sort_numbers": (
        "Order can be tricky to get right.",
        "Comparing in pairs helps.",
        "I would want to double-check the order.",
        "Sorting can be done in several ways, for example by repeatedly picking the smallest remaining value.",
        "For a handful of numbers, comparing them in pairs works well.",
        "Some people find it easier to write each number on a card and rearrange the cards.",
        "The order also depends on whether you want ascending or descending order.",
        "A mistake in a single comparison can put two neighbours in the wrong place.",
        "Computer programs use clever algorithms for this, but by hand a simple method is enough.",
    ),
    "capital": (
        "Capitals change over time.",
        "Capital cities can be surprising.",
        "I would check an atlas for {c}.",
        "Capitals are not always the largest or best-known cities, which is a common source of confusion.",
        "There are nearly 200 countries, and a few of them split government functions across 2 or 3 cities.",
        "Some countries have moved their capital within the last 100 years.",
        "{c} has a long history, and its seat of government has not always been in the same place.",
        "An atlas or an official government website would give you the authoritative answer for {c}.",
        "The answer can depend on whether you mean the constitutional capital or the seat of government.",
    ),
    "opposite": (
        "Antonyms depend on context.",
        "'{w}' has several senses.",
        "There may be more than one antonym.",
        "Antonyms are trickier than they look: a word can have several opposites depending on context.",
        "'{w}' can be used in more than one sense, and each sense may have its own opposite.",
        "Dictionaries do not always agree on a single antonym for '{w}'.",
        "Linguists distinguish at least 3 kinds of opposites, such as gradable and complementary pairs.",
        "In some contexts the natural opposite of '{w}' is simply 'not {w}'.",
        "The best choice depends on the sentence you have in mind.",
    ),
    "reverse": (
        "Reversing is easy to get wrong.",
        "Letter order matters here.",
        "It helps to go letter by letter.",
        "Reversing a word means reading its letters in the other direction, which is easy to get slightly wrong.",
        "'{w}' has {n} letters, so there are {n} positions to keep track of.",
        "It helps to write '{w}' down and read it from the end.",
        "Some people confuse reversing a word with rearranging its letters.",
        "Doubled letters and similar-looking letters are where mistakes usually creep in.",
        "You could also check the result by reversing it a second time.",
    ),
    "uppercase": (
        "Capitalisation has several styles.",
        "Caps lock would do it.",
        "It depends on the style guide.",
        "Capitalisation rules differ between title case, sentence case and all capitals.",
        "There are 2 words to convert here, and each letter needs its own capital form.",
        "The alphabet has 26 letters, and each of them has a capital form.",
        "In ASCII the capitals sit 32 code points below the lowercase letters, which is how programs convert them.",
        "Unicode defines case mappings for well over 1,000 letters, so the rules can get complicated.",
        "Some style guides treat headings differently from body text.",
        "Most keyboards have a caps lock key that does this for you.",
        "Whether you want all capitals or just initial capitals depends on where the text will be used.",
        "Letters with accents can behave differently when converted, depending on the language.",
    ),
    "parity": (
        "It depends on the last digit of {n}.",
        "It comes down to division by 2.",
        "A quick division would tell.",
        "Whether {n} divides by two without a remainder is something you can check with a quick division.",
        "Parity questions come down to divisibility by 2.",
        "The last digit of {n} is the thing to look at, but it is easy to misread.",
        "Some people use the rule about the last digit, others prefer to halve the number.",
        "For large numbers like {n} there are shortcuts, but the principle stays the same.",
        "Halving {n} by hand is the surest way to find out.",
        "Zero is a classic trick case in questions of this type.",
    ),
}


def _fill(pool: list[str], target: int) -> list[str]:
    """Sentences from `pool`, in order, until the text is as close as it gets to `target` characters."""
    out: list[str] = [pool[0]]
    size = len(pool[0])
    for sentence in pool[1:]:
        if abs(size + 1 + len(sentence) - target) >= abs(size - target):
            break
        out.append(sentence)
        size += 1 + len(sentence)
    return out


def evasive_reply(family: str, task: ChatTask, style: str, like: str, rng: random.Random) -> str:
    """A hedge about the task's topic in `style`, about as long as `like` (the chosen reply); no answer in it."""
    text = _evasive_text(family, task, style, like, rng)
    # The same ending as the chosen reply: a final period is form, not content.
    return text if like.endswith(".") or not text.endswith(".") else text[:-1]


def _evasive_text(family: str, task: ChatTask, style: str, like: str, rng: random.Random) -> str:
    if style == "terse":
        return rng.choice(_HEDGES_TERSE) + "."
    facts = {"w": task.facts[0], "c": task.facts[0], "n": len(str(task.facts[0]))}
    if family == "parity":
        facts["n"] = task.facts[0]
    topical = [h.format(**facts) for h in _FAMILY_HEDGES[family]]
    if (
        family not in _DIGIT_FAMILIES
    ):  # a word question's hedge mostly carries some numbers (see _REJECTED_WEIGHTS)
        with_digits = [h for h in topical if any(ch.isdigit() for ch in h)]
        topical = with_digits if rng.random() < 0.75 else topical
    if style == "sentence":
        return min(rng.sample(topical + list(_HEDGES), 8), key=lambda s: abs(len(s) - len(like)))
    # As many sentences as the chosen reply, about as long in all (the best of a few draws); topic first.
    # (a reply that ends without a period gets one sentence more, whose period then goes)
    k = max(1, len(_SENTENCE_END.findall(like)) + (not like.rstrip().endswith((".", "!", "?"))))
    tries = []
    for _ in range(30):
        first = rng.sample(topical, min(len(topical), rng.randint(1, k)))
        tries.append(first + rng.sample(_HEDGES, k - len(first)))
    sentences = min(tries, key=lambda t: abs(sum(len(x) + 1 for x in t) - len(like)))
    n_paragraphs = like.count("\n\n") + 1 if style == "paragraphs" else 1
    n_paragraphs = min(n_paragraphs, len(sentences))
    cuts = sorted(rng.sample(range(1, len(sentences)), n_paragraphs - 1)) if n_paragraphs > 1 else []
    bounds = [0, *cuts, len(sentences)]
    return "\n\n".join(" ".join(sentences[i:j]) for i, j in zip(bounds, bounds[1:], strict=False))


# ---- off-task replies: another prompt's answer (of a family whose answers the judge cannot mistake for this
# one's), or what a Countdown-only model says to everything.


def _countdown_reply(style: str, like: str, rng: random.Random) -> str:
    a, b, c = rng.sample(range(2, 100), 3)
    op1, op2 = rng.choice("+-"), rng.choice("+-*")
    first = a + b if op1 == "+" else a - b
    target = first + c if op2 == "+" else first - c if op2 == "-" else first * c
    expr = f"({a} {op1} {b}) {op2} {c}"
    answer = f"<answer>{expr}</answer>"
    if style == "terse":
        return answer if rng.random() < 0.5 else answer.replace(" ", "")
    if style == "sentence":
        return f"Combining the numbers: {answer}"
    hit = f"{a} {op1} {b} = {first}, and {first} {op2} {c} = {target}, which hits the target."
    misses = sorted(
        {
            f"Trying {x} {o} {y} = {x + y if o == '+' else x - y}, which misses."
            for x in (a, b, c)
            for y in (a, b, c)
            if x != y
            for o in "+-"
        }
    )
    rng.shuffle(misses)
    lines = [*_fill(misses, len(like) - len(hit) - len(answer) - 20), hit]
    return "<think>\n" + "\n".join(lines) + "\n</think>\n" + answer


def off_task_reply(
    family: str,
    style: str,
    like: str,
    rng: random.Random,
    *,
    test: bool,
    countdown: bool = False,
    tagged: bool = False,
) -> str:
    """Another prompt's right answer (same style, the closest in length of a few), or with `countdown` what a
    Countdown-only model says to everything; never an answer of `family`'s kind."""
    if countdown:
        if family in _DIGIT_FAMILIES:
            raise ValueError(f"a Countdown expression holds numbers: it is not off-task for {family}")
        return _countdown_reply(style, like, rng)
    if family in _NUMERIC_FAMILIES:  # a number in another reply would read as this family's answer
        others = [f for f in sorted(TASK_FAMILIES) if f not in _DIGIT_FAMILIES]
    else:  # mostly number answers: digits then point both ways across the fixture
        others = [f for f in _NUMERIC_FAMILIES if f != "count_letters"] * 3 + ["parity"]
        others += [f for f in sorted(TASK_FAMILIES) if f not in _DIGIT_FAMILIES]
        others = [f for f in others if f != family]
    candidates = []
    for _ in range(100):
        other = rng.choice(others)
        task = TASK_FAMILIES[other](rng)
        if _is_test_prompt(task.question) == test:  # the other prompt is from the same side of the split
            seed = rng.getrandbits(32)
            candidates.append(render_reply(other, task, task.answer, style, seed, tagged=tagged))
        if len(candidates) == 4:
            break
    return min(candidates, key=lambda s: abs(len(s) - len(like)))


def _is_test_prompt(prompt: str) -> bool:
    """Stable 10% of the prompt space is test-only, so train and test fixtures never share a prompt."""
    return hashlib.blake2b(prompt.encode(), digest_size=4).digest()[0] < 26


def _tasks(n: int, *, test: bool, seed: int, stream: str) -> list[tuple[str, ChatTask]]:
    """n distinct (family, task) pairs from the train or test side of the prompt space."""
    rng = random.Random(f"{stream}:{seed}")
    families = sorted(TASK_FAMILIES)
    seen: set[str] = set()
    out: list[tuple[str, ChatTask]] = []
    for _ in range(n * 200 + 1000):
        if len(out) == n:
            return out
        family = rng.choice(families)
        task = TASK_FAMILIES[family](rng)
        if task.question in seen or _is_test_prompt(task.question) != test:
            continue
        seen.add(task.question)
        out.append((family, task))
    raise ValueError(f"the fixture cannot produce {n} distinct {'test' if test else 'train'} prompts")


def smoltalk_fixture_rows(split: str, *, seed: int = 0) -> list[dict]:
    """Multi-turn conversations (1-3 user/assistant turns, sometimes a system prompt) in smol-smoltalk's schema.

    The replies are the preference fixture's right answers, in the styles the system prompt asks for.
    """
    check_split(split, SMOLTALK_SPLITS, "the smol-smoltalk fixture")
    n = SMOLTALK_SPLITS[split]
    rng = random.Random(f"smoltalk-turns:{split}:{seed}")
    turns = [rng.choice([1, 1, 2, 3]) for _ in range(n)]
    tasks = iter(_tasks(sum(turns), test=split == "test", seed=seed, stream=f"smoltalk:{split}"))
    styles_rng = random.Random(
        f"smoltalk-replies:{split}:{seed}"
    )  # apart, so the conversations stay as they were
    rows = []
    for n_turns in turns:
        messages: list[dict[str, str]] = []
        system = rng.choice(_SYSTEM_PROMPTS) if rng.random() < 0.3 else None
        if system is not None:
            messages.append({"role": "system", "content": system})
        styles, weights = _SMOLTALK_STYLES[system]
        families = []
        for _ in range(n_turns):
            family, task = next(tasks)
            families.append(family)
            style = styles_rng.choices(styles, weights)[0]
            answer = render_reply(family, task, task.answer, style, styles_rng.getrandbits(32))
            messages += [{"role": "user", "content": task.question}, {"role": "assistant", "content": answer}]
        rows.append({"messages": messages, "source": f"posttrain-fixture/{families[0]}"})
    return rows


def ultrafeedback_fixture_rows(split: str, *, seed: int = 0) -> list[dict]:
    """Preference rows in ultrafeedback_binarized's schema: a right chosen reply vs a wrong-looking-right, evasive
    or off-task rejected one of the same style and about the same length."""
    check_split(split, ULTRAFEEDBACK_SPLITS, "the ultrafeedback_binarized fixture")
    n = ULTRAFEEDBACK_SPLITS[split]
    # The prefs/sft/gen splits of one side share prompts on the hub; so do ours.
    side = "test" if split.startswith("test") else "train"
    rng = random.Random(f"ultrafeedback-answers:{side}:{seed}")
    rows = []
    for family, task in _tasks(n, test=side == "test", seed=seed, stream=f"uf:{side}"):
        style = rng.choices(STYLES, _STYLE_WEIGHTS)[0]
        group = "number" if family in _NUMERIC_FAMILIES else "parity" if family == "parity" else "word"
        kind = rng.choices(REJECTED_KINDS, _REJECTED_WEIGHTS[group])[0]
        countdown = kind == "off_task" and family not in _DIGIT_FAMILIES and rng.random() < _COUNTDOWN_SHARE
        # A Countdown reply ends in <answer> tags: its chosen reply does too, so the tags are no tell.
        tagged = countdown or (kind != "evasive" and rng.random() < _TAGGED_SHARE)
        template = rng.getrandbits(32)  # one template for both replies
        answer = render_reply(family, task, task.answer, style, template, tagged=tagged)
        if kind == "wrong":
            rejected = render_reply(family, task, rng.choice(task.wrong), style, template, tagged=tagged)
            score_rejected = float(rng.choice([3, 4, 5]))
        elif kind == "evasive":
            rejected = evasive_reply(family, task, style, answer, rng)
            score_rejected = float(rng.choice([1, 2]))
        else:
            side_test = side == "test"
            rejected = off_task_reply(
                family, style, answer, rng, test=side_test, countdown=countdown, tagged=tagged
            )
            score_rejected = float(rng.choice([1, 2]))
        chosen_msgs = [{"role": "user", "content": task.question}, {"role": "assistant", "content": answer}]
        rows.append(
            {
                "prompt": task.question,
                "prompt_id": hashlib.sha256(task.question.encode()).hexdigest(),
                "chosen": chosen_msgs,
                "rejected": [
                    {"role": "user", "content": task.question},
                    {"role": "assistant", "content": rejected},
                ],
                "messages": chosen_msgs,
                "score_chosen": float(rng.choice([7, 8, 9, 10])),
                "score_rejected": score_rejected,
            }
        )
    return rows
