"""DPO's reported policy pair accuracy equals a log-probability comparison done by hand on the tiny model.

The DPO recipe runs one step on a small pairs folder; its run_summary.json reports `policy_pair_accuracy`
before (the start model) and after (the saved model) training. Here each held-out pair is tokenized with the
chat template, every completion token's log-probability is summed from one plain forward pass per sequence,
and the share of pairs whose chosen completion scores higher must be exactly the reported number. Chosen and
rejected differ by several tokens in either direction, so no pair is a near tie that rounding could flip.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def _completion_logp(model, prompt_ids: list[int], full_ids: list[int], max_length: int) -> float:
    """Sum of log p(token | everything before it) over the completion tokens that fit in max_length."""
    start = next(
        (i for i, (a, b) in enumerate(zip(prompt_ids, full_ids, strict=False)) if a != b),
        min(len(prompt_ids), len(full_ids)),
    )  # the completion starts where prompt and prompt+completion diverge
    ids = full_ids[:max_length]  # DPO's keep_start truncation
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logps = torch.log_softmax(logits[:-1], dim=-1)
    return sum(float(logps[t - 1, ids[t]]) for t in range(start, len(ids)))


def _hand_accuracy(model_dir: Path, pairs, max_length: int) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def ids(messages, **kwargs) -> list[int]:
        return list(
            tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"]
        )

    wins = total = 0
    for row in pairs:
        prompt = ids(row["prompt"], add_generation_prompt=True)
        if len(prompt) >= max_length:
            continue  # TRL drops pairs whose prompt alone fills max_length
        chosen = _completion_logp(model, prompt, ids(row["prompt"] + row["chosen"]), max_length)
        rejected = _completion_logp(model, prompt, ids(row["prompt"] + row["rejected"]), max_length)
        assert abs(chosen - rejected) > 1e-3, "a near tie: the comparison would hinge on rounding"
        wins += chosen > rejected
        total += 1
    assert total == len(pairs)
    return round(wins / total, 4)


WORDS = "the answer is four because two and two make four which I checked twice on paper today".split()
# (chosen words, rejected words): chosen shorter in five pairs, longer in three.
TEST_LENGTHS = [(3, 9), (4, 12), (10, 2), (5, 11), (2, 8), (12, 4), (6, 13), (9, 3)]
TRAIN_LENGTHS = [(3, 10), (4, 9), (11, 3), (2, 7)]


def _pairs(lengths: list[tuple[int, int]], offset: int) -> list[dict]:
    def reply(n: int, shift: int) -> list[dict]:
        text = " ".join(WORDS[(shift + i) % len(WORDS)] for i in range(n))
        return [{"role": "assistant", "content": text}]

    return [
        {
            "prompt": [{"role": "user", "content": f"Question {offset + i}: what is {i} + {i}?"}],
            "chosen": reply(a, i),
            "rejected": reply(b, i + 5),
        }
        for i, (a, b) in enumerate(lengths)
    ]


def test_dpo_policy_pair_accuracy_matches_hand_computed_logps(tiny_model_dir, tmp_path, monkeypatch):
    from datasets import Dataset, DatasetDict

    from posttrain.runtime import parse_recipe_args

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    test_pairs = _pairs(TEST_LENGTHS, 0)
    pairs = tmp_path / "pairs"
    DatasetDict(
        train=Dataset.from_list(_pairs(TRAIN_LENGTHS, 100)), test=Dataset.from_list(test_pairs)
    ).save_to_disk(str(pairs))
    spec = importlib.util.spec_from_file_location("recipe_dpo_accuracy", REPO / "recipes/dpo/run.py")
    dpo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dpo)
    out = tmp_path / "dpo"
    argv = [
        "--config", str(REPO / "recipes/dpo/countdown.yaml"), "--model_name_or_path", str(tiny_model_dir),
        "--output_dir", str(out), "--dataset_name", str(pairs), "--max_steps", "1",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "3", "--learning_rate", "5e-2",
        "--lr_scheduler_type", "constant", "--warmup_steps", "0", "--save_strategy", "no", "--report_to", "none",
        "--bf16", "false",
    ]  # fmt: skip
    dpo.main(*parse_recipe_args(dpo.make_parser(), argv))
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["n_test"] == len(test_pairs)
    reported = {when: summary["heldout_pairs"][when]["policy_pair_accuracy"] for when in ("before", "after")}

    max_length = summary["args"]["training"]["max_length"]
    expected = {
        "before": _hand_accuracy(tiny_model_dir, test_pairs, max_length),
        "after": _hand_accuracy(out, test_pairs, max_length),
    }
    assert reported == expected
    # Informative cases: a swapped chosen/rejected or a constant answer would not match these.
    assert all(value not in (0.0, 0.5, 1.0) for value in expected.values()), expected
