"""One way to pick a dataset by name (posttrain.dataset_names) and one rule for local model paths (posttrain.models).

Every recipe's loader asks the same table, so the same name means the same data everywhere and every refusal is
the same error, naming the recipe and its choices.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from posttrain.chat_data import FIXTURE_NAME, SMOLTALK_HUB_ID, ULTRAFEEDBACK_HUB_ID
from posttrain.configs import CountdownArguments, ScriptArguments
from posttrain.countdown import COUNTDOWN_HUB_ID, WARMSTART_HUB
from posttrain.data import load_sft_dataset
from posttrain.dataset_names import DatasetNameError, dataset_kind
from posttrain.models import looks_like_local_path, missing_local_model_hint
from posttrain.preference_data import load_preference_dataset
from posttrain.rl import build_rl_dataset, rl_task
from posttrain.rl_checks import start_model_problem


@pytest.mark.parametrize(
    "name, recipe, kind",
    [
        (None, "SFT", "countdown"),
        ("", "SFT", "countdown"),
        ("countdown", "SFT", "countdown"),
        (FIXTURE_NAME, "SFT", "smoltalk"),
        (SMOLTALK_HUB_ID, "SFT", "smoltalk"),
        (WARMSTART_HUB, "SFT", "warmstart_hub"),
        (COUNTDOWN_HUB_ID, "SFT", "countdown_hub"),
        (None, "RL", "countdown"),
        (COUNTDOWN_HUB_ID, "RL", "countdown_hub"),
        (FIXTURE_NAME, "RL", "ultrafeedback"),  # the fixture stands in for the data the recipe trains on
        (ULTRAFEEDBACK_HUB_ID, "RL", "ultrafeedback"),
        (None, "preference", "ultrafeedback"),
        (FIXTURE_NAME, "preference", "ultrafeedback"),
    ],
)
def test_names_select_one_kind_per_recipe(name, recipe, kind):
    assert dataset_kind(name, recipe) == kind


@pytest.mark.parametrize(
    "name, recipe",
    [
        ("someone/else", "SFT"),
        (ULTRAFEEDBACK_HUB_ID, "SFT"),
        (WARMSTART_HUB, "RL"),  # traces, not prompts
        (SMOLTALK_HUB_ID, "RL"),
        ("countdown", "preference"),
        ("runs/no-such-pairs-folder", "preference"),
    ],
)
def test_unsupported_names_are_refused_with_the_choices(name, recipe):
    with pytest.raises(DatasetNameError) as err:
        dataset_kind(name, recipe)
    message = str(err.value)
    assert f"dataset_name={name!r}" in message and f"the {recipe} recipes" in message


def test_a_saved_dataset_folder_is_pairs_for_the_preference_recipes(tmp_path: Path):
    (tmp_path / "dataset_dict.json").write_text("{}")
    assert dataset_kind(str(tmp_path), "preference") == "pairs"
    with pytest.raises(DatasetNameError):
        dataset_kind(str(tmp_path), "SFT")


def test_every_entry_point_refuses_an_unknown_name_the_same_way():
    """SFT, RL and the DPO/reward loaders: one error type, raised before any data is built."""
    script = ScriptArguments(
        dataset_name="someone/else", dataset_train_split="train", dataset_test_split="test"
    )
    countdown = CountdownArguments()
    loaders = {
        "SFT": lambda: load_sft_dataset(script, countdown),
        "RL": lambda: build_rl_dataset(script, countdown),
        "preference": lambda: load_preference_dataset(script),
    }
    for recipe, load in loaders.items():
        with pytest.raises(DatasetNameError, match=f"not supported by the {recipe} recipes"):
            load()
    with pytest.raises(DatasetNameError):
        rl_task("someone/else")
    assert rl_task(COUNTDOWN_HUB_ID) == "countdown" and rl_task(FIXTURE_NAME) == "ultrafeedback"


# ----------------------------------------------------------------------------------------------------------
# Local model paths
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, local",
    [
        ("runs/sft-countdown/model", True),
        ("./model", True),
        ("../model", True),
        (".cache/model", True),  # a hub id never starts with a dot
        ("/abs/model", True),
        ("~/model", True),
        ("a/b/c", True),  # hub ids have one slash
        ("Qwen/Qwen2.5-0.5B", False),
        ("embedded", False),
        ("gpt2", False),
    ],
)
def test_one_rule_says_which_names_are_local(name, local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no folder here makes a hub id look local
    assert looks_like_local_path(name) is local


def test_an_existing_parent_folder_makes_a_two_part_name_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_like_local_path("outputs/model")
    (tmp_path / "outputs").mkdir()
    assert looks_like_local_path("outputs/model")


@pytest.mark.parametrize(
    "name", [".cache/model", "outputs/model", "runs/x/model", "Qwen/Qwen2.5-0.5B", "embedded"]
)
def test_the_rl_precheck_and_the_model_loader_agree_on_a_missing_local_model(name, tmp_path, monkeypatch):
    """The RL pre-check and `prepare_model_args` (via missing_local_model_hint) used two rules that disagreed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    assert (start_model_problem(name) is None) == (missing_local_model_hint(name) is None)


def test_model_folders_are_only_checked_when_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "x" / "model").mkdir(parents=True)
    assert start_model_problem("runs/x/model") is None and missing_local_model_hint("runs/x/model") is None
    assert "does not exist" in start_model_problem("runs/x/other")
