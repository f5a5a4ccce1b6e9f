"""Length-controlled win rate (AlpacaEval 2 style): the win rate the judge would give at equal answer lengths.

A logistic regression of each prompt's outcome (win 1, loss 0, tie 0.5: the same likelihood as a win row and a
loss row of weight one half each) on an intercept and phi * tanh(d / sigma), d = len(policy) - len(reference),
sigma = the standard deviation of d, fitted by Newton's method (numpy) with a small L2 penalty on phi only.
``sigmoid(intercept)`` is the predicted win rate at d = 0; phi > 0 means the judge prefers the longer answer.
A check without a model: the win rate over length-matched pairs (|d| <= 20% of the longer answer). Lengths are
counted in characters (the headline numbers) and in words.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

MIN_PROMPTS = 5
DEFAULT_L2 = 0.1  # a prior phi ~ N(0, 10): keeps phi finite when lengths separate wins from losses
MATCH_TOLERANCE = 0.2
OUTCOME_VALUES = {"win": 1.0, "loss": 0.0, "tie": 0.5}
UNITS = ("chars", "words")


def text_length(text: str, unit: str = "chars") -> int:
    """Characters, or whitespace-separated words."""
    if unit == "chars":
        return len(text)
    if unit == "words":
        return len(text.split())
    raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")


def _sigmoid(z: np.ndarray | float) -> np.ndarray | float:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))  # no overflow for any z


def _degenerate(y: np.ndarray, delta: np.ndarray) -> str | None:
    """Why the fit would be meaningless (or unbounded), or None."""
    n = len(y)
    if n < MIN_PROMPTS:
        return f"{n} scored prompt(s): at least {MIN_PROMPTS} are needed"
    if np.all(y == 1.0):
        return "every prompt is a win: nothing to fit (the intercept has no finite estimate)"
    if np.all(y == 0.0):
        return "every prompt is a loss: nothing to fit (the intercept has no finite estimate)"
    if np.all(y == 0.5):
        return "every prompt is a tie: no wins or losses to fit"
    if np.ptp(delta) == 0:
        return "the length difference is the same on every prompt: its effect cannot be separated"
    return None


def fit_length_control(
    outcomes: Sequence[float],
    len_policy: Sequence[float],
    len_reference: Sequence[float],
    *,
    l2: float = DEFAULT_L2,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> dict[str, Any]:
    """The length-controlled win rate of outcomes in [0, 1] (see the module docstring).

    Returns ``win_rate`` (sigmoid of the intercept), ``intercept``, ``phi``, ``sigma``, ``n``, ``iterations``
    and ``reason``: None when fitted, else why ``win_rate``, ``intercept`` and ``phi`` are None.
    """
    if not len(outcomes) == len(len_policy) == len(len_reference):
        raise ValueError(
            f"sizes differ: {len(outcomes)} outcomes, {len(len_policy)} and {len(len_reference)} lengths"
        )
    y = np.asarray(outcomes, dtype=float)
    delta = np.asarray(len_policy, dtype=float) - np.asarray(len_reference, dtype=float)
    if np.any((y < 0) | (y > 1)) or not np.all(np.isfinite(delta)):
        raise ValueError("outcomes must lie in [0, 1] and lengths must be finite")
    std = float(np.std(delta)) if len(delta) else 0.0
    sigma = std if std > 0 and np.isfinite(std) else 1.0
    out: dict[str, Any] = {"win_rate": None, "intercept": None, "phi": None, "sigma": sigma, "n": len(y)}
    out |= {"iterations": 0, "reason": _degenerate(y, delta)}
    if out["reason"]:
        return out
    X = np.column_stack([np.ones_like(delta), np.tanh(delta / sigma)])
    penalty = np.array([0.0, l2])

    def objective(beta: np.ndarray) -> float:  # penalised log-likelihood (fractional y is a weighted pair)
        z = X @ beta
        return float(np.sum(y * z - np.logaddexp(0.0, z)) - 0.5 * l2 * beta[1] ** 2)

    mean = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    beta = np.array([np.log(mean / (1 - mean)), 0.0])
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        p = _sigmoid(X @ beta)
        grad = X.T @ (y - p) - penalty * beta
        # The negative Hessian; its determinant is >= l2 * sum(w) > 0, so the solve never fails for l2 > 0.
        hess = X.T @ (X * (p * (1 - p))[:, None]) + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        base, t = objective(beta), 1.0
        while objective(beta + t * step) < base - 1e-12 and t > 1e-8:  # step halving: never go downhill
            t /= 2
        beta = beta + t * step
        if np.max(np.abs(t * step)) < tol:
            break
    out["iterations"] = iterations
    if not np.all(np.isfinite(beta)):
        out["reason"] = "the fit diverged"
        return out
    out |= {"win_rate": float(_sigmoid(beta[0])), "intercept": float(beta[0]), "phi": float(beta[1])}
    return out


def length_matched_win_rate(
    outcomes: Sequence[float],
    len_policy: Sequence[float],
    len_reference: Sequence[float],
    *,
    tolerance: float = MATCH_TOLERANCE,
) -> dict[str, Any]:
    """Win rate (a tie counts half) over the pairs whose lengths differ by at most ``tolerance`` of the
    longer one; ``win_rate`` None when no pair matches."""
    matched = [
        float(y)
        for y, a, b in zip(outcomes, len_policy, len_reference, strict=True)
        if abs(a - b) <= tolerance * max(a, b)
    ]
    return {
        "win_rate": sum(matched) / len(matched) if matched else None,
        "n": len(matched),
        "wins": sum(y == 1.0 for y in matched),
        "ties": sum(y == 0.5 for y in matched),
        "losses": sum(y == 0.0 for y in matched),
        "tolerance": tolerance,
    }


def length_stats(texts: Sequence[str]) -> dict[str, float | None]:
    """Mean and median length in characters and words."""
    out: dict[str, float | None] = {}
    for unit in UNITS:
        lengths = [text_length(t, unit) for t in texts]
        out[f"mean_{unit}"] = statistics.fmean(lengths) if lengths else None
        out[f"median_{unit}"] = float(statistics.median(lengths)) if lengths else None
    return out


def length_report(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary fields of a win-rate run: rows are `eval.winrate` result rows (``outcome``,
    ``policy_response``, ``reference_response``); failed rows are left out.

    ``length_controlled_win_rate``, ``length_effect`` (phi) and ``length_matched_win_rate`` (with
    ``length_matched_n``) count characters; ``length_control`` has both units' fits and matched sets in full.
    Both estimates count a tie as half a win: compare them with ``win_rate_ties_half``.
    """
    scored = [r for r in rows if r.get("outcome") in OUTCOME_VALUES]
    y = [OUTCOME_VALUES[r["outcome"]] for r in scored]
    detail: dict[str, Any] = {}
    for unit in UNITS:
        lp = [text_length(r["policy_response"], unit) for r in scored]
        lr = [text_length(r["reference_response"], unit) for r in scored]
        detail[unit] = {"fit": fit_length_control(y, lp, lr), "matched": length_matched_win_rate(y, lp, lr)}
    chars = detail["chars"]
    return {
        "length_controlled_win_rate": chars["fit"]["win_rate"],
        "length_effect": chars["fit"]["phi"],
        "length_matched_win_rate": chars["matched"]["win_rate"],
        "length_matched_n": chars["matched"]["n"],
        "lengths": {
            "policy": length_stats([r["policy_response"] for r in scored]),
            "reference": length_stats([r["reference_response"] for r in scored]),
        },
        "length_control": detail,
    }
