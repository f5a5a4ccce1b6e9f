"""Test-time compute on Countdown: best-of-N and first-verified sampling with a verifier, accuracy vs compute.

    python -m eval.test_time --model runs/sft-countdown/model --n 64 --temperatures 0.7 1.0   # the curve
    python -m eval.test_time --samples runs/tts/run/samples-t1.0/samples.jsonl                 # re-analyse
    python -m eval.test_time --model runs/sft-countdown/model --strategy first_verified --n 16 --chunk 4

Verifiers (`VERIFIERS`): ``rule`` reads only the puzzle (its numbers and target), never a reference solution, so
picking with it is legitimate test-time compute. On Countdown it is also complete: it accepts exactly the right
answers, so best-of-N with it equals the oracle pass@N. The oracle column is kept apart because learned
verifiers (``genrm``, `eval.genrm`) fall short of it.

The curve comes from one sampling run of ``n`` samples per task: best-of-N for every N is the exact expectation
over random N-subsets of those samples (`best_of_n_expected`), first-verified an average over seeded random
orderings (`first_verified_expected`). Tokens are completion tokens per task, verifier tokens separate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.best_of_n import pick_index
from eval.countdown import (
    BASE_SEED_SUFFIX,
    evaluate_countdown,
    load_tasks_file,
    pass_at_k,
    stderr,
    task_from_row,
)
from eval.genrm import auroc
from posttrain.cli import run_cli
from posttrain.countdown import CountdownTask, make_prompt
from posttrain.data import DEFAULT_TASK_SEED, HELDOUT_PERCENT, heldout_tasks
from posttrain.io import atomic_write_jsonl, atomic_write_text, read_jsonl
from posttrain.models import trained_template
from posttrain.sampling import SamplingParams, generate, load_hf_model
from rewards.countdown import score

STRATEGIES = ("curve", "best_of_n", "first_verified")
DEFAULT_ORDERINGS = 400


# ----------------------------------------------------------------------------------------------------------
# Verifiers
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Verdicts:
    """A verifier's scores per task and candidate; ``accept_at``: the score from which a candidate is accepted."""

    scores: list[list[float]]
    accept_at: float
    tokens: list[list[int]] = field(default_factory=list)  # verifier tokens spent per candidate (0 for rules)

    def accepted(self, task: int, candidate: int) -> bool:
        return self.scores[task][candidate] >= self.accept_at


def rule_verifier(tasks: Sequence[CountdownTask], candidates: Sequence[Sequence[str]], **_: Any) -> Verdicts:
    """1.0 when the candidate's answer uses the puzzle's numbers once each and reaches its target, else 0.0."""
    scores = [
        [1.0 if score(c, t.target, list(t.nums)) == 1.0 else 0.0 for c in cands]
        for t, cands in zip(tasks, candidates, strict=True)
    ]
    return Verdicts(scores=scores, accept_at=1.0, tokens=[[0] * len(s) for s in scores])


def genrm_verifier(
    tasks: Sequence[CountdownTask], candidates: Sequence[Sequence[str]], *, options: dict[str, Any], **_: Any
) -> Verdicts:
    """Mean P(Yes) of a GenRM-CoT verifier over adaptively many sampled rationales (`eval.genrm`)."""
    from eval.genrm import AdaptiveK, GenRMVerifier

    if not options.get("genrm_model"):
        raise ValueError("--verifier genrm needs --genrm_model (a folder trained by `make genrm-countdown`)")
    verifier = GenRMVerifier(
        options["genrm_model"], seed=options["seed"], progress=options.get("progress", True)
    )
    schedule = AdaptiveK(
        k_min=options["genrm_k_min"],
        k_max=options["genrm_k_max"],
        chunk=options["genrm_chunk"],
        var_threshold=options["genrm_var_threshold"],
    )
    pairs = [(t, c) for t, cands in zip(tasks, candidates, strict=True) for c in cands]
    results = verifier.score(pairs, schedule)
    scores: list[list[float]] = []
    tokens: list[list[int]] = []
    it = iter(results)
    for cands in candidates:
        row = [next(it) for _ in cands]
        scores.append([r.score for r in row])
        tokens.append([r.rationale_tokens for r in row])
    return Verdicts(scores=scores, accept_at=0.5, tokens=tokens)


VERIFIERS: dict[str, Callable[..., Verdicts]] = {"rule": rule_verifier, "genrm": genrm_verifier}


def run_verifier(
    name: str, tasks: Sequence[CountdownTask], candidates: Sequence[Sequence[str]], options: dict[str, Any]
) -> Verdicts:
    if name not in VERIFIERS:
        raise ValueError(f"unknown verifier {name!r}; valid names: {sorted(VERIFIERS)}")
    return VERIFIERS[name](tasks, candidates, options=options)


# ----------------------------------------------------------------------------------------------------------
# Estimators
# ----------------------------------------------------------------------------------------------------------


def pick_best(scores: Sequence[float], indices: Sequence[int] | None = None) -> int:
    """The index with the highest score; ties go to the lowest index (`eval.best_of_n.pick_index`'s rule)."""
    candidates = sorted(range(len(scores)) if indices is None else indices)
    return candidates[pick_index([scores[i] for i in candidates])]


def best_of_n_expected(scores: Sequence[float], correct: Sequence[bool], n: int) -> float:
    """Expected correctness of best-of-n over all n-subsets of the samples (exact, tie-break as `pick_best`).

    Ranked by (score desc, index asc), the sample at rank r is picked exactly when it is in the subset and the
    other n - 1 members rank below it: C(M - 1 - r, n - 1) of the C(M, n) subsets.
    """
    m = len(scores)
    if len(correct) != m:
        raise ValueError(f"{m} scores but {len(correct)} correctness labels")
    if not 1 <= n <= m:
        raise ValueError(f"best-of-n needs 1 <= n <= {m} (samples per task), got n={n}")
    order = sorted(range(m), key=lambda i: (-scores[i], i))
    total = math.comb(m, n)
    hits = sum(math.comb(m - 1 - rank, n - 1) for rank, i in enumerate(order) if correct[i])
    return hits / total


@dataclass
class FirstVerified:
    accuracy: float
    samples: float  # expected samples drawn
    tokens: float  # expected completion tokens drawn
    verifier_tokens: float


def first_verified_expected(
    verdicts_scores: Sequence[float],
    accept_at: float,
    correct: Sequence[bool],
    tokens: Sequence[int],
    verifier_tokens: Sequence[int],
    *,
    budget: int,
    chunk: int,
    orderings: int = DEFAULT_ORDERINGS,
    seed: int = 0,
) -> FirstVerified:
    """Draw ``chunk`` samples at a time in a random order; stop at the first chunk with an accepted candidate.

    The pick is that chunk's best accepted candidate; with none accepted within ``budget`` samples, the best of
    all drawn. Averaged over ``orderings`` seeded random orderings of one task's samples.
    """
    m = len(verdicts_scores)
    if not 1 <= chunk <= budget <= m:
        raise ValueError(
            f"first-verified needs 1 <= chunk <= budget <= {m}, got chunk={chunk}, budget={budget}"
        )
    rng = random.Random(seed)
    acc = drawn_total = tok_total = vtok_total = 0.0
    for _ in range(orderings):
        order = rng.sample(range(m), budget)
        pick = None
        drawn = 0
        for start in range(0, budget, chunk):
            block = order[start : start + chunk]
            drawn += len(block)
            accepted = [i for i in block if verdicts_scores[i] >= accept_at]
            if accepted:
                pick = pick_best(verdicts_scores, accepted)
                break
        if pick is None:
            pick = pick_best(verdicts_scores, order)
        seen = order[:drawn]
        acc += bool(correct[pick])
        drawn_total += drawn
        tok_total += sum(tokens[i] for i in seen)
        vtok_total += sum(verifier_tokens[i] for i in seen)
    k = float(orderings)
    return FirstVerified(acc / k, drawn_total / k, tok_total / k, vtok_total / k)


def curve_points(n_max: int) -> list[int]:
    """1, 2, 4, ... up to n_max (n_max itself included)."""
    points = [1]
    while points[-1] * 2 <= n_max:
        points.append(points[-1] * 2)
    if points[-1] != n_max:
        points.append(n_max)
    return points


# ----------------------------------------------------------------------------------------------------------
# The curve from one sampling run
# ----------------------------------------------------------------------------------------------------------


@dataclass
class SampleSet:
    """n samples per task: the candidates, their correctness (the rule) and completion token counts."""

    tasks: list[CountdownTask]
    candidates: list[list[str]]
    correct: list[list[bool]]
    tokens: list[list[int]]

    @property
    def n(self) -> int:
        return len(self.candidates[0])


def sample_set_from_rows(rows: Sequence[dict[str, Any]], tokenizer: Any) -> SampleSet:
    """Group eval.countdown sample rows by task; every task must have the same number of samples."""
    by_task: dict[int, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"sample row {i + 1}: expected an object, got {type(row).__name__}")
        for key in ("task_index", "sample_index", "task", "completion"):
            if key not in row:
                raise ValueError(
                    f"sample row {i + 1}: missing field {key!r} (an eval.countdown samples.jsonl?)"
                )
        by_task.setdefault(int(row["task_index"]), []).append(row)
    if not by_task:
        raise ValueError("no samples to analyse")
    groups = [sorted(by_task[k], key=lambda r: r["sample_index"]) for k in sorted(by_task)]
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"tasks have different numbers of samples ({sorted(sizes)}); re-run the sampling")
    tasks = [task_from_row(g[0]["task"], f"task {g[0]['task_index']}") for g in groups]
    candidates = [[said(str(r.get("prompt", "")), str(r["completion"])) for r in g] for g in groups]
    # Correctness is the rule verifier's verdict: on Countdown it accepts exactly the right answers.
    correct = [[v == 1.0 for v in row] for row in rule_verifier(tasks, candidates).scores]
    tokens = [[count_tokens(tokenizer, c) for c in cands] for cands in candidates]
    return SampleSet(tasks, candidates, correct, tokens)


def said(prompt: Any, completion: str) -> str:
    """What the model said: a raw-text prompt's pre-seeded "<think>" belongs to the completion (as eval.countdown)."""
    seeded = isinstance(prompt, str) and prompt.endswith(BASE_SEED_SUFFIX)
    return BASE_SEED_SUFFIX + completion if seeded else completion


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1  # + the end-of-sequence token


def load_samples(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of an eval.countdown samples.jsonl (checked by `sample_set_from_rows`)."""
    return [row for _, row in read_jsonl(path, "samples file")]


def compute_curve(
    samples: SampleSet,
    verdicts: dict[str, Verdicts],
    *,
    chunk: int,
    orderings: int = DEFAULT_ORDERINGS,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per N: oracle pass@N, best-of-N and first-verified per verifier, tokens per task."""
    n_tasks = len(samples.tasks)
    mean_tokens = [sum(t) / len(t) for t in samples.tokens]
    rows = []
    for n in curve_points(samples.n):
        oracle = [pass_at_k(samples.n, sum(c), n) for c in samples.correct]
        row: dict[str, Any] = {
            "n": n,
            "n_tasks": n_tasks,
            "oracle_pass_at_n": sum(oracle) / n_tasks,
            "oracle_stderr": stderr(oracle),
            "tokens_per_task": n * sum(mean_tokens) / n_tasks,
            "best_of_n": {},
            "first_verified": {},
        }
        for name, v in verdicts.items():
            per_task = [best_of_n_expected(v.scores[i], samples.correct[i], n) for i in range(n_tasks)]
            vtok = sum(n * sum(v.tokens[i]) / samples.n for i in range(n_tasks)) / n_tasks
            row["best_of_n"][name] = {
                "accuracy": sum(per_task) / n_tasks,
                "accuracy_stderr": stderr(per_task),
                "verifier_tokens_per_task": vtok,
            }
            step = min(chunk, n)
            fv = [
                first_verified_expected(
                    v.scores[i],
                    v.accept_at,
                    samples.correct[i],
                    samples.tokens[i],
                    v.tokens[i],
                    budget=n,
                    chunk=step,
                    orderings=orderings,
                    seed=seed + i,
                )
                for i in range(n_tasks)
            ]
            row["first_verified"][name] = {
                "chunk": step,
                "accuracy": sum(f.accuracy for f in fv) / n_tasks,
                "accuracy_stderr": stderr([f.accuracy for f in fv]),
                "samples_per_task": sum(f.samples for f in fv) / n_tasks,
                "tokens_per_task": sum(f.tokens for f in fv) / n_tasks,
                "verifier_tokens_per_task": sum(f.verifier_tokens for f in fv) / n_tasks,
            }
        rows.append(row)
    return rows


def analyse(
    samples: SampleSet,
    verifiers: Sequence[str],
    options: dict[str, Any],
    *,
    chunk: int,
    orderings: int = DEFAULT_ORDERINGS,
) -> dict[str, Any]:
    """The curve plus per-task picks at the largest N, for one sampling run."""
    verdicts = {name: run_verifier(name, samples.tasks, samples.candidates, options) for name in verifiers}
    curve = compute_curve(samples, verdicts, chunk=chunk, orderings=orderings, seed=options.get("seed", 0))
    labels = [c for row in samples.correct for c in row]
    verifier_report = {
        name: {
            # How well the verifier's scores separate right from wrong candidates (None: one class is empty).
            "auroc": auroc([x for row in v.scores for x in row], labels),
            "accepted_share": sum(v.accepted(i, j) for i, row in enumerate(v.scores) for j in range(len(row)))
            / len(labels),
            "verifier_tokens": sum(sum(row) for row in v.tokens),
        }
        for name, v in verdicts.items()
    }
    per_task = []
    for i, task in enumerate(samples.tasks):
        picks = {name: pick_best(v.scores[i]) for name, v in verdicts.items()}
        per_task.append(
            {
                "task_index": i,
                "task": {"target": task.target, "nums": list(task.nums)},
                "n_correct": sum(samples.correct[i]),
                "picks": {
                    name: {
                        "sample_index": j,
                        "completion": samples.candidates[i][j],
                        "score": verdicts[name].scores[i][j],
                        "correct": samples.correct[i][j],
                    }
                    for name, j in picks.items()
                },
            }
        )
    return {"curve": curve, "verifier_report": verifier_report, "per_task": per_task}


# ----------------------------------------------------------------------------------------------------------
# Live strategies: pick one answer per task
# ----------------------------------------------------------------------------------------------------------


def run_first_verified_live(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[CountdownTask],
    *,
    template: str,
    params: SamplingParams,
    chunk: int,
    verifier: str,
    options: dict[str, Any],
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Sample ``chunk`` candidates at a time for the tasks still open; a task closes at its first accepted one."""
    budget = params.n
    state = [{"candidates": [], "scores": [], "accepted": None} for _ in tasks]
    open_tasks = list(range(len(tasks)))
    for round_index, start in enumerate(range(0, budget, chunk)):
        if not open_tasks:
            break
        size = min(chunk, budget - start)
        round_params = SamplingParams(**{**params.to_dict(), "n": size, "seed": params.seed + round_index})
        prompts = [make_prompt(tasks[i].nums, tasks[i].target, template) for i in open_tasks]
        outs = generate(model, prompts, round_params, tokenizer=tokenizer, progress=progress)
        outs = [[said(p, c) for c in cands] for p, cands in zip(prompts, outs, strict=True)]
        verdicts = run_verifier(verifier, [tasks[i] for i in open_tasks], outs, options)
        still_open = []
        for row, i in enumerate(open_tasks):
            st = state[i]
            offset = len(st["candidates"])
            st["candidates"].extend(outs[row])
            st["scores"].extend(verdicts.scores[row])
            accepted = [offset + j for j in range(size) if verdicts.accepted(row, j)]
            if accepted:
                st["accepted"] = pick_best(st["scores"], accepted)
            else:
                still_open.append(i)
        open_tasks = still_open
    results = []
    for i, (task, st) in enumerate(zip(tasks, state, strict=True)):
        j = st["accepted"] if st["accepted"] is not None else pick_best(st["scores"])
        completion = st["candidates"][j]
        results.append(
            {
                "task_index": i,
                "task": {"target": task.target, "nums": list(task.nums)},
                "samples_drawn": len(st["candidates"]),
                "verified": st["accepted"] is not None,
                "completion": completion,
                "correct": score(completion, task.target, list(task.nums)) == 1.0,
                "completion_tokens": sum(count_tokens(tokenizer, c) for c in st["candidates"]),
            }
        )
    return results


def run_best_of_n_live(samples: SampleSet, verifier: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    verdicts = run_verifier(verifier, samples.tasks, samples.candidates, options)
    results = []
    for i, task in enumerate(samples.tasks):
        j = pick_best(verdicts.scores[i])
        results.append(
            {
                "task_index": i,
                "task": {"target": task.target, "nums": list(task.nums)},
                "samples_drawn": samples.n,
                "verified": verdicts.accepted(i, j),
                "completion": samples.candidates[i][j],
                "correct": samples.correct[i][j],
                "completion_tokens": sum(samples.tokens[i]),
                "verifier_tokens": sum(verdicts.tokens[i]),
            }
        )
    return results


# ----------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------


def print_curve(
    label: str, greedy: float | None, curve: Sequence[dict[str, Any]], verifiers: Sequence[str]
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Test-time compute: {label}" + (f" (greedy {greedy:.3f})" if greedy is not None else "")
    )
    table.add_column("N", justify="right")
    table.add_column("oracle pass@N", justify="right")
    for name in verifiers:
        table.add_column(f"best-of-N {name}", justify="right")
    for name in verifiers:
        table.add_column(f"first-verified {name} (tokens)", justify="right")
    table.add_column("tokens/task best-of-N", justify="right")
    for row in curve:
        cells = [str(row["n"]), f"{row['oracle_pass_at_n']:.3f}"]
        cells += [f"{row['best_of_n'][v]['accuracy']:.3f}" for v in verifiers]
        cells += [
            f"{row['first_verified'][v]['accuracy']:.3f} ({row['first_verified'][v]['tokens_per_task']:.0f})"
            for v in verifiers
        ]
        cells.append(f"{row['tokens_per_task']:.0f}")
        table.add_row(*cells)
    Console(file=sys.stdout).print(table)


def plot_curves(runs: dict[str, dict[str, Any]], path: Path) -> None:
    """Accuracy against completion tokens per task: oracle, best-of-N and first-verified per verifier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, run in runs.items():
        curve = run["curve"]
        x = [r["tokens_per_task"] for r in curve]
        (line,) = ax.plot(x, [r["oracle_pass_at_n"] for r in curve], ":", label=f"{label} oracle pass@N")
        for name in run["verifiers"]:
            ax.plot(
                x, [r["best_of_n"][name]["accuracy"] for r in curve], "o-", label=f"{label} best-of-N {name}"
            )
            ax.plot(
                [r["first_verified"][name]["tokens_per_task"] for r in curve],
                [r["first_verified"][name]["accuracy"] for r in curve],
                "s--",
                label=f"{label} first-verified {name}",
            )
        if run.get("greedy_accuracy") is not None:
            ax.axhline(run["greedy_accuracy"], color=line.get_color(), lw=0.8, alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("completion tokens per task (log scale)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Countdown: accuracy against test-time compute")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval.test_time",
        description="Best-of-N and first-verified sampling on held-out Countdown: accuracy against compute.",
    )
    p.add_argument("--model", default=None, help="the policy (folder, hub name or 'embedded')")
    p.add_argument(
        "--samples", default=None, help="analyse an eval.countdown samples.jsonl instead of sampling"
    )
    p.add_argument("--strategy", default="curve", choices=STRATEGIES)
    p.add_argument("--verifier", nargs="+", default=["rule"], help=f"one or more of {sorted(VERIFIERS)}")
    p.add_argument("--n", type=int, default=64, help="samples per task (the largest N of the curve)")
    p.add_argument("--chunk", type=int, default=4, help="first-verified: samples drawn per step")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0])
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--max_new_tokens", type=int, default=None, help="default: 32 direct answers, 256 traces")
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--template", default=None, help="default: the model's training template")
    p.add_argument("--no_greedy", action="store_true", help="skip the greedy baseline")
    p.add_argument(
        "--orderings", type=int, default=DEFAULT_ORDERINGS, help="random orderings (first-verified)"
    )
    p.add_argument("--output_dir", default=None, help="default: runs/tts/<model>-<time>")
    p.add_argument("--no_progress", action="store_true")
    g = p.add_argument_group("tasks")
    g.add_argument("--tasks_file", default=None)
    g.add_argument("--n_tasks", type=int, default=200)
    g.add_argument("--num_numbers", type=int, default=3)
    g.add_argument("--max_number", type=int, default=30)
    g.add_argument("--seed", type=int, default=DEFAULT_TASK_SEED)
    r = p.add_argument_group("genrm verifier (eval.genrm)")
    r.add_argument("--genrm_model", default=None)
    r.add_argument("--genrm_k_min", type=int, default=8)
    r.add_argument("--genrm_k_max", type=int, default=32)
    r.add_argument("--genrm_chunk", type=int, default=8)
    r.add_argument("--genrm_var_threshold", type=float, default=0.05)
    return p


def _check_args(args: argparse.Namespace) -> None:
    if (args.model is None) == (args.samples is None):
        raise ValueError("give exactly one of --model (sample now) or --samples (analyse an earlier run)")
    if args.samples and args.strategy == "first_verified":
        raise ValueError("--strategy first_verified samples as it goes: give --model, not --samples")
    for name in args.verifier:
        if name not in VERIFIERS:
            raise ValueError(f"unknown --verifier {name!r}; valid names: {sorted(VERIFIERS)}")
    if "genrm" in args.verifier and not args.genrm_model:
        raise ValueError("--verifier genrm needs --genrm_model (a folder trained by `make genrm-countdown`)")
    for name in ("n", "chunk", "n_tasks", "orderings"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.chunk > args.n:
        raise ValueError(f"--chunk ({args.chunk}) must be <= --n ({args.n})")
    for t in args.temperatures:
        if not t > 0:
            raise ValueError(f"--temperatures must be > 0 (sampling), got {t}; greedy is the baseline row")


def _tasks(args: argparse.Namespace) -> tuple[list[CountdownTask], dict[str, Any]]:
    if args.tasks_file:
        tasks = load_tasks_file(args.tasks_file)[: args.n_tasks]
        return tasks, {"tasks_file": str(Path(args.tasks_file).resolve()), "n_tasks": len(tasks)}
    tasks = heldout_tasks(
        args.n_tasks, seed=args.seed, num_numbers=args.num_numbers, max_number=args.max_number
    )
    source = {
        "heldout": True,
        "n_test": args.n_tasks,
        "seed": args.seed,
        "num_numbers": args.num_numbers,
        "max_number": args.max_number,
        "heldout_percent": HELDOUT_PERCENT,
    }
    return tasks, source


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    try:
        _check_args(args)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    started = time.perf_counter()
    label = Path(str(args.model or args.samples)).name or "model"
    out = Path(args.output_dir or os.path.join("runs", "tts", f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"))
    out.mkdir(parents=True, exist_ok=True)
    options = {**vars(args), "progress": not args.no_progress}
    summary: dict[str, Any] = {
        "task": "countdown",
        "strategy": args.strategy,
        "verifiers": list(args.verifier),
        "model": args.model,
        "rule_verifier_note": "reads only the puzzle (numbers, target); complete on Countdown, so = oracle",
        "runs": {},
    }

    if args.samples:
        from posttrain.models import load_tokenizer

        rows = load_samples(args.samples)
        tokenizer = load_tokenizer(_samples_model(args.samples) or "embedded")
        samples = sample_set_from_rows(rows, tokenizer)
        run = analyse(
            samples, args.verifier, options, chunk=min(args.chunk, samples.n), orderings=args.orderings
        )
        run.update(verifiers=list(args.verifier), greedy_accuracy=None, samples_path=str(args.samples))
        _finish_run(out, "samples", run, summary, args)
    else:
        template = args.template or trained_template(args.model) or "chat"
        max_new = args.max_new_tokens or (256 if template in ("base", "chat") else 32)
        model, tokenizer = load_hf_model(args.model, None)
        tasks, source = _tasks(args)
        summary.update(template=template, task_source=source, max_new_tokens=max_new)
        greedy = None
        if not args.no_greedy:
            g = evaluate_countdown(
                model,
                tasks,
                template=template,
                tokenizer=tokenizer,
                output_dir=out / "greedy",
                params=SamplingParams(max_new_tokens=max_new, batch_size=args.batch_size, seed=args.seed),
                model_label=args.model,
                task_source=source,
                print_table=False,
                progress=not args.no_progress,
            )
            greedy = g["accuracy"]
            summary["greedy_accuracy"] = greedy
        for temp in args.temperatures:
            params = SamplingParams(
                max_new_tokens=max_new,
                temperature=temp,
                top_p=args.top_p,
                top_k=args.top_k,
                n=args.n,
                seed=args.seed,
                batch_size=args.batch_size,
            )
            key = f"t{temp:g}"
            if args.strategy == "first_verified":
                picks = run_first_verified_live(
                    model,
                    tokenizer,
                    tasks,
                    template=template,
                    params=params,
                    chunk=args.chunk,
                    verifier=args.verifier[0],
                    options=options,
                    progress=not args.no_progress,
                )
                run = _live_summary(picks, args.n, greedy)
                atomic_write_jsonl(out / f"picks-{key}.jsonl", picks)
                summary["runs"][key] = run
                print(json.dumps({key: run}, indent=2))
                continue
            sample_dir = out / f"samples-{key}"
            evaluate_countdown(
                model,
                tasks,
                template=template,
                tokenizer=tokenizer,
                output_dir=sample_dir,
                params=params,
                model_label=args.model,
                task_source=source,
                print_table=False,
                progress=not args.no_progress,
            )
            samples = sample_set_from_rows(load_samples(sample_dir / "samples.jsonl"), tokenizer)
            if args.strategy == "best_of_n":
                picks = run_best_of_n_live(samples, args.verifier[0], options)
                run = _live_summary(picks, args.n, greedy)
                atomic_write_jsonl(out / f"picks-{key}.jsonl", picks)
                summary["runs"][key] = run
                print(json.dumps({key: run}, indent=2))
                continue
            run = analyse(samples, args.verifier, options, chunk=args.chunk, orderings=args.orderings)
            run.update(verifiers=list(args.verifier), greedy_accuracy=greedy, temperature=temp)
            _finish_run(out, key, run, summary, args)
    if args.strategy == "curve" and summary["runs"]:
        plot_curves({k: v for k, v in summary["runs"].items()}, out / "accuracy_vs_compute.png")
        summary["plot"] = str(out / "accuracy_vs_compute.png")
    summary["wall_time_s"] = round(time.perf_counter() - started, 1)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"summary: {out / 'summary.json'}")
    return summary


def _samples_model(samples_path: str) -> str | None:
    """The model of the eval.countdown run that wrote ``samples_path`` (its summary.json), if any."""
    summary = Path(samples_path).with_name("summary.json")
    try:
        return json.loads(summary.read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError):
        return None


def _finish_run(
    out: Path, key: str, run: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace
) -> None:
    atomic_write_jsonl(out / f"per_task-{key}.jsonl", run.pop("per_task"))
    summary["runs"][key] = run
    print_curve(
        f"{args.model or args.samples} [{key}]", run.get("greedy_accuracy"), run["curve"], args.verifier
    )
    for name, report in run["verifier_report"].items():
        auc = "n/a (one class only)" if report["auroc"] is None else f"{report['auroc']:.3f}"
        print(
            f"verifier {name}: AUROC {auc}, accepts {report['accepted_share']:.1%} of candidates, "
            f"{report['verifier_tokens']} verifier tokens"
        )


def _live_summary(picks: Sequence[dict[str, Any]], budget: int, greedy: float | None) -> dict[str, Any]:
    n = len(picks)
    tokens = sum(p["completion_tokens"] for p in picks) / n
    drawn = sum(p["samples_drawn"] for p in picks) / n
    return {
        "accuracy": sum(p["correct"] for p in picks) / n,
        "greedy_accuracy": greedy,
        "verified_share": sum(p["verified"] for p in picks) / n,
        "samples_per_task": drawn,
        "budget_per_task": budget,
        "completion_tokens_per_task": tokens,
        "samples_saved_share": 1 - drawn / budget,
    }


if __name__ == "__main__":
    run_cli(main)
