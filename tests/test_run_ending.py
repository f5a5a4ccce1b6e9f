"""The ending every recipe shares (posttrain.runtime.train and finish_run), on a stand-in trainer that records calls."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from posttrain.runtime import finish_run, train


@dataclass
class ModelArgs:
    model_name_or_path: str = "embedded"


class RecordingTrainer:
    def __init__(self, output_dir: Path, main: bool = True) -> None:
        self.calls: list[str] = []
        self.args = SimpleNamespace(output_dir=str(output_dir))
        self.model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=None))
        self.processing_class = SimpleNamespace(
            eos_token_id=7, save_pretrained=lambda folder: self.calls.append("save_tokenizer")
        )
        self.accelerator = SimpleNamespace(is_main_process=main, num_processes=1, distributed_type="NO")

    def train(self, resume_from_checkpoint=None):
        self.calls.append(f"train:{resume_from_checkpoint}")
        return SimpleNamespace(metrics={"train_loss": 1.5})

    def log_metrics(self, split, metrics):
        self.calls.append(f"log_metrics:{split}")

    def save_state(self):
        self.calls.append("save_state")

    def save_model(self, folder):
        self.calls.append("save_model")

    def end(self):
        self.calls.append("end")


def test_train_evaluates_around_training_unless_resuming(tmp_path: Path):
    trainer = RecordingTrainer(tmp_path)
    evaluate = lambda t: t.calls.append("evaluate") or {"loss": len(t.calls)}  # noqa: E731
    trained = train(trainer, None, evaluate)
    assert trainer.calls == ["evaluate", "train:None", "log_metrics:train", "save_state", "evaluate"]
    assert trained.before == {"loss": 1} and trained.after == {"loss": 5}
    assert trained.train_result.metrics == {"train_loss": 1.5}

    resumed = RecordingTrainer(tmp_path)
    trained = train(resumed, "ckpt-4", evaluate)  # the start is gone: no "before"
    assert (
        resumed.calls == ["train:ckpt-4", "log_metrics:train", "save_state", "evaluate"]
        and trained.before is None
    )
    skipped = RecordingTrainer(tmp_path)
    assert train(skipped, None, evaluate, evaluate_before=False).before is None
    assert train(RecordingTrainer(tmp_path), None).after is None


@pytest.mark.parametrize("main", [True, False])
def test_finish_run_saves_summarizes_reports_once_and_ends(tmp_path: Path, capsys, main: bool):
    trainer = RecordingTrainer(tmp_path, main=main)
    finish_run(
        trainer,
        started=0.0,
        train_result=SimpleNamespace(metrics={"train_loss": 1.5}),
        args={"model": ModelArgs()},
        extra={"recipe": "test"},
        report="the report",
    )
    assert (
        trainer.model.generation_config.eos_token_id == 7
    )  # generation stops where the template ends a turn
    summary_path = tmp_path / "run_summary.json"
    if main:
        assert trainer.calls == ["save_model", "save_tokenizer", "end"]
        summary = json.loads(summary_path.read_text())
        assert summary["recipe"] == "test" and summary["embedded_model"] is True
        assert summary["args"] == {"model": {"model_name_or_path": "embedded"}}
        assert summary["train_metrics"] == {"train_loss": 1.5}
        assert capsys.readouterr().out == "the report\n"
    else:  # other processes save their shard of the model only, print nothing, and end too
        assert trainer.calls == ["save_model", "end"] and not summary_path.exists()
        assert capsys.readouterr().out == ""
