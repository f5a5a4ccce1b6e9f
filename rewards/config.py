"""`RewardArguments`: which reward functions an RL recipe uses and how the configurable ones are built.

Parsed by `TrlParser` next to `GRPOConfig` / `RLOOConfig` (one flat YAML namespace), so every field is prefixed
(`reward_*`, `overlong_*`, `judge_*`) and none collides with a TRL field. The weights stay TRL's own
`reward_weights` (one per name in `reward_funcs`, see `rewards.registry.check_reward_weights`).

    reward_funcs: [countdown, format, overlong]
    reward_weights: [1.0, 0.2, 1.0]
    overlong_buffer_length: 32

The judge's API key is never a config value: `judge_api_key_env` holds the NAME of the environment variable
that holds it (default `JUDGE_API_KEY`), so the key never lands in a YAML file, `run_summary.json` or a log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from rewards.registry import REWARDS, is_finite_number, validate_reward_names
from rewards.reward_model import TRUNCATION_SIDES

JUDGE_RESPONSE_FORMATS = ("json_schema", "json_object", "none")
REWARD_MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")
# The fields that configure each configurable reward; without the prefix they are the keywords of its factory
# in `rewards.registry.REWARDS` (judge_timeout_s -> LLMJudgeReward(timeout_s=...)).
SETTINGS_PREFIXES = {
    "overlong": "overlong_",
    "reward_model": "reward_model_",
    "llm_judge": "judge_",
    "length_window": "length_",
    "patterns": "patterns_",
}
# A conventional environment variable name. Anything else in judge_api_key_env is refused without being echoed.
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
# How common API keys begin (OpenAI/Anthropic sk-, Hugging Face hf_, NVIDIA nvapi-, Groq gsk_, xAI xai-, ...).
KEY_PREFIXES = (
    "sk-",
    "sk_",
    "hf_",
    "nvapi-",
    "gsk_",
    "xai-",
    "pplx-",
    "csk-",
    "api_",
    "key-",
    "ghp_",
    "AKIA",
)


def looks_like_api_key(value: str) -> bool:
    """True for a value that looks like a secret rather than a variable name (prefix, or long and mixed)."""
    if value.startswith(KEY_PREFIXES):  # case-sensitive: HF_TOKEN is a variable name, hf_... a key
        return True
    kinds = sum(
        (any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value))
    )
    return len(value) >= 20 and (kinds >= 2 and "_" not in value or kinds == 3)


def check_env_name(value: object, field_name: str = "judge_api_key_env") -> None:
    """ValueError unless ``value`` is a conventional env var name; the message never contains the value."""
    if isinstance(value, str) and ENV_NAME_RE.match(value) and not looks_like_api_key(value):
        return
    if isinstance(value, str) and looks_like_api_key(value):
        raise ValueError(
            f"{field_name} looks like an API key, not the NAME of an environment variable. Put the key in a "
            f"variable (`export JUDGE_API_KEY=...` in the training shell) and set `{field_name}: JUDGE_API_KEY`. "
            "The value is not repeated here; if this config was shared or committed, revoke the key."
        )
    raise ValueError(
        f"{field_name} must be the NAME of an environment variable (upper-case letters, digits and _, at "
        f"most 64 characters, e.g. JUDGE_API_KEY), never the key itself; put the key in that variable."
    )


@dataclass
class RewardArguments:
    """Reward functions by name (see `rewards.registry`) and the settings of the parametrised ones."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["countdown", "format"],
        metadata={
            "help": "Reward functions by registry name, e.g. [countdown, format, overlong]; "
            "valid: countdown, countdown_strict, format, answer_format, tag_count, overlong, reward_model, "
            "llm_judge, length_window, patterns. "
            "Weight them with TRL's `reward_weights` (same order)."
        },
    )
    # -- overlong (DAPO soft overlong punishment)
    overlong_buffer_length: int = field(
        default=64,
        metadata={
            "help": "overlong: penalty ramps linearly from 0 at (max length - buffer) tokens to -1 at max length."
        },
    )
    overlong_max_length: int | None = field(
        default=None,
        metadata={
            "help": "overlong: the max length in tokens; unset: the trainer's `max_completion_length`."
        },
    )
    overlong_penalty_factor: float = field(
        default=1.0, metadata={"help": "overlong: the penalty at (and beyond) the max length is -factor."}
    )
    # -- reward_model (a learned Bradley-Terry reward model)
    reward_model_path: str | None = field(
        default=None,
        metadata={"help": "reward_model: folder of an AutoModelForSequenceClassification (num_labels=1)."},
    )
    reward_model_batch_size: int = field(
        default=8, metadata={"help": "reward_model: conversations scored per forward pass."}
    )
    reward_model_max_length: int = field(
        default=1024,
        metadata={"help": "reward_model: conversations longer than this (tokens) are truncated."},
    )
    reward_model_truncation_side: str = field(
        default="left",
        metadata={
            "help": "reward_model: `left` keeps the end of the conversation (where the score is read), "
            "`right` keeps the start."
        },
    )
    reward_model_dtype: str = field(
        default="auto",
        metadata={"help": "reward_model: auto (bfloat16 on a bf16 GPU, else float32) or a dtype."},
    )
    reward_model_clip: float | None = field(
        default=50.0,
        metadata={
            "help": "reward_model: scores are clipped to [-clip, clip] (NaN -> 0, +-inf -> +-clip); null: no "
            "clip (NaN and +-inf -> 0)."
        },
    )
    # -- llm_judge (RULER-style: one call scores a whole group of completions of the same prompt)
    judge_base_url: str | None = field(
        default=None,
        metadata={"help": "llm_judge: OpenAI-compatible base URL, e.g. http://127.0.0.1:8001/v1 (vLLM)."},
    )
    judge_model: str | None = field(default=None, metadata={"help": "llm_judge: model name at the endpoint."})
    judge_api_key_env: str = field(
        default="JUDGE_API_KEY",
        metadata={"help": "llm_judge: NAME of the environment variable holding the API key (never the key)."},
    )
    judge_timeout_s: float = field(default=60.0, metadata={"help": "llm_judge: seconds per request."})
    judge_max_retries: int = field(
        default=3,
        metadata={"help": "llm_judge: retries after 429/5xx/timeouts/connection errors/bad output."},
    )
    judge_backoff_s: float = field(
        default=1.0, metadata={"help": "llm_judge: first retry delay; doubles per retry (with jitter)."}
    )
    judge_backoff_max_s: float = field(default=30.0, metadata={"help": "llm_judge: longest retry delay."})
    judge_concurrency: int = field(
        default=8, metadata={"help": "llm_judge: groups judged at once (per training process)."}
    )
    judge_neutral_score: float = field(
        default=0.5,
        metadata={"help": "llm_judge: score of every completion in a group whose judging failed."},
    )
    judge_temperature: float = field(default=0.0, metadata={"help": "llm_judge: sampling temperature."})
    judge_max_tokens: int | None = field(
        default=None, metadata={"help": "llm_judge: max tokens of the judge's answer (unset: the server's)."}
    )
    judge_max_completion_chars: int = field(
        default=4000, metadata={"help": "llm_judge: each completion is cut to this many characters."}
    )
    judge_response_format: str = field(
        default="json_schema",
        metadata={"help": f"llm_judge: one of {list(JUDGE_RESPONSE_FORMATS)} (what the endpoint supports)."},
    )
    judge_rubric: str | None = field(
        default=None, metadata={"help": "llm_judge: replaces the default rubric (what a good answer is)."}
    )
    judge_max_failed_calls: int = field(
        default=3,
        metadata={
            "help": "llm_judge: stop the run when every group failed in this many consecutive reward calls "
            "(the judge is down: training on constant neutral scores learns nothing); 0: never stop."
        },
    )

    # -- length_window and patterns (programmatic rules, rewards.rules; Re:Fine task files set them)
    length_min_words: int | None = field(
        default=None, metadata={"help": "length_window: replies shorter than this many words lose reward."}
    )
    length_max_words: int | None = field(
        default=None, metadata={"help": "length_window: replies longer than this many words lose reward."}
    )
    length_min_ratio: float | None = field(
        default=None,
        metadata={"help": "length_window: lower bound as a multiple of the input's words (`source` column)."},
    )
    length_max_ratio: float | None = field(
        default=None,
        metadata={"help": "length_window: upper bound as a multiple of the input's words (`source` column)."},
    )
    patterns_required: list[str] | None = field(
        default=None, metadata={"help": "patterns: regular expressions a reply must contain."}
    )
    patterns_forbidden: list[str] | None = field(
        default=None, metadata={"help": "patterns: regular expressions a reply must not contain."}
    )

    def reward_settings(self, name: str, max_completion_length: int | None = None) -> dict[str, Any]:
        """The keywords for reward ``name``'s factory (none for a fixed reward). ``overlong`` without
        ``overlong_max_length`` takes the trainer's ``max_completion_length``."""
        prefix = SETTINGS_PREFIXES.get(name)
        if prefix is None:
            return {}
        settings = {
            f.name.removeprefix(prefix): getattr(self, f.name)
            for f in fields(self)
            if f.name.startswith(prefix)
        }
        if name == "overlong" and settings["max_length"] is None:
            settings["max_length"] = max_completion_length
        return settings

    def __post_init__(self) -> None:
        self.reward_funcs = validate_reward_names(self.reward_funcs, field_name="reward_funcs")
        names = set(self.reward_funcs)

        def positive_int(name: str, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")

        def finite(name: str, minimum: float | None = None, maximum: float | None = None) -> float:
            value = getattr(self, name)
            if not is_finite_number(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
            if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
                raise ValueError(f"{name} must be within [{minimum}, {maximum}], got {value!r}.")
            return float(value)

        positive_int("overlong_buffer_length")
        positive_int("overlong_max_length", allow_none=True)
        if self.overlong_max_length is not None and self.overlong_buffer_length > self.overlong_max_length:
            raise ValueError(
                f"overlong_buffer_length={self.overlong_buffer_length} must be <= overlong_max_length="
                f"{self.overlong_max_length} (the penalty starts at max length - buffer)."
            )
        finite("overlong_penalty_factor", minimum=0.0)
        positive_int("reward_model_batch_size")
        positive_int("reward_model_max_length")
        if self.reward_model_truncation_side not in TRUNCATION_SIDES:
            raise ValueError(
                f"reward_model_truncation_side={self.reward_model_truncation_side!r}: use one of "
                f"{list(TRUNCATION_SIDES)}."
            )
        if self.reward_model_dtype not in REWARD_MODEL_DTYPES:
            raise ValueError(
                f"reward_model_dtype={self.reward_model_dtype!r}: use one of {list(REWARD_MODEL_DTYPES)}."
            )
        if self.reward_model_clip is not None:
            if finite("reward_model_clip") <= 0:
                raise ValueError(f"reward_model_clip must be > 0 or null, got {self.reward_model_clip!r}.")
        if "reward_model" in names and not self.reward_model_path:
            raise ValueError(
                "reward_funcs has `reward_model` but reward_model_path is unset; set it to a reward model "
                "folder, e.g. `reward_model_path: runs/rm-ultrafeedback/model` (made by the reward recipe)."
            )
        # The folder itself is checked by build_reward_funcs: a YAML may name a model a previous step trains.
        finite("judge_timeout_s", minimum=0.001)
        if isinstance(self.judge_max_retries, bool) or not isinstance(self.judge_max_retries, int):
            raise ValueError(f"judge_max_retries must be an integer >= 0, got {self.judge_max_retries!r}.")
        if self.judge_max_retries < 0:
            raise ValueError(f"judge_max_retries must be an integer >= 0, got {self.judge_max_retries!r}.")
        finite("judge_backoff_s", minimum=0.0)
        finite("judge_backoff_max_s", minimum=0.0)
        positive_int("judge_concurrency")
        finite("judge_neutral_score", minimum=0.0, maximum=1.0)
        finite("judge_temperature", minimum=0.0)
        positive_int("judge_max_tokens", allow_none=True)
        positive_int("judge_max_completion_chars")
        if self.judge_response_format not in JUDGE_RESPONSE_FORMATS:
            raise ValueError(
                f"judge_response_format={self.judge_response_format!r}: use one of {list(JUDGE_RESPONSE_FORMATS)}."
            )
        if (
            isinstance(self.judge_max_failed_calls, bool)
            or not isinstance(self.judge_max_failed_calls, int)
            or self.judge_max_failed_calls < 0
        ):
            raise ValueError(
                f"judge_max_failed_calls must be an integer >= 0 (0: never stop), got {self.judge_max_failed_calls!r}."
            )
        # A key pasted here would be saved in run_summary.json and printed: refuse it without echoing it.
        check_env_name(self.judge_api_key_env)
        if "llm_judge" in names:
            for name in ("judge_base_url", "judge_model"):
                if not getattr(self, name):
                    raise ValueError(
                        f"reward_funcs has `llm_judge` but {name} is unset; e.g. judge_base_url: "
                        "http://127.0.0.1:8001/v1 and judge_model: Qwen/Qwen2.5-7B-Instruct (a vLLM server)."
                    )
            if not str(self.judge_base_url).startswith(("http://", "https://")):
                raise ValueError(
                    f"judge_base_url={self.judge_base_url!r} must start with http:// or https://, "
                    "e.g. http://127.0.0.1:8001/v1."
                )
        for name in ("length_min_words", "length_max_words"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an integer >= 0 or unset, got {value!r}.")
        for name in ("length_min_ratio", "length_max_ratio"):
            if getattr(self, name) is not None:
                finite(name, minimum=0.0)
        # The rules check their own settings (bounds, regular expressions); built here, they fail before any model.
        for rule in ("length_window", "patterns"):
            if rule in names:
                REWARDS[rule](**self.reward_settings(rule))
