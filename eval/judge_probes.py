"""Judge sanity probes: does a win-rate judge score a right reply above obviously bad ones?

    python -m eval.judge_probes --rm runs/rm-ultrafeedback/model --output runs/rm-ultrafeedback/judge_probes.json
    python -m eval.judge_probes --reward_url http://127.0.0.1:8000/v1 --reward_model auto [--strict]

A probe is (kind, prompt, good reply, bad reply) and passes when the good reply scores strictly higher. Prompts
and good replies are chosen answers of the UltraFeedback fixture's test split, one prompt per task family; the
bad replies are what a length- or style-biased judge falls for: an empty reply, one phrase repeated, a confident
off-topic paragraph, another prompt's right answer, and a Countdown answer tag. `run_probes` takes any score
callable (a local reward model, `eval.reward_server`'s scorers, or the endpoint through `RewardClient`, the
path `eval.winrate` scores with; it runs these probes before every win rate).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from eval.reward_client import RewardClient, RewardEndpointError, pick_auto_reward_model, redact_url
from posttrain.cli import run_cli
from posttrain.io import atomic_write_json
from rewards.api_retry import redact

if TYPE_CHECKING:
    from rich.panel import Panel

logger = logging.getLogger(__name__)

Conversation = list[dict[str, str]]
# A judge: conversations in, one score each out (None, or a ScoreResult without a score, is an error).
ScoreFn = Callable[[list[Conversation]], Sequence[Any]]

KINDS = ("empty", "repeated", "off_topic", "other_answer", "countdown")
N_PROMPTS = 8
PER_KIND = 3
MAX_GOOD_CHARS = 1500  # a chosen reply longer than this is skipped: probes stay cheap and untruncated
VERIFIABLE_JUDGE_IDS = ("verifiable-judge-v1",)

_FILLERS = (
    "This is a very good and helpful answer. ",
    "Great question, here is the answer. ",
    "I am confident that this is correct. ",
)
_REPEATS = 25
_OFF_TOPIC = (
    "Arctic terns make the longest migration of any animal, flying from their breeding grounds in the Arctic to "
    "the Antarctic and back every year. Over a lifetime of about thirty years a single bird can travel more than "
    "two million kilometres, and it sees more daylight than any other creature on Earth.",
    "Gothic cathedrals were built with pointed arches, ribbed vaults and flying buttresses, which carried the "
    "weight of the roof outwards and let the walls rise higher and hold large stained-glass windows. Most took "
    "several generations to finish, and many were changed in style while they were still being built.",
    "Traditional soy sauce is brewed from soybeans, roasted wheat, salt and water, fermented with koji mould for "
    "many months in wooden barrels. The long fermentation breaks proteins into amino acids, which give the sauce "
    "its deep colour and its savoury taste.",
)
_COUNTDOWN = (
    "<answer>(74 - 9) + 48</answer>",
    "<answer>(25 * 4) - (7 + 3)</answer>",
    "<answer>96 / (8 - 5) + 12</answer>",
)


@dataclass(frozen=True)
class Probe:
    kind: str
    prompt: str
    good: str
    bad: str

    def conversations(self) -> tuple[Conversation, Conversation]:
        """The good and the bad ``[user, assistant]`` conversation, as the win rate sends them."""
        return tuple(
            [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": reply}]
            for reply in (self.good, self.bad)
        )


# ----------------------------------------------------------------------------------------------------------
# The probe set
# ----------------------------------------------------------------------------------------------------------


def task_family(prompt: str) -> str:
    """A rough task family from the prompt's wording: its first four words, quoted text and numbers left out
    ("What is the capital of Italy?" -> "what is the capital"). Rows carry no family field."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", " ", prompt.lower())
    return " ".join(re.findall(r"[a-z]+", text)[:4])


def is_sentence(text: str) -> bool:
    """At least three words with a letter, ending like a sentence (or eight words or more)."""
    words = text.split()
    if len(words) < 3 or not any(c.isalpha() for c in text):
        return False
    return text.rstrip().rstrip("'\")").endswith((".", "!", "?")) or len(words) >= 8


def _good_reply(row: dict[str, Any]) -> str | None:
    chosen = row.get("chosen")
    if not isinstance(chosen, list) or not chosen or not isinstance(chosen[-1], dict):
        return None
    last = chosen[-1]
    content = last.get("content")
    return content if last.get("role") == "assistant" and isinstance(content, str) else None


def pick_prompts(rows: Iterable[dict[str, Any]], n: int = N_PROMPTS) -> list[tuple[str, str]]:
    """Up to ``n`` (prompt, chosen reply) pairs, first one per task family in row order, then (if too few
    families) further distinct prompts; only replies that are at least a sentence and at most
    ``MAX_GOOD_CHARS`` long."""
    usable: list[tuple[str, str]] = []
    seen: set[str] = set()
    for row in rows:
        prompt, good = row.get("prompt"), _good_reply(row)
        if not isinstance(prompt, str) or not prompt.strip() or prompt in seen or good is None:
            continue
        if is_sentence(good) and len(good) <= MAX_GOOD_CHARS:
            seen.add(prompt)
            usable.append((prompt, good))
    picked, families = [], set()
    for prompt, good in usable:
        if len(picked) < n and task_family(prompt) not in families:
            families.add(task_family(prompt))
            picked.append((prompt, good))
    for pair in usable:  # fewer families than n: fill with the next distinct prompts
        if len(picked) >= n:
            break
        if pair not in picked:
            picked.append(pair)
    return picked


def _bad_reply(kind: str, r: int, i: int, picked: list[tuple[str, str]]) -> str:
    if kind == "empty":
        return ""
    if kind == "repeated":
        return (_FILLERS[r % len(_FILLERS)] * _REPEATS).strip()
    if kind == "off_topic":
        return _OFF_TOPIC[r % len(_OFF_TOPIC)]
    if kind == "other_answer":  # the right answer to a different probe prompt
        return picked[(i + len(picked) // 2) % len(picked)][1]
    if kind == "countdown":
        return _COUNTDOWN[r % len(_COUNTDOWN)]
    raise ValueError(f"unknown probe kind {kind!r}; kinds: {KINDS}")


def build_probes(rows: Iterable[dict[str, Any]] | None = None, *, per_kind: int = PER_KIND) -> list[Probe]:
    """``per_kind`` probes of each kind (15 by default) over the picked prompts, in a fixed order.

    ``rows``: UltraFeedback-schema rows (``prompt``, ``chosen``); default the fixture's ``test_prefs``.
    """
    if rows is None:
        from posttrain.chat_fixture import ultrafeedback_fixture_rows

        rows = ultrafeedback_fixture_rows("test_prefs")
    picked = pick_prompts(rows)
    if len(picked) < 2:
        raise ValueError(
            f"the rows give {len(picked)} usable prompt(s) (a chosen reply of at least a sentence); the "
            f"probes need 2 or more"
        )
    probes = []
    for k, kind in enumerate(KINDS):
        for r in range(per_kind):
            i = (k * per_kind + r) % len(picked)  # rotate: every prompt meets several kinds
            prompt, good = picked[i]
            probes.append(Probe(kind, prompt, good, _bad_reply(kind, r, i, picked)))
    return probes


def probe_set_digest(probes: Sequence[Probe]) -> str:
    """A short fingerprint of the probe set (it changes when the fixture's text does)."""
    return hashlib.sha256(json.dumps([asdict(p) for p in probes]).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# Running them
# ----------------------------------------------------------------------------------------------------------


def _read_score(value: Any) -> tuple[float | None, str | None]:
    """(score, error) from a float, None or a `ScoreResult`-like object."""
    error = getattr(value, "error", None)
    if hasattr(value, "score"):
        value = value.score
    if value is None:
        return None, error or "not scored"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, f"not a number: {str(value)[:80]!r}"
    return (number, None) if math.isfinite(number) else (None, f"not finite: {number}")


def _preview(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def run_probes(score: ScoreFn, probes: Sequence[Probe] | None = None) -> dict[str, Any]:
    """Score every probe's good and bad conversation (each distinct one once, in one call) and report.

    Returns ``passed``, ``total``, ``n_failed`` (scored, good not strictly higher), ``n_errors`` (a score
    missing), ``ok`` (nothing failed), ``by_kind``, ``failed`` and ``errors`` (kind, prompt, scores or error)
    and ``probes`` (every probe with its scores). A judge that refuses the key or the model raises.
    """
    probes = list(build_probes() if probes is None else probes)
    distinct: dict[str, Conversation] = {}
    for probe in probes:
        for conv in probe.conversations():
            distinct.setdefault(json.dumps(conv, sort_keys=True), conv)
    raw = list(score(list(distinct.values())))
    if len(raw) != len(distinct):
        raise ValueError(f"the judge returned {len(raw)} scores for {len(distinct)} conversations")
    scores = dict(zip(distinct, map(_read_score, raw), strict=True))
    results, by_kind = [], {kind: {"passed": 0, "total": 0} for kind in dict.fromkeys(p.kind for p in probes)}
    for probe in probes:
        (good, good_error), (bad, bad_error) = (
            scores[json.dumps(c, sort_keys=True)] for c in probe.conversations()
        )
        passed = None if good is None or bad is None else good > bad
        results.append(
            {
                "kind": probe.kind,
                "prompt": probe.prompt,
                "good_reply": probe.good,
                "bad_reply": probe.bad,
                "good_score": good,
                "bad_score": bad,
                "margin": None if passed is None else good - bad,
                "passed": passed,
                "error": good_error or bad_error,
            }
        )
        by_kind[probe.kind]["total"] += 1
        by_kind[probe.kind]["passed"] += bool(passed)
    failed = [
        {k: r[k] for k in ("kind", "prompt", "good_score", "bad_score")}
        | {"bad_reply": _preview(r["bad_reply"])}
        for r in results
        if r["passed"] is False
    ]
    errors = [{k: r[k] for k in ("kind", "prompt", "error")} for r in results if r["passed"] is None]
    return {
        "passed": sum(r["passed"] is True for r in results),
        "total": len(results),
        "n_failed": len(failed),
        "n_errors": len(errors),
        "ok": not failed,
        "by_kind": by_kind,
        "failed": failed,
        "errors": errors,
        "probe_set": {"source": "ultrafeedback fixture test_prefs", "sha256_16": probe_set_digest(probes)},
        "probes": results,
    }


def compact(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the per-probe list and the judge (what a win-rate summary keeps beside its own
    ``judge``)."""
    return {k: v for k, v in report.items() if k not in ("probes", "judge")}


# ----------------------------------------------------------------------------------------------------------
# Judges: a reward endpoint through the win rate's client, a local reward model
# ----------------------------------------------------------------------------------------------------------


def client_scorer(
    client: RewardClient,
    *,
    concurrency: int = 8,
    prepare: Callable[[Conversation], Conversation] | None = None,
) -> ScoreFn:
    """Scores through ``client`` (`RewardClient.score_many`: its retries, cache and redaction, as the win rate
    does); ``prepare`` rewrites each conversation first (the win rate cuts it to the endpoint's token limit)."""

    def score(conversations: list[Conversation]) -> list[Any]:
        prepared = [prepare(c) for c in conversations] if prepare else conversations
        return client.score_many(prepared, concurrency)

    return score


def rm_scorer(path: str | os.PathLike[str], *, batch_size: int = 8, **kwargs: Any) -> ScoreFn:
    """Scores with a local reward-model folder (`eval.reward_server.RewardScorer`), ``batch_size`` at a time."""
    from eval.reward_server import RewardScorer

    return batched(RewardScorer(path, **kwargs).score, batch_size)


def batched(score: Callable[[list[Conversation]], Sequence[Any]], batch_size: int) -> ScoreFn:
    """``score`` called on chunks of at most ``batch_size`` conversations (bounded memory for a local model)."""

    def run(conversations: list[Conversation]) -> list[Any]:
        out: list[Any] = []
        for start in range(0, len(conversations), batch_size):
            out += list(score(conversations[start : start + batch_size]))
        return out

    return run


def _is_loopback(url: str) -> bool:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    return host in ("localhost", "::1") or host.startswith("127.")


def describe_judge(
    model: str,
    base_url: str | None = None,
    *,
    listing: Sequence[dict[str, Any]] = (),
    kind: str | None = None,
) -> dict[str, Any]:
    """Who judged: ``model`` (the endpoint's model id), ``base_url`` (no credentials), ``kind`` and, when the
    endpoint lists it, ``root``. ``kind`` unless given: ``verifiable`` for the verifiable judge's id,
    ``reward-model`` for a model `eval.reward_server` lists, ``remote`` for any endpoint off this machine,
    else None (unknown)."""
    entry = next((m for m in listing if m.get("id") == model), {})
    if kind is None:
        if model in VERIFIABLE_JUDGE_IDS:
            kind = "verifiable"
        elif entry.get("owned_by") == "posttrain":  # eval.reward_server's /v1/models entry
            kind = "reward-model"
        elif base_url and not _is_loopback(base_url):
            kind = "remote"
    return {
        "model": model,
        "base_url": redact_url(base_url) if base_url else None,
        "kind": kind,
        "root": entry.get("root"),
    }


# ----------------------------------------------------------------------------------------------------------
# Display
# ----------------------------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def probe_table(report: dict[str, Any], title: str = "Judge probes"):  # -> rich.table.Table
    from rich.markup import escape  # prompts and replies are data: "[/x]" must not be read as markup
    from rich.table import Table

    table = Table(title=escape(f"{title}: {report['passed']}/{report['total']} passed"))
    for col in ("kind", "prompt", "bad reply", "good", "bad", "result"):
        table.add_column(col, justify="right" if col in ("good", "bad") else "left")
    for r in report["probes"]:
        result = "[red]ERROR[/red]" if r["passed"] is None else "ok" if r["passed"] else "[red]FAIL[/red]"
        table.add_row(
            r["kind"],
            escape(_preview(r["prompt"], 40)),
            escape(_preview(r["bad_reply"], 30)) or "(empty)",
            _fmt(r["good_score"]),
            _fmt(r["bad_score"]),
            result,
        )
    return table


def warning_panel(report: dict[str, Any], judge: dict[str, Any] | None = None) -> Panel | None:
    """A loud panel when a probe failed or could not be scored; None when all passed."""
    if report["ok"] and not report["n_errors"]:
        return None
    from rich.markup import escape
    from rich.panel import Panel

    who = f" {judge['model']}" if judge and judge.get("model") else ""
    lines = [
        f"The judge{who} failed {report['n_failed']} of {report['total']} sanity probes"
        + (f" and could not score {report['n_errors']}" if report["n_errors"] else "")
        + ": it scored an obviously bad reply at least as high as a right one."
    ]
    lines += [
        f"  {f['kind']}: good {_fmt(f['good_score'])} <= bad {_fmt(f['bad_score'])}  ({_preview(f['prompt'], 50)})"
        for f in report["failed"][:8]
    ]
    lines += [f"  {e['kind']}: not scored ({_preview(str(e['error']), 60)})" for e in report["errors"][:4]]
    lines.append("Win rates judged by it may reward length or style over correctness.")
    return Panel(escape("\n".join(lines)), title="WARNING: judge sanity probes", border_style="bold red")


def _console():
    from rich.console import Console

    console = Console(file=sys.stdout)
    return console if console.is_terminal else Console(file=sys.stdout, width=120)


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval.judge_probes",
        description="Sanity probes for a win-rate judge: a right reply must score above obviously bad ones.",
    )
    judge = p.add_mutually_exclusive_group(required=True)
    judge.add_argument("--rm", default=None, help="a local reward-model folder")
    judge.add_argument(
        "--reward_url", default=None, help="an OpenAI-compatible reward endpoint (ends in /v1)"
    )
    p.add_argument(
        "--reward_model", default="auto", help="model id at the endpoint; auto: the only one listed"
    )
    p.add_argument(
        "--api_key_env", default="REWARD_API_KEY", help="env variable holding the key (never logged)"
    )
    p.add_argument("--reward_cache", default="runs/reward-cache/scores.jsonl", help="'' disables the cache")
    p.add_argument("--timeout_s", type=float, default=60.0)
    p.add_argument("--max_retries", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--output", default=None, help="write the report as JSON here")
    p.add_argument("--strict", action="store_true", help="exit 1 when a probe fails")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    try:
        if args.rm:
            from eval.reward_server import RewardScorer

            scorer = RewardScorer(args.rm)
            judge = describe_judge(scorer.served_model_name, kind="reward-model") | {"root": str(args.rm)}
            score = batched(scorer.score, 8)
        else:
            client = RewardClient(
                args.reward_url,
                args.reward_model,
                api_key=api_key,
                cache_path=args.reward_cache or None,
                timeout_s=args.timeout_s,
                max_retries=args.max_retries,
            )
            listing = client.list_models()
            if args.reward_model == "auto":
                client.model = pick_auto_reward_model(listing, args.reward_url)
            judge = describe_judge(client.model, args.reward_url, listing=listing)
            score = client_scorer(client, concurrency=args.concurrency)
        report = run_probes(score) | {"judge": judge}
    except (ValueError, OSError, RewardEndpointError) as exc:
        raise SystemExit(redact(f"error: {exc}", api_key)) from None
    report = redact(report, api_key, bearer=False)
    console = _console()
    console.print(probe_table(report, f"Judge probes ({judge['model']})"))
    panel = warning_panel(report, judge)
    if panel is not None:
        console.print(panel)
    if args.output:
        atomic_write_json(Path(args.output), report)
        print(f"report: {args.output}")
    if args.strict and not report["ok"]:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    run_cli(main)
