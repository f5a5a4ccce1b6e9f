"""benchmarks/rl_seen_prompts.py: the replayed prompt order is the one TRL's sampler draws, and runs it cannot
replay are refused with the field that stops it."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import rl_seen_prompts  # noqa: E402


def _training(**overrides):
    base = dict(
        generation_batch_size=32,
        num_generations=8,
        steps_per_generation=1,
        num_iterations=1,
        max_steps=40,
        seed=42,
        shuffle_dataset=True,
    )
    return {**base, **overrides}


@pytest.mark.parametrize(
    "n_train, overrides",
    [
        (640, {}),
        (97, dict(generation_batch_size=12, num_generations=4, max_steps=7, seed=3)),
        (200, dict(steps_per_generation=2, num_iterations=2, max_steps=9, seed=0)),
    ],
)
def test_the_replayed_prompts_are_those_trl_repeat_sampler_draws(n_train: int, overrides: dict) -> None:
    from trl.trainer.utils import RepeatSampler

    training = _training(**overrides)
    per_batch = training["generation_batch_size"] // training["num_generations"]
    repeat = training["steps_per_generation"] * training["num_iterations"]
    sampler = RepeatSampler(
        data_source=range(n_train),
        mini_repeat_count=training["num_generations"],
        batch_size=per_batch,
        repeat_count=repeat,
        shuffle=True,
        seed=training["seed"],
    )
    n_batches = -(-training["max_steps"] // repeat)
    drawn = list(
        itertools.islice(iter(sampler), n_batches * per_batch * training["num_generations"] * repeat)
    )
    n_seen = rl_seen_prompts.seen_prompt_count(training, n_train)
    order = rl_seen_prompts.sampler_order(n_train, training["seed"])
    assert n_seen == min(n_batches * per_batch, n_train)
    assert set(drawn) == set(order[:n_seen])
    assert sorted(order) == list(range(n_train))


def _summary(**overrides) -> dict:
    countdown = dict(
        countdown_train_size=64,
        countdown_data_seed=7,
        countdown_num_numbers=[3],
        countdown_min_number=1,
        countdown_max_number=30,
        countdown_min_target=10,
        countdown_max_target=100,
    )
    base = dict(
        task="countdown",
        data_source="generated",
        num_processes=1,
        resumed_from=None,
        args=dict(
            training=_training(max_steps=4), countdown=countdown, script=dict(dataset_max_train_rows=None)
        ),
    )
    return {**base, **overrides}


def test_a_run_is_replayed_on_the_tasks_the_rl_recipe_builds() -> None:
    from posttrain.configs import CountdownArguments
    from posttrain.rl import countdown_rl_tasks

    tasks, order, n_seen = rl_seen_prompts.replay_run(_summary())
    countdown = CountdownArguments(**_summary()["args"]["countdown"])
    expected, _ = countdown_rl_tasks(SimpleNamespace(dataset_name=None, dataset_revision=None), countdown)
    assert tasks == expected and n_seen == 16 and sorted(order) == list(range(64))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_processes=2), "num_processes is 2"),
        (dict(resumed_from="runs/x/checkpoint-20"), "resumed from runs/x/checkpoint-20"),
        (dict(data_source="hf://countdown"), "data_source: generated"),
        (dict(task="gsm8k"), "data_source: generated"),
    ],
)
def test_runs_it_cannot_replay_are_refused_with_the_reason(overrides: dict, message: str) -> None:
    with pytest.raises(rl_seen_prompts.SeenPromptsError, match=message):
        rl_seen_prompts.replay_run(_summary(**overrides))


def test_a_run_that_drew_every_prompt_has_no_unseen_control() -> None:
    summary = _summary()
    summary["args"]["training"]["max_steps"] = 100
    with pytest.raises(rl_seen_prompts.SeenPromptsError, match="all 64 training prompts"):
        rl_seen_prompts.replay_run(summary)


def test_a_folder_without_run_summary_is_a_clear_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        rl_seen_prompts.main(["--start", "embedded", "--trained", str(tmp_path)])
    assert "no run_summary.json" in capsys.readouterr().err


def test_a_set_size_below_one_is_a_clear_error(capsys) -> None:
    with pytest.raises(SystemExit):
        rl_seen_prompts.main(["--start", "embedded", "--trained", "x", "--n", "0"])
    assert "--n 0" in capsys.readouterr().err
