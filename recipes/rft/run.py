"""Rejection-sampling fine-tuning (expert iteration) on Countdown: sample, keep what the verifier accepts, SFT.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/rft/run.py --config recipes/rft/countdown.yaml

Each round samples `rft_samples_per_prompt` completions for `rft_prompts_per_round` fresh training prompts with
the current model, keeps the verified-correct ones and fine-tunes on them (TRL SFTTrainer; every SFTConfig key
works). Round r's model is in `output_dir/round<r>`; with a validation set (`validation_size` > 0) the round with
the best greedy validation accuracy (the start included) becomes `output_dir`, else the last round.
Re-running the same command skips finished rounds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from datasets import Dataset
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser

from posttrain.cli import run_recipe
from posttrain.configs import CountdownArguments, ScriptArguments
from posttrain.countdown import make_prompt
from posttrain.data import train_tasks, validation_tasks
from posttrain.io import atomic_write_json
from posttrain.rft import ROUND_DONE, RFTArguments, copy_model, round_is_done, select_records
from posttrain.runtime import logger, parse_recipe_args, prepare_model_args, setup_logging
from posttrain.validation import greedy_correct


def validation_accuracy(model, tokenizer, tasks, template: str, max_new_tokens: int) -> float:
    return sum(greedy_correct(model, tokenizer, tasks, template, max_new_tokens=max_new_tokens)) / len(tasks)


def main(
    script_args: ScriptArguments,
    countdown_args: CountdownArguments,
    rft_args: RFTArguments,
    training_args: SFTConfig,
    model_args: ModelConfig,
) -> dict:
    from posttrain.models import load_causal_lm, load_tokenizer
    from posttrain.sampling import SamplingParams, generate

    started = time.time()
    setup_logging(training_args)
    current = prepare_model_args(model_args, training_args)
    template = countdown_args.prompt_template
    out = Path(training_args.output_dir)
    pool = train_tasks(
        rft_args.rft_rounds * rft_args.rft_prompts_per_round,
        seed=countdown_args.countdown_data_seed,
        **countdown_args.generator_kwargs(),
    )
    val = (
        validation_tasks(countdown_args.countdown_validation_size, **countdown_args.generator_kwargs())
        if countdown_args.countdown_validation_size
        else []
    )
    tokenizer = load_tokenizer(current)
    history = []
    if val:
        model = load_causal_lm(current, dtype="float32")
        history.append(
            {
                "round": 0,
                "model": current,
                "val_accuracy": validation_accuracy(
                    model, tokenizer, val, template, rft_args.rft_max_new_tokens
                ),
            }
        )
    for r in range(1, rft_args.rft_rounds + 1):
        folder = out / f"round{r}"
        if round_is_done(folder):
            info = json.loads((folder / ROUND_DONE).read_text())
            logger.info("RFT round %d already done (%s)", r, folder)
        else:
            tasks = pool[(r - 1) * rft_args.rft_prompts_per_round : r * rft_args.rft_prompts_per_round]
            params = SamplingParams(
                max_new_tokens=rft_args.rft_max_new_tokens,
                temperature=rft_args.rft_temperature,
                n=rft_args.rft_samples_per_prompt,
                seed=training_args.seed + r,
            )
            prompts = [make_prompt(t.nums, t.target, template) for t in tasks]
            samples = generate(current, prompts, params, tokenizer=tokenizer)
            records, info = select_records(tasks, samples, template, rft_args)
            logger.info("RFT round %d: %s", r, info)
            if not records:
                raise SystemExit(
                    f"RFT round {r}: no verified-correct sample among {len(tasks)} prompts x "
                    f"{rft_args.rft_samples_per_prompt}: start from an SFT model (`make sft-countdown`), or "
                    "raise --rft_samples_per_prompt / --rft_temperature."
                )
            training_args.output_dir = str(folder)
            trainer = SFTTrainer(model=current, args=training_args, train_dataset=Dataset.from_list(records))
            result = trainer.train()
            info["train_loss"] = result.metrics.get("train_loss")
            trainer.model.generation_config.eos_token_id = tokenizer.eos_token_id
            trainer.save_model(str(folder))
            if trainer.accelerator.is_main_process:
                tokenizer.save_pretrained(str(folder))
            del trainer
        current = str(folder)
        if val:
            model = load_causal_lm(current, dtype="float32")
            info["val_accuracy"] = validation_accuracy(
                model, tokenizer, val, template, rft_args.rft_max_new_tokens
            )
            logger.info("RFT round %d: validation accuracy %.3f", r, info["val_accuracy"])
        atomic_write_json(folder / ROUND_DONE, info)
        history.append({"round": r, "model": current, **info})

    chosen = max(history, key=lambda h: h.get("val_accuracy", -1.0)) if val else history[-1]
    if chosen["round"] == 0:
        logger.warning("RFT: no round beat the start model on validation; output_dir keeps the last round")
        chosen = history[-1]
    copy_model(Path(chosen["model"]), out)
    summary = {
        "recipe": "rft",
        "output_dir": str(out),
        "start_model": model_args.model_name_or_path,
        "rounds": history,
        "chosen_round": chosen["round"],
        "wall_time_s": round(time.time() - started, 1),
        "args": {
            "countdown": vars(countdown_args),
            "rft": vars(rft_args),
            "model": {"model_name_or_path": model_args.model_name_or_path},
        },
    }
    atomic_write_json(out / "run_summary.json", summary)
    print(
        f"RFT: rounds {[(h['round'], h.get('val_accuracy')) for h in history]}; kept round {chosen['round']}"
    )
    return summary


def make_parser() -> TrlParser:
    return TrlParser((ScriptArguments, CountdownArguments, RFTArguments, SFTConfig, ModelConfig))


if __name__ == "__main__":
    run_recipe(main, make_parser(), parse_recipe_args)
