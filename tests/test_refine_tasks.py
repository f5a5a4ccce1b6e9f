"""Re:Fine task files (parsed strictly), the rule rewards (hand-computed cases plus fuzzing), and the
length-collapse guard."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.length_guard import LengthCollapseGuard
from posttrain.refine_tasks import TaskFileError, grpo_settings, load_task, main, write_grpo_config
from rewards.config import RewardArguments
from rewards.registry import build_reward_funcs
from rewards.rules import LengthWindowReward, PatternReward, window_score

TASKS = sorted(Path("recipes/refine/tasks").glob("*.md"))
GOOD = """---
name: demo
summary: a demo task
policy_prompt: "Rewrite: {input}"
rubric: "- good is good"
rules:
  length_window: {weight: 0.4, min_ratio: 0.5, max_words: 50}
  patterns: {weight: 0.2, required: ["(?i)dear"], forbidden: ["(?i)as an ai"]}
---
Rewrite a text formally.
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "task.md"
    path.write_text(text)
    return path


def test_shipped_tasks_parse_and_configure() -> None:
    assert {p.stem for p in TASKS} >= {"style_transfer", "summarise", "eli5", "tldr"}
    for path in TASKS:
        task = load_task(path)
        assert task.name == path.stem and task.description
        settings_ = grpo_settings(task)
        assert settings_["reward_funcs"][0] == "llm_judge"
        RewardArguments(
            reward_funcs=settings_["reward_funcs"],
            judge_base_url="http://127.0.0.1:1/v1",
            judge_model="m",
            **{k: v for k, v in settings_.items() if k not in ("reward_funcs", "reward_weights")},
        )


def test_good_task_and_its_grpo_settings(tmp_path) -> None:
    task = load_task(write(tmp_path, GOOD))
    assert task.render_prompt("hi there") == "Rewrite: hi there"
    assert grpo_settings(task) == {
        "reward_funcs": ["llm_judge", "length_window", "patterns"],
        "reward_weights": [1.0, 0.4, 0.2],
        "judge_rubric": "- good is good",
        "length_min_ratio": 0.5,
        "length_max_words": 50,
        "patterns_required": ["(?i)dear"],
        "patterns_forbidden": ["(?i)as an ai"],
    }


def test_written_config_parses_with_the_grpo_recipe(tmp_path) -> None:
    from trl import ModelConfig, TrlParser

    from posttrain.configs import CountdownArguments, ScriptArguments
    from posttrain.rl_checks import GRPORecipeConfig
    from posttrain.runtime import parse_recipe_args

    out = write_grpo_config(
        load_task(write(tmp_path, GOOD)), "recipes/grpo/refine.yaml", tmp_path / "grpo.yaml"
    )
    config = yaml.safe_load(out.read_text())
    assert config["max_steps"] == 10 and config["reward_funcs"] == ["llm_judge", "length_window", "patterns"]
    parser = TrlParser((ScriptArguments, CountdownArguments, RewardArguments, GRPORecipeConfig, ModelConfig))
    _, _, rewards, training, _ = parse_recipe_args(
        parser,
        [
            "--config",
            str(out),
            "--judge_base_url",
            "http://127.0.0.1:1/v1",
            "--judge_model",
            "m",
            "--output_dir",
            str(tmp_path),
        ],
    )
    assert rewards.patterns_forbidden == ["(?i)as an ai"] and training.reward_weights == [1.0, 0.4, 0.2]
    assert training.length_collapse_ratio == 0.35
    funcs = build_reward_funcs(rewards)
    assert [f.__name__ for f in funcs] == ["llm_judge_reward", "length_window_reward", "patterns_reward"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("rubric:", "rubrik:"), "rubrik: unknown field"),
        (lambda t: t.replace("min_ratio", "min_ration"), "rules.length_window.min_ration: unknown field"),
        (lambda t: t.replace('"(?i)dear"', '"(unclosed"'), "not a valid regular expression"),
        (lambda t: t.replace("Rewrite: {input}", "Rewrite:"), "must contain {input} exactly once"),
        (lambda t: t.replace("name: demo", "name: Demo Task!"), "name: use lower-case letters"),
        (lambda t: t.replace("weight: 0.4", "weight: -1"), "rules.length_window.weight"),
        (
            lambda t: t.replace("min_ratio: 0.5, max_words: 50", "min_words: 60, max_words: 50"),
            "min_words=60 must be <=",
        ),
        (lambda t: t.replace("summary: a demo task\n", ""), "summary: Field required"),
        (lambda t: t.split("---\n", 2)[1], "starts with YAML front matter"),
        (lambda t: "---\n" + t.split("---\n", 2)[1], "not closed"),
        (lambda t: "---\n[1, 2]\n---\nbody\n", "must be a mapping"),
        (lambda t: "---\nname: [unclosed\n---\nbody\n", "not valid YAML"),
        (lambda t: t.rsplit("---\n", 1)[0] + "---\n\n", "task description"),
        (lambda t: t.replace("name: demo", "name: demo\ndescription: x"), "description: set by the file"),
        (lambda t: t.replace("rules:", "inputs: {dataset: my/data}\nrules:"), "inputs.dataset"),
    ],
)
def test_bad_task_files_name_the_field(tmp_path, edit, message) -> None:
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(TaskFileError) as info:
        load_task(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_missing_and_huge_task_files(tmp_path) -> None:
    with pytest.raises(TaskFileError, match="task file not found"):
        load_task(tmp_path / "nope.md")
    big = tmp_path / "big.md"
    big.write_text("---\nname: x\n---\n" + "x" * 300_000)
    with pytest.raises(TaskFileError, match="larger than"):
        load_task(big)
    binary = tmp_path / "bin.md"
    binary.write_bytes(b"---\n\xff\xfe\n---\n")
    with pytest.raises(TaskFileError, match="not UTF-8"):
        load_task(binary)


def test_cli_errors_are_one_line(tmp_path) -> None:
    with pytest.raises(SystemExit, match="error: .*unknown field"):
        main(["check", str(write(tmp_path, GOOD.replace("rubric:", "rubrik:")))])


# ------------------------------------------------------------------------------------------------ rules


def test_window_score_hand_computed() -> None:
    assert window_score(10, 5, 20) == 1.0
    assert window_score(2, 8, 20) == 0.25
    assert window_score(0, 8, 20) == 0.0
    assert window_score(30, 5, 20) == 0.5
    assert window_score(40, 5, 20) == 0.0 and window_score(99, 5, 20) == 0.0


def test_collapsed_summary_loses_to_a_faithful_one() -> None:
    reward = LengthWindowReward(min_ratio=0.15, max_ratio=0.6, min_words=8)
    source = " ".join(
        ["Heavy rains caused flooding in several regions while emergency crews evacuated residents"] * 4
    )
    collapsed = "Flood. Crews help."
    faithful = "Heavy rains flooded several regions, and emergency crews worked around the clock to evacuate residents."
    low, high = reward.window(len(source.split()))
    assert (low, high) == (8.0, pytest.approx(0.6 * 48))  # 48 source words: max(8, 0.15 * 48) and 0.6 * 48
    scores = reward([collapsed, faithful, [{"role": "assistant", "content": faithful}]], source=[source] * 3)
    assert scores == [3 / 8, 1.0, 1.0]


def test_relative_window_needs_a_source_column() -> None:
    with pytest.raises(ValueError, match="no `source` column"):
        LengthWindowReward(min_ratio=0.2)(["a b"])
    with pytest.raises(ValueError, match="2 sources but 1 completions"):
        LengthWindowReward(min_ratio=0.2)(["a b"], source=["x", "y"])
    assert LengthWindowReward(max_words=3)(["a b c d e f"]) == [0.0]  # absolute bounds need no source


def test_patterns_hand_computed() -> None:
    reward = PatternReward(required=["(?i)dear", "regards"], forbidden=["(?i)as an ai"])
    assert reward(["Dear Sam, kind regards", "Dear Sam", "As an AI: Dear, regards", "", None]) == [
        1.0,
        0.5,
        0.0,
        0.0,
        0.0,
    ]
    assert PatternReward(forbidden=["x"])(["abc", "xyz"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="at least one"):
        PatternReward()
    with pytest.raises(ValueError, match="not a valid regular expression"):
        PatternReward(required=["("])


def test_catastrophic_pattern_times_out_instead_of_hanging() -> None:
    reward = PatternReward(required=["^(a|aa)+$"], forbidden=["^(b|bb)+$"])
    started = time.monotonic()
    # Exponential backtracking: each search stops at its time limit and counts as failing its rule.
    assert reward(["a" * 40 + "!", "b" * 40 + "!"]) == [0.0, 0.0]
    assert time.monotonic() - started < 5
    assert reward.timeouts >= 1


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.text(max_size=200), min_size=1, max_size=5),
    st.integers(0, 30),
    st.floats(0.05, 3.0),
)
def test_rule_scores_stay_in_unit_interval(texts, min_words, ratio) -> None:
    window = LengthWindowReward(min_words=min_words, max_ratio=ratio)
    patterns = PatternReward(required=[r"\w+"], forbidden=[r"(?i)forbidden"])
    for score in window(texts, source=list(reversed(texts))) + patterns(texts):
        assert 0.0 <= score <= 1.0


def test_reward_arguments_refuse_bad_rule_settings() -> None:
    with pytest.raises(ValueError, match="length_window needs a window"):
        RewardArguments(reward_funcs=["length_window"])
    with pytest.raises(ValueError, match="length_min_words must be an integer"):
        RewardArguments(reward_funcs=["length_window"], length_min_words=-3)
    with pytest.raises(ValueError, match="patterns_forbidden: '\\[' is not a valid"):
        RewardArguments(reward_funcs=["patterns"], patterns_forbidden=["["])


# ------------------------------------------------------------------------------------------------ guard


def test_length_collapse_guard_stops_after_patience() -> None:
    guard = LengthCollapseGuard(0.4, patience=2, baseline_logs=2)
    control = SimpleNamespace(should_training_stop=False)
    for step, length in enumerate([40, 44, 30, 15, 40, 12, 10], start=1):
        guard.on_log(
            None, SimpleNamespace(global_step=step), control, logs={"completions/mean_length": length}
        )
        if step < 7:
            assert not control.should_training_stop, step  # 15 alone, then a recovery, resets the count
    assert control.should_training_stop and guard.stopped_at == 7
    assert guard.summary()["start_mean_length"] == 42.0


def test_length_collapse_guard_ignores_other_logs_and_checks_settings() -> None:
    guard = LengthCollapseGuard(0.5, patience=1, baseline_logs=1)
    control = SimpleNamespace(should_training_stop=False)
    for logs in ({"loss": 1.0}, {"completions/mean_length": float("nan")}, None):
        guard.on_log(None, SimpleNamespace(global_step=1), control, logs=logs)
    assert guard.baseline is None and not control.should_training_stop
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="length_collapse_ratio"):
            LengthCollapseGuard(bad)
