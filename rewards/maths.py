"""Free-form maths correctness as a TRL reward (GSM8K and the like), checked with HF's `math-verify`.

The completion's answer is the body of its last ``<answer>…</answer>`` block (the reasoning format the maths
recipes teach: ``<think>`` steps, then the answer), or, without one, the number after a final ``####`` (GSM8K's
own convention). `math_verify.parse` reads it (plain numbers, LaTeX, ``\\boxed{}``, units and commas normalised)
and `math_verify.verify` compares it with the ``answer`` column. 1.0 when they agree, else 0.0.

Model output is untrusted: an answer longer than ``MAX_ANSWER_CHARS`` scores 0 unparsed, every failure of the
parser scores 0 (a reward must never stop training), and math-verify's own time limits (signal-based, so only in
the main thread) bound each parse and comparison.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

from rewards.format import check_batch, check_lengths, completion_text, extract_answer

MAX_ANSWER_CHARS = 200
TIMEOUT_S = 3
_HASHES = re.compile(r"####\s*([^\n]{1,200})\s*$")


def final_answer(text: str) -> str | None:
    """The answer a completion commits to: its last ``<answer>`` body, else a trailing ``#### ...`` line."""
    answer = extract_answer(text)
    if answer is None:
        match = _HASHES.search(text.rstrip())
        answer = match.group(1) if match else None
    if answer is None:
        return None
    answer = answer.strip()
    return answer or None


def _timeout() -> int | None:
    # math-verify times out with SIGALRM, which only the main thread may set.
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def is_correct(answer: str, gold: Any) -> bool:
    """Whether ``answer`` equals ``gold`` (a number or a string math-verify can read)."""
    from math_verify import parse, verify

    if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS:
        return False
    gold_text = str(gold).strip()
    if not gold_text or len(gold_text) > MAX_ANSWER_CHARS:
        return False
    timeout = _timeout()
    try:
        gold_parsed = parse(gold_text, parsing_timeout=timeout)
        answer_parsed = parse(answer, parsing_timeout=timeout)
        if not gold_parsed or not answer_parsed:
            return False
        return bool(verify(gold_parsed, answer_parsed, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - a reward must never crash training
        return False


def math_reward(
    completions: Sequence[Any], answer: Sequence[Any] | None = None, **kwargs: Any
) -> list[float]:
    """TRL reward: 1.0 when the completion's final answer equals the row's ``answer``, else 0.0."""
    if answer is None:
        raise ValueError(
            "math reward: the dataset has no `answer` column (GSM8K-style prompts carry the gold answer in it); "
            "use another reward for these prompts"
        )
    check_batch("math", completions=completions, answer=answer)
    check_lengths("math", completions, answers=answer)
    scores = []
    for completion, gold in zip(completions, answer, strict=True):
        given = final_answer(completion_text(completion))
        scores.append(1.0 if given is not None and is_correct(given, gold) else 0.0)
    return scores
