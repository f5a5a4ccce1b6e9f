"""Preference data for the DPO and reward recipes, and the held-out pair metrics they report before and after.

Everything here produces TRL's *explicit-prompt* preference format: ``prompt`` / ``chosen`` / ``rejected``,
conversational (message lists, ``chosen`` and ``rejected`` a single assistant message) when the prompt is a message
list, plain strings otherwise. DPOTrainer and RewardTrainer both take this format as is. The data is UltraFeedback
(hub at the pinned revision, or the offline fixture) or a pairs folder written by `python -m posttrain.preferences`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.chat_data import (
    FIXTURE_NAME,
    ULTRAFEEDBACK_HUB_ID,
    ULTRAFEEDBACK_REVISION,
    DatasetSchemaError,
    load_ultrafeedback,
    resolve_source,
)
from posttrain.dataset_names import ULTRAFEEDBACK, dataset_kind

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"  # written next to a pairs folder by `python -m posttrain.preferences`
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class PreferenceArguments:
    """Project options of the DPO and reward recipes (prefixed: one flat namespace with TRL's fields)."""

    preference_eval_before: bool = field(
        default=True,
        metadata={"help": "Evaluate the held-out pairs before training too (the before/after comparison)."},
    )


# ----------------------------------------------------------------------------------------------------------
# UltraFeedback -> explicit-prompt preference format
# ----------------------------------------------------------------------------------------------------------


def ultrafeedback_to_preference(dataset: Any, *, split: str = "?", name: str = "ultrafeedback") -> Any:
    """``chosen``/``rejected`` conversations -> ``prompt`` (shared turns), ``chosen``/``rejected`` (last turn).

    ultrafeedback_binarized stores ``prompt`` as a string and the user turn inside ``chosen``/``rejected``; TRL
    would then prepend the prompt twice. The shared leading turns become the conversational prompt instead.
    """

    def convert(row: dict, index: int) -> dict:
        chosen, rejected = row["chosen"], row["rejected"]
        for field_name, messages in (("chosen", chosen), ("rejected", rejected)):
            if not messages or messages[-1].get("role") != "assistant" or len(messages) < 2:
                raise DatasetSchemaError(
                    f"{name} [{split}] row {index}: field {field_name!r} must be a conversation ending with an "
                    f"assistant reply after at least one user turn"
                )
        if chosen[:-1] != rejected[:-1]:
            raise DatasetSchemaError(
                f"{name} [{split}] row {index}: 'chosen' and 'rejected' must share the same turns before the "
                f"final assistant reply"
            )
        return {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}

    return dataset.map(convert, with_indices=True, remove_columns=dataset.column_names)


# ----------------------------------------------------------------------------------------------------------
# Loading preference data for the recipes
# ----------------------------------------------------------------------------------------------------------


def read_provenance(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _check_columns(ds: Any, where: str) -> None:
    missing = [c for c in PREFERENCE_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{where} lacks the preference column(s) {missing} (columns: {ds.column_names}); a preference "
            f"dataset needs prompt/chosen/rejected, e.g. a folder written by `python -m posttrain.preferences`."
        )


def load_pairs_folder(folder: str | os.PathLike, train_split: str, test_split: str | None) -> dict:
    """{split: Dataset} from a `save_to_disk` folder; a single Dataset is the train split (no test split)."""
    from datasets import Dataset, DatasetDict, load_from_disk

    loaded = load_from_disk(str(folder))
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({train_split: loaded})
    if train_split not in loaded:
        raise ValueError(
            f"dataset_train_split={train_split!r} is not a split of {folder} (splits: {sorted(loaded)})."
        )
    out = {"train": loaded[train_split]}
    if test_split and test_split in loaded:
        out["test"] = loaded[test_split]
    elif test_split:
        logger.warning("%s has no split %r: no held-out pair evaluation.", folder, test_split)
    for split, ds in out.items():
        _check_columns(ds, f"{folder} [{split}]")
    return out


def load_ultrafeedback_pairs(script_args: Any) -> tuple[dict, dict]:
    """UltraFeedback train/test pairs in the explicit-prompt format, and where they came from.

    The source is resolved once for both splits, so train and test cannot come from different sources; a run
    that asked for every row never falls back to the fixture silently.
    """
    train_split, test_split = script_args.dataset_train_split, script_args.dataset_test_split
    source = resolve_source(
        script_args.dataset_name,
        ULTRAFEEDBACK_HUB_ID,
        allow_fallback=script_args.dataset_max_train_rows is not None,
    )
    data = {}
    splits = {"train": (train_split, script_args.dataset_max_train_rows)}
    if test_split:
        splits["test"] = (test_split, script_args.dataset_max_test_rows)
    for key, (split, max_rows) in splits.items():
        raw = load_ultrafeedback(source, split, revision=script_args.dataset_revision, max_rows=max_rows)
        data[key] = ultrafeedback_to_preference(raw, split=split, name=ULTRAFEEDBACK_HUB_ID)
    revision = None if source == FIXTURE_NAME else script_args.dataset_revision or ULTRAFEEDBACK_REVISION
    return data, {"data_source": source, "dataset_revision": revision}


def load_preference_dataset(script_args: Any) -> tuple[dict, dict]:
    """({"train": Dataset, "test": Dataset?}, info) for `dataset_name`: a pairs folder, or UltraFeedback.

    UltraFeedback comes from the hub at the pinned revision, or from the offline fixture (`dataset_name:
    fixture`, or as a logged fallback when the hub is unreachable and the run has a row limit; a run over every
    row stops instead); `info["data_source"]` says which.
    """
    name = script_args.dataset_name
    if dataset_kind(name, "preference") == ULTRAFEEDBACK:
        return load_ultrafeedback_pairs(script_args)
    data = load_pairs_folder(name, script_args.dataset_train_split, script_args.dataset_test_split)
    info: dict[str, Any] = {"data_source": str(Path(name).resolve()), "provenance": read_provenance(name)}
    limits = {"train": script_args.dataset_max_train_rows, "test": script_args.dataset_max_test_rows}
    for key, limit in limits.items():
        if key in data and limit is not None:
            data[key] = data[key].select(range(min(limit, len(data[key]))))
    return data, info


# ----------------------------------------------------------------------------------------------------------
# Before/after evaluation of the recipes
# ----------------------------------------------------------------------------------------------------------

# Metrics reported before and after training: TRL's eval keys -> our names.
DPO_EVAL_KEYS = {
    "eval_rewards/accuracies": "reward_accuracy",
    "eval_rewards/margins": "reward_margin",
    "eval_loss": "loss",
    "eval_logps/chosen": "logps_chosen",
    "eval_logps/rejected": "logps_rejected",
}
REWARD_EVAL_KEYS = {"eval_accuracy": "pair_accuracy", "eval_margin": "reward_margin", "eval_loss": "loss"}


def policy_pair_accuracy(trainer: Any) -> float | None:
    """Share of held-out pairs where the policy gives the chosen completion a higher log-probability (summed
    over completion tokens) than the rejected one.

    DPO's implicit reward accuracy is 0 by construction before training (policy = reference, every reward 0),
    so this is the informative "before" number. None under DeepSpeed/FSDP (sharded weights outside the
    training loop) or without an eval set.
    """
    import torch

    if trainer.eval_dataset is None or trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        return None
    model = trainer.model
    was_training = model.training
    model.eval()
    wins = torch.zeros((), dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    try:
        with torch.no_grad():
            for batch in trainer.get_eval_dataloader():
                labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
                out = model(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    labels=labels,
                    fused_lm_head=True,
                    use_cache=False,
                )
                seq_len = batch["completion_mask"].size(1) - 1
                logps = out.log_probs[:, -seq_len:].sum(dim=1)  # zero where labels are -100
                chosen, rejected = logps.chunk(2, dim=0)
                better = trainer.accelerator.gather_for_metrics((chosen > rejected).double())
                wins += better.sum().cpu()
                total += better.numel()
    finally:
        model.train(was_training)
    return round(float(wins / total), 4) if total > 0 else None


def evaluate_pairs(trainer: Any, keys: dict[str, str], *, policy_accuracy: bool = False) -> dict:
    """trainer.evaluate() on the held-out pairs, reduced to `keys` (plus the policy's pair accuracy).

    Runs under the accelerator's autocast: before train() only the reference model's forward is wrapped in it,
    so with bf16 mixed precision the policy would run in float32 against a bf16 reference and DPO's "before"
    numbers would show a spurious preference (reward accuracy 0.80, margin 0.06 on the UltraFeedback fixture)."""
    with trainer.accelerator.autocast():
        metrics = trainer.evaluate()
        out = {name: round(float(metrics[key]), 4) for key, name in keys.items() if key in metrics}
        if policy_accuracy:
            out["policy_pair_accuracy"] = policy_pair_accuracy(trainer)
    return out


def format_before_after(before: dict | None, after: dict) -> str:
    """A small plain-text table: metric, before, after."""
    names = list(after) + [k for k in (before or {}) if k not in after]
    lines = [f"{'held-out pairs':<22} {'before':>10} {'after':>10}"]
    for name in names:
        b = (before or {}).get(name)
        a = after.get(name)
        lines.append(
            f"{name:<22} {'-' if b is None else f'{b:.4f}':>10} {'-' if a is None else f'{a:.4f}':>10}"
        )
    return "\n".join(lines)
