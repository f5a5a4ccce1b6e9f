"""Hidden test sets: what the server scores against, and the answer-free prompt files participants download.

Countdown set: JSONL rows ``{"id", "target", "nums", "split"?}``. UltraFeedback set: JSONL rows ``{"prompt",
"reference", "split"?}`` (the reference model's answer, which the submission must beat; ``id`` is the prompt's
sha256, as `eval.submit` keys items). ``split`` is ``public`` (scored on the board while it is open) or ``private``
(revealed when the admin closes it); a row without one is assigned from a hash of the file's bytes and its id, so
nobody without the file can tell the halves apart. `build_sets` makes both files offline (`make leaderboard-sets`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.io import atomic_write_json, atomic_write_jsonl, read_jsonl

logger = logging.getLogger(__name__)

PUBLIC, PRIVATE = "public", "private"
SPLITS = (PUBLIC, PRIVATE)


@dataclass(frozen=True)
class CountdownItem:
    id: str
    target: int
    nums: tuple[int, ...]
    split: str


@dataclass(frozen=True)
class UltraFeedbackItem:
    id: str
    prompt: str
    reference: str
    split: str


@dataclass
class HiddenSets:
    """Both sets (either may be absent) and the sha256 of the files they came from."""

    countdown: dict[str, CountdownItem]
    ultrafeedback: dict[str, UltraFeedbackItem]
    fingerprint: dict[str, str]

    def tasks(self) -> list[str]:
        return [t for t in ("countdown", "ultrafeedback") if getattr(self, t)]

    def public_prompts(self, task: str) -> bytes:
        """The JSONL participants download: Countdown ``{"id", "target", "nums"}``, UltraFeedback ``{"prompt"}``
        (no split, no reference); `eval.submit --countdown_prompts/--ultrafeedback_prompts` reads it as is."""
        if task == "countdown":
            rows = [{"id": i.id, "target": i.target, "nums": list(i.nums)} for i in self.countdown.values()]
        elif task == "ultrafeedback":
            rows = [{"prompt": i.prompt} for i in self.ultrafeedback.values()]
        else:
            raise KeyError(task)
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _split_of(row: dict[str, Any], where: str, salt: str, key: str, public_fraction: float) -> str:
    split = row.get("split")
    if split is None:
        draw = int(hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[:8], 16) / 16**8
        return PUBLIC if draw < public_fraction else PRIVATE
    if split not in SPLITS:
        raise ValueError(f"{where}: field 'split' must be one of {list(SPLITS)}, got {split!r:.80}")
    return split


def load_countdown_set(
    path: str | Path, public_fraction: float = 0.5
) -> tuple[dict[str, CountdownItem], str]:
    """The Countdown set keyed by id, and the file's sha256; errors name the line and the field."""
    from eval.countdown import task_from_row

    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    items: dict[str, CountdownItem] = {}
    for where, row in read_jsonl(path, "countdown set"):
        task = task_from_row(row, where)
        rid = row.get("id")
        if not isinstance(rid, str) or not rid.strip():
            raise ValueError(f"{where}: field 'id' must be a non-empty string, got {rid!r:.80}")
        if rid in items:
            raise ValueError(f"{where}: duplicate id {rid!r}")
        split = _split_of(row, where, digest, rid, public_fraction)
        items[rid] = CountdownItem(rid, task.target, task.nums, split)
    if not items:
        raise ValueError(f"{path}: the countdown set holds no tasks")
    return items, digest


def load_ultrafeedback_set(
    path: str | Path, public_fraction: float = 0.5
) -> tuple[dict[str, UltraFeedbackItem], str]:
    """The UltraFeedback set keyed by the prompt's sha256, and the file's sha256."""
    from eval.winrate import prompt_id

    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    items: dict[str, UltraFeedbackItem] = {}
    for where, row in read_jsonl(path, "ultrafeedback set"):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object with 'prompt' and 'reference'")
        for field in ("prompt", "reference"):
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise ValueError(f"{where}: field {field!r} must be a non-empty string")
        pid = prompt_id(row["prompt"])
        if pid in items:
            raise ValueError(f"{where}: duplicate prompt")
        split = _split_of(row, where, digest, pid, public_fraction)
        items[pid] = UltraFeedbackItem(pid, row["prompt"], row["reference"], split)
    if not items:
        raise ValueError(f"{path}: the ultrafeedback set holds no prompts")
    return items, digest


def load_sets(
    countdown: str | Path | None, ultrafeedback: str | Path | None, public_fraction: float = 0.5
) -> HiddenSets:
    if not 0 < public_fraction < 1:
        raise ValueError(f"public_fraction must be in (0, 1), got {public_fraction}")
    if countdown is None and ultrafeedback is None:
        raise ValueError(
            "the board needs at least one hidden set: --countdown_set and/or --ultrafeedback_set"
        )
    sets = HiddenSets({}, {}, {})
    if countdown is not None:
        sets.countdown, sets.fingerprint["countdown"] = load_countdown_set(countdown, public_fraction)
    if ultrafeedback is not None:
        sets.ultrafeedback, sets.fingerprint["ultrafeedback"] = load_ultrafeedback_set(
            ultrafeedback, public_fraction
        )
    return sets


def _halves(n: int, rng: secrets.SystemRandom) -> list[str]:
    """Exactly half public (the odd one private), in a secret order."""
    splits = [PUBLIC] * (n // 2) + [PRIVATE] * (n - n // 2)
    rng.shuffle(splits)
    return splits


def build_sets(
    out_dir: str | Path,
    *,
    countdown_n: int = 200,
    ultrafeedback_n: int = 64,
    ultrafeedback_prompts: str = "fixture",
    reference: str = "Qwen/Qwen2.5-0.5B-Instruct",
    max_new_tokens: int = 256,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``countdown.jsonl`` and ``ultrafeedback.jsonl`` (with splits) and ``manifest.json`` to ``out_dir``.

    Countdown: held-out tasks (`posttrain.data.heldout_tasks`, never trained on) from a fresh secret seed, so the
    set cannot be regenerated from the public seeds. UltraFeedback: the first ``ultrafeedback_n`` prompts of
    ``ultrafeedback_prompts`` with the ``reference`` model's greedy answers (the embedded model when that one is
    neither cached nor reachable, recorded in the manifest).
    """
    from eval.winrate import generate_responses, load_prompt_set, resolve_reference
    from posttrain.data import heldout_tasks
    from posttrain.sampling import SamplingParams

    out = Path(out_dir)
    rng = secrets.SystemRandom()
    seed = rng.randrange(2**31)
    tasks = heldout_tasks(countdown_n, seed=seed)
    splits = _halves(len(tasks), rng)
    countdown_rows = [
        {"id": f"lb-{i:05d}", "target": t.target, "nums": list(t.nums), "split": s}
        for i, (t, s) in enumerate(zip(tasks, splits, strict=True))
    ]
    prompts, info = load_prompt_set(ultrafeedback_prompts, n=ultrafeedback_n)
    model, fell_back = resolve_reference(reference)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    references, _ = generate_responses(
        model, prompts, params, revision=None, backend="auto", cache_dir=None, progress=progress
    )
    splits = _halves(len(prompts), rng)
    uf_rows = [
        {"prompt": p, "reference": r if r.strip() else "(no answer)", "split": s}
        for p, r, s in zip(prompts, references, splits, strict=True)
    ]
    atomic_write_jsonl(out / "countdown.jsonl", countdown_rows)
    atomic_write_jsonl(out / "ultrafeedback.jsonl", uf_rows)
    manifest = {
        "countdown": {"n": len(countdown_rows), "heldout_seed": seed},
        "ultrafeedback": {
            "n": len(uf_rows),
            "prompts": info,
            "reference": model,
            "reference_fallback": fell_back,
        },
    }
    atomic_write_json(out / "manifest.json", manifest)
    logger.info(
        "hidden sets written to %s: %d countdown tasks, %d prompts", out, len(countdown_rows), len(uf_rows)
    )
    return manifest
