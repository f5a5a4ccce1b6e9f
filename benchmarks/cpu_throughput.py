"""Reward throughput benchmark (run on purpose, not in tests): Countdown reward completions/s on warm-start
traces and on hostile inputs.

    .venv/bin/python benchmarks/cpu_throughput.py

Training throughput (SFT, DPO, GRPO variants) is benchmarks/throughput.py.
"""

from __future__ import annotations

import argparse
import random
import time

from rich.console import Console
from rich.table import Table

from posttrain.countdown import generate_tasks, make_warmstart_completion
from rewards.countdown import countdown_reward

console = Console()


def bench_rewards(n: int = 20000) -> Table:
    tasks = generate_tasks(500, seed=0, num_numbers=(3, 4))
    rng = random.Random(0)
    completions, targets, nums = [], [], []
    for i in range(n):
        task = tasks[i % len(tasks)]
        completions.append(
            make_warmstart_completion(task, rng=rng, max_failed_tries=2, failed_trace_share=0.3)
        )
        targets.append(task.target)
        nums.append(list(task.nums))
    hostile = ["<answer>" + "(" * 100_000 + "</answer>", "<answer>9**9**9**9</answer>", "x" * 1_000_000]
    table = Table(title="Countdown reward throughput")
    for col in ("input", "n", "seconds", "completions/s"):
        table.add_column(col)
    start = time.perf_counter()
    countdown_reward(completions, target=targets, nums=nums)
    elapsed = time.perf_counter() - start
    table.add_row("warm-start traces", str(n), f"{elapsed:.3f}", f"{n / elapsed:,.0f}")
    k = 30
    start = time.perf_counter()
    countdown_reward(hostile * k, target=[24] * 3 * k, nums=[[9, 9, 9, 9]] * 3 * k)
    elapsed = time.perf_counter() - start
    table.add_row(
        "hostile (100k parens, power tower, 1 MB)", str(3 * k), f"{elapsed:.3f}", f"{3 * k / elapsed:,.0f}"
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20000, help="warm-start traces to score")
    args = parser.parse_args()
    console.print(bench_rewards(args.n))


if __name__ == "__main__":
    main()
