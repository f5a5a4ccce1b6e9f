"""A verifiable judge for the chat fixture's task families: the reply's LAST stated answer decides.

`verify(prompt, reply)` recognises the prompt with anchored regexes mirroring the question templates of
`posttrain.chat_data` (a system prompt may precede the question) and reads the last answer of the family's kind:
the last number (arithmetic, count_letters), the last list of as many numbers as the prompt gives (sort_numbers),
the last known capital, the last word of the opposites vocabulary other than the prompt's, the last even/odd, the
last anagram of the word (reverse), the last occurrence of the phrase, which must be all capitals (uppercase).
Scores:

- correct: 1.0, minus a concision penalty (0 up to 120 words, growing linearly to 0.2 at 600 words and beyond)
  and minus 0.2 when the reply is highly repetitive (one line or sentence of 8+ characters 3+ times): 0.6 to 1.0;
- wrong: 0.0 (an answer of the family's kind, but not the right one);
- no_answer: -1.0 (nothing of the family's kind: empty, off-topic, a Countdown expression for a word task).

A prompt of no fixture family raises `UnknownPromptError`. Hostile text is bounded: only the first
`MAX_REPLY_CHARS` characters of a reply are read (a huge reply gets the full length penalty), every regex runs
in linear time (no ambiguous nested quantifiers), nothing is evaluated. The vocabularies (capitals, opposites)
live here and the fixture imports them, so both agree.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

JUDGE_ID = "verifiable-judge-v1"
MAX_REPLY_CHARS = 20_000
MAX_DIGITS = 40  # longer numbers are read as "a number, not the answer"
MAX_PROMPT_TAIL = 1_000  # the question ends the prompt; a system prompt before it is not read
CONCISE_WORDS, VERBOSE_WORDS, MAX_LENGTH_PENALTY = 120, 600, 0.2
REPETITION_PENALTY, REPEATS, MIN_REPEATED_CHARS = 0.2, 3, 8
SCORES = {"correct": 1.0, "wrong": 0.0, "no_answer": -1.0}

CAPITALS: dict[str, str] = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Greece": "Athens",
    "Germany": "Berlin",
    "Portugal": "Lisbon",
    "Austria": "Vienna",
    "Ireland": "Dublin",
    "Poland": "Warsaw",
    "Chile": "Santiago",
}
# word -> its canonical opposite (the fixture's answer)
OPPOSITES: dict[str, str] = {
    "hot": "cold",
    "tall": "short",
    "fast": "slow",
    "happy": "sad",
    "open": "closed",
    "early": "late",
    "light": "dark",
    "full": "empty",
    "strong": "weak",
    "loud": "quiet",
    "rich": "poor",
    "young": "old",
}
# Other right opposites a careful answer may give (another sense of the word, a synonym of the canonical one).
OPPOSITE_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "light": ("heavy",),
    "open": ("shut",),
    "loud": ("soft",),
    "happy": ("unhappy",),
}
# Near misses the fixture uses as wrong answers: words of the same scale that are not the opposite.
OPPOSITE_DECOYS: dict[str, tuple[str, ...]] = {
    "hot": ("warm", "cool"),
    "tall": ("small", "big"),
    "strong": ("small",),
    "rich": ("big",),
}
OPPOSITE_VOCABULARY = frozenset(
    {w for pair in OPPOSITES.items() for w in pair}
    | {w for alts in OPPOSITE_ALTERNATIVES.values() for w in alts}
    | {w for decoys in OPPOSITE_DECOYS.values() for w in decoys}
)

Status = Literal["correct", "wrong", "no_answer"]


class UnknownPromptError(ValueError):
    """The prompt is not one of the fixture's task families, so there is no verifiable answer."""


@dataclass(frozen=True)
class Verdict:
    family: str | None
    status: Status
    score: float
    reason: str


# ----------------------------------------------------------------------------------------------------------
# Prompts: anchored at the end, mirroring posttrain.chat_data's question templates
# ----------------------------------------------------------------------------------------------------------

_Q = r"['‘’\"]"  # the quotes around a word; the fixture uses straight single quotes
_LEAD = r"(?:\A|(?<=\s))"  # the question starts the prompt or follows a system prompt
_END = r"\s*\Z"
_PROMPTS: dict[str, re.Pattern[str]] = {
    "arithmetic": re.compile(
        _LEAD + r"(?:What is|Compute|Calculate) (-?\d{1,9}) ([-+×*]) (-?\d{1,9})(?:\?|\.|, please\.)" + _END
    ),
    "reverse": re.compile(_LEAD + rf"Reverse the word {_Q}([A-Za-z]{{1,40}}){_Q}\." + _END),
    "uppercase": re.compile(_LEAD + rf"Write {_Q}([A-Za-z ]{{1,200}}){_Q} in capital letters\." + _END),
    "count_letters": re.compile(
        _LEAD + rf"How many letters are in the word {_Q}([A-Za-z]{{1,40}}){_Q}\?" + _END
    ),
    "sort_numbers": re.compile(
        _LEAD + r"Sort these numbers from smallest to largest: ([-\d, ]{1,400})\." + _END
    ),
    "capital": re.compile(_LEAD + r"What is the capital of ([A-Z][A-Za-z ]{0,40})\?" + _END),
    "opposite": re.compile(_LEAD + rf"What is the opposite of {_Q}([A-Za-z]{{1,40}}){_Q}\?" + _END),
    "parity": re.compile(_LEAD + r"Is (-?\d{1,30}) even or odd\?" + _END),
}
FAMILIES = tuple(_PROMPTS)
_SORT_ITEM = re.compile(r"-?\d{1,9}")


@dataclass(frozen=True)
class _Question:
    family: str
    answer: Any  # int, str, tuple of ints, or frozenset of words (opposite)
    subject: str = ""  # the prompt's word or phrase, where the family has one


def parse_prompt(prompt: str) -> _Question:
    """The family and right answer of a fixture prompt; `UnknownPromptError` for any other prompt."""
    tail = prompt.rstrip()[-MAX_PROMPT_TAIL:]
    for family, pattern in _PROMPTS.items():
        m = pattern.search(tail)
        if m is None:
            continue
        if family == "arithmetic":
            a, op, b = int(m[1]), m[2], int(m[3])
            value = a + b if op == "+" else a - b if op == "-" else a * b
            return _Question(family, value)
        if family == "reverse":
            return _Question(family, m[1][::-1].lower(), m[1].lower())
        if family == "uppercase":
            words = m[1].split()
            if not words:
                break
            return _Question(family, " ".join(words).upper(), " ".join(words))
        if family == "count_letters":
            return _Question(family, len(m[1]), m[1])
        if family == "sort_numbers":
            items = [s.strip() for s in m[1].split(",")]
            if len(items) < 2 or not all(_SORT_ITEM.fullmatch(s) for s in items):
                break
            return _Question(family, tuple(sorted(int(s) for s in items)))
        if family == "capital":
            if m[1] not in CAPITALS:
                break
            return _Question(family, CAPITALS[m[1]], m[1])
        if family == "opposite":
            word = m[1].lower()
            if word not in OPPOSITES:
                break
            return _Question(family, frozenset((OPPOSITES[word], *OPPOSITE_ALTERNATIVES.get(word, ()))), word)
        if family == "parity":
            return _Question(family, "even" if int(m[1]) % 2 == 0 else "odd")
    raise UnknownPromptError(
        "the prompt is not one of the verifiable fixture families "
        f"({', '.join(FAMILIES)}; see posttrain.chat_data); use a reward model for other prompts"
    )


# ----------------------------------------------------------------------------------------------------------
# Replies: the last answer of the family's kind
# ----------------------------------------------------------------------------------------------------------

# A number not glued to a word or a decimal point before it; thousands groups (9,801) and decimals (65.0) count.
_NUMBER = re.compile(r"(?<![\w.])([-−]?)(\d{1,3}(?:,\d{3})+(?!\d|,\d)|\d+)(?:\.(\d+))?(?!\w)")
_INTEGER = re.compile(r"(?<![\w.])[-−]?\d+(?![\w.]\d|\w)")
# What may stand between two numbers of one list: commas, "and", "<", arrows, bullets.
_LIST_GAP = re.compile(r"\s*(?:[,;<≤→*•-]|->)?\s*(?:and\s+)?")
_WORD = re.compile(r"[A-Za-z]+")
_PARITY = re.compile(r"(?<![A-Za-z])(even|odd)(?![A-Za-z])", re.IGNORECASE)
_CAPITAL_NAMES = re.compile(
    r"(?<![A-Za-z])(" + "|".join(sorted(CAPITALS.values())) + r")(?![A-Za-z])", re.IGNORECASE
)
_NEVER_RIGHT = Fraction(1, 3)  # stands for a number too long to read: no integer answer equals it
_SEGMENT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = deque(pattern.finditer(text), maxlen=1)
    return last[0] if last else None


def _last_number(text: str) -> tuple[Fraction, str] | None:
    last = _last_match(_NUMBER, text)
    if last is None:
        return None
    sign, digits, decimals = last.groups()
    digits, decimals = digits.replace(",", ""), (decimals or "").rstrip("0")
    # A number, but no answer is that long (and int() refuses 4300+ digits).
    if len(digits) + len(decimals) > MAX_DIGITS:
        return _NEVER_RIGHT, last.group()
    value = Fraction(int(digits)) + (Fraction(int(decimals), 10 ** len(decimals)) if decimals else 0)
    return (-value if sign else value), last.group()


def _last_list(text: str, k: int) -> list[int | None] | None:
    """The last run of at least `k` integers written as one list (commas, "and", arrows, bullets between)."""
    best: list[int | None] | None = None
    run: list[int | None] = []
    end = -1
    for m in _INTEGER.finditer(text):
        raw = m.group().replace("−", "-")
        value = int(raw) if len(raw) <= MAX_DIGITS else None  # too long for any list item: never sorted
        if run and m.start() - end <= 12 and _LIST_GAP.fullmatch(text, end, m.start()):
            run.append(value)
        else:
            if len(run) >= k:
                best = run
            run = [value]
        end = m.end()
    if len(run) >= k:
        best = run
    return best


def _last_phrase(text: str, phrase: str) -> str | None:
    words = [re.escape(w) for w in phrase.split()]
    pattern = re.compile(r"(?<![A-Za-z])" + r"\s+".join(words) + r"(?![A-Za-z])", re.IGNORECASE)
    last = _last_match(pattern, text)
    return None if last is None else last.group()


def _find_answer(q: _Question, text: str) -> tuple[Any, str] | None:
    """(the last answer of the family's kind, how it was written) or None."""
    if q.family in ("arithmetic", "count_letters"):
        return _last_number(text)
    if q.family == "sort_numbers":
        run = _last_list(text, len(q.answer))
        return None if run is None else (tuple(run), ", ".join(map(str, run)))
    if q.family == "capital":
        found = [m.group() for m in _CAPITAL_NAMES.finditer(text)]
        return (found[-1].capitalize(), found[-1]) if found else None
    if q.family == "opposite":
        found = [w.lower() for w in _WORD.findall(text)]
        found = [w for w in found if w in OPPOSITE_VOCABULARY and w != q.subject]
        return (found[-1], found[-1]) if found else None
    if q.family == "parity":
        found = _PARITY.findall(text)
        return (found[-1].lower(), found[-1]) if found else None
    if q.family == "reverse":
        letters, palindrome = sorted(q.subject), q.subject == q.subject[::-1]
        found = None
        for w in _WORD.findall(text):
            low = w.lower()
            if len(low) == len(letters) and sorted(low) == letters and (palindrome or low != q.subject):
                found = w
        return None if found is None else (found.lower(), found)
    if q.family == "uppercase":
        found = _last_phrase(text, q.subject)
        if found is None:
            return None
        return (" ".join(found.split()).upper() if found == found.upper() else None, found)
    raise AssertionError(q.family)


def _is_right(q: _Question, value: Any) -> bool:
    if q.family == "opposite":
        return value in q.answer
    return value == q.answer


def _penalties(reply: str, text: str) -> tuple[float, list[str]]:
    # Words of the whole reply, not only the part read; far beyond the part read it is verbose anyway.
    words = len(reply.split()) if len(reply) <= 4 * MAX_REPLY_CHARS else VERBOSE_WORDS
    notes = []
    length = MAX_LENGTH_PENALTY * min(
        1.0, max(0.0, (words - CONCISE_WORDS) / (VERBOSE_WORDS - CONCISE_WORDS))
    )
    if length > 0:
        notes.append(f"{words} words: -{length:.3f}")
    counts = Counter(
        seg
        for seg in (" ".join(s.lower().split()) for s in _SEGMENT_SPLIT.split(text))
        if len(seg) >= MIN_REPEATED_CHARS
    )
    repeated = max(counts.values(), default=0)
    penalty = length
    if repeated >= REPEATS:
        penalty += REPETITION_PENALTY
        notes.append(f"a line repeated {repeated} times: -{REPETITION_PENALTY}")
    return penalty, notes


def _check_str(value: Any, name: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")


def verify(prompt: str, reply: str) -> Verdict:
    """Judge `reply` to a fixture `prompt` (see the module docstring); `UnknownPromptError` for other prompts."""
    _check_str(prompt, "prompt")
    _check_str(reply, "reply")
    q = parse_prompt(prompt)
    text = reply[:MAX_REPLY_CHARS]
    found = _find_answer(q, text)
    if found is None:
        return Verdict(q.family, "no_answer", SCORES["no_answer"], f"no {q.family} answer in the reply")
    value, written = found
    shown = written if len(written) <= 60 else written[:57] + "..."
    if value is None or not _is_right(q, value):
        return Verdict(q.family, "wrong", SCORES["wrong"], f"last answer {shown!r} is wrong")
    penalty, notes = _penalties(reply, text)
    reason = f"last answer {shown!r} is right" + (f" ({'; '.join(notes)})" if notes else "")
    return Verdict(q.family, "correct", round(SCORES["correct"] - penalty, 6), reason)


def score_conversation(messages: Sequence[dict[str, Any]]) -> float:
    """The score of the last assistant message as a reply to the last user message (no user: unknown prompt)."""
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
    prompt = reply = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TypeError(f"messages[{i}] must be a dict, got {type(message).__name__}")
        content = message.get("content")
        if message.get("role") in ("user", "assistant"):
            _check_str(content, f"messages[{i}]['content']")
        if message.get("role") == "user":
            prompt = content
        elif message.get("role") == "assistant":
            reply = content
    return verify(prompt or "", reply or "").score
