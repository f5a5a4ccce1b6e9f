"""Re:Fine evaluation: a policy's replies on held-out inputs, then before/after judged side by side.

    python -m eval.refine sample --model embedded --prompts runs/refine-style_transfer/prompts \
        --output_dir runs/refine-style_transfer/eval-before
    python -m eval.refine compare runs/refine-style_transfer/eval-before runs/refine-style_transfer/eval-after \
        --task recipes/refine/tasks/style_transfer.md --judge_base_url http://127.0.0.1:8002/v1 \
        --judge_model embedded --output_dir runs/refine-style_transfer/compare

`compare` asks the task's judge (its rubric, one request per input) to score the two replies together, once in
each order, so a judge that prefers the first or the second position cancels out. A pair counts as a win for
the trained model when its mean score is higher, a tie when equal; the win rate (ties count half) comes with a
paired bootstrap 95% interval. The reply lengths before and after are reported as distributions, with the share
below the task's length window: a model that wins by collapsing to fragments shows there. Tables go to
results.md and results.html (model output is escaped), lengths to lengths.png.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from eval.paired import bootstrap_mean
from posttrain.cli import run_cli
from posttrain.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_jsonl
from posttrain.refine_tasks import RefineTask, TaskFileError, load_task
from posttrain.synthetic import load_prompts
from rewards.judge import JudgeConfigError, LLMJudgeReward
from rewards.rules import LengthWindowReward, word_count

logger = logging.getLogger(__name__)

OUTPUTS = "outputs.jsonl"
SUMMARY = "summary.json"


# ------------------------------------------------------------------------------------------------ sample


def sample(
    model: str,
    prompts_dir: str,
    output_dir: str,
    *,
    split: str,
    n: int | None,
    max_new_tokens: int,
    batch_size: int | None,
) -> Path:
    """Greedy replies of ``model`` to the first ``n`` inputs of ``split``, written to output_dir/outputs.jsonl."""
    from posttrain.sampling import SamplingParams, generate

    data = load_prompts(prompts_dir, split)
    if n is not None:
        data = data.select(range(min(n, len(data))))
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size)
    replies = generate(model, list(data["prompt"]), params)
    rows = [
        {
            "id": row["id"],
            "source": row["source"],
            "prompt": row["prompt"],
            "output": reply[0],
            "words": word_count(reply[0]),
        }
        for row, reply in zip(data, replies, strict=True)
    ]
    out = Path(output_dir)
    lengths = length_stats([r["words"] for r in rows])
    atomic_write_jsonl(out / OUTPUTS, rows)
    atomic_write_json(
        out / SUMMARY,
        {
            "model": model,
            "prompts": str(prompts_dir),
            "split": split,
            "n": len(rows),
            "max_new_tokens": max_new_tokens,
            "lengths": lengths,
        },
    )
    print(f"{out / OUTPUTS}: {len(rows)} replies, mean {lengths['mean']:.1f} words")
    return out


# ------------------------------------------------------------------------------------------------ compare


def read_outputs(folder: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(folder) / OUTPUTS
    rows: dict[str, dict[str, Any]] = {}
    for where, row in read_jsonl(path, "replies file (python -m eval.refine sample)"):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("id"), str)
            or not isinstance(row.get("output"), str)
        ):
            raise ValueError(f"{where}: expected an object with string `id` and `output`")
        if row["id"] in rows:
            raise ValueError(f"{where}: id {row['id']!r} appears twice")
        rows[row["id"]] = row
    if not rows:
        raise ValueError(f"{path} holds no replies")
    return rows


def length_stats(words: Sequence[int]) -> dict[str, Any]:
    if not words:
        return {"n": 0}
    ordered = sorted(words)

    def quantile(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])

    stats = {
        "n": len(words),
        "mean": statistics.fmean(words),
        "median": float(statistics.median(words)),
        "p10": quantile(0.1),
        "p90": quantile(0.9),
        "min": ordered[0],
        "max": ordered[-1],
        "empty": sum(w == 0 for w in words),
    }
    return stats


def judge_pair(judge: LLMJudgeReward, prompt: Any, before: str, after: str) -> dict[str, Any]:
    """Both orders; the mean score of each reply, or ``failed`` when either order got no verdict."""
    first, explain_first, ok_first = judge.judge_group(prompt, [before, after])
    second, explain_second, ok_second = judge.judge_group(prompt, [after, before])
    if not (ok_first and ok_second):
        return {"failed": True}
    before_score = (first[0] + second[1]) / 2
    after_score = (first[1] + second[0]) / 2
    diff = after_score - before_score
    verdict = "win" if diff > 1e-9 else "loss" if diff < -1e-9 else "tie"
    return {
        "failed": False,
        "before_score": before_score,
        "after_score": after_score,
        "verdict": verdict,
        "explanation_after": explain_first[1] or explain_second[0],
    }


def window_low(task: RefineTask, source: str) -> float | None:
    rule = task.rules.length_window
    if rule is None:
        return None
    reward = LengthWindowReward(**rule.model_dump(exclude={"weight"}))
    return reward.window(word_count(source) if reward.relative else None)[0]


def compare(args: argparse.Namespace) -> dict[str, Any]:
    task = load_task(args.task)
    before, after = read_outputs(args.before), read_outputs(args.after)
    if set(before) != set(after):
        missing = sorted(set(before) ^ set(after))[:5]
        raise ValueError(
            f"{args.before} and {args.after} answer different inputs (e.g. {missing}); sample both on the same split"
        )
    ids = sorted(before)
    judge = LLMJudgeReward(
        base_url=args.judge_base_url,
        model=args.judge_model,
        api_key_env=args.judge_api_key_env,
        timeout_s=args.judge_timeout_s,
        max_retries=args.judge_max_retries,
        rubric=task.rubric,
        max_tokens=args.judge_max_tokens,
        response_format=args.judge_response_format,
        max_failed_calls=0,
    )
    with ThreadPoolExecutor(max_workers=args.judge_concurrency) as pool:
        verdicts = list(
            pool.map(
                lambda i: judge_pair(judge, before[i]["prompt"], before[i]["output"], after[i]["output"]), ids
            )
        )
    rows = []
    for i, verdict in zip(ids, verdicts, strict=True):
        low = window_low(task, before[i]["source"])
        rows.append(
            {
                "id": i,
                "source": before[i]["source"],
                "before": before[i]["output"],
                "after": after[i]["output"],
                "before_words": word_count(before[i]["output"]),
                "after_words": word_count(after[i]["output"]),
                "window_low": low,
                **verdict,
            }
        )
    judged = [r for r in rows if not r["failed"]]
    values = [1.0 if r["verdict"] == "win" else 0.5 if r["verdict"] == "tie" else 0.0 for r in judged]
    win_rate = sum(values) / len(values) if values else None
    interval = bootstrap_mean(values, n_boot=2000, seed=args.seed) if values else None
    lows = [r["window_low"] for r in rows if r["window_low"] is not None]
    common_low = statistics.fmean(lows) if lows else None

    def lengths(key: str) -> dict[str, Any]:
        words = [r[f"{key}_words"] for r in rows]
        stats = length_stats(words)
        if lows:
            stats["below_window"] = sum(r[f"{key}_words"] < r["window_low"] for r in rows) / len(rows)
        return stats

    summary = {
        "task": task.name,
        "before": str(args.before),
        "after": str(args.after),
        "judge": {"base_url": args.judge_base_url, "model": args.judge_model, "orders": 2},
        "n": len(rows),
        "judged": len(judged),
        "judge_failed": len(rows) - len(judged),
        "wins": sum(r.get("verdict") == "win" for r in judged),
        "ties": sum(r.get("verdict") == "tie" for r in judged),
        "losses": sum(r.get("verdict") == "loss" for r in judged),
        "win_rate": win_rate,
        "win_rate_ci95": list(interval) if interval else None,
        "lengths": {"before": lengths("before"), "after": lengths("after"), "mean_window_low": common_low},
    }
    out = Path(args.output_dir)
    atomic_write_jsonl(out / "pairs.jsonl", rows)
    atomic_write_json(out / SUMMARY, summary)
    plot_lengths(rows, out / "lengths.png", task.name)
    curve = Path(args.reward_curve) if args.reward_curve else None
    if curve is not None and curve.is_file():
        shutil.copy2(curve, out / "reward_curve.png")
    atomic_write_text(out / "results.md", markdown(summary, rows, args.examples))
    atomic_write_text(
        out / "results.html",
        html(summary, rows, args.examples, has_curve=(out / "reward_curve.png").is_file()),
    )
    print(markdown(summary, rows, min(args.examples, 5)))
    return summary


def plot_lengths(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = [r["before_words"] for r in rows]
    after = [r["after_words"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    top = max([*before, *after, 1])
    bins = list(range(0, top + max(1, top // 20) + 1, max(1, top // 20)))
    ax.hist(before, bins=bins, alpha=0.55, label=f"before (mean {statistics.fmean(before):.1f})")
    ax.hist(after, bins=bins, alpha=0.55, label=f"after (mean {statistics.fmean(after):.1f})")
    lows = [r["window_low"] for r in rows if r["window_low"] is not None]
    if lows:
        ax.axvline(
            statistics.fmean(lows),
            color="black",
            linestyle="--",
            linewidth=1,
            label="length window low (mean)",
        )
    ax.set_xlabel("reply length (words)")
    ax.set_ylabel("replies")
    ax.set_title(f"{title}: reply lengths before and after GRPO")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _fmt_rate(summary: dict[str, Any]) -> str:
    if summary["win_rate"] is None:
        return "n/a (every judgement failed)"
    low, high = summary["win_rate_ci95"]
    return f"{summary['win_rate']:.3f} [{low:.3f}, {high:.3f}]"


def _cell(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[:limit] + " …"
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def markdown(summary: dict[str, Any], rows: Sequence[dict[str, Any]], examples: int) -> str:
    lb, la = summary["lengths"]["before"], summary["lengths"]["after"]
    lines = [
        f"## Re:Fine {summary['task']}: after vs before",
        "",
        f"Judge {summary['judge']['model']} (both orders): win rate of after over before **{_fmt_rate(summary)}** "
        f"({summary['wins']} wins, {summary['ties']} ties, {summary['losses']} losses of {summary['judged']} judged; "
        f"{summary['judge_failed']} failed).",
        "",
        "| reply length (words) | mean | median | p10 | p90 | min | max | empty | below window |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, stats in (("before", lb), ("after", la)):
        below = f"{stats['below_window']:.2f}" if "below_window" in stats else "-"
        lines.append(
            f"| {name} | {stats['mean']:.1f} | {stats['median']:.0f} | {stats['p10']:.0f} | {stats['p90']:.0f} | "
            f"{stats['min']} | {stats['max']} | {stats['empty']} | {below} |"
        )
    lines += ["", "| input | before | after | judge |", "|---|---|---|---|"]
    for row in rows[:examples]:
        verdict = (
            "failed"
            if row["failed"]
            else f"{row['verdict']} ({row['before_score']:.2f} → {row['after_score']:.2f})"
        )
        lines.append(
            f"| {_cell(row['source'])} | {_cell(row['before'])} | {_cell(row['after'])} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


HTML_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Re:Fine {{ s.task }}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;width:100%}
td,th{border:1px solid #ccc;padding:6px;vertical-align:top;text-align:left;white-space:pre-wrap}
th{background:#f3f3f3}.win{background:#e8f6e8}.loss{background:#fbeaea}.tie{background:#f7f7e8}</style></head>
<body><h1>Re:Fine {{ s.task }}: after vs before</h1>
<p>Judge <code>{{ s.judge.model }}</code>, both orders. Win rate of after over before: <b>{{ rate }}</b>
({{ s.wins }} wins, {{ s.ties }} ties, {{ s.losses }} losses of {{ s.judged }} judged; {{ s.judge_failed }} failed).</p>
<h2>Reply lengths (words)</h2>
<table><tr><th></th><th>mean</th><th>median</th><th>p10</th><th>p90</th><th>min</th><th>max</th><th>below window</th></tr>
{% for name, st in lengths %}<tr><td>{{ name }}</td><td>{{ "%.1f"|format(st.mean) }}</td><td>{{ st.median }}</td>
<td>{{ st.p10 }}</td><td>{{ st.p90 }}</td><td>{{ st.min }}</td><td>{{ st.max }}</td>
<td>{{ "%.2f"|format(st.below_window) if st.below_window is defined else "-" }}</td></tr>{% endfor %}</table>
<p><img src="lengths.png" alt="reply length histograms before and after">
{% if has_curve %}<img src="reward_curve.png" alt="GRPO reward curve">{% endif %}</p>
<h2>Held-out inputs</h2>
<table><tr><th>input</th><th>before</th><th>after</th><th>judge</th></tr>
{% for r in rows %}<tr class="{{ 'failed' if r.failed else r.verdict }}"><td>{{ r.source }}</td><td>{{ r.before }}</td>
<td>{{ r.after }}</td><td>{% if r.failed %}failed{% else %}{{ r.verdict }} ({{ "%.2f"|format(r.before_score) }} →
{{ "%.2f"|format(r.after_score) }}){% endif %}</td></tr>{% endfor %}</table></body></html>
"""


def html(summary: dict[str, Any], rows: Sequence[dict[str, Any]], examples: int, *, has_curve: bool) -> str:
    from jinja2 import Environment

    env = Environment(autoescape=True)  # replies are model output: never markup
    lengths = [("before", summary["lengths"]["before"]), ("after", summary["lengths"]["after"])]
    return env.from_string(HTML_TEMPLATE).render(
        s=summary, rate=_fmt_rate(summary), lengths=lengths, rows=rows[:examples], has_curve=has_curve
    )


# ------------------------------------------------------------------------------------------------ CLI


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="greedy replies on held-out inputs")
    s.add_argument("--model", required=True)
    s.add_argument("--prompts", required=True, help="a folder written by python -m posttrain.synthetic")
    s.add_argument("--split", default="test")
    s.add_argument("--n", type=int, default=None, help="first n inputs (default: all)")
    s.add_argument("--max_new_tokens", type=int, default=96)
    s.add_argument("--batch_size", type=int, default=None)
    s.add_argument("--output_dir", required=True)
    c = sub.add_parser("compare", help="judge after vs before, lengths, tables")
    c.add_argument("before")
    c.add_argument("after")
    c.add_argument("--task", required=True)
    c.add_argument("--judge_base_url", required=True)
    c.add_argument("--judge_model", required=True)
    c.add_argument("--judge_api_key_env", default="JUDGE_API_KEY")
    c.add_argument("--judge_timeout_s", type=float, default=120.0)
    c.add_argument("--judge_max_tokens", type=int, default=None, help="max tokens of each verdict")
    c.add_argument("--judge_max_retries", type=int, default=3)
    c.add_argument("--judge_concurrency", type=int, default=4)
    c.add_argument(
        "--judge_response_format", choices=("json_schema", "json_object", "none"), default="json_schema"
    )
    c.add_argument(
        "--reward_curve", default=None, help="the GRPO run's reward_curve.png, shown in results.html"
    )
    c.add_argument("--examples", type=int, default=24, help="inputs shown side by side")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--output_dir", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> Any:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "sample":
            if args.n is not None and args.n < 1:
                raise ValueError(f"--n must be >= 1, got {args.n}")
            return sample(
                args.model,
                args.prompts,
                args.output_dir,
                split=args.split,
                n=args.n,
                max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size,
            )
        if args.judge_concurrency < 1 or args.examples < 0 or (args.judge_max_tokens or 1) < 1:
            raise ValueError("--judge_concurrency and --judge_max_tokens must be >= 1, --examples >= 0")
        if not str(args.judge_base_url).startswith(("http://", "https://")):
            raise ValueError(
                f"--judge_base_url must start with http:// or https://, got {args.judge_base_url!r}"
            )
        return compare(args)
    except (TaskFileError, JudgeConfigError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    run_cli(main)
