"""The held-out rule at every entry point: training never sees a held-out puzzle, evaluation sees only those.

Training goes through each recipe's own `main` with a fake hub (`datasets.load_dataset` returns a small
in-memory Dataset holding held-out and training tasks) and a trainer class that records its training set and
stops; evaluation goes through `python -m eval.countdown`'s `main` with generation stubbed out.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import datasets
import pytest

from posttrain.countdown import COUNTDOWN_HUB_ID, WARMSTART_HUB, canonical_key
from posttrain.data import heldout_tasks, is_heldout, train_tasks

REPO = Path(__file__).resolve().parent.parent
HELDOUT = heldout_tasks(3, seed=7)
TRAIN = train_tasks(5, seed=7)


def _recipe(algo: str):
    spec = importlib.util.spec_from_file_location(
        f"recipe_{algo}_heldout", REPO / "recipes" / algo / "run.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Stop(Exception):
    """Raised by the recording trainer: the data has been seen, no training is needed."""


def _recording_trainer(seen: dict):
    class Recorder:
        def __init__(self, *args, train_dataset=None, **kwargs):
            seen["train"] = train_dataset
            raise _Stop

    return Recorder


def _fake_hub(monkeypatch, expected_name: str, rows_by_split: dict[str, list[dict]]) -> list:
    calls = []

    def load_dataset(name, *args, split=None, revision=None, **kwargs):
        assert name == expected_name, f"unexpected hub dataset {name!r}"
        calls.append(split)
        return datasets.Dataset.from_list(rows_by_split[split])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def _keys(ds) -> set:
    return {canonical_key(t, n) for t, n in zip(ds["target"], ds["nums"], strict=True)}


def _warmstart_row(task) -> dict:
    nums = ", ".join(str(n) for n in task.nums)
    return {
        "query": f"User: Using the numbers [{nums}], create an equation that equals {task.target}. ...\n"
        "Assistant: Let me solve this step by step.",
        "completion": f"<think>try</think>\n<answer>{task.solution}</answer>",
    }


@pytest.fixture(autouse=True)
def _own_tensorboard_dir(monkeypatch, tmp_path):
    # setup_logging fills this with setdefault; keep it from leaking into later tests.
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))


def test_the_fixtures_mix_heldout_and_training_tasks():
    assert all(is_heldout(t.target, t.nums) for t in HELDOUT)
    assert not any(is_heldout(t.target, t.nums) for t in TRAIN)


@pytest.mark.parametrize("template", ["base", "chat"])
def test_sft_on_the_warmstart_hub_never_trains_on_heldout_tasks(
    template, tiny_model_dir, tmp_path, monkeypatch
):
    from posttrain.runtime import parse_recipe_args

    mixed = [_warmstart_row(t) for t in HELDOUT[:2] + TRAIN + HELDOUT[2:]]
    calls = _fake_hub(monkeypatch, WARMSTART_HUB, {"train": mixed, "test": mixed[:2]})
    sft = _recipe("sft")
    seen: dict = {}
    monkeypatch.setattr(sft, "SFTTrainer", _recording_trainer(seen))
    argv = [
        "--config", str(REPO / "recipes/sft/countdown.yaml"), "--dataset_name", WARMSTART_HUB,
        "--prompt_template", template, "--model_name_or_path", str(tiny_model_dir),
        "--output_dir", str(tmp_path / "sft"), "--report_to", "none",
    ]  # fmt: skip
    with pytest.raises(_Stop):
        sft.main(*parse_recipe_args(sft.make_parser(), argv))
    assert calls == ["train", "test"]
    assert _keys(seen["train"]) == {canonical_key(t.target, t.nums) for t in TRAIN}


def test_sft_on_the_countdown_hub_never_trains_on_heldout_tasks(tiny_model_dir, tmp_path, monkeypatch):
    from posttrain.runtime import parse_recipe_args

    rows = [{"target": t.target, "nums": list(t.nums)} for t in HELDOUT + TRAIN]
    _fake_hub(monkeypatch, COUNTDOWN_HUB_ID, {"train": rows})
    sft = _recipe("sft")
    seen: dict = {}
    monkeypatch.setattr(sft, "SFTTrainer", _recording_trainer(seen))
    argv = [
        "--config", str(REPO / "recipes/sft/countdown.yaml"), "--dataset_name", COUNTDOWN_HUB_ID,
        "--countdown_train_size", "16", "--countdown_test_size", "4",
        "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "sft"), "--report_to", "none",
    ]  # fmt: skip
    with pytest.raises(_Stop):
        sft.main(*parse_recipe_args(sft.make_parser(), argv))
    assert _keys(seen["train"]) == {canonical_key(t.target, t.nums) for t in TRAIN}


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_rl_on_the_countdown_hub_never_trains_on_heldout_tasks(algo, tiny_model_dir, tmp_path, monkeypatch):
    from posttrain.rl import parse_rl_args

    rows = [{"target": t.target, "nums": list(t.nums)} for t in HELDOUT + TRAIN]
    _fake_hub(monkeypatch, COUNTDOWN_HUB_ID, {"train": rows})
    recipe = _recipe(algo)
    seen: dict = {}
    monkeypatch.setattr(recipe, f"{algo.upper()}Trainer", _recording_trainer(seen))
    argv = [
        "--config", str(REPO / f"recipes/{algo}/countdown.yaml"), "--dataset_name", COUNTDOWN_HUB_ID,
        "--countdown_train_size", "16", "--prompt_template", "compact", "--per_device_train_batch_size", "4",
        "--num_generations", "2", "--max_completion_length", "12",
        "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / algo), "--report_to", "none",
    ]  # fmt: skip
    with pytest.raises(_Stop):
        recipe.main(*parse_rl_args(recipe.make_parser(), argv))
    assert _keys(seen["train"]) == {canonical_key(t.target, t.nums) for t in TRAIN}


# ----------------------------------------------------------------------------------------------------------
# Evaluation: only held-out tasks, by default
# ----------------------------------------------------------------------------------------------------------


def _evaluated_tasks(monkeypatch, tmp_path: Path, *args: str) -> list[dict]:
    import eval.countdown as ec

    def no_generation(model, prompts, params, **kwargs):
        return [["<answer>1</answer>"] * params.n for _ in prompts]

    monkeypatch.setattr(ec, "generate", no_generation)
    out = tmp_path / "eval"
    summary = ec.main(["--model", "embedded", "--output_dir", str(out), "--no_progress", *args])
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert summary["task_source"]["heldout"] is True and len(rows) == summary["n_tasks"]
    return [row["task"] for row in rows]


@pytest.mark.parametrize(
    "args, n",
    [
        ((), 200),  # the CLI's defaults
        (("--n_tasks", "200", "--seed", "1234", "--template", "short"), 200),  # make eval-countdown's
        (("--n_tasks", "50", "--num_numbers", "4"), 50),  # sft-countdown's 4-number evaluation
        (("--n_tasks", "30", "--seed", "99", "--max_number", "50"), 30),
    ],
)
def test_eval_countdown_evaluates_only_heldout_tasks(args, n, monkeypatch, tmp_path):
    tasks = _evaluated_tasks(monkeypatch, tmp_path, *args)
    assert len(tasks) == n
    assert len({canonical_key(t["target"], t["nums"]) for t in tasks}) == n  # n distinct puzzles
    training = [t for t in tasks if not is_heldout(t["target"], t["nums"])]
    assert training == [], f"{len(training)} evaluated tasks are training tasks, e.g. {training[0]}"
