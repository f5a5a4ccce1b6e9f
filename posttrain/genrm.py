"""GenRM-CoT verification data for Countdown: what a generative verifier trains on (`python -m posttrain.genrm`).

    python -m posttrain.genrm --model runs/sft-countdown/model --output_dir runs/genrm-countdown/data \
        --template short --n_tasks 400 --k 8 --temperature 1.0 --task_offset 2560 --max_examples 800

A generative verifier (GenRM, Zhang et al. 2024; eq. 8-10 of the CS224R GenRM-CoT report) reads a puzzle and a
candidate solution, writes a verification rationale and answers the question "Is the answer correct?" with
" Yes" or " No"; its score is P(Yes) averaged over sampled rationales (eval.genrm). This module writes its data:

- `write_rationale`: a step-by-step check of a candidate. It parses the candidate's last ``<answer>`` with the
  rule verifier's own parser (`rewards.countdown.parse_answer`, nothing is eval'd), recomputes the arithmetic one
  operation at a time in evaluation order ("19 * 2 = 38", "38 - 17 = 21"), checks the numbers used against the
  given ones (each exactly once) and compares the result with the target. Its verdict always agrees with the
  rule: Yes exactly when `rewards.countdown.score(...) == 1.0`.
- `verification_example`: the chat record ``prompt`` = [system, user: puzzle + candidate + "Let's verify step by
  step."], ``completion`` = [assistant: rationale + "Is the answer correct?" + " Yes"/" No"] (eq. 8).
- Candidates are the policy's own samples (`posttrain.sampling.generate`) on TRAINING tasks only
  (`posttrain.data.train_tasks`); every entry point refuses a held-out puzzle (`check_training_tasks`).
  Labels are balanced by downsampling the majority class (`balance_labels`, seeded).
- `genrm_mixture`: the unified loss of eq. 7, SFT(D_verify) + lambda * SFT(D_correct), as a data mixture with
  `genrm_lambda` (a CountdownArguments field) correct solutions per verification example.
- `load_hub_genrm`: the hub's `psr-ai/genrm-cot` (pinned revision) mapped to the same prompt/completion format.
- `genrm_sft_dataset`: the train/test data recipes/sft/run.py trains on when `dataset_name` is a folder written
  here or the hub id.

The verifier sees only the candidate's final ``<answer>`` span (whitespace collapsed), not its reasoning: the rule
decides correctness from the answer alone, a reasoning trace would cost verifier tokens for no signal here, and
two candidates with the same answer text get the very same verifier input (eval.genrm scores them once).

Output folder: ``train.jsonl`` and ``test.jsonl`` (verification records; the test split holds other training-side
puzzles, split by key) and ``genrm_data.json`` (the request, counts and label balance), each written atomically.
The same request finds its folder and reuses it without sampling (``--force`` samples again).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from posttrain.countdown import (
    PROMPT_TEMPLATES,
    CountdownTask,
    build_sft_records,
    canonical_key,
    is_conversational_template,
    make_prompt,
    split_tasks,
)
from posttrain.data import DEFAULT_TASK_SEED, is_heldout, train_tasks
from posttrain.dataset_names import (
    GENRM,
    GENRM_DATA_FILE,
    GENRM_HUB_ID,
    GENRM_HUB_REVISION,
    dataset_kind,
    is_genrm_folder,
)
from posttrain.io import atomic_write_json, atomic_write_jsonl
from rewards.countdown import parse_answer
from rewards.format import extract_answer

logger = logging.getLogger(__name__)

# The verification format (eq. 8): the instruction closing the user turn, the question closing the rationale,
# and the two answer words. eval.genrm reads P(" Yes") against P(" No") right after QUESTION.
VERIFY_INSTRUCTION = "Let's verify step by step."
QUESTION = "Is the answer correct?"
YES, NO = " Yes", " No"
# A short explicit system prompt: chat templates insert a long default one otherwise (tokens cost CPU time).
VERIFY_SYSTEM_PROMPT = "Countdown verifier"
# At most this many characters of a candidate are shown to the verifier (a valid answer is always shorter:
# rewards.countdown caps it at 256 non-whitespace characters).
SHOWN_MAX_CHARS = 600

# Bump when the record format or the rationale text changes, so old folders are not reused silently.
GENRM_FORMAT_VERSION = 1
SPLITS = ("train", "test")


# ----------------------------------------------------------------------------------------------------------
# Rationales
# ----------------------------------------------------------------------------------------------------------


def _num(x: Fraction) -> str:
    """An exact value as written in a rationale: "38", "-2", "7/2"."""
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def candidate_answer(completion: Any) -> str | None:
    """The candidate's final ``<answer>`` body with whitespace collapsed (what the verifier sees), or None."""
    answer = extract_answer(completion) if isinstance(completion, str) else None
    return None if answer is None else " ".join(answer.split())


def shown_candidate(completion: Any) -> str:
    """The candidate as the verifier sees it: ``<answer>EXPR</answer>``, or the end of a completion without one."""
    answer = candidate_answer(completion)
    if answer is not None:
        text = f"<answer>{answer}</answer>"
        return text if len(text) <= SHOWN_MAX_CHARS else text[: SHOWN_MAX_CHARS - 3] + "..."
    tail = " ".join(completion.split()) if isinstance(completion, str) else ""
    if not tail:
        return "(empty)"
    return tail if len(tail) <= SHOWN_MAX_CHARS else "..." + tail[-(SHOWN_MAX_CHARS - 3) :]


def _numbers_line(used: Sequence[int], given: Sequence[int]) -> tuple[str, bool]:
    """The "Used: ... Given: ..." line and what differs (each given number exactly once), and whether they match."""
    head = f"Used: {', '.join(map(str, used))}. Given: {', '.join(map(str, given))}."
    u, g = Counter(used), Counter(given)
    problems = []
    for x in dict.fromkeys([*used, *given]):  # first-seen order
        if u[x] == g[x]:
            continue
        if g[x] == 0:
            problems.append(f"{x} is not given")
        elif u[x] == 0:
            problems.append(f"{x} is not used")
        else:
            problems.append(f"{x} is used {_times(u[x])} but given {_times(g[x])}")
    if not problems:
        return f"{head} Each number is used once.", True
    return f"{head} {'; '.join(problems)}.", False


def write_rationale(target: int, nums: Sequence[int], completion: Any) -> tuple[str, bool]:
    """(rationale, label): a step-by-step check of the candidate, and whether it is correct.

    The rationale ends before the question line (`verification_target` adds it). The label is
    `rewards.countdown.score(completion, target, nums) == 1.0`: the same parser, numbers rule and exact value.
    """
    target, given = int(target), [int(x) for x in nums]
    raw = extract_answer(completion) if isinstance(completion, str) else None
    if raw is None:
        return "There is no answer in <answer> </answer> tags.", False
    parsed = parse_answer(raw)
    if parsed is None:
        return (
            "The answer cannot be evaluated: only whole numbers, + - * / and parentheses are allowed, "
            "and no division by zero.",
            False,
        )
    lines = [f"{_num(a)} {op} {_num(b)} = {_num(c)}" for a, op, b, c in parsed.steps]
    if not lines:
        lines.append(f"No operation: the value is {_num(parsed.value)}.")
    numbers, numbers_ok = _numbers_line(parsed.literals, given)
    lines.append(numbers)
    hit = parsed.value == target
    lines.append(
        f"{_num(parsed.value)} equals the target {target}."
        if hit
        else f"{_num(parsed.value)} does not equal the target {target}."
    )
    return "\n".join(lines), numbers_ok and hit


def verification_target(rationale: str, label: bool) -> str:
    """The assistant turn of a verification example: rationale, question, answer word (eq. 8)."""
    return f"{rationale}\n{QUESTION}{YES if label else NO}"


def cut_at_question(rationale: str) -> str:
    """A sampled rationale cut before its question line, with the question appended: what P(Yes) is read after.

    Matches `verification_target` up to the answer word when the model writes the format it was trained on;
    a rationale without the question (stopped early, or cut at max_new_tokens) gets it appended.
    """
    at = rationale.find(QUESTION)
    body = (rationale if at < 0 else rationale[:at]).rstrip()
    return f"{body}\n{QUESTION}" if body else QUESTION


# ----------------------------------------------------------------------------------------------------------
# Verification examples
# ----------------------------------------------------------------------------------------------------------


def _target_nums(task: Any) -> tuple[int, tuple[int, ...]]:
    """(target, nums) of a CountdownTask or a mapping with "target" and "nums"."""
    if isinstance(task, CountdownTask):
        return task.target, task.nums
    if isinstance(task, Mapping) and "target" in task and "nums" in task:
        return int(task["target"]), tuple(int(x) for x in task["nums"])
    raise TypeError(
        f"expected a CountdownTask or a mapping with 'target' and 'nums', got {type(task).__name__}"
    )


def verification_prompt(task: Any, completion: Any) -> list[dict[str, str]]:
    """[system, user]: the puzzle, the candidate as shown (`shown_candidate`) and "Let's verify step by step."."""
    target, nums = _target_nums(task)
    user = (
        f"Numbers: {' '.join(map(str, nums))}\nTarget: {target}\nCandidate: {shown_candidate(completion)}\n"
        f"{VERIFY_INSTRUCTION}"
    )
    return [{"role": "system", "content": VERIFY_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def verification_key(task: Any, completion: Any) -> tuple[int, tuple[int, ...], str]:
    """Candidates with the same key get the same verifier input: the same puzzle and the same shown answer."""
    target, nums = _target_nums(task)
    return target, nums, shown_candidate(completion)


def verification_example(task: Any, completion: str) -> dict[str, Any]:
    """A conversational prompt/completion record (TRL SFT format) with its label and the candidate."""
    target, nums = _target_nums(task)
    rationale, label = write_rationale(target, nums, completion)
    return {
        "prompt": verification_prompt(task, completion),
        "completion": [{"role": "assistant", "content": verification_target(rationale, label)}],
        "kind": "verify",
        "label": label,
        "target": target,
        "nums": list(nums),
        "candidate": completion,
    }


class HeldoutTaskError(ValueError):
    """A held-out (evaluation-only) puzzle reached GenRM training data."""


def check_training_tasks(tasks: Iterable[Any], where: str = "GenRM data") -> None:
    """Raise HeldoutTaskError when any task is a held-out puzzle (`posttrain.data.is_heldout`)."""
    for i, task in enumerate(tasks):
        target, nums = _target_nums(task)
        if is_heldout(target, nums):
            raise HeldoutTaskError(
                f"{where}: task {i} (target={target}, nums={list(nums)}) is a held-out evaluation puzzle; GenRM "
                "data is built from training tasks only (posttrain.data.train_tasks)."
            )


def build_verification_examples(
    tasks: Sequence[Any], samples: Sequence[Sequence[str]]
) -> list[dict[str, Any]]:
    """One verification record per distinct shown candidate of each task (training tasks only)."""
    if len(tasks) != len(samples):
        raise ValueError(f"{len(tasks)} tasks but {len(samples)} lists of samples")
    check_training_tasks(tasks)
    records, seen = [], set()
    for task, completions in zip(tasks, samples, strict=True):
        for completion in completions:
            key = verification_key(task, completion)
            if key not in seen:
                seen.add(key)
                records.append(verification_example(task, completion))
    return records


def balance_labels(records: Sequence[dict], *, seed: int, max_examples: int | None = None) -> list[dict]:
    """Equal numbers of Yes and No records: the majority class is downsampled (seeded), the order is kept.

    `max_examples` caps the total (half per class). No records when one class is empty.
    """
    yes = [i for i, r in enumerate(records) if r["label"]]
    no = [i for i, r in enumerate(records) if not r["label"]]
    per_class = min(len(yes), len(no))
    if max_examples is not None:
        if max_examples < 0:
            raise ValueError(f"max_examples must be >= 0, got {max_examples}")
        per_class = min(per_class, max_examples // 2)
    rng = random.Random(seed)
    keep = set(rng.sample(yes, per_class)) | set(rng.sample(no, per_class))
    return [records[i] for i in sorted(keep)]


# ----------------------------------------------------------------------------------------------------------
# The unified loss as a data mixture (eq. 7)
# ----------------------------------------------------------------------------------------------------------


def check_lambda(genrm_lambda: float) -> float:
    """genrm_lambda as a float; ValueError naming the field unless it is a number >= 0."""
    try:
        value = float(genrm_lambda)
    except (TypeError, ValueError):
        raise ValueError(f"genrm_lambda must be a number >= 0, got {genrm_lambda!r}") from None
    if not value >= 0 or math.isinf(value):  # rejects NaN and negatives
        raise ValueError(f"genrm_lambda must be a finite number >= 0, got {genrm_lambda!r}")
    return value


def n_correct_examples(n_verify: int, genrm_lambda: float) -> int:
    """How many correct-solution examples go with `n_verify` verification examples: round(lambda * n_verify)."""
    return round(check_lambda(genrm_lambda) * n_verify)


def correct_solution_records(
    tasks: Sequence[CountdownTask], *, template: str, seed: int = 0, **record_kwargs: Any
) -> list[dict[str, Any]]:
    """D_correct: the solver's solutions to training tasks in the policy's prompt template and completion format.

    `record_kwargs` are those of `posttrain.countdown.build_sft_records` (think, style, ...): the same records the
    policy's SFT run trained on. The template must be conversational, like the verification records.
    """
    if not is_conversational_template(template):
        raise ValueError(
            f"GenRM data needs a conversational prompt template (chat, compact, short), got {template!r}: "
            "verification examples are chat messages and one SFT dataset takes one format."
        )
    check_training_tasks(tasks, "GenRM correct solutions")
    records = build_sft_records(tasks, template=template, seed=seed, **record_kwargs)
    return [{**r, "kind": "correct", "label": None, "candidate": None} for r in records]


def genrm_mixture(
    verify: Sequence[dict], correct: Sequence[dict], genrm_lambda: float, *, seed: int
) -> list[dict]:
    """The training set of the unified GenRM loss L = SFT(D_verify) + lambda * SFT(D_correct) (eq. 7).

    All verification records and the first round(lambda * len(verify)) correct-solution records, shuffled
    (seeded). Why a mixture is the weighted loss: SFT averages the loss over the examples of a batch, and a batch
    drawn from this mixture holds a verification example with probability 1/(1+lambda) and a correct solution
    with probability lambda/(1+lambda), so the expected gradient of a step is
    (grad L_verify + lambda * grad L_correct) / (1 + lambda): the gradient of eq. 7 with both losses averaged per
    example, scaled by the constant 1/(1+lambda) that the learning rate absorbs. (TRL averages over completion
    tokens rather than examples, which weights each example by its length in both readings alike.) Unlike a
    weighted loss, the mixture needs no trainer change, and lambda = 0 trains on verification data alone.
    """
    n = n_correct_examples(len(verify), genrm_lambda)
    if n > len(correct):
        raise ValueError(
            f"genrm_lambda={genrm_lambda} asks for {n} correct-solution examples, but only {len(correct)} were built"
        )
    mixed = list(verify) + list(correct[:n])
    random.Random(seed).shuffle(mixed)
    return mixed


# ----------------------------------------------------------------------------------------------------------
# Sampling candidates from the policy
# ----------------------------------------------------------------------------------------------------------


def sample_candidates(
    model: Any,
    tasks: Sequence[CountdownTask],
    params: Any,
    *,
    template: str,
    tokenizer: Any = None,
    sampler: Callable[..., list[list[str]]] | None = None,
    progress: bool = True,
) -> list[list[str]]:
    """`params.n` completions of the policy per training task (held-out puzzles are refused before sampling)."""
    check_training_tasks(tasks, "GenRM candidates")
    if sampler is None:
        from posttrain.sampling import generate as sampler
    prompts = [make_prompt(t.nums, t.target, template) for t in tasks]
    return sampler(model, prompts, params, tokenizer=tokenizer, progress=progress)


def candidate_tasks(n_tasks: int, *, seed: int, offset: int = 0, **gen_kwargs: Any) -> list[CountdownTask]:
    """Training tasks `offset .. offset + n_tasks` of `train_tasks(seed=seed)` (offset: skip what SFT trained on)."""
    if n_tasks < 1 or offset < 0:
        raise ValueError(f"need n_tasks >= 1 and offset >= 0, got n_tasks={n_tasks}, offset={offset}")
    return train_tasks(offset + n_tasks, seed=seed, **gen_kwargs)[offset:]


def split_examples(
    tasks: Sequence[CountdownTask], records: Sequence[dict], *, test_size: float | int, seed: int
) -> tuple[list[dict], list[dict]]:
    """(train, test) verification records split by puzzle key: no puzzle is in both."""
    if not test_size:
        return list(records), []
    _, test_tasks = split_tasks(tasks, test_size=test_size, seed=seed)
    test_keys = {t.key for t in test_tasks}
    train = [r for r in records if canonical_key(r["target"], r["nums"]) not in test_keys]
    test = [r for r in records if canonical_key(r["target"], r["nums"]) in test_keys]
    return train, test


# ----------------------------------------------------------------------------------------------------------
# Reading the data: a folder written here, or the hub's psr-ai/genrm-cot
# ----------------------------------------------------------------------------------------------------------


def read_genrm_folder(folder: str | Path, split: str) -> list[dict[str, Any]]:
    """The verification records of one split of a folder written by `python -m posttrain.genrm`."""
    folder = Path(folder)
    if not is_genrm_folder(folder):
        raise FileNotFoundError(f"{folder} is not a GenRM data folder (no {GENRM_DATA_FILE})")
    manifest = json.loads((folder / GENRM_DATA_FILE).read_text())
    if manifest.get("format_version") != GENRM_FORMAT_VERSION:
        raise ValueError(
            f"{folder} holds GenRM data of format {manifest.get('format_version')!r}, this code reads "
            f"{GENRM_FORMAT_VERSION}: write it again with `python -m posttrain.genrm ... --force`."
        )
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {split} split ({path.name}); splits: {list(SPLITS)}")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    check_training_tasks(records, str(path))
    return records


def hub_genrm_record(row: Any, name: str, index: int) -> dict[str, Any]:
    """A `psr-ai/genrm-cot` row as a conversational prompt/completion record (the last message is the target).

    The rows carry `messages` (role/content dicts, the verification conversation as published), plus
    `inputs`, `targets`, `question_id`, `model_output_id` and `dataset_type`; `dataset_type` is kept as `kind`.
    """
    where = f"{name}: row {index}"
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a mapping with field 'messages', got {type(row).__name__}")
    if row.get("messages") is None:  # absent, or null in an Arrow table whose other rows have it
        present = sorted(k for k, v in row.items() if v is not None)
        raise ValueError(f"{where}: missing field 'messages' (fields present: {present})")
    messages = row["messages"]
    if not isinstance(messages, (list, tuple)) or len(messages) < 2:
        raise ValueError(
            f"{where}: field 'messages' must be a list of at least 2 messages, got {messages!r:.200}"
        )
    out = []
    for j, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(
                f"{where}: field 'messages' item {j} must be a mapping, got {type(message).__name__}"
            )
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise ValueError(f"{where}: field 'messages' item {j} has no string {key!r}")
        out.append({"role": message["role"], "content": message["content"]})
    if out[-1]["role"] != "assistant":
        raise ValueError(
            f"{where}: field 'messages' must end with the assistant's turn, got {out[-1]['role']!r}"
        )
    kind = row.get("dataset_type")
    return {"prompt": out[:-1], "completion": out[-1:], "kind": kind if isinstance(kind, str) else "hub"}


def load_hub_genrm(
    split: str = "train", *, revision: str = GENRM_HUB_REVISION, max_rows: int | None = None
) -> list[dict[str, Any]]:
    """`psr-ai/genrm-cot` at a pinned revision as prompt/completion records (at most `max_rows`)."""
    from datasets import load_dataset  # lazy: only hub users pay for it

    ds = load_dataset(GENRM_HUB_ID, split=split, revision=revision)
    if max_rows is not None:
        ds = ds.select(range(min(max_rows, len(ds))))
    name = f"{GENRM_HUB_ID}@{revision}[{split}]"
    return [hub_genrm_record(row, name, i) for i, row in enumerate(ds)]


def is_genrm_source(dataset_name: str | None) -> bool:
    """True when `dataset_name` selects GenRM data for SFT: a folder written here or the hub id."""
    return bool(dataset_name) and dataset_kind(dataset_name, "SFT") == GENRM


def genrm_sft_dataset(script_args: Any, countdown_args: Any):
    """Train/test `DatasetDict` for recipes/sft/run.py: the GenRM mixture (train) and verification records (test).

    A folder: its verification records (at most `dataset_max_*_rows`), mixed with round(genrm_lambda * N)
    correct solutions to training tasks (`train_tasks(seed=countdown_data_seed)`, in `prompt_template` with the
    `warmstart_*` completion format: the policy's own SFT format). The hub (`psr-ai/genrm-cot`): its rows as
    published, whose mixture is the publisher's (genrm_lambda is not applied, and a note says so).
    """
    from datasets import Dataset, DatasetDict

    name = script_args.dataset_name
    if not is_genrm_source(name):
        raise ValueError(
            f"dataset_name={name!r} is not GenRM data (a `python -m posttrain.genrm` folder or {GENRM_HUB_ID!r})"
        )
    lam = check_lambda(countdown_args.genrm_lambda)
    limits = {
        script_args.dataset_train_split: script_args.dataset_max_train_rows,
        script_args.dataset_test_split: script_args.dataset_max_test_rows,
    }
    if not is_genrm_folder(name):
        revision = script_args.dataset_revision or GENRM_HUB_REVISION
        logger.info(
            "GenRM data from %s@%s as published (genrm_lambda=%s is not applied)", name, revision, lam
        )
        return DatasetDict(
            {
                split: Dataset.from_list(load_hub_genrm(split, revision=revision, max_rows=limit))
                for split, limit in limits.items()
            }
        )
    manifest = json.loads((Path(name) / GENRM_DATA_FILE).read_text())
    sampled_with = manifest.get("request", {}).get("template")
    if sampled_with and sampled_with != countdown_args.prompt_template:
        logger.warning(
            "%s was sampled with prompt template %r, but the correct solutions use %r (prompt_template)",
            name,
            sampled_with,
            countdown_args.prompt_template,
        )
    splits = {}
    for split, limit in limits.items():
        records = read_genrm_folder(name, "train" if split == script_args.dataset_train_split else "test")
        splits[split] = records[:limit] if limit is not None else records
    verify = splits[script_args.dataset_train_split]
    n_correct = n_correct_examples(len(verify), lam)
    tasks = train_tasks(
        n_correct, seed=countdown_args.countdown_data_seed, **countdown_args.generator_kwargs()
    )
    correct = correct_solution_records(
        tasks,
        template=countdown_args.prompt_template,
        seed=countdown_args.countdown_data_seed,
        max_failed_tries=countdown_args.warmstart_max_failed_tries,
        failed_trace_share=countdown_args.warmstart_failed_trace_share,
        think=countdown_args.warmstart_think,
        style=countdown_args.warmstart_style,
    )
    splits[script_args.dataset_train_split] = genrm_mixture(
        verify, correct, lam, seed=countdown_args.countdown_data_seed
    )
    logger.info(
        "GenRM mixture: %d verification + %d correct-solution examples (genrm_lambda=%s); %d test verification",
        len(verify),
        n_correct,
        lam,
        len(splits[script_args.dataset_test_split]),
    )
    return DatasetDict({split: Dataset.from_list(records) for split, records in splits.items()})


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m posttrain.genrm",
        description="GenRM-CoT verification data: the policy's samples on training tasks, checked step by step.",
    )
    p.add_argument("--model", required=True, help="the policy: hub name, local folder or 'embedded'")
    p.add_argument("--output_dir", required=True)
    p.add_argument(
        "--template",
        default=None,
        choices=sorted(PROMPT_TEMPLATES),
        help="the policy's prompt template; default: the one it was trained with (its run_summary.json), else short",
    )
    p.add_argument("--n_tasks", type=int, default=400, help="training tasks to sample candidates for")
    p.add_argument("--k", type=int, default=8, help="candidates sampled per task")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max_new_tokens", type=int, default=48)
    p.add_argument("--batch_size", type=int, default=None, help="sequences per generate call")
    p.add_argument("--data_seed", type=int, default=DEFAULT_TASK_SEED, help="task generator seed")
    p.add_argument(
        "--task_offset",
        type=int,
        default=0,
        help="skip this many training tasks (those the policy trained on)",
    )
    p.add_argument("--num_numbers", type=int, nargs="+", default=[3])
    p.add_argument("--max_number", type=int, default=30)
    p.add_argument(
        "--max_examples", type=int, default=800, help="cap on balanced train+test records (0: none)"
    )
    p.add_argument(
        "--test_size", type=float, default=0.05, help="share of tasks whose records form the test split"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling and balancing seed")
    p.add_argument("--force", action="store_true", help="sample again even if output_dir holds this request")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None, *, sampler: Callable[..., list[list[str]]] | None = None) -> dict:
    from posttrain.models import local_model_fingerprint, missing_local_model_hint, trained_template
    from posttrain.sampling import SamplingParams

    args = build_parser().parse_args(argv)
    hint = missing_local_model_hint(args.model)
    if hint is not None:
        raise SystemExit(hint)
    if args.template is None:
        args.template = trained_template(args.model) or "short"
    try:
        if not is_conversational_template(args.template):
            raise ValueError(f"--template {args.template} is not conversational; use chat, compact or short")
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            n=args.k,
            seed=args.seed,
            batch_size=args.batch_size,
        )
        if params.greedy:
            raise ValueError("--temperature 0 gives k identical candidates; sample with --temperature > 0")
        if args.max_examples < 0:
            raise ValueError(f"--max_examples must be >= 0, got {args.max_examples}")
        gen = dict(num_numbers=tuple(args.num_numbers), max_number=args.max_number)
        tasks = candidate_tasks(args.n_tasks, seed=args.data_seed, offset=args.task_offset, **gen)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None

    out = Path(args.output_dir)
    request = {
        "format_version": GENRM_FORMAT_VERSION,
        "model": args.model,
        "model_fingerprint": local_model_fingerprint(args.model),
        "template": args.template,
        "sampling": params.to_dict(),
        "n_tasks": args.n_tasks,
        "data_seed": args.data_seed,
        "task_offset": args.task_offset,
        "num_numbers": list(args.num_numbers),
        "max_number": args.max_number,
        "max_examples": args.max_examples,
        "test_size": args.test_size,
        "seed": args.seed,
    }
    if is_genrm_folder(out) and not args.force:
        manifest = json.loads((out / GENRM_DATA_FILE).read_text())
        if manifest.get("request") == request:
            print(
                f"GenRM data: {out} already holds this request ({manifest['counts']}); --force samples again"
            )
            return manifest
    started = time.time()
    samples = sample_candidates(
        args.model, tasks, params, template=args.template, sampler=sampler, progress=not args.no_progress
    )
    records = build_verification_examples(tasks, samples)
    test_size: float | int = int(args.test_size) if args.test_size >= 1 else args.test_size
    train, test = split_examples(tasks, records, test_size=test_size, seed=args.seed)
    cap = args.max_examples or None
    n_test_cap = None if cap is None else round(cap * len(test) / max(1, len(records)))
    splits = {
        "train": balance_labels(
            train, seed=args.seed, max_examples=None if cap is None else cap - n_test_cap
        ),
        "test": balance_labels(test, seed=args.seed + 1, max_examples=n_test_cap),
    }
    if not splits["train"]:
        yes = sum(r["label"] for r in records)
        raise SystemExit(
            f"error: no balanced verification data: {yes} of {len(records)} distinct candidates are correct. Both "
            "labels are needed: sample more tasks, another --temperature, or start from an SFT policy."
        )
    counts = {
        "tasks": len(tasks),
        "candidates": sum(len(s) for s in samples),
        "distinct_candidates": len(records),
        "distinct_correct": sum(r["label"] for r in records),
        **{f"{split}_examples": len(rows) for split, rows in splits.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    # The folder counts as incomplete until the new manifest is written.
    (out / GENRM_DATA_FILE).unlink(missing_ok=True)
    for split, rows in splits.items():
        atomic_write_jsonl(out / f"{split}.jsonl", rows)
    manifest = {
        "format_version": GENRM_FORMAT_VERSION,
        "request": request,
        "counts": counts,
        "wall_time_s": round(time.time() - started, 1),
    }
    atomic_write_json(out / GENRM_DATA_FILE, manifest)  # last: it marks the folder as complete
    print(f"GenRM data: {counts} -> {out}")
    return manifest


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    main()
