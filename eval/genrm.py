"""GenRM-CoT verifier scores for Countdown candidates, with the report's adaptive number of rationales.

    python -m eval.genrm --verifier runs/genrm-countdown/model --samples runs/eval/x/samples.jsonl \
        --output_dir runs/genrm-countdown/verify --k_min 8 --k_max 32 --chunk 8 --var_threshold 0.05

Score of a (task, candidate) pair (eq. 9-10 of the CS224R GenRM-CoT report): sample K verification rationales
from the verifier for the prompt of `posttrain.genrm.verification_prompt` ("Let's verify step by step."), cut
each before its question line and append "Is the answer correct?" (`posttrain.genrm.cut_at_question`), and read
P(Yes) = softmax over the next-token logits of " Yes" and " No"; the score is the mean P(Yes) over the K.

Adaptive K (the report's modification): draw K_min rationales, then chunks of `chunk` more while the variance of
the P(Yes) values is at or above `var_threshold`, up to K_max (defaults 8, 32, 8, 0.05; population variance).
K_min = K_max is the paper's fixed K. `next_chunk` is that rule as a pure function; `GenRMVerifier.score` runs
it for many pairs at once (each round's rationales in one batched generate). Pairs whose candidates show the
verifier the same text (same puzzle, same answer expression; `posttrain.genrm.verification_key`) are scored
once and the result reused.

The CLI scores the candidates of an `eval.countdown` samples file, writes ``candidates.jsonl`` (one line per
candidate: score, k_used, P(Yes) values, rule label) and ``summary.json`` (AUROC against the rule labels, mean
k_used, rationale tokens; with ``--fixed_k`` the same for a fixed K), each atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from posttrain.cli import run_cli
from posttrain.genrm import (
    NO,
    QUESTION,
    YES,
    candidate_answer,
    cut_at_question,
    verification_key,
    verification_prompt,
)
from posttrain.io import atomic_write_json, atomic_write_text, read_jsonl
from posttrain.sampling import SamplingParams, default_batch_size, generate, load_hf_model, render_prompts

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Adaptive K
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdaptiveK:
    """How many rationales per pair: K_min first, then chunks while Var(P(Yes)) >= var_threshold, up to K_max."""

    k_min: int = 8
    k_max: int = 32
    chunk: int = 8
    var_threshold: float = 0.05

    def __post_init__(self) -> None:
        for name in ("k_min", "k_max", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AdaptiveK.{name} must be an int >= 1, got {value!r}")
        if self.k_max < self.k_min:
            raise ValueError(f"AdaptiveK.k_max ({self.k_max}) must be >= k_min ({self.k_min})")
        if not self.var_threshold >= 0:  # also rejects NaN
            raise ValueError(f"AdaptiveK.var_threshold must be >= 0, got {self.var_threshold!r}")

    @classmethod
    def fixed(cls, k: int) -> AdaptiveK:
        """The paper's fixed K: K_min = K_max = k."""
        return cls(k_min=k, k_max=k, chunk=k)

    @property
    def is_fixed(self) -> bool:
        return self.k_min == self.k_max


def variance(values: Sequence[float]) -> float:
    """Population variance (0 for fewer than 2 values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return sum((v - mean) ** 2 for v in values) / n


def next_chunk(p_yes: Sequence[float], schedule: AdaptiveK) -> int:
    """How many more rationales to draw for a pair whose P(Yes) values so far are `p_yes` (0: stop).

    Up to K_min first; then 0 at K_max or once the variance is below the threshold, else min(chunk, K_max - k).
    (One value has variance 0, so K_min = 1 stops at one rationale.)
    """
    k = len(p_yes)
    if k < schedule.k_min:
        return schedule.k_min - k
    if k >= schedule.k_max or variance(p_yes) < schedule.var_threshold:
        return 0
    return min(schedule.chunk, schedule.k_max - k)


@dataclass
class PairScore:
    """A pair's verifier score: mean P(Yes) over its k_used rationales."""

    score: float
    k_used: int
    rationale_tokens: int  # tokens the verifier generated for this pair's rationales (0 when reused)
    stopped_early: bool  # stopped below K_max because the variance fell under the threshold
    p_yes: list[float] = field(default_factory=list)
    reused: bool = False  # a duplicate of an earlier pair (same verifier input): its result, no new tokens
    rationales: list[str] | None = None  # the sampled rationales, when the verifier keeps them


def _finish(
    p_yes: list[float], tokens: int, schedule: AdaptiveK, rationales: list[str] | None = None
) -> PairScore:
    return PairScore(
        score=sum(p_yes) / len(p_yes),
        k_used=len(p_yes),
        rationale_tokens=tokens,
        stopped_early=len(p_yes) < schedule.k_max,
        p_yes=list(p_yes),
        rationales=rationales,
    )


def run_adaptive(draw: Callable[[int], Sequence[float]], schedule: AdaptiveK | None = None) -> PairScore:
    """The adaptive rule for one pair: `draw(n)` returns n new P(Yes) values (token counts are not tracked)."""
    schedule = schedule or AdaptiveK()
    p_yes: list[float] = []
    while (n := next_chunk(p_yes, schedule)) > 0:
        new = list(draw(n))
        if len(new) != n:
            raise ValueError(f"draw({n}) returned {len(new)} values")
        p_yes += new
    return _finish(p_yes, 0, schedule)


# ----------------------------------------------------------------------------------------------------------
# AUROC
# ----------------------------------------------------------------------------------------------------------


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve: the chance that a random positive scores above a random negative, ties 1/2.

    Rank based (Mann-Whitney U with tied scores given their average rank). None when a class is empty.
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    values = [float(s) for s in scores]
    if any(math.isnan(v) for v in values):
        raise ValueError("scores contain NaN")
    n_pos = sum(bool(y) for y in labels)
    n_neg = len(values) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1  # average of the 1-based ranks i+1 .. j+1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


# ----------------------------------------------------------------------------------------------------------
# The verifier
# ----------------------------------------------------------------------------------------------------------


def answer_token_ids(tokenizer: Any) -> tuple[int, int]:
    """The token ids of " Yes" and " No" as they follow the question; ValueError unless each is one token."""
    base = tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    ids = []
    for word in (YES, NO):
        alone = tokenizer(word, add_special_tokens=False)["input_ids"]
        after = tokenizer(QUESTION + word, add_special_tokens=False)["input_ids"]
        if len(alone) != 1 or after != base + alone:
            raise ValueError(
                f"the verifier's tokenizer does not write {word!r} as one token after {QUESTION!r} (alone: {alone}, "
                f"after the question: {after[len(base) :]}); GenRM reads P(Yes) from one next-token distribution, "
                "so it needs a tokenizer with single-token answer words."
            )
        ids.append(alone[0])
    if ids[0] == ids[1]:
        raise ValueError(f"{YES!r} and {NO!r} map to the same token id {ids[0]}")
    return ids[0], ids[1]


class GenRMVerifier:
    """A generative verifier: `score` gives each (task, candidate completion) pair its mean P(Yes).

    `model` is a loaded causal LM (pass its `tokenizer`) or a name/path/"embedded" (loaded here). Rationales are
    sampled with `temperature`/`top_p`/`top_k` and at most `max_new_tokens` tokens each; round r of a run uses
    sampling seed `seed + r`, so added chunks draw new rationales. `batch_size` counts sequences per generate
    call and per P(Yes) forward pass (default: 32 on CPU, 64 on GPU). `keep_rationales` keeps the sampled texts
    in each `PairScore.rationales` (for reading what the verifier wrote).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new_tokens: int = 96,
        batch_size: int | None = None,
        seed: int = 0,
        revision: str | None = None,
        dtype: str = "auto",
        progress: bool = False,
        keep_rationales: bool = False,
    ) -> None:
        self.model, self.tokenizer = load_hf_model(model, tokenizer, revision=revision, dtype=dtype)
        self.yes_id, self.no_id = answer_token_ids(self.tokenizer)
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.max_new_tokens, self.batch_size, self.seed = max_new_tokens, batch_size, seed
        self.progress, self.keep_rationales = progress, keep_rationales
        self.sampling(1, 0)  # validate the sampling settings now, not after the first pairs

    def sampling(self, n: int, round_index: int) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            n=n,
            seed=self.seed + round_index,
            batch_size=self.batch_size,
        )

    def yes_probabilities(self, texts: Sequence[str]) -> list[float]:
        """P(Yes) = softmax over the (" Yes", " No") next-token logits after each full text (chat prompt included).

        Texts are tokenised like `posttrain.sampling` tokenises rendered prompts (no added special tokens) and
        run left-padded in batches, with position ids that skip the padding.
        """
        import torch

        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(f"text {i} is empty after tokenisation")
        device = _device(self.model)
        batch_size = self.batch_size or default_batch_size(device)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        out = [0.0] * len(encoded)
        was_training = bool(getattr(self.model, "training", False))
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    width = max(len(encoded[i]) for i in idx)
                    input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                    mask = torch.zeros((len(idx), width), dtype=torch.long)
                    for row, i in enumerate(idx):
                        input_ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i], dtype=torch.long)
                        mask[row, width - len(encoded[i]) :] = 1
                    positions = (mask.cumsum(-1) - 1).clamp(min=0)
                    logits = self.model(
                        input_ids=input_ids.to(device),
                        attention_mask=mask.to(device),
                        position_ids=positions.to(device),
                        logits_to_keep=1,
                    ).logits[:, -1, :]
                    pair = logits[:, [self.yes_id, self.no_id]].float()
                    for row, p in enumerate(torch.softmax(pair, dim=-1)[:, 0].tolist()):
                        out[idx[row]] = float(p)
        finally:
            if was_training:
                self.model.train()
        return out

    def _n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def score(self, pairs: Sequence[tuple[Any, str]], schedule: AdaptiveK | None = None) -> list[PairScore]:
        """A `PairScore` per (task, candidate completion) pair, in order; tasks are CountdownTasks or mappings
        with "target" and "nums".

        Every round draws each unfinished pair's next chunk (`next_chunk`) in one batched generate per chunk size,
        then reads the P(Yes) of the new rationales in batched forward passes. Pairs with the same verifier input
        (`verification_key`) are scored once; later ones get the result with `reused=True` and 0 tokens.
        `rationale_tokens` counts the re-tokenised text of every sampled rationale (EOS not counted).
        """
        from tqdm.auto import tqdm

        schedule = schedule or AdaptiveK()
        pairs = list(pairs)
        keys = [verification_key(task, completion) for task, completion in pairs]
        first: dict[Any, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        unique = list(first)
        prompts = {key: verification_prompt(*pairs[first[key]]) for key in unique}
        rendered = dict(
            zip(unique, render_prompts([prompts[k] for k in unique], self.tokenizer), strict=True)
        )
        p_yes: dict[Any, list[float]] = {key: [] for key in unique}
        tokens = dict.fromkeys(unique, 0)
        texts_of: dict[Any, list[str]] = {key: [] for key in unique}
        want = {key: next_chunk([], schedule) for key in unique}
        bar = tqdm(
            total=len(unique), desc="genrm verify", unit="pair", disable=not self.progress, file=sys.stderr
        )
        round_index = 0
        try:
            while want:
                groups: dict[int, list[Any]] = {}
                for key, n in want.items():
                    groups.setdefault(n, []).append(key)
                for n, group in groups.items():
                    samples = generate(
                        self.model,
                        [prompts[k] for k in group],
                        self.sampling(n, round_index),
                        tokenizer=self.tokenizer,
                        backend="hf",
                        progress=self.progress,  # a round can be long: show the rationales' progress too
                    )
                    texts, owners = [], []
                    for key, rationales in zip(group, samples, strict=True):
                        for rationale in rationales:
                            tokens[key] += self._n_tokens(rationale)
                            texts_of[key].append(rationale)
                            texts.append(rendered[key] + cut_at_question(rationale))
                            owners.append(key)
                    for key, p in zip(owners, self.yes_probabilities(texts), strict=True):
                        p_yes[key].append(p)
                round_index += 1
                pending = {key: next_chunk(p_yes[key], schedule) for key in want}
                want = {key: n for key, n in pending.items() if n > 0}
                bar.update(len(pending) - len(want))
        finally:
            bar.close()
        results = {
            key: _finish(p_yes[key], tokens[key], schedule, texts_of[key] if self.keep_rationales else None)
            for key in unique
        }
        out = []
        for i, key in enumerate(keys):
            r = results[key]
            if first[key] == i:
                out.append(r)
            else:
                out.append(replace(r, p_yes=list(r.p_yes), rationale_tokens=0, reused=True))
        return out


def _device(model: Any) -> Any:
    import torch

    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


# ----------------------------------------------------------------------------------------------------------
# CLI: score an eval.countdown samples file
# ----------------------------------------------------------------------------------------------------------


def load_samples(path: str | Path, max_candidates: int | None = None) -> list[dict[str, Any]]:
    """Rows of an `eval.countdown` samples.jsonl (fields task {target, nums}, completion, correct), validated."""
    rows = []
    for where, row in read_jsonl(path, "samples file"):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
        for name in ("task", "completion", "correct"):
            if name not in row:
                raise ValueError(f"{where}: missing field {name!r} (fields present: {sorted(row)})")
        task = row["task"]
        if not isinstance(task, dict) or "target" not in task or "nums" not in task:
            raise ValueError(f"{where}: field 'task' must be an object with 'target' and 'nums'")
        if not isinstance(row["completion"], str):
            raise ValueError(f"{where}: field 'completion' must be a string")
        if not isinstance(row["correct"], bool):
            raise ValueError(f"{where}: field 'correct' must be true or false, got {row['correct']!r}")
        rows.append(row)
        if max_candidates is not None and len(rows) >= max_candidates:
            break
    if not rows:
        raise ValueError(f"samples file {path} holds no candidates")
    return rows


def summarize(
    results: Sequence[PairScore], labels: Sequence[bool], schedule: AdaptiveK, seconds: float
) -> dict:
    """AUROC against the rule labels and the cost of one scoring run (k_used over distinct verifier inputs)."""
    distinct = [r for r in results if not r.reused]
    right = [r.score for r, y in zip(results, labels, strict=True) if y]
    wrong = [r.score for r, y in zip(results, labels, strict=True) if not y]
    return {
        "schedule": asdict(schedule),
        "auroc": auroc([r.score for r in results], labels),
        "mean_score_correct": sum(right) / len(right) if right else None,
        "mean_score_wrong": sum(wrong) / len(wrong) if wrong else None,
        "mean_k_used": sum(r.k_used for r in distinct) / len(distinct),
        "rationales": sum(r.k_used for r in distinct),
        "rationale_tokens": sum(r.rationale_tokens for r in distinct),
        "stopped_early_share": sum(r.stopped_early for r in distinct) / len(distinct),
        "wall_time_s": round(seconds, 1),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval.genrm",
        description="Score the candidates of an eval.countdown samples file with a GenRM-CoT verifier.",
    )
    p.add_argument("--verifier", required=True, help="verifier model: folder, hub name or 'embedded'")
    p.add_argument("--samples", required=True, help="samples.jsonl written by python -m eval.countdown")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--revision", default=None, help="hub revision of --verifier")
    p.add_argument("--max_candidates", type=int, default=None, help="score only the first N candidates")
    k = p.add_argument_group("rationales per candidate (adaptive K)")
    k.add_argument("--k_min", type=int, default=AdaptiveK.k_min)
    k.add_argument("--k_max", type=int, default=AdaptiveK.k_max)
    k.add_argument("--chunk", type=int, default=AdaptiveK.chunk)
    k.add_argument("--var_threshold", type=float, default=AdaptiveK.var_threshold)
    k.add_argument("--fixed_k", type=int, default=None, help="also score with a fixed K, for comparison")
    s = p.add_argument_group("rationale sampling")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top_p", type=float, default=1.0)
    s.add_argument("--top_k", type=int, default=0)
    s.add_argument("--max_new_tokens", type=int, default=96)
    s.add_argument("--batch_size", type=int, default=None, help="sequences per generate call / forward pass")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--save_rationales", action="store_true", help="write the sampled rationales too")
    s.add_argument("--no_progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    try:
        schedule = AdaptiveK(args.k_min, args.k_max, args.chunk, args.var_threshold)
        runs = {"fixed" if schedule.is_fixed else "adaptive": schedule}
        if args.fixed_k is not None:
            if schedule.is_fixed:
                raise ValueError("--fixed_k compares with adaptive K: give k_min < k_max, or drop --fixed_k")
            runs["fixed"] = AdaptiveK.fixed(args.fixed_k)
        if args.max_candidates is not None and args.max_candidates < 1:
            raise ValueError(f"--max_candidates must be >= 1, got {args.max_candidates}")
        rows = load_samples(args.samples, args.max_candidates)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None

    verifier = GenRMVerifier(
        args.verifier,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        revision=args.revision,
        progress=not args.no_progress,
        keep_rationales=args.save_rationales,
    )
    pairs = [(row["task"], row["completion"]) for row in rows]
    labels = [row["correct"] for row in rows]
    scored: dict[str, list[PairScore]] = {}
    summary: dict[str, Any] = {
        "verifier": args.verifier,
        "samples": str(Path(args.samples).resolve()),
        "n_candidates": len(rows),
        "n_distinct": len({verification_key(t, c) for t, c in pairs}),
        "n_tasks": len({(r["task"]["target"], tuple(r["task"]["nums"])) for r in rows}),
        "n_correct": sum(labels),
        "sampling": verifier.sampling(1, 0).to_dict() | {"n": None},
        "runs": {},
    }
    for name, run_schedule in runs.items():
        started = time.perf_counter()
        scored[name] = verifier.score(pairs, run_schedule)
        summary["runs"][name] = summarize(scored[name], labels, run_schedule, time.perf_counter() - started)
    summary["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="seconds")

    out = Path(args.output_dir)
    lines = []
    for i, row in enumerate(rows):
        line = {
            "task_index": row.get("task_index"),
            "sample_index": row.get("sample_index"),
            "target": row["task"]["target"],
            "nums": row["task"]["nums"],
            "answer": candidate_answer(row["completion"]),
            "correct": row["correct"],
        }
        for name in runs:
            line[name] = asdict(scored[name][i])
        lines.append(json.dumps(line) + "\n")
    atomic_write_text(out / "candidates.jsonl", "".join(lines))
    atomic_write_json(out / "summary.json", summary)
    for name, run in summary["runs"].items():
        auc = "n/a" if run["auroc"] is None else f"{run['auroc']:.3f}"
        print(
            f"GenRM {name}: AUROC {auc}, mean k {run['mean_k_used']:.1f}, {run['rationale_tokens']} rationale tokens, "
            f"{run['wall_time_s']} s"
        )
    print(f"summary: {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    run_cli(main)
