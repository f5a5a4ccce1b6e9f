"""Grade-school maths evaluation: accuracy, format rate and pass@k on held-out problems.

    python -m eval.gsm8k --model runs/sft-gsm8k/model --n_tasks 200 --output_dir runs/sft-gsm8k/eval-after
    python -m eval.gsm8k --model ... --dataset openai/gsm8k --temperature 0.7 --n 8 --k 1 8

Problems are the test split of the generator (`posttrain.gsm8k`: no test question is ever a training question)
or of `openai/gsm8k`. A sample is correct when its final answer equals the problem's (`rewards.maths`, with
math-verify); the format rate is the share in the ``<think>…</think><answer>…</answer>`` format. The files match
`eval.countdown`'s (samples.jsonl with task_index, task and correct; summary.json with accuracy and format_rate),
so `eval.compare` and `eval.paired` read them too.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from eval.countdown import pass_at_k
from posttrain.cli import run_cli
from posttrain.gsm8k import GENERATED, GSM8K_HUB_ID, gsm8k_prompt, gsm8k_rows
from posttrain.io import atomic_write_json, atomic_write_jsonl
from posttrain.sampling import SamplingParams, generate
from rewards.format import format_reward
from rewards.maths import math_reward


def evaluate_gsm8k(
    model: str,
    *,
    dataset: str = GENERATED,
    n_tasks: int = 200,
    seed: int = 0,
    params: SamplingParams | None = None,
    ks: Sequence[int] = (1,),
    output_dir: str | Path | None = None,
    revision: str | None = None,
) -> dict[str, Any]:
    params = params or SamplingParams(max_new_tokens=256)
    rows = gsm8k_rows(dataset, "test", n_tasks, seed=seed, revision=revision)
    if not rows:
        raise ValueError("no problems to evaluate")
    prompts = [gsm8k_prompt(r["question"]) for r in rows]
    started = time.perf_counter()
    completions = generate(model, prompts, params)
    seconds = time.perf_counter() - started
    samples, per_task = [], []
    for i, (row, texts) in enumerate(zip(rows, completions, strict=True)):
        correct = math_reward(texts, answer=[row["answer"]] * len(texts))
        formatted = format_reward(texts)
        per_task.append(int(sum(correct)))
        for j, text in enumerate(texts):
            samples.append(
                {
                    "task_index": i,
                    "sample_index": j,
                    "task": {"question": row["question"], "answer": row["answer"]},
                    "completion": text,
                    "correct": bool(correct[j]),
                    "formatted": bool(formatted[j]),
                }
            )
    n = params.n
    summary: dict[str, Any] = {
        "task": "gsm8k",
        "model": model,
        "n_tasks": len(rows),
        "n_samples_per_task": n,
        "accuracy": sum(s["correct"] for s in samples) / len(samples),
        "format_rate": sum(s["formatted"] for s in samples) / len(samples),
        "mean_reward": sum(s["correct"] for s in samples) / len(samples),
        "sampling": params.to_dict(),
        "task_source": {"dataset": dataset, "split": "test", "seed": seed, "revision": revision},
        "generation_seconds": round(seconds, 3),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if n > 1 and not params.greedy:
        summary["pass_at_k"] = {
            str(k): sum(pass_at_k(n, c, k) for c in per_task) / len(per_task) for k in sorted({1, n, *ks})
        }
    if output_dir is not None:
        atomic_write_jsonl(Path(output_dir) / "samples.jsonl", samples)
        atomic_write_json(Path(output_dir) / "summary.json", summary)
    line = f"{model}: accuracy {summary['accuracy']:.3f}, format rate {summary['format_rate']:.3f} on {len(rows)} problems"
    if "pass_at_k" in summary:
        line += ", " + ", ".join(f"pass@{k} {v:.3f}" for k, v in summary["pass_at_k"].items())
    print(line)
    return summary


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", choices=(GENERATED, GSM8K_HUB_ID), default=GENERATED)
    parser.add_argument("--revision", default=None, help="hub revision of openai/gsm8k")
    parser.add_argument("--n_tasks", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--n", type=int, default=1, help="samples per problem")
    parser.add_argument("--k", type=int, nargs="+", default=[1], help="pass@k values (sampling with n > 1)")
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--output_dir", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = make_parser().parse_args(argv)
    try:
        if args.n_tasks < 1:
            raise ValueError(f"--n_tasks must be >= 1, got {args.n_tasks}")
        if any(k < 1 or k > args.n for k in args.k):
            raise ValueError(f"--k values must be within 1..--n ({args.n}), got {args.k}")
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            n=args.n,
            seed=args.seed,
            batch_size=args.batch_size,
        )
        return evaluate_gsm8k(
            args.model,
            dataset=args.dataset,
            n_tasks=args.n_tasks,
            seed=args.seed,
            params=params,
            ks=args.k,
            output_dir=args.output_dir,
            revision=args.revision,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    run_cli(main)
