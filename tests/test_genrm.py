"""GenRM-CoT for Countdown: the verification data (posttrain.genrm) and the verifier's scores (eval.genrm).

The rationale's verdict is the rule verifier's (hand-computed cases and hypothesis), no held-out puzzle reaches
the data, the eq. 7 mixture has round(lambda * N) correct solutions, the adaptive-K rule stops where the report
says (a scripted scorer), AUROC matches a brute-force pair count, and a tiny model runs the whole verifier.
"""

from __future__ import annotations

import importlib.util
import json
import math
from fractions import Fraction
from pathlib import Path

import datasets
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval import genrm as eg
from posttrain import genrm as pg
from posttrain.configs import CountdownArguments, ScriptArguments
from posttrain.countdown import CountdownTask, canonical_key, make_prompt
from posttrain.data import heldout_tasks, is_heldout, load_sft_dataset, train_tasks
from posttrain.dataset_names import GENRM_HUB_ID, GENRM_HUB_REVISION, dataset_kind
from rewards.countdown import score

REPO = Path(__file__).resolve().parent.parent
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def lines_of(completion: str, target: int, nums: list[int]) -> tuple[list[str], bool]:
    rationale, label = pg.write_rationale(target, nums, completion)
    return rationale.split("\n"), label


# ----------------------------------------------------------------------------------------------------------
# Rationales
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, target, nums, expected, label",
    [
        (
            "19 * 2 - 17",
            21,
            [19, 2, 17],
            [
                "19 * 2 = 38",
                "38 - 17 = 21",
                "Used: 19, 2, 17. Given: 19, 2, 17. Each number is used once.",
                "21 equals the target 21.",
            ],
            True,
        ),
        (  # precedence: the product first, whatever its position
            "3 + 4 * 5",
            23,
            [5, 4, 3],
            [
                "4 * 5 = 20",
                "3 + 20 = 23",
                "Used: 3, 4, 5. Given: 5, 4, 3. Each number is used once.",
                "23 equals the target 23.",
            ],
            True,
        ),
        (  # left to right at equal precedence
            "10 - 4 - 3",
            9,
            [10, 4, 3],
            [
                "10 - 4 = 6",
                "6 - 3 = 3",
                "Used: 10, 4, 3. Given: 10, 4, 3. Each number is used once.",
                "3 does not equal the target 9.",
            ],
            False,
        ),
        (  # exact fractions in between
            "7 / 2 * 4",
            14,
            [7, 2, 4],
            [
                "7 / 2 = 7/2",
                "7/2 * 4 = 14",
                "Used: 7, 2, 4. Given: 7, 2, 4. Each number is used once.",
                "14 equals the target 14.",
            ],
            True,
        ),
        (  # parentheses first; a negative value
            "(3 - 30) + 5",
            -22,
            [3, 30, 5],
            [
                "3 - 30 = -27",
                "-27 + 5 = -22",
                "Used: 3, 30, 5. Given: 3, 30, 5. Each number is used once.",
                "-22 equals the target -22.",
            ],
            True,
        ),
        (  # right value, a number used twice and one left out
            "19 * 2 - 17 - 2 + 2",
            21,
            [19, 2, 17],
            [
                "19 * 2 = 38",
                "38 - 17 = 21",
                "21 - 2 = 19",
                "19 + 2 = 21",
                "Used: 19, 2, 17, 2, 2. Given: 19, 2, 17. 2 is used 3 times but given once.",
                "21 equals the target 21.",
            ],
            False,
        ),
        (
            "19 * 2 - 5",
            33,
            [19, 2, 17],
            [
                "19 * 2 = 38",
                "38 - 5 = 33",
                "Used: 19, 2, 5. Given: 19, 2, 17. 5 is not given; 17 is not used.",
                "33 equals the target 33.",
            ],
            False,
        ),
    ],
)
def test_rationale_recomputes_each_operation_in_evaluation_order(answer, target, nums, expected, label):
    lines, got = lines_of(f"<think>x</think>\n<answer>{answer}</answer>", target, nums)
    assert lines == expected and got is label
    assert label is (score(f"<answer>{answer}</answer>", target, nums) == 1.0)


@pytest.mark.parametrize(
    "completion, first_words",
    [
        ("I could not solve it.", "There is no answer"),
        ("<answer>19 * 2 - 17", "There is no answer"),
        ("<answer>2 ** 3</answer>", "The answer cannot be evaluated"),
        ("<answer>5 / (3 - 3)</answer>", "The answer cannot be evaluated"),
        ("<answer>-19 + 40</answer>", "The answer cannot be evaluated"),
        ("<answer></answer>", "The answer cannot be evaluated"),
    ],
)
def test_candidates_without_a_usable_answer_get_a_short_no(completion, first_words):
    rationale, label = pg.write_rationale(21, [19, 2, 17], completion)
    assert rationale.startswith(first_words) and "\n" not in rationale and label is False
    target = pg.verification_target(rationale, label)
    assert target.endswith("\nIs the answer correct? No")


def test_verification_example_format():
    task = CountdownTask(target=21, nums=(19, 2, 17), solution="19 * 2 - 17")
    example = pg.verification_example(task, "<think>hm</think>\n<answer> 19 *  2\n- 17 </answer>")
    system, user = example["prompt"]
    assert system == {"role": "system", "content": pg.VERIFY_SYSTEM_PROMPT}
    assert user["content"] == (
        "Numbers: 19 2 17\nTarget: 21\nCandidate: <answer>19 * 2 - 17</answer>\nLet's verify step by step."
    )
    (assistant,) = example["completion"]
    assert assistant["role"] == "assistant"
    assert assistant["content"].endswith("21 equals the target 21.\nIs the answer correct? Yes")
    assert example["label"] is True and example["target"] == 21 and example["nums"] == [19, 2, 17]
    # The verifier's input depends on the answer only: the same answer text is the same key.
    assert pg.verification_key(task, "<answer>19*2-17</answer>") != pg.verification_key(
        task, example["candidate"]
    )
    assert pg.verification_key(task, "blah <answer>19 * 2 - 17</answer>") == pg.verification_key(
        {"target": 21, "nums": [19, 2, 17]}, example["candidate"]
    )


def test_cut_at_question_matches_the_training_text():
    rationale, label = pg.write_rationale(21, [19, 2, 17], "<answer>19 * 2 - 17</answer>")
    trained = pg.verification_target(rationale, label)
    assert pg.cut_at_question(trained) + pg.YES == trained
    assert pg.cut_at_question(rationale + "\n\n") == f"{rationale}\n{pg.QUESTION}"  # no question: appended
    assert pg.cut_at_question("") == pg.QUESTION


# Random tasks and answer expressions: trees over the task's numbers (sometimes others), so that both labels
# are frequent; the target is the expression's value about half of the time.
OPS = ["+", "-", "*", "/"]


@st.composite
def task_and_answer(draw):
    nums = draw(st.lists(st.integers(0, 30), min_size=2, max_size=4))
    leaves = list(nums) if draw(st.booleans()) else draw(st.lists(st.integers(0, 30), min_size=1, max_size=5))
    leaves = draw(st.permutations(leaves))

    def build(items):
        if len(items) == 1:
            return str(items[0])
        k = draw(st.integers(1, len(items) - 1))
        left, right = build(items[:k]), build(items[k:])
        op = draw(st.sampled_from(OPS))
        return f"({left} {op} {right})" if draw(st.booleans()) else f"{left} {op} {right}"

    expr = build(leaves)
    from rewards.countdown import evaluate_expression

    value = evaluate_expression(expr)
    if value is not None and value.denominator == 1 and draw(st.booleans()):
        target = int(value)
    else:
        target = draw(st.integers(0, 100))
    noise = draw(st.sampled_from(["", "<think>t</think>", "junk <answer>1</answer> then "]))
    return target, nums, f"{noise}<answer>{expr}</answer>"


def _check_rationale(target, nums, completion):
    rationale, label = pg.write_rationale(target, nums, completion)
    assert label is (score(completion, target, nums) == 1.0)
    text = pg.verification_target(rationale, label)
    assert text.endswith(f"\n{pg.QUESTION}{pg.YES if label else pg.NO}") and text.count(pg.QUESTION) == 1
    for line in rationale.split("\n"):  # every arithmetic line is right
        parts = line.split(" ")
        if len(parts) == 5 and parts[3] == "=":
            a, op, b, c = Fraction(parts[0]), parts[1], Fraction(parts[2]), Fraction(parts[4])
            assert {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op] == c


@PROPS
@given(case=task_and_answer())
def test_rationale_label_is_the_rule_verifier_on_random_expressions(case):
    _check_rationale(*case)


@PROPS
@given(
    target=st.integers(0, 100),
    nums=st.lists(st.integers(0, 30), min_size=2, max_size=4),
    completion=st.one_of(
        st.text(max_size=60),
        st.text(alphabet="0123456789+-*/() <>answer/", max_size=40).map(lambda s: f"<answer>{s}</answer>"),
    ),
)
def test_rationale_label_is_the_rule_verifier_on_random_text(target, nums, completion):
    _check_rationale(target, nums, completion)


# ----------------------------------------------------------------------------------------------------------
# Data: training tasks only, balanced labels, the lambda mixture
# ----------------------------------------------------------------------------------------------------------

HELDOUT = heldout_tasks(2, seed=7)
TRAIN = train_tasks(6, seed=7)


def test_heldout_puzzles_never_enter_verification_data():
    assert all(is_heldout(t.target, t.nums) for t in HELDOUT)
    samples = [[f"<answer>{t.solution}</answer>"] for t in TRAIN + HELDOUT]
    with pytest.raises(pg.HeldoutTaskError, match="held-out"):
        pg.build_verification_examples(TRAIN + HELDOUT, samples)
    calls = []

    def sampler(*args, **kwargs):
        calls.append(args)
        return [["<answer>1</answer>"]] * len(args[1])

    with pytest.raises(pg.HeldoutTaskError):
        pg.sample_candidates("model", [TRAIN[0], HELDOUT[0]], None, template="short", sampler=sampler)
    assert calls == []  # refused before any sampling
    with pytest.raises(pg.HeldoutTaskError):
        pg.correct_solution_records(HELDOUT, template="short")
    records = pg.build_verification_examples(TRAIN, samples[: len(TRAIN)])
    assert not any(is_heldout(r["target"], r["nums"]) for r in records)


def test_balance_labels_downsamples_the_majority_with_a_seed():
    records = [{"label": i % 4 == 0, "i": i} for i in range(40)]  # 10 Yes, 30 No
    kept = pg.balance_labels(records, seed=3)
    assert sum(r["label"] for r in kept) == 10 and len(kept) == 20
    assert [r["i"] for r in kept] == sorted(r["i"] for r in kept)  # order kept
    assert kept == pg.balance_labels(records, seed=3) and kept != pg.balance_labels(records, seed=4)
    assert len(pg.balance_labels(records, seed=3, max_examples=7)) == 6
    assert pg.balance_labels([{"label": True}] * 3, seed=0) == []


@pytest.mark.parametrize("lam, n_correct", [(0, 0), (0.1, 4), (0.25, 10), (0.5, 20), (1, 40), (2.5, 100)])
def test_lambda_mixture_counts(lam, n_correct):
    verify = [{"kind": "verify", "i": i} for i in range(40)]
    correct = [{"kind": "correct", "i": i} for i in range(100)]
    mixed = pg.genrm_mixture(verify, correct, lam, seed=0)
    assert sum(r["kind"] == "verify" for r in mixed) == 40
    assert sum(r["kind"] == "correct" for r in mixed) == n_correct == pg.n_correct_examples(40, lam)
    assert mixed == pg.genrm_mixture(verify, correct, lam, seed=0)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x"])
def test_lambda_must_be_a_number_at_least_zero(bad):
    with pytest.raises(ValueError, match="genrm_lambda"):
        pg.genrm_mixture([], [], bad, seed=0)
    if not isinstance(bad, str) and not math.isinf(bad):
        with pytest.raises(ValueError, match="genrm_lambda"):
            CountdownArguments(genrm_lambda=bad)


def _fake_policy(tasks):
    """A sampler that answers each task's prompt with its solution, a wrong sum, a duplicate and no answer."""
    by_prompt = {json.dumps(make_prompt(t.nums, t.target, "short")): t for t in tasks}

    def sampler(model, prompts, params, tokenizer=None, progress=True):
        out = []
        for prompt in prompts:
            t = by_prompt[json.dumps(prompt)]
            wrong = " + ".join(map(str, t.nums))
            wrong = wrong if sum(t.nums) != t.target else " * ".join(map(str, t.nums))
            texts = [f"<answer>{t.solution}</answer>", f"<answer>{wrong}</answer>", f"<answer>{wrong}</answer>",
                     "no idea"]  # fmt: skip
            out.append((texts * params.n)[: params.n])
        return out

    return sampler


def _write_folder(tmp_path, tiny_model_dir, **extra):
    tasks = pg.candidate_tasks(12, seed=5, offset=3, num_numbers=(3,), max_number=30)
    argv = [
        "--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "data"), "--template", "short",
        "--n_tasks", "12", "--k", "4", "--data_seed", "5", "--task_offset", "3", "--test_size", "2",
        "--max_examples", "0", "--no_progress",
    ]  # fmt: skip
    return argv, tasks, pg.main(argv, sampler=_fake_policy(tasks), **extra)


def test_data_cli_writes_balanced_training_side_data_and_reuses_it(tmp_path, tiny_model_dir):
    argv, tasks, manifest = _write_folder(tmp_path, tiny_model_dir)
    folder = tmp_path / "data"
    assert dataset_kind(str(folder), "SFT") == "genrm" and pg.is_genrm_source(str(folder))
    counts = manifest["counts"]
    assert counts["tasks"] == 12 and counts["candidates"] == 48
    assert counts["distinct_candidates"] == 36  # the duplicate wrong answer is one example
    train = pg.read_genrm_folder(folder, "train")
    test = pg.read_genrm_folder(folder, "test")
    assert len(train) == counts["train_examples"] and len(test) == counts["test_examples"] > 0
    for split in (train, test):
        assert sum(r["label"] for r in split) * 2 == len(split)
    train_keys = {canonical_key(r["target"], r["nums"]) for r in train}
    test_keys = {canonical_key(r["target"], r["nums"]) for r in test}
    assert not train_keys & test_keys and len(test_keys) == 2
    assert train_keys | test_keys <= {t.key for t in tasks}
    assert not any(is_heldout(*k) for k in train_keys | test_keys)
    assert {t.key for t in tasks}.isdisjoint(t.key for t in pg.candidate_tasks(3, seed=5, num_numbers=(3,)))

    def refuse(*args, **kwargs):
        raise AssertionError("the same request must reuse the folder")

    assert pg.main(argv, sampler=refuse)["counts"] == counts


def test_a_heldout_row_in_a_folder_is_refused(tmp_path, tiny_model_dir):
    _write_folder(tmp_path, tiny_model_dir)
    path = tmp_path / "data" / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0].update(target=HELDOUT[0].target, nums=list(HELDOUT[0].nums))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(pg.HeldoutTaskError, match="train.jsonl"):
        pg.read_genrm_folder(tmp_path / "data", "train")


def test_sft_dataset_mixes_lambda_correct_solutions(tmp_path, tiny_model_dir):
    _write_folder(tmp_path, tiny_model_dir)
    script = ScriptArguments(
        dataset_name=str(tmp_path / "data"), dataset_train_split="train", dataset_test_split="test"
    )
    countdown = CountdownArguments(prompt_template="short", warmstart_think=False, genrm_lambda=0.5)
    ds = pg.genrm_sft_dataset(script, countdown)
    n_verify = len(pg.read_genrm_folder(tmp_path / "data", "train"))
    kinds = ds["train"]["kind"]
    assert kinds.count("verify") == n_verify and kinds.count("correct") == round(0.5 * n_verify)
    assert set(ds["test"]["kind"]) == {"verify"}
    correct = [r for r in ds["train"] if r["kind"] == "correct"]
    assert correct[0]["prompt"] == make_prompt(correct[0]["nums"], correct[0]["target"], "short")
    assert all(score(r["completion"][0]["content"], r["target"], r["nums"]) == 1.0 for r in correct)
    assert not any(is_heldout(r["target"], r["nums"]) for r in ds["train"])
    with pytest.raises(ValueError, match="genrm_sft_dataset"):
        load_sft_dataset(script, countdown)  # the generic loader points to the GenRM one


class _Stop(Exception):
    pass


def test_sft_recipe_trains_on_the_mixture(tmp_path, tiny_model_dir, monkeypatch):
    """recipes/sft/run.py picks the GenRM loader for a GenRM folder (the YAML's dataset source)."""
    from posttrain.runtime import parse_recipe_args

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    _write_folder(tmp_path, tiny_model_dir)
    spec = importlib.util.spec_from_file_location("recipe_sft_genrm", REPO / "recipes/sft/run.py")
    sft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sft)
    seen = {}

    class Recorder:
        def __init__(self, *args, train_dataset=None, **kwargs):
            seen["train"] = train_dataset
            raise _Stop

    monkeypatch.setattr(sft, "SFTTrainer", Recorder)
    argv = [
        "--config", str(REPO / "recipes/sft/genrm_countdown.yaml"), "--dataset_name", str(tmp_path / "data"),
        "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path / "sft"), "--report_to", "none",
        "--genrm_lambda", "0.25",
    ]  # fmt: skip
    with pytest.raises(_Stop):
        sft.main(*parse_recipe_args(sft.make_parser(), argv))
    kinds = seen["train"]["kind"]
    assert kinds.count("correct") == round(0.25 * kinds.count("verify")) > 0


def test_hub_loader_with_a_fake_hub(monkeypatch):
    calls = []
    rows = [
        {
            "inputs": "q", "targets": "t", "question_id": i, "model_output_id": 0, "dataset_type": "cot",
            "messages": [{"role": "user", "content": f"Problem {i}. Let's verify step by step."},
                         {"role": "assistant", "content": "Step 1 ... Is the answer correct (Yes/No)? Yes"}],
        }
        for i in range(5)
    ]  # fmt: skip

    def load_dataset(name, *args, split=None, revision=None, **kwargs):
        calls.append((name, split, revision))
        return datasets.Dataset.from_list(rows if split == "train" else rows[:2])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    records = pg.load_hub_genrm("train", max_rows=3)
    assert calls == [(GENRM_HUB_ID, "train", GENRM_HUB_REVISION)] and (GENRM_HUB_ID, GENRM_HUB_REVISION) == (
        "psr-ai/genrm-cot",
        "main",
    )
    assert len(records) == 3 and records[1]["prompt"] == [rows[1]["messages"][0]]
    assert records[1]["completion"] == [rows[1]["messages"][1]] and records[1]["kind"] == "cot"
    script = ScriptArguments(
        dataset_name=GENRM_HUB_ID, dataset_train_split="train", dataset_test_split="test"
    )
    ds = pg.genrm_sft_dataset(script, CountdownArguments())
    assert (len(ds["train"]), len(ds["test"])) == (5, 2)

    del rows[3]["messages"]
    with pytest.raises(ValueError, match=r"psr-ai/genrm-cot@main\[train\]: row 3: missing field 'messages'"):
        pg.load_hub_genrm("train")
    rows[3]["messages"] = [{"role": "user", "content": "only a question"}, {"role": "user", "content": "?"}]
    with pytest.raises(ValueError, match="row 3: field 'messages' must end with the assistant"):
        pg.load_hub_genrm("train")


# ----------------------------------------------------------------------------------------------------------
# Adaptive K, AUROC
# ----------------------------------------------------------------------------------------------------------


def scripted(values):
    """draw(n) giving the next n scripted P(Yes) values, recording the chunk sizes asked for."""
    it = iter(values)
    asked = []

    def draw(n):
        asked.append(n)
        return [next(it) for _ in range(n)]

    return draw, asked


def test_adaptive_k_stops_at_k_min_when_the_variance_is_low():
    draw, asked = scripted([0.9, 0.8, 0.95, 0.85, 0.9, 0.9, 0.7, 0.99] + [0.0] * 40)
    result = eg.run_adaptive(draw)
    assert asked == [8] and result.k_used == 8 and result.stopped_early
    assert result.score == pytest.approx(sum([0.9, 0.8, 0.95, 0.85, 0.9, 0.9, 0.7, 0.99]) / 8)


def test_adaptive_k_grows_to_k_max_when_the_variance_stays_high():
    draw, asked = scripted([0.0, 1.0] * 40)
    result = eg.run_adaptive(draw)
    assert asked == [8, 8, 8, 8] and result.k_used == 32 and not result.stopped_early


def test_adaptive_k_stops_once_the_variance_falls():
    draw, asked = scripted([0.0, 1.0] * 4 + [0.5] * 8 + [0.5] * 100)  # var 0.25, then 0.125 after 16 values
    assert eg.run_adaptive(draw, eg.AdaptiveK(var_threshold=0.2)).k_used == 16 and asked == [8, 8]


@pytest.mark.parametrize(
    "k_min, k_max, chunk, asked", [(5, 12, 4, [5, 4, 3]), (3, 3, 8, [3]), (2, 3, 8, [2, 1])]
)
def test_adaptive_k_never_exceeds_k_max(k_min, k_max, chunk, asked):
    draw, got = scripted([0.0, 1.0] * 20)
    result = eg.run_adaptive(draw, eg.AdaptiveK(k_min, k_max, chunk, 0.0001))
    assert got == asked and result.k_used == k_max


def test_fixed_k_and_the_pure_rule():
    schedule = eg.AdaptiveK.fixed(4)
    assert (schedule.k_min, schedule.k_max, schedule.is_fixed) == (4, 4, True)
    draw, asked = scripted([0.0, 1.0] * 4)
    result = eg.run_adaptive(draw, schedule)
    assert asked == [4] and result.k_used == 4 and not result.stopped_early
    rule = eg.AdaptiveK()
    assert eg.next_chunk([], rule) == 8 and eg.next_chunk([0.5] * 3, rule) == 5
    assert eg.next_chunk([0.0, 1.0] * 4, rule) == 8 and eg.next_chunk([0.5] * 8, rule) == 0
    assert eg.next_chunk([0.0, 1.0] * 14, rule) == 4 and eg.next_chunk([0.0, 1.0] * 16, rule) == 0
    for bad in [dict(k_min=0), dict(k_min=9, k_max=8), dict(chunk=0), dict(var_threshold=-1)]:
        with pytest.raises(ValueError, match="AdaptiveK"):
            eg.AdaptiveK(**bad)


def brute_force_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


@PROPS
@given(
    data=st.lists(
        st.tuples(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 1.0]) | st.floats(0, 1), st.booleans()),
        min_size=2,
        max_size=30,
    ).filter(lambda d: 0 < sum(y for _, y in d) < len(d))
)
def test_auroc_matches_a_brute_force_pair_count(data):
    scores, labels = zip(*data, strict=True)
    assert eg.auroc(scores, labels) == pytest.approx(brute_force_auroc(scores, labels))


def test_auroc_hand_cases():
    assert eg.auroc([0.9, 0.8, 0.3, 0.1], [True, True, False, False]) == 1.0
    assert eg.auroc([0.1, 0.9], [True, False]) == 0.0
    assert eg.auroc([0.5, 0.5, 0.5], [True, False, True]) == 0.5
    assert eg.auroc([0.2, 0.4], [True, True]) is None
    with pytest.raises(ValueError):
        eg.auroc([0.1], [True, False])


# ----------------------------------------------------------------------------------------------------------
# The verifier on a tiny model
# ----------------------------------------------------------------------------------------------------------


def test_answer_words_must_be_single_tokens():
    class Splitting:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}  # one token per character

    with pytest.raises(ValueError, match="' Yes' as one token"):
        eg.answer_token_ids(Splitting())


@pytest.fixture(scope="module")
def tiny_verifier(tiny_model_dir):
    return eg.GenRMVerifier(
        str(tiny_model_dir), max_new_tokens=6, temperature=1.0, batch_size=8, keep_rationales=True
    )


def test_tiny_verifier_scores_pairs_end_to_end(tiny_verifier):
    task = CountdownTask(target=21, nums=(19, 2, 17), solution="19 * 2 - 17")
    pairs = [
        (task, "<answer>19 * 2 - 17</answer>"),
        ({"target": 21, "nums": [19, 2, 17]}, "<answer>19 + 2 + 17</answer>"),
        (task, "<think>again</think><answer>19 * 2 - 17</answer>"),  # the same verifier input as the first
    ]
    results = tiny_verifier.score(pairs, eg.AdaptiveK(k_min=2, k_max=4, chunk=2))
    assert len(results) == 3
    for r in results:
        assert 0.0 <= r.score <= 1.0 and 2 <= r.k_used <= 4 and len(r.p_yes) == r.k_used
        assert all(0.0 <= p <= 1.0 for p in r.p_yes) and r.score == pytest.approx(sum(r.p_yes) / r.k_used)
        assert len(r.rationales) == r.k_used
    assert results[0].rationale_tokens > 0 and not results[0].reused
    assert results[2].reused and results[2].rationale_tokens == 0 and results[2].score == results[0].score


def test_yes_probability_does_not_depend_on_padding(tiny_verifier):
    short = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nIs the answer correct?"
    long = (
        "<|im_start|>user\n" + "a longer question " * 10 + "<|im_end|>\n<|im_start|>assistant\n" + pg.QUESTION
    )
    alone = tiny_verifier.yes_probabilities([short])
    batched = tiny_verifier.yes_probabilities([long, short])
    assert batched[1] == pytest.approx(alone[0], abs=1e-5)


def test_cli_scores_a_samples_file(tmp_path, tiny_model_dir):
    rows = [
        {"task_index": 0, "sample_index": j, "task": {"target": 21, "nums": [19, 2, 17], "solution": ""},
         "completion": c, "reward": 1.0 if ok else 0.1, "correct": ok}
        for j, (c, ok) in enumerate(
            [("<answer>19 * 2 - 17</answer>", True), ("<answer>19 + 2</answer>", False),
             ("<answer>19 + 2</answer>", False)]
        )
    ]  # fmt: skip
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "verify"
    summary = eg.main([
        "--verifier", str(tiny_model_dir), "--samples", str(samples), "--output_dir", str(out),
        "--k_min", "2", "--k_max", "4", "--chunk", "2", "--fixed_k", "2", "--max_new_tokens", "4", "--no_progress",
    ])  # fmt: skip
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary, sort_keys=True))
    assert summary["n_candidates"] == 3 and summary["n_distinct"] == 2 and summary["n_correct"] == 1
    assert set(summary["runs"]) == {"adaptive", "fixed"}
    assert summary["runs"]["fixed"]["mean_k_used"] == 2 and 0 <= summary["runs"]["adaptive"]["auroc"] <= 1
    lines = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert [line["answer"] for line in lines] == ["19 * 2 - 17", "19 + 2", "19 + 2"]
    assert lines[2]["adaptive"]["reused"] and 2 <= lines[0]["adaptive"]["k_used"] <= 4


def test_cli_names_a_missing_field(tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task": {"target": 1, "nums": [1, 2]}, "completion": "x"}) + "\n")
    with pytest.raises(SystemExit, match="line 1: missing field 'correct'"):
        eg.main(["--verifier", "embedded", "--samples", str(samples), "--output_dir", str(tmp_path / "o")])
