"""Datasets for the recipes: generated Countdown tasks (offline default) or the pinned hub datasets.

The held-out evaluation tasks depend only on (n_test, seed, generator settings), never on how many training
tasks a recipe asks for, and training tasks are drawn from a different stream with every held-out key removed.
So `make sft-countdown` and `make eval-countdown` agree on the test set, and no test task is ever trained on.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from posttrain.countdown import (
    COUNTDOWN_HUB,
    WARMSTART_HUB,
    CountdownTask,
    build_sft_records,
    canonical_key,
    generate_tasks,
    load_hub_countdown_tasks,
    load_hub_warmstart,
)

# Offsets the training stream's seed away from the held-out stream's.
_TRAIN_SEED_OFFSET = 7919


def heldout_tasks(n_test: int, *, seed: int, **gen_kwargs) -> list[CountdownTask]:
    """The held-out Countdown tasks for a seed and generator settings (independent of any train size)."""
    return generate_tasks(n_test, seed=seed, **gen_kwargs)


def train_tasks(
    n_train: int, *, seed: int, exclude: Sequence[CountdownTask] = (), **gen_kwargs
) -> list[CountdownTask]:
    """Training tasks from a separate stream, with every key of `exclude` (the held-out set) removed."""
    banned = {canonical_key(t.target, t.nums) for t in exclude}
    # Over-generate a little so that removing held-out keys still leaves n_train tasks.
    pool = generate_tasks(n_train + len(banned), seed=seed + _TRAIN_SEED_OFFSET, **gen_kwargs)
    kept = [t for t in pool if canonical_key(t.target, t.nums) not in banned]
    if len(kept) < n_train:
        raise ValueError(
            f"Only {len(kept)} training tasks remain after removing held-out ones; lower countdown_train_size "
            f"or widen the number/target ranges."
        )
    return kept[:n_train]


def countdown_sft_dataset(countdown_args, *, seed: int | None = None):
    """A `datasets.DatasetDict` (train/test) of Countdown prompt-completion records built offline."""
    from datasets import Dataset, DatasetDict

    gen = countdown_args.generator_kwargs()
    data_seed = countdown_args.countdown_data_seed
    test = heldout_tasks(countdown_args.countdown_test_size, seed=data_seed, **gen)
    train = train_tasks(countdown_args.countdown_train_size, seed=data_seed, exclude=test, **gen)
    record_kwargs = dict(
        template=countdown_args.prompt_template,
        max_failed_tries=countdown_args.warmstart_max_failed_tries,
        failed_trace_share=countdown_args.warmstart_failed_trace_share,
    )
    train_seed = data_seed if seed is None else seed
    return DatasetDict(
        train=Dataset.from_list(build_sft_records(train, seed=train_seed, **record_kwargs)),
        test=Dataset.from_list(build_sft_records(test, seed=train_seed + 1, **record_kwargs)),
    )


def load_sft_dataset(script_args, countdown_args):
    """Generated Countdown data when no dataset is named; the pinned hub datasets otherwise."""
    from datasets import Dataset, DatasetDict

    name = script_args.dataset_name
    if not name or name == "countdown":
        return countdown_sft_dataset(countdown_args)
    if name == WARMSTART_HUB[0]:
        revision = script_args.dataset_revision or WARMSTART_HUB[1]
        return DatasetDict(
            train=Dataset.from_list(load_hub_warmstart(split="train", revision=revision)),
            test=Dataset.from_list(load_hub_warmstart(split="test", revision=revision)),
        )
    if name == COUNTDOWN_HUB[0]:
        # The hub tasks have no solutions: the solver writes warm-start traces for them.
        revision = script_args.dataset_revision or COUNTDOWN_HUB[1]
        train, test = load_hub_countdown_tasks(
            revision=revision,
            test_size=countdown_args.countdown_test_size,
            seed=countdown_args.countdown_data_seed,
        )
        rng = random.Random(countdown_args.countdown_data_seed)
        train = rng.sample(train, min(len(train), countdown_args.countdown_train_size))
        kwargs = dict(
            template=countdown_args.prompt_template,
            max_failed_tries=countdown_args.warmstart_max_failed_tries,
            failed_trace_share=countdown_args.warmstart_failed_trace_share,
        )
        return DatasetDict(
            train=Dataset.from_list(build_sft_records(train, seed=countdown_args.countdown_data_seed, **kwargs)),
            test=Dataset.from_list(build_sft_records(test, seed=countdown_args.countdown_data_seed, **kwargs)),
        )
    raise ValueError(
        f"dataset_name={name!r} is not supported by the Countdown SFT recipe; leave it unset (generated tasks, "
        f"offline) or use {WARMSTART_HUB[0]!r} or {COUNTDOWN_HUB[0]!r} (needs the hub)."
    )
