"""CPU throughput benchmark (run on purpose, not in tests): reward scoring and SFT training variants.

    .venv/bin/python benchmarks/cpu_throughput.py [--sft_steps 4] [--variants padded,padding_free,lora,compact]

Prints two tables: Countdown reward completions/s, and SFT tokens/s for each variant measured side by side in
one process on the embedded SmolLM2-135M-Instruct (same data, same batch), so machine noise hits all alike.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from rich.console import Console
from rich.table import Table

from posttrain.countdown import build_sft_records, generate_tasks, make_warmstart_completion
from posttrain.models import resolve_model_name
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


class StepTimer:
    """Trainer callback recording the wall time of each optimisation step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def __getattr__(self, name):  # every other TrainerCallback hook is a no-op
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_step_begin(self, *args, **kwargs) -> None:
        self._start = time.perf_counter()

    def on_step_end(self, *args, **kwargs) -> None:
        self.times.append(time.perf_counter() - self._start)


VARIANTS = {
    # name: (SFTConfig overrides, ModelConfig-like peft flag, prompt template); completions are verified steps
    "padded": (dict(), False, "chat"),
    # padding-free without packing cannot enforce max_length; our sequences are short anyway.
    "padding_free": (dict(padding_free=True, max_length=None), False, "chat"),
    "lora": (dict(learning_rate=1e-3), True, "chat"),
    "compact": (dict(), False, "compact"),
    "compact_lora": (dict(learning_rate=1e-3), True, "compact"),
    # bf16 autocast on CPUs with AVX512-BF16 / AMX (weights and optimizer state stay float32)
    "compact_bf16": (dict(bf16=True), False, "compact"),
    "short": (dict(), False, "short"),
    "short_bf16": (dict(bf16=True), False, "short"),
    "short_bf16_lora": (dict(bf16=True, learning_rate=1e-3), True, "short"),
}


def bench_sft(variants: list[str], steps: int, batch_size: int) -> Table:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    model_path = resolve_model_name("embedded")
    tasks = generate_tasks(batch_size * (steps + 1), seed=0)
    table = Table(title=f"SFT on CPU, embedded SmolLM2-135M, batch {batch_size}, {steps} timed steps")
    for col in ("variant", "s/step", "tokens/s (non-pad)", "examples/s", "final loss"):
        table.add_column(col)
    for name in variants:
        overrides, use_lora, template = VARIANTS[name]
        overrides = dict(overrides)
        records = build_sft_records(tasks, template=template, seed=0)
        with tempfile.TemporaryDirectory() as out:
            args = SFTConfig(
                output_dir=out,
                per_device_train_batch_size=batch_size,
                max_steps=steps + 1,
                learning_rate=overrides.pop("learning_rate", 2e-4),
                gradient_checkpointing=False,
                bf16=overrides.pop("bf16", False),
                use_cpu=True,
                report_to="none",
                save_strategy="no",
                logging_steps=1,
                disable_tqdm=True,
                eos_token="<|im_end|>",
                **overrides,
            )
            peft = (
                LoraConfig(r=32, lora_alpha=64, target_modules="all-linear", task_type="CAUSAL_LM")
                if use_lora
                else None
            )
            trainer = SFTTrainer(
                model=model_path, args=args, train_dataset=Dataset.from_list(records), peft_config=peft
            )
            timer = StepTimer()
            trainer.add_callback(timer)
            result = trainer.train()
            times = timer.times
            tokens: list[int] = []
            for row in trainer.train_dataset.select(range(batch_size, batch_size * (steps + 1))):
                tokens.append(len(row["input_ids"]))
            timed = sum(times[1:])  # the first step pays one-off warm-up costs
            table.add_row(
                name,
                f"{timed / steps:.2f}",
                f"{sum(tokens) / timed:,.0f}",
                f"{batch_size * steps / timed:.2f}",
                f"{result.training_loss:.3f}",
            )
            console.print(f"[dim]{name}: done ({torch.get_num_threads()} threads)[/dim]")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sft_steps", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--variants", default="padded,padding_free,lora,compact,compact_lora,compact_bf16")
    parser.add_argument("--skip_sft", action="store_true")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {sorted(VARIANTS)}")
    console.print(bench_rewards())
    if not args.skip_sft:
        console.print(bench_sft(variants, args.sft_steps, args.batch_size))


if __name__ == "__main__":
    main()
