"""The suite runs offline even when the caller's environment turns the hub on (HF_HUB_OFFLINE=0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def test_hub_libraries_are_offline():
    import datasets.config
    import huggingface_hub

    assert {var: os.environ.get(var) for var in VARS} == dict.fromkeys(VARS, "1")
    assert huggingface_hub.is_offline_mode() and huggingface_hub.constants.HF_HUB_OFFLINE
    assert datasets.config.HF_HUB_OFFLINE and datasets.config.HF_DATASETS_OFFLINE


def test_offline_even_when_the_environment_says_online():
    # A fresh pytest, so the libraries read the variables at import as they would in a real session.
    env = {**os.environ, **dict.fromkeys(VARS, "0")}
    test = f"{Path(__file__).name}::test_hub_libraries_are_offline"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"tests/{test}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout
