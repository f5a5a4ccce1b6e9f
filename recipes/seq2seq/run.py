"""Encoder-decoder fine-tuning (transformers' Seq2SeqTrainer) for code summarisation, with LoRA or QLoRA.

    accelerate launch --config_file accelerate_configs/single_gpu.yaml recipes/seq2seq/run.py \
        --config recipes/seq2seq/codet5_lora.yaml --model_name_or_path Salesforce/codet5-base
    accelerate launch --config_file accelerate_configs/single_gpu.yaml recipes/seq2seq/run.py \
        --config recipes/seq2seq/codet5_qlora.yaml

TRL's SFTTrainer trains decoder-only models, so encoder-decoders (CodeT5, T5, BART) go through transformers'
Seq2SeqTrainer here, with the same TrlParser YAML, TRL's ModelConfig (use_peft, lora_*, load_in_4bit) and the
shared run skeleton (resume, run_summary.json). The encoder reads the function's code; the decoder learns its
summary (labels padded with -100 by DataCollatorForSeq2Seq). The held-out loss is printed before and after.
LoRA adapters are merged into the saved model, so `eval.codesum` loads a plain folder; QLoRA saves the adapter.
The embedded model is decoder-only: offline on CPU, use recipes/sft/codesum.yaml (`make sft-codesum`).
"""

from __future__ import annotations

import logging
import time

from transformers import Seq2SeqTrainer
from trl import ModelConfig, TrlParser, get_peft_config

from posttrain.cli import run_recipe
from posttrain.codesum import GENERATED, codesum_rows, seq2seq_dataset
from posttrain.configs import ScriptArguments, Seq2SeqConfig
from posttrain.models import load_tokenizer
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
SEQ2SEQ_TASK_TYPE = "SEQ_2_SEQ_LM"


def check_encoder_decoder(model_path: str, name: str, revision: str | None = None) -> None:
    """Stop with the recipe to use when the model is decoder-only, or with what to do when it cannot be read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_path, revision=revision)
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"cannot read the config of model_name_or_path={name!r} ({type(exc).__name__}: {str(exc)[:200]}). "
            "Hub models need the hub; offline, train the embedded decoder-only model with "
            "recipes/sft/codesum.yaml (make sft-codesum), or pass a local encoder-decoder folder."
        ) from None
    if not getattr(config, "is_encoder_decoder", False):
        raise SystemExit(
            f"model_name_or_path={name!r} is a decoder-only model ({config.model_type}); this recipe trains "
            "encoder-decoders (e.g. Salesforce/codet5-base). For decoder-only models use recipes/sft/run.py "
            "--config recipes/sft/codesum.yaml (make sft-codesum)."
        )


def load_seq2seq_model(model_path: str, training_args: Seq2SeqConfig, model_args: ModelConfig):
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(model_path, **(training_args.model_init_kwargs or {}))
    if not model_args.use_peft:
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if model_args.load_in_4bit or model_args.load_in_8bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(training_args.gradient_checkpointing)
        )
    model = get_peft_model(model, get_peft_config(model_args))
    model.print_trainable_parameters()
    return model


def main(
    script_args: ScriptArguments, training_args: Seq2SeqConfig, model_args: ModelConfig
) -> Seq2SeqTrainer:
    from transformers import DataCollatorForSeq2Seq

    started = time.time()
    setup_logging(training_args)
    if model_args.use_peft and model_args.lora_task_type != SEQ2SEQ_TASK_TYPE:
        raise SystemExit(
            f"lora_task_type={model_args.lora_task_type!r}: an encoder-decoder's LoRA needs "
            f"lora_task_type: {SEQ2SEQ_TASK_TYPE} (set it in the YAML or pass --lora_task_type {SEQ2SEQ_TASK_TYPE})"
        )
    model_path = prepare_model_args(model_args, training_args)
    check_encoder_decoder(
        model_path, model_args.model_name_or_path, training_args.model_init_kwargs.get("revision")
    )
    resume = resume_checkpoint(training_args, run_identity(model_args, training_args, script_args))

    source = script_args.dataset_name or GENERATED
    rows = {
        split: codesum_rows(
            source, split, limit, seed=training_args.seed, revision=script_args.dataset_revision
        )
        for split, limit in (
            ("train", script_args.dataset_max_train_rows or 2000),
            ("test", script_args.dataset_max_test_rows or 200),
        )
    }
    logger.info("Seq2seq data (%s): %s", source, {split: len(r) for split, r in rows.items()})
    if not rows["train"]:
        raise SystemExit(
            f"dataset_name={source!r} gave no training functions; check the source and its revision"
        )
    tokenizer = load_tokenizer(model_path, revision=model_args.model_revision)
    model = load_seq2seq_model(model_path, training_args, model_args)
    collator = DataCollatorForSeq2Seq(
        tokenizer,
        model=model,
        label_pad_token_id=-100,
        pad_to_multiple_of=8 if not training_args.use_cpu else None,
    )
    lengths = {
        "max_source_length": training_args.max_source_length,
        "max_target_length": training_args.max_target_length,
    }
    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=seq2seq_dataset(rows["train"], tokenizer, **lengths),
        eval_dataset=seq2seq_dataset(rows["test"], tokenizer, **lengths) if rows["test"] else None,
        data_collator=collator,
        processing_class=tokenizer,
    )
    heldout_loss = (lambda t: {"eval_loss": t.evaluate()["eval_loss"]}) if rows["test"] else None
    trained = train(trainer, resume, heldout_loss)

    quantized = model_args.load_in_4bit or model_args.load_in_8bit
    if model_args.use_peft and not quantized and trainer.accelerator.is_main_process:
        # eval.codesum and users load a plain encoder-decoder folder: merge the adapters.
        trainer.model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
    before, after = ((trained.before or {}).get("eval_loss"), (trained.after or {}).get("eval_loss"))
    report = f"held-out loss: {before if before is None else f'{before:.3f}'} -> {after if after is None else f'{after:.3f}'}"
    finish_run(
        trainer,
        started=started,
        train_result=trained.train_result,
        args={"script": script_args, "training": training_args, "model": model_args},
        extra={
            "recipe": "seq2seq",
            "task": "codesum",
            "data_source": source,
            "n_train": len(rows["train"]),
            "n_test": len(rows["test"]),
            "heldout": {"before": trained.before, "after": trained.after},
        },
        report=report,
    )
    return trainer


def make_parser() -> TrlParser:
    return TrlParser((ScriptArguments, Seq2SeqConfig, ModelConfig))


if __name__ == "__main__":
    run_recipe(main, make_parser(), parse_recipe_args)
