"""Per-step time of online RL (TRL GRPOTrainer and RLOOTrainer): generation, reward scoring, update.

    python benchmarks/rl_step_time.py                        # embedded model, the Countdown CPU recipe's batch
    python benchmarks/rl_step_time.py --model runs/sft-countdown/model --steps 5

Same shape as recipes/{grpo,rloo}/countdown.yaml: `--prompts` prompts x `--num_generations` completions per
optimizer step, `--max_completion_length` new tokens, rewards countdown + answer_format. Timings come from TRL's own
profiling contexts (`transformers.generate`, one per reward function, `_prepare_inputs`), which TRL only
reports to wandb/mlflow/trackio, so they are captured here, plus a callback timing each whole step:

- generation: sampling the completions (`model.generate`);
- rewards: all reward functions;
- other prep: the rest of `_prepare_inputs` (tokenising, old/reference log-probs, advantages);
- update: the rest of the step (forward + backward on the completions, optimizer step).

Precision follows the recipes: `--bf16 auto` (default) uses `posttrain.runtime.bf16_default()`, i.e. bf16
autocast on a bf16 GPU or a CPU with AVX512-BF16/AMX, float32 otherwise (weights stay float32 either way);
`--bf16 true|false` forces it. The table title says which was used.

The first `--warmup` steps are not counted. Completions are sampled (temperature 1), so lengths, and with them
the generation time, vary from step to step: treat the figures as the order of magnitude they are.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posttrain.data import train_tasks  # noqa: E402 (after the path set-up: runs as a script)
from posttrain.io import atomic_write_json  # noqa: E402
from posttrain.models import resolve_model_name  # noqa: E402
from posttrain.rl import countdown_rl_rows  # noqa: E402
from posttrain.runtime import bf16_default  # noqa: E402
from rewards.registry import get_reward_funcs  # noqa: E402

TIMINGS: list[tuple[int, str, float]] = []  # (global step at start, profiling name, seconds)


def capture_trl_profiling() -> None:
    """Record every TRL profiling duration (normally only sent to wandb/mlflow/trackio)."""
    from trl.extras.profiling import ProfilingContext

    original = ProfilingContext._log_metrics

    def log_metrics(self, duration: float) -> None:
        TIMINGS.append((self.step if self.step is not None else -1, self.name, duration))
        original(self, duration)

    ProfilingContext._log_metrics = log_metrics


def make_step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.started: float | None = None
            self.steps: dict[int, float] = {}
            self.lengths: dict[int, float] = {}

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if self.started is not None:
                self.steps[state.global_step - 1] = time.perf_counter() - self.started

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs and "completions/mean_length" in logs:
                self.lengths[state.global_step - 1] = logs["completions/mean_length"]

    return StepTimer()


def run_algo(algo: str, args: argparse.Namespace, reward_names: list[str]) -> dict:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    cuda = torch.cuda.is_available()

    config_cls, trainer_cls = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}[algo]
    n_steps = args.warmup + args.steps
    tasks = train_tasks(args.prompts * n_steps, seed=4321)
    dataset = Dataset.from_list(countdown_rl_rows(tasks, args.template))
    with tempfile.TemporaryDirectory(prefix=f"bench-{algo}-") as out:
        config = config_cls(
            output_dir=out,
            max_steps=n_steps,
            per_device_train_batch_size=args.prompts * args.num_generations,
            num_generations=args.num_generations,
            max_completion_length=args.max_completion_length,
            temperature=1.0,
            beta=args.beta if args.beta is not None else (0.0 if algo == "grpo" else 0.05),
            learning_rate=1e-5,
            activation_checkpointing=False,  # TRL's configs turn it on; the recipes turn it off on CPU
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            bf16=args.bf16_used,
            use_cpu=not cuda,
            **({"use_vllm": True, "vllm_mode": "colocate"} if getattr(args, "use_vllm", False) else {}),
            seed=0,
            model_init_kwargs={"dtype": "float32"},
        )
        timer = make_step_timer()
        trainer = trainer_cls(
            model=resolve_model_name(args.model),
            reward_funcs=get_reward_funcs(reward_names),
            args=config,
            train_dataset=dataset,
            callbacks=[timer],
        )
        del TIMINGS[:]
        trainer.train()

    counted = [s for s in sorted(timer.steps) if s >= args.warmup]
    per_step: dict[str, list[float]] = defaultdict(list)
    reward_funcs = {f"{trainer_cls.__name__}.{name}" for name in trainer.reward_func_names}
    for step in counted:
        spans = [(name, d) for s, name, d in TIMINGS if s == step]
        generation = sum(d for name, d in spans if name.endswith(("transformers.generate", "vLLM.generate")))
        rewards = sum(d for name, d in spans if name in reward_funcs)
        prepare = sum(d for name, d in spans if name.endswith("._prepare_inputs"))
        total = timer.steps[step]
        per_step["total"].append(total)
        per_step["generation"].append(generation)
        per_step["rewards"].append(rewards)
        per_step["other prep"].append(max(0.0, prepare - generation - rewards))
        per_step["update"].append(max(0.0, total - prepare))
        per_step["completion tokens"].append(timer.lengths.get(step, float("nan")))
    return {
        "algo": algo,
        "steps": len(counted),
        "beta": config.beta,
        **{key: statistics.fmean(values) for key, values in per_step.items() if values},
    }


def resolve_bf16(choice: str) -> bool:
    """`auto`: what the recipes use on this machine (posttrain.runtime.bf16_default); else the forced value."""
    if choice == "auto":
        return bf16_default()
    return choice == "true"


def precision_label(choice: str, used: bool) -> str:
    return f"{'bf16 autocast' if used else 'float32'} ({'auto' if choice == 'auto' else 'forced'})"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--algos", nargs="+", default=["grpo", "rloo"], choices=["grpo", "rloo"])
    parser.add_argument("--steps", type=int, default=1, help="timed steps per algorithm")
    parser.add_argument(
        "--warmup", type=int, default=0, help="untimed first steps (CPU has no compile warm-up)"
    )
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--num_generations", type=int, default=8)
    parser.add_argument("--max_completion_length", type=int, default=32)
    parser.add_argument(
        "--beta", type=float, default=None, help="KL coefficient (default: TRL's, RLOO 0.05, GRPO 0)"
    )
    parser.add_argument("--template", default="short")
    parser.add_argument(
        "--bf16",
        default="auto",
        choices=["auto", "true", "false"],
        help="bf16 autocast: auto = as the recipes (posttrain.runtime.bf16_default()), or forced on/off",
    )
    parser.add_argument("--output", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    args.bf16_used = resolve_bf16(args.bf16)

    import torch
    from rich.console import Console
    from rich.table import Table

    capture_trl_profiling()
    rows = [run_algo(algo, args, ["countdown", "answer_format"]) for algo in args.algos]

    table = Table(
        title=f"RL step time on CPU ({torch.get_num_threads()} threads), {args.model}: {args.prompts} prompts x "
        f"{args.num_generations} completions, <= {args.max_completion_length} new tokens, "
        f"{precision_label(args.bf16, args.bf16_used)}"
    )
    columns = ["total", "generation", "rewards", "other prep", "update"]
    for name in [
        "algo",
        "beta",
        *[f"{c} (s)" for c in columns],
        "generation share",
        "mean completion tokens",
    ]:
        table.add_column(name, justify="left" if name == "algo" else "right")
    for row in rows:
        share = row["generation"] / row["total"] if row.get("total") else float("nan")
        table.add_row(
            row["algo"],
            f"{row['beta']:g}",
            *[f"{row.get(c, float('nan')):.2f}" for c in columns[:2]],
            f"{row.get('rewards', float('nan')):.4f}",
            *[f"{row.get(c, float('nan')):.2f}" for c in columns[3:]],
            f"{share:.0%}",
            f"{row.get('completion tokens', float('nan')):.0f}",
        )
    Console(width=160).print(table)
    if args.output:
        atomic_write_json(args.output, {"args": vars(args), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
