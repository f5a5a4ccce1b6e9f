"""DPO/IPO, LoRA DPO and the reward-model recipe: 1-2 real optimizer steps on the tiny model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _recipe(algo: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{algo}_test", REPO / "recipes" / algo / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(algo: str, config: str, model: Path, out: Path, *extra: str, patch=None):
    """Run a recipe for 1 step; `patch(module)` may replace names in the recipe module first."""
    from posttrain.runtime import parse_recipe_args

    module = _recipe(algo)
    if patch is not None:
        patch(module)
    argv = [
        "--config", str(REPO / config),
        "--model_name_or_path", str(model),
        "--output_dir", str(out),
        "--max_steps", "1",
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4",
        "--report_to", "none",
        "--save_strategy", "no",
        "--logging_steps", "1",
        "--warmup_steps", "0",  # with warmup, a 1-step run would train at learning rate 0
        "--lr_scheduler_type", "constant",
        *extra,
    ]  # fmt: skip
    return module.main(*parse_recipe_args(module.make_parser(), argv))


FIXTURE_ROWS = ("--dataset_name", "fixture", "--dataset_max_train_rows", "8", "--dataset_max_test_rows", "8")


def test_dpo_reports_heldout_pairs_before_and_after(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "dpo"
    # bf16 mixed precision, the default on CPUs with bf16 instructions: before train() only the reference's
    # forward is autocast, so the "before" evaluation must run under autocast too or the policy (float32) and
    # its frozen copy (bf16) disagree and the implicit rewards are not 0.
    trainer = _run(
        "dpo", "recipes/dpo/ultrafeedback.yaml", tiny_model_dir, out, *FIXTURE_ROWS, "--learning_rate", "1e-2",
        "--bf16", "true",
    )  # fmt: skip
    assert trainer.state.global_step == 1
    assert trainer.ref_model is not None  # full fine-tune: a frozen copy of the start is the reference
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["recipe"] == "dpo" and summary["data_source"] == "fixture"
    assert summary["n_train"] == 8 and summary["n_test"] == 8
    before, after = summary["heldout_pairs"]["before"], summary["heldout_pairs"]["after"]
    # Before training the policy is the reference: every implicit reward is exactly 0.
    assert before["reward_accuracy"] == 0.0 and before["reward_margin"] == 0.0
    assert 0.0 <= before["policy_pair_accuracy"] <= 1.0
    assert set(after) >= {"reward_accuracy", "reward_margin", "loss", "policy_pair_accuracy"}
    assert after["reward_margin"] != 0.0  # one step at a large learning rate moved the policy
    printed = capsys.readouterr().out
    assert "reward_accuracy" in printed and "before" in printed
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def _recording_tokenizer_loader(monkeypatch, revisions: list):
    from posttrain.models import load_tokenizer

    def recording(name, revision=None, **kwargs):
        revisions.append(revision)
        return load_tokenizer(name, **kwargs)  # the local test model has no hub revisions

    return lambda module: monkeypatch.setattr(module, "load_tokenizer", recording)


def test_ipo_loss_type_is_accepted(tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "ipo"
    revisions: list = []
    trainer = _run(
        "dpo", "recipes/dpo/ultrafeedback.yaml", tiny_model_dir, out, *FIXTURE_ROWS,
        "--loss_type", "ipo", "--preference_eval_before", "false", "--model_revision", "abc123",
        patch=_recording_tokenizer_loader(monkeypatch, revisions),
    )  # fmt: skip
    assert trainer.loss_types == ["ipo"]
    assert revisions == ["abc123"]  # the tokenizer comes from the model's revision
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["loss_type"] == ["ipo"] and summary["beta"] == 0.1
    assert summary["heldout_pairs"]["before"] is None
    # At the first step the policy is the reference, so every log-ratio gap is 0 and IPO's loss is
    # (0 - 1/(2 beta))^2 = 25 for beta = 0.1; the sigmoid loss would be log 2.
    first = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    assert first == pytest.approx((1 / (2 * 0.1)) ** 2, rel=1e-2)  # 1e-2: bf16 autocast rounding


def test_ipo_yaml_sets_ipo():
    from posttrain.runtime import parse_recipe_args

    module = _recipe("dpo")
    parsed = parse_recipe_args(
        module.make_parser(), ["--config", str(REPO / "recipes/dpo/ultrafeedback_ipo.yaml")]
    )
    assert parsed[2].loss_type == ["ipo"]


def test_lora_dpo_loads_no_reference_model(tiny_model_dir, tmp_path, monkeypatch):
    import trl.trainer.dpo_trainer as dpo_module
    from peft import PeftModel

    loads: list[str] = []
    original = dpo_module.create_model_from_path

    def counting(path, *args, **kwargs):
        loads.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(dpo_module, "create_model_from_path", counting)
    out = tmp_path / "lora"
    trainer = _run(
        "dpo", "recipes/dpo/ultrafeedback_lora.yaml", tiny_model_dir, out, *FIXTURE_ROWS,
        "--lora_target_modules", "q_proj", "v_proj",
    )  # fmt: skip
    assert loads == [str(tiny_model_dir)]  # the policy only: no second model in memory
    assert trainer.ref_model is None and isinstance(trainer.model, PeftModel)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["reference"] == "base model with adapters disabled"
    # Adapters start at zero (LoRA B = 0): before training the policy equals the reference.
    assert summary["heldout_pairs"]["before"]["reward_margin"] == 0.0
    assert (out / "adapter_config.json").is_file()

    loads.clear()
    _run("dpo", "recipes/dpo/ultrafeedback.yaml", tiny_model_dir, tmp_path / "full", *FIXTURE_ROWS)
    assert len(loads) == 2  # contrast: a full fine-tune loads the policy and a reference copy


def test_dpo_rejects_a_missing_pairs_folder(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="dataset_name=.*posttrain.preferences"):
        _run(
            "dpo",
            "recipes/dpo/countdown.yaml",
            tiny_model_dir,
            tmp_path / "x",
            "--dataset_name",
            str(tmp_path / "nope"),
        )


def test_reward_model_recipe_saves_a_servable_model(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from eval.reward_server import RewardScorer

    out = tmp_path / "rm"
    trainer = _run(
        "reward",
        "recipes/reward/ultrafeedback.yaml",
        tiny_model_dir,
        out,
        *FIXTURE_ROWS,
        "--max_steps",
        "2",
        "--learning_rate",
        "1e-2",
    )
    assert trainer.state.global_step == 2
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["recipe"] == "reward" and summary["data_source"] == "fixture"
    before, after = summary["heldout_pairs"]["before"], summary["heldout_pairs"]["after"]
    for metrics in (before, after):
        assert 0.0 <= metrics["pair_accuracy"] <= 1.0 and "reward_margin" in metrics
    assert before != after  # two steps changed the scores
    assert "pair_accuracy" in capsys.readouterr().out

    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.num_labels == 1
    assert tokenizer.pad_token is not None and model.config.pad_token_id == tokenizer.pad_token_id
    scorer = RewardScorer(out, device="cpu")
    scores = scorer.score(
        [
            [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
            [
                {"role": "user", "content": "What is 2 + 2?"},
                {"role": "assistant", "content": "I cannot help."},
            ],
        ]
    )
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


def test_lora_reward_model_trains_its_score_head_and_is_saved_merged(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForSequenceClassification

    start: dict = {}
    revisions: list = []
    record_tokenizer = _recording_tokenizer_loader(monkeypatch, revisions)

    def patch(module):
        record_tokenizer(module)

        class SnapshotTrainer(module.RewardTrainer):
            def train(self, *args, **kwargs):
                start["score"] = self.model.get_submodule("base_model.model.score").weight.detach().clone()
                return super().train(*args, **kwargs)

        monkeypatch.setattr(module, "RewardTrainer", SnapshotTrainer)

    out = tmp_path / "rm-lora"
    # No --lora_task_type: the recipe must make it SEQ_CLS itself, or the fresh score head stays random.
    trainer = _run(
        "reward", "recipes/reward/ultrafeedback.yaml", tiny_model_dir, out, *FIXTURE_ROWS,
        "--use_peft", "true", "--lora_target_modules", "q_proj", "v_proj", "--preference_eval_before", "false",
        "--learning_rate", "1e-2", "--model_revision", "abc123", patch=patch,
    )  # fmt: skip
    assert revisions == ["abc123"]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["args"]["model"]["lora_task_type"] == "SEQ_CLS"
    trained = trainer.model.score.weight.detach()  # merged after training
    assert not torch.equal(trained, start["score"]), "the LoRA step left the score head unchanged"
    assert not (out / "adapter_config.json").exists()  # a plain folder the reward server can load
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    assert torch.equal(model.score.weight, trained)  # the trained head is what was saved
