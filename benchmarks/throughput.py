"""Training throughput side by side: SFT, DPO and GRPO variants, at Qwen2.5-0.5B's shape and on the embedded model.

    python benchmarks/throughput.py                                  # CPU: a 2-layer slice of the shape, minutes
    python benchmarks/throughput.py --layers 24 --steps 10 --batch_sizes 8 16 32 64 --trainers sft dpo grpo  # GPU
    python benchmarks/throughput.py --models tiny --trainers sft --variants none --loss_check 300  # same losses?

The Qwen2.5-0.5B-shaped model is built from its exact config (random weights: speed does not depend on them,
and nothing is downloaded); `--layers` keeps the width and vocabulary but cuts the depth, so a CPU finishes in
minutes. The data are real and vary in length as users' do: functions of the standard library to summarise
(posttrain.codesum), as SFT prompt-completion records and as DPO pairs (another function's summary rejected).

Each variant trains `--warmup` + `--steps` steps in this one process, so machine noise hits every row alike; the
table gives trained (non-padding) tokens/s over the timed steps, peak memory (each variant runs in a fresh
process; GPU: allocated by torch; CPU: the process's peak RSS), and model FLOPs utilisation: 6 x the matmul parameters (the LM head
included) + the attention term, per trained token, against the device's bf16 peak (a table of GPUs; measured on
anything else) or, on CPU, a matmul peak measured here for the variant's precision. GRPO rows split the step
into generation, rewards and update (benchmarks/rl_step_time.py). `--loss_check N` trains "TRL defaults" and
"ours" for N steps on the last of --models and prints their losses, so a faster variant is seen to train the same.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from posttrain.io import atomic_write_json  # noqa: E402 (after the path set-up: runs as a script)
from posttrain.runtime import bf16_default  # noqa: E402

# Qwen/Qwen2.5-0.5B's config.json (architecture fields only)
QWEN25_05B = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
)
# Dense bf16 tensor-core peaks (no sparsity), by a fragment of torch.cuda.get_device_name()
GPU_BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


@dataclass
class Variant:
    """One row: trainer config overrides on top of the base (everything else as the trainer's defaults)."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None  # None: the first --batch_sizes entry
    needs_cuda: bool = False
    needs: str | None = None  # a module the variant imports (liger_kernel)


def sft_variants(ours: dict[str, Any], batch_sizes: list[int], cuda: bool) -> list[Variant]:
    padded = {k: v for k, v in ours.items() if k not in ("padding_free", "max_length")}
    rows = [
        Variant("TRL defaults (padded, activation checkpointing)", {}),
        Variant("ours: " + ", ".join(f"{k}={v}" for k, v in ours.items()), dict(ours)),
        Variant(
            "ours, padded, batches grouped by length",
            {**padded, "train_sampling_strategy": "group_by_length"},
        ),
        Variant("ours, packed (bfd)", {**padded, "packing": True}),
        Variant("ours, float32", {**ours, "bf16": False}),
        Variant("ours + activation checkpointing", {**ours, "activation_checkpointing": True}),
        Variant(
            "ours + Liger kernels", {**ours, "use_liger_kernel": True}, needs_cuda=True, needs="liger_kernel"
        ),
    ]
    rows += [Variant(f"ours, batch {b}", dict(ours), batch_size=b) for b in batch_sizes[1:]]
    return [v for v in rows if cuda or not v.needs_cuda]


def dpo_variants(ours: dict[str, Any], batch_sizes: list[int], cuda: bool) -> list[Variant]:
    dpo_ours = {"activation_checkpointing": False}
    rows = [
        Variant("TRL defaults (padded, activation checkpointing)", {}),
        Variant("ours: " + ", ".join(f"{k}={v}" for k, v in dpo_ours.items()), dict(dpo_ours)),
        Variant("ours + padding_free", {**dpo_ours, "padding_free": True}),
        Variant(
            "ours + Liger kernels",
            {**dpo_ours, "use_liger_kernel": True},
            needs_cuda=True,
            needs="liger_kernel",
        ),
    ]
    rows += [Variant(f"ours, batch {b}", dict(dpo_ours), batch_size=b) for b in batch_sizes[1:]]
    return [v for v in rows if cuda or not v.needs_cuda]


# ----------------------------------------------------------------------------------------------------------
# Models, data, peaks
# ----------------------------------------------------------------------------------------------------------


def build_qwen_shape(folder: Path, layers: int) -> Path:
    """Qwen2.5-0.5B's architecture with ``layers`` decoder layers and random weights, with the embedded tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from posttrain.models import load_tokenizer

    tokenizer = load_tokenizer("embedded")
    torch.manual_seed(0)
    config = Qwen2Config(
        **{**QWEN25_05B, "num_hidden_layers": layers},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def matmul_flops(config: Any) -> tuple[int, int]:
    """(parameters in matmuls, the LM head included; layers x hidden) of a decoder config."""
    h, layers = config.hidden_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    attention = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o; k, v
    mlp = 3 * h * config.intermediate_size
    return layers * (attention + mlp) + config.vocab_size * h, layers * h


def flops_per_token(config: Any, mean_seq: float) -> float:
    """Training FLOPs per token: 6N for the matmuls plus 6 * layers * hidden * seq for attention scores (PaLM)."""
    params, layer_width = matmul_flops(config)
    return 6 * params + 6 * layer_width * mean_seq


def device_peak_flops(bf16: bool) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) for the precision a variant trains in."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for fragment, tflops in GPU_BF16_PEAK_TFLOPS.items():
            if fragment in name and bf16:
                return tflops * 1e12, f"{name} bf16 dense spec"
        return measured_matmul_peak(bf16, "cuda"), f"{name} measured matmul"
    return measured_matmul_peak(bf16, "cpu"), "measured CPU matmul"


_PEAKS: dict[tuple[bool, str], float] = {}


def measured_matmul_peak(bf16: bool, device: str, size: int = 2048, seconds: float = 1.0) -> float:
    """FLOP/s of square matmuls in the variant's precision (bf16 or float32), best of a few timed rounds."""
    import torch

    key = (bf16, device)
    if key not in _PEAKS:
        n = size * (4 if device == "cuda" else 1)
        dtype = torch.bfloat16 if bf16 else torch.float32
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        best = 0.0
        for _ in range(3):
            reps, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds / 3:
                a @ b
                reps += 1
            if device == "cuda":
                torch.cuda.synchronize()
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - started))
        _PEAKS[key] = best
    return _PEAKS[key]


def code_rows(n: int) -> list[dict]:
    from posttrain.codesum import codesum_rows

    return codesum_rows("codesum", "train", n, seed=0)


def sft_records(n: int) -> list[dict]:
    from posttrain.codesum import codesum_prompt

    return [
        {"prompt": codesum_prompt(r["code"]), "completion": [{"role": "assistant", "content": r["summary"]}]}
        for r in code_rows(n)
    ]


def dpo_records(n: int) -> list[dict]:
    from posttrain.codesum import codesum_prompt

    rows = code_rows(n + 1)
    return [
        {
            "prompt": codesum_prompt(r["code"]),
            "chosen": [{"role": "assistant", "content": r["summary"]}],
            "rejected": [{"role": "assistant", "content": rows[i + 1]["summary"]}],
        }
        for i, r in enumerate(rows[:n])
    ]


class PeakMemory:
    """Peak memory while a variant runs: torch's allocator peak on a GPU, the process's RSS (sampled) on CPU."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        import psutil
        import torch

        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            return self
        process = psutil.Process()

        def sample() -> None:
            while not self._stop.wait(0.05):
                self.peak = max(self.peak, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()


def batch_tokens(inputs: dict[str, Any]) -> int:
    """Non-padding tokens of a training batch, whatever the trainer's layout: the sum of every attention mask
    (SFT's one; DPO's prompt and completion ones), or with none (padding-free), every input_ids entry."""
    masks = [v for k, v in inputs.items() if k.endswith("attention_mask") and hasattr(v, "sum")]
    if masks:
        return int(sum(m.sum().item() for m in masks))
    return int(sum(v.numel() for k, v in inputs.items() if k.endswith("input_ids") and hasattr(v, "numel")))


def make_token_timer(trainer: Any, warmup: int):
    """A callback timing each step and counting the non-padding tokens it trained on (wraps training_step)."""
    from transformers import TrainerCallback

    class TokenTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.tokens: list[int] = []
            self.losses: list[float] = []
            self.seen = 0
            self._started = 0.0
            self._seen_at_start = 0

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self._started, self._seen_at_start = time.perf_counter(), self.seen

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if state.global_step > warmup:
                self.seconds.append(time.perf_counter() - self._started)
                self.tokens.append(self.seen - self._seen_at_start)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    timer = TokenTimer()
    step = trainer.training_step

    def counted_step(model, inputs, *rest, **kwargs):  # noqa: ANN001
        timer.seen += batch_tokens(inputs)
        return step(model, inputs, *rest, **kwargs)

    trainer.training_step = counted_step
    trainer.add_callback(timer)
    return timer


# ----------------------------------------------------------------------------------------------------------
# Running the variants
# ----------------------------------------------------------------------------------------------------------


def train_variant(
    trainer_name: str, variant: Variant, model_path: str, args: argparse.Namespace, steps: int, warmup: int
) -> dict[str, Any]:
    """Train one variant for warmup + steps steps and return its figures."""
    import torch
    from datasets import Dataset
    from transformers import AutoConfig
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    config_cls, trainer_cls, records = {
        "sft": (SFTConfig, SFTTrainer, sft_records),
        "dpo": (DPOConfig, DPOTrainer, dpo_records),
    }[trainer_name]
    batch = variant.batch_size or args.batch_sizes[0]
    overrides = dict(variant.overrides)
    bf16 = overrides.pop("bf16", bf16_default())
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix=f"bench-{trainer_name}-") as out:
        config = config_cls(
            output_dir=out,
            per_device_train_batch_size=batch,
            max_steps=warmup + steps,
            bf16=bf16,
            use_cpu=not cuda,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
            seed=0,
            model_init_kwargs={"dtype": "float32"},
            **{"max_length": args.max_length, **overrides},
        )
        data = Dataset.from_list(records(batch * (warmup + steps) * 2))
        with PeakMemory() as memory:
            trainer = trainer_cls(model=model_path, args=config, train_dataset=data)
            timer = make_token_timer(trainer, warmup)
            trainer.train()
        del trainer
    if cuda:
        torch.cuda.empty_cache()
    seconds, tokens = sum(timer.seconds), sum(timer.tokens)
    model_config = AutoConfig.from_pretrained(model_path)
    mean_seq = tokens / max(1, batch * len(timer.seconds))
    flops = flops_per_token(model_config, mean_seq) * tokens / seconds if seconds else float("nan")
    peak, peak_source = device_peak_flops(bf16)
    return {
        "trainer": trainer_name,
        "variant": variant.name,
        "batch": batch,
        "precision": "bf16 autocast" if bf16 else "float32",
        "s_per_step": seconds / max(1, len(timer.seconds)),
        "tokens_per_s": tokens / seconds if seconds else float("nan"),
        "peak_memory_gib": memory.peak / 2**30,
        "mfu": flops / peak,
        "peak_source": peak_source,
        "losses": timer.losses,
    }


IN_PROCESS = False  # --in_process


def isolated(function: Callable, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` in a fresh process, so each variant's peak memory is its own (a process's RSS
    never falls back) and no allocator or compile state carries over to the next row."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if IN_PROCESS:
        return function(*args, **kwargs)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args, **kwargs).result()


def run_grpo(model_path: str, args: argparse.Namespace) -> dict[str, Any]:
    """One GRPO configuration, the step split into generation / rewards / update (benchmarks/rl_step_time.py)."""
    import rl_step_time

    rl_step_time.capture_trl_profiling()
    rl_args = argparse.Namespace(
        model=model_path,
        warmup=args.warmup,
        steps=args.steps,
        prompts=args.grpo_prompts,
        num_generations=args.grpo_generations,
        max_completion_length=args.grpo_completion_length,
        beta=None,
        template="short",
        bf16_used=bf16_default(),
        use_vllm=args.use_vllm,
    )
    row = rl_step_time.run_algo("grpo", rl_args, ["countdown", "answer_format"])
    row["generation_share"] = row["generation"] / row["total"] if row.get("total") else float("nan")
    return row


def skip_reason(variant: Variant) -> str | None:
    import importlib.util

    if variant.needs and importlib.util.find_spec(variant.needs) is None:
        return f"{variant.needs} is not installed (pip install -e '.[liger]')"
    return None


def print_tables(rows: list[dict], grpo: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    table = Table(title=title)
    for column in (
        "trainer",
        "variant",
        "batch",
        "precision",
        "s/step",
        "tokens/s",
        "peak memory GiB",
        "MFU",
    ):
        table.add_column(column, justify="left" if column in ("trainer", "variant", "precision") else "right")
    for row in rows:
        if "skipped" in row:
            table.add_row(
                row["trainer"], row["variant"], "-", "-", "-", "-", "-", f"skipped: {row['skipped']}"
            )
            continue
        table.add_row(
            row["trainer"],
            row["variant"],
            str(row["batch"]),
            row["precision"],
            f"{row['s_per_step']:.2f}",
            f"{row['tokens_per_s']:,.0f}",
            f"{row['peak_memory_gib']:.2f}",
            f"{row['mfu']:.1%}",
        )
    console.print(table)
    if rows:
        console.print(f"MFU against: {sorted({r['peak_source'] for r in rows if 'peak_source' in r})}")
    if grpo:
        table = Table(title="GRPO step split (benchmarks/rl_step_time.py)")
        for column in (
            "model",
            "total s",
            "generation s",
            "rewards s",
            "update s",
            "generation share",
            "tokens",
        ):
            table.add_column(column, justify="right")
        for row in grpo:
            table.add_row(
                row["model_label"],
                f"{row['total']:.2f}",
                f"{row['generation']:.2f}",
                f"{row['rewards']:.4f}",
                f"{row['update']:.2f}",
                f"{row['generation_share']:.0%}",
                f"{row.get('completion tokens', float('nan')):.0f}",
            )
        console.print(table)


def loss_check(model_path: str, args: argparse.Namespace) -> list[dict]:
    """TRL defaults and ours, padded and padding-free, for ``args.loss_check`` steps: the losses, to see the fast
    variants train the same."""
    rows = []
    fast = {"learning_rate": 1e-3}  # TRL's 2e-5 barely moves a random model in a few hundred steps
    # the same sampler for both of ours, so they see the same batches in the same order: only padding differs
    grouped = {"activation_checkpointing": False, "train_sampling_strategy": "group_by_length", **fast}
    variants = (
        Variant("TRL defaults", dict(fast)),
        Variant("ours, padded, batches grouped by length", dict(grouped)),
        Variant(
            "ours, padding-free, batches grouped by length",
            {**grouped, "padding_free": True, "max_length": None},
        ),
    )
    for variant in variants:
        row = isolated(train_variant, "sft", variant, model_path, args, steps=args.loss_check, warmup=0)
        window = max(1, len(row["losses"]) // 5)
        row["first_losses"] = statistics.fmean(row["losses"][:window])
        row["last_losses"] = statistics.fmean(row["losses"][-window:])
        rows.append(row)
        print(
            f"loss check, {variant.name}: mean loss of the first {window} steps {row['first_losses']:.3f}, "
            f"of the last {window} {row['last_losses']:.3f} ({row['tokens_per_s']:,.0f} tokens/s)"
        )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["qwen2.5-0.5b-shape", "embedded"],
        help="qwen2.5-0.5b-shape, embedded, tiny (2 x 64 Llama) or a path",
    )
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="decoder layers of the Qwen shape (default: 24 on a GPU, 2 on CPU)",
    )
    parser.add_argument(
        "--trainers", nargs="+", default=["sft", "dpo", "grpo"], choices=["sft", "dpo", "grpo"]
    )
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps per variant")
    parser.add_argument(
        "--batch_sizes", type=int, nargs="+", default=[8], help="the first is every variant's"
    )
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument(
        "--variants", nargs="+", default=None, help="run only variants whose name has one of these"
    )
    parser.add_argument("--grpo_prompts", type=int, default=2)
    parser.add_argument("--grpo_generations", type=int, default=4)
    parser.add_argument("--grpo_completion_length", type=int, default=32)
    parser.add_argument(
        "--use_vllm", action="store_true", help="GRPO generation with vLLM (colocate), if installed"
    )
    parser.add_argument("--loss_check", type=int, default=0, help="steps of the loss comparison (0: off)")
    parser.add_argument(
        "--in_process",
        action="store_true",
        help="run the variants in this process (faster; memory then accumulates)",
    )
    parser.add_argument("--output", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or min(args.batch_sizes) < 1 or args.loss_check < 0:
        parser.error("--steps and --batch_sizes must be >= 1, --warmup and --loss_check >= 0")

    import torch

    from posttrain.models import build_tiny_llama, resolve_model_name

    global IN_PROCESS
    IN_PROCESS = args.in_process
    cuda = torch.cuda.is_available()
    layers = args.layers or (QWEN25_05B["num_hidden_layers"] if cuda else 2)
    # what recipes/sft/codesum.yaml sets for this variable-length data: no activation checkpointing (TRL turns it
    # on), padding-free batches (TRL cannot enforce max_length there: the functions are short), and bf16 where the
    # device has it (posttrain.runtime.bf16_default, the default of every variant here)
    ours: dict[str, Any] = {"activation_checkpointing": False, "padding_free": True, "max_length": None}
    rows: list[dict] = []
    grpo: list[dict] = []
    checks: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-models-") as folder:
        for model in args.models:
            if model == "qwen2.5-0.5b-shape":
                path, label = (
                    str(build_qwen_shape(Path(folder) / "qwen", layers)),
                    f"Qwen2.5-0.5B shape, {layers} layers",
                )
            elif model == "tiny":
                path, label = (
                    str(build_tiny_llama(Path(folder) / "tiny", hidden_size=64)),
                    "tiny Llama (2 x 64)",
                )
            else:
                path, label = resolve_model_name(model), model
            for trainer_name in [t for t in args.trainers if t != "grpo"]:
                make: Callable = sft_variants if trainer_name == "sft" else dpo_variants
                for variant in make(ours, args.batch_sizes, cuda):
                    if args.variants and not any(key in variant.name for key in args.variants):
                        continue
                    reason = skip_reason(variant)
                    if reason:
                        rows.append(
                            {
                                "trainer": trainer_name,
                                "variant": f"{label}: {variant.name}",
                                "skipped": reason,
                            }
                        )
                        continue
                    row = isolated(train_variant, trainer_name, variant, path, args, args.steps, args.warmup)
                    row["variant"] = f"{label}: {variant.name}"
                    rows.append(row)
                    print(
                        f"{row['variant']} ({trainer_name}): {row['tokens_per_s']:,.0f} tokens/s", flush=True
                    )
            if "grpo" in args.trainers:
                grpo.append({**isolated(run_grpo, path, args), "model_label": label})
            if args.loss_check and model == args.models[-1]:
                checks = loss_check(path, args)
    device = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print_tables(rows, grpo, f"Training throughput on {device}: {args.steps} timed steps after {args.warmup}")
    result = {"device": device, "args": vars(args), "rows": rows, "grpo": grpo, "loss_check": checks}
    if args.output:
        atomic_write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
