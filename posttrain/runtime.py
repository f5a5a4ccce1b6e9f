"""The skeleton every recipe shares: logging, model kwargs, resuming, and the ending (train, save, summarize)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from posttrain.io import atomic_write_json
from posttrain.models import EMBEDDED_MODEL_NAME, missing_local_model_hint, resolve_model_name

logger = logging.getLogger(__name__)
# Loggers whose INFO messages a run shows on the main process: the library's and the recipe script's own.
RUN_LOGGERS = ("posttrain", "__main__")


def setup_logging(training_args) -> None:
    """One log format for every rank; only the main process logs at INFO to keep multi-process output readable."""
    import datasets
    import transformers

    # transformers 5 takes TensorBoard's folder only from this variable (else ./runs/<date>_<host>, which no one
    # can match to a run): keep each run's curves next to its model. `tensorboard --logdir runs` finds them all.
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", os.path.join(training_args.output_dir, "tensorboard"))
    level = training_args.get_process_log_level()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    # Our own messages (resuming, data sizes, where things were saved) always show on the main process.
    for name in RUN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if training_args.should_log else level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# What makes two launches "the same run": if output_dir holds checkpoints of a run that differs in one of these,
# resuming would silently continue the other experiment (and label it with this one's arguments). Length
# settings (max_steps, num_train_epochs), logging, saving and precision may change between launches.
IDENTITY_FIELDS = (
    "model_name_or_path",
    "model_revision",
    "dtype",
    "use_peft",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
    "load_in_4bit",
    "load_in_8bit",
    "learning_rate",
    "lr_scheduler_type",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "seed",
    "data_seed",  # the sampler's shuffle order: another one feeds the resumed steps other batches
    "max_length",
    "loss_type",
    "beta",
    "num_generations",
    "generation_batch_size",
    "max_completion_length",
    "temperature",
    "reward_weights",
    "dataset_name",
    "genrm_lambda",  # the share of correct solutions mixed into GenRM verification data
    "dataset_max_train_rows",
    "reward_funcs",
    "reward_model_path",
    "prompt_template",
    "countdown_train_size",
    "countdown_num_numbers",
    "countdown_max_number",
    "countdown_data_seed",
    "warmstart_think",
    "warmstart_style",
    "warmstart_max_failed_tries",
    "warmstart_failed_trace_share",
)
RUN_IDENTITY_FILE = "run_identity.json"


def run_identity(*arg_groups) -> dict[str, Any]:
    """The IDENTITY_FIELDS found in the given argument dataclasses, as JSON-friendly values."""
    identity: dict[str, Any] = {}
    for group in arg_groups:
        if group is None:
            continue
        for name in IDENTITY_FIELDS:
            if hasattr(group, name) and name not in identity:
                value = getattr(group, name)
                identity[name] = (
                    value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
                )
    return identity


def _recorded_identity(folder: Path) -> dict | None:
    try:
        recorded = json.loads((folder / RUN_IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def _checkpoint_step(checkpoint: str) -> int | None:
    try:
        return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resume_checkpoint(training_args, identity: dict[str, Any]) -> str | None:
    """The checkpoint this launch continues from, checked before any model loads; None starts fresh.

    An explicit `resume_from_checkpoint` must be a complete checkpoint. Otherwise the newest complete
    `checkpoint-N` in output_dir is used (`last_checkpoint`), unless output_dir records a run whose identity
    (`run_identity`) differs: resuming would silently continue that run under this one's name, so this stops
    with the differing fields and the two ways out. The identity is recorded for later launches.
    """
    explicit = training_args.resume_from_checkpoint
    if explicit and not _complete_state(Path(explicit)):
        what = "does not exist" if not Path(explicit).exists() else "has no complete trainer_state.json"
        raise SystemExit(
            f"resume_from_checkpoint={explicit!r} {what}: point it at a complete checkpoint-N folder, or drop it "
            "(re-running with the same output_dir resumes from its newest complete checkpoint)."
        )
    checkpoint = last_checkpoint(training_args)
    folder = Path(training_args.output_dir)
    recorded = _recorded_identity(folder)
    if checkpoint and not explicit and recorded is not None:
        differ = {k: (recorded[k], v) for k, v in identity.items() if k in recorded and recorded[k] != v}
        if differ:
            lines = "\n".join(
                f"  {k}: checkpoints {old!r}, this launch {new!r}" for k, (old, new) in differ.items()
            )
            raise SystemExit(
                f"output_dir {folder} holds {Path(checkpoint).name} of a run with other settings, so resuming "
                f"would continue that run under this one's name:\n{lines}\nRestore those settings to resume it, "
                f"or use another --output_dir (make targets: RUNS=...), or delete {folder} to start over."
            )
    if checkpoint:
        step = _checkpoint_step(checkpoint)
        if step is not None and training_args.max_steps > 0 and step >= training_args.max_steps:
            logger.warning(
                "%s is already at step %d of max_steps=%d: nothing is left to train (raise --max_steps to train "
                "on); the model is saved again from it.",
                checkpoint,
                step,
                training_args.max_steps,
            )
    if _is_main_process() and (checkpoint is None or recorded is None):
        atomic_write_json(folder / RUN_IDENTITY_FILE, identity)
    return checkpoint


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def prepare_model_args(model_args, training_args) -> str:
    """Resolve `embedded` to its local folder and fill TRL's `model_init_kwargs`; returns the path to load.

    Keeps the user's `model_name_or_path` for provenance (summary, model card) while the trainer loads the
    resolved folder. A local start model that does not exist stops the run with the make target that builds it.
    """
    from trl import get_quantization_config

    hint = missing_local_model_hint(model_args.model_name_or_path)
    if hint is not None:
        raise SystemExit(hint)
    path = resolve_model_name(model_args.model_name_or_path)
    kwargs: dict[str, Any] = dict(
        revision=None if path != model_args.model_name_or_path else model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        if not training_args.use_cpu and cuda_available():
            from accelerate import PartialState

            kwargs["device_map"] = {"": PartialState().local_process_index}
    if training_args.model_init_kwargs:
        kwargs.update(training_args.model_init_kwargs)
    training_args.model_init_kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return path


def cuda_available() -> bool:
    import torch  # lazy: a CLI's --help should not wait for torch

    return torch.cuda.is_available()


def last_checkpoint(training_args) -> str | None:
    """The newest complete `checkpoint-N` in output_dir, so re-running the same command resumes instead of
    restarting. The Trainer writes trainer_state.json last, so a folder without it (or with a truncated one)
    was cut off while saving (a kill mid-save) and is skipped in favour of the newest complete one."""
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    folder = Path(training_args.output_dir)
    if not folder.is_dir():
        return None
    steps = sorted(
        (int(p.name.split("-")[-1]), p)
        for p in folder.glob("checkpoint-*")
        if p.is_dir() and p.name.split("-")[-1].isdigit()
    )
    complete = [p for _, p in steps if _complete_state(p)]
    if steps and (not complete or complete[-1] != steps[-1][1]):
        logger.warning(
            "%s was cut off while being saved (no trainer_state.json); it is skipped.", steps[-1][1]
        )
    if complete:
        logger.info("Resuming from %s (delete the folder to start over).", complete[-1])
        return str(complete[-1])
    return None


def _complete_state(checkpoint: Path) -> bool:
    """True when the checkpoint's trainer_state.json exists and parses (transformers writes it in place, so a
    kill during that write leaves a truncated file that would crash every later resume)."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def _jsonable(obj) -> dict:
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            out[f.name] = (
                value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)
            )
        return out
    return dict(obj)


def save_and_summarize(
    trainer, *, started: float, train_result, args: dict[str, Any], extra: dict | None = None
) -> None:
    """Save model + tokenizer (with its chat template) and a `run_summary.json` next to them."""
    output_dir = trainer.args.output_dir
    # The saved generation config must stop where the chat template ends an assistant turn.
    tokenizer = trainer.processing_class
    model = trainer.model
    if getattr(model, "generation_config", None) is not None and tokenizer is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    trainer.save_model(output_dir)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
        summary = {
            "output_dir": output_dir,
            "wall_time_s": round(time.time() - started, 1),
            "num_processes": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "train_metrics": train_result.metrics if train_result is not None else {},
            "git_commit": git_commit(),
            "embedded_model": getattr(args.get("model"), "model_name_or_path", None) == EMBEDDED_MODEL_NAME,
            "args": {name: _jsonable(value) for name, value in args.items()},
        }
        if extra:
            summary.update(extra)
        atomic_write_json(Path(output_dir) / "run_summary.json", summary)
        logger.info("Saved model, tokenizer and run_summary.json to %s", output_dir)


@dataclass
class Trained:
    """What `train` returns: TRL's TrainOutput and the held-out metrics before and after training."""

    train_result: Any
    before: dict | None = None
    after: dict | None = None


def _finished_checkpoint(trainer, resume: str | None):
    """A TrainOutput for a checkpoint already at max_steps, its weights loaded; None when training is left to do.

    transformers resumed at max_steps still trains one more step (the stop is checked after a step), so a
    re-launched finished run would change its model. DeepSpeed and FSDP checkpoints load only inside `train`.
    """
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    step = _checkpoint_step(resume) if resume else None
    if step is None or not 0 < trainer.args.max_steps <= step:
        return None
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        return None
    trainer._load_from_checkpoint(resume)
    trainer.state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
    # the finished run's own train metrics, as its first launch logged them
    finals = [log for log in trainer.state.log_history if "train_loss" in log]
    metrics = (
        {k: v for k, v in finals[-1].items() if k != "step"} if finals else {"epoch": trainer.state.epoch}
    )
    return TrainOutput(step, metrics.get("train_loss", float("nan")), metrics)


def train(
    trainer,
    resume: str | None,
    evaluate: Callable[[Any], dict] | None = None,
    *,
    evaluate_before: bool = True,
) -> Trained:
    """Train (resuming from `resume`), log the train metrics and save the trainer state.

    With `evaluate`, the held-out metrics are measured after training and, unless the run resumes (its start is
    gone) or `evaluate_before` is False, before it too.
    """
    before = evaluate(trainer) if evaluate is not None and evaluate_before and resume is None else None
    train_result = _finished_checkpoint(trainer, resume) or trainer.train(resume_from_checkpoint=resume)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_state()
    after = evaluate(trainer) if evaluate is not None else None
    return Trained(train_result, before, after)


def finish_run(
    trainer,
    *,
    started: float,
    train_result,
    args: dict[str, Any],
    extra: dict | None = None,
    report: str | None = None,
) -> None:
    """The ending every recipe shares: model, tokenizer and run_summary.json saved (`save_and_summarize`),
    `report` printed once (main process), and the trainer ended (closes its trackers)."""
    save_and_summarize(trainer, started=started, train_result=train_result, args=args, extra=extra)
    if report is not None and trainer.accelerator.is_main_process:
        print(report, flush=True)
    trainer.end()


def bf16_default() -> bool:
    """bf16 mixed precision where it pays: a bf16-capable GPU, or a CPU with native bf16 matrix instructions
    (AVX512-BF16 / AMX; measured ~1.9x faster SFT steps than float32 on a 2-core AVX512-BF16 machine).
    Weights and optimizer state stay float32 either way (autocast)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def parse_recipe_args(parser, argv: list[str] | None = None):
    """`parser.parse_args_and_config()` with per-device defaults for `bf16` and `use_cpu`.

    TRL turns an unset `bf16` into True, which fails on machines without bf16 support (CPU). Unless the YAML or
    the command line sets them, we use bf16 exactly when the GPU supports it, and `use_cpu` when there is no GPU
    (DeepSpeed on CPU otherwise miscounts the world size when checking the batch size).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config: dict = {}
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise SystemExit(
                "--config needs a path to a YAML recipe, e.g. --config recipes/sft/countdown.yaml"
            )
        path = argv[index + 1]
        if not os.path.isfile(path):
            raise SystemExit(f"--config {path}: no such file")
        try:
            with open(path) as handle:
                config = yaml.safe_load(handle) or {}
        except yaml.YAMLError as exc:
            raise SystemExit(f"error: --config {path} is not valid YAML: {exc}") from None
        if not isinstance(config, dict):
            raise SystemExit(
                f"error: --config {path} must be a YAML mapping of field: value (like recipes/sft/countdown.yaml), "
                f"got a {type(config).__name__}"
            )

    def unset(key: str) -> bool:
        return key not in config and not any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv)

    if unset("bf16"):
        argv += ["--bf16", str(bf16_default())]
    if unset("use_cpu") and not cuda_available():
        argv += ["--use_cpu", "true"]
    return parser.parse_args_and_config(argv)
