"""Name -> reward-function registry used by the recipes (``reward_funcs: [countdown, format]`` in YAML).

Entries are ready-to-use TRL reward callables. Parametrised rewards (overlong penalty, reward model, LLM
judge) register from their own modules with ``@register_reward("name")`` on a callable (or a factory's
product); the module must be imported before ``get_reward_funcs`` looks the name up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rewards.countdown import countdown_reward, countdown_strict_reward
from rewards.format import format_reward, tag_count_reward

RewardFunc = Callable[..., Any]
F = TypeVar("F", bound=RewardFunc)

REWARD_FUNCS: dict[str, RewardFunc] = {}


def register_reward(name: str) -> Callable[[F], F]:
    """Decorator adding a reward callable under ``name``; re-registering a different object is an error."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")

    def decorator(func: F) -> F:
        existing = REWARD_FUNCS.get(name)
        if existing is not None and existing is not func:
            raise ValueError(f"reward {name!r} is already registered to {existing!r}")
        REWARD_FUNCS[name] = func
        return func

    return decorator


def get_reward_funcs(names: Sequence[str] | str) -> list[RewardFunc]:
    """Reward callables for ``names`` in order (a comma-separated string is accepted too, for CLIs)."""
    if isinstance(names, str):
        names = [n for n in (part.strip() for part in names.split(",")) if n]
    funcs = []
    for name in names:
        if name not in REWARD_FUNCS:
            valid = ", ".join(sorted(REWARD_FUNCS))
            raise ValueError(f"unknown reward function {name!r}; valid names: {valid}")
        funcs.append(REWARD_FUNCS[name])
    return funcs


register_reward("countdown")(countdown_reward)
register_reward("countdown_strict")(countdown_strict_reward)
register_reward("format")(format_reward)
register_reward("tag_count")(tag_count_reward)
