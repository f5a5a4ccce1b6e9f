"""Supervised fine-tuning (TRL SFTTrainer) with completion-only loss.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft/run.py --config recipes/sft/countdown.yaml
    accelerate launch --config_file accelerate_configs/single_gpu.yaml recipes/sft/run.py \
        --config recipes/sft/countdown.yaml --model_name_or_path Qwen/Qwen2.5-0.5B --bf16 true
    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft/run.py --config recipes/sft/smoltalk.yaml
    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft/run.py --config recipes/sft/genrm_countdown.yaml \
        --model_name_or_path runs/sft-countdown/model --dataset_name runs/genrm-countdown/data

Chat data (`dataset_name: HuggingFaceTB/smol-smoltalk` or `fixture`) trains on every assistant turn
(`assistant_only_loss: true`, see posttrain.chat_sft) and prints the held-out loss before and after training.
GenRM verification data (`dataset_name`: a folder written by `python -m posttrain.genrm`, or psr-ai/genrm-cot)
trains a generative verifier on SFT(D_verify) + genrm_lambda * SFT(D_correct) as a data mixture
(posttrain.genrm.genrm_sft_dataset).

Any YAML key can be overridden on the command line (`--learning_rate 2e-4`). Re-running the same command
resumes from the newest checkpoint in `output_dir`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from contextlib import nullcontext

from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from posttrain.chat_sft import eval_metrics, format_report, is_chat_dataset, prepare_chat_sft
from posttrain.cli import run_recipe
from posttrain.configs import CountdownArguments, ScriptArguments
from posttrain.data import load_sft_dataset
from posttrain.genrm import genrm_sft_dataset, is_genrm_source
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
    countdown_args: CountdownArguments,
    training_args: SFTConfig,
    model_args: ModelConfig,
) -> None:
    started = time.time()
    setup_logging(training_args)
    model_path = prepare_model_args(model_args, training_args)
    resume = resume_checkpoint(
        training_args, run_identity(model_args, training_args, script_args, countdown_args)
    )
    # GenRM verification data (a `python -m posttrain.genrm` folder or psr-ai/genrm-cot): eq. 7's mixture.
    load = genrm_sft_dataset if is_genrm_source(script_args.dataset_name) else load_sft_dataset
    dataset = load(script_args, countdown_args)
    # Chat data: the loss on every assistant turn, conversations fitted into max_length at turn boundaries.
    chat = None
    if is_chat_dataset(dataset[script_args.dataset_train_split]):
        chat = prepare_chat_sft(model_path, dataset, training_args)
        dataset = chat.dataset
    logger.info("SFT data: %s", {split: len(ds) for split, ds in dataset.items()})

    eval_dataset = dataset[script_args.dataset_test_split] if training_args.eval_strategy != "no" else None
    if chat is not None:  # held-out loss before/after, whatever the eval_strategy
        eval_dataset = dataset.get(script_args.dataset_test_split)
    with chat.trainer_context() if chat is not None else nullcontext():
        trainer = SFTTrainer(
            model=model_path,
            args=training_args,
            train_dataset=dataset[script_args.dataset_train_split],
            eval_dataset=eval_dataset,
            processing_class=chat.tokenizer if chat is not None else None,
            peft_config=get_peft_config(model_args),
        )
    # Chat data: the held-out loss before and after training.
    trained = train(trainer, resume, eval_metrics if chat is not None and eval_dataset is not None else None)
    train_loss = trained.train_result.metrics.get("train_loss")
    finish_run(
        trainer,
        started=started,
        train_result=trained.train_result,
        args={
            "script": script_args,
            "countdown": countdown_args,
            "training": training_args,
            "model": model_args,
        },
        extra={
            "recipe": "sft",
            "n_train": len(dataset[script_args.dataset_train_split]),
            **data_kinds(dataset[script_args.dataset_train_split]),
            **(
                {}
                if chat is None
                else {**chat.info, "heldout": {"before": trained.before, "after": trained.after}}
            ),
        },
        report=None if chat is None else format_report(train_loss, trained.before, trained.after),
    )


def data_kinds(train_dataset) -> dict:
    """GenRM data: how many training examples of each kind (verify, correct) the mixture holds."""
    if "kind" not in (train_dataset.column_names or []):
        return {}
    return {"n_train_by_kind": dict(Counter(train_dataset["kind"]))}


def make_parser() -> TrlParser:
    return TrlParser((ScriptArguments, CountdownArguments, SFTConfig, ModelConfig))


if __name__ == "__main__":
    run_recipe(main, make_parser(), parse_recipe_args)
