"""The reward registry: one plain mapping from the names in ``reward_funcs`` to factories.

A factory takes the reward's own settings as keywords and returns a TRL reward callable. The seven fixed rewards
(``countdown``, ``countdown_strict``, ``format``, ``answer_format``, ``tag_count``, ``math``, ``code_summary``)
take none; ``overlong``,
``reward_model``, ``llm_judge``, ``length_window`` and ``patterns`` take theirs, which
`rewards.config.RewardArguments.reward_settings` reads from the YAML (``overlong_*``, ``reward_model_*``,
``judge_*``, ``length_*``, ``patterns_*`` with the prefix dropped). Every callable has a
``__name__`` (TRL logs ``rewards/<__name__>/mean``). The RL recipes call ``check_reward_weights`` before
loading any model, then ``build_reward_funcs``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from rewards.code_summary import code_summary_reward
from rewards.countdown import countdown_reward, countdown_strict_reward
from rewards.format import answer_format_reward, format_reward, tag_count_reward
from rewards.judge import LLMJudgeReward
from rewards.maths import math_reward
from rewards.overlong import make_overlong_reward
from rewards.reward_model import make_reward_model_reward
from rewards.rules import LengthWindowReward, PatternReward

RewardFunc = Callable[..., Any]
RewardFactory = Callable[..., RewardFunc]
F = TypeVar("F", bound=RewardFunc)


def fixed(func: RewardFunc) -> RewardFactory:
    """The factory of a reward without settings: it returns ``func`` itself."""

    def factory() -> RewardFunc:
        return func

    return factory


REWARDS: dict[str, RewardFactory] = {
    "countdown": fixed(countdown_reward),
    "countdown_strict": fixed(countdown_strict_reward),
    "format": fixed(format_reward),
    "answer_format": fixed(answer_format_reward),
    "tag_count": fixed(tag_count_reward),
    "math": fixed(math_reward),
    "code_summary": fixed(code_summary_reward),
    "overlong": make_overlong_reward,
    "reward_model": make_reward_model_reward,
    "llm_judge": LLMJudgeReward,
    "length_window": LengthWindowReward,
    "patterns": PatternReward,
}


class RewardConfig(Protocol):
    """What ``build_reward_funcs`` needs of its argument (`rewards.config.RewardArguments`)."""

    reward_funcs: list[str]

    def reward_settings(self, name: str, max_completion_length: int | None = None) -> dict[str, Any]: ...


def needs_settings(name: str) -> bool:
    """Whether the reward ``name`` is configurable (its factory takes settings) rather than fixed."""
    return bool(inspect.signature(REWARDS[name]).parameters)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")


def _add(name: str, factory: RewardFactory, reward: RewardFunc | None = None) -> None:
    existing = REWARDS.get(name)
    if existing is None or existing is factory:
        REWARDS[name] = factory
    elif reward is None or needs_settings(name) or existing() is not reward:  # the same reward again is fine
        raise ValueError(f"reward {name!r} is already registered; pick another name")


def register_reward(name: str) -> Callable[[F], F]:
    """Decorator adding a TRL reward callable without settings under ``name``."""
    _check_name(name)

    def decorator(func: F) -> F:
        _add(name, fixed(func), reward=func)
        return func

    return decorator


def register_reward_factory(name: str) -> Callable[[RewardFactory], RewardFactory]:
    """Decorator adding ``factory(**settings) -> reward callable`` under ``name``."""
    _check_name(name)

    def decorator(factory: RewardFactory) -> RewardFactory:
        _add(name, factory)
        return factory

    return decorator


def reward_names() -> list[str]:
    """Every valid name in ``reward_funcs``, sorted."""
    return sorted(REWARDS)


def _split_names(names: Sequence[str] | str | None) -> list[str]:
    """A list of names, or one comma-separated string (CLIs, `reward_funcs: countdown,format` in YAML)."""
    if names is None:
        return []
    if isinstance(names, str):
        names = [names]
    out = []
    for item in names:
        if not isinstance(item, str):
            raise ValueError(f"reward names must be strings, got {item!r}")
        out.extend(n for n in (part.strip() for part in item.split(",")) if n)
    return out


def _unknown_message(name: str, field_name: str | None = None) -> str:
    where = f"{field_name}: " if field_name else ""
    fixed_names = [n for n in reward_names() if not needs_settings(n)]
    configurable = [n for n in reward_names() if needs_settings(n)]
    return (
        f"{where}unknown reward function {name!r}; valid names: {', '.join(fixed_names)}"
        f" (configurable, built by build_reward_funcs: {', '.join(configurable)})"
    )


def validate_reward_names(
    names: Sequence[str] | str | None, *, field_name: str = "reward_funcs"
) -> list[str]:
    """Normalised names; ValueError naming ``field_name`` on an empty list, unknown or repeated names."""
    out = _split_names(names)
    if not out:
        raise ValueError(
            f"{field_name} is empty; name at least one reward function, e.g. [countdown, format]"
        )
    for name in out:
        if name not in REWARDS:
            raise ValueError(_unknown_message(name, field_name))
    repeated = sorted({n for n in out if out.count(n) > 1})
    if repeated:
        # TRL logs each reward under its name; a repeat would also double-count it. Use reward_weights.
        raise ValueError(
            f"{field_name} repeats {repeated}; list each reward once and weight it with reward_weights"
        )
    return out


def get_reward_funcs(names: Sequence[str] | str) -> list[RewardFunc]:
    """Reward callables for fixed ``names`` in order (a comma-separated string is accepted too).

    Configurable rewards need settings: use ``build_reward_funcs`` for them.
    """
    funcs = []
    for name in _split_names(names):
        if name not in REWARDS:
            raise ValueError(_unknown_message(name))
        if needs_settings(name):
            raise ValueError(
                f"reward function {name!r} needs settings; build it with "
                f"rewards.registry.build_reward_funcs(RewardArguments(reward_funcs=[...]))"
            )
        funcs.append(REWARDS[name]())
    return funcs


def is_finite_number(value: Any) -> bool:
    """A real int or float (not a bool) that is neither NaN nor infinite."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check_reward_weights(names: Sequence[str] | str, weights: Sequence[float] | None) -> None:
    """Fail before any model loads when TRL's ``reward_weights`` does not give one finite weight per name."""
    names = _split_names(names)
    if weights is None:
        return
    weights = list(weights)
    if len(weights) != len(names):
        raise ValueError(
            f"reward_weights has {len(weights)} value(s) {weights} but reward_funcs names {len(names)} "
            f"function(s) {names}; give one weight per reward function, in the same order (or drop "
            f"reward_weights for all 1.0)"
        )
    for name, weight in zip(names, weights, strict=True):
        if not is_finite_number(weight):
            raise ValueError(
                f"reward_weights: the weight of {name!r} must be a finite number, got {weight!r}"
            )


def build_reward_funcs(
    reward_args: RewardConfig, *, max_completion_length: int | None = None
) -> list[RewardFunc]:
    """The callables for ``reward_args.reward_funcs``, in order, ready for ``GRPOTrainer(reward_funcs=...)``.

    ``max_completion_length`` is the trainer's (GRPOConfig / RLOOConfig); ``overlong`` uses it unless
    ``overlong_max_length`` is set. Models (reward model) and clients (judge) load lazily on first use.
    """
    funcs = []
    for name in validate_reward_names(reward_args.reward_funcs):
        func = REWARDS[name](**reward_args.reward_settings(name, max_completion_length))
        if not getattr(func, "__name__", None):
            raise TypeError(f"reward {name!r} built {func!r} without a __name__ (TRL logs rewards by it)")
        funcs.append(func)
    return funcs
