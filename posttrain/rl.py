"""The online RL recipes' shared run (TRL GRPOTrainer and RLOOTrainer): arguments, prompts, and `run_rl`.

`recipes/grpo/run.py` and `recipes/rloo/run.py` are thin: both call `run_rl` with their trainer class. Prompts
are generated Countdown tasks (`prompt` plus the `target`/`nums` columns the Countdown reward reads), Countdown
tasks from the hub, or UltraFeedback user prompts as conversational prompts (hub at the pinned revision, or
`fixture`). Before any model loads the run is checked (`posttrain.rl_checks`); a relaunch resumes from its
newest checkpoint unless its settings changed (`posttrain.runtime.resume_checkpoint`); the reward curve is
written as it trains (`posttrain.curves`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from datasets import Dataset
from transformers import TrainerCallback
from trl import get_peft_config

from posttrain.chat_data import ULTRAFEEDBACK_HUB_ID, load_ultrafeedback, resolve_source
from posttrain.countdown import (
    COUNTDOWN_HUB_ID,
    COUNTDOWN_HUB_REVISION,
    load_hub_countdown_tasks,
    make_prompt,
)
from posttrain.curves import (
    REWARD_CURVE_PNG,
    GroupSignalMeter,
    RewardCurveCallback,
    curve_summary,
    reward_rows,
)
from posttrain.data import is_heldout, train_tasks, validation_tasks
from posttrain.dataset_names import (
    CODESUM,
    CODESUM_HUB,
    COUNTDOWN,
    GSM8K,
    GSM8K_HUB,
    REFINE,
    ULTRAFEEDBACK,
    dataset_kind,
)
from posttrain.guidance import GuidedRollout, prompt_key
from posttrain.length_guard import LengthCollapseGuard
from posttrain.models import load_tokenizer, trained_template
from posttrain.rl_checks import (
    RLConfigError,
    completion_budget_problems,
    fail,
    precheck_run,
    prompt_length_problems,
)
from posttrain.runtime import (
    finish_run,
    parse_recipe_args,
    prepare_model_args,
    resume_checkpoint,
    run_identity,
    setup_logging,
    train,
)
from posttrain.validation import CountdownValidationCallback
from rewards.registry import build_reward_funcs

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------------


def rl_task(dataset_name: str | None) -> str:
    """ "countdown" (generated or hub tasks), "ultrafeedback", "refine" (a Re:Fine prompt folder), "gsm8k"
    (generated or hub word problems) or "codesum" (functions to summarise); a name RL cannot train on raises
    DatasetNameError."""
    kind = dataset_kind(dataset_name, "RL")
    tasks = {ULTRAFEEDBACK: "ultrafeedback", REFINE: "refine", GSM8K: "gsm8k", GSM8K_HUB: "gsm8k"}
    return {**tasks, CODESUM: "codesum", CODESUM_HUB: "codesum"}.get(kind, "countdown")


def countdown_rl_rows(tasks: Sequence[Any], template: str) -> list[dict]:
    """RL rows: the prompt plus the columns the Countdown reward reads (TRL passes extra columns as kwargs)."""
    return [
        {
            "prompt": make_prompt(t.nums, t.target, template),
            "target": int(t.target),
            "nums": [int(x) for x in t.nums],
            "solution": t.solution or "",  # read only by solution guidance (posttrain.guidance)
        }
        for t in tasks
    ]


def countdown_rl_tasks(script_args: Any, countdown_args: Any) -> tuple[list[Any], str]:
    """(training tasks, source): generated offline, or from the hub; never a held-out task either way."""
    if dataset_kind(script_args.dataset_name, "RL") == COUNTDOWN:
        tasks = train_tasks(
            countdown_args.countdown_train_size,
            seed=countdown_args.countdown_data_seed,
            **countdown_args.generator_kwargs(),
        )
        return tasks, "generated"
    revision = script_args.dataset_revision or COUNTDOWN_HUB_REVISION
    hub_tasks, _ = load_hub_countdown_tasks(
        revision=revision,
        seed=countdown_args.countdown_data_seed,
        max_tasks=countdown_args.countdown_train_size * 2,
    )
    tasks = [t for t in hub_tasks if not is_heldout(t.target, t.nums)][: countdown_args.countdown_train_size]
    return tasks, f"{COUNTDOWN_HUB_ID}@{revision}"


def ultrafeedback_rl_prompts(script_args: Any) -> tuple[list[dict], str]:
    """(one conversational prompt row per distinct UltraFeedback prompt, source)."""
    max_rows = script_args.dataset_max_train_rows
    # A full run (no row limit) must not silently train on the small offline fixture.
    source = resolve_source(
        script_args.dataset_name, ULTRAFEEDBACK_HUB_ID, allow_fallback=max_rows is not None
    )
    ds = load_ultrafeedback(
        source, script_args.dataset_train_split, revision=script_args.dataset_revision, max_rows=max_rows
    )
    seen: set[str] = set()
    rows = []
    for prompt in ds["prompt"]:
        if prompt not in seen:  # the binarized splits repeat prompts; one group per prompt is enough
            seen.add(prompt)
            rows.append({"prompt": [{"role": "user", "content": prompt}]})
    return rows, source


def refine_rl_prompts(script_args: Any) -> tuple[list[dict], dict]:
    """The train split of a Re:Fine prompt folder: conversational prompts plus the `source` column the length
    rule reads (TRL passes extra columns to reward functions as keywords)."""
    from posttrain.synthetic import load_prompts, read_card

    data = load_prompts(script_args.dataset_name, "train")
    max_rows = script_args.dataset_max_train_rows
    if max_rows:
        data = data.select(range(min(max_rows, len(data))))
    rows = [{"prompt": row["prompt"], "source": row["source"]} for row in data]
    card = read_card(script_args.dataset_name)
    info = {
        "task": "refine",
        "refine_task": card.get("task", {}).get("name"),
        "data_source": f"{script_args.dataset_name} ({card.get('source')})",
        "split": "train",
    }
    return rows, info


def gsm8k_rl_rows(script_args: Any, countdown_args: Any) -> tuple[list[dict], dict]:
    """Word problems of the train split: the conversational prompt and the gold `answer` the math reward reads."""
    from posttrain.gsm8k import GENERATED, gsm8k_prompt, gsm8k_rows

    n = script_args.dataset_max_train_rows or 1000
    rows = gsm8k_rows(
        script_args.dataset_name or GENERATED,
        "train",
        n,
        seed=countdown_args.countdown_data_seed,
        revision=script_args.dataset_revision,
    )
    out = [{"prompt": gsm8k_prompt(r["question"]), "answer": r["answer"]} for r in rows]
    return out, {"task": "gsm8k", "data_source": script_args.dataset_name, "split": "train"}


def codesum_rl_rows(script_args: Any, countdown_args: Any) -> tuple[list[dict], dict]:
    """Functions of the train split: the conversational prompt and the `reference` summary the
    code_summary reward reads."""
    from posttrain.codesum import GENERATED, codesum_prompt, codesum_rows

    rows = codesum_rows(
        script_args.dataset_name or GENERATED,
        "train",
        script_args.dataset_max_train_rows or 1000,
        seed=countdown_args.countdown_data_seed,
        revision=script_args.dataset_revision,
    )
    out = [{"prompt": codesum_prompt(r["code"]), "reference": r["summary"]} for r in rows]
    return out, {"task": "codesum", "data_source": script_args.dataset_name, "split": "train"}


def build_rl_dataset(script_args: Any, countdown_args: Any) -> tuple[Any, dict]:
    """The training prompts and a description of where they came from (recorded in run_summary.json)."""
    if rl_task(script_args.dataset_name) == "codesum":
        rows, info = codesum_rl_rows(script_args, countdown_args)
        return Dataset.from_list(rows), info
    if rl_task(script_args.dataset_name) == "gsm8k":
        rows, info = gsm8k_rl_rows(script_args, countdown_args)
        return Dataset.from_list(rows), info
    if rl_task(script_args.dataset_name) == "refine":
        rows, info = refine_rl_prompts(script_args)
        return Dataset.from_list(rows), info
    if rl_task(script_args.dataset_name) == "ultrafeedback":
        rows, source = ultrafeedback_rl_prompts(script_args)
        info = {"task": "ultrafeedback", "data_source": source, "split": script_args.dataset_train_split}
        return Dataset.from_list(rows), info
    tasks, source = countdown_rl_tasks(script_args, countdown_args)
    max_rows = script_args.dataset_max_train_rows
    rows = countdown_rl_rows(tasks[:max_rows] if max_rows else tasks, countdown_args.prompt_template)
    info = {"task": "countdown", "data_source": source, "prompt_template": countdown_args.prompt_template}
    return Dataset.from_list(rows), info


# ----------------------------------------------------------------------------------------------------------
# Arguments and the run
# ----------------------------------------------------------------------------------------------------------


def _option_given(key: str, argv: Sequence[str]) -> bool:
    """Whether `key` is set on the command line or in the `--config` YAML (explicit, not a dataclass default)."""
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
    "refine": "pass --model_name_or_path embedded (or any chat model)",
    "gsm8k": "run `make sft-gsm8k` first, or pass --model_name_or_path embedded",
    "codesum": "run `make sft-codesum` first, or pass --model_name_or_path embedded",
}


def run_rl(
    algo: str,
    trainer_cls: type,
    script_args: Any,
    countdown_args: Any,
    reward_args: Any,
    training_args: Any,
    model_args: Any,
    callbacks: Sequence[TrainerCallback] = (),
) -> Any:
    """Pre-check -> data -> rewards -> trainer -> train (resuming) -> save; returns the trainer.

    `callbacks` are handed to the trainer after the reward curve (e.g. an evaluation during training).
    """
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
    if task in ("countdown", "gsm8k", "codesum"):  # countdown_data_seed draws their data too
        identity.update(run_identity(countdown_args))
    resume = resume_checkpoint(training_args, {"algo": algo, "task": task, **identity})
    dataset, data_info = build_rl_dataset(script_args, countdown_args)
    if len(dataset) == 0:
        raise RLConfigError(
            "the training set is empty: raise countdown_train_size or dataset_max_train_rows."
        )
    tokenizer = load_tokenizer(model_path)
    problems = prompt_length_problems(training_args, model_path, dataset["prompt"], tokenizer)
    if task == "countdown":
        problems += completion_budget_problems(training_args, model_path, dataset, tokenizer)
    fail(problems, algo.upper())
    logger.info("%s data (%s): %d prompts", algo.upper(), data_info["data_source"], len(dataset))

    reward_funcs = build_reward_funcs(reward_args, max_completion_length=training_args.max_completion_length)
    meter = None
    if task == "countdown":  # the first reward (the answer's correctness) decides whether a group has signal
        meter = reward_funcs[0] = GroupSignalMeter(reward_funcs[0], training_args.num_generations)
    curve = RewardCurveCallback(
        training_args.output_dir, title=f"{algo.upper()} {data_info.get('refine_task') or data_info['task']}"
    )
    collapse_ratio = getattr(training_args, "length_collapse_ratio", 0.0)
    guard = (
        LengthCollapseGuard(collapse_ratio, patience=training_args.length_collapse_patience)
        if collapse_ratio
        else None
    )
    guided = None
    greedy_in_group = getattr(training_args, "rollout_greedy_in_group", False)
    solution_guidance = getattr(training_args, "rollout_solution_guidance", False)
    if task == "countdown" and (greedy_in_group or solution_guidance):
        guided = GuidedRollout(
            {prompt_key(r["prompt"]): (r["target"], r["nums"], r["solution"]) for r in dataset},
            num_generations=training_args.num_generations,
            greedy=greedy_in_group,
            solutions=solution_guidance,
        )
    trainer = trainer_cls(
        model=model_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        peft_config=get_peft_config(model_args),
        callbacks=[curve, *([guard] if guard else []), *callbacks],
        **({"rollout_func": guided} if guided is not None else {}),
    )
    if meter is not None:
        meter.trainer = trainer
    validation = None
    if task == "countdown" and countdown_args.countdown_validation_size:
        validation = CountdownValidationCallback(
            validation_tasks(countdown_args.countdown_validation_size, **countdown_args.generator_kwargs()),
            template=countdown_args.prompt_template,
            every=countdown_args.countdown_validation_steps,
            max_new_tokens=training_args.max_completion_length,
            output_dir=training_args.output_dir,
        ).bind(trainer)
    trained = train(trainer, resume)
    loaded_best = (
        validation.load_best() if validation and countdown_args.countdown_validation_load_best else None
    )

    args = {"script": script_args, "reward": reward_args, "training": training_args, "model": model_args}
    if task == "countdown":  # lets `python -m eval.countdown` pick the template this model was trained with
        args["countdown"] = countdown_args
    summary = curve_summary(curve.rows or reward_rows(trainer.state.log_history))
    finish_run(
        trainer,
        started=started,
        train_result=trained.train_result,
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
            "validation": validation.summary() if validation else None,
            "guided_groups": guided.stats if guided is not None else None,
            "length_collapse_guard": guard.summary() if guard is not None else None,
            "saved_step": loaded_best["step"] if loaded_best else trainer.state.global_step,
            **data_info,
        },
        report=(
            f"{algo.upper()} mean reward: first logged steps {summary.get('first')} -> last logged steps "
            f"{summary.get('last')} (curve: {Path(training_args.output_dir) / REWARD_CURVE_PNG})"
        ),
    )
    return trainer
