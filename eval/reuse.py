"""Reuse an evaluation that already measured a model with the same settings (a Makefile helper).

    python -m eval.reuse runs/sft-countdown/eval-after --output_dir runs/grpo-countdown/eval-before \
        --model runs/sft-countdown/model --template short --n_tasks 200 --seed 1234 --max_new_tokens 96

The SFT run's `eval-after` is the RL and DPO runs' evaluation of their start model: when a source folder holds a
greedy held-out `eval.countdown` summary of the same model (weights not newer than it), tasks and settings, it
is copied to --output_dir and the command exits 0; otherwise it exits 1 and the Makefile evaluates afresh.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from posttrain.cli import run_cli


def _weights_mtime(model: str) -> float | None:
    folder = Path(model)
    files = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))
    return max((f.stat().st_mtime for f in files), default=None)


def matching_eval(
    folder: str | os.PathLike, *, model: str, template: str, n_tasks: int, seed: int, max_new_tokens: int
) -> bool:
    """True when `folder/summary.json` is a greedy eval of `model` (as it is now) with these settings."""
    path = Path(folder) / "summary.json"
    if not path.is_file():
        return False
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    source = summary.get("task_source") or {}
    sampling = summary.get("sampling") or {}
    weights = _weights_mtime(model)
    return (
        summary.get("model") == model
        and summary.get("template") == template
        and summary.get("greedy") is True
        and summary.get("n_tasks") == n_tasks
        and summary.get("seed") == seed
        and source.get("heldout") is True
        and source.get("num_numbers") == 3
        and sampling.get("max_new_tokens") == max_new_tokens
        and (weights is None or path.stat().st_mtime >= weights)
    )


def reuse_eval(argv: Sequence[str] | None = None) -> int:
    """Copy the first matching evaluation to --output_dir; exit status 0 when one was found, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m eval.reuse")
    parser.add_argument("sources", nargs="+", help="eval folders that may already hold the wanted evaluation")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--template", required=True)
    parser.add_argument("--n_tasks", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--max_new_tokens", type=int, required=True)
    args = parser.parse_args(argv)
    want = dict(
        model=args.model,
        template=args.template,
        n_tasks=args.n_tasks,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
    )
    out = Path(args.output_dir)
    for source in [str(out), *args.sources]:
        if matching_eval(source, **want):
            if Path(source).resolve() != out.resolve():
                if out.exists():
                    shutil.rmtree(out)
                shutil.copytree(source, out)
            print(f"Reusing the evaluation of {args.model} in {source} (same tasks and settings).")
            return 0
    return 1


if __name__ == "__main__":
    raise SystemExit(run_cli(reuse_eval))
