"""Preference data: UltraFeedback conversion, what TRL's DPO collator gets, and the on-policy pair builder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.preference_data import PROVENANCE_FILE, load_pairs_folder, ultrafeedback_to_preference
from posttrain.preferences import (
    countdown_pairs,
    main,
    pairs_from_samples,
    save_pairs,
    select_pair,
    split_pairs,
    truncated_flags,
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
    # A truncated sample is never chosen, but may be rejected.
    assert select_pair([1.0, 0.1, 1.0, 0.0], [False, True, True, True]) == (2, 3)
    assert select_pair([0.1, 1.0, 0.0], [True, False, True]) == (0, 2)
    assert select_pair([1.0, 0.1, 0.1], [False, True, True]) is None  # only the cut-off sample was better
    assert select_pair([0.0, 1.0], [True, False]) is None


def test_pairs_from_samples_keeps_format_and_drops_ties():
    prompts = [[{"role": "user", "content": "p0"}], [{"role": "user", "content": "p1"}]]
    rows, drops = pairs_from_samples(prompts, [["a", "b"], ["c", "d"]], [[0.0, 1.0], [0.1, 0.1]])
    assert drops == {"dropped_ties": 1, "pairs_dropped_truncated": 0} and len(rows) == 1
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "b"}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "a"}]
    text_rows, _ = pairs_from_samples(["raw prompt"], [["x", "y"]], [[1.0, 0.0]])
    assert text_rows[0]["chosen"] == "x" and text_rows[0]["rejected"] == "y"
    cut_rows, drops = pairs_from_samples(
        ["p0", "p1"],
        [["x", "y"], ["u", "v"]],
        [[1.0, 0.0], [1.0, 0.0]],
        truncated=[[True, False], [False, True]],
    )
    assert drops == {"dropped_ties": 0, "pairs_dropped_truncated": 1}
    assert len(cut_rows) == 1 and cut_rows[0]["chosen"] == "u" and cut_rows[0]["rejected_truncated"] is True


def test_truncated_flags_use_the_token_limit():
    count = len  # one token per character
    assert truncated_flags(["abcdefgh", "abcdefg", "abcdef", ""], 8, count) == [True, True, False, False]


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
        self.calls.append((model, len(prompts), params, kwargs))
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
    assert request["backend"] == "hf" and request["versions"]["transformers"]  # auto -> hf without vLLM/CUDA
    assert sampler.calls[0][3]["backend"] == "hf"  # the sampler gets the resolved backend
    assert counts["truncated_samples"] == 0 and counts["pairs_dropped_truncated"] == 0

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


def test_pair_builder_never_reuses_another_backends_pairs(tiny_model_dir, tmp_path):
    out = tmp_path / "pairs"
    vllm = main(_argv(tiny_model_dir, out, "--backend", "vllm"), sampler=FakeSampler(_tasks(9)))
    assert vllm["request"]["backend"] == "vllm" and "vllm" in vllm["request"]["versions"]
    hf = FakeSampler(_tasks(9))
    provenance = main(_argv(tiny_model_dir, out, "--backend", "hf"), sampler=hf)
    assert len(hf.calls) == 1, "a vLLM-sampled folder must not be reused for --backend hf"
    assert provenance["request"]["backend"] == "hf" and hf.calls[0][3]["backend"] == "hf"


class TruncatingSampler(FakeSampler):
    """Prompts 0, 3, 6: the only right sample runs on past max_new_tokens; 1, 4, 7: a cut-off right sample comes
    before a complete one; 2, 5, 8: all samples give no answer (ties)."""

    def __call__(self, model, prompts, params, **kwargs):
        self.calls.append((model, len(prompts), params, kwargs))
        out = []
        for i, _ in enumerate(prompts):
            right = f"<answer>{self.tasks[i].solution}</answer>"
            cut = right + " Let me double-check that once more, step by step, carefully" * 4
            wrong = "<answer>1 + 1</answer>"
            if i % 3 == 0:
                out.append([cut, wrong, wrong, wrong])
            elif i % 3 == 1:
                out.append([cut, right, "no idea", wrong])
            else:
                out.append(["no idea"] * params.n)
        return out


def test_pair_builder_never_chooses_a_truncated_sample(tiny_model_dir, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "pairs"
    sampler = TruncatingSampler(_tasks(9))
    provenance = main(_argv(tiny_model_dir, out, "--max_new_tokens", "32"), sampler=sampler)
    counts = provenance["counts"]
    assert counts["truncated_samples"] == 6  # the long right answers only
    assert counts["pairs_dropped_truncated"] == 3 and counts["dropped_ties"] == 3 and counts["pairs"] == 3
    data = load_from_disk(str(out))
    rows = list(data["train"]) + list(data["test"])
    assert len(rows) == 3
    for row in rows:
        chosen = row["chosen"][0]["content"]
        assert "double-check" not in chosen and chosen.startswith("<answer>") and row["chosen_reward"] == 1.0
        assert row["rejected"][0]["content"] == "no idea" and row["rejected_truncated"] is False


def test_pair_builder_samples_with_hf_generate(tiny_model_dir):
    """The real sampler (HF generate, temperature > 0, k = 2) on the tiny model: 8 samples for 4 prompts, and the
    random model's endless samples are all found to be cut off at max_new_tokens."""
    from posttrain.sampling import SamplingParams

    tasks = _tasks(4)
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=0)
    seen = []

    def real_generate(model, prompts, params, **kwargs):
        from posttrain.sampling import generate

        samples = generate(model, prompts, params, progress=False, **kwargs)
        seen.append((kwargs, samples))
        return samples

    rows, counts = countdown_pairs(
        str(tiny_model_dir), tasks, template="compact", params=params, sampler=real_generate, backend="hf"
    )
    ((kwargs, samples),) = seen
    assert kwargs["backend"] == "hf"
    assert [len(s) for s in samples] == [2, 2, 2, 2]
    assert any(a != b for a, b in samples)  # sampled, not greedy
    assert counts["prompts"] == 4 and counts["samples"] == 8
    assert counts["truncated_samples"] == 8  # a random model never stops within 8 tokens
    assert counts["dropped_ties"] == 4 and rows == []  # nothing answers in the <answer> format


def test_pair_builder_names_the_make_target_for_a_missing_model(tmp_path, monkeypatch):
    import posttrain.preferences

    def no_tasks(*args, **kwargs):
        raise AssertionError("tasks must not be built for a missing model")

    def no_sampling(*args, **kwargs):
        raise AssertionError("a missing model must not be sampled")

    monkeypatch.setattr(posttrain.preferences, "train_tasks", no_tasks)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="runs/sft-smoltalk/model does not exist.*`make sft-smoltalk`"):
        main(_argv("runs/sft-smoltalk/model", tmp_path / "a"), sampler=no_sampling)
    missing = tmp_path / "runs" / "sft-countdown" / "model"
    with pytest.raises(SystemExit, match="`make sft-countdown`"):
        main(_argv(missing, tmp_path / "b"), sampler=no_sampling)
    (tmp_path / "mine").mkdir()
    with pytest.raises(SystemExit, match="mine/model does not exist: train it first"):
        main(_argv("mine/model", tmp_path / "c"), sampler=no_sampling)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


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

    from posttrain.models import trained_template

    assert trained_template(str(out)) == "compact"


def _pref_args(**overrides):
    from types import SimpleNamespace

    from posttrain.chat_data import ULTRAFEEDBACK_HUB_ID

    args = dict(
        dataset_name=ULTRAFEEDBACK_HUB_ID,
        dataset_train_split="train_prefs",
        dataset_test_split="test_prefs",
        dataset_revision=None,
        dataset_max_train_rows=8,
        dataset_max_test_rows=4,
    )
    args.update(overrides)
    return SimpleNamespace(**args)


def test_ultrafeedback_source_is_resolved_once_and_a_full_run_never_falls_back(monkeypatch):
    from datasets import Dataset

    from posttrain import chat_data
    from posttrain.preference_data import load_preference_dataset

    monkeypatch.setattr(chat_data, "hub_reachable", lambda timeout_s=3.0: False)
    data, info = load_preference_dataset(_pref_args())  # a row limit: the logged fallback
    assert info["data_source"] == "fixture" and len(data["train"]) == 8 and len(data["test"]) == 4
    with pytest.raises(chat_data.HubUnreachableError, match="--dataset_name fixture"):
        load_preference_dataset(_pref_args(dataset_max_train_rows=None))

    answers = iter([True, False, False])  # reachable at the start, not later: both splits from the hub
    monkeypatch.setattr(chat_data, "hub_reachable", lambda timeout_s=3.0: next(answers))
    loaded = []

    def fake_hub(hub_id, split, revision, max_rows):
        loaded.append((split, revision))
        return Dataset.from_list(chat_data.ultrafeedback_fixture_rows(split)[:max_rows])

    monkeypatch.setattr(chat_data, "_load_hub", fake_hub)
    data, info = load_preference_dataset(_pref_args())
    revision = chat_data.ULTRAFEEDBACK_REVISION
    assert loaded == [("train_prefs", revision), ("test_prefs", revision)]
    assert info == {"data_source": chat_data.ULTRAFEEDBACK_HUB_ID, "dataset_revision": revision}
