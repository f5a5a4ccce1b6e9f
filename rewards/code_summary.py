"""Code summaries as a TRL reward: ROUGE-L against the reference docstring, times a length window.

``code_summary`` = ROUGE-L F1 (`rouge-score`, Porter stemming) between the completion and the row's
``reference`` column, times `rewards.rules.window_score` of the completion's word count over
[``MIN_WORDS``, ``MAX_WORDS``]. Overlap alone would pay a reply that pastes the code or lists every word it
might need; the window takes that away (a reply of twice ``MAX_WORDS`` or more scores 0), and a one-word reply
gets a fraction of its overlap.

Model output is untrusted: a reply is scored on its first ``MAX_SCORED_CHARS`` characters only (ROUGE-L's
longest common subsequence is quadratic), one of ``2 * MAX_WORDS`` words or more is not scored at all, and a
missing or non-text reference is an error naming the column, not a silent 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from rewards.format import check_batch, check_lengths, completion_text
from rewards.rules import window_score, word_count

MIN_WORDS, MAX_WORDS = 3, 25
MAX_SCORED_CHARS = 1000


@lru_cache(maxsize=1)
def _scorer():
    import sys

    from absl import logging as absl_logging
    from rouge_score import rouge_scorer

    # rouge-score imports absl, whose log handler keeps the sys.stderr of that moment; after a swap of sys.stderr
    # (a test's capture, a server's redirect) it would write to a closed stream and take the process down.
    absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(reference: str, summary: str) -> float:
    """ROUGE-L F1 of ``summary`` against ``reference`` (0.0 when either has no word)."""
    return float(_scorer().score(reference, summary[:MAX_SCORED_CHARS])["rougeL"].fmeasure)


def length_factor(summary: str) -> float:
    """The length window's score of a summary's word count (0 at twice ``MAX_WORDS`` or more)."""
    return window_score(word_count(summary), MIN_WORDS, MAX_WORDS)


def summary_score(summary: str, reference: str) -> float:
    """The reward of one summary: ROUGE-L F1 times the length window's score (ROUGE-L skipped where that is 0)."""
    factor = length_factor(summary)
    return 0.0 if factor == 0.0 else rouge_l(reference, summary.strip()) * factor


def code_summary_reward(
    completions: Sequence[Any], reference: Sequence[Any] | None = None, **kwargs: Any
) -> list[float]:
    """TRL reward: how close each completion is to the row's ``reference`` summary, in [0, 1]."""
    if reference is None:
        raise ValueError(
            "code_summary reward: the dataset has no `reference` column (code summarisation prompts carry the "
            "docstring summary in it: dataset_name codesum); use another reward for these prompts"
        )
    check_batch("code_summary", completions=completions, reference=reference)
    check_lengths("code_summary", completions, references=reference)
    scores = []
    for completion, gold in zip(completions, reference, strict=True):
        if not isinstance(gold, str):
            raise TypeError(
                f"code_summary reward: each `reference` must be a string, got {type(gold).__name__}"
            )
        scores.append(summary_score(completion_text(completion), gold))
    return scores
