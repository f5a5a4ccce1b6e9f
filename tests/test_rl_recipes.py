"""GRPO and RLOO recipes on a tiny model: train, reward curve, pre-check errors, resume after a kill, ZeRO-2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GRPO = REPO / "recipes/grpo/run.py"
RLOO = REPO / "recipes/rloo/run.py"
ENV = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return proc


def rl_args(model: Path, out: Path, config: str, **overrides) -> list[str]:
    """Tiny, fast settings: 2 prompts x 2 completions of <= 12 tokens per step."""
    args = {
        "model_name_or_path": str(model),
        "output_dir": str(out),
        "prompt_template": "compact",
        "countdown_train_size": 16,
        "per_device_train_batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 12,
        "max_steps": 2,
        "save_steps": 1,
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": "true",
        "countdown_validation_size": 0,  # validation during training has its own tests (test_post_sft.py)
    }
    args.update(overrides)
    flat = ["--config", config]
    for key, value in args.items():
        flat += [f"--{key}", str(value)]
    return flat


def parse(algo: str, *extra: str, config: str = "countdown.yaml"):
    from posttrain.rl import parse_rl_args

    module = {"grpo": "recipe_grpo", "rloo": "recipe_rloo"}[algo]
    import importlib.util

    spec = importlib.util.spec_from_file_location(module, REPO / "recipes" / algo / "run.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe, parse_rl_args(recipe.make_parser(), ["--config", f"recipes/{algo}/{config}", *extra])


# ----------------------------------------------------------------------------------------------------------
# Training end to end
# ----------------------------------------------------------------------------------------------------------


def test_grpo_countdown_trains_and_writes_reward_curve(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "grpo"
    proc = run([sys.executable, str(GRPO), *rl_args(tiny_model_dir, out, "recipes/grpo/countdown.yaml")])
    for name in ("model.safetensors", "tokenizer.json", "run_summary.json", "reward_curve.jsonl"):
        assert (out / name).exists(), name
    assert (out / "reward_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "checkpoint-2" / "trainer_state.json").exists()
    rows = [json.loads(line) for line in (out / "reward_curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        # The total is TRL's weighted sum of the per-function means (weights 1.0 and 0.1 in the YAML).
        assert row["reward"] == pytest.approx(
            row["countdown_reward"] + 0.1 * row["answer_format_reward"], abs=1e-5
        )
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["recipe"] == "grpo" and summary["task"] == "countdown"
    assert summary["reward_funcs"] == ["countdown", "answer_format"] and summary["reward_weights"] == [
        1.0,
        0.1,
    ]
    assert summary["generation_batch_size"] == 4 and summary["n_train"] == 16
    assert summary["args"]["countdown"]["prompt_template"] == "compact"  # eval.countdown reads it from here
    assert summary["reward_curve"]["n_logs"] == 2
    assert "GRPO mean reward" in proc.stdout


def test_rloo_countdown_trains_with_kl_reference(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "rloo"
    run(
        [sys.executable, str(RLOO), *rl_args(tiny_model_dir, out, "recipes/rloo/countdown.yaml", max_steps=1)]
    )
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["recipe"] == "rloo"
    assert summary["args"]["training"]["beta"] == 0.05  # the YAML's KL penalty...
    assert (
        summary["kl_reference"] == "frozen copy of the start model"
    )  # ...and the trainer built its reference
    rows = [json.loads(line) for line in (out / "reward_curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] and "kl" in rows[0]  # TRL logs kl only when it computes it


def test_rloo_lora_saves_adapter(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "rloo-lora"
    run(
        [
            sys.executable,
            str(RLOO),
            *rl_args(
                tiny_model_dir, out, "recipes/rloo/countdown_lora.yaml", max_steps=1, lora_r=4, lora_alpha=8
            ),
        ]
    )
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()


def test_grpo_lora_countdown(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "grpo-lora"
    args = rl_args(
        tiny_model_dir, out, "recipes/grpo/countdown_lora.yaml", max_steps=1, lora_r=4, lora_alpha=8
    )
    run([sys.executable, str(GRPO), *args])
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["recipe"] == "grpo" and summary["args"]["model"]["use_peft"] is True
    assert summary["kl_reference"] is None  # beta 0: no reference at all
    (row,) = [json.loads(line) for line in (out / "reward_curve.jsonl").read_text().splitlines()]
    assert row["reward"] == pytest.approx(
        row["countdown_reward"] + 0.1 * row["answer_format_reward"], abs=1e-5
    )


def _tiny_reward_model(tiny_model_dir: Path, rm: Path) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    model.config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(rm)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(rm)
    return rm


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_ultrafeedback_with_a_reward_model(algo: str, tiny_model_dir: Path, tmp_path: Path):
    rm = _tiny_reward_model(tiny_model_dir, tmp_path / "rm")
    out = tmp_path / f"{algo}-uf"
    args = rl_args(
        tiny_model_dir, out, f"recipes/{algo}/ultrafeedback.yaml", max_steps=1, dataset_max_train_rows=8
    )
    script = {"grpo": GRPO, "rloo": RLOO}[algo]
    run([sys.executable, str(script), *args, "--dataset_name", "fixture", "--reward_model_path", str(rm)])
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["recipe"] == algo and summary["task"] == "ultrafeedback"
    assert summary["data_source"] == "fixture"
    assert "countdown" not in summary["args"]  # eval.countdown must not mistake it for a Countdown model
    (row,) = [json.loads(line) for line in (out / "reward_curve.jsonl").read_text().splitlines()]
    assert row["reward"] == pytest.approx(row["reward_model_reward"])
    if algo == "rloo":  # beta 0.05 in the YAML: a frozen reference and a logged KL
        assert summary["kl_reference"] == "frozen copy of the start model" and "kl" in row


def test_template_comes_from_the_start_model(tmp_path: Path):
    """Without --prompt_template, RL samples with the template the start model was trained on."""
    model = tmp_path / "sft"
    model.mkdir()
    (model / "run_summary.json").write_text(json.dumps({"args": {"countdown": {"prompt_template": "base"}}}))
    _, parsed = parse("grpo", "--model_name_or_path", str(model))
    assert next(p for p in parsed if type(p).__name__ == "CountdownArguments").prompt_template == "base"
    _, parsed = parse("grpo", "--model_name_or_path", str(model), "--prompt_template", "compact")
    assert next(p for p in parsed if type(p).__name__ == "CountdownArguments").prompt_template == "compact"


def test_countdown_rows_carry_reward_columns():
    from posttrain.configs import CountdownArguments, ScriptArguments
    from posttrain.data import is_heldout
    from posttrain.rl import build_rl_dataset
    from rewards.countdown import countdown_reward

    ds, info = build_rl_dataset(
        ScriptArguments(), CountdownArguments(countdown_train_size=8, prompt_template="compact")
    )
    assert info["task"] == "countdown" and len(ds) == 8
    assert not any(is_heldout(t, n) for t, n in zip(ds["target"], ds["nums"], strict=True))
    assert ds[0]["prompt"][-1]["role"] == "user" and str(ds[0]["target"]) in ds[0]["prompt"][-1]["content"]
    good = f"<think>x</think><answer>{ds[0]['nums'][0]}</answer>"
    assert countdown_reward([good], target=[ds[0]["target"]], nums=[ds[0]["nums"]]) == [0.1]


def test_ultrafeedback_prompts_are_conversational():
    from posttrain.configs import CountdownArguments, ScriptArguments
    from posttrain.rl import build_rl_dataset

    ds, info = build_rl_dataset(
        ScriptArguments(dataset_name="fixture", dataset_train_split="train_prefs", dataset_max_train_rows=12),
        CountdownArguments(),
    )
    assert info["task"] == "ultrafeedback" and 0 < len(ds) <= 12
    assert len(set(p[0]["content"] for p in ds["prompt"])) == len(ds)  # one group per distinct prompt
    assert all(p == [{"role": "user", "content": p[0]["content"]}] for p in ds["prompt"])


# ----------------------------------------------------------------------------------------------------------
# Pre-check: clear errors before any model loads
# ----------------------------------------------------------------------------------------------------------


def test_batch_not_divisible_by_num_generations_names_fields_and_fix():
    from posttrain.rl_checks import RLConfigError

    with pytest.raises(RLConfigError) as err:
        parse("grpo", "--per_device_train_batch_size", "6", "--num_generations", "4")
    message = str(err.value)
    for text in ("per_device_train_batch_size (6)", "num_generations=4", "--per_device_train_batch_size 8"):
        assert text in message


def test_batch_check_counts_processes_and_accumulation():
    from types import SimpleNamespace

    from posttrain.rl_checks import batch_problems

    def config(**kw):
        base = dict(
            per_device_train_batch_size=3,
            gradient_accumulation_steps=1,
            num_generations=4,
            generation_batch_size=None,
            steps_per_generation=None,
            max_completion_length=96,
            eval_strategy="no",
        )
        return SimpleNamespace(**{**base, **kw})

    # 3 completions x 2 processes x 1 accumulation step = 6 is not a multiple of 4 ...
    (problem,) = batch_problems(config(), num_processes=2)
    assert "processes (2)" in problem and "= 6 completions" in problem
    assert "--per_device_train_batch_size 4" in problem and "--num_generations 3" in problem
    # ... but with 2 accumulation steps it is 12 = 3 prompts x 4 completions, and 4 processes give 12 too.
    assert batch_problems(config(gradient_accumulation_steps=2), num_processes=2) == []
    assert batch_problems(config(), num_processes=4) == []


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--num_generations", "1"], "num_generations=1"),
        (["--generation_batch_size", "16", "--steps_per_generation", "2"], "both set"),
        (["--generation_batch_size", "20"], "generation_batch_size=20 must be a multiple"),
    ],
)
def test_other_batch_mistakes(extra, expected):
    from posttrain.rl_checks import RLConfigError

    with pytest.raises(RLConfigError, match=expected):
        parse("grpo", *extra)


def _run_until_trainer(recipe, parsed) -> None:
    """Run the recipe with a trainer class that fails the test if anything gets that far (loads a model)."""
    from posttrain.rl import run_rl

    def no_trainer(*args, **kwargs):
        raise AssertionError("the pre-check should have stopped the run before building the trainer")

    run_rl(recipe.__name__[-4:], no_trainer, *parsed)


def test_precheck_reward_weights_mismatch(tiny_model_dir: Path, tmp_path: Path):
    from posttrain.rl_checks import RLConfigError

    recipe, parsed = parse(
        "grpo",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(tmp_path),
        "--reward_weights",
        "1.0",
    )
    with pytest.raises(RLConfigError, match="reward_weights has 1 value"):
        _run_until_trainer(recipe, parsed)


def test_precheck_missing_start_model_says_what_to_run(tmp_path: Path):
    from posttrain.rl_checks import RLConfigError

    recipe, parsed = parse(
        "rloo", "--model_name_or_path", "runs/no-such-run/model", "--output_dir", str(tmp_path)
    )
    with pytest.raises(RLConfigError, match="make sft-countdown"):
        _run_until_trainer(recipe, parsed)


def test_precheck_missing_reward_model_says_what_to_run(tiny_model_dir: Path, tmp_path: Path):
    from posttrain.rl_checks import RLConfigError

    recipe, parsed = parse(
        "grpo",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(tmp_path),
        "--reward_model_path",
        str(tmp_path / "no-rm"),
        config="ultrafeedback.yaml",
    )
    with pytest.raises(RLConfigError, match="make rm-ultrafeedback"):
        _run_until_trainer(recipe, parsed)


def test_precheck_vllm_colocate_without_vllm_or_gpu(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    import importlib.util

    import torch

    from posttrain.rl_checks import RLConfigError

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and a GPU are present")
    recipe, parsed = parse(
        "grpo",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(tmp_path),
        "--use_vllm",
        "true",
    )
    with pytest.raises(RLConfigError, match="use_vllm=true"):
        _run_until_trainer(recipe, parsed)


def test_precheck_vllm_server_unreachable(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    import socket

    from posttrain.rl_checks import RLConfigError

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    recipe, parsed = parse(
        "grpo",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(tmp_path),
        "--use_vllm",
        "true",
        "--vllm_mode",
        "server",
        "--vllm_server_port",
        str(port),
    )
    with pytest.raises(RLConfigError) as err:
        _run_until_trainer(recipe, parsed)
    assert f"127.0.0.1:{port}" in str(err.value) and "trl vllm-serve --model" in str(err.value)


def test_precheck_completion_longer_than_context(tiny_model_dir: Path, tmp_path: Path):
    from posttrain.rl_checks import RLConfigError

    recipe, parsed = parse(
        "grpo",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(tmp_path),
        "--prompt_template",
        "compact",
        "--max_completion_length",
        "1020",
    )
    with pytest.raises(
        RLConfigError, match=r"exceeds the model's context of 1024 \(fix: --max_completion_length"
    ):
        _run_until_trainer(recipe, parsed)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_precheck_countdown_rewards_on_ultrafeedback(tiny_model_dir: Path, tmp_path: Path):
    from posttrain.rl_checks import RLConfigError

    recipe, parsed = parse(
        "grpo",
        *("--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path)),
        *("--dataset_name", "fixture", "--reward_funcs", "countdown", "--reward_weights", "1.0"),
        config="ultrafeedback.yaml",
    )
    with pytest.raises(RLConfigError, match=r"\['countdown'\], which score Countdown answers.*UltraFeedback"):
        _run_until_trainer(recipe, parsed)


def test_precheck_unreachable_judge(tiny_model_dir: Path, tmp_path: Path):
    from posttrain.rl_checks import RLConfigError

    port = _free_port()
    recipe, parsed = parse(
        "grpo",
        *("--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path)),
        *("--reward_funcs", "llm_judge", "--reward_weights", "1.0", "--judge_model", "judge-m"),
        *("--judge_base_url", f"http://127.0.0.1:{port}/v1"),
    )
    with pytest.raises(RLConfigError) as err:
        _run_until_trainer(recipe, parsed)
    message = str(err.value)
    assert f"nothing answers at http://127.0.0.1:{port}/v1/models" in message
    assert "vllm serve judge-m" in message and "judge_neutral_score" in message


@pytest.fixture
def models_server():
    """An HTTP server on 127.0.0.1 whose GET /v1/models answers with the status in `server.status`."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            self.server.paths.append(self.path)
            self.server.auth.append(self.headers.get("Authorization"))
            body = b'{"object": "list", "data": []}'
            self.send_response(self.server.status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.status, srv.paths, srv.auth = 200, [], []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("status", [200, 401, 403, 404])
def test_judge_precheck_accepts_any_answer(models_server, status: int, monkeypatch, caplog):
    import logging

    from posttrain.rl_checks import judge_problems
    from rewards.config import RewardArguments

    monkeypatch.setenv("POSTTRAIN_TEST_JUDGE_KEY", "sk-test-never-sent-by-the-precheck")
    models_server.status = status
    args = RewardArguments(
        reward_funcs=["llm_judge"],
        judge_base_url=f"http://127.0.0.1:{models_server.server_address[1]}/v1/",
        judge_model="m",
        judge_api_key_env="POSTTRAIN_TEST_JUDGE_KEY",
    )
    with caplog.at_level(logging.WARNING, logger="posttrain"):
        assert judge_problems(args, ["llm_judge"]) == []  # 401/403: it answers, it only wants the key
    assert models_server.paths == ["/v1/models"] and models_server.auth == [None]
    assert ("answered HTTP 404" in caplog.text) == (status == 404)
    assert judge_problems(args, ["countdown"]) == []  # no judge selected: nothing probed
    assert len(models_server.paths) == 1


def test_judge_precheck_hides_url_credentials():
    from posttrain.rl_checks import judge_problems
    from rewards.config import RewardArguments

    port = _free_port()
    args = RewardArguments(
        reward_funcs=["llm_judge"], judge_base_url=f"http://user:s3cret@127.0.0.1:{port}/v1", judge_model="m"
    )
    (problem,) = judge_problems(args, ["llm_judge"], timeout_s=1.0)
    assert f"http://127.0.0.1:{port}/v1/models" in problem and "s3cret" not in problem


def test_precheck_judge_groups_split_across_processes():
    from types import SimpleNamespace

    from posttrain.rl_checks import judge_group_problems

    def config(per_device: int, steps: int, k: int = 4):
        return SimpleNamespace(
            per_device_train_batch_size=per_device,
            steps_per_generation=steps,
            gradient_accumulation_steps=1,
            num_generations=k,
        )

    # 2 processes x 3 x 2 = 12 completions = 3 prompts x 4 globally, but each process scores 6: a split group.
    (problem,) = judge_group_problems(config(3, 2), ["llm_judge"])
    assert "per_device_train_batch_size (3) x steps_per_generation (2) = 6" in problem
    assert "--per_device_train_batch_size 4" in problem
    assert judge_group_problems(config(3, 2), ["reward_model"]) == []  # only the judge scores whole groups
    assert judge_group_problems(config(2, 2), ["llm_judge"]) == []
    assert judge_group_problems(config(8, 1), ["llm_judge"]) == []


def test_precheck_think_rewards_for_a_direct_answer_model(tmp_path: Path):
    from posttrain.rl_checks import RLConfigError, think_format_problems

    model = tmp_path / "sft-direct"
    model.mkdir()
    summary = {"args": {"countdown": {"prompt_template": "compact", "warmstart_think": False}}}
    (model / "run_summary.json").write_text(json.dumps(summary))
    (problem,) = think_format_problems(str(model), ["countdown", "format", "tag_count"])
    assert "warmstart_think=false" in problem and "answer_format" in problem and "`format`" in problem
    assert think_format_problems(str(model), ["countdown", "answer_format"]) == []
    summary["args"]["countdown"]["warmstart_think"] = True
    (model / "run_summary.json").write_text(json.dumps(summary))
    assert think_format_problems(str(model), ["countdown", "format"]) == []
    # the other way round: a model that thinks first never writes a bare answer
    (problem,) = think_format_problems(str(model), ["countdown", "answer_format"])
    assert "warmstart_think=true" in problem and "--reward_funcs countdown format" in problem
    assert think_format_problems(str(tmp_path / "no-summary"), ["format"]) == []
    assert think_format_problems(str(tmp_path / "no-summary"), ["answer_format"]) == []
    # ... and the recipe (whose YAML asks for answer_format) stops on it before loading anything
    recipe, parsed = parse("grpo", "--model_name_or_path", str(model), "--output_dir", str(tmp_path / "o"))
    with pytest.raises(RLConfigError, match="answer_format"):
        _run_until_trainer(recipe, parsed)


# ----------------------------------------------------------------------------------------------------------
# Reward curve
# ----------------------------------------------------------------------------------------------------------


def test_reward_curve_from_log_history(tmp_path: Path):
    from types import SimpleNamespace

    from posttrain.curves import RewardCurveCallback, curve_summary

    history = [
        {"step": 1, "reward": 0.2, "reward_std": 0.1, "rewards/countdown_reward/mean": 0.1, "loss": 0.0},
        {"step": 1, "eval_loss": 1.0},
        {"step": 2, "reward": 0.6, "reward_std": 0.2, "rewards/countdown_reward/mean": 0.5, "kl": 0.01},
        {"step": 2, "train_runtime": 3.0, "reward": 0.4},
    ]
    callback = RewardCurveCallback(tmp_path)
    state = SimpleNamespace(is_world_process_zero=True, log_history=history)
    callback.on_log(None, state, None, logs=history[-2])
    rows = [json.loads(line) for line in (tmp_path / "reward_curve.jsonl").read_text().splitlines()]
    assert rows == [
        {"step": 1, "reward": 0.2, "reward_std": 0.1, "countdown_reward": 0.1},
        {"step": 2, "reward": 0.6, "reward_std": 0.2, "countdown_reward": 0.5, "kl": 0.01},
    ]
    assert (tmp_path / "reward_curve.png").stat().st_size > 1000
    # Atomic writes leave no temporary files behind (their names: .reward_curve.png.XXXX.png, .….jsonl.XXXX.tmp).
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "reward_curve.jsonl",
        "reward_curve.png",
        "training_curves.png",
    ]
    assert curve_summary(rows, window=1)["first"] == 0.2 and curve_summary(rows, window=1)["last"] == 0.6
    # Other ranks never write.
    callback2 = RewardCurveCallback(tmp_path / "rank1")
    callback2.on_log(None, SimpleNamespace(is_world_process_zero=False, log_history=history), None)
    assert not (tmp_path / "rank1").exists()


def test_moving_average_and_a_long_curve(tmp_path: Path):
    from posttrain.curves import moving_average, plot_reward_curve

    assert moving_average([1.0, 2.0, 3.0, 4.0], 2) == [1.5, 2.5, 3.5]
    assert moving_average([1.0, float("nan"), 3.0], 3) == [2.0]  # NaNs are skipped, not propagated
    assert moving_average([1.0, 2.0], 3) == []
    rows = [{"step": i, "reward": 0.1 * (i % 3), "reward_std": 0.1} for i in range(1, 41)]
    assert plot_reward_curve(rows, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_reuse_eval_only_for_matching_settings(tmp_path: Path):
    from eval.reuse import reuse_eval

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"x")
    source = tmp_path / "eval-after"
    source.mkdir()
    summary = {
        "model": str(model),
        "template": "compact",
        "greedy": True,
        "n_tasks": 200,
        "seed": 1234,
        "task_source": {"heldout": True, "num_numbers": 3},
        "sampling": {"max_new_tokens": 96},
    }
    (source / "summary.json").write_text(json.dumps(summary))
    common = ["--model", str(model), "--n_tasks", "200", "--seed", "1234", "--max_new_tokens", "96"]
    out = tmp_path / "eval-before"
    assert reuse_eval([str(source), "--output_dir", str(out), "--template", "chat", *common]) == 1
    assert not out.exists()
    assert reuse_eval([str(source), "--output_dir", str(out), "--template", "compact", *common]) == 0
    assert json.loads((out / "summary.json").read_text()) == summary
    # Weights newer than the evaluation: the evaluation is stale.
    later = time.time() + 60
    os.utime(model / "model.safetensors", (later, later))
    out2 = tmp_path / "eval-before-2"
    assert reuse_eval([str(source), "--output_dir", str(out2), "--template", "compact", *common]) == 1


# ----------------------------------------------------------------------------------------------------------
# Resume after a kill, and ZeRO-2 on two CPU processes
# ----------------------------------------------------------------------------------------------------------


def test_killed_run_resumes_from_its_checkpoint(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "resume"
    max_steps = 8
    cmd = [
        sys.executable,
        str(GRPO),
        *rl_args(
            tiny_model_dir, out, "recipes/grpo/countdown.yaml", max_steps=max_steps, save_total_limit=10
        ),
    ]
    # The child's output goes to a file, not a pipe nobody reads until the end: a full pipe would block the
    # child before its first checkpoint, and the file stays readable whenever the run stops.
    log_path = tmp_path / "first-run.log"
    with log_path.open("w") as log_file:
        first = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while not (out / "checkpoint-1" / "trainer_state.json").exists():
            assert first.poll() is None, (
                f"the run ended before its first checkpoint:\n{log_path.read_text()[-3000:]}"
            )
            assert time.time() < deadline, f"no checkpoint within 240 s:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(timeout=30)
    assert not (out / "run_summary.json").exists(), "the first run finished before it was killed"
    done = sorted(
        int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()
    )
    resumed_from = done[-1]
    assert 1 <= resumed_from < max_steps

    proc = run(cmd)
    log = proc.stdout + proc.stderr
    assert "Resuming from" in log
    # Only the remaining steps ran in the second process (each step logs its reward once).
    assert log.count("'reward':") == max_steps - resumed_from
    state = json.loads((out / f"checkpoint-{max_steps}" / "trainer_state.json").read_text())
    assert state["global_step"] == max_steps
    curve = [json.loads(line)["step"] for line in (out / "reward_curve.jsonl").read_text().splitlines()]
    assert curve == list(range(1, max_steps + 1))  # the curve continues across the kill


def test_resume_skips_a_checkpoint_cut_off_while_saving(tmp_path: Path):
    from types import SimpleNamespace

    from posttrain.runtime import last_checkpoint

    args = SimpleNamespace(resume_from_checkpoint=None, output_dir=str(tmp_path))
    assert last_checkpoint(args) is None
    (tmp_path / "checkpoint-3").mkdir()  # killed before trainer_state.json was written
    assert last_checkpoint(args) is None
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-11").mkdir()
    assert last_checkpoint(args) == str(tmp_path / "checkpoint-10")  # numeric order, cut-off one skipped
    args.resume_from_checkpoint = str(tmp_path / "checkpoint-2")
    assert last_checkpoint(args) == str(tmp_path / "checkpoint-2")


def _resume_args(out: Path, **kw):
    from types import SimpleNamespace

    return SimpleNamespace(
        **{"resume_from_checkpoint": None, "output_dir": str(out), "max_steps": 4, "should_save": True, **kw}
    )


def _checkpoint(out: Path, step: int) -> Path:
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return folder


def test_resume_refuses_a_run_with_other_settings(tmp_path: Path):
    from posttrain.runtime import RUN_IDENTITY_FILE, resume_checkpoint

    identity = {"reward_funcs": "['countdown', 'format']", "num_generations": 4, "countdown_data_seed": 4321}
    # A fresh run records its identity ...
    assert resume_checkpoint(_resume_args(tmp_path), identity) is None
    assert json.loads((tmp_path / RUN_IDENTITY_FILE).read_text()) == identity
    # ... resumes when relaunched with the same one ...
    _checkpoint(tmp_path, 2)
    assert resume_checkpoint(_resume_args(tmp_path), identity) == str(tmp_path / "checkpoint-2")
    # ... and refuses to mix in other data, rewards or batch shapes.
    other = {**identity, "reward_funcs": "['countdown', 'answer_format']", "num_generations": 8}
    with pytest.raises(SystemExit) as err:
        resume_checkpoint(_resume_args(tmp_path), other)
    message = str(err.value)
    assert "checkpoint-2 of a run with other settings" in message and "another --output_dir" in message
    assert "num_generations: checkpoints 4, this launch 8" in message and "answer_format" in message
    assert json.loads((tmp_path / RUN_IDENTITY_FILE).read_text()) == identity  # the record is kept


def test_resume_explicit_checkpoint_must_exist(tmp_path: Path, caplog):
    import logging

    from posttrain.runtime import resume_checkpoint

    missing = str(tmp_path / "checkpoint-9")
    with pytest.raises(SystemExit, match=r"resume_from_checkpoint=.*checkpoint-9' does not exist"):
        resume_checkpoint(_resume_args(tmp_path, resume_from_checkpoint=missing), {})
    (tmp_path / "checkpoint-9").mkdir()  # cut off while saving
    with pytest.raises(SystemExit, match="has no complete trainer_state.json"):
        resume_checkpoint(_resume_args(tmp_path, resume_from_checkpoint=missing), {})
    # A run already at max_steps resumes to nothing: said plainly rather than silently.
    done = _checkpoint(tmp_path / "done", 4)
    with caplog.at_level(logging.WARNING, logger="posttrain"):
        assert resume_checkpoint(_resume_args(tmp_path / "done"), {}) == str(done)
    assert "nothing is left to train" in caplog.text


def test_truncated_trainer_state_is_not_resumed(tmp_path: Path):
    from posttrain.runtime import last_checkpoint

    _checkpoint(tmp_path, 2)
    (_checkpoint(tmp_path, 4) / "trainer_state.json").write_text(
        '{"global_step": 4, "log_hi'
    )  # kill mid-write
    assert last_checkpoint(_resume_args(tmp_path)) == str(tmp_path / "checkpoint-2")


def test_benchmark_bf16_follows_the_recipes():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import rl_step_time
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from posttrain.runtime import bf16_default

    assert rl_step_time.resolve_bf16("auto") is bf16_default()
    assert rl_step_time.resolve_bf16("true") is True and rl_step_time.resolve_bf16("false") is False
    assert rl_step_time.precision_label("auto", True) == "bf16 autocast (auto)"
    assert rl_step_time.precision_label("false", False) == "float32 (forced)"


# Two DeepSpeed processes start, each loads the model (~50-80 s on 2 cores): `make test-slow`. The fast suite keeps
# ZeRO-2 across two processes through test_sft_recipe's SFT launch, which takes a third of the time.
@pytest.mark.slow
def test_grpo_under_deepspeed_zero2_two_cpu_processes(tiny_model_dir: Path, tmp_path: Path):
    pytest.importorskip("deepspeed")
    out = tmp_path / "zero2"
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [
        str(accelerate),
        "launch",
        "--config_file",
        "accelerate_configs/zero2_cpu.yaml",
        str(GRPO),
        # 2 completions per process x 2 processes = 4 = 2 prompts x 2 completions per step
        *rl_args(
            tiny_model_dir, out, "recipes/grpo/countdown.yaml", per_device_train_batch_size=2, max_steps=1
        ),
    ]
    run(cmd, timeout=600)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["num_processes"] == 2 and "DEEPSPEED" in summary["distributed_type"]
    assert summary["generation_batch_size"] == 4
    assert (out / "model.safetensors").exists() and (out / "reward_curve.jsonl").exists()
