"""Did a Countdown RL run change the prompts it trained on? Greedy accuracy, start against trained, paired, on the
training prompts the run drew and on prompts of the same training pool it never reached.

    .venv/bin/python benchmarks/rl_seen_prompts.py --start runs/sft-countdown/model --trained runs/grpo-countdown/model

Held-out accuracy alone cannot tell an update that fits its own prompts without transferring from one too small to
fit them at all; this can. The prompts a run drew are recovered from its `run_summary.json` by replaying TRL's
`RepeatSampler` (a permutation seeded with the run's `seed`, `generation_batch_size / num_generations` prompts per
generation batch), so it holds for single-process runs that were not resumed, on generated Countdown tasks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class SeenPromptsError(ValueError):
    """The run cannot be replayed (named field, and why)."""


def seen_prompt_count(training: dict[str, Any], n_train: int) -> int:
    """How many distinct training prompts the run drew: generation batches x prompts per batch, capped at the pool."""
    per_batch = training["generation_batch_size"] // training["num_generations"]
    steps_per_batch = training["steps_per_generation"] * training["num_iterations"]
    batches = math.ceil(training["max_steps"] / steps_per_batch)
    return min(batches * per_batch, n_train)


def sampler_order(n_train: int, seed: int) -> list[int]:
    """The first epoch's prompt order of TRL's RepeatSampler (`torch.randperm` on a generator seeded with `seed`)."""
    import torch

    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n_train, generator=generator).tolist()


def replay_run(summary: dict[str, Any]) -> tuple[list, list[int], int]:
    """(training tasks, their sampler order, how many of them the run drew), from a run's run_summary.json."""
    from posttrain.configs import CountdownArguments
    from posttrain.rl import countdown_rl_tasks

    if summary.get("task") != "countdown" or summary.get("data_source") != "generated":
        raise SeenPromptsError(
            "only runs on generated Countdown tasks can be replayed (data_source: generated)"
        )
    if summary.get("num_processes", 1) != 1:
        raise SeenPromptsError(
            f"num_processes is {summary['num_processes']}: only single-process runs are replayed"
        )
    if summary.get("resumed_from"):
        raise SeenPromptsError(
            f"the run resumed from {summary['resumed_from']}: its sampler order was not one pass"
        )
    args = summary["args"]
    training = args["training"]
    if not training.get("shuffle_dataset", True):
        raise SeenPromptsError("shuffle_dataset is false: this replays the shuffled order only")
    countdown = CountdownArguments(
        **{k: v for k, v in args["countdown"].items() if k in CountdownArguments.__dataclass_fields__}
    )
    script = SimpleNamespace(dataset_name=args["script"].get("dataset_name"), dataset_revision=None)
    tasks, _ = countdown_rl_tasks(script, countdown)  # the tasks the RL recipe built
    max_rows = args["script"].get("dataset_max_train_rows")
    tasks = tasks[:max_rows] if max_rows else tasks
    order = sampler_order(len(tasks), training["seed"])
    n_seen = seen_prompt_count(training, len(tasks))
    if n_seen >= len(tasks):
        raise SeenPromptsError(
            f"the run drew all {len(tasks)} training prompts: no unseen prompts are left to compare"
        )
    return tasks, order, n_seen


def write_tasks(path: Path, tasks: list) -> None:
    with path.open("w") as f:
        for task in tasks:
            f.write(json.dumps({"target": task.target, "nums": list(task.nums)}) + "\n")


def main(argv: list[str] | None = None) -> int:
    from eval.countdown import main as eval_countdown
    from eval.paired import compare_dirs, format_result
    from posttrain.io import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", required=True, help="the RL run's start model")
    parser.add_argument("--trained", required=True, help="the RL run's output folder (with run_summary.json)")
    parser.add_argument(
        "--n", type=int, default=160, help="prompts per set (seen, unseen); at most the seen count"
    )
    parser.add_argument("--output_dir", default=None, help="default: <trained>/../seen-prompts")
    parser.add_argument("--max_new_tokens", type=int, default=48)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n {args.n}: compare at least 1 prompt per set")

    summary_path = Path(args.trained) / "run_summary.json"
    if not summary_path.is_file():
        parser.error(
            f"--trained {args.trained}: no run_summary.json there (is it an RL run's output folder?)"
        )
    try:
        tasks, order, n_seen = replay_run(json.loads(summary_path.read_text()))
    except SeenPromptsError as exc:
        parser.error(f"{summary_path}: {exc}")
    n = min(args.n, n_seen, len(tasks) - n_seen)
    out = Path(args.output_dir or Path(args.trained).parent / "seen-prompts")
    out.mkdir(parents=True, exist_ok=True)
    sets = {"seen": [tasks[i] for i in order[:n]], "unseen": [tasks[i] for i in order[n_seen : n_seen + n]]}
    rows = []
    for name, chosen in sets.items():
        write_tasks(out / f"{name}.jsonl", chosen)
        dirs = {}
        for label, model in (("start", args.start), ("trained", args.trained)):
            dirs[label] = out / f"{name}-{label}"
            eval_countdown(
                [
                    "--model",
                    model,
                    "--tasks_file",
                    str(out / f"{name}.jsonl"),
                    "--n_tasks",
                    str(n),
                    "--max_new_tokens",
                    str(args.max_new_tokens),
                    "--output_dir",
                    str(dirs[label]),
                    "--no_progress",
                ]
            )
        result = compare_dirs(dirs["start"], dirs["trained"])
        rows.append({"set": name, **result})
        print(format_result(result, label=f"{name} prompts: trained - start"))
    atomic_write_json(out / "seen_prompts.json", {"n_seen": n_seen, "n": n, "rows": rows})
    print(
        f"{n_seen} of {len(tasks)} training prompts were drawn; {n} per set compared -> {out}/seen_prompts.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
