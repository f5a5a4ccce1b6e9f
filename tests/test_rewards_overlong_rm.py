"""RewardArguments / build_reward_funcs, the DAPO overlong penalty and the learned reward model as a reward."""

from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path

import pytest

from rewards.config import RewardArguments
from rewards.overlong import CHARS_PER_TOKEN, OverlongReward
from rewards.registry import (
    REWARDS,
    build_reward_funcs,
    check_reward_weights,
    get_reward_funcs,
    needs_settings,
    reward_names,
)

# ---------------------------------------------------------------- config and registry


def test_all_rewards_registered() -> None:
    assert reward_names() == sorted(
        [
            "countdown",
            "countdown_strict",
            "format",
            "answer_format",
            "tag_count",
            "math",
            "code_summary",
            "overlong",
            "reward_model",
            "llm_judge",
            "length_window",
            "patterns",
        ]
    )
    assert {n for n in REWARDS if needs_settings(n)} == {
        "overlong",
        "reward_model",
        "llm_judge",
        "length_window",
        "patterns",
    }


def test_reward_arguments_do_not_collide_with_trl_fields() -> None:
    from trl import GRPOConfig, ModelConfig, RLOOConfig

    from posttrain.configs import CountdownArguments, ScriptArguments

    ours = {f.name for f in dataclasses.fields(RewardArguments)}
    for other in (GRPOConfig, RLOOConfig, ModelConfig, ScriptArguments, CountdownArguments):
        clash = ours & {f.name for f in dataclasses.fields(other)}
        assert not clash, f"{other.__name__} already has {clash}"


@pytest.mark.parametrize("config_name", ["GRPOConfig", "RLOOConfig"])
def test_parsed_by_trl_parser(tmp_path: Path, config_name: str) -> None:
    import trl
    from trl import ModelConfig, TrlParser

    from posttrain.runtime import parse_recipe_args

    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text(
        "model_name_or_path: embedded\noutput_dir: " + str(tmp_path / "out") + "\n"
        "reward_funcs: [countdown, format, overlong]\nreward_weights: [1.0, 0.5, 1.0]\n"
        "overlong_buffer_length: 16\njudge_api_key_env: MY_JUDGE_KEY\n"
    )
    parser = TrlParser((RewardArguments, getattr(trl, config_name), ModelConfig))
    reward_args, training_args, _ = parse_recipe_args(
        parser, ["--config", str(yaml_path), "--max_completion_length", "64"]
    )
    assert reward_args.reward_funcs == ["countdown", "format", "overlong"]
    assert reward_args.judge_api_key_env == "MY_JUDGE_KEY"
    check_reward_weights(reward_args.reward_funcs, training_args.reward_weights)
    funcs = build_reward_funcs(reward_args, max_completion_length=training_args.max_completion_length)
    assert [f.__name__ for f in funcs] == ["countdown_reward", "format_reward", "overlong_reward"]
    assert funcs[2].max_length == 64 and funcs[2].buffer_length == 16

    # the CLI form: --reward_funcs a b, and a bad name names the field
    with pytest.raises(ValueError, match="reward_funcs: unknown reward function 'accuracy'"):
        parse_recipe_args(parser, ["--config", str(yaml_path), "--reward_funcs", "countdown", "accuracy"])


def test_reward_funcs_normalised_and_validated() -> None:
    assert RewardArguments(reward_funcs="countdown, format").reward_funcs == ["countdown", "format"]
    assert RewardArguments(reward_funcs=["countdown,tag_count"]).reward_funcs == ["countdown", "tag_count"]
    with pytest.raises(ValueError, match="reward_funcs is empty"):
        RewardArguments(reward_funcs=[])
    with pytest.raises(ValueError, match="reward_funcs repeats"):
        RewardArguments(reward_funcs=["format", "format"])
    with pytest.raises(ValueError) as info:
        RewardArguments(reward_funcs=["countdown", "nope"])
    for name in reward_names():
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"reward_funcs": ["reward_model"]}, "reward_model_path"),
        ({"reward_funcs": ["llm_judge"]}, "judge_base_url"),
        ({"reward_funcs": ["llm_judge"], "judge_base_url": "http://x/v1"}, "judge_model"),
        (
            {"reward_funcs": ["llm_judge"], "judge_base_url": "127.0.0.1:8000", "judge_model": "m"},
            "judge_base_url",
        ),
        ({"overlong_buffer_length": 0}, "overlong_buffer_length"),
        ({"overlong_buffer_length": 100, "overlong_max_length": 50}, "overlong_buffer_length"),
        ({"overlong_penalty_factor": float("nan")}, "overlong_penalty_factor"),
        ({"reward_model_batch_size": 0}, "reward_model_batch_size"),
        ({"reward_model_truncation_side": "middle"}, "reward_model_truncation_side"),
        ({"reward_model_dtype": "int8"}, "reward_model_dtype"),
        ({"judge_timeout_s": 0}, "judge_timeout_s"),
        ({"judge_max_retries": -1}, "judge_max_retries"),
        ({"judge_concurrency": 0}, "judge_concurrency"),
        ({"judge_neutral_score": 2.0}, "judge_neutral_score"),
        ({"judge_response_format": "xml"}, "judge_response_format"),
        ({"judge_max_failed_calls": -1}, "judge_max_failed_calls"),
        ({"reward_model_clip": 0}, "reward_model_clip"),
        ({"reward_model_clip": float("inf")}, "reward_model_clip"),
    ],
)
def test_validation_names_the_field(kwargs: dict, field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        RewardArguments(**kwargs)


@pytest.mark.parametrize(
    "secret",
    [
        "sk-live-0123456789abcdef",
        "hf_AbCdEf0123456789SECRETxyz",  # no dash: letters, digits and _ only, like a variable name
        "nvapi-AbC123",
        "AbCdEf0123456789SecretXyz",  # no known prefix, but long and mixed-case
        "ABCDEF0123456789SECRETXYZ",  # upper-case, yet long letters+digits without _: not a name
    ],
)
def test_key_in_api_key_env_is_refused_and_not_echoed(secret: str) -> None:
    with pytest.raises(ValueError) as info:
        RewardArguments(judge_api_key_env=secret)
    message = str(info.value)
    assert "judge_api_key_env" in message and "NAME" in message and "looks like an API key" in message
    assert secret not in message and secret not in repr(info.value)


@pytest.mark.parametrize("value", ["judge_key", "JUDGE-KEY", "1JUDGE_KEY", "", "K" * 65, "JUDGE KEY"])
def test_api_key_env_must_be_a_conventional_name(value: str) -> None:
    with pytest.raises(ValueError, match="NAME of an environment variable") as info:
        RewardArguments(judge_api_key_env=value)
    assert not value or value not in str(info.value)


@pytest.mark.parametrize("name", ["JUDGE_API_KEY", "HF_TOKEN", "OPENAI_API_KEY", "_MY_JUDGE_KEY2", "K" * 64])
def test_api_key_env_accepts_variable_names(name: str) -> None:
    assert RewardArguments(judge_api_key_env=name).judge_api_key_env == name


def test_check_reward_weights() -> None:
    check_reward_weights(["countdown", "format"], None)
    check_reward_weights(["countdown", "format"], [1.0, 0.1])
    with pytest.raises(ValueError, match=r"reward_weights has 1 value.*reward_funcs names 2"):
        check_reward_weights(["countdown", "format"], [1.0])
    with pytest.raises(ValueError, match="'format' must be a finite number"):
        check_reward_weights(["countdown", "format"], [1.0, float("inf")])


def test_get_reward_funcs_refuses_configurable_names() -> None:
    with pytest.raises(ValueError, match="build_reward_funcs"):
        get_reward_funcs(["overlong"])
    with pytest.raises(
        ValueError, match=r"'bogus'.*configurable.*length_window, llm_judge, overlong, patterns, reward_model"
    ):
        get_reward_funcs(["bogus"])
    assert needs_settings("overlong") and not needs_settings("countdown")


# ---------------------------------------------------------------- overlong


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, 0.0),
        (80, 0.0),
        (81, -1 / 20),
        (90, -0.5),
        (99, -19 / 20),
        (100, -1.0),
        (101, -1.0),
        (10_000, -1.0),
    ],
)
def test_overlong_penalty_shape(n: int, expected: float) -> None:
    assert OverlongReward(100, 20)(["x"], completion_ids=[[1] * n]) == pytest.approx([expected])
    half = OverlongReward(100, 20, penalty_factor=0.5)
    assert half(["x"], completion_ids=[[1] * n]) == pytest.approx([expected / 2])


def test_overlong_reward_uses_completion_ids() -> None:
    reward = build_reward_funcs(
        RewardArguments(reward_funcs=["overlong"], overlong_buffer_length=4), max_completion_length=10
    )[0]
    # texts are short but the token counts are long: token counts win
    ids = [[1] * 5, [1] * 6, [1] * 8, [1] * 10, [1] * 11]
    assert reward(["a"] * 5, completion_ids=ids, prompts=["p"] * 5) == pytest.approx([0, 0, -0.5, -1, -1])
    # without completion_ids: characters / CHARS_PER_TOKEN (rounded up)
    n_chars = int(8 * CHARS_PER_TOKEN)
    assert reward(["x" * n_chars, [{"role": "assistant", "content": "hi"}]]) == pytest.approx([-0.5, 0.0])
    # a completion_ids list that does not pair up with the completions is ignored, not mis-paired
    assert reward(["x" * n_chars], completion_ids=[[1], [1]]) == pytest.approx([-0.5])
    assert pickle.loads(pickle.dumps(reward))(["a"], completion_ids=[[1] * 9]) == pytest.approx([-0.75])


def test_overlong_max_length_sources() -> None:
    args = RewardArguments(reward_funcs=["overlong"], overlong_buffer_length=8, overlong_max_length=32)
    assert build_reward_funcs(args, max_completion_length=512)[0].max_length == 32
    with pytest.raises(ValueError, match="overlong_max_length"):
        build_reward_funcs(RewardArguments(reward_funcs=["overlong"]))
    with pytest.raises(ValueError, match="overlong_buffer_length=64"):
        build_reward_funcs(RewardArguments(reward_funcs=["overlong"]), max_completion_length=32)
    with pytest.raises(ValueError):
        OverlongReward(max_length=10, buffer_length=0)


# ---------------------------------------------------------------- reward model


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory) -> Path:
    """A 2-layer LlamaForSequenceClassification (num_labels=1) with SmolLM2's tokenizer, like RewardTrainer's."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from posttrain.models import load_tokenizer

    path = tmp_path_factory.mktemp("tiny-rm")
    tokenizer = load_tokenizer("embedded")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)  # visible spread between conversations
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _reference_scores(path: Path, texts: list[str], max_length: int | None = None) -> list[float]:
    """One conversation per forward pass, no padding at all: the scores batching must reproduce."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_length is not None:
            ids = ids[-max_length:]
        with torch.no_grad():
            out.append(float(model(input_ids=torch.tensor([ids])).logits[0, 0]))
    return out


PROMPTS = [
    [{"role": "user", "content": "Write a haiku about autumn."}],
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name a prime number."}],
]
COMPLETIONS = [
    [
        {
            "role": "assistant",
            "content": "Leaves drift slowly down\ncrimson on the quiet path\nthe year exhales cold",
        }
    ],
    [{"role": "assistant", "content": "4"}],
    [{"role": "assistant", "content": "The answer is five, because I said so, and that is that."}],
    [{"role": "assistant", "content": "7"}],
]


def _rm_args(path: Path, **kwargs) -> RewardArguments:
    return RewardArguments(
        reward_funcs=["reward_model"], reward_model_path=str(path), reward_model_dtype="float32", **kwargs
    )


def test_reward_model_scores_match_the_model(tiny_rm_dir: Path) -> None:
    from transformers import AutoTokenizer

    reward = build_reward_funcs(_rm_args(tiny_rm_dir, reward_model_batch_size=3))[0]
    assert reward.__name__ == "reward_model_reward"
    scores = reward(prompts=PROMPTS, completions=COMPLETIONS, completion_ids=[[1]] * 4, trainer_state=None)
    assert all(isinstance(s, float) for s in scores) and len(scores) == 4
    assert len({round(s, 4) for s in scores}) == 4  # different conversations, different scores

    tokenizer = AutoTokenizer.from_pretrained(tiny_rm_dir)
    texts = [
        tokenizer.apply_chat_template(p + c, tokenize=False)
        for p, c in zip(PROMPTS, COMPLETIONS, strict=True)
    ]
    assert scores == pytest.approx(_reference_scores(tiny_rm_dir, texts), abs=1e-4)

    # plain-string prompt and completion: scored as a user turn and an assistant turn
    plain = reward(prompts=["What is 2 + 2?"], completions=["4"])
    assert plain == pytest.approx([scores[1]], abs=1e-5)


def test_reward_model_batching_invariance(tiny_rm_dir: Path) -> None:
    results = [
        build_reward_funcs(_rm_args(tiny_rm_dir, reward_model_batch_size=bs))[0](
            prompts=PROMPTS * 2, completions=COMPLETIONS * 2
        )
        for bs in (1, 3, 8)
    ]
    assert results[0] == pytest.approx(results[1], abs=1e-4)
    assert results[0] == pytest.approx(results[2], abs=1e-4)
    assert results[0][:4] == pytest.approx(results[0][4:], abs=1e-4)


def test_reward_model_truncation(tiny_rm_dir: Path) -> None:
    from transformers import AutoTokenizer

    long_completion = [{"role": "assistant", "content": "word " * 400}]
    reward = build_reward_funcs(_rm_args(tiny_rm_dir, reward_model_max_length=64))[0]
    ids = reward.encode([PROMPTS[0], PROMPTS[1]], [long_completion, COMPLETIONS[1]])
    tokenizer = AutoTokenizer.from_pretrained(tiny_rm_dir)
    full = tokenizer(
        tokenizer.apply_chat_template(PROMPTS[0] + long_completion, tokenize=False), add_special_tokens=False
    )["input_ids"]
    assert len(full) > 64
    assert ids[0] == full[-64:]  # left truncation keeps the end, where the score is read
    assert len(ids[1]) < 64  # short conversations untouched

    text = tokenizer.apply_chat_template(PROMPTS[0] + long_completion, tokenize=False)
    scores = reward(prompts=[PROMPTS[0], PROMPTS[1]], completions=[long_completion, COMPLETIONS[1]])
    assert scores[0] == pytest.approx(_reference_scores(tiny_rm_dir, [text], max_length=64)[0], abs=1e-4)

    right = build_reward_funcs(
        _rm_args(tiny_rm_dir, reward_model_max_length=64, reward_model_truncation_side="right")
    )
    assert right[0].encode([PROMPTS[0]], [long_completion])[0] == full[:64]


def test_reward_model_loads_once(tiny_rm_dir: Path) -> None:
    from rewards.reward_model import load_reward_model

    first = load_reward_model(str(tiny_rm_dir), dtype="float32", device="cpu")
    second = load_reward_model(str(tiny_rm_dir) + "/", dtype="float32", device="cpu")
    assert first[0] is second[0]
    assert not any(p.requires_grad for p in first[0].parameters())
    assert build_reward_funcs(_rm_args(tiny_rm_dir))[0](prompts=[], completions=[]) == []


def _rm_with_head(source: Path, path: Path, value: float) -> Path:
    """A copy of the tiny reward model whose score head reads only hidden unit 0, with weight `value`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(source, dtype=torch.float32)
    with torch.no_grad():
        model.score.weight.zero_()
        model.score.weight[0, 0] = value
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return path


@pytest.mark.parametrize("head", ["nan", "inf"])
def test_reward_model_nonfinite_scores_are_sanitised(
    tiny_rm_dir: Path, tmp_path: Path, head: str, caplog
) -> None:
    import logging

    from transformers import AutoTokenizer

    path = _rm_with_head(tiny_rm_dir, tmp_path / f"rm-{head}", float(head))
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [
        tokenizer.apply_chat_template(p + c, tokenize=False)
        for p, c in zip(PROMPTS, COMPLETIONS, strict=True)
    ]
    raw = _reference_scores(path, texts)
    assert not any(math.isfinite(x) for x in raw)  # the model itself really scores NaN / +-inf

    reward = build_reward_funcs(_rm_args(path))[0]  # default clip: 50
    with caplog.at_level(logging.WARNING, logger="rewards.reward_model"):
        scores = reward(prompts=PROMPTS, completions=COMPLETIONS)
    expected = [0.0 if math.isnan(x) else math.copysign(50.0, x) for x in raw]
    assert scores == expected and all(math.isfinite(s) for s in scores)
    assert reward.stats["nonfinite_scores"] == 4 and "NaN/inf" in caplog.text
    unclipped = build_reward_funcs(_rm_args(path, reward_model_clip=None))[0]
    assert unclipped(prompts=PROMPTS, completions=COMPLETIONS) == [0.0] * 4  # no bound to saturate at


def test_reward_model_clip_bounds_finite_scores(tiny_rm_dir: Path) -> None:
    raw = build_reward_funcs(_rm_args(tiny_rm_dir, reward_model_clip=None))[0](
        prompts=PROMPTS, completions=COMPLETIONS
    )
    clip = min(abs(x) for x in raw) * 0.9  # below every score: all come out at +-clip
    clipped = build_reward_funcs(_rm_args(tiny_rm_dir, reward_model_clip=clip))[0](
        prompts=PROMPTS, completions=COMPLETIONS
    )
    assert clipped == pytest.approx([math.copysign(clip, x) for x in raw])
    assert build_reward_funcs(_rm_args(tiny_rm_dir))[0](prompts=PROMPTS, completions=COMPLETIONS) == raw


def test_reward_model_bad_folders(tiny_model_dir: Path, tmp_path: Path) -> None:
    from rewards.reward_model import RewardModelError

    # a causal LM is not a reward model: refused when the reward is built, naming the field
    with pytest.raises(RewardModelError, match="reward_model_path.*not a sequence-classification"):
        build_reward_funcs(_rm_args(tiny_model_dir))
    # a YAML may name a folder that an earlier step creates: parsing accepts it, building names the field
    missing = _rm_args(tmp_path / "not-trained-yet")
    with pytest.raises(RewardModelError, match="reward_model_path=.*not-trained-yet.*recipes/reward/run.py"):
        build_reward_funcs(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RewardModelError, match="no config.json"):
        build_reward_funcs(_rm_args(tmp_path / "empty"))
