"""Name -> reward-function registry used by the recipes (``reward_funcs: [countdown, format]`` in YAML).

Two kinds of entries:

- ``REWARD_FUNCS``: ready-to-use TRL reward callables (``countdown``, ``countdown_strict``, ``format``,
  ``answer_format``, ``tag_count``), added with ``@register_reward("name")`` and returned as-is by ``get_reward_funcs``.
- ``REWARD_FACTORIES``: configurable rewards (``overlong``, ``reward_model``, ``llm_judge``), added with
  ``register_reward_factory("name")``. A factory takes ``(reward_args, max_completion_length)`` and returns
  the callable; ``build_reward_funcs`` builds them from `rewards.config.RewardArguments`.

Every callable has a ``__name__`` (TRL logs ``rewards/<__name__>/mean``). The RL recipes call
``check_reward_weights`` before loading any model, then ``build_reward_funcs``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from rewards.countdown import countdown_reward, countdown_strict_reward
from rewards.format import answer_format_reward, format_reward, tag_count_reward

if TYPE_CHECKING:
    from rewards.config import RewardArguments

RewardFunc = Callable[..., Any]
RewardFactory = Callable[..., RewardFunc]
F = TypeVar("F", bound=RewardFunc)

REWARD_FUNCS: dict[str, RewardFunc] = {}
REWARD_FACTORIES: dict[str, RewardFactory] = {}


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")


def register_reward(name: str) -> Callable[[F], F]:
    """Decorator adding a reward callable under ``name``; re-registering a different object is an error."""
    _check_name(name)

    def decorator(func: F) -> F:
        existing = REWARD_FUNCS.get(name) or REWARD_FACTORIES.get(name)
        if existing is not None and existing is not func:
            raise ValueError(f"reward {name!r} is already registered to {existing!r}")
        REWARD_FUNCS[name] = func
        return func

    return decorator


def register_reward_factory(name: str) -> Callable[[RewardFactory], RewardFactory]:
    """Decorator adding ``factory(reward_args, max_completion_length) -> reward callable`` under ``name``."""
    _check_name(name)

    def decorator(factory: RewardFactory) -> RewardFactory:
        existing = REWARD_FUNCS.get(name) or REWARD_FACTORIES.get(name)
        if existing is not None and existing is not factory:
            raise ValueError(f"reward {name!r} is already registered to {existing!r}")
        REWARD_FACTORIES[name] = factory
        return factory

    return decorator


def reward_names() -> list[str]:
    """Every valid name in ``reward_funcs``, sorted."""
    return sorted({*REWARD_FUNCS, *REWARD_FACTORIES})


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
    return (
        f"{where}unknown reward function {name!r}; valid names: {', '.join(sorted(REWARD_FUNCS))}"
        f" (configurable, built by build_reward_funcs: {', '.join(sorted(REWARD_FACTORIES))})"
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
        if name not in REWARD_FUNCS and name not in REWARD_FACTORIES:
            raise ValueError(_unknown_message(name, field_name))
    repeated = sorted({n for n in out if out.count(n) > 1})
    if repeated:
        # TRL logs each reward under its name; a repeat would also double-count it. Use reward_weights.
        raise ValueError(
            f"{field_name} repeats {repeated}; list each reward once and weight it with reward_weights"
        )
    return out


def get_reward_funcs(names: Sequence[str] | str) -> list[RewardFunc]:
    """Ready-made reward callables for ``names`` in order (a comma-separated string is accepted too).

    Configurable rewards (``REWARD_FACTORIES``) need settings: use ``build_reward_funcs`` for them.
    """
    funcs = []
    for name in _split_names(names):
        if name in REWARD_FACTORIES:
            raise ValueError(
                f"reward function {name!r} needs settings; build it with "
                f"rewards.registry.build_reward_funcs(RewardArguments(reward_funcs=[...]))"
            )
        if name not in REWARD_FUNCS:
            raise ValueError(_unknown_message(name))
        funcs.append(REWARD_FUNCS[name])
    return funcs


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
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(
                f"reward_weights: the weight of {name!r} must be a finite number, got {weight!r}"
            )


def build_reward_funcs(
    reward_args: RewardArguments, *, max_completion_length: int | None = None
) -> list[RewardFunc]:
    """The callables for ``reward_args.reward_funcs``, in order, ready for ``GRPOTrainer(reward_funcs=...)``.

    ``max_completion_length`` is the trainer's (GRPOConfig / RLOOConfig); ``overlong`` uses it unless
    ``overlong_max_length`` is set. Models (reward model) and clients (judge) load lazily on first use.
    """
    funcs = []
    for name in validate_reward_names(reward_args.reward_funcs):
        if name in REWARD_FACTORIES:
            func = REWARD_FACTORIES[name](reward_args, max_completion_length)
        else:
            func = REWARD_FUNCS[name]
        if not getattr(func, "__name__", None):
            raise TypeError(f"reward {name!r} built {func!r} without a __name__ (TRL logs rewards by it)")
        funcs.append(func)
    return funcs


register_reward("countdown")(countdown_reward)
register_reward("countdown_strict")(countdown_strict_reward)
register_reward("format")(format_reward)
register_reward("answer_format")(answer_format_reward)
register_reward("tag_count")(tag_count_reward)

# Configurable rewards. Their modules import torch / transformers / openai only when a reward is built or
# called, so importing the registry stays cheap.
from rewards.judge import make_llm_judge_reward  # noqa: E402
from rewards.overlong import make_overlong_reward  # noqa: E402
from rewards.reward_model import make_reward_model_reward  # noqa: E402

register_reward_factory("overlong")(make_overlong_reward)
register_reward_factory("reward_model")(make_reward_model_reward)
register_reward_factory("llm_judge")(make_llm_judge_reward)
