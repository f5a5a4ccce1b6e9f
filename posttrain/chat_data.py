"""Chat and preference datasets: `HuggingFaceTB/smol-smoltalk` and `HuggingFaceH4/ultrafeedback_binarized`.

Each hub dataset has an offline twin, the *fixture* (`posttrain.chat_fixture`): rows in the hub's exact schema
(same splits, columns and message shapes) from task families with answers right by construction. `dataset_name="fixture"` selects it; the hub name selects the hub at a pinned revision. `resolve_source`
falls back to the fixture (with a warning, and `data_source` recorded by the caller) when the hub cannot be
reached, but only for runs with a row limit: a run that asked for every row (`dataset_max_train_rows: null`)
stops with an error instead of silently training on the small fixture. Callers resolve the source once per run
and pass it to the loaders, which never probe the hub again for an explicit name, so train and test splits
always come from the same source.

Every row that is used is validated; a row that breaks the schema raises `DatasetSchemaError` naming the
dataset, split, row and field.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from posttrain.chat_fixture import (
    SMOLTALK_SPLITS,
    ULTRAFEEDBACK_SPLITS,
    smoltalk_fixture_rows,
    ultrafeedback_fixture_rows,
)
from posttrain.io import atomic_write_jsonl

logger = logging.getLogger(__name__)

SMOLTALK_HUB_ID = "HuggingFaceTB/smol-smoltalk"
# The commit that public code pins for HuggingFaceTB/smol-smoltalk (it appears as that dataset's revision in
# several independent public repositories: data-prep scripts, run cards, manifests). Not yet checked against
# the hub itself (it was pinned without hub access); check it once online (`huggingface_hub.HfApi().dataset_info
# (SMOLTALK_HUB_ID, revision=SMOLTALK_REVISION)`) before publishing results.
SMOLTALK_REVISION = "f73fe857d519ff6ac5af2ea67c4d3834da7b8bcc"
ULTRAFEEDBACK_HUB_ID = "HuggingFaceH4/ultrafeedback_binarized"
# The revision public code pins for HuggingFaceH4/ultrafeedback_binarized (confirmed as that dataset's revision
# in several independent public repositories, some of which record the sha256 of its parquet files); not yet
# checked against the hub itself (pinned without hub access). The older revision with the TruthfulQA prompts and
# mislabeled completions is 292c16329d921287c4166934cac1a6ad1e13a6c5 (see the dataset card).
ULTRAFEEDBACK_REVISION = "3949bf5f8c17c394422ccfab0c31ea9c20bdeb85"
FIXTURE_NAME = "fixture"

ROLES = ("system", "user", "assistant")


class DatasetSchemaError(ValueError):
    """A row does not match the dataset's schema; the message names dataset, split, row and field."""


class HubUnreachableError(RuntimeError):
    """The hub dataset was asked for in full, but the hub cannot be reached (no silent fixture fallback)."""


# ----------------------------------------------------------------------------------------------------------
# Source selection
# ----------------------------------------------------------------------------------------------------------


_TRUE = {"1", "true", "yes", "on"}


def hub_offline_mode() -> bool:
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE asks for offline mode (read now, not at import)."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """False in offline mode (no probe) or when the hub does not answer an HTTP request within `timeout_s`.

    The probe goes through huggingface_hub's own HTTP session, so it honours what the downloads will use:
    HTTPS_PROXY / HTTP_PROXY / NO_PROXY, HF_ENDPOINT and custom certificates. Any HTTP answer below 500 counts
    as reachable; one request, no retries.
    """
    if hub_offline_mode():
        return False
    try:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session

        endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        response = get_session().head(f"{endpoint}/api/datasets", timeout=timeout_s)
    except Exception as exc:  # connection, proxy, TLS or timeout errors, offline-mode errors
        logger.debug("Hub probe failed: %s: %s", type(exc).__name__, exc)
        return False
    return response.status_code < 500


def resolve_source(dataset_name: str | None, hub_id: str, *, allow_fallback: bool = True) -> str:
    """`"fixture"` or `hub_id`: the hub when named (or unset) and reachable, else the fixture, loudly.

    Resolve once per run and pass the result to the loaders. With `allow_fallback=False` (a run that asked for
    every row of the hub dataset) an unreachable hub raises `HubUnreachableError` instead of falling back.
    """
    name = dataset_name or hub_id
    if name == FIXTURE_NAME:
        return FIXTURE_NAME
    if name != hub_id:
        raise ValueError(
            f"dataset_name={dataset_name!r} is not supported here; use {hub_id!r} or {FIXTURE_NAME!r}."
        )
    if hub_reachable():
        return hub_id
    why = (
        "offline mode is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
        if hub_offline_mode()
        else "no HTTP answer"
    )
    if not allow_fallback:
        raise HubUnreachableError(
            f"{hub_id} was asked for in full (no row limit: dataset_max_train_rows is null), but the hub is not "
            f"reachable ({why}). A full run does not fall back to the small offline fixture. Fix network access "
            f"(HTTPS_PROXY / HF_ENDPOINT, unset HF_HUB_OFFLINE), or pass --dataset_name {FIXTURE_NAME} to train "
            f"on the offline fixture on purpose."
        )
    logger.warning(
        "The hub is not reachable (%s): using the project's offline fixture in the schema of %s instead. Pass "
        "--dataset_name %s to choose it explicitly.",
        why,
        hub_id,
        FIXTURE_NAME,
    )
    return FIXTURE_NAME


def _source(dataset_name: str | None, hub_id: str, max_rows: int | None) -> str:
    """The loaders' source: an explicit name is used as is (callers resolve once); None is resolved here."""
    if dataset_name is None:
        return resolve_source(None, hub_id, allow_fallback=max_rows is not None)
    if dataset_name not in (FIXTURE_NAME, hub_id):
        raise ValueError(
            f"dataset_name={dataset_name!r} is not supported here; use {hub_id!r} or {FIXTURE_NAME!r}."
        )
    return dataset_name


def _limit(rows: list[dict], max_rows: int | None) -> list[dict]:
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1 or None, got {max_rows}.")
    return rows if max_rows is None else rows[:max_rows]


def _load_hub(hub_id: str, split: str, revision: str, max_rows: int | None):
    from datasets import load_dataset

    ds = load_dataset(hub_id, split=split, revision=revision)
    if max_rows is not None:
        ds = ds.select(range(min(max_rows, len(ds))))
    return ds


# ----------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------


def _fail(dataset: str, split: str, row: int, field: str, problem: str) -> DatasetSchemaError:
    return DatasetSchemaError(f"{dataset} [{split}] row {row}: field {field!r} {problem}")


def _check_messages(messages: Any, *, dataset: str, split: str, row: int, field: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise _fail(
            dataset, split, row, field, f"must be a non-empty list of messages, got {type(messages).__name__}"
        )
    expected = "user"
    for j, message in enumerate(messages):
        where = f"{field}[{j}]"
        if not isinstance(message, dict):
            raise _fail(
                dataset, split, row, where, f"must be a dict with role/content, got {type(message).__name__}"
            )
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise _fail(dataset, split, row, f"{where}.role", f"must be one of {list(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise _fail(
                dataset, split, row, f"{where}.content", f"must be a string, got {type(content).__name__}"
            )
        if role == "system":
            if j != 0:
                raise _fail(
                    dataset, split, row, f"{where}.role", "system is only allowed as the first message"
                )
            continue
        if role != expected:
            raise _fail(
                dataset, split, row, f"{where}.role", f"expected {expected!r} (turns alternate), got {role!r}"
            )
        expected = "assistant" if role == "user" else "user"
    if messages[-1].get("role") != "assistant":
        raise _fail(dataset, split, row, field, "must end with an assistant message")


def validate_smoltalk_rows(rows: Iterable[dict], *, split: str, dataset: str = SMOLTALK_HUB_ID) -> None:
    """Raise `DatasetSchemaError` on the first row whose `messages` is not a valid conversation."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "messages" not in row:
            raise _fail(dataset, split, i, "messages", "is missing")
        _check_messages(row["messages"], dataset=dataset, split=split, row=i, field="messages")


def validate_ultrafeedback_rows(
    rows: Iterable[dict], *, split: str, dataset: str = ULTRAFEEDBACK_HUB_ID
) -> None:
    """Raise `DatasetSchemaError` on the first row that breaks the ultrafeedback_binarized schema."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _fail(dataset, split, i, "prompt", "row is not a mapping")
        for field in ("prompt", "prompt_id", "chosen", "rejected"):
            if field not in row:
                raise _fail(dataset, split, i, field, "is missing")
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise _fail(dataset, split, i, "prompt", "must be a non-empty string")
        for field in ("chosen", "rejected"):
            _check_messages(row[field], dataset=dataset, split=split, row=i, field=field)
        for field in ("score_chosen", "score_rejected"):
            value = row.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise _fail(dataset, split, i, field, f"must be a number, got {value!r}")


# ----------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------


def load_smoltalk(
    dataset_name: str | None = None,
    split: str = "train",
    *,
    revision: str | None = None,
    max_rows: int | None = None,
    seed: int = 0,
):
    """A validated `datasets.Dataset` with `messages` (and `source`) from the hub or the offline fixture.

    `dataset_name`: `"fixture"`, the hub id (loaded from the hub, no reachability probe: pass the result of
    `resolve_source`, resolved once per run), or None (resolved here; the fixture fallback only with `max_rows`).
    """
    from datasets import Dataset

    source = _source(dataset_name, SMOLTALK_HUB_ID, max_rows)
    if source == FIXTURE_NAME:
        rows = _limit(smoltalk_fixture_rows(split, seed=seed), max_rows)
        validate_smoltalk_rows(rows, split=split, dataset=f"{SMOLTALK_HUB_ID} (fixture)")
        return Dataset.from_list(rows)
    ds = _load_hub(SMOLTALK_HUB_ID, split, revision or SMOLTALK_REVISION, max_rows)
    validate_smoltalk_rows(ds, split=split)
    return ds


def load_ultrafeedback(
    dataset_name: str | None = None,
    split: str = "train_prefs",
    *,
    revision: str | None = None,
    max_rows: int | None = None,
    seed: int = 0,
):
    """A validated `datasets.Dataset` in ultrafeedback_binarized's schema from the hub or the offline fixture.

    `dataset_name` as in `load_smoltalk`: `"fixture"`, the hub id (no probe), or None (resolved here).
    """
    from datasets import Dataset

    source = _source(dataset_name, ULTRAFEEDBACK_HUB_ID, max_rows)
    if source == FIXTURE_NAME:
        rows = _limit(ultrafeedback_fixture_rows(split, seed=seed), max_rows)
        validate_ultrafeedback_rows(rows, split=split, dataset=f"{ULTRAFEEDBACK_HUB_ID} (fixture)")
        return Dataset.from_list(rows)
    ds = _load_hub(ULTRAFEEDBACK_HUB_ID, split, revision or ULTRAFEEDBACK_REVISION, max_rows)
    validate_ultrafeedback_rows(ds, split=split)
    return ds


def ultrafeedback_prompts(
    dataset_name: str | None = None,
    split: str = "test_prefs",
    *,
    n: int | None = None,
    revision: str | None = None,
) -> list[str]:
    """The first `n` distinct user prompts of a split, in dataset order (stable across runs)."""
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1 or None, got {n}.")
    if dataset_name is None:  # a prompt sample (n set) may come from the fixture offline; all prompts may not
        dataset_name = resolve_source(None, ULTRAFEEDBACK_HUB_ID, allow_fallback=n is not None)
    ds = load_ultrafeedback(dataset_name, split, revision=revision)
    prompts: list[str] = []
    seen: set[str] = set()
    for prompt in ds["prompt"]:
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
            if n is not None and len(prompts) == n:
                break
    return prompts


def write_fixtures(output_dir: str) -> dict[str, str]:
    """Write both fixtures as JSONL files in a hub-like layout (`<dataset>/<split>.jsonl`) for inspection."""
    written = {}
    for hub_id, splits, make_rows in (
        (SMOLTALK_HUB_ID, SMOLTALK_SPLITS, smoltalk_fixture_rows),
        (ULTRAFEEDBACK_HUB_ID, ULTRAFEEDBACK_SPLITS, ultrafeedback_fixture_rows),
    ):
        for split in splits:
            path = Path(output_dir) / hub_id.replace("/", "__") / f"{split}.jsonl"
            atomic_write_jsonl(path, make_rows(split))
            written[f"{hub_id}:{split}"] = str(path)
    return written


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write the offline fixtures as JSONL for inspection.")
    parser.add_argument("output_dir")
    for name, path in write_fixtures(parser.parse_args().output_dir).items():
        print(f"{name} -> {path}")
