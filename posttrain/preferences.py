"""On-policy Countdown preference pairs for DPO (`python -m posttrain.preferences`), in TRL's explicit-prompt
format (``prompt`` / ``chosen`` / ``rejected``); the recipes load them with `posttrain.preference_data`.

    python -m posttrain.preferences --model runs/sft-countdown/model --output_dir runs/dpo-countdown/pairs \
        --n_prompts 128 --k 4 --temperature 1.0 --max_new_tokens 96

Sample ``k >= 2`` completions per *training* prompt (never a held-out task) at ``temperature > 0``, score them
with the Countdown reward (0 no answer, 0.1 wrong, 1 correct), pair the first best with the first worst, and drop
prompts whose samples all score the same (ties carry no preference). A sample that ran into ``max_new_tokens``
without stopping (found by re-tokenising its text) is never the chosen side: DPO would teach the model to stop
mid-text. It may still be the rejected side; a prompt whose only better samples were cut off is dropped. The
pairs are split into ``train`` and ``test`` (held-out *pairs* for reward accuracy; still training-side puzzles)
and saved with ``DatasetDict.save_to_disk`` into a temporary folder that is renamed into place, so a crash never
leaves a folder that loads. ``provenance.json`` in that folder records the model (and a fingerprint of its
files), the sampling backend (hf or vllm) and library versions, the sampling parameters, seed, k, the task
settings and the counts (prompts, pairs, dropped ties, truncated samples, pairs dropped for truncation). Running
the same command again finds a folder with the same request and reuses it without sampling (``--force``
resamples); another backend or library version is another request.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from posttrain.countdown import PROMPT_TEMPLATES, make_prompt
from posttrain.data import DEFAULT_TASK_SEED, train_tasks
from posttrain.dataset_names import is_pairs_folder
from posttrain.io import atomic_write_json
from posttrain.models import (
    load_tokenizer,
    local_model_fingerprint,
    missing_local_model_hint,
    resolve_model_name,
    trained_template,
)
from posttrain.preference_data import PROVENANCE_FILE, read_provenance
from posttrain.sampling import BACKENDS, SamplingParams, generate, is_conversational_prompts, resolve_backend
from rewards.countdown import countdown_reward

logger = logging.getLogger(__name__)

# Bump when the pairing rule or the saved columns change, so old folders are not reused silently.
# 2: truncated samples are never chosen; `rejected_truncated` column; backend and versions in the request.
PAIRS_FORMAT_VERSION = 2

Sampler = Callable[..., list[list[str]]]


# ----------------------------------------------------------------------------------------------------------
# On-policy pairs
# ----------------------------------------------------------------------------------------------------------


def select_pair(rewards: Sequence[float], choosable: Sequence[bool] | None = None) -> tuple[int, int] | None:
    """(index of the first best, index of the first worst), or None when there is no preference.

    ``choosable[i] == False`` (a truncated sample) keeps sample i off the chosen side; it can still be the
    rejected one. None when every reward is equal (a tie) or no choosable sample beats the worst.
    """
    if len(rewards) < 2:
        raise ValueError(f"a preference pair needs at least 2 scored samples, got {len(rewards)}")
    rewards = list(rewards)
    if choosable is None:
        choosable = [True] * len(rewards)
    if len(choosable) != len(rewards):
        raise ValueError(f"{len(choosable)} choosable flags for {len(rewards)} rewards")
    candidates = [i for i, ok in enumerate(choosable) if ok]
    if not candidates:
        return None
    best, worst = max(rewards[i] for i in candidates), min(rewards)
    if best == worst:
        return None
    return next(i for i in candidates if rewards[i] == best), rewards.index(worst)


PAIRINGS = ("best_worst", "greedy")


def greedy_anchored_pair(
    greedy_reward: float, rewards: Sequence[float], choosable: Sequence[bool], texts: Sequence[str]
) -> tuple[str, int] | None:
    """Pair against the answer greedy decoding gives (what the evaluation scores).

    Greedy right: ("greedy_chosen", the most frequent worse sample) - keep the mode. Greedy wrong: ("greedy_rejected",
    the most frequent choosable sample that beats it) - move the mode. None when no sample disagrees in reward.
    Best-vs-worst pairs mostly push down low-probability junk the greedy decoder never emits.
    """

    def most_frequent(indices: list[int]) -> int:
        return max(indices, key=lambda i: (sum(t == texts[i] for t in texts), -i))

    if greedy_reward == 1.0:
        worse = [i for i, r in enumerate(rewards) if r < greedy_reward]
        return ("greedy_chosen", most_frequent(worse)) if worse else None
    better = [i for i, r in enumerate(rewards) if r > greedy_reward and choosable[i]]
    return ("greedy_rejected", most_frequent(better)) if better else None


def _as_completion(text: str, conversational: bool) -> Any:
    return [{"role": "assistant", "content": text}] if conversational else text


def pairs_from_samples(
    prompts: Sequence[Any],
    samples: Sequence[Sequence[str]],
    rewards: Sequence[Sequence[float]],
    extra: Sequence[dict] | None = None,
    truncated: Sequence[Sequence[bool]] | None = None,
    greedy: Sequence[tuple[str, float]] | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """Preference rows (one per prompt with a usable pair) and the drop counts.

    With ``greedy`` (each prompt's greedy completion and its reward) the pairs are greedy-anchored
    (`greedy_anchored_pair`); else the first best sample is paired with the first worst.

    ``truncated[i][j]`` marks sample j of prompt i as cut off at max_new_tokens: never chosen. Drop counts:
    ``dropped_ties`` (every sample scored the same) and ``pairs_dropped_truncated`` (a preference existed, but
    every sample better than the worst was truncated).
    """
    conversational = is_conversational_prompts(prompts)
    rows, ties, dropped_truncated = [], 0, 0
    for i, (prompt, texts, scores) in enumerate(zip(prompts, samples, rewards, strict=True)):
        if len(texts) != len(scores):
            raise ValueError(f"prompt {i}: {len(texts)} samples but {len(scores)} rewards")
        cut = list(truncated[i]) if truncated is not None else [False] * len(texts)
        if len(cut) != len(texts):
            raise ValueError(f"prompt {i}: {len(texts)} samples but {len(cut)} truncation flags")
        if greedy is not None:
            greedy_text, greedy_reward = greedy[i]
            if all(r == greedy_reward for r in scores):
                ties += 1
                continue
            anchored = greedy_anchored_pair(greedy_reward, scores, [not c for c in cut], texts)
            if anchored is None:
                dropped_truncated += 1
                continue
            kind, j = anchored
            if kind == "greedy_chosen":
                chosen, rejected = (greedy_text, greedy_reward), (texts[j], scores[j])
                rejected_cut = cut[j]
            else:
                chosen, rejected = (texts[j], scores[j]), (greedy_text, greedy_reward)
                rejected_cut = False
        else:
            if select_pair(scores) is None:
                ties += 1
                continue
            pair = select_pair(scores, [not c for c in cut])
            if pair is None:
                dropped_truncated += 1
                continue
            best, worst = pair
            chosen, rejected = (texts[best], scores[best]), (texts[worst], scores[worst])
            rejected_cut = cut[worst]
        row = {
            "prompt": prompt,
            "chosen": _as_completion(chosen[0], conversational),
            "rejected": _as_completion(rejected[0], conversational),
            "chosen_reward": float(chosen[1]),
            "rejected_reward": float(rejected[1]),
        }
        if truncated is not None:
            row["rejected_truncated"] = bool(rejected_cut)
        if greedy is not None:
            row["pair_kind"] = kind
        if extra is not None:
            row.update(extra[i])
        rows.append(row)
    return rows, {"dropped_ties": ties, "pairs_dropped_truncated": dropped_truncated}


def truncated_flags(
    texts: Sequence[str], max_new_tokens: int, count_tokens: Callable[[str], int]
) -> list[bool]:
    """True for each sample that ran into ``max_new_tokens`` instead of stopping at an end-of-sequence token.

    The samplers return text only, so each completion is re-tokenised. A sample that stopped by itself used at
    most ``max_new_tokens - 1`` tokens before its end token (which counts towards the limit); one that reaches
    ``max_new_tokens - 1`` tokens is counted as cut off. That is conservative: a decode/encode round trip can
    differ by a token, and a complete sample that ends exactly there only loses its place on the chosen side.
    """
    limit = max(1, max_new_tokens - 1)
    return [count_tokens(text) >= limit for text in texts]


def token_counter(model: str, revision: str | None = None) -> Callable[[str], int]:
    """Tokens in a completion's text, with the model's tokenizer (no special tokens added)."""
    tokenizer = load_tokenizer(model, revision=revision)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def countdown_pairs(
    model: Any,
    tasks: Sequence[Any],
    *,
    template: str,
    params: Any,
    sampler: Sampler | None = None,
    backend: str = "auto",
    revision: str | None = None,
    count_tokens: Callable[[str], int] | None = None,
    pairing: str = "best_worst",
) -> tuple[list[dict], dict]:
    """Sample ``params.n`` completions per task, score them with the Countdown reward, pair them
    (``pairing``: best vs worst, or greedy-anchored: the greedy answer against a sample that disagrees).

    Returns (rows, counts). ``sampler`` defaults to `posttrain.sampling.generate` (tests pass a fake one);
    ``count_tokens`` (for finding truncated samples) defaults to the model's tokenizer.
    """
    if params.n < 2:
        raise ValueError(f"k (samples per prompt) must be >= 2 to form a pair, got {params.n}")
    if params.temperature <= 0:
        raise ValueError(
            f"temperature must be > 0 for on-policy pairs (greedy samples are identical), got {params.temperature}"
        )
    sampler = sampler or generate
    prompts = [make_prompt(t.nums, t.target, template) for t in tasks]
    samples = sampler(model, prompts, params, backend=backend, revision=revision)
    if len(samples) != len(prompts):
        raise RuntimeError(f"the sampler returned {len(samples)} results for {len(prompts)} prompts")
    rewards = [
        countdown_reward(texts, target=[t.target] * len(texts), nums=[list(t.nums)] * len(texts))
        for t, texts in zip(tasks, samples, strict=True)
    ]
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing={pairing!r}: use one of {list(PAIRINGS)}")
    greedy = None
    if pairing == "greedy":
        greedy_params = dataclasses.replace(params, temperature=0.0, n=1)
        greedy_texts = [
            outs[0] for outs in sampler(model, prompts, greedy_params, backend=backend, revision=revision)
        ]
        greedy_rewards = countdown_reward(
            greedy_texts, target=[t.target for t in tasks], nums=[list(t.nums) for t in tasks]
        )
        greedy = list(zip(greedy_texts, greedy_rewards, strict=True))
    if count_tokens is None:
        count_tokens = token_counter(model, revision)
    truncated = [truncated_flags(texts, params.max_new_tokens, count_tokens) for texts in samples]
    extra = [{"target": int(t.target), "nums": [int(x) for x in t.nums]} for t in tasks]
    rows, drops = pairs_from_samples(prompts, samples, rewards, extra, truncated, greedy)
    flat = [r for rs in rewards for r in rs]
    counts = {
        "prompts": len(prompts),
        "samples": len(flat),
        "pairs": len(rows),
        "dropped_ties": drops["dropped_ties"],
        "truncated_samples": sum(sum(flags) for flags in truncated),
        "pairs_dropped_truncated": drops["pairs_dropped_truncated"],
        "sample_accuracy": round(sum(r == 1.0 for r in flat) / max(1, len(flat)), 4),
        "sample_mean_reward": round(sum(flat) / max(1, len(flat)), 4),
        "pairs_correct_vs_wrong": sum(r["chosen_reward"] == 1.0 for r in rows),
    }
    if greedy is not None:
        counts["greedy_accuracy"] = round(sum(r == 1.0 for _, r in greedy) / max(1, len(greedy)), 4)
        counts["pairs_moving_greedy"] = sum(r.get("pair_kind") == "greedy_rejected" for r in rows)
    return rows, counts


def split_pairs(rows: list[dict], test_share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, test) by a seeded shuffle; test gets round(share * n) pairs, at least 1 when share > 0."""
    if not 0.0 <= test_share < 1.0:
        raise ValueError(f"test_share must be in [0, 1), got {test_share}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_test = 0 if test_share == 0 else max(1, round(test_share * len(rows)))
    if rows and n_test >= len(rows):
        raise ValueError(f"{len(rows)} pair(s) cannot be split into train and test (test_share={test_share})")
    test = sorted(order[:n_test])
    train = sorted(order[n_test:])
    return [rows[i] for i in train], [rows[i] for i in test]


def save_pairs(splits: dict[str, list[dict]], provenance: dict, output_dir: str | os.PathLike) -> Path:
    """`DatasetDict.save_to_disk` + provenance.json into a temp folder, then renamed to `output_dir`."""
    from datasets import Dataset, DatasetDict

    output = Path(output_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    old = None
    try:
        DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(str(tmp))
        atomic_write_json(tmp / PROVENANCE_FILE, provenance)
        if output.exists():
            # Move the old folder aside first: os.replace cannot replace a non-empty directory.
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            os.replace(output, old / output.name)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / output.name).exists() and not output.exists():
            os.replace(old / output.name, output)  # put the old folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return output


def model_identity(model: str, revision: str | None = None) -> dict:
    """Name, resolved path and (for local folders) a fingerprint of the weights, so a retrained model at the
    same path does not reuse pairs sampled from the old one."""
    return {
        "model": model,
        "model_path": str(resolve_model_name(model)),
        "model_revision": revision,
        "model_fingerprint": local_model_fingerprint(model),
    }


def backend_versions(backend: str) -> dict[str, str | None]:
    """Versions of the libraries that sample with `backend` (part of the reuse key)."""
    from importlib.metadata import PackageNotFoundError, version

    names = ("torch", "transformers") + (("vllm",) if backend == "vllm" else ())
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m posttrain.preferences",
        description="On-policy Countdown preference pairs (best vs worst of k samples) for DPO.",
    )
    p.add_argument("--model", required=True, help="hub name, local folder, or 'embedded'")
    p.add_argument("--revision", default=None, help="hub revision of --model")
    p.add_argument("--output_dir", required=True, help="the pairs folder (datasets.save_to_disk layout)")
    p.add_argument(
        "--template",
        default=None,
        choices=sorted(PROMPT_TEMPLATES),
        help="prompt template; default: the one the model was trained with (its run_summary.json), else chat",
    )
    t = p.add_argument_group("tasks (training side only; held-out tasks are never used)")
    t.add_argument("--n_prompts", type=int, default=128, help="training tasks to sample on")
    t.add_argument("--num_numbers", type=int, nargs="+", default=[3])
    t.add_argument("--max_number", type=int, default=30)
    t.add_argument("--data_seed", type=int, default=DEFAULT_TASK_SEED, help="task generator seed")
    t.add_argument(
        "--task_offset",
        type=int,
        default=0,
        help="skip the first N training tasks (e.g. the SFT recipe's countdown_train_size, for unseen prompts)",
    )
    s = p.add_argument_group("sampling")
    s.add_argument("--k", type=int, default=4, help="samples per prompt (>= 2)")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top_p", type=float, default=1.0)
    s.add_argument("--top_k", type=int, default=0, help="0 = disabled")
    s.add_argument("--max_new_tokens", type=int, default=96)
    s.add_argument("--seed", type=int, default=0, help="sampling seed (and train/test split seed)")
    s.add_argument("--batch_size", type=int, default=None, help="sequences per generate call")
    s.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument(
        "--pairing",
        default="best_worst",
        choices=PAIRINGS,
        help="best_worst: first best vs first worst sample; greedy: the greedy answer against the most frequent "
        "sample that disagrees with it (moves or keeps the answer the evaluation scores)",
    )
    p.add_argument(
        "--test_share", type=float, default=0.1, help="share of pairs held out for reward accuracy"
    )
    p.add_argument("--force", action="store_true", help="resample even if a matching pairs folder exists")
    return p


def _request(args: argparse.Namespace, template: str, params: Any, backend: str) -> dict:
    return {
        "format_version": PAIRS_FORMAT_VERSION,
        **model_identity(args.model, args.revision),
        "template": template,
        "backend": backend,
        "versions": backend_versions(backend),
        "sampling": params.to_dict(),
        "k": params.n,
        "seed": params.seed,
        "tasks": {
            "source": "posttrain.data.train_tasks",
            "n_prompts": args.n_prompts,
            "task_offset": args.task_offset,
            "num_numbers": list(args.num_numbers),
            "max_number": args.max_number,
            "data_seed": args.data_seed,
        },
        "test_share": args.test_share,
        "pairing": args.pairing,
    }


def main(argv: Sequence[str] | None = None, *, sampler: Sampler | None = None) -> dict:
    """Build (or reuse) a pairs folder; returns its provenance."""
    args = build_parser().parse_args(argv)
    missing = missing_local_model_hint(args.model)
    if missing is not None:  # before anything is built or loaded
        raise SystemExit(f"error: {missing}")
    template = args.template or trained_template(args.model) or "chat"
    try:
        if args.n_prompts < 1 or args.task_offset < 0:
            raise ValueError(
                f"--n_prompts must be >= 1 and --task_offset >= 0, got {args.n_prompts}, {args.task_offset}"
            )
        if args.k < 2:
            raise ValueError(f"--k must be >= 2 (a pair needs two samples), got {args.k}")
        if not args.temperature > 0:
            raise ValueError(
                f"--temperature must be > 0 (greedy samples are identical), got {args.temperature}"
            )
        if not 0.0 <= args.test_share < 1.0:
            raise ValueError(f"--test_share must be in [0, 1), got {args.test_share}")
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            n=args.k,
            seed=args.seed,
            batch_size=args.batch_size,
        )
        backend = resolve_backend(args.backend, args.model)  # hf or vllm: recorded, and what samples
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None

    request = _request(args, template, params, backend)
    existing = read_provenance(args.output_dir)
    if (
        not args.force
        and existing is not None
        and existing.get("request") == request
        and is_pairs_folder(args.output_dir)
    ):
        logger.info("Reusing %s: same model, sampling and tasks (--force resamples).", args.output_dir)
        print(f"pairs: {args.output_dir} (reused) {json.dumps(existing['counts'])}")
        return existing

    started = time.time()
    tasks = train_tasks(
        args.task_offset + args.n_prompts,
        seed=args.data_seed,
        num_numbers=tuple(args.num_numbers),
        max_number=args.max_number,
    )[args.task_offset :]
    rows, counts = countdown_pairs(
        args.model,
        tasks,
        template=template,
        params=params,
        sampler=sampler,
        backend=backend,
        revision=args.revision,
        pairing=args.pairing,
    )
    if counts["truncated_samples"]:
        logger.warning(
            "%d of %d samples ran into --max_new_tokens %d without stopping: they are never the chosen side "
            "(%d prompt(s) dropped for that). Raise --max_new_tokens if this is a large share.",
            counts["truncated_samples"],
            counts["samples"],
            args.max_new_tokens,
            counts["pairs_dropped_truncated"],
        )
    if len(rows) < 2:
        raise SystemExit(
            f"error: only {len(rows)} pair(s) from {counts['prompts']} prompts ({counts['dropped_ties']} ties: all "
            f"{args.k} samples scored the same; {counts['pairs_dropped_truncated']} dropped because every better "
            f"sample was cut off at --max_new_tokens {args.max_new_tokens}). Raise --k, --temperature, "
            f"--n_prompts or --max_new_tokens, or start from a model that answers in the <answer> format (e.g. "
            f"after `make sft-countdown`)."
        )
    train, test = split_pairs(rows, args.test_share, args.seed)
    counts.update({"train_pairs": len(train), "test_pairs": len(test)})
    provenance = {
        "request": request,
        "counts": counts,
        "wall_time_s": round(time.time() - started, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    splits = {"train": train, "test": test} if test else {"train": train}
    save_pairs(splits, provenance, args.output_dir)
    print(f"pairs: {args.output_dir} {json.dumps(counts)}")
    return provenance


if __name__ == "__main__":
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stdout
    )
    main()
