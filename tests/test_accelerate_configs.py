"""Every accelerate config in accelerate_configs/ loads with accelerate's own loader and says what it is for."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "accelerate_configs"

# name -> (distributed_type, num_processes, mixed_precision, use_cpu, zero_stage or None)
EXPECTED = {
    "single_gpu": (DistributedType.NO, 1, "bf16", False, None),
    "ddp": (DistributedType.MULTI_GPU, 8, "bf16", False, None),
    "zero1": (DistributedType.DEEPSPEED, 8, "bf16", False, 1),
    "zero2": (DistributedType.DEEPSPEED, 8, "bf16", False, 2),
    "zero3": (DistributedType.DEEPSPEED, 8, "bf16", False, 3),
    "zero3_offload": (DistributedType.DEEPSPEED, 8, "bf16", False, 3),
    "fsdp": (DistributedType.FSDP, 8, "bf16", False, None),
    "cpu": (DistributedType.NO, 1, "no", True, None),
    "zero2_cpu": (DistributedType.DEEPSPEED, 2, "no", True, 2),
}


def test_no_unexpected_configs():
    assert {p.stem for p in CONFIG_DIR.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerate(name):
    path = CONFIG_DIR / f"{name}.yaml"
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and "--num_processes" in "\n".join(lines[:3])  # purpose + override hint
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    dist_type, num_processes, precision, use_cpu, stage = EXPECTED[name]
    assert config.distributed_type == dist_type
    assert config.num_processes == num_processes and config.num_machines == 1
    assert config.mixed_precision == precision and config.use_cpu is use_cpu
    ds = config.deepspeed_config or {}
    if stage is None:
        assert not ds
    else:
        assert ds["zero_stage"] == stage
        assert ds["zero3_init_flag"] is (stage == 3)
        offload = "cpu" if name.endswith("offload") else "none"
        assert ds["offload_optimizer_device"] == ds["offload_param_device"] == offload
        if stage == 3:
            assert ds["zero3_save_16bit_model"] is True
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


TRAIN_SCRIPT = textwrap.dedent(
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=64)
    rows = [{"input_ids": torch.randint(0, 64, (8,)), "labels": torch.randint(0, 64, (8,))} for _ in range(8)]
    # ddp_backend="gloo" is required: accelerate's DeepSpeed launcher ignores use_cpu, and without an explicit
    # backend every rank believes it is alone (world size 1) while DeepSpeed sees 2.
    args = TrainingArguments(output_dir="{out}", per_device_train_batch_size=2, max_steps=2, report_to=[],
                             save_strategy="no", ddp_backend="gloo")
    trainer = Trainer(model=LlamaForCausalLM(config), args=args, train_dataset=rows)
    trainer.train()
    assert trainer.is_deepspeed_enabled and args.world_size == 2, (trainer.is_deepspeed_enabled, args.world_size)
    print(f"OK rank {args.process_index}", flush=True)
    """
)


@pytest.mark.slow
def test_zero2_cpu_trains_under_accelerate_launch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.replace("{out}", str(tmp_path / "out")))
    # The module form works whether or not the venv's bin/ is on PATH.
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    proc = subprocess.run(
        [*launcher, "--config_file", str(CONFIG_DIR / "zero2_cpu.yaml"), str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "OK rank 0" in proc.stdout and "OK rank 1" in proc.stdout
