"""Train/test separation by canonical key: evaluation puzzles can never be trained on."""

from __future__ import annotations

import pytest

from posttrain.configs import CountdownArguments
from posttrain.countdown import canonical_key
from posttrain.data import HELDOUT_PERCENT, countdown_sft_dataset, heldout_tasks, is_heldout, train_tasks


def test_heldout_share_of_key_space_is_about_the_documented_percent():
    keys = [
        (t, (a, b, c))
        for t in range(10, 60)
        for a in range(1, 12)
        for b in range(a, 12)
        for c in range(b, 12)
    ]
    share = sum(is_heldout(t, nums) for t, nums in keys) / len(keys)
    assert abs(share - HELDOUT_PERCENT / 100) < 0.02


def test_is_heldout_ignores_number_order():
    assert is_heldout(98, [44, 19, 35]) == is_heldout(98, [35, 44, 19])


@pytest.mark.parametrize("sizes", [(3,), (4,), (3, 4)])
def test_train_and_test_never_share_a_key_across_sizes_and_seeds(sizes):
    test = heldout_tasks(60, seed=1, num_numbers=sizes)
    train = train_tasks(400, seed=2, num_numbers=(3, 4))
    assert {t.key for t in test}.isdisjoint({t.key for t in train})
    assert len(test) == 60 and len(train) == 400


def test_splits_are_deterministic_and_prefix_stable():
    assert heldout_tasks(30, seed=5) == heldout_tasks(30, seed=5)
    assert heldout_tasks(40, seed=5)[:30] == heldout_tasks(30, seed=5)
    assert train_tasks(50, seed=5)[:20] == train_tasks(20, seed=5)


def test_impossible_request_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot draw"):
        heldout_tasks(50, seed=0, num_numbers=2, max_number=3, max_target=12)


def test_countdown_sft_dataset_columns_and_disjointness():
    args = CountdownArguments(countdown_train_size=24, countdown_test_size=8, prompt_template="compact")
    ds = countdown_sft_dataset(args)
    assert set(ds) == {"train", "test"}
    assert len(ds["train"]) == 24 and len(ds["test"]) == 8
    assert {"prompt", "completion", "target", "nums"} <= set(ds["train"].column_names)
    train_keys = {canonical_key(r["target"], r["nums"]) for r in ds["train"]}
    test_keys = {canonical_key(r["target"], r["nums"]) for r in ds["test"]}
    assert train_keys.isdisjoint(test_keys)
    assert ds["train"][0]["prompt"][0]["role"] == "system"  # compact sends a short explicit system prompt


def test_bad_countdown_arguments_name_the_field():
    with pytest.raises(ValueError, match="countdown_num_numbers"):
        CountdownArguments(countdown_num_numbers=[1])
    with pytest.raises(ValueError, match="warmstart_failed_trace_share"):
        CountdownArguments(warmstart_failed_trace_share=1.5)
