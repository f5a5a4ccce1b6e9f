"""Shared fixtures: a tiny random Llama built from config (fast), with the embedded model's real tokenizer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Tests never reach a hub, whatever the caller's environment says (HF_HUB_OFFLINE=0 included): set before
# huggingface_hub, datasets or transformers are imported, since they read these variables once at import.
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
for _var in OFFLINE_VARS:
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Every test starts offline again, even after an earlier test changed the variables."""
    for var in OFFLINE_VARS:
        monkeypatch.setenv(var, "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from posttrain.models import build_tiny_llama  # a 2-layer, 32-wide Llama with SmolLM2's tokenizer

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), hidden_size=32)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def run_command(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a recipe or CLI as users do (a fresh process at the repo root, offline); fail with its output's tail."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return proc


def submission_metadata(method: str = "sft") -> dict:
    """A schema-valid ``metadata`` block of an `eval.submit` submission (one greedy sample per prompt)."""
    return {
        "model": "runs/sft-countdown/model",
        "model_revision": None,
        "method": method,
        "git_commit": None,
        "created": "2026-11-30T10:00:00+00:00",
        "seed": 0,
        "sampling": {
            "max_new_tokens": 8,
            "temperature": 0.0,
            "top_p": 1.0,
            "top_k": 0,
            "n": 1,
            "seed": 0,
            "batch_size": None,
        },
        "backend": "hf",
    }
