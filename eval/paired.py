"""Paired comparison of two evaluations on the same tasks: the difference with its interval and a p-value.

Two accuracies side by side hide how much of the gap is noise; on the same tasks the right test is paired:
McNemar's exact test on the tasks that changed, and a paired bootstrap interval for the difference.

    python -m eval.paired runs/sft-countdown/eval-after runs/grpo-countdown/eval-after
    python -m eval.paired runs/winrate/sft-smoltalk-vs-embedded runs/winrate/dpo-ultrafeedback-vs-embedded

Two win-rate runs (eval.winrate) judged by the verifiable judge compare the policies' correctness on the same
prompts: a reply is right when the judge scored it above 0 (right replies score 0.6 to 1.0, wrong 0, none -1).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posttrain.cli import run_cli


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of `gained` vs `lost` discordant tasks at 1/2."""
    if gained < 0 or lost < 0:
        raise ValueError(f"counts must be >= 0, got gained={gained}, lost={lost}")
    n = gained + lost
    if n == 0:
        return 1.0
    k = min(gained, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(
    before: Sequence[float],
    after: Sequence[float],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of mean(after - before), resampling tasks (the pairs) with replacement."""
    diffs = [a - b for a, b in zip(after, before, strict=True)]
    if not diffs:
        raise ValueError("no tasks to compare")
    return bootstrap_mean(diffs, n_boot=n_boot, seed=seed, level=level)


def bootstrap_mean(
    values: Sequence[float], *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean of per-item ``values`` (one per task or pair), resampled with replacement."""
    if not values:
        raise ValueError("no values to resample")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    lo = means[int((1 - level) / 2 * n_boot)]
    hi = means[min(n_boot - 1, int((1 + level) / 2 * n_boot))]
    return lo, hi


def compare_paired(
    before: Sequence[bool | float], after: Sequence[bool | float], *, n_boot: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Per-task correctness (1/0, or per-task accuracy) before and after, in the same task order."""
    if len(before) != len(after):
        raise ValueError(
            f"the two evaluations cover {len(before)} and {len(after)} tasks: not the same tasks"
        )
    b = [float(x) for x in before]
    a = [float(x) for x in after]
    n = len(b)
    gained = sum(x > y for x, y in zip(a, b, strict=True))
    lost = sum(x < y for x, y in zip(a, b, strict=True))
    lo, hi = paired_bootstrap(b, a, n_boot=n_boot, seed=seed)
    return {
        "n_tasks": n,
        "before": sum(b) / n,
        "after": sum(a) / n,
        "difference": (sum(a) - sum(b)) / n,
        "ci95": [lo, hi],
        "gained": gained,
        "lost": lost,
        "p_mcnemar": mcnemar_exact(gained, lost),
    }


def per_prompt_right(run_dir: str | Path) -> tuple[list[tuple], list[float]]:
    """(prompt ids, 1.0 where the verifiable judge scored the policy's reply right) from a win-rate run folder."""
    folder = Path(run_dir)
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder}/summary.json: not a readable win-rate summary ({exc})") from None
    judge = (summary.get("judge") if isinstance(summary, dict) else None) or {}
    if judge.get("kind") != "verifiable":
        raise ValueError(
            f"{folder} was judged by {judge.get('model')!r}, not the verifiable judge: only its scores say whether "
            "a reply is right (re-run eval.winrate with --serve_judge verifiable)"
        )
    keys, right = [], []
    for line_no, line in enumerate((folder / "results.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            keys.append((str(row["prompt_id"]),))
            right.append(float(float(row["policy_reward"]) > 0))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{folder}/results.jsonl:{line_no}: not a scored win-rate row ({exc})") from None
    return keys, right


def per_task_correct(eval_dir: str | Path) -> tuple[list[tuple], list[float]]:
    """(task keys, per-task accuracy) from an evaluation folder's samples.jsonl, in task order (or, for a
    win-rate run folder, `per_prompt_right`)."""
    path = Path(eval_dir) / "samples.jsonl"
    if not path.is_file() and (Path(eval_dir) / "results.jsonl").is_file():
        return per_prompt_right(eval_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found (run `python -m eval.countdown ... --output_dir {eval_dir}`)"
        )
    tasks: dict[int, tuple] = {}
    hits: dict[int, list[float]] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            try:
                row = json.loads(line)
                i = int(row["task_index"])
                task = row["task"]
                # Countdown: target and numbers; other evaluations (eval.gsm8k): the question and answer.
                if "target" in task:
                    key = (task["target"], tuple(task["nums"]))
                else:
                    key = tuple(sorted((str(k), str(v)) for k, v in task.items()))
                correct = float(bool(row["correct"]))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}:{line_no}: not an evaluation sample row ({exc})") from None
            tasks[i] = key
            hits.setdefault(i, []).append(correct)
    order = sorted(tasks)
    return [tasks[i] for i in order], [sum(hits[i]) / len(hits[i]) for i in order]


def compare_dirs(before_dir: str | Path, after_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    keys_b, before = per_task_correct(before_dir)
    keys_a, after = per_task_correct(after_dir)
    if keys_b != keys_a:
        raise ValueError(
            f"{before_dir} and {after_dir} were evaluated on different tasks: a paired test needs the same"
        )
    return compare_paired(before, after, **kwargs)


def format_result(result: dict[str, Any], *, label: str = "after - before") -> str:
    lo, hi = result["ci95"]
    return (
        f"{label}: {result['difference']:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}] on {result['n_tasks']} tasks "
        f"({result['before']:.3f} -> {result['after']:.3f}; {result['gained']} gained, {result['lost']} lost; "
        f"McNemar p={result['p_mcnemar']:.3g})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "before", help="evaluation folder of the start model (samples.jsonl, or a win-rate run folder)"
    )
    parser.add_argument("after", help="evaluation folder of the trained model, same tasks (or prompts)")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = compare_dirs(args.before, args.after)
    print(format_result(result, label=f"{args.after} - {args.before}"))
    if args.json:
        from posttrain.io import atomic_write_json

        atomic_write_json(Path(args.json), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
