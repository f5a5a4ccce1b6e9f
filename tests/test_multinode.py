"""The multi-node path on one machine: two `accelerate launch` commands, one per "node" (machine_rank 0 and 1),
one process each, joined over 127.0.0.1 under DeepSpeed ZeRO-2 on the CPU backend, train a few SFT steps. The
same flags (`--num_machines`, `--machine_rank`, `--main_process_ip/port`) are the ones slurm/train.slurm passes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(600)
def test_two_launchers_on_localhost_train_sft_under_zero2(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    out = tmp_path / "two-nodes"
    accelerate = Path(sys.executable).parent / "accelerate"
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    recipe = [
        "recipes/sft/run.py", "--config", "recipes/sft/countdown.yaml", "--model_name_or_path", str(tiny_model_dir),
        "--output_dir", str(out), "--countdown_train_size", "16", "--countdown_test_size", "4",
        "--per_device_train_batch_size", "2", "--max_steps", "2", "--save_steps", "1", "--logging_steps", "1",
        "--report_to", "none", "--disable_tqdm", "true",
    ]  # fmt: skip
    launchers = []
    for rank in (0, 1):
        cmd = [
            str(accelerate), "launch", "--config_file", "accelerate_configs/zero2_cpu.yaml", "--num_machines", "2",
            "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port), "--rdzv_backend", "static", *recipe,
        ]  # fmt: skip
        log = (tmp_path / f"node{rank}.log").open("w")
        launchers.append(
            (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        )
    try:
        codes = [proc.wait(timeout=540) for proc, _ in launchers]
    finally:
        for proc, log in launchers:
            if proc.poll() is None:
                proc.kill()
            log.close()
    logs = [(tmp_path / f"node{rank}.log").read_text() for rank in (0, 1)]
    assert codes == [0, 0], "\n\n".join(text[-3000:] for text in logs)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["num_processes"] == 2 and "DEEPSPEED" in summary["distributed_type"]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    # ZeRO-2 shards the optimizer state across the two ranks: one shard file per rank in the checkpoint
    shards = sorted(p.name for p in (out / "checkpoint-2").rglob("*optim_states.pt"))
    assert len(shards) == 2, shards


def test_the_slurm_script_launches_one_accelerate_per_node_with_its_rank(tmp_path: Path) -> None:
    """slurm/train.slurm under stand-ins for srun, scontrol and accelerate: the launcher of each node gets the
    shared flags and its own --machine_rank, and the recipe its overrides, quoted."""
    bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    stand_ins = {
        bin_dir / "scontrol": 'printf "gpu-node-7\\ngpu-node-8\\n"',
        # srun: run the command once per node, as SLURM would, with that node's SLURM_NODEID
        bin_dir / "srun": 'shift; for id in 0 1; do SLURM_NODEID=$id "$@"; done',
        venv / "bin" / "accelerate": 'printf "%s\\n" "$@" > "$LOG_DIR/node$SLURM_NODEID.args"',
    }
    for path, body in stand_ins.items():
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    env = dict(
        os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", VENV=str(venv), LOG_DIR=str(tmp_path),
        SLURM_NNODES="2", SLURM_JOB_NODELIST="gpu-node-[7-8]", GPUS_PER_NODE="4",
    )  # fmt: skip
    cmd = [
        "bash",
        "slurm/train.slurm",
        "sft",
        "recipes/sft/countdown.yaml",
        "zero2",
        "--run_name",
        "two words",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for rank in (0, 1):
        args = (tmp_path / f"node{rank}.args").read_text().splitlines()
        assert args[0] == "launch"
        flags = dict(zip(args[1:15:2], args[2:15:2], strict=True))
        assert flags == {
            "--config_file": "accelerate_configs/zero2.yaml",
            "--num_machines": "2",
            "--num_processes": "8",
            "--main_process_ip": "gpu-node-7",
            "--main_process_port": "29500",
            "--rdzv_backend": "static",
            "--machine_rank": str(rank),
        }
        assert args[15:] == [
            "recipes/sft/run.py",
            "--config",
            "recipes/sft/countdown.yaml",
            "--run_name",
            "two words",
        ]


def test_the_slurm_script_refuses_missing_files(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", "slurm/train.slurm", "nosuch", "recipes/sft/countdown.yaml", "zero2"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "recipes/nosuch/run.py does not exist" in proc.stderr
    proc = subprocess.run(["bash", "slurm/train.slurm"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage:" in proc.stderr
