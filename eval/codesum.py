"""Code summarisation evaluation: BLEU (`sacrebleu`) and ROUGE-L (`rouge-score`) on held-out functions.

    python -m eval.codesum --model runs/sft-codesum/model --n_examples 100 --output_dir runs/sft-codesum/eval-after
    python -m eval.codesum --model runs/codet5-codesum/model --dataset google/code_x_glue_ct_code_to_text
    python -m eval.codesum compare runs/sft-codesum/eval-before runs/sft-codesum/eval-after --output_dir runs/sft-codesum

Functions are the test split of `posttrain.codesum` (standard-library modules never trained on) or CodeXGLUE's.
A decoder-only model gets the chat prompt the SFT recipe trains on; an encoder-decoder (CodeT5, from
recipes/seq2seq) gets the bare code, as recipes/seq2seq trains it. Decoding is greedy. Each reply is scored
whole: corpus BLEU and per-example sentence BLEU (sacrebleu), ROUGE-L F1, and the `code_summary` reward (ROUGE-L
times the length window). `compare` pairs two runs on the same functions: the per-example differences with a
paired bootstrap interval, and a few examples side by side (results.md).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from eval.compare import load_summary
from eval.paired import paired_bootstrap
from posttrain.cli import run_cli
from posttrain.codesum import CODESUM_HUB_ID, GENERATED, codesum_prompt, codesum_rows
from posttrain.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_jsonl
from posttrain.sampling import SamplingParams, default_batch_size, generate
from rewards.code_summary import length_factor, rouge_l

MAX_SOURCE_TOKENS = 512


def is_encoder_decoder(model: str) -> bool:
    from transformers import AutoConfig

    from posttrain.models import resolve_model_name

    try:
        config = AutoConfig.from_pretrained(resolve_model_name(model))
    except (OSError, ValueError):
        return False  # a PEFT adapter folder or the like: the decoder-only loader says what is wrong
    return bool(getattr(config, "is_encoder_decoder", False))


def generate_seq2seq(
    model: str, sources: Sequence[str], *, max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy summaries from an encoder-decoder model, one per source."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForSeq2SeqLM

    from posttrain.models import load_tokenizer, resolve_model_name

    tokenizer = load_tokenizer(model)
    network = AutoModelForSeq2SeqLM.from_pretrained(resolve_model_name(model)).eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    network.to(device)
    out: list[str] = []
    for start in tqdm(range(0, len(sources), batch_size), desc="generate", unit="batch"):
        batch = tokenizer(
            list(sources[start : start + batch_size]),
            truncation=True,
            max_length=MAX_SOURCE_TOKENS,
            padding=True,
            return_tensors="pt",
        ).to(device)
        with torch.no_grad():
            ids = network.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        out.extend(tokenizer.batch_decode(ids, skip_special_tokens=True))
    return out


def sentence_bleu(hypothesis: str, reference: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, [reference]).score)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def evaluate_codesum(
    model: str,
    *,
    dataset: str = GENERATED,
    n_examples: int = 100,
    seed: int = 0,
    max_new_tokens: int = 48,
    batch_size: int | None = None,
    output_dir: str | Path | None = None,
    revision: str | None = None,
) -> dict[str, Any]:
    rows = codesum_rows(dataset, "test", n_examples, seed=seed, revision=revision)
    if not rows:
        raise ValueError("no functions to evaluate")
    started = time.perf_counter()
    seq2seq = is_encoder_decoder(model)
    if seq2seq:
        replies = generate_seq2seq(
            model,
            [r["code"] for r in rows],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size or default_batch_size(),
        )
    else:
        params = SamplingParams(max_new_tokens=max_new_tokens, batch_size=batch_size)
        replies = [texts[0] for texts in generate(model, [codesum_prompt(r["code"]) for r in rows], params)]
    seconds = time.perf_counter() - started
    hypotheses = [" ".join(reply.split()) for reply in replies]  # one line, as the references are
    references = [r["summary"] for r in rows]
    samples = []
    for i, (row, reply, hypothesis) in enumerate(zip(rows, replies, hypotheses, strict=True)):
        rouge = rouge_l(row["summary"], hypothesis)
        samples.append(
            {
                "task_index": i,
                "task": {"name": row["name"], "code": row["code"], "reference": row["summary"]},
                "completion": reply,
                "bleu": sentence_bleu(hypothesis, row["summary"]),
                "rouge_l": rouge,
                "reward": rouge * length_factor(hypothesis),  # = code_summary's score, ROUGE-L computed once
                "words": len(hypothesis.split()),
            }
        )
    n = len(samples)
    summary: dict[str, Any] = {
        "task": "codesum",
        "model": model,
        "encoder_decoder": seq2seq,
        "n_tasks": n,
        "bleu": corpus_bleu(hypotheses, references),
        "sentence_bleu": sum(s["bleu"] for s in samples) / n,
        "rouge_l": sum(s["rouge_l"] for s in samples) / n,
        "mean_reward": sum(s["reward"] for s in samples) / n,
        "mean_words": sum(s["words"] for s in samples) / n,
        "sampling": {"max_new_tokens": max_new_tokens, "temperature": 0.0},
        "task_source": {"dataset": dataset, "split": "test", "seed": seed, "revision": revision},
        "generation_seconds": round(seconds, 3),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if output_dir is not None:
        atomic_write_jsonl(Path(output_dir) / "samples.jsonl", samples)
        atomic_write_json(Path(output_dir) / "summary.json", summary)
    print(
        f"{model}: BLEU {summary['bleu']:.2f}, ROUGE-L {summary['rouge_l']:.3f}, reward {summary['mean_reward']:.3f}, "
        f"{summary['mean_words']:.1f} words on {n} functions"
    )
    return summary


# ----------------------------------------------------------------------------------------------------------
# Before/after on the same functions
# ----------------------------------------------------------------------------------------------------------

METRICS = (("bleu", "sentence BLEU"), ("rouge_l", "ROUGE-L"), ("reward", "code_summary reward"))


def _cell(text: str, limit: int = 300) -> str:
    """Text for a markdown table cell: one line, pipes escaped, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def load_samples(run_dir: str | Path) -> list[dict]:
    """The scored samples of an evaluation folder, in task order; a malformed row is an error naming its line."""
    path = Path(run_dir) / "samples.jsonl"
    if not path.is_file():
        raise ValueError(
            f"{path}: no samples here (run `python -m eval.codesum --output_dir {run_dir}` first)"
        )
    rows = []
    for where, row in read_jsonl(path, "samples"):
        task = row.get("task") if isinstance(row, dict) else None
        ok = isinstance(task, dict) and isinstance(row.get("task_index"), int)
        ok = ok and isinstance(row.get("completion"), str)
        ok = ok and all(isinstance(row.get(k), (int, float)) for k, _ in METRICS)
        if not ok or not all(isinstance(task.get(k), str) for k in ("name", "code", "reference")):
            raise ValueError(f"{where}: not a code summarisation sample (written by eval.codesum?)")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no samples")
    return sorted(rows, key=lambda s: s["task_index"])


def compare_runs(before_dir: str | Path, after_dir: str | Path, *, n_examples: int = 4) -> dict[str, Any]:
    """Paired differences of two evaluations of the same functions, and markdown with examples side by side."""
    before, after = load_samples(before_dir), load_samples(after_dir)
    if [s["task"]["reference"] for s in before] != [s["task"]["reference"] for s in after]:
        raise ValueError(
            f"{before_dir} and {after_dir} evaluated different functions; run both with the same "
            "--dataset, --n_examples and --seed"
        )
    summaries = {"before": load_summary(before_dir), "after": load_summary(after_dir)}
    result: dict[str, Any] = {"n_tasks": len(before), "before": str(before_dir), "after": str(after_dir)}
    for key, _ in METRICS:
        b, a = [s[key] for s in before], [s[key] for s in after]
        low, high = paired_bootstrap(b, a)
        result[key] = {
            "before": sum(b) / len(b),
            "after": sum(a) / len(a),
            "difference": (sum(a) - sum(b)) / len(a),
            "ci95": [low, high],
        }
    result["corpus_bleu"] = {name: summaries[name].get("bleu") for name in summaries}
    lines = [
        "| run | model | functions | BLEU (corpus) | sentence BLEU | ROUGE-L | reward | words |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, folder in (("before", before_dir), ("after", after_dir)):
        s = summaries[name]
        lines.append(
            f"| {_cell(Path(folder).name)} | {_cell(s.get('model', '-'))} | {s.get('n_tasks')} | {s.get('bleu', 0):.2f} "
            f"| {s.get('sentence_bleu', 0):.2f} | {s.get('rouge_l', 0):.3f} | {s.get('mean_reward', 0):.3f} "
            f"| {s.get('mean_words', 0):.1f} |"
        )
    lines += ["", "| paired difference (after - before) | mean | 95% CI |", "|---|---|---|"]
    for key, label in METRICS:
        d = result[key]
        lines.append(f"| {label} | {d['difference']:+.3f} | [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] |")
    lines += ["", "## Side by side", ""]
    for b, a in list(zip(before, after, strict=True))[:n_examples]:
        code = b["task"]["code"].replace("```", "` ` `")
        lines += [
            f"### `{_cell(b['task']['name'], 100)}`",
            "",
            f"```python\n{code.rstrip()}\n```",
            "",
            "| | summary | ROUGE-L |",
            "|---|---|---|",
            f"| reference | {_cell(b['task']['reference'])} | |",
            f"| before | {_cell(b['completion'])} | {b['rouge_l']:.2f} |",
            f"| after | {_cell(a['completion'])} | {a['rouge_l']:.2f} |",
            "",
        ]
    result["markdown"] = "\n".join(lines)
    return result


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", choices=(GENERATED, CODESUM_HUB_ID), default=GENERATED)
    parser.add_argument("--revision", default=None, help=f"hub revision of {CODESUM_HUB_ID}")
    parser.add_argument("--n_examples", type=int, default=100)
    parser.add_argument(
        "--seed", type=int, default=0, help="which test functions (the split is shuffled with it)"
    )
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--output_dir", default=None)
    return parser


def make_compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval.codesum compare")
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--output_dir", required=True, help="results.md and paired.json go here")
    parser.add_argument("--examples", type=int, default=4, help="functions shown side by side")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["compare"]:
            args = make_compare_parser().parse_args(argv[1:])
            if args.examples < 0:
                raise ValueError(f"--examples must be >= 0, got {args.examples}")
            result = compare_runs(args.before, args.after, n_examples=args.examples)
            markdown = result.pop("markdown")
            atomic_write_text(Path(args.output_dir) / "results.md", markdown + "\n")
            atomic_write_json(Path(args.output_dir) / "paired.json", result)
            print(markdown.split("\n## Side by side")[0])
            return result
        args = make_parser().parse_args(argv)
        for name in ("n_examples", "max_new_tokens"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
        if args.batch_size is not None and args.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
        return evaluate_codesum(
            args.model,
            dataset=args.dataset,
            n_examples=args.n_examples,
            seed=args.seed,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            output_dir=args.output_dir,
            revision=args.revision,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    run_cli(main)
