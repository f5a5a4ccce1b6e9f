"""Direct preference optimisation (TRL DPOTrainer): DPO, IPO (`--loss_type ipo`) and LoRA DPO.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/dpo/run.py \
        --config recipes/dpo/ultrafeedback.yaml --model_name_or_path runs/sft-smoltalk/model
    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/dpo/run.py \
        --config recipes/dpo/countdown.yaml --dataset_name runs/dpo-countdown/pairs
    accelerate launch --config_file accelerate_configs/single_gpu.yaml recipes/dpo/run.py \
        --config recipes/dpo/ultrafeedback.yaml --model_name_or_path <your SFT of Qwen/Qwen2.5-0.5B>

`dataset_name` is UltraFeedback (`HuggingFaceH4/ultrafeedback_binarized` at the pinned revision, or `fixture`
offline) or a preference folder written by `python -m posttrain.preferences`. The reference model is the
starting model: a frozen second copy for a full fine-tune, or, with `use_peft: true`, the same weights with the
adapters disabled (TRL does this when no ref_model is given, so no second model is loaded).

Held-out pairs are evaluated before and after training: DPO's implicit reward accuracy and margin (0 before
training by construction: policy = reference) and the policy's own pair accuracy (does it give the chosen
completion the higher log-probability?). They go to `run_summary.json` and are printed. Re-running the same
command resumes from the newest checkpoint in `output_dir`.
"""

from __future__ import annotations

import logging
import time
from functools import partial

from trl import DPOConfig, DPOTrainer, ModelConfig, TrlParser, get_peft_config

from posttrain.cli import run_recipe
from posttrain.configs import ScriptArguments
from posttrain.models import load_tokenizer
from posttrain.preference_data import (
    DPO_EVAL_KEYS,
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
    training_args: DPOConfig,
    model_args: ModelConfig,
) -> DPOTrainer:
    started = time.time()
    setup_logging(training_args)
    model_path = prepare_model_args(model_args, training_args)
    resume = resume_checkpoint(training_args, run_identity(model_args, training_args, script_args, pref_args))
    data, data_info = load_preference_dataset(script_args)
    logger.info("DPO data (%s): %s", data_info["data_source"], {k: len(v) for k, v in data.items()})

    trainer = DPOTrainer(
        model=model_path,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data.get("test"),
        processing_class=load_tokenizer(model_path, revision=model_args.model_revision),
        peft_config=get_peft_config(model_args),
    )
    evaluate = partial(evaluate_pairs, keys=DPO_EVAL_KEYS, policy_accuracy=True)
    trained = train(
        trainer,
        resume,
        evaluate if trainer.eval_dataset is not None else None,
        evaluate_before=pref_args.preference_eval_before,
    )

    provenance = data_info.get("provenance") or {}
    args = {"script": script_args, "preference": pref_args, "training": training_args, "model": model_args}
    template = (provenance.get("request") or {}).get("template")
    if template:  # lets `python -m eval.countdown` pick the prompt template the pairs were sampled with
        args["countdown"] = {"prompt_template": template}
    finish_run(
        trainer,
        started=started,
        train_result=trained.train_result,
        args=args,
        extra={
            "recipe": "dpo",
            "loss_type": list(training_args.loss_type),
            "beta": training_args.beta,
            "reference": "base model with adapters disabled"
            if model_args.use_peft
            else "frozen copy of the start",
            "n_train": len(data["train"]),
            "n_test": len(data["test"]) if "test" in data else 0,
            **data_info,
            "heldout_pairs": {"before": trained.before, "after": trained.after},
        },
        report=None if trained.after is None else format_before_after(trained.before, trained.after),
    )
    return trainer


def make_parser() -> TrlParser:
    return TrlParser((ScriptArguments, PreferenceArguments, DPOConfig, ModelConfig))


if __name__ == "__main__":
    run_recipe(main, make_parser(), parse_recipe_args)
