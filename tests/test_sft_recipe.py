"""The SFT recipe end to end on a tiny model: train, save, summary, resume, LoRA/QLoRA, ZeRO-2 launch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_command as run

REPO = Path(__file__).resolve().parent.parent
SFT = REPO / "recipes/sft/run.py"


def sft_args(model: Path, out: Path, config: str = "recipes/sft/countdown.yaml", **overrides) -> list[str]:
    args = {
        "model_name_or_path": str(model),
        "output_dir": str(out),
        "countdown_train_size": 16,
        "countdown_test_size": 4,
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "save_steps": 1,
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": "true",
    }
    args.update(overrides)
    flat = ["--config", config]
    for key, value in args.items():
        flat += [f"--{key}", str(value)]
    return flat


def test_sft_trains_saves_and_resumes(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "sft"
    run([sys.executable, str(SFT), *sft_args(tiny_model_dir, out)])
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "run_summary.json",
    ):
        assert (out / name).exists(), name
    assert (out / "checkpoint-2").is_dir()
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["recipe"] == "sft" and summary["n_train"] == 16
    assert summary["train_metrics"]["train_loss"] > 0
    assert summary["args"]["countdown"]["prompt_template"] == "short"  # from recipes/sft/countdown.yaml

    # The same command with a larger budget continues from checkpoint-2 instead of starting over.
    proc = run([sys.executable, str(SFT), *sft_args(tiny_model_dir, out, max_steps=3)])
    assert "Resuming from" in proc.stdout + proc.stderr
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    logged_steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged_steps == [1, 2, 3]

    # Another experiment pointed at the same folder is refused, not resumed under the wrong name.
    cmd = [sys.executable, str(SFT), *sft_args(tiny_model_dir, out, max_steps=4, learning_rate=5e-4)]
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "holds checkpoint-3 of a run with other settings" in proc.stderr
    assert "learning_rate: checkpoints 0.0001, this launch 0.0005" in proc.stderr
    assert not (out / "checkpoint-4").exists()


def test_missing_start_model_names_the_make_target(tmp_path: Path):
    config = str(REPO / "recipes/sft/countdown.yaml")
    cmd = [
        sys.executable,
        str(SFT),
        *sft_args(Path("runs/sft-smoltalk/nowhere"), tmp_path / "out", config=config),
    ]
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "runs/sft-smoltalk/nowhere does not exist" in proc.stderr and "`make sft-smoltalk`" in proc.stderr


def test_sft_completion_only_loss_masks_prompt(tiny_model_dir: Path, tmp_path: Path):
    """Only completion tokens carry labels: the prompt (system/user turns) is never trained on."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from posttrain.countdown import build_sft_records, generate_tasks

    records = build_sft_records(generate_tasks(2, seed=0), template="chat")
    args = SFTConfig(
        output_dir=str(tmp_path / "unused"), report_to="none", bf16=False, eos_token="<|im_end|>"
    )
    trainer = SFTTrainer(model=str(tiny_model_dir), args=args, train_dataset=Dataset.from_list(records))
    batch = trainer.data_collator([trainer.train_dataset[0]])
    tokenizer = trainer.processing_class
    labels = batch["labels"][0]
    trained = tokenizer.decode(batch["input_ids"][0][labels != -100])
    completion = records[0]["completion"][0]["content"]
    assert trained.startswith(completion)
    assert trained.rstrip().endswith("<|im_end|>")
    assert "Using the numbers" not in trained


def test_sft_lora_saves_adapter(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "lora"
    run(
        [
            sys.executable,
            str(SFT),
            *sft_args(tiny_model_dir, out, "recipes/sft/countdown_lora.yaml", max_steps=1),
        ]
    )
    assert (out / "adapter_config.json").exists()
    assert (out / "adapter_model.safetensors").exists()


def test_sft_qlora_runs_on_cpu(tiny_model_dir: Path, tmp_path: Path):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "qlora"
    run(
        [
            sys.executable,
            str(SFT),
            *sft_args(tiny_model_dir, out, "recipes/sft/countdown_qlora.yaml", max_steps=1),
        ]
    )
    assert (out / "adapter_config.json").exists()


def test_sft_under_deepspeed_zero2_two_cpu_processes(tiny_model_dir: Path, tmp_path: Path):
    pytest.importorskip("deepspeed")
    out = tmp_path / "zero2"
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [
        str(accelerate),
        "launch",
        "--config_file",
        "accelerate_configs/zero2_cpu.yaml",
        str(SFT),
        *sft_args(tiny_model_dir, out, per_device_train_batch_size=2),
    ]
    run(cmd, timeout=600)
    assert (out / "model.safetensors").exists()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    # Two ranks really trained under DeepSpeed (not two copies each believing it is alone).
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["num_processes"] == 2
    assert "DEEPSPEED" in summary["distributed_type"]
