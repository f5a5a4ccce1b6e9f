"""Chat SFT: assistant-only loss on every turn, templates that render like the model's, turn-boundary fitting."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from posttrain.chat_sft import (
    IM_END,
    ChatTemplateError,
    assistant_spans,
    chatml_default_system,
    check_same_rendering,
    fit_conversation,
    fit_to_max_length,
    prepare_chat_sft,
    training_chat_template,
)

REPO = Path(__file__).resolve().parent.parent
SFT = REPO / "recipes/sft/run.py"
SMOL_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

MULTI_TURN = [
    {"role": "system", "content": "You are a terse tutor."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5."},
    {"role": "user", "content": "Reverse the word 'lemon'."},
    {"role": "assistant", "content": "Reversed, 'lemon' is 'nomel'."},
    {"role": "user", "content": "Is 7 even or odd?"},
    {"role": "assistant", "content": "7 is odd."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from posttrain.models import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def fixture_rows():
    from posttrain.chat_data import load_smoltalk

    return load_smoltalk("fixture", "train", max_rows=64)


def _with_template(tokenizer, template: str):
    clone = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    clone.chat_template = template
    return clone


def _chatml(default_system: str | None, *, trim: bool = False) -> str:
    """A ChatML template in the style of SmolLM2's, with a chosen default system prompt."""
    content = "message['content'] | trim" if trim else "message['content']"
    head = ""
    if default_system is not None:
        head = (
            "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
            + default_system.replace("'", "\\'")
            + "<|im_end|>\\n' }}{% endif %}"
        )
    return (
        "{% for message in messages %}"
        + head
        + "{{'<|im_start|>' + message['role'] + '\\n' + "
        + content
        + " + '<|im_end|>' + '\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


# ----------------------------------------------------------------------------------------------------------
# The training template renders exactly like the model's own
# ----------------------------------------------------------------------------------------------------------


def test_embedded_template_gets_verified_markers(tokenizer, fixture_rows):
    from trl.chat_template_utils import has_generation_markers

    own = tokenizer.chat_template
    assert not has_generation_markers(own)  # why we need a training template at all
    assert chatml_default_system(tokenizer) == SMOL_DEFAULT_SYSTEM
    template = training_chat_template(tokenizer)
    assert has_generation_markers(template) and template != own
    # Token for token, with and without a system prompt, single and multi-turn, and at inference.
    for messages in [row["messages"] for row in fixture_rows] + [MULTI_TURN, MULTI_TURN[1:]]:
        for prompt_only in (False, True):
            msgs = messages[:-1] if prompt_only else messages
            kwargs = dict(tokenize=True, return_dict=True, add_generation_prompt=prompt_only)
            assert (
                tokenizer.apply_chat_template(msgs, chat_template=template, **kwargs)["input_ids"]
                == tokenizer.apply_chat_template(msgs, **kwargs)["input_ids"]
            )


def test_qwen25_template_uses_trls_training_variant(tokenizer):
    """Qwen2.5 (base and instruct ship the same template; TRL's copy stands in for it offline)."""
    from trl.chat_template_utils import qwen2_5_chat_template, qwen2_5_training_chat_template

    qwen = _with_template(tokenizer, qwen2_5_chat_template)
    assert (
        chatml_default_system(qwen) == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    )
    assert training_chat_template(qwen) == qwen2_5_training_chat_template
    _, spans = assistant_spans(qwen, MULTI_TURN, qwen2_5_training_chat_template)
    assert len(spans) == 3 and all(IM_END in qwen.decode(span) for span in spans)


@pytest.mark.parametrize(
    "default_system",
    [None, 'Tu es un assistant « utile » qui dit "bonjour" \\ {{ pas un tag }} 🙂\nsur deux lignes.'],
    ids=["no-default-system", "unicode-quotes-braces"],
)
def test_unknown_chatml_template_gets_our_training_template(tokenizer, default_system):
    other = _with_template(tokenizer, _chatml(default_system))
    assert chatml_default_system(other) == default_system
    template = training_chat_template(other)  # raises unless identical on every probe
    check_same_rendering(other, template, [MULTI_TURN, MULTI_TURN[1:3]])
    assert "generation" in template


def test_templates_we_cannot_reproduce_are_refused(tokenizer):
    llama2 = "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %}{{ m['content'] }}{% endif %}{% endfor %}"  # noqa: E501
    with pytest.raises(ChatTemplateError, match="not ChatML"):
        training_chat_template(_with_template(tokenizer, llama2))
    # ChatML that trims content: our template would differ on the probes with surrounding whitespace.
    with pytest.raises(ChatTemplateError, match="renders probe conversation"):
        training_chat_template(_with_template(tokenizer, _chatml("Hi.", trim=True)))
    no_template = _with_template(tokenizer, "x")
    no_template.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        training_chat_template(no_template)


# ----------------------------------------------------------------------------------------------------------
# Masks: the loss on every assistant turn, its <|im_end|> included, and nothing else
# ----------------------------------------------------------------------------------------------------------


def _chat_trainer(tiny_model_dir: Path, rows: list[dict], tmp_path: Path, max_length: int | None = 512):
    from datasets import Dataset, DatasetDict
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(tmp_path / "unused"),
        report_to="none",
        bf16=False,
        use_cpu=True,
        assistant_only_loss=True,
        max_length=max_length,
        eos_token=IM_END,
        shuffle_dataset=False,
    )
    chat = prepare_chat_sft(str(tiny_model_dir), DatasetDict(train=Dataset.from_list(rows)), args)
    own = chat.tokenizer.chat_template
    with chat.trainer_context():
        trainer = SFTTrainer(
            model=str(tiny_model_dir),
            args=args,
            train_dataset=chat.dataset["train"],
            processing_class=chat.tokenizer,
        )
    assert chat.tokenizer.chat_template == own  # the saved model keeps its own template
    return trainer, chat


def _trained_runs(tokenizer, example) -> list[str]:
    """Decoded runs of consecutive labelled tokens."""
    runs, current = [], []
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_loss_on_every_assistant_turn_and_nothing_else(tiny_model_dir: Path, tmp_path: Path):
    single = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello there."}]
    trainer, chat = _chat_trainer(tiny_model_dir, [{"messages": MULTI_TURN}, {"messages": single}], tmp_path)
    tokenizer = chat.tokenizer
    multi, one = trainer.train_dataset[0], trainer.train_dataset[1]

    assistant = [m["content"] + IM_END for m in MULTI_TURN if m["role"] == "assistant"]
    assert _trained_runs(tokenizer, multi) == assistant  # all three turns, each with its end token
    assert _trained_runs(tokenizer, one) == ["Hello there." + IM_END]
    trained = "".join(_trained_runs(tokenizer, multi) + _trained_runs(tokenizer, one))
    for text in ("terse tutor", "What is 2 + 3", "lemon'.", "even or odd", "Hi!", "SmolLM", "<|im_start|>"):
        assert text not in trained
    # The collator keeps the masks and pads with -100.
    batch = trainer.data_collator([multi, one])
    n_labels = sum(label != -100 for label in one["labels"])
    assert int((batch["labels"][1] != -100).sum()) == n_labels


def test_max_length_cuts_at_turn_boundaries(tiny_model_dir: Path, tokenizer, tmp_path: Path):
    template = training_chat_template(tokenizer)

    def n_tokens(messages):
        out = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True)
        return len(out["input_ids"])

    two_turns, one_turn = n_tokens(MULTI_TURN[:5]), n_tokens(MULTI_TURN[:3])
    assert fit_conversation(MULTI_TURN, tokenizer, template, None) == (MULTI_TURN, 0)
    assert fit_conversation(MULTI_TURN, tokenizer, template, two_turns) == (MULTI_TURN[:5], 1)
    assert fit_conversation(MULTI_TURN, tokenizer, template, two_turns - 1) == (MULTI_TURN[:3], 1)
    assert fit_conversation(MULTI_TURN, tokenizer, template, one_turn - 1) == (None, 2)

    # Through TRL: the cut conversation trains two complete turns, the one that cannot fit is gone.
    long_first = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "word " * 400}]
    rows = [{"messages": MULTI_TURN}, {"messages": long_first}]
    trainer, chat = _chat_trainer(tiny_model_dir, rows, tmp_path, max_length=two_turns)
    assert chat.info["fit"]["train"] == {"kept": 0, "cut": 1, "dropped": 1}
    assert len(trainer.train_dataset) == 1
    example = trainer.train_dataset[0]
    assert len(example["input_ids"]) <= two_turns
    assert _trained_runs(chat.tokenizer, example) == [
        "2 + 3 = 5." + IM_END,
        "Reversed, 'lemon' is 'nomel'." + IM_END,
    ]


def test_fit_to_max_length_refuses_when_nothing_fits(tokenizer, fixture_rows):
    template = training_chat_template(tokenizer)
    with pytest.raises(ValueError, match="raise max_length"):
        fit_to_max_length(fixture_rows, tokenizer, template, 8)


# ----------------------------------------------------------------------------------------------------------
# Data dispatch and the recipe
# ----------------------------------------------------------------------------------------------------------


def _script_args(**overrides):
    args = dict(
        dataset_name="fixture",
        dataset_train_split="train",
        dataset_test_split="test",
        dataset_revision=None,
        dataset_max_train_rows=24,
        dataset_max_test_rows=8,
    )
    args.update(overrides)
    return SimpleNamespace(**args)


def test_load_sft_dataset_dispatches_chat_data_and_keeps_countdown():
    from posttrain.chat_data import SMOLTALK_HUB_ID
    from posttrain.chat_sft import data_source, is_chat_dataset
    from posttrain.configs import CountdownArguments
    from posttrain.data import load_sft_dataset

    chat = load_sft_dataset(_script_args(), CountdownArguments())
    assert {k: len(v) for k, v in chat.items()} == {"train": 24, "test": 8}
    assert is_chat_dataset(chat["train"]) and data_source(chat["train"]) == "fixture"
    # The hub name falls back to the same fixture offline (tests run with HF_HUB_OFFLINE=1).
    hub = load_sft_dataset(_script_args(dataset_name=SMOLTALK_HUB_ID), CountdownArguments())
    assert hub["train"]["messages"] == chat["train"]["messages"]

    countdown = load_sft_dataset(_script_args(dataset_name=None), CountdownArguments(countdown_train_size=5))
    assert len(countdown["train"]) == 5 and not is_chat_dataset(countdown["train"])
    with pytest.raises(ValueError, match="smol-smoltalk"):
        load_sft_dataset(_script_args(dataset_name="someone/else"), CountdownArguments())


def test_recipe_trains_two_steps_on_the_fixture(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "sft-chat"
    overrides = {
        "model_name_or_path": str(tiny_model_dir),
        "dataset_name": "fixture",
        "dataset_max_train_rows": 16,
        "dataset_max_test_rows": 8,
        "output_dir": str(out),
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "save_steps": 2,
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": "true",
    }
    cmd = [sys.executable, str(SFT), "--config", "recipes/sft/smoltalk.yaml"]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["recipe"] == "sft" and summary["data_source"] == "fixture" and summary["n_train"] == 16
    assert summary["args"]["training"]["assistant_only_loss"] is True
    before, after = summary["heldout"]["before"], summary["heldout"]["after"]
    assert before["loss"] > 0 and after["loss"] > 0 and before["loss"] != after["loss"]
    assert "held-out loss" in proc.stdout and "train loss" in proc.stdout
    # The saved tokenizer has the model's own template (no training markers) and stops at <|im_end|>.
    assert (out / "chat_template.jinja").read_text() == (tiny_model_dir / "chat_template.jinja").read_text()
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] in (2, [2])


def test_chat_data_source_is_resolved_once_and_a_full_run_never_falls_back(monkeypatch):
    from posttrain import chat_data
    from posttrain.chat_sft import data_source, load_chat_sft_dataset

    probes = []
    monkeypatch.setattr(chat_data, "hub_reachable", lambda timeout_s=3.0: probes.append(1) or False)
    hub = _script_args(dataset_name=chat_data.SMOLTALK_HUB_ID)
    data = load_chat_sft_dataset(hub)  # row limits set: the logged fallback, for both splits at once
    assert len(probes) == 1
    assert {split: data_source(ds) for split, ds in data.items()} == {"train": "fixture", "test": "fixture"}
    with pytest.raises(chat_data.HubUnreachableError, match="--dataset_name fixture"):
        load_chat_sft_dataset(
            _script_args(dataset_name=chat_data.SMOLTALK_HUB_ID, dataset_max_train_rows=None)
        )

    # The hub answers the first probe and not a later one: both splits still come from the hub.
    from datasets import Dataset

    answers = iter([True, False, False])
    monkeypatch.setattr(chat_data, "hub_reachable", lambda timeout_s=3.0: next(answers))
    loaded = []

    def fake_hub(hub_id, split, revision, max_rows):
        loaded.append(split)
        rows = chat_data.smoltalk_fixture_rows(split)[:max_rows]
        return Dataset.from_list([dict(r, source="smol-magpie-ultra") for r in rows])

    monkeypatch.setattr(chat_data, "_load_hub", fake_hub)
    data = load_chat_sft_dataset(hub)
    assert loaded == ["train", "test"]
    assert {split: data_source(ds) for split, ds in data.items()} == {
        "train": chat_data.SMOLTALK_HUB_ID,
        "test": chat_data.SMOLTALK_HUB_ID,
    }


def test_chat_sft_tokenizer_gets_the_model_revision(tiny_model_dir: Path, monkeypatch):
    from datasets import Dataset, DatasetDict

    import posttrain.chat_sft

    revisions = []
    original = posttrain.chat_sft.load_tokenizer

    def recording(name, revision=None, **kwargs):
        revisions.append(revision)
        return original(name, **kwargs)

    monkeypatch.setattr(posttrain.chat_sft, "load_tokenizer", recording)
    args = SimpleNamespace(
        assistant_only_loss=True,
        chat_template_path=None,
        max_length=None,
        truncation_mode="keep_start",
        dataset_num_proc=None,
        model_init_kwargs={"revision": "abc123"},  # what prepare_model_args sets from model_revision
        main_process_first=lambda desc=None: contextlib.nullcontext(),
    )
    data = DatasetDict(train=Dataset.from_list([{"messages": MULTI_TURN}]))
    prepare_chat_sft(str(tiny_model_dir), data, args)
    prepare_chat_sft(str(tiny_model_dir), data, args, revision="def456")
    assert revisions == ["abc123", "def456"]
