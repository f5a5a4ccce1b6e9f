"""Bradley-Terry reward model (TRL RewardTrainer) on preference pairs.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/reward/run.py \
        --config recipes/reward/ultrafeedback.yaml
    accelerate launch --config_file accelerate_configs/single_gpu.yaml recipes/reward/run.py \
        --config recipes/reward/ultrafeedback.yaml --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct

The model is `AutoModelForSequenceClassification` with one label on top of the chosen causal LM (a fresh score
head); the loss is -log sigmoid(r(chosen) - r(rejected)). With `use_peft: true` the LoRA task type is always
SEQ_CLS, so PEFT trains (and saves) the score head next to the adapters; any other task type would leave the
fresh head random and frozen. Held-out pair accuracy and margin are evaluated before
and after training, printed and written to `run_summary.json`. The output folder (model with `num_labels=1` and
`pad_token_id`, tokenizer with pad token and chat template) is what `make serve-reward` serves and what the RL
recipes load as a reward function. Re-running the same command resumes from the newest checkpoint.
"""

from __future__ import annotations

import logging
import time
from functools import partial

from trl import ModelConfig, RewardConfig, RewardTrainer, TrlParser, get_peft_config

from posttrain.cli import run_recipe
from posttrain.configs import ScriptArguments
from posttrain.models import load_tokenizer
from posttrain.preference_data import (
    REWARD_EVAL_KEYS,
    PreferenceArguments,
    evaluate_pairs,
    format_before_after,
    load_preference_dataset,
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

logger = logging.getLogger(__name__)


def main(
    script_args: ScriptArguments,
    pref_args: PreferenceArguments,
    training_args: RewardConfig,
    model_args: ModelConfig,
) -> RewardTrainer:
    started = time.time()
    setup_logging(training_args)
    if model_args.use_peft:
        if model_args.lora_task_type != "SEQ_CLS":
            logger.info(
                "LoRA reward model: lora_task_type %s -> SEQ_CLS, so the fresh score head is trained and saved "
                "(modules_to_save) instead of staying random and frozen.",
                model_args.lora_task_type,
            )
        else:
            logger.info("LoRA reward model: lora_task_type SEQ_CLS (the score head is trained and saved).")
        model_args.lora_task_type = "SEQ_CLS"
    model_path = prepare_model_args(model_args, training_args)
    resume = resume_checkpoint(training_args, run_identity(model_args, training_args, script_args, pref_args))
    data, data_info = load_preference_dataset(script_args)
    logger.info("Reward data (%s): %s", data_info["data_source"], {k: len(v) for k, v in data.items()})

    # load_tokenizer sets a pad token (EOS) when the tokenizer has none; RewardTrainer copies its id into the
    # model config, which sequence classification needs to find the last real token.
    trainer = RewardTrainer(
        model=model_path,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data.get("test"),
        processing_class=load_tokenizer(model_path, revision=model_args.model_revision),
        peft_config=get_peft_config(model_args),
    )
    trained = train(
        trainer,
        resume,
        partial(evaluate_pairs, keys=REWARD_EVAL_KEYS) if trainer.eval_dataset is not None else None,
        evaluate_before=pref_args.preference_eval_before,
    )

    if model_args.use_peft and trainer.accelerator.is_main_process:
        # A reward server and the RL recipes need a plain sequence-classification folder: merge the adapters.
        trainer.model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    finish_run(
        trainer,
        started=started,
        train_result=trained.train_result,
        args={"script": script_args, "preference": pref_args, "training": training_args, "model": model_args},
        extra={
            "recipe": "reward",
            "n_train": len(data["train"]),
            "n_test": len(data["test"]) if "test" in data else 0,
            **data_info,
            "heldout_pairs": {"before": trained.before, "after": trained.after},
        },
        report=None if trained.after is None else format_before_after(trained.before, trained.after),
    )
    return trainer


def make_parser() -> TrlParser:
    return TrlParser((ScriptArguments, PreferenceArguments, RewardConfig, ModelConfig))


if __name__ == "__main__":
    run_recipe(main, make_parser(), parse_recipe_args)
