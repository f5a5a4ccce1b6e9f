"""Reward functions (TRL signature ``f(completions, **columns) -> list[float]``) and their registry."""

from rewards.countdown import countdown_reward, countdown_strict_reward, is_correct, score
from rewards.format import completion_text, extract_answer, format_reward, tag_count_reward
from rewards.registry import REWARDS, get_reward_funcs, register_reward

__all__ = [
    "REWARDS",
    "completion_text",
    "countdown_reward",
    "countdown_strict_reward",
    "extract_answer",
    "format_reward",
    "get_reward_funcs",
    "is_correct",
    "register_reward",
    "score",
    "tag_count_reward",
]
