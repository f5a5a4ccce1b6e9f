"""Checks of an RL run that need no model: a wrong setting stops it before anything loads, naming the fix.

- `GRPORecipeConfig` / `RLOORecipeConfig`: TRL's own configs (same fields) whose parsing first runs the batch
  check (`batch_problems`), so a bad batch shape is explained in terms of the fields to change before TRL's terse
  check fires;
- `precheck_run`: the start model present, reward weights, rewards that fit the task and the start model's output
  format, vLLM installed / GPU present / server reachable, LLM judge reachable with whole prompt groups per process;
- `prompt_length_problems`: prompt + completion fit the context (needs the tokenizer, run once the data exists).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from transformers import AutoConfig
from trl import GRPOConfig, RLOOConfig

from posttrain.models import looks_like_local_path, trained_countdown_args
from posttrain.runtime import cuda_available
from rewards.registry import check_reward_weights

logger = logging.getLogger(__name__)

COUNTDOWN_REWARDS = ("countdown", "countdown_strict")  # read the `target` / `nums` columns of Countdown rows
THINK_REWARDS = ("format", "tag_count")  # score the <think>...</think><answer>...</answer> protocol


class RLConfigError(ValueError):
    """A configuration that cannot train; the message names the fields and what to change."""


def fail(problems: list[str], algo: str = "RL") -> None:
    """Raise one RLConfigError listing every problem (nothing when the list is empty)."""
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
    """TRL's GRPOConfig plus the Countdown group guidance of `posttrain.guidance`; parsing explains batch-shape
    mistakes before TRL's own check does."""

    rollout_greedy_in_group: bool = field(
        default=False,
        metadata={
            "help": "Countdown: the first member of every group is the policy's greedy answer (HF generation)."
        },
    )
    rollout_solution_guidance: bool = field(
        default=False,
        metadata={"help": "Countdown: the task's known solution joins each group with no correct sample."},
    )
    length_collapse_ratio: float = field(
        default=0.0,
        metadata={
            "help": "Stop when the mean completion length stays below this fraction of the start's for "
            "length_collapse_patience logged steps (posttrain.length_guard); 0: off."
        },
    )
    length_collapse_patience: int = field(
        default=3, metadata={"help": "Logged steps below length_collapse_ratio before the run stops."}
    )

    def __post_init__(self) -> None:
        fail(batch_problems(self), "GRPO")
        if not 0.0 <= self.length_collapse_ratio < 1.0 or self.length_collapse_patience < 1:
            fail(
                [
                    f"length_collapse_ratio must be in [0, 1) (0: off), got {self.length_collapse_ratio}, and "
                    f"length_collapse_patience >= 1, got {self.length_collapse_patience}"
                ],
                "GRPO",
            )
        if (self.rollout_greedy_in_group or self.rollout_solution_guidance) and self.use_vllm:
            fail(
                [
                    "rollout_greedy_in_group / rollout_solution_guidance generate with transformers, not vLLM "
                    "(fix: --use_vllm false, or turn both off)."
                ],
                "GRPO",
            )
        super().__post_init__()


@dataclass
class RLOORecipeConfig(RLOOConfig):
    """TRL's RLOOConfig (same fields); parsing explains batch-shape mistakes before TRL's own check does."""

    def __post_init__(self) -> None:
        fail(batch_problems(self), "RLOO")
        super().__post_init__()


# ----------------------------------------------------------------------------------------------------------
# Run pre-check (before any model loads)
# ----------------------------------------------------------------------------------------------------------


def start_model_problem(name: str, hint: str | None = None) -> str | None:
    """The start model is a local folder that does not exist (a hub id is checked when it loads)."""
    if name and looks_like_local_path(name) and not Path(name).expanduser().exists():
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
        if not cuda_available():
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


def reward_problems(names: Sequence[str], weights: Sequence[float] | None) -> list[str]:
    if not names:
        return ["reward_funcs is empty: name at least one reward, e.g. reward_funcs: [countdown, format]."]
    try:
        check_reward_weights(list(names), None if weights is None else list(weights))
    except ValueError as exc:
        return [str(exc)]
    return []


TASK_NAMES = {
    "ultrafeedback": "UltraFeedback",
    "refine": "Re:Fine",
    "gsm8k": "grade-school maths",
    "codesum": "code summarisation",
}
FIX_BY_TASK = {
    "gsm8k": "Use math (and format), e.g. reward_funcs: [math, format]",
    "codesum": "Use code_summary, e.g. reward_funcs: [code_summary]",
}


def task_reward_problems(task: str | None, reward_names: Sequence[str]) -> list[str]:
    """Rewards that need columns these prompts lack crash after the first generation, so refuse them up front:
    Countdown's (`target`, `nums`) off Countdown, `math` (`answer`) off grade-school maths, `code_summary`
    (`reference`) off code summarisation."""
    problems = []
    wrong = [name for name in reward_names if name in COUNTDOWN_REWARDS]
    if task in TASK_NAMES and wrong:
        fix = FIX_BY_TASK.get(task, "Use reward_model or llm_judge (e.g. reward_funcs: [reward_model])")
        problems.append(
            f"reward_funcs has {wrong}, which score Countdown answers against the `target` and `nums` columns, "
            f"but the prompts are {TASK_NAMES[task]} prompts (dataset_name), which have neither. {fix}, or leave "
            "dataset_name unset for Countdown tasks."
        )
    if "math" in reward_names and task != "gsm8k":
        problems.append(
            "reward_funcs has math, which checks each answer against the `answer` column; only grade-school maths "
            "prompts carry one (dataset_name: gsm8k or openai/gsm8k)."
        )
    if "code_summary" in reward_names and task != "codesum":
        problems.append(
            "reward_funcs has code_summary, which scores each summary against the `reference` column; only code "
            "summarisation prompts carry one (dataset_name: codesum or google/code_x_glue_ct_code_to_text)."
        )
    return problems


def think_format_problems(model_name: str, reward_names: Sequence[str]) -> list[str]:
    """Format rewards that cannot fit the start model's output: `format` / `tag_count` reward a <think> block,
    pointless for a model trained to answer directly; `answer_format` rewards a bare answer, which a model
    trained to think first never writes. Judged from the start model's run_summary.json (models of this project)."""
    chosen = [name for name in reward_names if name in THINK_REWARDS]
    countdown = trained_countdown_args(model_name)
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
    fail(problems, algo.upper())


def completion_budget_problems(
    training_args: Any, model_name: str, rows: Sequence[dict], tokenizer: Any, sample: int = 64
) -> list[str]:
    """A start model trained to reason first (its run_summary.json: countdown.warmstart_think) writes traces far
    longer than a direct answer; a max_completion_length that cuts them leaves no completion with an answer.
    Measured with the model's own tokenizer on the first `sample` training tasks (digits tokenise differently)."""
    import random

    from posttrain.countdown import CountdownTask, make_warmstart_completion

    countdown = trained_countdown_args(model_name)
    if countdown.get("warmstart_think") is not True:
        return []
    style = countdown.get("warmstart_style", "forward")
    longest = 0
    for i in range(min(sample, len(rows))):
        row = rows[i]
        task = CountdownTask(target=int(row["target"]), nums=tuple(row["nums"]), solution="")
        try:
            text = make_warmstart_completion(task, rng=random.Random(0), think=True, style=style)
        except ValueError:  # a task the trace writer cannot solve is no measure of length
            continue
        longest = max(longest, len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1)
    budget = training_args.max_completion_length or 0
    if longest and budget < longest:
        fix = -(-longest // 32) * 32
        return [
            f"max_completion_length={budget} is shorter than the {style} traces {model_name} was trained to write "
            f"(up to {longest} tokens on these tasks): most completions would be cut before their answer. "
            f"Fix: --max_completion_length {fix}."
        ]
    return []


def prompt_length_problems(
    training_args: Any, model_path: str, prompts: Sequence[Any], tokenizer: Any
) -> list[str]:
    """Longest prompt + max_completion_length must fit the model's context (and vLLM's, when set)."""
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
