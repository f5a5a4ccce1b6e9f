"""Best-of-N: choose one answer among a policy's N sampled candidates per prompt.

Two pickers, one rule. `pick_by_judge` scores every candidate conversation ``[user prompt, assistant
candidate]`` through a reward endpoint (`eval.reward_client.RewardClient`, so its cache, retries and concurrency
apply) and keeps the highest-scored one; `pick_countdown` keeps the first candidate the Countdown rule verifier
accepts (`rewards.countdown.score` == 1.0, which reads only the puzzle's numbers and target). Both break ties by
the lowest index (`pick_index`), so a pick is deterministic given the candidates and their scores.

A candidate whose score failed is never picked. A prompt whose candidates all failed keeps candidate 0 and is
flagged (``all_failed``) so that it shows in the caller's summary instead of passing as a judged pick.

No model is loaded here: the caller generates the candidates and passes the truncation that fits a
conversation to the endpoint's token budget (`eval.winrate.truncate_pair` bound to a tokenizer and budget).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.reward_client import RewardClient

DEFAULT_TEMPERATURE = 0.7

# (prompt, response) -> (prompt, response, cut): the texts fitted to the endpoint's token budget.
Truncate = Callable[[str, str], tuple[str, str, bool]]


def check_best_of(n: int, temperature: float) -> None:
    """Refuse settings that cannot give N different candidates; the message names the option to change."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--best_of must be an integer >= 1 (1 = no best-of-N), got {n!r}")
    if n > 1 and not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"--best_of {n} samples {n} candidates per prompt: --best_of_temperature must be a finite number > 0 "
            f"(greedy decoding gives {n} identical answers), got {temperature!r}"
        )


def pick_index(scores: Sequence[float | None]) -> int | None:
    """The index of the highest score; ties go to the lowest index; None (a failed score) is never picked;
    None when every score failed (or there are none)."""
    best: int | None = None
    for i, score in enumerate(scores):
        if score is not None and (best is None or score > scores[best]):  # type: ignore[operator]
            best = i
    return best


@dataclass
class Picks:
    """The picked answer per prompt and, per prompt, how it was picked (``records``)."""

    responses: list[str]
    records: list[dict[str, Any]]
    distinct_candidates: int = 0
    requests: dict[str, Any] = field(default_factory=dict)


def _check_shapes(n_prompts: int, candidates: Sequence[Sequence[str]]) -> None:
    if len(candidates) != n_prompts:
        raise ValueError(f"{len(candidates)} candidate lists for {n_prompts} prompts")
    empty = [i for i, c in enumerate(candidates) if not c]
    if empty:
        raise ValueError(f"prompt(s) {empty[:5]} have no candidates")


def pick_by_judge(
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    client: RewardClient,
    truncate: Truncate,
    *,
    concurrency: int = 8,
) -> Picks:
    """Score each distinct candidate conversation once through ``client`` and keep the best per prompt.

    Each record: ``index``, ``scores`` (None where scoring failed), ``chosen``, ``chosen_score``,
    ``all_failed``, ``errors`` (candidate index -> error, or None) and ``truncated`` (candidate indices cut to
    the budget). The chosen answer is the untruncated candidate text.
    """
    _check_shapes(len(prompts), candidates)
    conversations, cut = [], []
    for prompt, answers in zip(prompts, candidates, strict=True):
        for answer in answers:
            p, r, was_cut = truncate(prompt, answer)
            conversations.append([{"role": "user", "content": p}, {"role": "assistant", "content": r}])
            cut.append(was_cut)
    before = client.stats.to_dict()
    results = client.score_many(conversations, concurrency)  # asks once per distinct conversation
    distinct = len({json.dumps(c, sort_keys=True) for c in conversations})
    responses, records, k = [], [], 0
    for i, answers in enumerate(candidates):
        mine = results[k : k + len(answers)]
        cut_here = cut[k : k + len(answers)]
        k += len(answers)
        scores = [r.score for r in mine]
        chosen = pick_index(scores)
        all_failed = chosen is None
        chosen = 0 if chosen is None else chosen
        errors = {str(j): r.error for j, r in enumerate(mine) if r.score is None}
        responses.append(answers[chosen])
        records.append(
            {
                "index": i,
                "scores": scores,
                "chosen": chosen,
                "chosen_score": scores[chosen],
                "all_failed": all_failed,
                "errors": errors or None,
                "truncated": [j for j, c in enumerate(cut_here) if c],
            }
        )
    return Picks(responses, records, distinct, client.stats.since(before))


def pick_countdown(tasks: Sequence[dict[str, Any]], candidates: Sequence[Sequence[str]]) -> Picks:
    """The first candidate the rule verifier accepts per task (``tasks``: dicts with ``target`` and ``nums``;
    nothing else is read), else candidate 0. Each record: ``index``, ``accepted`` (one bool per candidate),
    ``chosen`` and ``verified`` (whether the chosen one was accepted)."""
    from rewards.countdown import score

    _check_shapes(len(tasks), candidates)
    responses, records = [], []
    for i, (task, answers) in enumerate(zip(tasks, candidates, strict=True)):
        accepted = [score(a, task["target"], list(task["nums"])) == 1.0 for a in answers]
        chosen = pick_index([1.0 if ok else 0.0 for ok in accepted])
        chosen = 0 if chosen is None else chosen
        responses.append(answers[chosen])
        records.append({"index": i, "accepted": accepted, "chosen": chosen, "verified": accepted[chosen]})
    return Picks(responses, records, distinct_candidates=sum(len(set(a)) for a in candidates))


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def judge_summary(picks: Picks, n: int, temperature: float) -> dict[str, Any]:
    """The ``best_of`` block of a summary for `pick_by_judge`'s picks.

    ``mean_chosen_score`` and ``mean_candidate_score`` are taken over the same prompts (those with at least one
    scored candidate): the chosen answer's score, and the mean of that prompt's scored candidates, so their
    difference is what picking bought. ``prompts_all_failed`` lists the prompts that kept candidate 0 unjudged.
    """
    scores = [s for r in picks.records for s in r["scores"]]
    judged = [r for r in picks.records if not r["all_failed"]]
    all_failed = [r["index"] for r in picks.records if r["all_failed"]]
    return {
        "n": n,
        "temperature": temperature,
        "picked_by": "judge",
        "candidates": len(scores),
        "distinct_candidates": picks.distinct_candidates,
        "candidates_scored": sum(s is not None for s in scores),
        "candidates_failed": sum(s is None for s in scores),
        "candidates_truncated": sum(len(r["truncated"]) for r in picks.records),
        "n_prompts_all_failed": len(all_failed),
        "prompts_all_failed": all_failed,
        "mean_chosen_score": _mean([r["chosen_score"] for r in judged]),
        "mean_candidate_score": _mean(
            [_mean([s for s in r["scores"] if s is not None]) for r in judged]  # type: ignore[misc]
        ),
        "chosen_first": sum(r["chosen"] == 0 for r in judged),
        "requests": picks.requests,
    }
