"""Grade-school maths: the offline problem generator (answers re-derived independently from the worked steps),
its split, GSM8K's answer convention, and the `math` reward (math-verify) on hand-computed and hostile output."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.gsm8k import FAMILIES, generate_problems, gsm8k_final_answer, is_test_question
from rewards.format import format_reward
from rewards.maths import final_answer, math_reward
from rewards.registry import get_reward_funcs

STEP = re.compile(r"^(\d+) ([+\-×÷]) (\d+) = (-?\d+)$")


def test_every_step_is_true_arithmetic_on_known_numbers() -> None:
    """Each step's operands come from the question or an earlier step, each result is exact, the last is the answer."""
    problems = generate_problems(600, split="train", seed=3) + generate_problems(150, split="test", seed=3)
    assert {p.family for p in problems} == set(FAMILIES)
    assert {p.level for p in problems} >= {1, 2, 3}
    for p in problems:
        known = {int(n) for n in re.findall(r"\d+", p.question)}
        for words, numbers in (
            ("half", {2}),
            ("third", {3}),
            ("two thirds", {2}),
            ("quarter", {4}),
            ("three quarters", {3}),
        ):
            if words in p.question:
                known |= numbers
        result = None
        for line in p.steps:
            a, op, b, c = STEP.match(line).groups()
            a, b, c = int(a), int(b), int(c)
            assert a in known and b in known, (p.question, line)
            expected = {"+": a + b, "-": a - b, "×": a * b}.get(op)
            if op == "÷":
                assert b and a % b == 0, line  # grade-school division comes out even
                expected = a // b
            assert c == expected and c >= 0, line
            known.add(c)
            result = c
        assert result == p.answer and p.level == len(p.steps)


def test_splits_are_disjoint_reproducible_and_sized() -> None:
    train = generate_problems(800, split="train", seed=0)
    test = generate_problems(200, split="test", seed=0)
    assert len({p.question for p in train}) == 800 and len({p.question for p in test}) == 200
    assert not {p.question for p in train} & {p.question for p in test}
    assert all(not is_test_question(p.question) for p in train) and all(
        is_test_question(p.question) for p in test
    )
    assert generate_problems(50, split="test", seed=0) == test[:50]
    other_seed = generate_problems(200, split="train", seed=1)
    assert not {p.question for p in other_seed} & {p.question for p in test}  # any seed, same split rule
    with pytest.raises(ValueError, match="split"):
        generate_problems(3, split="valid")
    with pytest.raises(ValueError, match="levels"):
        generate_problems(3, levels=(5,))


def test_solutions_earn_full_format_and_math_reward() -> None:
    problems = generate_problems(40, seed=5)
    completions = [p.solution for p in problems]
    assert format_reward(completions) == [1.0] * 40
    assert math_reward(completions, answer=[str(p.answer) for p in problems]) == [1.0] * 40
    assert math_reward(completions, answer=[str(p.answer + 1) for p in problems]) == [0.0] * 40


@pytest.mark.parametrize(
    "solution, expected",
    [
        ("She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7", "7"),
        ("#### 1,250", "1250"),
        ("Total: 5 × 2\n####  -18 dollars", "-18"),
        ("#### 3.5", "3.5"),
    ],
)
def test_gsm8k_final_answer(solution: str, expected: str) -> None:
    assert gsm8k_final_answer(solution) == expected


def test_gsm8k_final_answer_refuses_malformed() -> None:
    for bad in ("no marker 42", "#### none"):
        with pytest.raises(ValueError):
            gsm8k_final_answer(bad)


@pytest.mark.parametrize(
    "completion, gold, score",
    [
        ("<think>9 × 8 = 72</think><answer>72</answer>", "72", 1.0),
        ("<answer>$72$</answer>", "72", 1.0),
        ("<answer>\\boxed{72}</answer>", "72", 1.0),
        ("<answer>72 dollars</answer>", "72", 1.0),
        ("<answer>72.0</answer>", "72", 1.0),
        ("<answer>1,000</answer>", "1000", 1.0),
        ("<answer>71</answer>", "72", 0.0),
        ("<answer>70</answer> then <answer>72</answer>", "72", 1.0),  # the last answer counts
        ("<answer>72</answer> then <answer>70</answer>", "72", 0.0),
        ("so 9 × 8 = 72\n#### 72", "72", 1.0),
        ("the answer is 72", "72", 0.0),  # no committed answer
        ("<answer></answer>", "72", 0.0),
        ("<answer>" + "9" * 5000 + "</answer>", "9", 0.0),
        ("<answer>x^2 \\frac{</answer>", "2", 0.0),
        ("", "72", 0.0),
    ],
)
def test_math_reward_hand_computed(completion: str, gold: str, score: float) -> None:
    assert math_reward([completion], answer=[gold]) == [score]


def test_math_reward_reads_conversations_and_is_registered() -> None:
    (reward,) = get_reward_funcs("math")
    assert reward(
        [[{"role": "assistant", "content": "<answer>5</answer>"}], None, 17], answer=["5", "5", "5"]
    ) == [1.0, 0.0, 0.0]


def test_math_reward_needs_the_answer_column() -> None:
    with pytest.raises(ValueError, match="no `answer` column"):
        math_reward(["<answer>1</answer>"])
    with pytest.raises(ValueError, match="2 answers"):
        math_reward(["<answer>1</answer>"], answer=["1", "2"])


def test_hostile_answers_are_quick() -> None:
    hostile = [
        "<answer>" + "(" * 150 + "</answer>",
        "<answer>10^10^10^10^10</answer>",
        "<answer>" + "\\frac{1}{" * 30 + "</answer>",
        "#### " + "9" * 190,
    ]
    started = time.monotonic()
    assert math_reward(hostile, answer=["1"] * 4) == [0.0] * 4
    assert time.monotonic() - started < 30


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=120), st.integers(-1000, 1000))
def test_math_reward_never_crashes(text: str, gold: int) -> None:
    for completion in (text, f"<answer>{text}</answer>", f"#### {text}"):
        assert math_reward([completion], answer=[str(gold)]) in ([0.0], [1.0])
    assert final_answer(f"<answer>{gold}</answer>") == str(gold)


# ------------------------------------------------------------------------------------------------ SFT and eval


def test_hub_solution_becomes_the_reasoning_format() -> None:
    from posttrain.gsm8k import hub_solution

    worked = (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    )
    solution = hub_solution(worked)
    assert solution == (
        "<think>\nNatalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\n</think>\n<answer>72</answer>"
    )
    assert format_reward([solution]) == [1.0] and math_reward([solution], answer=["72"]) == [1.0]


def test_sft_dataset_is_conversational_and_split() -> None:
    from types import SimpleNamespace

    from posttrain.data import load_sft_dataset
    from posttrain.dataset_names import GSM8K, dataset_kind

    assert dataset_kind("gsm8k", "SFT") == GSM8K
    script = SimpleNamespace(
        dataset_name="gsm8k", dataset_revision=None, dataset_max_train_rows=30, dataset_max_test_rows=5
    )
    data = load_sft_dataset(script, SimpleNamespace(countdown_data_seed=7))
    assert len(data["train"]) == 30 and len(data["test"]) == 5
    row = data["train"][0]
    assert row["prompt"][0]["role"] == "user" and "<answer>" in row["prompt"][0]["content"]
    assert row["completion"][0]["role"] == "assistant" and format_reward(
        [row["completion"][0]["content"]]
    ) == [1.0]
    train_q = {r["prompt"][0]["content"] for r in data["train"]}
    assert not train_q & {r["prompt"][0]["content"] for r in data["test"]}


def test_hub_data_offline_says_what_to_use(monkeypatch) -> None:
    from posttrain.gsm8k import gsm8k_rows

    with pytest.raises((FileNotFoundError, ValueError), match="gsm8k"):
        gsm8k_rows("openai/gsm8k", "test", 3)
    with pytest.raises(ValueError, match="unknown GSM8K source"):
        gsm8k_rows("my/maths", "test", 3)


@pytest.mark.timeout(600)
def test_tiny_sft_then_eval_and_paired(tiny_model_dir, tmp_path) -> None:
    import json
    import sys
    from pathlib import Path

    from tests.conftest import run_command

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "sft"
    cmd = [
        sys.executable, str(repo / "recipes/sft/run.py"), "--config", "recipes/sft/gsm8k.yaml",
        "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--dataset_max_train_rows", "16",
        "--dataset_max_test_rows", "4", "--per_device_train_batch_size", "4", "--max_steps", "2",
        "--save_steps", "1", "--report_to", "none", "--disable_tqdm", "true",
    ]  # fmt: skip
    run_command(cmd, timeout=500)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["recipe"] == "sft" and summary["n_train"] == 16

    from eval.gsm8k import main as evaluate
    from eval.paired import compare_dirs

    for name, model in (("before", tiny_model_dir), ("after", out)):
        evaluate(
            [
                "--model",
                str(model),
                "--n_tasks",
                "6",
                "--max_new_tokens",
                "8",
                "--output_dir",
                str(tmp_path / name),
            ]
        )
    result = json.loads((tmp_path / "after" / "summary.json").read_text())
    assert result["task"] == "gsm8k" and result["n_tasks"] == 6 and 0.0 <= result["accuracy"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "after" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"question", "answer"} <= set(rows[0]["task"])
    paired = compare_dirs(tmp_path / "before", tmp_path / "after")
    assert paired["n_tasks"] == 6


def test_eval_refuses_bad_options() -> None:
    from eval.gsm8k import main as evaluate

    with pytest.raises(SystemExit, match="--n_tasks"):
        evaluate(["--model", "embedded", "--n_tasks", "0"])
    with pytest.raises(SystemExit, match="--k values"):
        evaluate(["--model", "embedded", "--n", "2", "--k", "4"])


@pytest.mark.slow  # ~35 s; the fast suite covers GRPO through the Countdown and Re:Fine runs
@pytest.mark.timeout(600)
def test_tiny_grpo_on_word_problems(tiny_model_dir, tmp_path) -> None:
    import json
    import sys
    from pathlib import Path

    from tests.conftest import run_command

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "grpo"
    cmd = [
        sys.executable, str(repo / "recipes/grpo/run.py"), "--config", "recipes/grpo/gsm8k.yaml",
        "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--dataset_max_train_rows", "8",
        "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "8",
        "--max_steps", "2", "--save_steps", "1", "--report_to", "none", "--disable_tqdm", "true",
    ]  # fmt: skip
    run_command(cmd, timeout=500)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["task"] == "gsm8k" and summary["reward_funcs"] == ["math", "format"]
    rows = [json.loads(line) for line in (out / "reward_curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(0.0 <= r["math_reward"] <= 1.0 for r in rows)


def test_precheck_refuses_rewards_without_their_columns() -> None:
    from posttrain.rl_checks import task_reward_problems

    (problem,) = task_reward_problems("gsm8k", ["countdown", "format"])
    assert "target" in problem and "Use math" in problem
    (problem,) = task_reward_problems("countdown", ["math"])
    assert "`answer` column" in problem
    assert task_reward_problems("gsm8k", ["math", "format"]) == []
