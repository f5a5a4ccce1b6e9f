"""Preference data: UltraFeedback conversion, what TRL's DPO collator gets, and the on-policy pair builder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.preferences import (
    PROVENANCE_FILE,
    load_pairs_folder,
    main,
    pairs_from_samples,
    save_pairs,
    select_pair,
    split_pairs,
    ultrafeedback_to_preference,
)

REPO = Path(__file__).resolve().parent.parent


def _uf(n: int = 4):
    from posttrain.chat_data import load_ultrafeedback

    return load_ultrafeedback("fixture", "train_prefs", max_rows=n)


def test_ultrafeedback_becomes_explicit_prompt_pairs():
    raw = _uf()
    pairs = ultrafeedback_to_preference(raw, split="train_prefs")
    assert pairs.column_names == ["prompt", "chosen", "rejected"]
    for row, src in zip(pairs, raw, strict=True):
        assert row["prompt"] == [{"role": "user", "content": src["prompt"]}]
        assert row["chosen"] == [src["chosen"][-1]] and row["chosen"][0]["role"] == "assistant"
        assert row["rejected"] == [src["rejected"][-1]]
        assert row["chosen"] != row["rejected"]


def test_ultrafeedback_pairs_with_different_prompts_are_rejected():
    from datasets import Dataset

    from posttrain.chat_data import DatasetSchemaError

    row = _uf(1)[0]
    row["rejected"] = [{"role": "user", "content": "another question"}, row["rejected"][-1]]
    with pytest.raises(DatasetSchemaError, match="row 0.*same turns"):
        ultrafeedback_to_preference(Dataset.from_list([row]), split="train_prefs")


def test_dpo_collator_masks_the_prompt(tiny_model_dir, tmp_path):
    from trl import DPOConfig, DPOTrainer

    from posttrain.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    raw = _uf(2)
    pairs = ultrafeedback_to_preference(raw, split="train_prefs")
    args = DPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        max_length=512,
        activation_checkpointing=False,
    )
    trainer = DPOTrainer(
        model=str(tiny_model_dir), args=args, train_dataset=pairs, processing_class=tokenizer
    )
    examples = [trainer.train_dataset[i] for i in range(2)]
    for example, src in zip(examples, raw, strict=True):
        prompt = tokenizer.decode(example["prompt_ids"])
        assert src["prompt"] in prompt and prompt.endswith("<|im_start|>assistant\n")
        assert tokenizer.decode(example["chosen_ids"]).startswith(src["chosen"][-1]["content"] + "<|im_end|>")
        assert tokenizer.decode(example["rejected_ids"]).startswith(
            src["rejected"][-1]["content"] + "<|im_end|>"
        )

    batch = trainer.data_collator(examples)
    assert batch["input_ids"].shape[0] == 4  # [chosen_0, chosen_1, rejected_0, rejected_1]
    for row, (example, key) in enumerate(
        [
            (examples[0], "chosen_ids"),
            (examples[1], "chosen_ids"),
            (examples[0], "rejected_ids"),
            (examples[1], "rejected_ids"),
        ]
    ):
        n_prompt, n_completion = len(example["prompt_ids"]), len(example[key])
        mask = batch["completion_mask"][row].tolist()
        assert mask[:n_prompt] == [0] * n_prompt  # the prompt is never scored
        assert mask[n_prompt : n_prompt + n_completion] == [1] * n_completion
        assert sum(mask) == n_completion  # padding is not scored either
        ids = batch["input_ids"][row].tolist()
        assert ids[: n_prompt + n_completion] == example["prompt_ids"] + example[key]


def test_select_pair_best_vs_worst_and_ties():
    assert select_pair([0.1, 1.0, 0.0, 1.0, 0.0]) == (1, 2)  # first best, first worst
    assert select_pair([0.1, 0.1, 0.1, 0.1]) is None
    assert select_pair([0.0, 0.1]) == (1, 0)
    with pytest.raises(ValueError, match="at least 2"):
        select_pair([1.0])


def test_pairs_from_samples_keeps_format_and_drops_ties():
    prompts = [[{"role": "user", "content": "p0"}], [{"role": "user", "content": "p1"}]]
    rows, ties = pairs_from_samples(prompts, [["a", "b"], ["c", "d"]], [[0.0, 1.0], [0.1, 0.1]])
    assert ties == 1 and len(rows) == 1
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "b"}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "a"}]
    text_rows, _ = pairs_from_samples(["raw prompt"], [["x", "y"]], [[1.0, 0.0]])
    assert text_rows[0]["chosen"] == "x" and text_rows[0]["rejected"] == "y"


def test_split_pairs_is_seeded_and_disjoint():
    rows = [{"i": i} for i in range(10)]
    train, test = split_pairs(rows, 0.2, seed=3)
    assert len(test) == 2 and len(train) == 8
    assert {r["i"] for r in train} | {r["i"] for r in test} == set(range(10))
    assert split_pairs(rows, 0.2, seed=3) == (train, test)
    with pytest.raises(ValueError, match="cannot be split"):
        split_pairs([{"i": 0}], 0.5, seed=0)


class FakeSampler:
    """Scripted completions: prompts 0, 3, 6 all fail to answer (ties); the others mix right and wrong."""

    def __init__(self, tasks):
        self.tasks, self.calls = tasks, []

    def __call__(self, model, prompts, params, **kwargs):
        self.calls.append((model, len(prompts), params))
        out = []
        for i, _ in enumerate(prompts):
            right = f"<answer>{self.tasks[i].solution}</answer>"
            wrong = "<answer>1 + 1</answer>"
            if i % 3 == 0:
                texts = ["no idea"] * params.n
            elif i % 3 == 1:
                texts = [wrong, right] + ["no idea"] * (params.n - 2)
            else:
                texts = [right, right] + [wrong] * (params.n - 2)
            out.append(texts)
        return out


def _tasks(n: int):
    from posttrain.data import train_tasks

    return train_tasks(n, seed=1234, num_numbers=(3,), max_number=30)


def _argv(model, out, *extra):
    return [
        "--model", str(model), "--output_dir", str(out), "--n_prompts", "9", "--k", "4", "--template", "compact",
        "--test_share", "0.2", *extra,
    ]  # fmt: skip


def test_pair_builder_pairs_best_with_worst_and_records_provenance(tiny_model_dir, tmp_path):
    from datasets import load_from_disk

    from posttrain.data import is_heldout

    sampler = FakeSampler(_tasks(9))
    out = tmp_path / "pairs"
    provenance = main(_argv(tiny_model_dir, out), sampler=sampler)
    assert len(sampler.calls) == 1
    params = sampler.calls[0][2]
    assert params.n == 4 and params.temperature > 0
    counts = provenance["counts"]
    assert counts["prompts"] == 9 and counts["dropped_ties"] == 3 and counts["pairs"] == 6
    assert counts["train_pairs"] == 5 and counts["test_pairs"] == 1
    assert counts["samples"] == 36 and counts["pairs_correct_vs_wrong"] == 6

    saved = json.loads((out / PROVENANCE_FILE).read_text())
    assert saved == provenance
    request = saved["request"]
    assert request["k"] == 4 and request["sampling"]["temperature"] == 1.0 and request["seed"] == 0
    assert request["model"] == str(tiny_model_dir) and request["model_fingerprint"]

    data = load_from_disk(str(out))
    assert sorted(data) == ["test", "train"]
    rows = list(data["train"]) + list(data["test"])
    assert len(rows) == 6
    for row in rows:
        assert not is_heldout(row["target"], row["nums"])  # training-side puzzles only
        assert (
            row["prompt"][-1]["role"] == "user" and row["prompt"][0]["role"] == "system"
        )  # compact template
        assert row["chosen"][0]["role"] == "assistant" and row["chosen"][0]["content"].startswith("<answer>")
        assert row["chosen_reward"] == 1.0 and row["rejected_reward"] < 1.0
    # prompt 1 pairs the correct sample 1 with the first no-answer sample (reward 0), not the wrong answer (0.1)
    by_target = {(r["target"], tuple(r["nums"])): r for r in rows}
    task1 = sampler.tasks[1]
    assert by_target[(task1.target, task1.nums)]["rejected"][0]["content"] == "no idea"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs"]  # no temporary folders left behind


def test_pair_builder_reuses_a_matching_folder(tiny_model_dir, tmp_path):
    out = tmp_path / "pairs"
    first = main(_argv(tiny_model_dir, out), sampler=FakeSampler(_tasks(9)))

    def must_not_sample(*args, **kwargs):
        raise AssertionError("a matching pairs folder must be reused")

    assert main(_argv(tiny_model_dir, out), sampler=must_not_sample) == first
    again = FakeSampler(_tasks(9))
    changed = main(_argv(tiny_model_dir, out, "--k", "5"), sampler=again)
    assert len(again.calls) == 1 and changed["request"]["k"] == 5
    forced = FakeSampler(_tasks(9))
    main(_argv(tiny_model_dir, out, "--k", "5", "--force"), sampler=forced)
    assert len(forced.calls) == 1
    assert json.loads((out / PROVENANCE_FILE).read_text())["request"]["k"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs"]


def test_pair_builder_errors_name_the_fix(tiny_model_dir, tmp_path):
    with pytest.raises(SystemExit, match="--k must be >= 2"):
        main(_argv(tiny_model_dir, tmp_path / "a", "--k", "1"), sampler=FakeSampler(_tasks(9)))
    with pytest.raises(SystemExit, match="--temperature must be > 0"):
        main(_argv(tiny_model_dir, tmp_path / "b", "--temperature", "0"), sampler=FakeSampler(_tasks(9)))

    def all_ties(model, prompts, params, **kwargs):
        return [["<answer>1 + 1</answer>"] * params.n for _ in prompts]

    with pytest.raises(SystemExit, match="9 ties"):
        main(_argv(tiny_model_dir, tmp_path / "c"), sampler=all_ties)
    assert not (tmp_path / "c").exists()


def test_save_pairs_replaces_an_old_folder_atomically(tmp_path):
    out = tmp_path / "pairs"
    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    save_pairs({"train": [row] * 3}, {"request": {"v": 1}}, out)
    save_pairs({"train": [row] * 2, "test": [row]}, {"request": {"v": 2}}, out)
    loaded = load_pairs_folder(out, "train", "test")
    assert len(loaded["train"]) == 2 and len(loaded["test"]) == 1
    assert json.loads((out / PROVENANCE_FILE).read_text())["request"] == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs"]

    bad = {"prompt": "p", "chosen": "a", "rejected": "b", "x": object()}  # not serialisable
    with pytest.raises(Exception):  # noqa: B017 - any failure must leave the old folder intact
        save_pairs({"train": [bad]}, {"request": {"v": 3}}, out)
    assert json.loads((out / PROVENANCE_FILE).read_text())["request"] == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs"]


def test_pairs_folder_without_preference_columns_is_rejected(tmp_path):
    save_pairs({"train": [{"prompt": "p", "answer": "a"}]}, {}, tmp_path / "bad")
    with pytest.raises(ValueError, match=r"lacks the preference column\(s\) \['chosen', 'rejected'\]"):
        load_pairs_folder(tmp_path / "bad", "train", "test")


def test_dpo_trains_on_a_pairs_folder(tiny_model_dir, tmp_path):
    import importlib.util

    from posttrain.runtime import parse_recipe_args

    pairs = tmp_path / "pairs"
    main(_argv(tiny_model_dir, pairs), sampler=FakeSampler(_tasks(9)))
    spec = importlib.util.spec_from_file_location("recipe_dpo_pairs", REPO / "recipes/dpo/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "dpo"
    argv = [
        "--config", str(REPO / "recipes/dpo/countdown.yaml"), "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", str(pairs), "--output_dir", str(out), "--max_steps", "1", "--report_to", "none",
        "--save_strategy", "no", "--per_device_train_batch_size", "4",
    ]  # fmt: skip
    module.main(*parse_recipe_args(module.make_parser(), argv))
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["n_train"] == 5 and summary["n_test"] == 1
    assert summary["provenance"]["counts"]["pairs"] == 6
    assert summary["args"]["countdown"]["prompt_template"] == "compact"  # eval.countdown reads this

    from eval.countdown import trained_template

    assert trained_template(str(out)) == "compact"
