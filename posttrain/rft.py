"""Rejection-sampling fine-tuning on Countdown (expert iteration / ReST / STaR): the baseline RL must beat.

Each round samples `rft_samples_per_prompt` completions for fresh training prompts with the current model,
keeps the verified-correct ones (the rule verifier, no reference solution), and fine-tunes on them with TRL's
SFTTrainer. Rounds are resumable: a round whose model folder is complete is not run again.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.countdown import CountdownTask, make_prompt
from rewards.countdown import score

logger = logging.getLogger(__name__)

ROUND_DONE = "round.json"


@dataclass
class RFTArguments:
    """Rejection-sampling rounds (the SFT settings of each round are TRL's SFTConfig)."""

    rft_rounds: int = field(default=2, metadata={"help": "Sample -> filter -> SFT rounds."})
    rft_prompts_per_round: int = field(default=512, metadata={"help": "Fresh training prompts per round."})
    rft_samples_per_prompt: int = field(default=8, metadata={"help": "Completions sampled per prompt (k)."})
    rft_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rounds."})
    rft_max_new_tokens: int = field(default=32, metadata={"help": "Longest sampled completion (tokens)."})
    rft_max_per_prompt: int = field(
        default=0,
        metadata={"help": "Keep at most this many distinct correct completions per prompt (0: all)."},
    )
    rft_add_solutions: bool = field(
        default=False,
        metadata={
            "help": "Also train on the known solution of prompts no sample solved (signal on hard tasks)."
        },
    )

    def __post_init__(self) -> None:
        for name in ("rft_rounds", "rft_prompts_per_round", "rft_samples_per_prompt", "rft_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)} (fix: --{name} 2)")
        if self.rft_max_per_prompt < 0:
            raise ValueError(f"rft_max_per_prompt must be >= 0, got {self.rft_max_per_prompt}")
        if not self.rft_temperature > 0:
            raise ValueError(
                f"rft_temperature must be > 0 (greedy samples are all alike), got {self.rft_temperature}"
            )


def select_records(
    tasks: list[CountdownTask], samples: list[list[str]], template: str, rft_args: RFTArguments
) -> tuple[list[dict], dict[str, Any]]:
    """SFT records from the verified-correct samples (distinct per prompt, in first-seen order)."""
    records: list[dict] = []
    solved = 0
    for task, completions in zip(tasks, samples, strict=True):
        right: list[str] = []
        for text in completions:
            answer = text.strip()
            if answer not in right and score(answer, task.target, list(task.nums)) == 1.0:
                right.append(answer)
        solved += bool(right)
        if rft_args.rft_max_per_prompt:
            right = right[: rft_args.rft_max_per_prompt]
        if not right and rft_args.rft_add_solutions and task.solution:
            right = [f"<answer>{task.solution}</answer>"]
        prompt = make_prompt(task.nums, task.target, template)
        records.extend({"prompt": prompt, "completion": [{"role": "assistant", "content": a}]} for a in right)
    stats = {
        "prompts": len(tasks),
        "solved_share": solved / len(tasks) if tasks else 0.0,
        "records": len(records),
    }
    return records, stats


def round_is_done(folder: Path) -> bool:
    return (folder / ROUND_DONE).is_file() and (folder / "config.json").is_file()


def copy_model(source: Path, target: Path) -> None:
    """Replace `target` with the files of `source` (the chosen round's model) via a temporary folder."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("checkpoint-*", "runs", "tensorboard"))
    for item in target.iterdir() if target.is_dir() else []:
        if item.name.startswith("round") or item.name in ("tensorboard",):
            continue
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink()
    target.mkdir(parents=True, exist_ok=True)
    for item in tmp.iterdir():
        item.replace(target / item.name)
    tmp.rmdir()
