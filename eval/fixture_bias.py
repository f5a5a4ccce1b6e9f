"""How well length or form alone tell the preference fixture's chosen reply from its rejected one.

    python -m eval.fixture_bias [--json runs/fixture_bias.json]

A reward model can learn any shortcut that separates chosen from rejected. Two shortcut classifiers are fitted on
`train_prefs` and scored on `train_prefs` and `test_prefs` (0.5 = no signal): the best length rule (pick the longer
or the shorter reply when their lengths differ by more than t characters, else a coin flip), and a logistic
regression on form features of the two replies (sentences, newlines, digit share, quotes, `<answer>` tags, final
period, word-count bucket). Both should stay near 0.5, so only correctness is left to learn.
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from posttrain.chat_fixture import ultrafeedback_fixture_rows
from posttrain.cli import run_cli
from posttrain.io import atomic_write_json
from rewards.chat_verifier import verify

SPLITS = ("train_prefs", "test_prefs")
WORD_BUCKETS = (3, 10, 30, 60, 100)  # upper bounds; a last bucket takes the rest
FEATURE_NAMES = (
    "sentences",
    "newlines",
    "digit_share",
    "has_quotes",
    "has_answer_tag",
    "ends_with_period",
    *(f"words<={b}" for b in WORD_BUCKETS),
    f"words>{WORD_BUCKETS[-1]}",
)
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|\Z)")
# A quoted span, not an apostrophe: the opening quote does not follow a letter, the closing one no letter follows.
_QUOTES = re.compile(r"(?<![A-Za-z])['\"‘“][^'\"‘’“”\n]{1,80}['\"’”](?![A-Za-z])")


# ----------------------------------------------------------------------------------------------------------
# Length
# ----------------------------------------------------------------------------------------------------------


def length_rule_accuracy(diffs: Sequence[float], sign: int, threshold: float) -> float:
    """Accuracy of "pick the longer (sign +1) or shorter (-1) reply when |diff| > threshold, else a coin flip".

    `diffs` are len(chosen) - len(rejected); a coin flip counts 0.5.
    """
    d = np.asarray(diffs, dtype=float)
    decided = np.abs(d) > threshold
    right = np.where(decided, (sign * d > 0).astype(float), 0.5)
    return float(right.mean()) if len(d) else 0.5


def fit_length_rule(diffs: Sequence[float]) -> tuple[int, float]:
    """(sign, threshold) with the best accuracy on `diffs` (ties: the smaller threshold, the longer reply)."""
    candidates = sorted({0.0, *(abs(float(x)) for x in diffs)})
    best = max(
        ((length_rule_accuracy(diffs, s, t), s, -t) for s in (1, -1) for t in candidates),
        key=lambda x: x,
    )
    return best[1], -best[2]


def pick_longer_rate(diffs: Sequence[float]) -> float:
    """How often the chosen reply is the longer one (equal lengths count 0.5)."""
    d = np.asarray(diffs, dtype=float)
    return float(np.where(d > 0, 1.0, np.where(d == 0, 0.5, 0.0)).mean()) if len(d) else 0.5


# ----------------------------------------------------------------------------------------------------------
# Form
# ----------------------------------------------------------------------------------------------------------


def form_features(text: str) -> list[float]:
    """The form of a reply, blind to its content (see FEATURE_NAMES)."""
    words = len(text.split())
    bucket = next((i for i, b in enumerate(WORD_BUCKETS) if words <= b), len(WORD_BUCKETS))
    return [
        float(len(_SENTENCE_END.findall(text))),
        float(text.count("\n")),
        sum(c.isdigit() for c in text) / max(1, len(text)),
        float(bool(_QUOTES.search(text))),
        float("<answer>" in text),
        float(text.rstrip().endswith(".")),
        *(float(i == bucket) for i in range(len(WORD_BUCKETS) + 1)),
    ]


def pair_features(chosen: Sequence[str], rejected: Sequence[str]) -> np.ndarray:
    """One row per pair: form(chosen) - form(rejected); a linear score on it decides which reply is chosen."""
    return np.array([form_features(c) for c in chosen]) - np.array([form_features(r) for r in rejected])


def fit_logistic(x: np.ndarray, *, l2: float = 1e-2, steps: int = 50) -> np.ndarray:
    """Weights w of P(first is chosen) = sigmoid(w · (form(first) - form(second))), by Newton's method.

    Every pair is seen in both orders (no intercept): the model cannot prefer a position, only a form. The
    columns are scaled to unit spread first; the returned weights apply to the unscaled differences.
    """
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.vstack([x / scale, -x / scale])
    y = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
    w = np.zeros(z.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -30, 30)))
        grad = z.T @ (p - y) / len(y) + l2 * w
        hess = (z * (p * (1 - p))[:, None]).T @ z / len(y) + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w / scale


def pairwise_accuracy(w: np.ndarray, x: np.ndarray) -> float:
    """How often w scores the chosen reply above the rejected one (equal scores count 0.5)."""
    s = x @ w
    return float(np.where(s > 1e-12, 1.0, np.where(np.abs(s) <= 1e-12, 0.5, 0.0)).mean()) if len(x) else 0.5


# ----------------------------------------------------------------------------------------------------------
# The fixture
# ----------------------------------------------------------------------------------------------------------


def _pairs(split: str, seed: int) -> tuple[list[str], list[str], list[str], list[str]]:
    rows = ultrafeedback_fixture_rows(split, seed=seed)
    prompts = [r["prompt"] for r in rows]
    chosen = [r["chosen"][-1]["content"] for r in rows]
    rejected = [r["rejected"][-1]["content"] for r in rows]
    kinds = [verify(p, r).status for p, r in zip(prompts, rejected, strict=True)]
    return prompts, chosen, rejected, kinds


def length_stats(chosen: Sequence[str], rejected: Sequence[str]) -> dict[str, Any]:
    """Word counts of the replies: medians, their ratio, range and quartiles."""
    wc = [len(t.split()) for t in chosen]
    wr = [len(t.split()) for t in rejected]
    both = sorted(wc + wr)
    return {
        "median_words_chosen": statistics.median(wc),
        "median_words_rejected": statistics.median(wr),
        "median_ratio": statistics.median(wc) / max(1e-9, statistics.median(wr)),
        "median_chars_chosen": statistics.median(len(t) for t in chosen),
        "median_chars_rejected": statistics.median(len(t) for t in rejected),
        "min_words": both[0],
        "max_words": both[-1],
        "quartiles_words": [float(q) for q in np.percentile(both, [25, 50, 75])],
        "share_over_80_words": sum(w > 80 for w in both) / len(both),
    }


def fixture_bias(seed: int = 0) -> dict[str, Any]:
    """Both shortcut classifiers fitted on train_prefs, scored on train_prefs and test_prefs, plus length stats."""
    data = {split: _pairs(split, seed) for split in SPLITS}
    diffs = {s: [len(c) - len(r) for c, r in zip(d[1], d[2], strict=True)] for s, d in data.items()}
    feats = {s: pair_features(d[1], d[2]) for s, d in data.items()}
    sign, threshold = fit_length_rule(diffs["train_prefs"])
    w = fit_logistic(feats["train_prefs"])
    out: dict[str, Any] = {
        "seed": seed,
        "length_rule": {"pick": "longer" if sign > 0 else "shorter", "threshold_chars": threshold},
        "format_weights": dict(zip(FEATURE_NAMES, map(float, w), strict=True)),
    }
    for split, (_, chosen, rejected, kinds) in data.items():
        kinds_arr = np.array(kinds)
        by_kind = {}
        for kind in sorted(set(kinds)):
            mask = kinds_arr == kind
            by_kind[kind] = {
                "pairs": int(mask.sum()),
                "length_only": length_rule_accuracy(np.array(diffs[split])[mask], sign, threshold),
                "format_only": pairwise_accuracy(w, feats[split][mask]),
            }
        out[split] = {
            "pairs": len(chosen),
            "pick_longer": pick_longer_rate(diffs[split]),
            "length_only": length_rule_accuracy(diffs[split], sign, threshold),
            "format_only": pairwise_accuracy(w, feats[split]),
            "by_rejected_status": by_kind,
            "length_stats": length_stats(chosen, rejected),
        }
    return out


def format_table(result: dict[str, Any]) -> str:
    """A markdown table of the accuracies and the length statistics."""
    lines = [
        "| split | pairs | pick longer | length-only | format-only | median words chosen / rejected (ratio) | "
        "words min-max | share > 80 words |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in SPLITS:
        r, s = result[split], result[split]["length_stats"]
        lines.append(
            f"| {split} | {r['pairs']} | {r['pick_longer']:.3f} | {r['length_only']:.3f} | {r['format_only']:.3f} | "
            f"{s['median_words_chosen']:g} / {s['median_words_rejected']:g} ({s['median_ratio']:.2f}) | "
            f"{s['min_words']}-{s['max_words']} | {s['share_over_80_words']:.2f} |"
        )
    rule = result["length_rule"]
    lines.append(
        f"\nlength rule fitted on train_prefs: pick the {rule['pick']} reply when the lengths differ by more than "
        f"{rule['threshold_chars']:g} characters"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m eval.fixture_bias", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="the fixture's seed")
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    result = fixture_bias(args.seed)
    print(format_table(result))
    if args.json:
        atomic_write_json(Path(args.json), result)
        print(f"written to {args.json}")
    return result


if __name__ == "__main__":
    run_cli(main)
