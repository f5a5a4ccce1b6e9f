"""Plumbing of Countdown post-SFT training, checked through TRL itself on a tiny model.

1. The prompt the RL policy sees is token for token the one SFT trained on and the evaluation renders.
2. Every completion is scored against its own prompt's target and numbers when TRL repeats each prompt
   `num_generations` times.
3. Completions stop at EOS (the token SFT taught to end an answer) or at max_completion_length; the text the
   reward reads carries no special tokens.
"""

from __future__ import annotations

import re

import pytest
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

from posttrain.countdown import build_sft_records, make_prompt
from posttrain.data import train_tasks
from posttrain.models import load_tokenizer
from posttrain.rl import countdown_rl_rows
from posttrain.sampling import render_prompts
from posttrain.validation import _render

TEMPLATES = ("short", "compact", "chat")


def _grpo(tiny_model_dir, tmp_path, rows, reward, *, num_generations=4, max_completion_length=12):
    config = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        max_steps=1,
        per_device_train_batch_size=len(rows) * num_generations // 2,
        gradient_accumulation_steps=2,
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        temperature=1.0,
        learning_rate=1e-6,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        shuffle_dataset=True,
        seed=0,
        disable_tqdm=True,
    )
    return GRPOTrainer(
        model=str(tiny_model_dir), reward_funcs=[reward], args=config, train_dataset=Dataset.from_list(rows)
    )


@pytest.mark.parametrize("template", TEMPLATES)
def test_rl_prompt_tokens_equal_sft_and_eval_prompt_tokens(tiny_model_dir, tmp_path, template):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    tasks = train_tasks(3, seed=7, num_numbers=(3,))
    records = build_sft_records(
        tasks, template=template, seed=7, max_failed_tries=0, think=False, style="forward"
    )
    sft = SFTTrainer(
        model=str(tiny_model_dir),
        args=SFTConfig(
            output_dir=str(tmp_path / "sft"),
            report_to=[],
            use_cpu=True,
            eos_token="<|im_end|>",
            max_length=512,
        ),
        train_dataset=Dataset.from_list(records),
    )
    rows = countdown_rl_rows(tasks, template)
    grpo = _grpo(tiny_model_dir, tmp_path, rows, lambda completions, **kw: [0.0] * len(completions))
    rl_prompt_ids = grpo._tokenize_prompts([r["prompt"] for r in rows])[0]
    for i, example in enumerate(sft.train_dataset):
        # The loss covers the completion only: labels are -100 over the prompt.
        first_completion = next(j for j, label in enumerate(example["labels"]) if label != -100)
        sft_prompt_ids = example["input_ids"][:first_completion]
        assert rl_prompt_ids[i] == sft_prompt_ids, f"task {i}: RL and SFT prompts differ"
        eval_text = render_prompts([make_prompt(tasks[i].nums, tasks[i].target, template)], tokenizer)[0]
        assert tokenizer(eval_text, add_special_tokens=False)["input_ids"] == sft_prompt_ids
        assert _render(tokenizer, [rows[i]["prompt"]])[0] == sft_prompt_ids
        # The completion SFT trained on ends the turn with the EOS token generation stops at.
        completion_ids = example["input_ids"][first_completion:]
        assert tokenizer.eos_token_id in completion_ids


def _task_of(prompt) -> tuple[int, list[int]]:
    text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
    numbers = re.search(r"(?:Numbers|numbers)[^0-9]*([0-9 ,]+)", text)
    target = re.search(r"(?:Target|equals|target)[^0-9]*([0-9]+)", text)
    assert numbers and target, text
    return int(target.group(1)), [int(x) for x in re.findall(r"[0-9]+", numbers.group(1))]


def test_each_completion_is_scored_against_its_own_task(tiny_model_dir, tmp_path):
    tasks = train_tasks(6, seed=11, num_numbers=(3,))
    rows = countdown_rl_rows(tasks, "short")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    calls: list[dict] = []

    def recording_reward(prompts, completions, completion_ids, target, nums, **kwargs):
        calls.append(
            dict(
                prompts=prompts,
                completions=completions,
                completion_ids=completion_ids,
                target=target,
                nums=nums,
            )
        )
        return [0.0] * len(completions)

    trainer = _grpo(
        tiny_model_dir, tmp_path, rows, recording_reward, num_generations=4, max_completion_length=10
    )
    trainer.train()
    assert calls, "the reward was never called"
    seen = 0
    for call in calls:
        n = len(call["completions"])
        assert len(call["prompts"]) == len(call["target"]) == len(call["nums"]) == n
        for prompt, target, nums in zip(call["prompts"], call["target"], call["nums"], strict=True):
            want_target, want_nums = _task_of(prompt)
            assert (target, list(nums)) == (want_target, want_nums)
            seen += 1
        # Each prompt appears num_generations times in a row (one group).
        keys = [str(p) for p in call["prompts"]]
        for start in range(0, n, 4):
            assert len(set(keys[start : start + 4])) == 1
        for text, ids in zip(call["completions"], call["completion_ids"], strict=True):
            body = text[-1]["content"] if isinstance(text, list) else text
            assert "<|im_end|>" not in body and "<|im_start|>" not in body
            eos_at = [i for i, t in enumerate(ids) if t == tokenizer.eos_token_id]
            assert eos_at in ([], [len(ids) - 1]), "generation must stop at the first EOS"
            assert eos_at or len(ids) == 10, "a completion without EOS must have hit max_completion_length"
    assert seen == 2 * len(rows) * 4 // 2


def test_completion_budget_must_fit_the_traces_the_start_model_writes(tmp_path):
    """A start model trained on backward traces needs ~190 tokens (SmolLM2's tokenizer); 32 cuts every trace."""
    import json
    from types import SimpleNamespace

    from posttrain.data import train_tasks
    from posttrain.models import load_tokenizer
    from posttrain.rl_checks import completion_budget_problems

    rows = [{"target": t.target, "nums": list(t.nums)} for t in train_tasks(64, seed=7, num_numbers=(3,))]
    tokenizer = load_tokenizer("embedded")
    summary = {"args": {"countdown": {"warmstart_think": True, "warmstart_style": "backward"}}}
    (tmp_path / "run_summary.json").write_text(json.dumps(summary))
    short = completion_budget_problems(
        SimpleNamespace(max_completion_length=32), str(tmp_path), rows, tokenizer
    )
    assert len(short) == 1 and "max_completion_length=32" in short[0] and "backward" in short[0]
    fix = int(short[0].rsplit("--max_completion_length ", 1)[1].rstrip("."))
    assert fix % 32 == 0 and fix > 100
    assert (
        completion_budget_problems(SimpleNamespace(max_completion_length=fix), str(tmp_path), rows, tokenizer)
        == []
    )
    # A direct-answer start (or a model of unknown origin) is not checked.
    summary["args"]["countdown"]["warmstart_think"] = False
    (tmp_path / "run_summary.json").write_text(json.dumps(summary))
    assert (
        completion_budget_problems(SimpleNamespace(max_completion_length=32), str(tmp_path), rows, tokenizer)
        == []
    )
