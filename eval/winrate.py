"""Win rate of a policy against a reference model, judged by a reward endpoint (Nemotron-70B-Reward or local).

    python -m eval.winrate --model runs/dpo-ultrafeedback/model --reference Qwen/Qwen2.5-0.5B-Instruct \\
        --reward_url https://integrate.api.nvidia.com/v1 --reward_model nvidia/llama-3.1-nemotron-70b-reward \\
        --api_key_env NVIDIA_API_KEY
    python -m eval.winrate --model embedded --reference embedded --serve_rm runs/rm-ultrafeedback/model  # offline
    make serve-reward RM=...   # then, in another terminal:   make eval-winrate MODEL=... REFERENCE=...

For every prompt, the policy and the reference answer it (`posttrain.sampling.generate`, the same sampling settings
for both; the chat template of each model is applied to ``[{"role": "user", "content": prompt}]``). Each
answer is scored by the endpoint as the plain conversation ``[user prompt, assistant response]``, and the
prompt is a win when the policy's reward is strictly higher, a loss when lower, a tie when equal.

Reported (``summary.json``, also printed): win rate = wins / scored prompts with its 95% Wilson interval, the
ties (and the win rate counting a tie as half a win), the mean rewards, how many conversations were truncated
to the endpoint's token limit, the request statistics, and every failed item with its error. A response the
endpoint answers unreadably is retried and, if it stays unreadable, listed as failed: never scored as 0.
``results.jsonl`` has one line per prompt. Both files are written atomically and carry the sampling
parameters, seed, model revisions (and the resolved hub commit, or a fingerprint of a local folder's files) and
the git commit: the summary at its top level, each result line in its ``run`` field.

Before anything is generated the judge answers the sanity probes of `eval.judge_probes` through the same client
(a right reply must outscore an empty, repeated, off-topic or wrong one): ``judge_probes`` in the summary,
``judge_probes.json`` in full, a loud warning when one fails, a stop with ``--stop_on_probe_failure``
(``--skip_probes`` for a paid judge). `eval.length_control` adds the length-controlled win rate (AlpacaEval-2
style: the predicted win rate at equal lengths), the judge's length effect and the win rate of length-matched
pairs, and the answers' length statistics.

Best-of-N (``--best_of N``): the policy samples N answers per prompt at ``--best_of_temperature`` (the run's seed),
the judge scores each through the same client, and the highest-scored one (`eval.best_of_n`; ties: the first)
is the policy's answer in the comparison; the reference answers as usual. ``best_of`` in the summary: the
candidates scored and failed, the prompts none of whose candidates could be scored (they keep their first
sample, and the command exits non-zero until a re-run scores them), the mean chosen score against the mean
candidate score; ``best_of.jsonl`` has each prompt's candidates, scores and chosen index.

Costs are paid once: generations are cached in ``--generation_cache`` (default ``<output_root>/generations/``,
shared by every comparison under that root, so the reference answers once for all the policies; keyed by model,
revision, a fingerprint of a local model folder's config, weight and tokenizer files, sampling parameters and
prompts) and rewards in an append-only cache keyed by (endpoint model, messages)
(``--reward_cache``), so re-running the same command after a crash, a kill or a partial failure only does the
missing work. The API key is read from the environment variable named by ``--api_key_env`` and is never
printed or saved.

Offline: the prompts default to the UltraFeedback test prompts (the project's fixture when the hub is
unreachable), the reference falls back from ``Qwen/Qwen2.5-0.5B-Instruct`` to ``embedded`` when that model is
neither cached nor downloadable (recorded as ``reference_fallback``), and ``--serve_rm`` starts the local reward
server (`eval.reward_server`) inside the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from eval import best_of_n, judge_probes
from eval.length_control import length_report
from eval.paired import mcnemar_exact
from eval.reward_client import (  # noqa: F401 (parse_reward, RewardParseError, pick_auto_reward_model: this API)
    RewardClient,
    RewardEndpointError,
    RewardParseError,
    ScoreResult,
    parse_reward,
    pick_auto_reward_model,
    redact_url,
)
from posttrain.cli import run_cli
from posttrain.io import atomic_write_json, atomic_write_jsonl
from posttrain.sampling import BACKENDS, SamplingParams, generate, resolve_backend
from rewards.api_retry import redact

logger = logging.getLogger("eval.winrate")

DEFAULT_REFERENCE = "Qwen/Qwen2.5-0.5B-Instruct"
DEFAULT_PROMPTS = "HuggingFaceH4/ultrafeedback_binarized"
DEFAULT_REWARD_URL = "http://127.0.0.1:8000/v1"
NEMOTRON_MAX_TOKENS = 4096  # Llama-3.1-Nemotron-70B-Reward's documented conversation limit
Z95 = 1.959963984540054


# ----------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n == 0."""
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def outcome(policy: float | None, reference: float | None) -> str:
    if policy is None or reference is None:
        return "failed"
    return "win" if policy > reference else "loss" if policy < reference else "tie"


# ----------------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------------


def prompt_id(prompt: str) -> str:
    """sha256 of the prompt text, the convention of ultrafeedback_binarized's ``prompt_id``."""
    return hashlib.sha256(prompt.encode()).hexdigest()


def _prompts_from_file(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if path.suffix == ".json":
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of strings or of objects with a 'prompt' field")
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {lineno}: invalid JSON ({exc.msg})") from None
    prompts = []
    for i, row in enumerate(rows):
        prompt = row.get("prompt") if isinstance(row, dict) else row
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(
                f"{path}: row {i}: needs a non-empty string 'prompt' (or be one), got {row!r:.80}"
            )
        prompts.append(prompt)
    return prompts


def load_prompt_set(
    source: str | None, *, split: str = "test_prefs", n: int | None = None, revision: str | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Prompts and a description of where they came from.

    ``source``: a file (``.jsonl``/``.json`` rows with a ``prompt`` field, or ``.txt`` one prompt per line),
    ``"fixture"``, ``HuggingFaceH4/ultrafeedback_binarized`` (default; the fixture when the hub is unreachable),
    or another hub dataset with a ``prompt`` column. Duplicates are dropped, order is kept, then the first
    ``n`` are taken.
    """
    from posttrain import chat_data

    if n is not None and n < 1:
        raise ValueError(f"the number of prompts must be >= 1, got {n}")
    source = source or DEFAULT_PROMPTS
    path = Path(source)
    if path.is_file():
        prompts = _prompts_from_file(path)
        info: dict[str, Any] = {
            "file": str(path.resolve()),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    elif source in (chat_data.FIXTURE_NAME, chat_data.ULTRAFEEDBACK_HUB_ID):
        resolved = chat_data.resolve_source(source, chat_data.ULTRAFEEDBACK_HUB_ID)
        prompts = chat_data.ultrafeedback_prompts(resolved, split, revision=revision)
        info = {
            "dataset": resolved,
            "split": split,
            "revision": None
            if resolved == chat_data.FIXTURE_NAME
            else revision or chat_data.ULTRAFEEDBACK_REVISION,
        }
    elif "/" in source and not source.startswith((".", "/")) and source.count("/") == 1:
        from datasets import load_dataset

        try:
            ds = load_dataset(source, split=split, revision=revision)
        except Exception as exc:
            raise ValueError(
                f"prompt set {source!r} is neither a file nor a loadable hub dataset ({type(exc).__name__}: {exc})"
            ) from None
        if "prompt" not in ds.column_names:
            raise ValueError(
                f"hub dataset {source} [{split}] has no 'prompt' column (columns: {ds.column_names})"
            )
        prompts = [p for p in ds["prompt"] if isinstance(p, str) and p.strip()]
        info = {"dataset": source, "split": split, "revision": revision}
    else:
        raise ValueError(
            f"prompt set {source!r}: no such file, and not a hub dataset id; pass a .jsonl/.json/.txt file, "
            f"'fixture' or a hub dataset such as {DEFAULT_PROMPTS}"
        )
    unique = list(dict.fromkeys(prompts))
    if n is not None:
        unique = unique[:n]
    if not unique:
        raise ValueError(f"prompt set {source!r} holds no prompts")
    info["n_prompts"] = len(unique)
    return unique, info


# ----------------------------------------------------------------------------------------------------------
# Models and generation
# ----------------------------------------------------------------------------------------------------------


def resolve_reference(name: str) -> tuple[str, bool]:
    """``(model, fell_back)``: the named reference, or ``embedded`` when it is neither local nor reachable."""
    from posttrain.chat_data import hub_reachable
    from posttrain.models import EMBEDDED_MODEL_NAME

    if name == EMBEDDED_MODEL_NAME or Path(name).exists():
        return name, False
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:
        cached = False
    if cached or hub_reachable():
        return name, False
    logger.warning(
        "reference %s is not in the local cache and the hub is unreachable: using the embedded model as the "
        "reference instead (recorded as reference_fallback in summary.json). Pass --reference to choose.",
        name,
    )
    return EMBEDDED_MODEL_NAME, True


def local_model_fingerprint(model: str) -> str | None:
    """A fingerprint of a local model folder's config, weight and tokenizer files; None for hub names and
    ``embedded`` (their identity is the name and revision)."""
    from posttrain.models import model_fingerprint

    path = Path(model)
    return model_fingerprint(path, length=16) if path.is_dir() else None


def resolve_model_commit(model: str, revision: str | None) -> str | None:
    """The hub commit a model name and revision resolve to (what older transformers kept as
    ``model.config._commit_hash``), read from the local hub cache only: the snapshot folder its config.json
    lies in. None for local folders, ``embedded`` and anything not cached."""
    from posttrain.models import EMBEDDED_MODEL_NAME

    if model == EMBEDDED_MODEL_NAME or Path(model).exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json", revision=revision)
    except Exception:  # not a valid repo id, no cache
        return None
    if not isinstance(cached, str):
        return None
    commit = Path(cached).parent.name
    return commit if len(commit) == 40 and all(c in "0123456789abcdef" for c in commit) else None


def _generation_spec(
    model: str, revision: str | None, params: SamplingParams, backend: str, prompts: list[str]
):
    spec = {
        "model": model,
        "revision": revision,
        # A model retrained into the same folder must not reuse the old model's generations.
        "fingerprint": local_model_fingerprint(model),
        "sampling": params.to_dict()
        | {"batch_size": None},  # batch size does not change greedy outputs' intent
        "backend": backend,
        "prompts_sha256": hashlib.sha256(json.dumps(prompts).encode()).hexdigest(),
    }
    return spec, hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def generate_candidates(
    model: str,
    prompts: list[str],
    params: SamplingParams,
    *,
    revision: str | None,
    backend: str,
    cache_dir: Path | None,
    progress: bool = True,
) -> tuple[list[list[str]], bool]:
    """``params.n`` responses per prompt (chat template applied), reused from ``cache_dir`` when the spec
    matches, and whether they were. With ``n == 1`` the cache file is the one-response-per-prompt list it has
    always been, so older caches stay valid."""
    chosen = resolve_backend(backend, model)
    spec, digest = _generation_spec(model, revision, params, chosen, prompts)
    path = cache_dir / f"{digest}.json" if cache_dir else None
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text())
            rows = saved.get("responses", [])
            if saved.get("spec") == spec and len(rows) == len(prompts):
                if params.n == 1:
                    rows = [[r] for r in rows]
                if all(isinstance(r, list) and len(r) == params.n for r in rows):
                    logger.info("reusing %d generations of %s from %s", len(prompts), model, path)
                    return [[str(c) for c in r] for r in rows], True
        except (json.JSONDecodeError, AttributeError):
            logger.warning("ignoring unreadable generation cache %s", path)
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    outputs = generate(model, conversations, params, backend=chosen, revision=revision, progress=progress)
    candidates = [list(outs) for outs in outputs]
    if path is not None:
        saved_rows: list[Any] = [c[0] for c in candidates] if params.n == 1 else candidates
        atomic_write_json(path, {"spec": spec, "responses": saved_rows})
    return candidates, False


def generate_responses(
    model: str,
    prompts: list[str],
    params: SamplingParams,
    *,
    revision: str | None,
    backend: str,
    cache_dir: Path | None,
    progress: bool = True,
) -> tuple[list[str], bool]:
    """One response per prompt (chat template applied), reused from ``cache_dir`` when the spec matches."""
    if params.n != 1:
        raise ValueError(
            f"generate_responses gives one response per prompt (n=1), got n={params.n}; use "
            f"generate_candidates"
        )
    candidates, reused = generate_candidates(
        model, prompts, params, revision=revision, backend=backend, cache_dir=cache_dir, progress=progress
    )
    return [c[0] for c in candidates], reused


# ----------------------------------------------------------------------------------------------------------
# Truncation to the endpoint's limit
# ----------------------------------------------------------------------------------------------------------


def truncate_pair(prompt: str, response: str, tokenizer: Any, budget: int) -> tuple[str, str, bool]:
    """Cut ``prompt + response`` to at most ``budget`` tokens: the response first, the prompt only if it alone
    takes more than half. Returns the texts and whether anything was cut."""
    p_ids = tokenizer.encode(prompt, add_special_tokens=False)
    r_ids = tokenizer.encode(response, add_special_tokens=False)
    if len(p_ids) + len(r_ids) <= budget:
        return prompt, response, False
    if len(p_ids) > budget // 2:
        keep_prompt = max(budget // 2, budget - len(r_ids))
        if len(p_ids) > keep_prompt:
            prompt = tokenizer.decode(p_ids[:keep_prompt], skip_special_tokens=False)
            p_ids = p_ids[:keep_prompt]
    keep_response = max(0, budget - len(p_ids))
    if len(r_ids) > keep_response:
        response = tokenizer.decode(r_ids[:keep_response], skip_special_tokens=False)
    return prompt, response, True


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------


Conversation = list[dict[str, str]]
ROLES = ("policy", "reference")


def scoring_budget(max_reward_tokens: int, reward_token_margin: int, concurrency: int) -> int:
    """Tokens left for prompt and response under the endpoint's limit (a clear error when too few)."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    budget = max_reward_tokens - reward_token_margin
    if budget < 16:
        raise ValueError(
            f"max_reward_tokens ({max_reward_tokens}) minus reward_token_margin ({reward_token_margin}) leaves "
            f"{budget} tokens for prompt and response; raise the limit or lower the margin"
        )
    return budget


def generate_both(
    prompts: list[str],
    params: SamplingParams,
    models: dict[str, tuple[str, str | None]],
    *,
    backend: str,
    cache_dir: Path,
    progress: bool,
) -> tuple[dict[str, list[str]], dict[str, bool]]:
    """Responses of policy and reference (``models``: role -> (name, revision)) and whether each was reused."""
    responses: dict[str, list[str]] = {}
    reused: dict[str, bool] = {}
    for role in ROLES:
        name, revision = models[role]
        responses[role], reused[role] = generate_responses(
            name, prompts, params, revision=revision, backend=backend, cache_dir=cache_dir, progress=progress
        )
    return responses, reused


def build_conversations(
    prompts: list[str], responses: dict[str, list[str]], tokenizer: Any, budget: int
) -> tuple[dict[str, list[Conversation]], dict[str, list[bool]]]:
    """Per role, the ``[user, assistant]`` conversations cut to ``budget`` tokens, and which were cut."""
    conversations: dict[str, list[Conversation]] = {}
    truncated: dict[str, list[bool]] = {}
    for role in ROLES:
        if len(responses[role]) != len(prompts):
            raise ValueError(f"{role}: {len(responses[role])} responses for {len(prompts)} prompts")
        conversations[role], truncated[role] = [], []
        for prompt, response in zip(prompts, responses[role], strict=True):
            p, r, cut = truncate_pair(prompt, response, tokenizer, budget)
            conversations[role].append([{"role": "user", "content": p}, {"role": "assistant", "content": r}])
            truncated[role].append(cut)
    return conversations, truncated


def _conversation_key(conversation: Conversation) -> str:
    return json.dumps(conversation, sort_keys=True)


def score_conversations(
    client: RewardClient, conversations: dict[str, list[Conversation]], concurrency: int
) -> dict[str, ScoreResult]:
    """Each distinct conversation of every group (role) scored once: identical answers of policy and
    reference are one request."""
    jobs = {_conversation_key(c): c for group in conversations.values() for c in group}
    return dict(zip(jobs, client.score_many(list(jobs.values()), concurrency), strict=True))


def run_provenance(
    *,
    model: str,
    model_revision: str | None,
    reference: str,
    reference_revision: str | None,
    params: SamplingParams,
    backend: str,
    reward_model: str,
    best_of: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What produced the numbers: on every result line (``run``) and at the top of the summary; ``best_of``
    (``{"n", "temperature"}``) only when the policy's answers were picked among N candidates."""
    from posttrain.runtime import git_commit

    provenance = {
        "model": model,
        "model_revision": model_revision,
        "model_commit": resolve_model_commit(model, model_revision),
        "model_fingerprint": local_model_fingerprint(model),
        "reference": reference,
        "reference_revision": reference_revision,
        "reference_commit": resolve_model_commit(reference, reference_revision),
        "reference_fingerprint": local_model_fingerprint(reference),
        "sampling": params.to_dict(),
        "seed": params.seed,
        "backend": resolve_backend(backend, model),
        "reward_model": reward_model,
        "git_commit": git_commit(),
    }
    if best_of is not None:
        provenance["best_of"] = best_of
    return provenance


def result_rows(
    prompts: list[str],
    responses: dict[str, list[str]],
    conversations: dict[str, list[Conversation]],
    truncated: dict[str, list[bool]],
    scores: dict[str, ScoreResult],
    provenance: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One ``results.jsonl`` row per prompt (its outcome and rewards), and every failed (prompt, role)."""
    rows, failed = [], []
    for i, prompt in enumerate(prompts):
        res = {role: scores[_conversation_key(conversations[role][i])] for role in ROLES}
        errors = {role: res[role].error for role in ROLES if res[role].score is None}
        for role, error in errors.items():
            failed.append({"index": i, "prompt_id": prompt_id(prompt), "role": role, "error": error})
        rows.append(
            {
                "index": i,
                "prompt_id": prompt_id(prompt),
                "prompt": prompt,
                "policy_response": responses["policy"][i],
                "reference_response": responses["reference"][i],
                "policy_reward": res["policy"].score,
                "reference_reward": res["reference"].score,
                "outcome": outcome(res["policy"].score, res["reference"].score),
                "policy_truncated": truncated["policy"][i],
                "reference_truncated": truncated["reference"][i],
                "errors": errors or None,
                "run": provenance,
            }
        )
    return rows, failed


def win_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, win rate with its 95% Wilson interval, ties as half, and mean rewards over the scored rows."""
    counts = {"win": 0, "loss": 0, "tie": 0, "failed": 0}
    for row in rows:
        counts[row["outcome"]] += 1
    scored_rows = [row for row in rows if row["outcome"] != "failed"]
    scored = len(scored_rows)
    low, high = wilson_interval(counts["win"], scored)
    return {
        "n_scored": scored,
        "n_failed": counts["failed"],
        "wins": counts["win"],
        "losses": counts["loss"],
        "ties": counts["tie"],
        "win_rate": counts["win"] / scored if scored else None,
        "win_rate_ci95": [low, high] if scored else None,
        "win_rate_ties_half": (counts["win"] + 0.5 * counts["tie"]) / scored if scored else None,
        # Paired sign test on the same prompts (ties dropped): is the policy better than the reference at all?
        "sign_test_p": mcnemar_exact(counts["win"], counts["loss"]) if scored else None,
        "mean_policy_reward": sum(r["policy_reward"] for r in scored_rows) / scored if scored else None,
        "mean_reference_reward": sum(r["reference_reward"] for r in scored_rows) / scored if scored else None,
    }


class JudgeProbesFailed(RuntimeError):
    """The judge failed a sanity probe and the caller asked to stop (``--stop_on_probe_failure``)."""

    def __init__(self, report: dict[str, Any]):
        self.report = report
        kinds = sorted({f["kind"] for f in report["failed"]})
        super().__init__(
            f"the judge failed {report['n_failed']} of {report['total']} sanity probes ({', '.join(kinds)}); "
            f"stopped before generating (--stop_on_probe_failure). Details: {report.get('path')}"
        )


def probe_judge(
    client: RewardClient,
    tokenizer: Any,
    budget: int,
    *,
    concurrency: int,
    output_dir: Path,
    judge: dict[str, Any],
    probes: Sequence[judge_probes.Probe] | None = None,
    show: bool = True,
) -> dict[str, Any]:
    """The judge sanity probes through this run's client (its cache, retries and token limit); the full report
    goes to ``<output_dir>/judge_probes.json``, the compact one (no per-probe list) is returned. A failed probe
    is a warning (a panel when ``show``)."""

    def prepare(conv: Conversation) -> Conversation:
        prompt, reply, _ = truncate_pair(conv[0]["content"], conv[1]["content"], tokenizer, budget)
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]

    before = client.stats.to_dict()
    score = judge_probes.client_scorer(client, concurrency=concurrency, prepare=prepare)
    report = judge_probes.run_probes(score, probes)
    report = client.redact(report | {"judge": judge, "requests": client.stats.since(before)})
    path = atomic_write_json(output_dir / "judge_probes.json", report)
    compact = judge_probes.compact(report) | {"path": str(path)}
    if not report["ok"] or report["n_errors"]:
        logger.warning(
            "judge %s: %d of %d sanity probes failed, %d not scored (%s)",
            judge.get("model"),
            report["n_failed"],
            report["total"],
            report["n_errors"],
            path,
        )
        panel = judge_probes.warning_panel(report, judge)
        if show and panel is not None:
            _console().print(panel)
    else:
        logger.info("judge %s passed all %d sanity probes", judge.get("model"), report["total"])
    return compact


def evaluate_winrate(
    *,
    model: str,
    reference: str,
    prompts: list[str],
    prompt_source: dict[str, Any],
    client: RewardClient,
    params: SamplingParams,
    output_dir: str | os.PathLike[str],
    model_revision: str | None = None,
    reference_revision: str | None = None,
    reference_fallback: bool = False,
    backend: str = "auto",
    concurrency: int = 8,
    max_reward_tokens: int = NEMOTRON_MAX_TOKENS,
    reward_token_margin: int = 64,
    count_tokenizer: str | None = None,
    responses: dict[str, list[str]] | None = None,
    progress: bool = True,
    print_table: bool = True,
    judge: dict[str, Any] | None = None,
    run_judge_probes: bool = True,
    stop_on_probe_failure: bool = False,
    probes: Sequence[judge_probes.Probe] | None = None,
    best_of: int = 1,
    best_of_temperature: float = best_of_n.DEFAULT_TEMPERATURE,
    picker: RewardClient | None = None,
    picker_max_tokens: int | None = None,
    picker_description: dict[str, Any] | None = None,
    generation_cache: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Probe the judge, generate (or reuse), score, write ``results.jsonl`` and ``summary.json``; return the
    summary.

    ``best_of`` > 1: the policy samples that many candidates per prompt at ``best_of_temperature`` (the run's
    seed, other settings as ``params``), the judge scores each through the same client and the best one
    (`eval.best_of_n`) is the policy's answer; the reference answers as usual. The summary's ``best_of`` block
    says what picking bought and which prompts had no candidate scored; ``best_of.jsonl`` has every prompt's
    candidate scores and chosen index. ``picker`` (with its token limit ``picker_max_tokens``) picks instead of
    the judge: a reward model available at test time picks, an independent judge scores the pick.

    ``responses`` (``{"policy": [...], "reference": [...]}``) skips generation, for callers that already
    hold the answers; the generated ones are cached in ``generation_cache`` (default ``<output_dir>/generations``;
    the files are content-addressed, so one folder can serve many runs). ``judge`` describes the endpoint
    (`eval.judge_probes.describe_judge`; default: from the client's model id and URL). Unless ``run_judge_probes`` is False, the judge sanity probes
    (`eval.judge_probes`, default set unless ``probes``) are scored first through the same client, cut to the
    same token limit; with ``stop_on_probe_failure`` a failed probe raises `JudgeProbesFailed` before anything is
    generated. The endpoint's API key is scrubbed from everything written or printed (an endpoint may echo it
    back).
    """
    from posttrain.models import load_tokenizer

    budget = scoring_budget(max_reward_tokens, reward_token_margin, concurrency)
    best_of_n.check_best_of(best_of, best_of_temperature)
    if best_of > 1 and responses is not None:
        raise ValueError("best_of > 1 samples the policy's candidates itself: pass responses=None")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(generation_cache) if generation_cache else out / "generations"
    run_started = time.perf_counter()
    # Token counting for the endpoint's limit: the endpoint's own tokenizer is rarely available (Nemotron's is
    # Llama 3.1's), so a stand-in counts; the margin absorbs the difference and the chat markup.
    tokenizer = load_tokenizer(count_tokenizer or model)
    judge = client.redact(judge or judge_probes.describe_judge(client.model, client.base_url))
    probe_summary: dict[str, Any] = {"skipped": True}
    if run_judge_probes:
        probe_summary = probe_judge(
            client,
            tokenizer,
            budget,
            concurrency=concurrency,
            output_dir=out,
            judge=judge,
            probes=probes,
            show=print_table,
        )
        if stop_on_probe_failure and not probe_summary["ok"]:
            raise JudgeProbesFailed(probe_summary)
    started = time.perf_counter()
    items_before = client.stats.to_dict()
    reused: dict[str, bool] = {}
    picks: best_of_n.Picks | None = None
    pick_seconds = 0.0
    if responses is None and best_of > 1:
        candidates, reused["policy"] = generate_candidates(
            model,
            prompts,
            replace(params, n=best_of, temperature=best_of_temperature),
            revision=model_revision,
            backend=backend,
            cache_dir=cache_dir,
            progress=progress,
        )
        reference_responses, reused["reference"] = generate_responses(
            reference,
            prompts,
            params,
            revision=reference_revision,
            backend=backend,
            cache_dir=cache_dir,
            progress=progress,
        )
        gen_seconds = time.perf_counter() - started
        pick_started = time.perf_counter()
        pick_budget = (
            budget
            if picker is None
            else scoring_budget(picker_max_tokens or max_reward_tokens, reward_token_margin, concurrency)
        )
        picks = best_of_n.pick_by_judge(
            prompts,
            candidates,
            picker or client,
            lambda prompt, reply: truncate_pair(prompt, reply, tokenizer, pick_budget),
            concurrency=concurrency,
        )
        pick_seconds = time.perf_counter() - pick_started
        responses = {"policy": picks.responses, "reference": reference_responses}
    elif responses is None:
        models = {"policy": (model, model_revision), "reference": (reference, reference_revision)}
        responses, reused = generate_both(
            prompts, params, models, backend=backend, cache_dir=cache_dir, progress=progress
        )
        gen_seconds = time.perf_counter() - started
    else:
        gen_seconds = time.perf_counter() - started

    conversations, truncated = build_conversations(prompts, responses, tokenizer, budget)
    score_started = time.perf_counter()
    scores = score_conversations(client, conversations, concurrency)
    score_seconds = time.perf_counter() - score_started

    provenance = run_provenance(
        model=model,
        model_revision=model_revision,
        reference=reference,
        reference_revision=reference_revision,
        params=params,
        backend=backend,
        reward_model=client.model,
        best_of=None if picks is None else {"n": best_of, "temperature": best_of_temperature},
    )
    rows, failed = result_rows(prompts, responses, conversations, truncated, scores, provenance)
    summary: dict[str, Any] = {
        "task": "winrate",
        **provenance,
        "reference_fallback": reference_fallback,
        "reward_endpoint": redact_url(client.base_url),
        "judge": judge,
        "judge_probes": probe_summary,
        "prompt_source": prompt_source,
        "n_prompts": len(prompts),
        **win_statistics(rows),
        **length_report(rows),
        "truncated": {role: sum(truncated[role]) for role in ROLES},
        "max_reward_tokens": max_reward_tokens,
        "reward_token_margin": reward_token_margin,
        "count_tokenizer": count_tokenizer or model,
        # This run's items only: the probes' requests are counted in judge_probes.json.
        "requests": client.stats.since(items_before) | {"distinct_conversations": len(scores)},
        "generations_reused": reused,
        "generation_seconds": round(gen_seconds, 3),
        "scoring_seconds": round(score_seconds, 3),
        "wall_time_s": round(time.perf_counter() - run_started, 3),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results_path": str(out / "results.jsonl"),
        "failed": failed,
    }
    if picks is not None:
        summary["best_of"] = best_of_n.judge_summary(picks, best_of, best_of_temperature) | {
            "scoring_seconds": round(pick_seconds, 3),
            "path": str(out / "best_of.jsonl"),
            # Who picked: the judge itself (an upper bound: it also scores the pick) or a separate picker.
            "picked_by": "judge" if picker is None else "picker",
            "picker": None if picker is None else client.redact(picker_description or picker.model),
        }
        if summary["best_of"]["n_prompts_all_failed"]:
            logger.warning(
                "best-of-%d: %d prompt(s) had no candidate scored and kept their first sample unjudged "
                "(best_of.prompts_all_failed in summary.json)",
                best_of,
                summary["best_of"]["n_prompts_all_failed"],
            )
        pick_rows = [
            record
            | {"prompt_id": prompt_id(prompts[record["index"]]), "candidates": cands, "run": provenance}
            for record, cands in zip(picks.records, candidates, strict=True)
        ]
        atomic_write_jsonl(out / "best_of.jsonl", client.redact(pick_rows))
    # The last line of defence: whatever an endpoint echoed (errors, a listed model id) loses the key here.
    rows, summary = client.redact(rows), client.redact(summary)
    atomic_write_jsonl(out / "results.jsonl", rows)
    atomic_write_json(out / "summary.json", summary)
    if print_table:
        print_summary(summary)
    return summary


def format_win_rate(summary: dict[str, Any]) -> str:
    if summary.get("win_rate") is None:
        return "win rate: n/a (nothing scored)"
    low, high = summary["win_rate_ci95"]
    return (
        f"win rate {summary['win_rate']:.3f} [95% CI {low:.3f}, {high:.3f}] over {summary['n_scored']} prompts "
        f"(wins {summary['wins']}, ties {summary['ties']}, losses {summary['losses']}; "
        f"ties as half: {summary['win_rate_ties_half']:.3f})"
    )


def print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(
        title=f"Win rate: {summary['model']} vs {summary['reference']} (judge {summary['reward_model']})"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    if summary["win_rate"] is not None:
        low, high = summary["win_rate_ci95"]
        table.add_row("win rate [95% Wilson]", f"{summary['win_rate']:.3f} [{low:.3f}, {high:.3f}]")
        table.add_row("win rate, ties as half", f"{summary['win_rate_ties_half']:.3f}")
        table.add_row(
            "mean reward policy / reference",
            f"{summary['mean_policy_reward']:.3f} / {summary['mean_reference_reward']:.3f}",
        )
    table.add_row("wins / ties / losses", f"{summary['wins']} / {summary['ties']} / {summary['losses']}")
    if summary.get("sign_test_p") is not None:
        table.add_row("sign test p (wins vs losses)", f"{summary['sign_test_p']:.3g}")
    table.add_row("scored / failed", f"{summary['n_scored']} / {summary['n_failed']}")
    table.add_row(
        "truncated policy / reference",
        f"{summary['truncated']['policy']} / {summary['truncated']['reference']}",
    )
    req = summary["requests"]
    table.add_row(
        "requests (retries) / cache hits", f"{req['requests']} ({req['retries']}) / {req['cache_hits']}"
    )
    for label, value in length_rows(summary):
        table.add_row(label, value)
    for label, value in best_of_rows(summary):
        table.add_row(label, value)
    probes = summary.get("judge_probes") or {}
    if probes.get("skipped"):
        table.add_row("judge probes", "skipped")
    elif "total" in probes:
        text = f"{probes['passed']} / {probes['total']} passed"
        table.add_row("judge probes", text if probes["ok"] else f"[bold red]{text}: FAILED[/bold red]")
    table.add_row("wall time (s)", f"{summary['wall_time_s']:.1f}")
    console = _console()
    console.print(table)
    print(format_win_rate(summary))


def length_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The length-control lines of the summary table (label, value)."""
    rows = []
    lc = summary.get("length_controlled_win_rate")
    if lc is not None:
        rows.append(("length-controlled win rate (phi)", f"{lc:.3f} ({summary['length_effect']:+.2f})"))
    elif "length_control" in summary:
        reason = summary["length_control"]["chars"]["fit"]["reason"]
        rows.append(("length-controlled win rate", f"n/a ({reason})"))
    if summary.get("length_matched_n"):
        rows.append(
            (
                "length-matched win rate (n)",
                f"{summary['length_matched_win_rate']:.3f} ({summary['length_matched_n']})",
            )
        )
    lengths = summary.get("lengths") or {}
    if lengths.get("policy", {}).get("mean_chars") is not None:
        pol, ref = lengths["policy"], lengths["reference"]
        rows.append(
            (
                "mean length chars (words) policy / reference",
                f"{pol['mean_chars']:.0f} ({pol['mean_words']:.0f}) / {ref['mean_chars']:.0f} ({ref['mean_words']:.0f})",
            )
        )
    return rows


def best_of_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The best-of-N lines of the summary table (label, value); none for a plain run."""
    block = summary.get("best_of")
    if not isinstance(block, dict) or "candidates" not in block:
        return []

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    rows = [
        (
            f"best-of-{block['n']} (T={block['temperature']:g}): chosen / mean candidate",
            f"{fmt(block['mean_chosen_score'])} / {fmt(block['mean_candidate_score'])}",
        ),
        ("candidates scored / failed", f"{block['candidates_scored']} / {block['candidates_failed']}"),
    ]
    if block["n_prompts_all_failed"]:
        rows.append(
            (
                "prompts with no candidate scored",
                f"[bold red]{block['n_prompts_all_failed']} (kept their first sample)[/bold red]",
            )
        )
    return rows


def _console():
    from rich.console import Console

    console = Console(file=sys.stdout)
    return console if console.is_terminal else Console(file=sys.stdout, width=120)


# ----------------------------------------------------------------------------------------------------------
# The judge's endpoint (shared with eval.submit's best-of-N)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class JudgeConnection:
    """A ready reward client, the endpoint's token limit, who judges (`judge_probes.describe_judge`), and the
    local reward server started for the run, if any (`close` stops it)."""

    client: RewardClient
    max_reward_tokens: int
    description: dict[str, Any]
    served: str | None = None  # what the in-process server serves (an RM folder or a judge name)
    server: Any = None

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def connect_judge(
    *,
    reward_url: str | None,
    reward_model: str = "auto",
    api_key: str | None = None,
    serve_rm: str | None = None,
    serve_judge: str | None = None,
    reward_cache: str | None = None,
    timeout_s: float = 60.0,
    max_retries: int = 5,
    backoff_s: float = 1.0,
    max_reward_tokens: int | None = None,
) -> JudgeConnection:
    """The endpoint a run scores through: ``reward_url``, or the local reward server started in this process
    on ``serve_rm`` (a reward model folder) or ``serve_judge`` ("verifiable"). ``reward_model`` "auto" takes
    the only model the endpoint lists; the token limit is ``max_reward_tokens``, else the listed
    ``max_model_len``, else Nemotron's."""
    server = None
    base_url = reward_url or DEFAULT_REWARD_URL
    if serve_rm or serve_judge:
        from eval.reward_server import RewardServer, build_scorer

        scorer = build_scorer(rm=serve_rm, judge=serve_judge)
        server = RewardServer(scorer, port=0).start()
        base_url = server.url
        logger.info("serving %s at %s for this run", serve_rm or serve_judge, base_url)
    try:
        client = RewardClient(
            base_url,
            reward_model,
            api_key=api_key,
            cache_path=reward_cache or None,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
        )
        models = client.list_models() if reward_model == "auto" or max_reward_tokens is None else []
        if reward_model == "auto":
            client.model = pick_auto_reward_model(models, base_url)
        limit = max_reward_tokens
        if limit is None:
            limit = next((m.get("max_model_len") for m in models if m.get("id") == client.model), None)
            limit = int(limit) if limit else NEMOTRON_MAX_TOKENS
        description = judge_probes.describe_judge(
            client.model,
            base_url,
            listing=models,
            kind="reward-model" if serve_rm else "verifiable" if serve_judge else None,
        )
    except BaseException:
        if server is not None:
            server.close()
        raise
    return JudgeConnection(client, limit, description, str(serve_rm or serve_judge or "") or None, server)


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    """``runs/dpo-ultrafeedback/model`` -> ``dpo-ultrafeedback``; ``Qwen/Qwen2.5-0.5B`` -> ``Qwen_Qwen2.5-0.5B``."""
    parts = [p for p in text.strip("/").split("/") if p not in ("", ".", "runs", "model")] or ["model"]
    return "_".join("".join(c if c.isalnum() or c in "-." else "-" for c in p) for p in parts)[-60:]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval.winrate",
        description="Win rate of a policy against a reference model, judged by an OpenAI-compatible reward "
        "endpoint (Nemotron-70B-Reward format).",
    )
    p.add_argument("--model", default="embedded", help="the policy: hub name, local folder or 'embedded'")
    p.add_argument("--model_revision", default=None)
    p.add_argument(
        "--reference", default=DEFAULT_REFERENCE, help=f"default {DEFAULT_REFERENCE} (embedded offline)"
    )
    p.add_argument("--reference_revision", default=None)
    p.add_argument(
        "--prompts", default=DEFAULT_PROMPTS, help="file (.jsonl/.json/.txt), 'fixture' or hub dataset"
    )
    p.add_argument("--prompts_split", default="test_prefs")
    p.add_argument("--prompts_revision", default=None)
    p.add_argument("--n_prompts", type=int, default=None, help="first N prompts (default: all)")
    p.add_argument("--output_dir", default=None, help="default: <output_root>/<model>-vs-<reference>")
    p.add_argument("--output_root", default="runs/winrate")
    p.add_argument(
        "--generation_cache",
        default=None,
        help="folder of cached answers (content-addressed: model, revision, weights, sampling, prompts); default: "
        "<output_root>/generations, or <output_dir>/generations when --output_dir is given",
    )
    r = p.add_argument_group("reward endpoint")
    r.add_argument(
        "--reward_url", default=DEFAULT_REWARD_URL, help="OpenAI-compatible base URL (ends in /v1)"
    )
    r.add_argument(
        "--reward_model",
        default="auto",
        help="model id at the endpoint; auto: the only model /v1/models lists (an error when it lists several)",
    )
    r.add_argument(
        "--api_key_env", default="REWARD_API_KEY", help="env variable holding the key (never logged)"
    )
    serve = r.add_mutually_exclusive_group()
    serve.add_argument(
        "--serve_rm", default=None, help="start the local reward server on this RM folder for the run"
    )
    serve.add_argument(
        "--serve_judge",
        default=None,
        choices=("verifiable",),
        help="start the local reward server with this judge for the run (verifiable: correctness on the "
        "fixture's task families, rewards.chat_verifier)",
    )
    r.add_argument("--concurrency", type=int, default=8, help="requests in flight at most")
    r.add_argument("--max_retries", type=int, default=5)
    r.add_argument("--timeout_s", type=float, default=60.0, help="total deadline per request (s)")
    r.add_argument("--backoff_s", type=float, default=1.0, help="first retry wait; doubles each retry")
    r.add_argument(
        "--max_reward_tokens",
        type=int,
        default=None,
        help=f"endpoint token limit (default: the server's max_model_len, else {NEMOTRON_MAX_TOKENS})",
    )
    r.add_argument("--reward_token_margin", type=int, default=64, help="tokens kept free for chat markup")
    r.add_argument(
        "--count_tokenizer", default=None, help="tokenizer that counts toward the limit (default: --model)"
    )
    r.add_argument("--reward_cache", default="runs/reward-cache/scores.jsonl", help="'' disables the cache")
    r.add_argument(
        "--skip_probes",
        action="store_true",
        help="do not run the judge sanity probes (eval.judge_probes) first, e.g. for a paid remote judge",
    )
    r.add_argument(
        "--stop_on_probe_failure",
        action="store_true",
        help="exit non-zero before generating when the judge fails a sanity probe (default: a warning)",
    )
    s = p.add_argument_group("sampling (the same for policy and reference)")
    s.add_argument("--max_new_tokens", type=int, default=256)
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    s.add_argument("--top_p", type=float, default=1.0)
    s.add_argument("--top_k", type=int, default=0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch_size", type=int, default=None)
    s.add_argument("--backend", default="auto", choices=BACKENDS)
    s.add_argument("--no_progress", action="store_true")
    b = p.add_argument_group("best-of-N (the policy only)")
    b.add_argument(
        "--best_of",
        type=int,
        default=1,
        help="N > 1: the policy samples N answers per prompt and the judge picks one (eval.best_of_n); 1: off",
    )
    b.add_argument(
        "--best_of_temperature",
        type=float,
        default=best_of_n.DEFAULT_TEMPERATURE,
        help="sampling temperature of the N candidates (with --seed; > 0); the reference keeps --temperature",
    )
    picker = b.add_mutually_exclusive_group()
    picker.add_argument(
        "--best_of_serve_rm",
        default=None,
        help="a reward model folder that picks (served in this process); default: the judge picks its own best",
    )
    picker.add_argument("--best_of_reward_url", default=None, help="an OpenAI-compatible endpoint that picks")
    b.add_argument("--best_of_reward_model", default="auto", help="model id at --best_of_reward_url")
    return p


def model_not_available_message(exc: Exception, *, reference: bool = False) -> str:
    """One line for a model that cannot be loaded: what failed and which flag (or make variable) to change."""
    detail = " ".join(str(exc).split("\n")[0].split())[:300]
    flags = "--model (MODEL= for make)"
    if reference:
        flags += " or --reference (REFERENCE=)"
    return (
        f"error: {detail}. Pass an available model with {flags}: a local folder, a hub name "
        f"that is cached or reachable, or 'embedded' offline"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from posttrain.models import ModelNotAvailableError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpx2", "openai"):  # one INFO line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    judge: JudgeConnection | None = None
    picker: JudgeConnection | None = None
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    try:
        best_of_n.check_best_of(args.best_of, args.best_of_temperature)
        if (args.best_of_serve_rm or args.best_of_reward_url) and args.best_of < 2:
            raise ValueError(
                "--best_of_serve_rm / --best_of_reward_url pick among candidates: add --best_of N (N > 1)"
            )
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            n=1,
            seed=args.seed,
            batch_size=args.batch_size,
        )
        if args.concurrency < 1 or args.max_retries < 0:
            raise ValueError("--concurrency must be >= 1 and --max_retries >= 0")
        prompts, source = load_prompt_set(
            args.prompts, split=args.prompts_split, n=args.n_prompts, revision=args.prompts_revision
        )
        reference, fell_back = resolve_reference(args.reference)
        client_options = {
            "api_key": api_key,
            "reward_cache": args.reward_cache,
            "timeout_s": args.timeout_s,
            "max_retries": args.max_retries,
            "backoff_s": args.backoff_s,
        }
        judge = connect_judge(
            reward_url=args.reward_url,
            reward_model=args.reward_model,
            serve_rm=args.serve_rm,
            serve_judge=args.serve_judge,
            max_reward_tokens=args.max_reward_tokens,
            **client_options,
        )
        if args.best_of_serve_rm or args.best_of_reward_url:
            picker = connect_judge(
                reward_url=args.best_of_reward_url,
                reward_model=args.best_of_reward_model,
                serve_rm=args.best_of_serve_rm,
                **client_options,
            )
        output_dir = args.output_dir or os.path.join(
            args.output_root, f"{_slug(args.model)}-vs-{_slug(reference)}"
        )
        generation_cache = args.generation_cache or os.path.join(
            args.output_dir or args.output_root, "generations"
        )
        summary = evaluate_winrate(
            model=args.model,
            reference=reference,
            prompts=prompts,
            prompt_source=source,
            client=judge.client,
            params=params,
            output_dir=output_dir,
            model_revision=args.model_revision,
            reference_revision=None if fell_back else args.reference_revision,
            reference_fallback=fell_back,
            backend=args.backend,
            concurrency=args.concurrency,
            max_reward_tokens=judge.max_reward_tokens,
            reward_token_margin=args.reward_token_margin,
            count_tokenizer=args.count_tokenizer,
            progress=not args.no_progress,
            judge=judge.description,
            run_judge_probes=not args.skip_probes,
            stop_on_probe_failure=args.stop_on_probe_failure,
            best_of=args.best_of,
            best_of_temperature=args.best_of_temperature,
            picker=None if picker is None else picker.client,
            picker_max_tokens=None if picker is None else picker.max_reward_tokens,
            picker_description=None if picker is None else picker.description,
            generation_cache=generation_cache,
        )
    except JudgeProbesFailed as exc:
        raise SystemExit(redact(f"error: {exc}", api_key)) from None
    except (ValueError, FileNotFoundError, RewardEndpointError) as exc:
        raise SystemExit(redact(f"error: {exc}", api_key)) from None  # an endpoint may echo the key
    except ModelNotAvailableError as exc:
        raise SystemExit(redact(model_not_available_message(exc, reference=True), api_key)) from None
    finally:
        for connection in (judge, picker):
            if connection is not None:
                connection.close()
    print(f"summary: {Path(output_dir) / 'summary.json'}")
    if summary["n_failed"]:
        raise SystemExit(
            f"{summary['n_failed']} prompt(s) failed (listed under 'failed' in summary.json); re-run the same "
            f"command to retry only them (scores and generations are cached)"
        )
    unjudged = (summary.get("best_of") or {}).get("n_prompts_all_failed")
    if unjudged:
        raise SystemExit(
            f"best-of-{args.best_of}: {unjudged} prompt(s) had no candidate scored and kept their first sample "
            f"(best_of.prompts_all_failed in summary.json); re-run the same command to retry only them"
        )
    return summary


if __name__ == "__main__":
    run_cli(main)
