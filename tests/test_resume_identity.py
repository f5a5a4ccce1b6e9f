"""Every recipe refuses to resume a run whose rewards, group size or data seed changed (run_identity.json).

One real 1-step run per recipe leaves checkpoint-1 and its identity; each relaunch then changes one setting and
must stop before training, naming exactly that setting. The control relaunch with unchanged settings reaches
the trainer (a stand-in class that stops there), so the refusals come from the change and nothing else.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# recipe -> (config, trainer class name in the recipe module, arguments of the tiny first run)
RECIPES = {
    "grpo": ("recipes/grpo/countdown.yaml", "GRPOTrainer", ()),
    "rloo": ("recipes/rloo/countdown.yaml", "RLOOTrainer", ()),
    "dpo": ("recipes/dpo/ultrafeedback.yaml", "DPOTrainer", ("--preference_eval_before", "false")),
    "reward": ("recipes/reward/ultrafeedback.yaml", "RewardTrainer", ("--preference_eval_before", "false")),
}
RL_ARGS = (
    "--prompt_template", "compact", "--countdown_train_size", "8", "--num_generations", "2",
    "--max_completion_length", "8", "--countdown_validation_size", "0",
)  # fmt: skip
PAIR_ARGS = ("--dataset_name", "fixture", "--dataset_max_train_rows", "4", "--dataset_max_test_rows", "4")
# recipe -> [(changed arguments, the identity fields the refusal must name)]
CHANGES = {
    "grpo": [
        (("--reward_funcs", "countdown", "--reward_weights", "1.0"), {"reward_funcs", "reward_weights"}),
        (("--num_generations", "4"), {"num_generations"}),
        (("--countdown_data_seed", "99"), {"countdown_data_seed"}),
        (("--data_seed", "7"), {"data_seed"}),
        (("--seed", "7"), {"seed"}),
    ],
    "dpo": [
        (("--data_seed", "7"), {"data_seed"}),
        (("--seed", "7"), {"seed"}),
        (("--dataset_max_train_rows", "3"), {"dataset_max_train_rows"}),
    ],
}
CHANGES["rloo"] = CHANGES["grpo"]
CHANGES["reward"] = CHANGES["dpo"]


def _recipe(algo: str):
    spec = importlib.util.spec_from_file_location(
        f"recipe_{algo}_identity", REPO / "recipes" / algo / "run.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launch(algo: str, model: Path, out: Path, *extra: str):
    from posttrain.rl import parse_rl_args
    from posttrain.runtime import parse_recipe_args

    config, _, first = RECIPES[algo]
    module = _recipe(algo)
    argv = [
        "--config", str(REPO / config), "--model_name_or_path", str(model), "--output_dir", str(out),
        "--max_steps", "1", "--save_strategy", "steps", "--save_steps", "1", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4", "--report_to", "none", "--disable_tqdm", "true", "--bf16", "false",
        *first, *(RL_ARGS if algo in ("grpo", "rloo") else PAIR_ARGS), *extra,
    ]  # fmt: skip
    parse = parse_rl_args if algo in ("grpo", "rloo") else parse_recipe_args
    return module, parse(module.make_parser(), argv)


class _ReachedTrainer(Exception):
    pass


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """recipe -> output folder of a finished 1-step run with checkpoint-1 (built on first use)."""
    import os

    folders: dict[str, Path] = {}
    old_tb = os.environ.get("TENSORBOARD_LOGGING_DIR")

    def get(algo: str) -> Path:
        if algo not in folders:
            out = tmp_path_factory.mktemp(f"{algo}-identity") / "run"
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / "tensorboard")
            module, args = _launch(algo, tiny_model_dir, out)
            module.main(*args)
            assert (out / "checkpoint-1" / "trainer_state.json").is_file()
            assert (out / "run_identity.json").is_file()
            folders[algo] = out
        return folders[algo]

    yield get
    if old_tb is None:
        os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
    else:
        os.environ["TENSORBOARD_LOGGING_DIR"] = old_tb


def _stop_at_trainer(module, algo: str, monkeypatch) -> None:
    def stop(*args, **kwargs):
        raise _ReachedTrainer

    monkeypatch.setattr(module, RECIPES[algo][1], stop)


@pytest.mark.parametrize(
    "algo, extra, fields",
    [
        pytest.param(algo, extra, fields, id=f"{algo}-{extra[0].lstrip('-')}")
        for algo, changes in CHANGES.items()
        for extra, fields in changes
    ],
)
def test_resume_refuses_a_changed_run(algo, extra, fields, trained, tiny_model_dir, monkeypatch):
    out = trained(algo)
    recorded = json.loads((out / "run_identity.json").read_text())
    assert fields <= recorded.keys(), f"{sorted(fields - recorded.keys())} are not part of {algo}'s identity"
    module, args = _launch(algo, tiny_model_dir, out, "--max_steps", "2", *extra)
    _stop_at_trainer(module, algo, monkeypatch)
    with pytest.raises(SystemExit) as err:
        module.main(*args)
    message = str(err.value)
    assert "holds checkpoint-1 of a run with other settings" in message
    named = set(re.findall(r"^  (\w+): checkpoints ", message, flags=re.MULTILINE))
    assert named == fields
    assert not (out / "checkpoint-2").exists()
    assert json.loads((out / "run_identity.json").read_text()) == recorded  # the record is kept


@pytest.mark.parametrize("algo", list(RECIPES))
def test_resume_with_the_same_settings_reaches_the_trainer(algo, trained, tiny_model_dir, monkeypatch):
    out = trained(algo)
    module, args = _launch(algo, tiny_model_dir, out, "--max_steps", "2")
    _stop_at_trainer(module, algo, monkeypatch)
    with pytest.raises(_ReachedTrainer):
        module.main(*args)


@pytest.mark.parametrize("algo", ["grpo", "dpo"])
def test_relaunching_a_finished_run_trains_no_further_step(algo, trained, tiny_model_dir):
    """transformers resumed at max_steps trains one more step; the finished weights must come back unchanged."""
    import torch
    from safetensors.torch import load_file

    out = trained(algo)
    finished = load_file(out / "checkpoint-1" / "model.safetensors")
    module, args = _launch(algo, tiny_model_dir, out)  # the same settings, max_steps 1 again
    module.main(*args)
    assert not (out / "checkpoint-2").exists()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 1
    saved = load_file(out / "model.safetensors")
    shared = finished.keys() & saved.keys()
    assert shared and all(torch.equal(finished[k], saved[k]) for k in shared)
