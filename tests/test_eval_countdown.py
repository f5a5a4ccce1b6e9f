"""Tests for posttrain.sampling and eval.countdown on a tiny random Llama (fast) and the embedded model (slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest
import torch

import eval.countdown as ec
from posttrain.countdown import CountdownTask
from posttrain.models import load_tokenizer
from posttrain.sampling import SamplingParams, _decode, _eos_ids, generate, is_conversational_prompts

REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {
    "accuracy",
    "mean_reward",
    "format_rate",
    "n_tasks",
    "n_samples",
    "model",
    "revision",
    "sampling",
    "seed",
    "template",
    "wall_time_s",
    "timestamp",
}
SAMPLE_KEYS = {"task", "prompt", "completion", "reward", "correct", "task_index", "sample_index"}
TASKS = [
    CountdownTask(target=24, nums=(2, 3, 4), solution="(2 * 3) * 4"),
    CountdownTask(target=10, nums=(1, 2, 7), solution="(1 + 2) + 7"),
    CountdownTask(target=30, nums=(5, 6, 1), solution="(5 * 6) * 1"),
    CountdownTask(target=12, nums=(3, 4, 1), solution="(3 * 4) * 1"),
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("embedded")


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    """The conftest's tiny random Llama (2 layers, width 32, SmolLM2 tokenizer), loaded once per module."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


GREEDY = SamplingParams(max_new_tokens=6, temperature=0.0)


# ------------------------------------------------------------------------------------------------------------
# posttrain.sampling
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_new_tokens": 0},
        {"temperature": -0.1},
        {"top_p": 0.0},
        {"top_k": -1},
        {"n": 0},
        {"batch_size": 0},
    ],
)
def test_sampling_params_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SamplingParams(**kwargs)


def test_greedy_batched_matches_one_by_one_in_original_order(tiny_model, tokenizer):
    # Lengths differ a lot, so a batch needs padding; left padding must not change greedy outputs, and the
    # length sort inside generate must be undone.
    prompts = ["hi", "a much longer prompt with quite a few more words than the others", "mid length prompt"]
    batched = generate(
        tiny_model, prompts, SamplingParams(max_new_tokens=6, batch_size=8), tokenizer=tokenizer
    )
    single = [
        generate(tiny_model, [p], SamplingParams(max_new_tokens=6, batch_size=1), tokenizer=tokenizer)[0]
        for p in prompts
    ]
    assert batched == single
    assert all(len(outs) == 1 and isinstance(outs[0], str) for outs in batched)
    assert generate(tiny_model, prompts, GREEDY, tokenizer=tokenizer) == batched  # deterministic
    assert tokenizer.padding_side == "right"  # the caller's tokenizer is left untouched


def test_chat_prompts_sampling_n_and_seed(tiny_model, tokenizer):
    prompts = [[{"role": "user", "content": "Solve 1 + 2"}], [{"role": "user", "content": "What is 24?"}]]
    params = SamplingParams(
        max_new_tokens=5, temperature=1.0, top_p=0.95, top_k=50, n=3, seed=7, batch_size=4
    )
    first = generate(tiny_model, prompts, params, tokenizer=tokenizer)
    assert [len(outs) for outs in first] == [3, 3]
    assert all(isinstance(s, str) for outs in first for s in outs)
    assert generate(tiny_model, prompts, params, tokenizer=tokenizer) == first  # seeded
    other_seed = SamplingParams(**{**params.to_dict(), "seed": 8})
    assert generate(tiny_model, prompts, other_seed, tokenizer=tokenizer) != first


def test_greedy_with_n_repeats_one_decode(tiny_model, tokenizer):
    out = generate(tiny_model, ["hello there"], SamplingParams(max_new_tokens=4, n=3), tokenizer=tokenizer)
    assert len(out[0]) == 3 and len(set(out[0])) == 1


def test_generate_keeps_training_mode_and_rng(tiny_model, tokenizer):
    tiny_model.train()
    state = torch.random.get_rng_state()
    try:
        generate(
            tiny_model, ["x"], SamplingParams(max_new_tokens=2, temperature=1.0, seed=3), tokenizer=tokenizer
        )
        assert tiny_model.training
        assert torch.equal(torch.random.get_rng_state(), state)
    finally:
        tiny_model.eval()


def test_prompt_kinds_are_validated():
    assert is_conversational_prompts([[{"role": "user", "content": "a"}]])
    assert not is_conversational_prompts(["a", "b"])
    with pytest.raises(ValueError, match="mix"):
        is_conversational_prompts(["a", [{"role": "user", "content": "b"}]])
    with pytest.raises(ValueError, match="prompt 0"):
        is_conversational_prompts([42])
    assert generate("never-loaded", []) == []


def test_decode_stops_at_first_eos_and_eos_ids_are_merged(tiny_model, tokenizer):
    hello = tokenizer("hello world", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    assert _decode(tokenizer, hello + [eos] + hello, [eos]) == "hello world"
    tiny_model.generation_config.eos_token_id = [eos, 17]
    try:
        assert _eos_ids(tiny_model, tokenizer) == [eos, 17]
    finally:
        tiny_model.generation_config.eos_token_id = eos


# ------------------------------------------------------------------------------------------------------------
# Metrics and task files
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(5, 0, 1, 0.0), (5, 5, 3, 1.0), (4, 1, 1, 0.25), (4, 1, 2, 0.5), (4, 2, 3, 1.0), (10, 3, 1, 0.3)],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert ec.pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_enumeration():
    for n in range(1, 7):
        for c in range(n + 1):
            outcomes = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(combinations(outcomes, k))
                assert ec.pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError):
        ec.pass_at_k(4, 1, 5)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_tasks_file_ok_and_clear_errors(tmp_path):
    good = _write(
        tmp_path / "ok.jsonl", '{"target": 24, "nums": [2, 3, 4]}\n\n{"target": 10, "nums": [1, 2, 7]}\n'
    )
    assert [(t.target, t.nums) for t in ec.load_tasks_file(good)] == [(24, (2, 3, 4)), (10, (1, 2, 7))]
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        ec.load_tasks_file(tmp_path / "missing.jsonl")
    cases = {
        '{"target": 1, "nums": [1, 2]}\n{"nums": [1, 2]}\n': r"line 2: missing field 'target'",
        '{"target": 5, "nums": "1,2"}\n': r"line 1: field 'nums'",
        '{"target": -3, "nums": [1, 2]}\n': r"line 1: field 'target'",
        '{"target": 5, "nums": [1, 2.5]}\n': r"line 1: field 'nums'",
        '{"target": 5, "nums": [1, 2]}\n{oops\n': r"line 2: invalid JSON",
        "[1, 2]\n": r"line 1: expected an object",
        "\n": r"no tasks",
    }
    for i, (text, message) in enumerate(cases.items()):
        with pytest.raises(ValueError, match=message):
            ec.load_tasks_file(_write(tmp_path / f"bad{i}.jsonl", text))


def test_cli_heldout_tasks_come_from_the_reserved_key_space():
    from posttrain.data import heldout_tasks, is_heldout

    tasks = heldout_tasks(20, seed=11, num_numbers=3, max_number=30)
    assert len(tasks) == 20 and all(is_heldout(t.target, t.nums) for t in tasks)


# ------------------------------------------------------------------------------------------------------------
# evaluate_countdown
# ------------------------------------------------------------------------------------------------------------


def _check_outputs(out_dir: Path, n_samples: int) -> dict:
    summary = json.loads((out_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    rows = [json.loads(line) for line in (out_dir / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == n_samples == summary["n_samples"]
    assert all(SAMPLE_KEYS <= row.keys() for row in rows)
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave nothing behind
    return summary


def test_evaluate_countdown_tiny_model_writes_files(tiny_model, tokenizer, tmp_path):
    params = SamplingParams(max_new_tokens=8, batch_size=4)
    summary = ec.evaluate_countdown(
        tiny_model, TASKS, params=params, output_dir=tmp_path, tokenizer=tokenizer, model_label="tiny"
    )
    assert summary == _check_outputs(tmp_path, 4)
    assert (
        summary["model"] == "tiny" and summary["n_tasks"] == 4 and summary["sampling"]["max_new_tokens"] == 8
    )
    assert "pass_at_k" not in summary  # greedy
    assert 0.0 <= summary["accuracy"] <= summary["format_rate"] <= 1.0


def _fake_generate(completions_by_task):
    def fake(model, prompts, params, **kwargs):
        assert len(prompts) == len(completions_by_task)
        return [list(c) for c in completions_by_task]

    return fake


def test_evaluate_countdown_metrics_chat(monkeypatch, tokenizer, tmp_path):
    right = "<think>2*3=6, 6*4=24</think><answer>(2 * 3) * 4</answer>"
    completions = [
        [right],
        ["<answer>1 + 2 + 8</answer>"],
        ["no tags at all"],
        ["<answer>3 * 4 * 1</answer>"],
    ]
    monkeypatch.setattr(ec, "generate", _fake_generate(completions))
    summary = ec.evaluate_countdown("stub", TASKS, params=GREEDY, output_dir=tmp_path, tokenizer=tokenizer)
    assert summary["accuracy"] == pytest.approx(0.5)
    assert summary["format_rate"] == pytest.approx(0.75)
    assert summary["mean_reward"] == pytest.approx((1 + 0.1 + 0 + 1) / 4)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, False, False, True]
    assert rows[0]["task"] == {"target": 24, "nums": [2, 3, 4], "solution": "(2 * 3) * 4"}
    assert rows[0]["prompt"].endswith("<|im_start|>assistant\n")  # the chat template was applied


def test_evaluate_countdown_base_template_scores_seeded_prompt(monkeypatch, tokenizer, tmp_path):
    # The completion continues after the pre-seeded "<think>".
    completions = [["\n2*3*4</think>\n<answer>(2 * 3) * 4</answer>"]] + [["</think>"]] * 3
    monkeypatch.setattr(ec, "generate", _fake_generate(completions))
    summary = ec.evaluate_countdown(
        "stub", TASKS, template="base", params=GREEDY, output_dir=tmp_path, tokenizer=tokenizer
    )
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"].endswith("<think>") and rows[0]["correct"]
    assert summary["accuracy"] == pytest.approx(0.25) and summary["template"] == "base"


def test_evaluate_countdown_pass_at_k(monkeypatch, tokenizer, tmp_path):
    ok, bad = "<answer>(2 * 3) * 4</answer>", "<answer>2 + 3 + 4</answer>"
    tasks = TASKS[:2]
    completions = [[ok, bad, bad, bad], [bad, bad, bad, bad]]  # c = 1 and c = 0 of n = 4
    monkeypatch.setattr(ec, "generate", _fake_generate(completions))
    params = SamplingParams(max_new_tokens=8, temperature=0.7, n=4, seed=1)
    summary = ec.evaluate_countdown("stub", tasks, params=params, output_dir=None, tokenizer=tokenizer, k=[2])
    assert summary["pass_at_k"] == pytest.approx({"1": 0.125, "2": 0.25, "4": 0.5})
    assert summary["accuracy"] == pytest.approx(0.125) and summary["n_samples"] == 8
    with pytest.raises(ValueError, match="k"):
        ec.evaluate_countdown("stub", tasks, params=params, output_dir=None, tokenizer=tokenizer, k=5)


# ------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eval.countdown", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_cli_end_to_end_tiny_model(tiny_model_dir, tmp_path):
    tasks_file = _write(
        tmp_path / "tasks.jsonl",
        "".join(json.dumps({"target": t.target, "nums": list(t.nums)}) + "\n" for t in TASKS),
    )
    out_dir = tmp_path / "eval"
    proc = _run_cli(
        "--model", str(tiny_model_dir), "--tasks_file", str(tasks_file), "--n_tasks", "3",
        "--max_new_tokens", "8", "--batch_size", "4", "--output_dir", str(out_dir), "--no_progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"summary: {out_dir / 'summary.json'}" in proc.stdout
    summary = _check_outputs(out_dir, 3)
    assert summary["model"] == str(tiny_model_dir) and summary["task_source"]["n_tasks"] == 3
    assert summary["seed"] == 1234 and summary["template"] == "chat"


def test_cli_bad_tasks_file_is_a_clear_error(tmp_path):
    bad = _write(tmp_path / "bad.jsonl", '{"target": 3, "nums": [1, 2]}\n{"target": 3}\n')
    proc = _run_cli("--model", "unused", "--tasks_file", str(bad), "--output_dir", str(tmp_path / "o"))
    assert proc.returncode != 0
    assert "line 2: missing field 'nums'" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run_cli("--model", "unused", "--tasks_file", str(tmp_path / "nope.jsonl"))
    assert proc.returncode != 0 and "tasks file not found" in proc.stderr


# ------------------------------------------------------------------------------------------------------------
# Real model
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_model_greedy_four_tasks(tmp_path):
    params = SamplingParams(max_new_tokens=64, batch_size=4)
    summary = ec.evaluate_countdown("embedded", TASKS, params=params, output_dir=tmp_path, print_table=False)
    _check_outputs(tmp_path, 4)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert all(r["completion"].strip() for r in rows)  # the instruct model says something
    assert "<|im_end|>" not in "".join(
        r["completion"] for r in rows
    )  # stopped at EOS, special tokens stripped
    assert math.isfinite(summary["mean_reward"])
