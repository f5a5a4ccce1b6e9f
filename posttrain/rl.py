"""The skeleton the online RL recipes share (TRL GRPOTrainer and RLOOTrainer): data, rewards, pre-check, curve.

`recipes/grpo/run.py` and `recipes/rloo/run.py` are thin: both call `run_rl` with their trainer class. The
pieces here:

- prompts for RL: generated Countdown tasks (`prompt` plus the `target`/`nums` columns the Countdown reward
  reads), or UltraFeedback user prompts as conversational prompts (hub at the pinned revision, or `fixture`);
- `GRPORecipeConfig` / `RLOORecipeConfig`: TRL's own configs (same fields) whose parsing first runs the batch
  pre-check, so a bad batch shape is explained in terms of the fields to change before TRL's terse check fires;
- `precheck_run`: everything else that can be checked before any model loads (start model present, reward
  weights, rewards that fit the task and the start model's output format, vLLM installed / GPU present / server
  reachable, LLM judge reachable with whole prompt groups per process, prompt + completion fitting the context);
- resuming (`posttrain.runtime.resume_checkpoint`, shared by every recipe): the settings a run's checkpoints
  depend on are kept in `output_dir/run_identity.json`; a relaunch that would resume with other settings (data,
  rewards, batch shape, model) stops with the differences listed;
- `RewardCurveCallback`: the reward curve (total and per reward function, from TRL's logs) as JSONL and PNG in
  `output_dir`, rewritten atomically at every log and at the end of training.

`python -m posttrain.rl reuse-eval ...` lets the Makefile reuse an evaluation that already measured the start
model with the same settings (the SFT run's `eval-after` is the RL run's `eval-before`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from transformers import TrainerCallback
from trl import GRPOConfig, RLOOConfig

from posttrain.io import atomic_write_jsonl, read_run_summary
from posttrain.models import trained_template
from posttrain.runtime import logger

COUNTDOWN_DATASETS = (None, "", "countdown")
COUNTDOWN_REWARDS = ("countdown", "countdown_strict")  # read the `target` / `nums` columns of Countdown rows
THINK_REWARDS = ("format", "tag_count")  # score the <think>...</think><answer>...</answer> protocol
REWARD_CURVE_JSONL = "reward_curve.jsonl"
REWARD_CURVE_PNG = "reward_curve.png"


class RLConfigError(ValueError):
    """A configuration that cannot train; the message names the fields and what to change."""


def _fail(problems: list[str], algo: str = "RL") -> None:
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise RLConfigError(f"{algo} configuration problem(s), found before loading any model:\n{lines}")


# ----------------------------------------------------------------------------------------------------------
# Batch pre-check (runs while the config is parsed, before TRL's own checks)
# ----------------------------------------------------------------------------------------------------------


def launch_world_size() -> int:
    """Processes of this launch (accelerate/torchrun set WORLD_SIZE); the config is parsed before any setup."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _suggest_batch(per_device: int, steps: int, processes: int, k: int) -> int:
    """The smallest per_device_train_batch_size >= the given one whose generation batch holds whole groups."""
    size = max(1, per_device)
    while (size * steps * processes) % k:
        size += 1
    return size


def _divisors_from_2(n: int) -> list[int]:
    return [d for d in range(2, n + 1) if n % d == 0]


def batch_problems(args: Any, num_processes: int | None = None) -> list[str]:
    """Batch-shape problems under TRL 1.16 semantics (see GRPOConfig/RLOOConfig.__post_init__).

    Per optimizer step TRL samples one *generation batch* of completions:
    per_device_train_batch_size x processes x steps_per_generation (default: gradient_accumulation_steps),
    or `generation_batch_size` when that is set. It holds generation_batch / num_generations prompts, each
    with num_generations completions, so it must be a multiple of num_generations.
    """
    n_proc = launch_world_size() if num_processes is None else num_processes
    problems: list[str] = []
    per_device = args.per_device_train_batch_size
    k = args.num_generations
    if k is None or k < 2:
        problems.append(
            f"num_generations={k}: GRPO and RLOO compare the completions of one prompt with each other, so "
            "every prompt needs at least 2 (fix: --num_generations 4)."
        )
    if args.max_completion_length is None or args.max_completion_length < 1:
        problems.append(
            f"max_completion_length={args.max_completion_length}: set a positive token budget for completions "
            "(e.g. --max_completion_length 96 for the compact Countdown prompt, 512+ for reasoning traces)."
        )
    if per_device is None or per_device < 1:
        problems.append(f"per_device_train_batch_size={per_device} must be >= 1.")
        return problems
    if args.generation_batch_size is not None and args.steps_per_generation is not None:
        problems.append(
            f"generation_batch_size={args.generation_batch_size} and steps_per_generation="
            f"{args.steps_per_generation} are both set; they say the same thing (generation_batch_size = "
            "per_device_train_batch_size x processes x steps_per_generation): unset one of them."
        )
        return problems
    global_batch = per_device * n_proc
    if args.generation_batch_size is not None:
        if args.generation_batch_size % global_batch:
            problems.append(
                f"generation_batch_size={args.generation_batch_size} must be a multiple of "
                f"per_device_train_batch_size ({per_device}) x processes ({n_proc}) = {global_batch} "
                f"(fix: --generation_batch_size {max(1, args.generation_batch_size // global_batch) * global_batch})."
            )
            return problems
        generation_batch = args.generation_batch_size
        how = f"generation_batch_size={generation_batch}"
        steps = generation_batch // global_batch
    else:
        steps = args.steps_per_generation or args.gradient_accumulation_steps
        generation_batch = global_batch * steps
        source = "steps_per_generation" if args.steps_per_generation else "gradient_accumulation_steps"
        how = (
            f"per_device_train_batch_size ({per_device}) x processes ({n_proc}) x {source} ({steps}) = "
            f"{generation_batch} completions per generation"
        )
    if k is not None and k >= 2 and generation_batch % k:
        smaller = [d for d in _divisors_from_2(generation_batch) if d < k]
        fix_k = f" or --num_generations {smaller[-1]}" if smaller else ""
        if args.generation_batch_size is not None:
            step = math.lcm(global_batch, k)
            fix = f"--generation_batch_size {max(1, round(generation_batch / step)) * step}"
        else:
            fix = f"--per_device_train_batch_size {_suggest_batch(per_device, steps, n_proc, k)}"
        problems.append(
            f"{how}, which is not a multiple of num_generations={k}: every prompt needs all its {k} completions "
            f"in one batch. Fix: {fix}"
            f"{fix_k} (prompts per step = completions per generation / num_generations)."
        )
    strategy = getattr(args, "eval_strategy", "no")
    do_eval = str(getattr(strategy, "value", strategy)).lower() not in ("no", "none")
    if do_eval and k is not None and k >= 2:
        k_eval = getattr(args, "num_generations_eval", None) or k
        eval_batch = args.per_device_eval_batch_size * n_proc
        if eval_batch % k_eval:
            problems.append(
                f"per_device_eval_batch_size ({args.per_device_eval_batch_size}) x processes ({n_proc}) = "
                f"{eval_batch} is not a multiple of num_generations_eval/num_generations={k_eval} (fix: "
                f"--per_device_eval_batch_size {_suggest_batch(args.per_device_eval_batch_size, 1, n_proc, k_eval)})."
            )
    return problems


@dataclass
class GRPORecipeConfig(GRPOConfig):
    """TRL's GRPOConfig (same fields); parsing explains batch-shape mistakes before TRL's own check does."""

    def __post_init__(self) -> None:
        _fail(batch_problems(self), "GRPO")
        super().__post_init__()


@dataclass
class RLOORecipeConfig(RLOOConfig):
    """TRL's RLOOConfig (same fields); parsing explains batch-shape mistakes before TRL's own check does."""

    def __post_init__(self) -> None:
        _fail(batch_problems(self), "RLOO")
        super().__post_init__()


# ----------------------------------------------------------------------------------------------------------
# Run pre-check (before any model loads)
# ----------------------------------------------------------------------------------------------------------


def looks_local(name: str) -> bool:
    """True for names that can only be a local folder (hub ids are `owner/name`)."""
    return (
        name.startswith((".", "/", "~"))
        or name.startswith("runs" + os.sep)
        or name.count("/") > 1
        or os.sep != "/"
        and os.sep in name
    )


def start_model_problem(name: str, hint: str | None = None) -> str | None:
    if name and looks_local(name) and not Path(name).expanduser().exists():
        fix = hint or "train it first, or pass --model_name_or_path embedded / a hub id"
        return f"model_name_or_path={name!r} does not exist ({fix})."
    return None


def vllm_server_url(args: Any) -> str:
    if args.vllm_server_base_url:
        return args.vllm_server_base_url.rstrip("/")
    host = "127.0.0.1" if args.vllm_server_host in ("0.0.0.0", "", None) else args.vllm_server_host
    return f"http://{host}:{args.vllm_server_port}"


def server_reachable(url: str, timeout_s: float = 3.0) -> bool:
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def vllm_problems(args: Any, model_name: str, algo: str) -> list[str]:
    if not args.use_vllm:
        return []
    problems = []
    if args.vllm_mode not in ("colocate", "server"):
        problems.append(f"vllm_mode={args.vllm_mode!r}: use 'colocate' (one process group) or 'server'.")
        return problems
    if args.vllm_mode == "colocate":
        if importlib.util.find_spec("vllm") is None:
            problems.append(
                "use_vllm=true but vLLM is not installed (fix: `make setup EXTRAS=dev,vllm` on a CUDA machine, "
                "or --use_vllm false to generate with transformers)."
            )
        if not _cuda_available():
            problems.append("use_vllm=true needs a CUDA GPU; this machine has none (fix: --use_vllm false).")
    else:
        url = vllm_server_url(args)
        if not server_reachable(url):
            problems.append(
                f"vllm_mode=server but no vLLM server answers at {url} (vllm_server_base_url / "
                "vllm_server_host / vllm_server_port). Start one on a spare GPU first, e.g. "
                f"`CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model {model_name}`, then train on the other GPUs: "
                "`CUDA_VISIBLE_DEVICES=1,2,3 accelerate launch --config_file accelerate_configs/ddp.yaml "
                f"--num_processes 3 recipes/{algo}/run.py ...` - or use --vllm_mode colocate."
            )
    return problems


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def reward_problems(names: Sequence[str], weights: Sequence[float] | None) -> list[str]:
    from rewards.registry import check_reward_weights

    if not names:
        return ["reward_funcs is empty: name at least one reward, e.g. reward_funcs: [countdown, format]."]
    try:
        check_reward_weights(list(names), None if weights is None else list(weights))
    except ValueError as exc:
        return [str(exc)]
    return []


def task_reward_problems(task: str | None, reward_names: Sequence[str]) -> list[str]:
    """Countdown rewards need the Countdown columns (`target`, `nums`): on other prompts they crash after
    the first generation, so refuse them up front."""
    wrong = [name for name in reward_names if name in COUNTDOWN_REWARDS]
    if task == "ultrafeedback" and wrong:
        return [
            f"reward_funcs has {wrong}, which score Countdown answers against the `target` and `nums` columns, "
            "but the prompts are UltraFeedback (dataset_name), which has neither. Use reward_model or llm_judge "
            "(e.g. reward_funcs: [reward_model]), or leave dataset_name unset for Countdown tasks."
        ]
    return []


def think_format_problems(model_name: str, reward_names: Sequence[str]) -> list[str]:
    """Format rewards that cannot fit the start model's output: `format` / `tag_count` reward a <think> block,
    pointless for a model trained to answer directly; `answer_format` rewards a bare answer, which a model
    trained to think first never writes. Judged from the start model's run_summary.json (models of this project)."""
    chosen = [name for name in reward_names if name in THINK_REWARDS]
    countdown = (read_run_summary(model_name).get("args") or {}).get("countdown") or {}
    if not isinstance(countdown, dict):
        return []
    if "answer_format" in reward_names and countdown.get("warmstart_think") is True:
        return [
            f"reward_funcs has answer_format, which rewards a bare <answer>...</answer>, but {model_name} was "
            "trained to reason in <think> first (its run_summary.json: countdown.warmstart_think=true), so it "
            "scores 0 for every completion it writes. Use `format` instead, e.g. --reward_funcs countdown format."
        ]
    if not chosen or countdown.get("warmstart_think") is not False:
        return []
    return [
        f"reward_funcs has {chosen}, which reward a <think>...</think> block, but {model_name} was trained to "
        "answer directly without one (its run_summary.json: countdown.warmstart_think=false), so `format` "
        "scores 0 for every completion it writes. Use `answer_format` (one <answer>...</answer> and nothing "
        "else), e.g. reward_funcs: [countdown, answer_format], or drop "
        + " and ".join(f"`{name}`" for name in chosen)
        + "."
    ]


def _without_credentials(url: str) -> str:
    parsed = urlparse(url)
    if parsed.username is None and parsed.password is None:
        return url
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    return urlunparse(parsed._replace(netloc=netloc))


def judge_probe(base_url: str, timeout_s: float = 3.0) -> tuple[bool, int | None, str]:
    """(answered, HTTP status, detail) for GET {base_url}/models, without credentials.

    Any HTTP answer counts as reachable: 401/403 only mean the endpoint wants a key (the judge sends it).
    """
    import urllib.error
    import urllib.request

    url = base_url.rstrip("/") + "/models"
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": "posttrain-precheck"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return True, int(response.status), f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return True, int(err.code), f"HTTP {err.code}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return False, None, f"{type(err).__name__}: {reason}"[:200]


def judge_problems(reward_args: Any, reward_names: Sequence[str], timeout_s: float = 3.0) -> list[str]:
    """llm_judge: the judge must answer at judge_base_url, or every group would get the neutral score."""
    if "llm_judge" not in reward_names or reward_args is None or not reward_args.judge_base_url:
        return []
    base = str(reward_args.judge_base_url).rstrip("/")
    shown = _without_credentials(base)
    answered, status, detail = judge_probe(base, timeout_s)
    if not answered:
        return [
            f"reward_funcs has llm_judge but nothing answers at {shown}/models within {timeout_s:g} s ({detail}); "
            "check judge_base_url and start the judge first, e.g. `CUDA_VISIBLE_DEVICES=1 vllm serve "
            f"{reward_args.judge_model} --port 8001` for judge_base_url: http://127.0.0.1:8001/v1. Without it "
            "every completion would get judge_neutral_score and the run would learn nothing."
        ]
    if status is not None and status not in (200, 401, 403):
        hint = " (OpenAI-compatible servers serve it under /v1: does judge_base_url end with /v1?)"
        logger.warning(
            "llm_judge: %s/models answered HTTP %s%s; the judge's first request will tell.",
            shown,
            status,
            hint if status == 404 and not base.endswith("/v1") else "",
        )
    return []


def judge_group_problems(training_args: Any, reward_names: Sequence[str]) -> list[str]:
    """llm_judge judges each prompt group in one request, so no group may be split across processes.

    Each process scores per_device_train_batch_size x steps_per_generation completions per generation (TRL's
    train dataloader), cut from a stream in which a prompt's num_generations completions are consecutive.
    """
    k = getattr(training_args, "num_generations", None)
    per_device = getattr(training_args, "per_device_train_batch_size", None)
    if "llm_judge" not in reward_names or not k or k < 2 or not per_device:
        return []
    steps = getattr(training_args, "steps_per_generation", None) or training_args.gradient_accumulation_steps
    local = per_device * steps
    if local % k == 0:
        return []
    fix = per_device
    while (fix * steps) % k:
        fix += 1
    return [
        f"reward_funcs has llm_judge, which judges each prompt's {k} completions in one request, but each process "
        f"scores per_device_train_batch_size ({per_device}) x steps_per_generation ({steps}) = {local} "
        f"completions, not a multiple of num_generations={k}: prompt groups would be split across processes "
        f"and judged in parts. Fix: --per_device_train_batch_size {fix} (or a num_generations that divides {local})."
    ]


def precheck_run(
    training_args: Any,
    *,
    algo: str,
    model_name: str,
    reward_names: Sequence[str],
    start_hint: str | None = None,
    reward_model_path: str | None = None,
    reward_args: Any = None,
    task: str | None = None,
) -> None:
    """Config checks that need no model: start model present, reward weights, rewards that fit the task and
    the start model, vLLM, the LLM judge. Raises RLConfigError listing every problem found."""
    problems = []
    missing = start_model_problem(model_name, start_hint)
    if missing:
        problems.append(missing)
    if "reward_model" in reward_names and reward_model_path and not Path(reward_model_path).is_dir():
        problems.append(
            f"reward_model_path={reward_model_path!r} does not exist (run `make rm-ultrafeedback` first, or point "
            "it at a saved reward model folder)."
        )
    problems += reward_problems(reward_names, training_args.reward_weights)
    problems += task_reward_problems(task, reward_names)
    problems += think_format_problems(model_name, reward_names)
    problems += judge_group_problems(training_args, reward_names)
    problems += vllm_problems(training_args, model_name, algo)
    problems += judge_problems(reward_args, reward_names)
    _fail(problems, algo.upper())


def prompt_length_problems(
    training_args: Any, model_path: str, prompts: Sequence[Any], tokenizer: Any
) -> list[str]:
    """Longest prompt + max_completion_length must fit the model's context (and vLLM's, when set)."""
    from transformers import AutoConfig

    longest = 0
    for prompt in prompts:
        if isinstance(prompt, str):
            n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        else:
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
            n = len(ids["input_ids"] if hasattr(ids, "keys") else ids)  # a BatchEncoding in transformers 5
        longest = max(longest, n)
    need = longest + (training_args.max_completion_length or 0)
    problems = []
    try:
        context = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    except (OSError, ValueError):
        context = None
    if context and need > context:
        problems.append(
            f"the longest prompt ({longest} tokens) + max_completion_length ({training_args.max_completion_length})"
            f" = {need} tokens exceeds the model's context of {context} (fix: --max_completion_length "
            f"{max(1, context - longest)}, or shorter prompts: --prompt_template compact)."
        )
    vllm_len = getattr(training_args, "vllm_max_model_length", None)
    if training_args.use_vllm and vllm_len and need > vllm_len:
        problems.append(
            f"vllm_max_model_length={vllm_len} < longest prompt ({longest}) + max_completion_length "
            f"({training_args.max_completion_length}) = {need} (fix: --vllm_max_model_length {need})."
        )
    return problems


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------


def rl_task(dataset_name: str | None) -> str | None:
    """ "countdown" or "ultrafeedback" for the datasets build_rl_dataset supports (None for any other name)."""
    from posttrain.chat_data import FIXTURE_NAME, ULTRAFEEDBACK_HUB_ID
    from posttrain.countdown import COUNTDOWN_HUB_ID

    if dataset_name in COUNTDOWN_DATASETS or dataset_name == COUNTDOWN_HUB_ID:
        return "countdown"
    if dataset_name in (ULTRAFEEDBACK_HUB_ID, FIXTURE_NAME):
        return "ultrafeedback"
    return None


def countdown_rl_rows(tasks: Sequence[Any], template: str) -> list[dict]:
    """RL rows: the prompt plus the columns the Countdown reward reads (TRL passes extra columns as kwargs)."""
    from posttrain.countdown import make_prompt

    return [
        {
            "prompt": make_prompt(t.nums, t.target, template),
            "target": int(t.target),
            "nums": [int(x) for x in t.nums],
        }
        for t in tasks
    ]


def build_rl_dataset(script_args: Any, countdown_args: Any) -> tuple[Any, dict]:
    """The training prompts and a description of where they came from (recorded in run_summary.json)."""
    from datasets import Dataset

    from posttrain.chat_data import FIXTURE_NAME, ULTRAFEEDBACK_HUB_ID
    from posttrain.countdown import COUNTDOWN_HUB_ID, COUNTDOWN_HUB_REVISION, load_hub_countdown_tasks
    from posttrain.data import is_heldout, train_tasks

    name = script_args.dataset_name
    max_rows = script_args.dataset_max_train_rows
    if name in COUNTDOWN_DATASETS or name == COUNTDOWN_HUB_ID:
        if name == COUNTDOWN_HUB_ID:
            revision = script_args.dataset_revision or COUNTDOWN_HUB_REVISION
            hub_tasks, _ = load_hub_countdown_tasks(
                revision=revision,
                seed=countdown_args.countdown_data_seed,
                max_tasks=countdown_args.countdown_train_size * 2,
            )
            tasks = [t for t in hub_tasks if not is_heldout(t.target, t.nums)][
                : countdown_args.countdown_train_size
            ]
            source = f"{COUNTDOWN_HUB_ID}@{revision}"
        else:
            tasks = train_tasks(
                countdown_args.countdown_train_size,
                seed=countdown_args.countdown_data_seed,
                **countdown_args.generator_kwargs(),
            )
            source = "generated"
        rows = countdown_rl_rows(tasks[:max_rows] if max_rows else tasks, countdown_args.prompt_template)
        info = {"task": "countdown", "data_source": source, "prompt_template": countdown_args.prompt_template}
        return Dataset.from_list(rows), info
    if name in (ULTRAFEEDBACK_HUB_ID, FIXTURE_NAME):
        from posttrain.chat_data import load_ultrafeedback, resolve_source

        # A full run (no row limit) must not silently train on the small offline fixture.
        source = resolve_source(name, ULTRAFEEDBACK_HUB_ID, allow_fallback=max_rows is not None)
        ds = load_ultrafeedback(
            source, script_args.dataset_train_split, revision=script_args.dataset_revision, max_rows=max_rows
        )
        seen: set[str] = set()
        rows = []
        for prompt in ds["prompt"]:
            if prompt not in seen:  # the binarized splits repeat prompts; one group per prompt is enough
                seen.add(prompt)
                rows.append({"prompt": [{"role": "user", "content": prompt}]})
        info = {"task": "ultrafeedback", "data_source": source, "split": script_args.dataset_train_split}
        return Dataset.from_list(rows), info
    raise RLConfigError(
        f"dataset_name={name!r} is not supported by the RL recipes; leave it unset (generated Countdown tasks), "
        f"or use {COUNTDOWN_HUB_ID!r}, {ULTRAFEEDBACK_HUB_ID!r} or {FIXTURE_NAME!r} (UltraFeedback offline)."
    )


# ----------------------------------------------------------------------------------------------------------
# Reward curve
# ----------------------------------------------------------------------------------------------------------


def reward_rows(log_history: Sequence[dict]) -> list[dict]:
    """One row per training log that carries rewards: step, total reward (mean/std), per-function means."""
    rows = []
    for entry in log_history:
        if "reward" not in entry or "step" not in entry or "train_runtime" in entry:
            continue
        row = {"step": entry["step"], "reward": entry.get("reward"), "reward_std": entry.get("reward_std")}
        for key, value in entry.items():
            if key.startswith("rewards/") and key.endswith("/mean"):
                row[key[len("rewards/") : -len("/mean")]] = value
        for key in ("kl", "completions/mean_length", "step_time", "learning_rate"):
            if key in entry:
                row[key] = entry[key]
        rows.append(row)
    return rows


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over `window` values (NaNs skipped), one value per full window."""
    out = []
    for end in range(window, len(values) + 1):
        chunk = [v for v in values[end - window : end] if _finite(v)]
        out.append(sum(chunk) / len(chunk) if chunk else float("nan"))
    return out


def plot_reward_curve(rows: Sequence[dict], path: str | os.PathLike, title: str = "reward") -> Path | None:
    """Total and per-function reward by step as a PNG, written atomically. None when there is nothing to plot."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4))
    try:
        total = [r["reward"] if _finite(r["reward"]) else float("nan") for r in rows]
        ax.plot(steps, total, marker="o", markersize=3, linewidth=1, alpha=0.6, label="total (weighted)")
        if all(_finite(r.get("reward_std")) for r in rows):
            lo = [t - r["reward_std"] for t, r in zip(total, rows, strict=True)]
            hi = [t + r["reward_std"] for t, r in zip(total, rows, strict=True)]
            ax.fill_between(steps, lo, hi, alpha=0.1, label="± std over completions")
        # One step's mean is noisy (a few prompts); the moving average shows the trend.
        window = max(3, len(rows) // 8)
        if len(rows) >= 2 * window:
            avg = moving_average(total, window)
            ax.plot(
                steps[window - 1 :], avg, color="black", linewidth=2.5, label=f"total, mean of {window} steps"
            )
        skip = {"step", "reward", "reward_std", "kl", "completions/mean_length", "step_time", "learning_rate"}
        names = sorted({k for r in rows for k in r if k not in skip})
        for name in names:
            ax.plot(steps, [r.get(name, float("nan")) for r in rows], linestyle="--", label=name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("mean reward per completion")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(
            fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5)
        )  # outside: the curves stay visible
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=100)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    finally:
        plt.close(fig)
    return path


class RewardCurveCallback(TrainerCallback):
    """Rewrites `reward_curve.jsonl` and `reward_curve.png` in `output_dir` at every log and at the end.

    Rebuilt from `state.log_history`, which a resumed run restores from its checkpoint, so the curve of a
    killed and relaunched run is continuous.
    """

    def __init__(self, output_dir: str | os.PathLike, title: str = "reward") -> None:
        self.output_dir = Path(output_dir)
        self.title = title
        self.rows: list[dict] = []

    def _write(self, state: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.rows = reward_rows(state.log_history)
        if not self.rows:
            return
        atomic_write_jsonl(self.output_dir / REWARD_CURVE_JSONL, self.rows)
        try:
            plot_reward_curve(self.rows, self.output_dir / REWARD_CURVE_PNG, self.title)
        except Exception as exc:  # noqa: BLE001 - a plotting problem must never stop training
            logger.warning("Could not draw the reward curve: %s", exc)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        self._write(state)

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self._write(state)


def curve_summary(rows: Sequence[dict], window: int = 3) -> dict:
    """Mean total reward over the first and last `window` logged steps (None when nothing was logged)."""
    values = [(r["step"], r["reward"]) for r in rows if _finite(r.get("reward"))]
    if not values:
        return {"first": None, "last": None, "n_logs": 0}
    first = values[:window]
    last = values[-window:]
    return {
        "first": round(sum(v for _, v in first) / len(first), 4),
        "first_steps": [s for s, _ in first],
        "last": round(sum(v for _, v in last) / len(last), 4),
        "last_steps": [s for s, _ in last],
        "n_logs": len(values),
    }


# ----------------------------------------------------------------------------------------------------------
# Arguments and the run
# ----------------------------------------------------------------------------------------------------------


def _option_given(key: str, argv: Sequence[str]) -> bool:
    """Whether `key` is set on the command line or in the `--config` YAML (explicit, not a dataclass default)."""
    import yaml

    if any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv):
        return True
    if "--config" in argv:
        index = list(argv).index("--config")
        if index + 1 < len(argv) and os.path.isfile(argv[index + 1]):
            with open(argv[index + 1]) as handle:
                return key in (yaml.safe_load(handle) or {})
    return False


def parse_rl_args(parser: Any, argv: Sequence[str] | None = None) -> tuple:
    """`parse_recipe_args`, then the Countdown prompt template from the start model when none is given.

    A model trained by a recipe of this project records its template in run_summary.json; RL should sample
    with the same prompt the model was trained on (eval.countdown and posttrain.preferences pick it up the same way).
    """
    from posttrain.runtime import parse_recipe_args

    argv = list(sys.argv[1:] if argv is None else argv)
    parsed = parse_recipe_args(parser, argv)
    countdown = next((p for p in parsed if type(p).__name__ == "CountdownArguments"), None)
    model = next((p for p in parsed if type(p).__name__ == "ModelConfig"), None)
    if countdown is None or model is None:
        return parsed
    trained = trained_template(model.model_name_or_path)
    if trained and not _option_given("prompt_template", argv):
        countdown.prompt_template = trained
    elif trained and trained != countdown.prompt_template:
        logger.warning(
            "prompt_template=%s, but %s was trained with %r: RL will sample from prompts the model has not "
            "seen (drop --prompt_template to use the model's own).",
            countdown.prompt_template,
            model.model_name_or_path,
            trained,
        )
    return parsed


def kl_reference(trainer: Any, training_args: Any, model_args: Any) -> str | None:
    """What the KL penalty compared the policy with: None without one (beta 0)."""
    if not getattr(training_args, "beta", 0.0):
        return None
    if getattr(trainer, "ref_model", None) is not None:
        return "frozen copy of the start model"
    if getattr(model_args, "use_peft", False):
        return "start model (adapters disabled)"
    return None


START_HINTS = {
    "countdown": "run `make sft-countdown` first, or pass --model_name_or_path embedded",
    "ultrafeedback": "run `make sft-smoltalk` first, or pass --model_name_or_path embedded",
}


def run_rl(
    algo: str,
    trainer_cls: type,
    script_args: Any,
    countdown_args: Any,
    reward_args: Any,
    training_args: Any,
    model_args: Any,
) -> Any:
    """Parse -> pre-check -> data -> rewards -> trainer -> train (resuming) -> save; returns the trainer."""
    from trl import get_peft_config

    from posttrain.models import load_tokenizer
    from posttrain.runtime import (
        prepare_model_args,
        resume_checkpoint,
        run_identity,
        save_and_summarize,
        setup_logging,
    )
    from rewards.registry import build_reward_funcs

    started = time.time()
    setup_logging(training_args)
    task = rl_task(script_args.dataset_name)
    reward_names = list(reward_args.reward_funcs)
    precheck_run(
        training_args,
        algo=algo,
        model_name=model_args.model_name_or_path,
        reward_names=reward_names,
        start_hint=START_HINTS.get(task),
        reward_model_path=getattr(reward_args, "reward_model_path", None),
        reward_args=reward_args,
        task=task,
    )
    model_path = prepare_model_args(model_args, training_args)
    identity = run_identity(model_args, training_args, script_args, reward_args)
    if task == "countdown":
        identity.update(run_identity(countdown_args))
    resume = resume_checkpoint(training_args, {"algo": algo, "task": task, **identity})
    dataset, data_info = build_rl_dataset(script_args, countdown_args)
    if len(dataset) == 0:
        raise RLConfigError(
            "the training set is empty: raise countdown_train_size or dataset_max_train_rows."
        )
    _fail(
        prompt_length_problems(training_args, model_path, dataset["prompt"], load_tokenizer(model_path)),
        algo.upper(),
    )
    logger.info("%s data (%s): %d prompts", algo.upper(), data_info["data_source"], len(dataset))

    reward_funcs = build_reward_funcs(reward_args, max_completion_length=training_args.max_completion_length)
    curve = RewardCurveCallback(training_args.output_dir, title=f"{algo.upper()} {data_info['task']}")
    trainer = trainer_cls(
        model=model_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        peft_config=get_peft_config(model_args),
        callbacks=[curve],
    )
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_state()

    args = {"script": script_args, "reward": reward_args, "training": training_args, "model": model_args}
    if task == "countdown":  # lets `python -m eval.countdown` pick the template this model was trained with
        args["countdown"] = countdown_args
    summary = curve_summary(curve.rows or reward_rows(trainer.state.log_history))
    save_and_summarize(
        trainer,
        started=started,
        train_result=train_result,
        args=args,
        extra={
            "recipe": algo,
            "n_train": len(dataset),
            "reward_funcs": reward_names,
            "reward_weights": training_args.reward_weights,
            "num_generations": training_args.num_generations,
            "generation_batch_size": training_args.generation_batch_size,
            "reward_curve": summary,
            "kl_reference": kl_reference(trainer, training_args, model_args),
            "resumed_from": resume,
            **data_info,
        },
    )
    if trainer.accelerator.is_main_process:
        print(
            f"{algo.upper()} mean reward: first logged steps {summary.get('first')} -> last logged steps "
            f"{summary.get('last')} (curve: {Path(training_args.output_dir) / REWARD_CURVE_PNG})",
            flush=True,
        )
    trainer.end()
    return trainer


# ----------------------------------------------------------------------------------------------------------
# Reusing an evaluation of the start model (Makefile helper)
# ----------------------------------------------------------------------------------------------------------


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
    parser = argparse.ArgumentParser(prog="python -m posttrain.rl reuse-eval")
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
    if len(sys.argv) > 1 and sys.argv[1] == "reuse-eval":
        raise SystemExit(reuse_eval(sys.argv[2:]))
    raise SystemExit("usage: python -m posttrain.rl reuse-eval SOURCE... --output_dir DIR --model M ...")
