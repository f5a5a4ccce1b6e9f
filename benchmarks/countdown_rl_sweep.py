"""Countdown post-SFT sweep: GRPO, RLOO, rejection-sampling fine-tuning and greedy-anchored DPO side by side.

    .venv/bin/python benchmarks/countdown_rl_sweep.py --start runs/sft-countdown/model \
        --variant algo=grpo,lr=3e-6 --variant algo=grpo,lr=1e-5,temp=0.7 --variant algo=rft,rounds=2

Every variant starts from the same SFT model, trains with TRL's trainers and the project's rewards on generated
training tasks (never held-out), logs greedy accuracy on a validation set every `--val_every` steps
(`posttrain.validation`), and is finally evaluated greedily on the held-out tasks `make eval-countdown` uses. The
table gives each variant's difference to the start on the same tasks with a paired 95% interval and McNemar's p.
`--jobs N` runs N variants at once in separate processes (a GPU holds many 135M-parameter runs).

Variant keys (comma separated key=value):
  algo     grpo | rloo | rft (sample k, keep verified-correct, SFT; `rounds`) | dpo (greedy-anchored pairs) |
           sft (control: more SFT on the solver's completions of `n` new tasks, in the start model's style)
  steps, prompts (per step), gens (samples per prompt), lr, temp, top_k, beta (KL to start), iters
  (num_iterations), loss (GRPO loss_type), scale (GRPO scale_rewards), reward (tinyzero: 0/0.1/1 | strict: 0/1),
  guided (1: a known solution joins GRPO groups with no correct sample), greedy (1: the greedy answer is the
  first member of every GRPO group), lora, seed,
  rounds, k (RFT/DPO samples per prompt), n (RFT/DPO prompts per round), epochs, gt (RFT: 1 adds the solutions
  of the prompts no sample solved), sft_loss (sft/rft: TRL SFTConfig loss_type, nll | dft = Dynamic Fine-Tuning)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULTS: dict[str, Any] = dict(
    algo="grpo",
    steps=40,
    prompts=4,
    gens=8,
    lr=3e-6,
    temp=1.0,
    top_k=0,
    beta=0.0,
    iters=1,
    loss="dapo",
    scale="group",
    reward="tinyzero",
    guided=0,
    greedy=0,
    lora=0,
    seed=42,
    rounds=1,
    k=8,
    n=512,
    epochs=1.0,
    gt=0,
    sft_loss="nll",
)
SFT_LOSSES = ("nll", "dft")  # TRL SFTConfig.loss_type values the sweep's SFT steps take
CASTS: dict[str, Any] = {k: type(v) for k, v in DEFAULTS.items()}
TRAIN_SEED = 4321  # the RL recipes' countdown_data_seed: other puzzles than the SFT data
DIRECT_MAX_NEW_TOKENS = 32  # direct answers are <= 20 tokens
TRACE_MAX_NEW_TOKENS = 192  # backward traces of 3-number tasks are <= 186 tokens


def parse_variant(text: str) -> dict[str, Any]:
    spec = dict(DEFAULTS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in CASTS:
            raise SystemExit(f"--variant {text!r}: {item!r} is not key=value with a key from {sorted(CASTS)}")
        spec[key] = CASTS[key](float(value) if CASTS[key] is int else value)
    if spec["sft_loss"] not in SFT_LOSSES:
        raise SystemExit(
            f"--variant {text!r}: sft_loss must be one of {SFT_LOSSES}, not {spec['sft_loss']!r}"
        )
    return spec


def variant_name(spec: dict[str, Any]) -> str:
    changed = [
        f"{k}={spec[k]:g}" if isinstance(spec[k], float) else f"{k}={spec[k]}"
        for k in DEFAULTS
        if k != "algo" and spec[k] != DEFAULTS[k]
    ]
    return "-".join([spec["algo"], *changed]) or spec["algo"]


# -- shared pieces ------------------------------------------------------------------------------------------


def device_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from posttrain.runtime import bf16_default

    cuda = torch.cuda.is_available()
    return dict(use_cpu=not cuda, bf16=bf16_default() if args.bf16 == "auto" else args.bf16 == "true")


def start_style(start: str) -> dict[str, Any]:
    """How the start model was taught to answer (direct answers or traces), from its run_summary.json."""
    from posttrain.models import trained_countdown_args

    countdown = trained_countdown_args(start)
    return {
        "think": bool(countdown.get("warmstart_think", False)),
        "style": countdown.get("warmstart_style", "forward"),
    }


def ground_truth(task: Any, template: str, style: dict[str, Any]) -> str:
    """The solver's completion for `task` in the start model's style (a direct answer or a trace)."""
    import random

    from posttrain.countdown import make_warmstart_completion

    return make_warmstart_completion(task, rng=random.Random(0), template=template, **style)


def greedy_correct(model: Any, tokenizer: Any, tasks: list, template: str, max_new_tokens: int) -> list[int]:
    from posttrain.validation import greedy_correct as correct

    return [int(c) for c in correct(model, tokenizer, tasks, template, max_new_tokens=max_new_tokens)]


def sample(
    model: Any,
    tokenizer: Any,
    tasks: list,
    template: str,
    *,
    k: int,
    temp: float,
    seed: int,
    max_new_tokens: int,
) -> list[list[str]]:
    from posttrain.countdown import make_prompt
    from posttrain.sampling import SamplingParams, generate

    prompts = [make_prompt(t.nums, t.target, template) for t in tasks]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temp, n=k, seed=seed, batch_size=256)
    return generate(model, prompts, params, tokenizer=tokenizer, progress=False)


def reward_funcs(spec: dict[str, Any]) -> list:
    from rewards.countdown import countdown_reward, countdown_strict_reward
    from rewards.format import answer_format_reward

    return [countdown_strict_reward if spec["reward"] == "strict" else countdown_reward, answer_format_reward]


def lora_config(spec: dict[str, Any]) -> Any:
    if not spec["lora"]:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=32, lora_alpha=64, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )


# -- algorithms ---------------------------------------------------------------------------------------------


def train_rl(
    spec: dict[str, Any], args: argparse.Namespace, out: Path, template: str, val_tasks: list
) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from posttrain.countdown import make_prompt
    from posttrain.data import train_tasks
    from posttrain.guidance import GuidedRollout, prompt_key
    from posttrain.validation import CountdownValidationCallback

    tasks = train_tasks(spec["steps"] * spec["prompts"], seed=TRAIN_SEED, num_numbers=(3,))
    rows = [
        {"prompt": make_prompt(t.nums, t.target, template), "target": t.target, "nums": list(t.nums)}
        for t in tasks
    ]
    common = dict(
        output_dir=str(out),
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["prompts"] * spec["gens"],
        num_generations=spec["gens"],
        max_completion_length=args.max_new_tokens,
        temperature=spec["temp"],
        top_k=spec["top_k"] or None,
        beta=spec["beta"],
        num_iterations=spec["iters"],
        learning_rate=spec["lr"],
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=2,
        reward_weights=[1.0, 0.1],
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=spec["seed"],
        disable_tqdm=True,
        model_init_kwargs={"dtype": "float32"},
        **device_kwargs(args),
    )
    extra: dict[str, Any] = {}
    if spec["algo"] == "grpo":
        config = GRPOConfig(**common, loss_type=spec["loss"], scale_rewards=spec["scale"])
        trainer_cls = GRPOTrainer
        if spec["guided"] or spec["greedy"]:
            extra["rollout_func"] = GuidedRollout(
                {
                    prompt_key(r["prompt"]): (t.target, list(t.nums), t.solution)
                    for r, t in zip(rows, tasks, strict=True)
                },
                num_generations=spec["gens"],
                greedy=bool(spec["greedy"]),
                solutions=bool(spec["guided"]),
            )
    else:
        config = RLOOConfig(**common, normalize_advantages=False)
        trainer_cls = RLOOTrainer
    trainer = trainer_cls(
        model=str(args.start),
        reward_funcs=reward_funcs(spec),
        args=config,
        train_dataset=Dataset.from_list(rows),
        peft_config=lora_config(spec),
        **extra,
    )
    validation = CountdownValidationCallback(
        val_tasks,
        template=template,
        every=args.val_every,
        max_new_tokens=args.max_new_tokens,
        output_dir=str(out),
        keep_best=False,
    ).bind(trainer)
    trainer.train()
    model = trainer.model.merge_and_unload() if spec["lora"] else trainer.model
    curve = [
        {
            k: v
            for k, v in e.items()
            if k
            in (
                "step",
                "reward",
                "entropy",
                "kl",
                "frac_reward_zero_std",
                "completions/mean_length",
                "clip_ratio/region_mean",
            )
        }
        for e in trainer.state.log_history
        if "reward" in e
    ]
    guided = extra["rollout_func"].stats if "rollout_func" in extra else None
    return model, trainer.processing_class, validation.history, curve, guided


def sft_on(
    model_path: str, records: list[dict], spec: dict[str, Any], args: argparse.Namespace, out: Path
) -> Any:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(
        output_dir=str(out),
        num_train_epochs=spec["epochs"],
        per_device_train_batch_size=8,
        learning_rate=spec["lr"],
        loss_type=spec["sft_loss"],
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=2,
        max_length=512,
        eos_token="<|im_end|>",
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        seed=spec["seed"],
        disable_tqdm=True,
        model_init_kwargs={"dtype": "float32"},
        **device_kwargs(args),
    )
    trainer = SFTTrainer(
        model=model_path, args=config, train_dataset=Dataset.from_list(records), peft_config=lora_config(spec)
    )
    trainer.train()
    model = trainer.model.merge_and_unload() if spec["lora"] else trainer.model
    return model, trainer.processing_class


def train_rft(
    spec: dict[str, Any], args: argparse.Namespace, out: Path, template: str, val_tasks: list
) -> Any:
    from transformers import AutoModelForCausalLM

    from posttrain.countdown import make_prompt
    from posttrain.data import train_tasks
    from posttrain.models import load_tokenizer
    from rewards.countdown import score

    style = start_style(str(args.start))
    tokenizer = load_tokenizer(str(args.start))
    model = AutoModelForCausalLM.from_pretrained(str(args.start), dtype="float32")
    if not device_kwargs(args)["use_cpu"]:
        model = model.cuda()
    history = [
        {
            "step": 0,
            "val/accuracy": sum(greedy_correct(model, tokenizer, val_tasks, template, args.max_new_tokens))
            / len(val_tasks),
        }
    ]
    pool = train_tasks(spec["n"] * spec["rounds"], seed=TRAIN_SEED, num_numbers=(3,))
    current = str(args.start)
    curve = []
    for r in range(spec["rounds"]):
        tasks = pool[r * spec["n"] : (r + 1) * spec["n"]]
        outs = sample(
            model,
            tokenizer,
            tasks,
            template,
            k=spec["k"],
            temp=spec["temp"],
            seed=spec["seed"] + r,
            max_new_tokens=args.max_new_tokens,
        )
        records, solved = [], 0
        for task, completions in zip(tasks, outs, strict=True):
            right = sorted({c.strip() for c in completions if score(c, task.target, list(task.nums)) == 1.0})
            solved += bool(right)
            answers = right or ([ground_truth(task, template, style)] if spec["gt"] else [])
            for answer in answers:
                records.append(
                    {
                        "prompt": make_prompt(task.nums, task.target, template),
                        "completion": [{"role": "assistant", "content": answer}],
                    }
                )
        round_dir = out / f"round{r + 1}"
        model, tokenizer = sft_on(current, records, spec, args, round_dir)
        model.save_pretrained(round_dir / "model")
        tokenizer.save_pretrained(round_dir / "model")
        current = str(round_dir / "model")
        acc = sum(greedy_correct(model, tokenizer, val_tasks, template, args.max_new_tokens)) / len(val_tasks)
        history.append({"step": r + 1, "val/accuracy": acc})
        curve.append({"round": r + 1, "records": len(records), "solved": solved / len(tasks)})
    return model, tokenizer, history, curve, None


def train_gt_sft(
    spec: dict[str, Any], args: argparse.Namespace, out: Path, template: str, val_tasks: list
) -> Any:
    """The control every post-SFT method must beat: more SFT on the solver's completions (in the start model's
    style) of `n` new training tasks, the same tasks RFT samples from."""
    from transformers import AutoModelForCausalLM

    from posttrain.countdown import make_prompt
    from posttrain.data import train_tasks
    from posttrain.models import load_tokenizer

    style = start_style(str(args.start))
    tokenizer = load_tokenizer(str(args.start))
    start_model = AutoModelForCausalLM.from_pretrained(str(args.start), dtype="float32")
    history = [
        {
            "step": 0,
            "val/accuracy": sum(
                greedy_correct(start_model, tokenizer, val_tasks, template, args.max_new_tokens)
            )
            / len(val_tasks),
        }
    ]
    del start_model
    records = [
        {
            "prompt": make_prompt(t.nums, t.target, template),
            "completion": [{"role": "assistant", "content": ground_truth(t, template, style)}],
        }
        for t in train_tasks(spec["n"], seed=TRAIN_SEED, num_numbers=(3,))
    ]
    model, tokenizer = sft_on(str(args.start), records, spec, args, out)
    acc = sum(greedy_correct(model, tokenizer, val_tasks, template, args.max_new_tokens)) / len(val_tasks)
    history.append({"step": 1, "val/accuracy": acc})
    return model, tokenizer, history, [{"records": len(records)}], None


def train_dpo(
    spec: dict[str, Any], args: argparse.Namespace, out: Path, template: str, val_tasks: list
) -> Any:
    """Pairs against the answer greedy decoding gives: right sample over wrong greedy, right greedy over wrong
    sample. Best-vs-worst pairs mostly push down junk the greedy decoder never emits."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from posttrain.countdown import make_prompt
    from posttrain.data import train_tasks
    from posttrain.models import load_tokenizer
    from posttrain.validation import greedy_completions
    from rewards.countdown import score

    tokenizer = load_tokenizer(str(args.start))
    model = AutoModelForCausalLM.from_pretrained(str(args.start), dtype="float32")
    if not device_kwargs(args)["use_cpu"]:
        model = model.cuda()
    tasks = train_tasks(spec["n"], seed=TRAIN_SEED, num_numbers=(3,))
    prompts = [make_prompt(t.nums, t.target, template) for t in tasks]
    with torch.inference_mode():
        greedy = tokenizer.batch_decode(
            greedy_completions(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens),
            skip_special_tokens=True,
        )
    outs = sample(
        model,
        tokenizer,
        tasks,
        template,
        k=spec["k"],
        temp=spec["temp"],
        seed=spec["seed"],
        max_new_tokens=args.max_new_tokens,
    )
    rows = []
    for task, prompt, g, samples in zip(tasks, prompts, greedy, outs, strict=True):
        rewards = [score(c, task.target, list(task.nums)) for c in samples]
        formatted_wrong = [c for c, r in zip(samples, rewards, strict=True) if 0 < r < 1.0]
        if score(g, task.target, list(task.nums)) == 1.0:
            if formatted_wrong:
                rows.append((prompt, g, formatted_wrong[0]))
        else:
            right = [c for c, r in zip(samples, rewards, strict=True) if r == 1.0]
            if right:
                rows.append((prompt, max(set(right), key=right.count), g))
    records = [
        {
            "prompt": p,
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }
        for p, c, r in rows
    ]
    if not records:
        raise SystemExit("dpo: no pairs (the start model never disagrees with a verified-correct sample)")
    del model
    config = DPOConfig(
        output_dir=str(out),
        num_train_epochs=spec["epochs"],
        per_device_train_batch_size=8,
        learning_rate=spec["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        beta=spec["beta"] or 0.1,
        max_length=512,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        seed=spec["seed"],
        disable_tqdm=True,
        model_init_kwargs={"dtype": "float32"},
        **device_kwargs(args),
    )
    trainer = DPOTrainer(
        model=str(args.start),
        args=config,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=lora_config(spec),
    )
    trainer.train()
    model = trainer.model.merge_and_unload() if spec["lora"] else trainer.model
    history = [
        {
            "step": trainer.state.global_step,
            "val/accuracy": sum(greedy_correct(model, tokenizer, val_tasks, template, args.max_new_tokens))
            / len(val_tasks),
        }
    ]
    return model, tokenizer, history, [{"pairs": len(records)}], None


ALGOS = {"grpo": train_rl, "rloo": train_rl, "rft": train_rft, "dpo": train_dpo, "sft": train_gt_sft}


@functools.cache
def task_sets(n_val: int, n_test: int) -> tuple[list, list]:
    from posttrain.data import heldout_tasks, validation_tasks

    return validation_tasks(n_val, num_numbers=(3,)), heldout_tasks(n_test, num_numbers=(3,))


def run_variant(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from eval.paired import compare_paired
    from posttrain.models import trained_template

    torch.manual_seed(spec["seed"])
    template = trained_template(str(args.start)) or "short"
    val_tasks, test_tasks = task_sets(args.n_val, args.n_test)
    out = Path(args.work_dir) / variant_name(spec)
    start = time.perf_counter()
    model, tokenizer, history, curve, guided = ALGOS[spec["algo"]](spec, args, out, template, val_tasks)
    train_s = time.perf_counter() - start
    after = greedy_correct(model, tokenizer, test_tasks, template, args.max_new_tokens)
    before = json.loads((Path(args.work_dir) / "start_test.json").read_text())
    paired = compare_paired(before, after)
    best = max(history, key=lambda h: h["val/accuracy"])
    return dict(
        name=variant_name(spec),
        **spec,
        train_s=round(train_s, 1),
        val_start=history[0]["val/accuracy"],
        val_end=history[-1]["val/accuracy"],
        val_best=best["val/accuracy"],
        val_best_step=best["step"],
        test_before=paired["before"],
        test_after=paired["after"],
        diff=paired["difference"],
        ci95=paired["ci95"],
        gained=paired["gained"],
        lost=paired["lost"],
        p=paired["p_mcnemar"],
        val_history=history,
        curve=curve,
        guided_groups=guided,
    )


def start_eval(args: argparse.Namespace) -> None:
    from transformers import AutoModelForCausalLM

    from posttrain.data import heldout_tasks
    from posttrain.models import load_tokenizer, trained_template

    path = Path(args.work_dir) / "start_test.json"
    if path.is_file():
        return
    template = trained_template(str(args.start)) or "short"
    model = AutoModelForCausalLM.from_pretrained(str(args.start), dtype="float32")
    if not device_kwargs(args)["use_cpu"]:
        model = model.cuda()
    correct = greedy_correct(
        model,
        load_tokenizer(str(args.start)),
        heldout_tasks(args.n_test, num_numbers=(3,)),
        template,
        args.max_new_tokens,
    )
    path.write_text(json.dumps(correct))
    print(
        f"start model: held-out greedy accuracy {sum(correct) / len(correct):.3f} on {len(correct)} tasks",
        flush=True,
    )


def print_row(row: dict[str, Any]) -> None:
    lo, hi = row["ci95"]
    print(
        f"{row['name']:58} {row['train_s']:>7.0f} {row['val_start']:>6.3f} {row['val_best']:>6.3f}@{row['val_best_step']:<4}"
        f" {row['val_end']:>6.3f} {row['test_before']:>6.3f} {row['test_after']:>6.3f} {row['diff']:>+7.3f}"
        f" [{lo:+.3f},{hi:+.3f}] {row['gained']:>4}/{row['lost']:<4} {row['p']:>8.2g}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", action="append", required=True, help="key=value,... (see above)")
    parser.add_argument(
        "--start", default="runs/sft-countdown/model", help="the SFT model every variant starts from"
    )
    parser.add_argument(
        "--n_test", type=int, default=500, help="held-out tasks (as EVAL_TASKS / EVAL_SEED 1234)"
    )
    parser.add_argument(
        "--n_val", type=int, default=200, help="validation tasks (posttrain.data.validation_tasks)"
    )
    parser.add_argument("--val_every", type=int, default=10)
    parser.add_argument("--bf16", choices=("auto", "true", "false"), default="auto")
    parser.add_argument(
        "--work_dir", default=None, help="checkpoints and start evaluation (default: a temp dir)"
    )
    parser.add_argument("--jsonl", default=None, help="append one JSON line per variant here")
    parser.add_argument("--jobs", type=int, default=1, help="variants run at once, each in its own process")
    parser.add_argument(
        "--max_new_tokens",
        type=int,
        default=None,
        help=f"completion budget (default: {DIRECT_MAX_NEW_TOKENS} for a direct-answer start, "
        f"{TRACE_MAX_NEW_TOKENS} for a trace start)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not Path(args.start).is_dir():
        raise SystemExit(f"--start {args.start}: no such model folder (run `make sft-countdown` first)")
    if args.max_new_tokens is None:
        think = start_style(str(args.start))["think"]
        args.max_new_tokens = TRACE_MAX_NEW_TOKENS if think else DIRECT_MAX_NEW_TOKENS
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="rl-sweep-")
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    specs = [parse_variant(v) for v in args.variant]
    start_eval(args)
    print(
        f"{'variant':58} {'train s':>7} {'val0':>6} {'best':>11} {'val_end':>6} {'before':>6} {'after':>6} "
        f"{'diff':>7} {'95% CI':^15} {'+/-':>9} {'p':>8}",
        flush=True,
    )
    if args.jobs > 1:
        import subprocess

        procs = []
        for text in args.variant:
            cmd = [
                sys.executable,
                __file__,
                "--variant",
                text,
                "--start",
                str(args.start),
                "--n_test",
                str(args.n_test),
                "--n_val",
                str(args.n_val),
                "--val_every",
                str(args.val_every),
                "--bf16",
                args.bf16,
                "--max_new_tokens",
                str(args.max_new_tokens),
                "--work_dir",
                args.work_dir,
                "--jsonl",
                args.jsonl or str(Path(args.work_dir) / "rows.jsonl"),
            ]
            log = open(Path(args.work_dir) / f"{variant_name(parse_variant(text))}.log", "w")
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            while sum(p.poll() is None for p in procs) >= args.jobs:
                time.sleep(2)
        for p in procs:
            p.wait()
        return 0
    for spec in specs:
        row = run_variant(spec, args)
        print_row(row)
        if args.jsonl:
            with open(args.jsonl, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
