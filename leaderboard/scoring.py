"""Server-side scoring: the same rules for every team, run in the background from a durable queue.

Countdown: `rewards.countdown.score` on each hidden task's numbers and target (the submission's copy of them is
checked on upload, never trusted): accuracy (score 1.0) and format rate (an answer span, score > 0). UltraFeedback:
the judge endpoint scores the submitted answer and the hidden reference answer as ``[user prompt, assistant
answer]``; a win when the answer's reward is higher (ties and losses as in `eval.winrate`). A hidden item the
submission leaves out counts as wrong (a loss), so a partial submission cannot raise its rate. Each split (public,
private) is scored apart.

The queue is the ``submissions`` table: a worker claims the oldest queued row (or one whose lease ran out, e.g.
after a ``kill -9``) and renews its lease while it scores; a failed attempt (the judge unreachable after the
client's own retries) is retried later, and after ``max_attempts`` the row is marked failed with the reason, never
scored as 0.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from eval.submit import parse_submission
from eval.winrate import outcome, wilson_interval
from leaderboard import db
from leaderboard.sets import PRIVATE, PUBLIC, SPLITS, HiddenSets
from rewards.countdown import score as countdown_score

logger = logging.getLogger(__name__)

JUDGE_TOKEN_MARGIN = 64  # tokens kept free for chat markup under the judge's limit
CHARS_PER_TOKEN = 3  # a low estimate (English is ~4): the character cap stays under the judge's token limit


class ScoringError(RuntimeError):
    """This attempt could not score the submission (a judge failure); the reason is kept on the row."""


# ----------------------------------------------------------------------------------------------------------
# Checks on upload: the submission must be about this board's hidden items
# ----------------------------------------------------------------------------------------------------------


def check_against_sets(data: dict[str, Any], sets: HiddenSets) -> list[str]:
    """Problems (field path + what is wrong) that make a schema-valid submission unusable on this board."""
    problems: list[str] = []
    tasks = [t for t in ("countdown", "ultrafeedback") if data.get(t) is not None]
    for task in tasks:
        if not getattr(sets, task):
            problems.append(f"{task}: this board has no {task} set (it scores {sets.tasks()}); leave it out")
    if not any(getattr(sets, t) for t in tasks):
        return problems
    if data.get("countdown") is not None and sets.countdown:
        for i, item in enumerate(data["countdown"]["items"]):
            hidden = sets.countdown.get(item["id"])
            where = f"countdown.items[{i}]"
            if hidden is None:
                problems.append(
                    f"{where}.id: {item['id'][:80]!r} is not a task of this board (download its prompts)"
                )
            elif item["target"] != hidden.target or sorted(item["nums"]) != sorted(hidden.nums):
                problems.append(
                    f"{where}: task {hidden.id!r} is target {hidden.target} with nums {list(hidden.nums)} on this "
                    f"board, not target {item['target']} with nums {item['nums'][:10]}"
                )
            if len(problems) >= 50:
                break
    if data.get("ultrafeedback") is not None and sets.ultrafeedback:
        for i, item in enumerate(data["ultrafeedback"]["items"]):
            if item["id"] not in sets.ultrafeedback:
                problems.append(
                    f"ultrafeedback.items[{i}].prompt: not a prompt of this board (download its prompts)"
                )
            if len(problems) >= 50:
                break
    return problems


# ----------------------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------------------


def score_countdown(sets: HiddenSets, section: dict[str, Any]) -> dict[str, Any]:
    """Per split: n, correct, formatted, missing, accuracy, format_rate."""
    answers = {item["id"]: item["completion"] for item in section["items"]}
    out: dict[str, Any] = {}
    for split in SPLITS:
        items = [i for i in sets.countdown.values() if i.split == split]
        rewards = [
            countdown_score(answers[i.id], i.target, list(i.nums)) if i.id in answers else 0.0 for i in items
        ]
        n = len(items)
        correct = sum(r == 1.0 for r in rewards)
        out[split] = {
            "n": n,
            "correct": correct,
            "formatted": sum(r > 0 for r in rewards),
            "missing": sum(i.id not in answers for i in items),
            "accuracy": correct / n if n else None,
            "format_rate": sum(r > 0 for r in rewards) / n if n else None,
        }
    return out


def _clip(prompt: str, reply: str, budget_chars: int) -> tuple[str, str]:
    prompt = prompt[: budget_chars // 2] if len(prompt) > budget_chars // 2 else prompt
    return prompt, reply[: max(0, budget_chars - len(prompt))]


def score_ultrafeedback(
    sets: HiddenSets, section: dict[str, Any], client: Any, max_tokens: int, concurrency: int = 8
) -> dict[str, Any]:
    """Per split: n, wins, ties, losses, missing, win_rate (wins / n) with its 95% Wilson interval.

    ``client`` is an `eval.reward_client.RewardClient`; any conversation it could not score raises
    `ScoringError` (the attempt is retried; the row is never scored from a partial result)."""
    answers = {item["id"]: item["response"] for item in section["items"]}
    budget = CHARS_PER_TOKEN * max(64, max_tokens - JUDGE_TOKEN_MARGIN)
    items = list(sets.ultrafeedback.values())
    conversations: list[list[dict[str, str]]] = []
    for item in items:
        for reply in (answers.get(item.id), item.reference):
            if reply is not None:
                prompt, reply = _clip(item.prompt, reply, budget)
                conversations.append(
                    [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
                )
    results = iter(client.score_many(conversations, concurrency=concurrency))
    failures: list[str] = []
    outcomes: dict[str, list[str]] = {PUBLIC: [], PRIVATE: []}
    for item in items:
        mine = next(results) if item.id in answers else None
        reference = next(results)
        for result in (mine, reference):
            if result is not None and result.score is None:
                failures.append(result.error or "unscored")
        if mine is None:
            outcomes[item.split].append("missing")
        elif mine.score is not None and reference.score is not None:
            outcomes[item.split].append(outcome(mine.score, reference.score))
    if failures:
        raise ScoringError(
            f"the judge could not score {len(failures)} of {len(conversations)} answers; first error: "
            f"{failures[0][:300]}"
        )
    out: dict[str, Any] = {}
    for split, results_ in outcomes.items():
        n = len(results_)
        wins, ties = results_.count("win"), results_.count("tie")
        low, high = wilson_interval(wins, n)
        out[split] = {
            "n": n,
            "wins": wins,
            "ties": ties,
            "losses": results_.count("loss"),
            "missing": results_.count("missing"),
            "win_rate": wins / n if n else None,
            "win_rate_ci95": [low, high],
            "win_rate_ties_half": (wins + 0.5 * ties) / n if n else None,
        }
    return out


@dataclass
class Judge:
    """The judge the server scores UltraFeedback with: a reward client and the endpoint's token limit."""

    client: Any
    max_tokens: int
    label: str


def score_submission(
    body: bytes, sets: HiddenSets, judge: Judge | None, concurrency: int = 8
) -> dict[str, Any]:
    data = parse_submission(body)
    scores: dict[str, Any] = {}
    if data.get("countdown") is not None and sets.countdown:
        scores["countdown"] = score_countdown(sets, data["countdown"])
    if data.get("ultrafeedback") is not None and sets.ultrafeedback:
        if judge is None:
            raise ScoringError("the server has no judge configured for ultrafeedback (start it with a judge)")
        scores["ultrafeedback"] = score_ultrafeedback(
            sets, data["ultrafeedback"], judge.client, judge.max_tokens, concurrency
        )
        scores["ultrafeedback"]["judge"] = judge.label
    return scores


# ----------------------------------------------------------------------------------------------------------
# The queue
# ----------------------------------------------------------------------------------------------------------


class ScoringWorker:
    """Claims and scores queued submissions in a background thread until `stop()`."""

    def __init__(
        self,
        make_session: sessionmaker[Session],
        sets: HiddenSets,
        judge: Judge | None,
        *,
        lease_s: float = 60.0,
        poll_s: float = 0.5,
        max_attempts: int = 3,
        retry_backoff_s: float = 10.0,
        concurrency: int = 8,
        scorer: Callable[[bytes], dict[str, Any]] | None = None,
    ):
        self.make_session, self.sets, self.judge = make_session, sets, judge
        self.lease_s, self.poll_s = lease_s, poll_s
        self.max_attempts, self.retry_backoff_s = max_attempts, retry_backoff_s
        self.scorer = scorer or (lambda body: score_submission(body, sets, judge, concurrency))
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ScoringWorker:
        self._thread = threading.Thread(target=self.run, name="leaderboard-scoring", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.step()
            except Exception:  # noqa: BLE001 - a database hiccup must not end scoring for good
                logger.exception("scoring loop error; retrying")
                worked = False
            if not worked:
                self.wake.wait(self.poll_s)
                self.wake.clear()

    def claim(self) -> tuple[int, bytes | None, int] | None:
        """(id, body, attempt) of the next submission to score, leased to this worker; None when none is due; a
        None body when the row was just given up on (it was interrupted on every attempt)."""
        moment = db.now()
        with self.make_session() as session, session.begin():
            row = session.scalars(
                select(db.Submission)
                .where(
                    or_(
                        (db.Submission.status == db.QUEUED) & (db.Submission.not_before <= moment),
                        (db.Submission.status == db.SCORING) & (db.Submission.claimed_until < moment),
                    )
                )
                .order_by(db.Submission.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            if row.attempts >= self.max_attempts:  # interrupted (e.g. killed) on every attempt so far
                row.status, row.claimed_until = db.FAILED, None
                row.error = (
                    f"scoring was interrupted on all {row.attempts} attempts (last: {row.error or 'none'})"
                )
                return row.id, None, row.attempts
            row.status, row.claimed_until, row.attempts = db.SCORING, moment + self.lease_s, row.attempts + 1
            return row.id, row.body, row.attempts

    def _renew(self, submission_id: int, done: threading.Event) -> None:
        while not done.wait(self.lease_s / 3):
            with self.make_session() as session, session.begin():
                row = session.get(db.Submission, submission_id)
                if row is not None and row.status == db.SCORING:
                    row.claimed_until = db.now() + self.lease_s

    def step(self) -> bool:
        claimed = self.claim()
        if claimed is None:
            return False
        submission_id, body, attempt = claimed
        if body is None:
            return True
        done = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(submission_id, done), daemon=True)
        renewer.start()
        started = time.monotonic()
        try:
            scores, error = self.scorer(body), None
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the row, with its reason
            scores, error = None, f"{type(exc).__name__}: {exc}"[:2000]
        finally:
            done.set()
            renewer.join()
        with self.make_session() as session, session.begin():
            row = session.get(db.Submission, submission_id)
            if row is None:
                return True
            row.claimed_until = None
            if scores is not None:
                _store_scores(row, scores)
                logger.info("scored submission %d in %.2f s", submission_id, time.monotonic() - started)
            elif attempt < self.max_attempts:
                row.status, row.error = db.QUEUED, f"attempt {attempt} failed: {error}"
                row.not_before = db.now() + self.retry_backoff_s * 2 ** (attempt - 1)
                logger.warning(
                    "submission %d: attempt %d failed (%s); will retry", submission_id, attempt, error
                )
            else:
                row.status, row.error = db.FAILED, f"failed after {attempt} attempts: {error}"
                logger.error("submission %d failed: %s", submission_id, error)
        return True


def _store_scores(row: db.Submission, scores: dict[str, Any]) -> None:
    row.status, row.error, row.scored_at = db.SCORED, None, db.now()
    row.scores = json.dumps(scores, sort_keys=True)
    cd, uf = scores.get("countdown", {}), scores.get("ultrafeedback", {})
    row.public_countdown = cd.get(PUBLIC, {}).get("accuracy")
    row.private_countdown = cd.get(PRIVATE, {}).get("accuracy")
    row.public_winrate = uf.get(PUBLIC, {}).get("win_rate")
    row.private_winrate = uf.get(PRIVATE, {}).get("win_rate")
