"""The encoder-decoder path (recipes/seq2seq, eval.codesum): the seq2seq collator, a tiny T5 built from config
trained for a few steps with LoRA and evaluated, the refusals, and eval.codesum's paired comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory) -> Path:
    """A 1-layer, 32-wide T5 with the embedded model's tokenizer (no hub needed)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from posttrain.models import load_tokenizer

    path = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = load_tokenizer("embedded")
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_collator_pads_labels_with_minus_100_and_shifts_them_into_decoder_inputs(tiny_t5_dir: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq

    from posttrain.codesum import seq2seq_dataset
    from posttrain.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_t5_dir))
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir)
    rows = [
        {"code": "def f(a):\n    return a + 1\n" * 10, "summary": "Add one to a number and return it."},
        {"code": "def g():\n    pass\n", "summary": "Nothing."},
    ]
    data = seq2seq_dataset(rows, tokenizer, max_source_length=16, max_target_length=4)
    assert [len(ids) for ids in data["input_ids"]] == [16, len(tokenizer(rows[1]["code"])["input_ids"])]
    assert len(data["labels"][0]) == 4  # truncated to max_target_length
    batch = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)(list(data))
    short = len(data["labels"][1])
    assert batch["labels"].shape == (2, 4)
    assert batch["labels"][1, short:].tolist() == [-100] * (4 - short)
    assert batch["labels"][1, :short].tolist() == data["labels"][1]
    assert batch["attention_mask"][1].sum().item() == len(data["input_ids"][1])
    # teacher forcing: the decoder reads the labels shifted right behind the start token, padding for -100
    start = model.config.decoder_start_token_id
    assert batch["decoder_input_ids"][0].tolist() == [start, *data["labels"][0][:3]]
    assert batch["decoder_input_ids"][1, short + 1 :].tolist() == [tokenizer.pad_token_id] * (3 - short)


def _run(args: list[str], timeout: int = 500) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(600)
def test_tiny_t5_trains_with_lora_and_is_evaluated(tiny_t5_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "t5"
    proc = _run([
        "recipes/seq2seq/run.py", "--config", "recipes/seq2seq/codet5_lora.yaml",
        "--model_name_or_path", str(tiny_t5_dir), "--output_dir", str(out), "--dataset_max_train_rows", "16",
        "--dataset_max_test_rows", "4", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--max_steps", "3", "--save_steps", "2", "--learning_rate", "1e-2", "--report_to", "none",
        "--disable_tqdm", "true",
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "held-out loss:" in proc.stdout
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["recipe"] == "seq2seq" and summary["n_train"] == 16 and summary["n_test"] == 4
    before, after = summary["heldout"]["before"]["eval_loss"], summary["heldout"]["after"]["eval_loss"]
    assert after < before  # three steps at a high rate move a random model's loss
    assert summary["train_metrics"]["train_loss"] > 0
    # LoRA merged: a plain T5 folder with weights that differ from the start
    assert not (out / "adapter_config.json").exists()
    from safetensors.torch import load_file

    start = load_file(tiny_t5_dir / "model.safetensors")
    trained = load_file(out / "model.safetensors")
    assert any(not (start[k] == trained[k]).all() for k in start if "SelfAttention.q" in k)

    from eval.codesum import main as evaluate

    result = evaluate(
        [
            "--model",
            str(out),
            "--n_examples",
            "3",
            "--max_new_tokens",
            "4",
            "--output_dir",
            str(tmp_path / "ev"),
        ]
    )
    assert result["encoder_decoder"] is True and result["n_tasks"] == 3
    assert 0.0 <= result["rouge_l"] <= 1.0 and 0.0 <= result["bleu"] <= 100.0


def test_a_decoder_only_model_is_sent_to_the_sft_recipe(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = _run([
        "recipes/seq2seq/run.py", "--config", "recipes/seq2seq/codet5_lora.yaml",
        "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "x"), "--report_to", "none",
    ])  # fmt: skip
    assert proc.returncode != 0
    assert "decoder-only" in proc.stderr and "recipes/sft/codesum.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_lora_needs_the_seq2seq_task_type(tiny_t5_dir: Path, tmp_path: Path) -> None:
    proc = _run([
        "recipes/seq2seq/run.py", "--config", "recipes/seq2seq/codet5_lora.yaml", "--lora_task_type", "CAUSAL_LM",
        "--model_name_or_path", str(tiny_t5_dir), "--output_dir", str(tmp_path / "x"), "--report_to", "none",
    ])  # fmt: skip
    assert proc.returncode != 0 and "lora_task_type: SEQ_2_SEQ_LM" in proc.stderr


# ----------------------------------------------------------------------------------------------------------
# eval.codesum: decoder-only generation, the paired comparison, hostile files
# ----------------------------------------------------------------------------------------------------------


def _write_run(folder: Path, completions: list[str], references: list[str], model: str) -> None:
    from eval.codesum import corpus_bleu, sentence_bleu
    from rewards.code_summary import rouge_l, summary_score

    folder.mkdir(parents=True)
    samples = [
        {
            "task_index": i,
            "task": {"name": f"m.f{i}", "code": f"def f{i}():\n    return {i}\n", "reference": ref},
            "completion": text,
            "bleu": sentence_bleu(text, ref),
            "rouge_l": rouge_l(ref, text),
            "reward": summary_score(text, ref),
            "words": len(text.split()),
        }
        for i, (text, ref) in enumerate(zip(completions, references, strict=True))
    ]
    (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    summary = {
        "model": model,
        "n_tasks": len(samples),
        "bleu": corpus_bleu(completions, references),
        "sentence_bleu": sum(s["bleu"] for s in samples) / len(samples),
        "rouge_l": sum(s["rouge_l"] for s in samples) / len(samples),
        "mean_reward": sum(s["reward"] for s in samples) / len(samples),
        "mean_words": sum(s["words"] for s in samples) / len(samples),
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def test_compare_pairs_the_same_functions_and_shows_them_side_by_side(tmp_path: Path) -> None:
    from eval.codesum import main

    refs = ["Return the sum of two numbers.", "Open the file for reading."]
    _write_run(tmp_path / "before", ["Sum", "Open the file for reading."], refs, "base")
    _write_run(tmp_path / "after", ["Return the sum.", "Open the file for reading."], refs, "sft | <b>")
    result = main(
        ["compare", str(tmp_path / "before"), str(tmp_path / "after"), "--output_dir", str(tmp_path)]
    )
    # ROUGE-L per function: before 2/7 and 1, after 2/3 and 1 -> difference (2/3 - 2/7) / 2
    assert result["rouge_l"]["difference"] == pytest.approx((2 / 3 - 2 / 7) / 2)
    assert result["rouge_l"]["before"] == pytest.approx((2 / 7 + 1) / 2)
    low, high = result["rouge_l"]["ci95"]
    assert 0.0 <= low <= high <= 2 / 3 - 2 / 7 + 1e-9
    markdown = (tmp_path / "results.md").read_text()
    assert "| reference | Return the sum of two numbers. | |" in markdown
    assert "sft \\| &lt;b>" in markdown  # pipes and tags in a model name cannot break the table
    assert json.loads((tmp_path / "paired.json").read_text())["n_tasks"] == 2


def test_compare_refuses_different_functions_and_malformed_files(tmp_path: Path) -> None:
    from eval.codesum import main

    _write_run(tmp_path / "a", ["x y z"], ["Return the sum of two numbers."], "a")
    _write_run(tmp_path / "b", ["x y z"], ["Open the file."], "b")
    with pytest.raises(SystemExit, match="different functions"):
        main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output_dir", str(tmp_path)])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "samples.jsonl").write_text('{"task_index": 0, "task": "nope"}\n')
    with pytest.raises(SystemExit, match="line 1: not a code summarisation sample"):
        main(["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="no samples here"):
        main(["compare", str(tmp_path / "a"), str(tmp_path / "missing"), "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="--n_examples"):
        main(["--model", "embedded", "--n_examples", "0"])


def test_decoder_only_evaluation_uses_the_chat_prompt(tiny_model_dir: Path, tmp_path: Path) -> None:
    from eval.codesum import main

    result = main(
        [
            "--model",
            str(tiny_model_dir),
            "--n_examples",
            "3",
            "--max_new_tokens",
            "4",
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert result["encoder_decoder"] is False and result["n_tasks"] == 3
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["task_index"] for r in rows] == [0, 1, 2]
    assert all(0.0 <= r["rouge_l"] <= 1.0 and r["reward"] <= r["rouge_l"] + 1e-9 for r in rows)


@pytest.mark.slow  # ~30 s; the fast suite covers GRPO through the Countdown and Re:Fine runs
@pytest.mark.timeout(600)
def test_tiny_grpo_on_code_summaries(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "grpo"
    proc = _run([
        "recipes/grpo/run.py", "--config", "recipes/grpo/codesum.yaml", "--model_name_or_path", str(tiny_model_dir),
        "--output_dir", str(out), "--dataset_max_train_rows", "8", "--per_device_train_batch_size", "4",
        "--num_generations", "2", "--max_completion_length", "8", "--max_steps", "2", "--save_steps", "1",
        "--report_to", "none", "--disable_tqdm", "true",
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["task"] == "codesum" and summary["reward_funcs"] == ["code_summary"]
    rows = [json.loads(line) for line in (out / "reward_curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(0.0 <= r["code_summary_reward"] <= 1.0 for r in rows)


def test_precheck_refuses_the_summary_reward_off_code_prompts() -> None:
    from posttrain.rl_checks import task_reward_problems

    (problem,) = task_reward_problems("codesum", ["countdown"])
    assert "Use code_summary" in problem
    (problem,) = task_reward_problems("gsm8k", ["math", "code_summary"])
    assert "`reference` column" in problem
    assert task_reward_problems("codesum", ["code_summary"]) == []


def test_a_hub_model_offline_is_a_clear_error(tmp_path: Path) -> None:
    proc = _run([
        "recipes/seq2seq/run.py", "--config", "recipes/seq2seq/codet5_lora.yaml",
        "--output_dir", str(tmp_path / "x"), "--report_to", "none",
    ])  # fmt: skip
    assert (
        proc.returncode != 0 and "Salesforce/codet5-base" in proc.stderr and "make sft-codesum" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
