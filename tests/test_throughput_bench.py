"""benchmarks/throughput.py end to end at a tiny size (no timing asserts), and the Qwen2.5-0.5B shape it builds."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import throughput  # noqa: E402


def test_the_shape_is_qwen25_05b_and_the_flops_count_its_matmuls() -> None:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(**throughput.QWEN25_05B)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    # the published parameter count of Qwen2.5-0.5B (tied embeddings, q/k/v biases, RMSNorm weights)
    assert sum(p.numel() for p in model.parameters()) == 494_032_768
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    linear -= model.lm_head.weight.numel()  # tied: counted once below, as the LM head's matmul
    params, layer_width = throughput.matmul_flops(config)
    assert params == linear + 151936 * 896 and layer_width == 24 * 896
    assert throughput.flops_per_token(config, 100) == 6 * params + 6 * 24 * 896 * 100


def test_batch_tokens_counts_every_mask_or_else_every_id() -> None:
    import torch

    sft = {"input_ids": torch.ones(2, 5), "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1] * 5])}
    assert throughput.batch_tokens(sft) == 8
    dpo = {"prompt_attention_mask": torch.ones(2, 3), "chosen_attention_mask": torch.tensor([[1, 0], [1, 1]])}
    assert throughput.batch_tokens(dpo) == 9
    padding_free = {"input_ids": torch.ones(1, 17), "position_ids": torch.arange(17)[None]}
    assert throughput.batch_tokens(padding_free) == 17


@pytest.mark.timeout(600)
def test_the_benchmark_runs_end_to_end_at_a_tiny_size(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = throughput.main([
        "--models", str(tiny_model_dir), "--trainers", "sft", "dpo", "grpo", "--steps", "1", "--warmup", "0",
        "--batch_sizes", "2", "4", "--max_length", "512", "--variants", "TRL defaults", "ours: ", "padding_free",
        "batch 4", "--grpo_prompts", "1", "--grpo_generations", "2", "--grpo_completion_length", "4",
        "--loss_check", "2", "--in_process", "--output", str(out),
    ])  # fmt: skip
    rows = result["rows"]
    names = {(r["trainer"], r["variant"].split(": ", 1)[1]) for r in rows}
    assert ("sft", "TRL defaults (padded, activation checkpointing)") in names and (
        "sft",
        "ours, batch 4",
    ) in names
    assert any(t == "dpo" and v.startswith("ours + padding_free") for t, v in names)
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["peak_memory_gib"] > 0, row
        assert 0 < row["mfu"] < 1 and math.isfinite(row["s_per_step"]), row
    assert [r["batch"] for r in rows if r["variant"].endswith("batch 4")] == [4, 4]
    (grpo,) = result["grpo"]
    assert grpo["total"] >= grpo["generation"] > 0 and 0 < grpo["generation_share"] <= 1
    assert [len(r["losses"]) for r in result["loss_check"]] == [2, 2, 2]
    assert json.loads(out.read_text())["device"].startswith("CPU")


def test_variants_run_in_a_fresh_process(monkeypatch) -> None:
    import os

    monkeypatch.setattr(throughput, "IN_PROCESS", False)  # what main() sets without --in_process
    assert throughput.isolated(os.getpid) != os.getpid()
    assert throughput.isolated(sum, [1, 2, 3]) == 6
