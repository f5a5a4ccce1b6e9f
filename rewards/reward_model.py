"""A learned (Bradley-Terry) reward model as a TRL reward function.

The model is a folder holding an ``AutoModelForSequenceClassification`` with one label and its tokenizer,
such as TRL ``RewardTrainer``'s output (``recipes/reward``). Each prompt + completion is rendered the way the
reward model saw its training pairs: conversational prompts (TRL message lists) as ``prompt + completion``
messages through the RM tokenizer's chat template; plain-string prompts as a user turn and the completion as
the assistant turn (or, for a tokenizer without a chat template, the concatenated text, as TRL does). The
rendered text is tokenised without extra special tokens (the template holds them), truncated to
``max_length`` tokens (``left``: keep the end, where the score is read; ``right``: keep the start), scored in
batches of ``batch_size`` under ``torch.inference_mode`` and returned as plain floats.

The raw logit is untrusted (a diverged or badly exported reward model, or float16 overflow, gives NaN/inf, and
one NaN reward turns a whole GRPO group's advantages into NaN): NaN becomes 0, and scores are clipped to
``[-clip, clip]`` (``reward_model_clip``, default 50; +-inf become +-clip). With ``clip=None`` nothing is
clipped and +-inf become 0 as well. Non-finite scores are counted in ``stats`` and logged as a warning.

The model loads on the first call and is cached per (folder, dtype, device), so building the reward is cheap
and several rewards or trainers share one copy.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewards.format import check_batch, completion_text, content_text

logger = logging.getLogger("rewards.reward_model")

_CACHE: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_CACHE_LOCK = threading.Lock()


DTYPES = ("float32", "bfloat16", "float16")  # torch dtype names a reward model may load in ("auto" picks one)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


class RewardModelError(ValueError):
    """The reward model folder cannot be used; the message says why and what to do."""


def check_reward_model_dir(path: str | os.PathLike[str], *, field: str = "reward_model_path") -> Path:
    """Fail early, with the fix, on a folder that is not a one-label sequence-classification checkpoint.

    ``field`` is how the caller's user named the folder (``reward_model_path`` in a recipe, ``--rm`` for the
    reward server), so the message points at the setting to change.
    """
    folder = Path(path)
    named = f"{field}={str(path)!r}"
    if not folder.exists():
        raise RewardModelError(
            f"{named} does not exist; train a reward model first (`make rm-ultrafeedback`, i.e. "
            f"recipes/reward/run.py, writes runs/rm-ultrafeedback/model) or point {field} at one"
        )
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise RewardModelError(f"{named} is not a saved model folder (no config.json in it)")
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise RewardModelError(f"{folder}/config.json is not valid JSON ({exc})") from None
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise RewardModelError(
            f"{named} holds a {architectures[0]}, not a sequence-classification reward model "
            f"(AutoModelForSequenceClassification with num_labels=1, e.g. the reward recipe's output)"
        )
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or 1
    if labels != 1:
        raise RewardModelError(f"{named} has {labels} labels; a reward model has exactly one (num_labels=1)")
    if not any(f.suffix in WEIGHT_SUFFIXES for f in folder.iterdir()):
        raise RewardModelError(f"{named} has a config.json but no weight files (*.safetensors / *.bin)")
    return folder


_check_folder = check_reward_model_dir  # the name the registry factory below calls it by


def _default_device() -> str:
    import torch

    # Under accelerate each process has already selected its own GPU as the current device.
    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """One of `DTYPES`: ``auto`` is bfloat16 on a GPU that has it, else float32."""
    import torch

    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    if dtype not in DTYPES:
        raise RewardModelError(f"the reward model dtype must be auto or one of {list(DTYPES)}, got {dtype!r}")
    return dtype


def load_reward_model(
    path: str | os.PathLike[str],
    *,
    dtype: str = "auto",
    device: str | None = None,
    field: str = "reward_model_path",
) -> tuple[Any, Any]:
    """(model, tokenizer), loaded once per (folder, dtype, device) and kept in eval mode."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = device or _default_device()
    dtype = resolve_dtype(dtype, device)
    key = (str(Path(path).resolve()), dtype, device)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        folder = check_reward_model_dir(path, field=field)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=getattr(torch, dtype))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            # Sequence classifiers read the score at the last non-pad token, so they need a pad id.
            model.config.pad_token_id = tokenizer.pad_token_id
        model.to(device).eval()
        model.requires_grad_(False)
        _CACHE[key] = (model, tokenizer)
        return model, tokenizer


def clear_cache() -> None:
    """Drop cached reward models (tests; freeing memory)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def render(prompt: Any, completion: Any, tokenizer: Any) -> str:
    """The text the reward model scores for one prompt + completion."""
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if not isinstance(prompt, list):
        if not has_template:
            return str(prompt) + completion_text(completion)  # TRL's rule for plain text
        prompt = [{"role": "user", "content": str(prompt)}]
    if isinstance(completion, list):
        messages = list(prompt) + list(completion)
    else:
        messages = list(prompt) + [{"role": "assistant", "content": completion_text(completion)}]
    if has_template:
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "\n".join(content_text(m.get("content")) for m in messages if isinstance(m, dict))


TRUNCATION_SIDES = ("left", "right")  # left keeps the end of the conversation, where the score is read


class RewardModelReward:
    """Callable TRL reward scoring prompt + completion with a sequence-classification reward model."""

    def __init__(
        self,
        path: str,
        *,
        batch_size: int = 8,
        max_length: int = 1024,
        truncation_side: str = "left",
        dtype: str = "auto",
        device: str | None = None,
        clip: float | None = 50.0,
    ) -> None:
        if truncation_side not in TRUNCATION_SIDES:
            raise ValueError(f"reward_model_truncation_side must be left or right, got {truncation_side!r}")
        if clip is not None and not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"reward_model_clip must be a finite number > 0 or None, got {clip!r}")
        self.__name__ = "reward_model_reward"
        self.path, self.batch_size, self.max_length = path, batch_size, max_length
        self.truncation_side, self.dtype, self.device = truncation_side, dtype, device
        self.clip = None if clip is None else float(clip)
        self.stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"RewardModelReward(path={self.path!r}, batch_size={self.batch_size}, max_length={self.max_length})"

    def encode(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[list[int]]:
        """Token ids per prompt + completion, truncated to ``max_length``."""
        _, tokenizer = load_reward_model(self.path, dtype=self.dtype, device=self.device)
        out = []
        for prompt, completion in zip(prompts, completions, strict=True):
            ids = tokenizer(render(prompt, completion, tokenizer), add_special_tokens=False)["input_ids"]
            if len(ids) > self.max_length:
                ids = ids[-self.max_length :] if self.truncation_side == "left" else ids[: self.max_length]
            out.append(list(ids))
        return out

    def score_ids(self, batch: Sequence[list[int]]) -> list[float]:
        import torch

        model, _ = load_reward_model(self.path, dtype=self.dtype, device=self.device)
        pad = int(model.config.pad_token_id)
        scores: list[float] = [0.0] * len(batch)
        # Similar lengths together waste less compute on padding; the original order is restored below.
        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(1, max(len(batch[i]) for i in rows))
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):  # right padding, like TRL's reward collator
                input_ids[r, : len(batch[i])] = torch.tensor(batch[i], dtype=torch.long)
                mask[r, : len(batch[i])] = 1
            with torch.inference_mode():
                logits = model(
                    input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)
                ).logits
            values = logits[:, 0].float()
            nonfinite = int((~torch.isfinite(values)).sum())
            if nonfinite:
                self.stats["nonfinite_scores"] += nonfinite
                logger.warning(
                    "reward_model: %d of %d scores were NaN/inf and were replaced (NaN -> 0, +-inf -> %s); "
                    "check the reward model in %s (a float16 overflow? try reward_model_dtype: float32).",
                    nonfinite,
                    len(rows),
                    f"+-{self.clip:g}" if self.clip is not None else "0",
                    self.path,
                )
            bound = self.clip if self.clip is not None else 0.0
            values = torch.nan_to_num(values, nan=0.0, posinf=bound, neginf=-bound)
            if self.clip is not None:
                values = values.clamp(-self.clip, self.clip)
            for r, value in zip(rows, values.cpu().tolist(), strict=True):
                scores[r] = float(value)
        return scores

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        check_batch("reward_model", prompts=prompts, completions=completions)
        if len(prompts) != len(completions):
            raise ValueError(f"reward_model: {len(prompts)} prompts but {len(completions)} completions")
        if not completions:
            return []
        return self.score_ids(self.encode(prompts, completions))


def make_reward_model_reward(
    *,
    path: str | None,
    batch_size: int = 8,
    max_length: int = 1024,
    truncation_side: str = "left",
    dtype: str = "auto",
    clip: float | None = 50.0,
) -> RewardModelReward:
    """Factory for the registry (the ``reward_model_*`` settings; nothing loads until the first call)."""
    if not path:
        raise ValueError("reward_model needs reward_model_path (a reward model folder)")
    _check_folder(path)
    return RewardModelReward(
        path,
        batch_size=batch_size,
        max_length=max_length,
        truncation_side=truncation_side,
        dtype=dtype,
        clip=clip,
    )
