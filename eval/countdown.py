"""Countdown evaluation: accuracy, format rate and pass@k of a model on held-out Countdown tasks.

    python -m eval.countdown --model embedded --n_tasks 200 --template chat --output_dir runs/eval/smol
    python -m eval.countdown --model runs/sft/final --temperature 0.6 --top_p 0.95 --top_k 20 --n 8 --k 1 8

Metrics (per sample, the reward is `rewards.countdown.score`: 0 no answer, 0.1 wrong, 1 correct)
- accuracy: share of correct samples over all tasks and samples. With ``temperature == 0`` this is greedy
  accuracy; with sampling it is the mean accuracy over samples (= the unbiased pass@1).
- pass@k (only when ``temperature > 0`` and ``n > 1``): Chen et al. (2021) unbiased estimator
  ``1 - C(n - c, k) / C(n, k)`` per task (c correct of n samples), averaged over tasks.
- format_rate: share of samples with an ``<answer>`` span (reward > 0); mean_reward: mean of the reward.

Held-out tasks come from `posttrain.data.heldout_tasks`: a fixed share of the puzzle key space is reserved for
evaluation and never trained on, so a given (n_tasks, seed, num_numbers, max_number) names one fixed test set
that no recipe's training data can overlap.

Outputs (written atomically to ``output_dir``): ``samples.jsonl`` (one line per sample) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from numbers import Integral
from pathlib import Path
from typing import Any

from posttrain.cli import run_cli
from posttrain.countdown import PROMPT_TEMPLATES, CountdownTask, make_prompt
from posttrain.data import DEFAULT_TASK_SEED, HELDOUT_PERCENT, heldout_tasks
from posttrain.io import atomic_write_text, read_jsonl
from posttrain.models import load_tokenizer, trained_template
from posttrain.sampling import (
    BACKENDS,
    SamplingParams,
    generate,
    load_hf_model,
    render_prompts,
    resolve_backend,
)
from rewards.countdown import score

BASE_SEED_SUFFIX = "<think>"  # the "base" template pre-seeds the completion with this

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------


def load_tasks_file(path: str | os.PathLike[str]) -> list[CountdownTask]:
    """Tasks from JSONL rows ``{"target": int, "nums": [int, ...]}`` (opt. "solution"); blank lines skip."""
    tasks = [task_from_row(row, where) for where, row in read_jsonl(path, "tasks file")]
    if not tasks:
        raise ValueError(f"tasks file {path} holds no tasks")
    return tasks


def _is_int(x: Any) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def task_from_row(row: Any, where: str) -> CountdownTask:
    """A CountdownTask from a JSON row `{"target", "nums", "solution"?}`; errors name `where` and the field."""
    if not isinstance(row, dict):
        raise ValueError(
            f"{where}: expected an object with fields 'target' and 'nums', got {type(row).__name__}"
        )
    for field in ("target", "nums"):
        if field not in row:
            raise ValueError(f"{where}: missing field {field!r} (fields present: {sorted(row)})")
    target, nums = row["target"], row["nums"]
    if not _is_int(target) or target < 0:
        raise ValueError(f"{where}: field 'target' must be a non-negative int, got {target!r}")
    if not isinstance(nums, list) or len(nums) < 2 or not all(_is_int(x) and x >= 0 for x in nums):
        raise ValueError(
            f"{where}: field 'nums' must be a list of at least 2 non-negative ints, got {nums!r}"
        )
    solution = row.get("solution", "")
    if not isinstance(solution, str):
        raise ValueError(f"{where}: field 'solution' must be a string, got {solution!r}")
    return CountdownTask(target=int(target), nums=tuple(int(x) for x in nums), solution=solution)


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): chance that k of n samples (c correct) hold a correct one."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # 1 - C(n-c, k) / C(n, k) as a running product: stable for large n.
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def _ks(k: int | Sequence[int], n: int) -> list[int]:
    ks = [k] if isinstance(k, Integral) else list(k)
    for value in ks:
        if isinstance(value, bool) or not isinstance(value, Integral) or not 1 <= value <= n:
            raise ValueError(f"pass@k needs 1 <= k <= n (n={n} samples per task), got k={value!r}")
    return sorted({1, n, *(int(v) for v in ks)})


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------


def _model_label(model: Any, label: str | None) -> str:
    if label:
        return label
    if isinstance(model, str):
        return model
    return str(getattr(model, "name_or_path", "") or type(model).__name__)


def evaluate_countdown(
    model: Any,
    tasks: Sequence[CountdownTask],
    *,
    template: str = "chat",
    params: SamplingParams | None = None,
    output_dir: str | os.PathLike[str] | None,
    tokenizer: Any = None,
    k: int | Sequence[int] = 1,
    model_label: str | None = None,
    revision: str | None = None,
    backend: str = "auto",
    task_source: dict[str, Any] | None = None,
    print_table: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample completions for ``tasks``, score them, write samples.jsonl + summary.json, return the summary.

    ``model`` is a name/path/"embedded" or a loaded causal LM (pass its ``tokenizer``; see
    `posttrain.sampling.generate`).
    ``k`` is one or several k for pass@k, reported (with k=1 and k=n) only when sampling with ``n > 1``.
    ``output_dir=None`` skips writing files (for in-training evaluation). ``task_source`` is recorded as-is.
    Under multi-process training call it on the main process only (``if accelerator.is_main_process``).
    """
    params = params or SamplingParams()
    tasks = list(tasks)
    ks = check_request(tasks, template, params, k)
    prompts = [make_prompt(t.nums, t.target, template) for t in tasks]
    model, tokenizer = _with_tokenizer(model, tokenizer, revision)
    prompt_texts = render_prompts(prompts, tokenizer)

    start = time.perf_counter()
    completions = generate(
        model, prompts, params, tokenizer=tokenizer, backend=backend, revision=revision, progress=progress
    )
    gen_seconds = time.perf_counter() - start

    rows, per_task_correct = score_samples(tasks, prompts, prompt_texts, completions)
    metrics = summarize(rows, per_task_correct, params, ks)
    pass_k = metrics.pop("pass_at_k", None)
    summary: dict[str, Any] = {
        "task": "countdown",
        "model": _model_label(model, model_label),
        "revision": revision,
        "template": template,
        **metrics,
        "backend": resolve_backend(backend, model),
        "task_source": task_source,
        "generation_seconds": round(gen_seconds, 3),
        "wall_time_s": round(time.perf_counter() - start, 3),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if pass_k is not None:
        summary["pass_at_k"] = pass_k
    if output_dir is not None:
        write_outputs(summary, rows, output_dir)
    if print_table:
        print_summary(summary)
    return summary


def check_request(
    tasks: Sequence[CountdownTask], template: str, params: SamplingParams, k: int | Sequence[int]
) -> list[int]:
    """Fail before any model loads on no tasks or an unknown template; the pass@k values to report."""
    if not tasks:
        raise ValueError("no tasks to evaluate")
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; valid names: {sorted(PROMPT_TEMPLATES)}")
    if params.greedy and params.n > 1:
        logger.warning(
            "temperature 0 with n=%d: greedy samples are identical, pass@k is not reported", params.n
        )
    return _ks(k, params.n) if not params.greedy and params.n > 1 else []


def _with_tokenizer(model: Any, tokenizer: Any, revision: str | None) -> tuple[Any, Any]:
    """(model, tokenizer): a loaded model's own tokenizer, or the named model's."""
    if tokenizer is None and not isinstance(model, str):
        return load_hf_model(model, None, revision=revision)
    if tokenizer is None:
        tokenizer = load_tokenizer(model, revision=revision)
    return model, tokenizer


def score_samples(
    tasks: Sequence[CountdownTask],
    prompts: Sequence[Any],
    prompt_texts: Sequence[str],
    completions: Sequence[Sequence[str]],
) -> tuple[list[dict[str, Any]], list[int]]:
    """One row per sample (task, prompt, completion, reward, correct) and the number correct per task."""
    rows: list[dict[str, Any]] = []
    per_task_correct: list[int] = []
    for i, (task, text, outs) in enumerate(zip(tasks, prompt_texts, completions, strict=True)):
        # Raw-text prompts end in a pre-seeded "<think>": score what the model "said", seed included.
        seed_prefix = (
            BASE_SEED_SUFFIX if isinstance(prompts[i], str) and text.endswith(BASE_SEED_SUFFIX) else ""
        )
        n_correct = 0
        for j, completion in enumerate(outs):
            reward = score(seed_prefix + completion, task.target, list(task.nums))
            correct = reward == 1.0
            n_correct += correct
            rows.append(
                {
                    "task_index": i,
                    "sample_index": j,
                    "task": {"target": task.target, "nums": list(task.nums), "solution": task.solution},
                    "prompt": text,
                    "completion": completion,
                    "reward": reward,
                    "correct": correct,
                }
            )
        per_task_correct.append(n_correct)
    return rows, per_task_correct


def summarize(
    rows: Sequence[dict[str, Any]], per_task_correct: Sequence[int], params: SamplingParams, ks: Sequence[int]
) -> dict[str, Any]:
    """The metrics of scored samples: accuracy (with its standard error over tasks), format rate, pass@k (last)."""
    n_tasks = len(per_task_correct)
    n_samples = len(rows)
    per_task_acc = [c / params.n for c in per_task_correct]
    summary: dict[str, Any] = {
        "greedy": params.greedy,
        "accuracy": sum(per_task_acc) / n_tasks,
        # Standard error over tasks (tasks are the independent unit; samples of one task are correlated).
        "accuracy_stderr": stderr(per_task_acc),
        "mean_reward": sum(r["reward"] for r in rows) / n_samples,
        "format_rate": sum(r["reward"] > 0 for r in rows) / n_samples,
        "n_tasks": n_tasks,
        "n_samples": n_samples,
        "samples_per_task": params.n,
        "sampling": params.to_dict(),
        "seed": params.seed,
    }
    if ks:
        summary["pass_at_k"] = {
            str(kk): sum(pass_at_k(params.n, c, kk) for c in per_task_correct) / n_tasks for kk in ks
        }
    return summary


def write_outputs(
    summary: dict[str, Any], rows: Sequence[dict[str, Any]], output_dir: str | os.PathLike[str]
) -> None:
    """samples.jsonl and summary.json (which records the samples' path), each written atomically."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary["samples_path"] = str(out / "samples.jsonl")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def stderr(values: Sequence[float]) -> float:
    """Standard error of the mean (0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Countdown: {summary['model']} ({summary['template']} template)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    acc_name = "greedy accuracy" if summary["greedy"] else "mean accuracy (pass@1)"
    table.add_row(acc_name, f"{summary['accuracy']:.3f} ± {summary['accuracy_stderr']:.3f}")
    for kk, value in (summary.get("pass_at_k") or {}).items():
        table.add_row(f"pass@{kk}", f"{value:.3f}")
    table.add_row("format rate", f"{summary['format_rate']:.3f}")
    table.add_row("mean reward", f"{summary['mean_reward']:.3f}")
    table.add_row("tasks x samples", f"{summary['n_tasks']} x {summary['samples_per_task']}")
    table.add_row("wall time (s)", f"{summary['wall_time_s']:.1f}")
    Console(file=sys.stdout).print(table)


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval.countdown",
        description="Evaluate a model on held-out Countdown tasks (accuracy, format rate, pass@k).",
    )
    p.add_argument(
        "--model", default="embedded", help="hub name, local folder, or 'embedded' (offline default)"
    )
    p.add_argument("--revision", default=None, help="hub revision (commit sha) of --model")
    p.add_argument(
        "--template",
        default=None,
        choices=sorted(PROMPT_TEMPLATES),
        help="prompt template; default: the one the model was trained with (its run_summary.json), else chat",
    )
    p.add_argument(
        "--output_dir", default=None, help="default: runs/eval/countdown-<model>-<template>-<time>"
    )
    g = p.add_argument_group("tasks")
    g.add_argument("--tasks_file", default=None, help='JSONL of {"target": int, "nums": [int, ...]}')
    g.add_argument(
        "--n_tasks", type=int, default=None, help="held-out tasks (default 200); with --tasks_file: first N"
    )
    g.add_argument("--num_numbers", type=int, default=3)
    g.add_argument("--max_number", type=int, default=30)
    g.add_argument(
        "--seed", type=int, default=DEFAULT_TASK_SEED, help="task seed (and sampling seed by default)"
    )
    s = p.add_argument_group("sampling")
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    s.add_argument("--top_p", type=float, default=1.0)
    s.add_argument("--top_k", type=int, default=0, help="0 = disabled")
    s.add_argument("--n", type=int, default=1, help="samples per task")
    s.add_argument(
        "--k", type=int, nargs="+", default=[1], help="pass@k values (with --n > 1, temperature > 0)"
    )
    s.add_argument("--max_new_tokens", type=int, default=256)
    s.add_argument(
        "--batch_size", type=int, default=None, help="sequences per generate call (default 32 CPU, 64 GPU)"
    )
    s.add_argument("--sampling_seed", type=int, default=None, help="default: --seed")
    s.add_argument("--backend", default="auto", choices=BACKENDS)
    s.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


def _slug(text: str) -> str:
    return (
        "".join(c if c.isalnum() or c in "-." else "-" for c in text.strip("/").split("/")[-1])[:60]
        or "model"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.template is None:
        args.template = trained_template(args.model) or "chat"
    try:
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            n=args.n,
            seed=args.seed if args.sampling_seed is None else args.sampling_seed,
            batch_size=args.batch_size,
        )
        if args.n_tasks is not None and args.n_tasks < 1:
            raise ValueError(f"--n_tasks must be >= 1, got {args.n_tasks}")
        if args.tasks_file:
            tasks = load_tasks_file(args.tasks_file)[: args.n_tasks]
            source: dict[str, Any] = {
                "tasks_file": str(Path(args.tasks_file).resolve()),
                "n_tasks": len(tasks),
            }
        else:
            n_test = args.n_tasks or 200
            tasks = heldout_tasks(
                n_test, seed=args.seed, num_numbers=args.num_numbers, max_number=args.max_number
            )
            source = {
                "heldout": True,
                "n_test": n_test,
                "seed": args.seed,
                "num_numbers": args.num_numbers,
                "max_number": args.max_number,
                "heldout_percent": HELDOUT_PERCENT,
            }
        if not params.greedy and params.n > 1:
            _ks(args.k, params.n)  # fail before loading the model
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None

    output_dir = args.output_dir or os.path.join(
        "runs", "eval", f"countdown-{_slug(args.model)}-{args.template}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    summary = evaluate_countdown(
        args.model,
        tasks,
        template=args.template,
        params=params,
        output_dir=output_dir,
        k=args.k,
        revision=args.revision,
        backend=args.backend,
        task_source=source,
        progress=not args.no_progress,
    )
    print(f"summary: {Path(output_dir) / 'summary.json'}")
    return summary


if __name__ == "__main__":
    run_cli(main)
