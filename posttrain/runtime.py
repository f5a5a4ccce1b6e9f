"""The skeleton every recipe shares: logging, model kwargs, resuming, saving and the run summary."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from posttrain.io import atomic_write_json
from posttrain.models import EMBEDDED_MODEL_NAME, resolve_model_name

logger = logging.getLogger("posttrain")


def setup_logging(training_args) -> None:
    """One log format for every rank; only the main process logs at INFO to keep multi-process output readable."""
    import datasets
    import transformers

    level = training_args.get_process_log_level()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    # Our own messages (resuming, data sizes, where things were saved) always show on the main process.
    logger.setLevel(logging.INFO if training_args.should_log else level)
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


def prepare_model_args(model_args, training_args) -> str:
    """Resolve `embedded` to its local folder and fill TRL's `model_init_kwargs`; returns the path to load.

    Keeps the user's `model_name_or_path` for provenance (summary, model card) while the trainer loads the
    resolved folder.
    """
    from trl import get_quantization_config

    path = resolve_model_name(model_args.model_name_or_path)
    kwargs: dict[str, Any] = dict(
        revision=None if path != model_args.model_name_or_path else model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        if not training_args.use_cpu and _cuda_available():
            from accelerate import PartialState

            kwargs["device_map"] = {"": PartialState().local_process_index}
    if training_args.model_init_kwargs:
        kwargs.update(training_args.model_init_kwargs)
    training_args.model_init_kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return path


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def last_checkpoint(training_args) -> str | None:
    """The newest complete `checkpoint-N` in output_dir, so re-running the same command resumes instead of
    restarting. The Trainer writes trainer_state.json last, so a folder without it was cut off while saving
    (a kill mid-save) and is skipped in favour of the newest complete one."""
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
    complete = [p for _, p in steps if (p / "trainer_state.json").is_file()]
    if steps and (not complete or complete[-1] != steps[-1][1]):
        logger.warning(
            "%s was cut off while being saved (no trainer_state.json); it is skipped.", steps[-1][1]
        )
    if complete:
        logger.info("Resuming from %s (delete the folder to start over).", complete[-1])
        return str(complete[-1])
    return None


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
):
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


def _bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def parse_recipe_args(parser, argv: list[str] | None = None):
    """`parser.parse_args_and_config()` with per-device defaults for `bf16` and `use_cpu`.

    TRL turns an unset `bf16` into True, which fails on machines without bf16 support (CPU). Unless the YAML or
    the command line sets them, we use bf16 exactly when the GPU supports it, and `use_cpu` when there is no GPU
    (DeepSpeed on CPU otherwise miscounts the world size when checking the batch size).
    """
    import yaml

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
        with open(path) as handle:
            config = yaml.safe_load(handle) or {}

    def unset(key: str) -> bool:
        return key not in config and not any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv)

    if unset("bf16"):
        argv += ["--bf16", str(_bf16_supported())]
    if unset("use_cpu") and not _cuda_available():
        argv += ["--use_cpu", "true"]
    return parser.parse_args_and_config(argv)
