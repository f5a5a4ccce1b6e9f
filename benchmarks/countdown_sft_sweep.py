"""Countdown SFT sweep: train and evaluate several data / prompt / optimiser variants side by side, in one process.

    .venv/bin/python benchmarks/countdown_sft_sweep.py \
        --variant think=0,template=short,n=1280,lr=1e-4 --variant think=1,template=compact,n=640,lr=2e-4

Each variant fine-tunes a fresh copy of the model (embedded SmolLM2-135M-Instruct by default) with TRL's
SFTTrainer on generated training tasks and measures greedy accuracy on the same held-out tasks that
`make sft-countdown` uses (3 numbers, and a 4-number split). The table also reports the training tokens
(prompt + completion, what a step costs on a CPU), so a variant found on a GPU can be priced for the CPU budget.

Variant keys (comma separated key=value): template (compact|short|chat|base), think (0: direct solutions,
1: a trace in <think>), style (forward: verified solution steps; backward: work back from the target), tries (max visible failed tries), n (training tasks), lr, epochs, batch, lora
(0/1; r=32), seed. `--save_dir DIR` keeps each trained model in DIR/<variant name> (for RL experiments).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.countdown import evaluate_countdown  # noqa: E402 (after the path set-up: runs as a script)
from posttrain.countdown import build_sft_records  # noqa: E402
from posttrain.data import heldout_tasks, train_tasks  # noqa: E402
from posttrain.models import load_tokenizer, resolve_model_name  # noqa: E402
from posttrain.runtime import bf16_default  # noqa: E402
from posttrain.sampling import SamplingParams  # noqa: E402

DEFAULTS: dict[str, Any] = dict(
    template="short", think=0, style="forward", tries=0, n=640, lr=1e-4, epochs=1.0, batch=8, lora=0, seed=42
)
CASTS = dict(
    template=str,
    think=int,
    style=str,
    tries=int,
    n=int,
    lr=float,
    epochs=float,
    batch=int,
    lora=int,
    seed=int,
)


def parse_variant(text: str) -> dict[str, Any]:
    spec = dict(DEFAULTS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in CASTS:
            raise SystemExit(f"--variant {text!r}: {item!r} is not key=value with a key from {sorted(CASTS)}")
        spec[key] = CASTS[key](value)
    return spec


def variant_name(spec: dict[str, Any]) -> str:
    if not spec["think"]:
        kind = "direct"
    elif spec["style"] == "backward":
        kind = "backward"
    else:
        kind = "steps" if not spec["tries"] else f"search{spec['tries']}"
    lora = "-lora" if spec["lora"] else ""
    return (
        f"{kind}-{spec['template']}-n{spec['n']}-lr{spec['lr']:g}-ep{spec['epochs']:g}-b{spec['batch']}{lora}"
    )


def run_variant(spec: dict[str, Any], args: argparse.Namespace, heldout: dict[int, list]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    name = variant_name(spec)
    cuda = torch.cuda.is_available()
    tasks = train_tasks(spec["n"], seed=args.data_seed, num_numbers=(3,))
    records = build_sft_records(
        tasks,
        template=spec["template"],
        seed=args.data_seed,
        max_failed_tries=spec["tries"],
        think=bool(spec["think"]),
        style=spec["style"],
    )
    dataset = Dataset.from_list(records)
    model_path = resolve_model_name(args.model)
    out = Path(args.save_dir) / name if args.save_dir else Path(tempfile.mkdtemp(prefix="sweep-"))
    config = SFTConfig(
        output_dir=str(out),
        num_train_epochs=spec["epochs"],
        per_device_train_batch_size=spec["batch"],
        learning_rate=spec["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        max_length=512,
        eos_token="<|im_end|>",
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        seed=spec["seed"],
        bf16=bf16_default() if args.bf16 == "auto" else args.bf16 == "true",
        use_cpu=not cuda,
        disable_tqdm=True,
        model_init_kwargs={"dtype": "float32"},
    )
    peft_config = (
        LoraConfig(r=32, lora_alpha=64, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
        if spec["lora"]
        else None
    )
    trainer = SFTTrainer(model=model_path, args=config, train_dataset=dataset, peft_config=peft_config)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    start = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - start
    model = trainer.model
    if spec["lora"]:
        model = model.merge_and_unload()
    model.eval()
    tokenizer = load_tokenizer(model_path)
    row: dict[str, Any] = dict(
        name=name,
        **spec,
        train_loss=round(result.metrics.get("train_loss", float("nan")), 4),
        train_tokens=tokens,
        steps=result.global_step,
        train_s=round(train_s, 1),
    )
    max_new = args.max_new_tokens or (48 if not spec["think"] else 256)
    params = SamplingParams(max_new_tokens=max_new, batch_size=args.eval_batch_size)
    for num_numbers, tasks_ in heldout.items():
        summary = evaluate_countdown(
            model,
            tasks_,
            template=spec["template"],
            params=params,
            output_dir=Path(args.samples_dir) / name / f"{num_numbers}numbers" if args.samples_dir else None,
            tokenizer=tokenizer,
            print_table=False,
            progress=False,
            backend="hf",
        )
        row[f"acc{num_numbers}"] = summary["accuracy"]
        row[f"format{num_numbers}"] = summary["format_rate"]
    if args.save_dir:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", action="append", required=True, help="key=value,... (see above)")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--n_eval", type=int, default=200, help="held-out tasks per split")
    parser.add_argument("--eval_numbers", default="3,4", help="held-out splits by numbers per task")
    parser.add_argument("--data_seed", type=int, default=1234, help="as countdown_data_seed / EVAL_SEED")
    parser.add_argument("--max_new_tokens", type=int, default=None)
    parser.add_argument("--eval_batch_size", type=int, default=None)
    parser.add_argument("--save_dir", default=None)
    parser.add_argument("--samples_dir", default=None, help="write each evaluation's samples.jsonl here")
    parser.add_argument(
        "--bf16", choices=("auto", "true", "false"), default="auto", help="auto: as the recipes"
    )
    parser.add_argument("--jsonl", default=None, help="append one JSON line per variant here")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    counts = [int(x) for x in args.eval_numbers.split(",") if x.strip()]
    heldout = {k: heldout_tasks(args.n_eval, seed=args.data_seed, num_numbers=(k,)) for k in counts}
    header = f"{'variant':48} {'tokens':>8} {'steps':>5} {'train s':>7} {'loss':>6}" + "".join(
        f" {'acc' + str(k):>6} {'fmt' + str(k):>5}" for k in counts
    )
    print(header, flush=True)
    for text in args.variant:
        row = run_variant(parse_variant(text), args, heldout)
        line = f"{row['name']:48} {row['train_tokens']:>8} {row['steps']:>5} {row['train_s']:>7} {row['train_loss']:>6}"
        line += "".join(f" {row[f'acc{k}']:>6.3f} {row[f'format{k}']:>5.2f}" for k in counts)
        print(line, flush=True)
        if args.jsonl:
            with open(args.jsonl, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
