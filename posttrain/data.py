"""Datasets for the recipes: generated Countdown tasks (offline default) or the pinned hub datasets.

Train/test separation is by canonical key, not by position: a stable hash of (target, sorted numbers) puts
10% of all possible puzzles in the held-out space. Evaluation sets are drawn only from that space and training
sets never are, so no recipe can train on an evaluation puzzle, whatever sizes, seeds or number counts the
two sides use (a 4-number evaluation after 3- and 4-number training included).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

from posttrain.chat_sft import load_chat_sft_dataset
from posttrain.countdown import (
    COUNTDOWN_HUB_REVISION,
    WARMSTART_HUB_REVISION,
    CountdownTask,
    build_sft_records,
    canonical_key,
    generate_tasks,
    load_hub_countdown_tasks,
    load_hub_warmstart,
)
from posttrain.dataset_names import (
    CODESUM,
    CODESUM_HUB,
    COUNTDOWN_HUB,
    GENRM,
    GSM8K,
    GSM8K_HUB,
    SMOLTALK,
    WARMSTART_HUB_TRACES,
    dataset_kind,
)

HELDOUT_PERCENT = 10
DEFAULT_TASK_SEED = 1234


def is_heldout(target: int, nums) -> bool:
    """True when the puzzle belongs to the held-out (evaluation-only) key space."""
    key = repr(canonical_key(target, nums)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big") % 100 < HELDOUT_PERCENT


def _hashable(gen_kwargs: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in gen_kwargs.items()))


def _in_train_split(target: int, nums: tuple[int, ...]) -> bool:
    return not is_heldout(target, nums)


@functools.lru_cache(maxsize=16)
def _generated(
    n: int, seed: int, keep: Callable[[int, tuple[int, ...]], bool], gen_kwargs: tuple[tuple[str, Any], ...]
) -> tuple[CountdownTask, ...]:
    """`generate_tasks` of one split, remembered per process: evaluation, validation and their guards draw the
    same pools (1000 held-out tasks); the tasks are frozen, the tuple immutable."""
    return tuple(generate_tasks(n, seed=seed, keep=keep, **dict(gen_kwargs)))


def _filtered_tasks(n: int, keep: Callable[[int, tuple[int, ...]], bool], seed: int, **gen_kwargs):
    """The first n generated tasks that satisfy `keep` (generate_tasks is prefix-stable, so this is too)."""
    if n < 0:
        raise ValueError(f"the number of tasks must be >= 0, got {n}")
    if n == 0:
        return []
    try:
        return list(_generated(n, seed, keep, _hashable(gen_kwargs)))
    except ValueError as exc:
        raise ValueError(
            f"cannot draw {n} tasks from this split with {gen_kwargs} ({exc}); ask for fewer tasks or widen the "
            f"number/target ranges (countdown_max_number, countdown_max_target)."
        ) from None


def heldout_tasks(n_test: int, *, seed: int = DEFAULT_TASK_SEED, **gen_kwargs) -> list[CountdownTask]:
    """Evaluation tasks: deterministic by seed, always from the held-out key space."""
    return _filtered_tasks(n_test, is_heldout, seed, **gen_kwargs)


def train_tasks(n_train: int, *, seed: int = DEFAULT_TASK_SEED, **gen_kwargs) -> list[CountdownTask]:
    """Training tasks: deterministic by seed, never from the held-out key space."""
    return _filtered_tasks(n_train, _in_train_split, seed, **gen_kwargs)


def _sft_splits(train: list[CountdownTask], test: list[CountdownTask], countdown_args):
    """Train/test `DatasetDict` of prompt-completion records, traces shaped by the `warmstart_*` arguments."""
    from datasets import Dataset, DatasetDict

    seed = countdown_args.countdown_data_seed
    record_kwargs = dict(
        template=countdown_args.prompt_template,
        max_failed_tries=countdown_args.warmstart_max_failed_tries,
        failed_trace_share=countdown_args.warmstart_failed_trace_share,
        think=countdown_args.warmstart_think,
        style=countdown_args.warmstart_style,
    )
    return DatasetDict(
        train=Dataset.from_list(build_sft_records(train, seed=seed, **record_kwargs)),
        test=Dataset.from_list(build_sft_records(test, seed=seed + 1, **record_kwargs)),
    )


def countdown_sft_dataset(countdown_args):
    """A `datasets.DatasetDict` (train/test) of Countdown prompt-completion records built offline."""
    gen = countdown_args.generator_kwargs()
    seed = countdown_args.countdown_data_seed
    test = heldout_tasks(countdown_args.countdown_test_size, seed=seed, **gen)
    train = train_tasks(countdown_args.countdown_train_size, seed=seed, **gen)
    return _sft_splits(train, test, countdown_args)


def warmstart_hub_sft_dataset(script_args, countdown_args):
    """The hub warm-start traces (`Asap7772/cog_behav_all_strategies`) as a train/test `DatasetDict`."""
    from datasets import Dataset, DatasetDict

    revision = script_args.dataset_revision or WARMSTART_HUB_REVISION
    train_split = script_args.dataset_train_split
    return DatasetDict(
        {
            split: Dataset.from_list(
                [
                    r
                    for r in load_hub_warmstart(
                        split=split, revision=revision, template=countdown_args.prompt_template
                    )
                    # The hub rows are not split by our key: held-out puzzles never reach training.
                    if split != train_split or not is_heldout(r["target"], r["nums"])
                ]
            )
            for split in (train_split, script_args.dataset_test_split)
        }
    )


def countdown_hub_sft_dataset(script_args, countdown_args):
    """Hub Countdown tasks with solver-written traces; held-out keys go to test, never to train."""
    # The hub tasks come without solutions: the solver writes the warm-start traces, and tasks it cannot
    # solve under Stream-of-Search rules are skipped. Held-out keys stay out of training here too.
    revision = script_args.dataset_revision or COUNTDOWN_HUB_REVISION
    wanted = countdown_args.countdown_train_size + countdown_args.countdown_test_size
    tasks, _ = load_hub_countdown_tasks(
        revision=revision, seed=countdown_args.countdown_data_seed, max_tasks=wanted * 2
    )
    tasks = [t for t in tasks if t.solution]
    train = [t for t in tasks if not is_heldout(t.target, t.nums)][: countdown_args.countdown_train_size]
    test = [t for t in tasks if is_heldout(t.target, t.nums)][: countdown_args.countdown_test_size]
    return _sft_splits(train, test, countdown_args)


# Row counts of the generated/hub prompt-completion kinds (GSM8K, code summarisation) when no limit is set
DEFAULT_TRAIN_ROWS, DEFAULT_TEST_ROWS = 2000, 200


def prompt_completion_sft_dataset(
    script_args,
    rows: Callable[..., list[dict]],
    prompt: Callable[[dict], list[dict]],
    reply: str,
    *,
    seed: int,
):
    """Train/test `DatasetDict` of conversational prompt-completion records for a task whose
    ``rows(dataset_name, split, n, seed=, revision=)`` gives dicts: ``prompt(row)`` is the user turn, the
    row's ``reply`` field the assistant's. Row limits from `script_args`, else the defaults above."""
    from datasets import Dataset, DatasetDict

    def records(split: str, n: int) -> list[dict]:
        found = rows(script_args.dataset_name, split, n, seed=seed, revision=script_args.dataset_revision)
        return [
            {"prompt": prompt(r), "completion": [{"role": "assistant", "content": r[reply]}]} for r in found
        ]

    return DatasetDict(
        train=Dataset.from_list(records("train", script_args.dataset_max_train_rows or DEFAULT_TRAIN_ROWS)),
        test=Dataset.from_list(records("test", script_args.dataset_max_test_rows or DEFAULT_TEST_ROWS)),
    )


def load_sft_dataset(script_args, countdown_args):
    """Generated Countdown data when no dataset is named; the pinned hub datasets otherwise.

    `HuggingFaceTB/smol-smoltalk` (or `fixture`, its offline twin) gives chat data: a `messages` column with
    the train/test splits and row limits of `script_args` (see posttrain.chat_sft). The name is looked up in
    `posttrain.dataset_names`, which names the choices when the SFT recipe cannot train on it.
    """
    kind = dataset_kind(script_args.dataset_name, "SFT")
    if kind == SMOLTALK:
        return load_chat_sft_dataset(script_args)
    if kind == WARMSTART_HUB_TRACES:
        return warmstart_hub_sft_dataset(script_args, countdown_args)
    if kind == COUNTDOWN_HUB:
        return countdown_hub_sft_dataset(script_args, countdown_args)
    seed = countdown_args.countdown_data_seed
    if kind in (GSM8K, GSM8K_HUB):
        from posttrain.gsm8k import gsm8k_prompt, gsm8k_rows

        prompt = lambda row: gsm8k_prompt(row["question"])  # noqa: E731
        return prompt_completion_sft_dataset(script_args, gsm8k_rows, prompt, "solution", seed=seed)
    if kind in (CODESUM, CODESUM_HUB):
        from posttrain.codesum import codesum_prompt, codesum_rows

        prompt = lambda row: codesum_prompt(row["code"])  # noqa: E731
        return prompt_completion_sft_dataset(script_args, codesum_rows, prompt, "summary", seed=seed)
    if kind == GENRM:  # built on this module's task splits, so it lives in posttrain.genrm (no import circle)
        raise ValueError(
            f"dataset_name={script_args.dataset_name!r} is GenRM verification data: load it with "
            "posttrain.genrm.genrm_sft_dataset (recipes/sft/run.py does)."
        )
    return countdown_sft_dataset(countdown_args)


# Evaluation sets are prefixes of `heldout_tasks(n, seed=DEFAULT_TASK_SEED)`; validation tasks skip this many of
# them, so a validation set never overlaps any evaluation of up to this size.
VALIDATION_EXCLUDES_FIRST = 1000
VALIDATION_SEED_OFFSET = 1


def validation_tasks(
    n: int, *, seed: int = DEFAULT_TASK_SEED, exclude_first: int = VALIDATION_EXCLUDES_FIRST, **gen_kwargs
) -> list[CountdownTask]:
    """Tasks for choosing checkpoints during training: held-out space (never trained on), another generator
    seed than the evaluation, and none of the first `exclude_first` evaluation tasks of `seed`."""
    test_keys = {
        canonical_key(t.target, t.nums) for t in heldout_tasks(exclude_first, seed=seed, **gen_kwargs)
    }
    # Prefix-stable pools: the first n survivors of a pool are those of any larger one, so the pool only grows (up
    # to n + exclude_first, where at most exclude_first can be removed) until n survive.
    margin = min(exclude_first, 16 + n // 10)
    while True:
        pool = heldout_tasks(n + margin, seed=seed + VALIDATION_SEED_OFFSET, **gen_kwargs)
        tasks = [t for t in pool if canonical_key(t.target, t.nums) not in test_keys]
        if len(tasks) >= n or margin >= exclude_first:
            break
        margin = min(exclude_first, margin * 4)
    if len(tasks) < n:
        raise ValueError(f"only {len(tasks)} validation tasks are left after removing the evaluation tasks")
    return tasks[:n]
