"""Re:Fine end to end on a tiny model: generated prompts -> replies before -> GRPO with the judge and the task's
rules -> replies after -> the judged comparison, against one real HTTP server on 127.0.0.1 that plays both
the prompt generator and the judge (scores favour longer replies, so the numbers are checkable)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fake_openai import chat_completion, send_json

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
BLOCK_RE = re.compile(r'<response id="([^"]+)">\n(.*?)\n</response>', re.DOTALL)
BATCH_RE = re.compile(r"Batch (\d+)\.")
TOPICS = "harbour budget violin glacier recipe tram orchard ledger comet saddle lantern pepper".split()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        blocks = BLOCK_RE.findall(user)
        self.server.kinds.append("judge" if blocks else "generator")
        if blocks:  # the judge: longer replies score higher (capped), so the verdicts are predictable
            scores = [
                {"id": key, "explanation": "len", "score": min(1.0, len(text.split()) / 20)}
                for key, text in blocks
            ]
            content = json.dumps({"scores": scores})
        else:
            batch = int(BATCH_RE.search(user).group(1))
            words = TOPICS[batch % len(TOPICS) :] + TOPICS[: batch % len(TOPICS)]
            content = json.dumps(
                {
                    "inputs": [
                        f"Note {batch}.{j}: the {words[j]} and the {words[j + 1]} meet at {j} pm. (Style: formal)"
                        for j in range(4)
                    ]
                }
            )
        send_json(self, 200, chat_completion(body["model"], content))

    def do_GET(self) -> None:  # noqa: N802 - the judge pre-check lists models
        send_json(self, 200, {"object": "list", "data": [{"id": "judge", "object": "model"}]})


@pytest.fixture
def api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.kinds = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def run(cmd: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.mark.timeout(600)
def test_refine_end_to_end(api, tiny_model_dir: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{api.server_port}/v1"
    task = "recipes/refine/tasks/style_transfer.md"
    prompts, config = tmp_path / "prompts", tmp_path / "grpo.yaml"
    py = sys.executable
    run([py, "-m", "posttrain.synthetic", "--task", task, "--n", "20", "--output_dir", str(prompts),
         "--base_url", url, "--model", "gen", "--quiet"])  # fmt: skip
    run([py, "-m", "posttrain.refine_tasks", "grpo-config", "--task", task, "--output", str(config)])
    sample = [
        py,
        "-m",
        "eval.refine",
        "sample",
        "--prompts",
        str(prompts),
        "--n",
        "4",
        "--max_new_tokens",
        "8",
    ]
    run([*sample, "--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "before")])
    model_dir = tmp_path / "model"
    run(
        [
            py, str(REPO / "recipes/grpo/run.py"), "--config", str(config), "--model_name_or_path", str(tiny_model_dir),
            "--dataset_name", str(prompts), "--judge_base_url", url, "--judge_model", "judge",
            "--output_dir", str(model_dir), "--max_steps", "2", "--per_device_train_batch_size", "4",
            "--num_generations", "2", "--max_completion_length", "8", "--save_steps", "1", "--report_to", "none",
            "--disable_tqdm", "true",
        ]
    )  # fmt: skip
    summary = json.loads((model_dir / "run_summary.json").read_text())
    assert summary["task"] == "refine" and summary["refine_task"] == "style_transfer"
    assert summary["reward_funcs"] == ["llm_judge", "length_window", "patterns"]
    assert summary["reward_weights"] == [1.0, 0.3, 0.3]
    assert summary["length_collapse_guard"]["ratio"] == 0.35
    curve = [json.loads(line) for line in (model_dir / "reward_curve.jsonl").read_text().splitlines()]
    assert [row["step"] for row in curve] == [1, 2]
    assert all(
        0.0 <= row["llm_judge_reward"] <= 1.0 and 0.0 <= row["length_window_reward"] <= 1.0 for row in curve
    )
    assert "judge" in api.kinds  # the rewards came from the server

    run([*sample, "--model", str(model_dir), "--output_dir", str(tmp_path / "after")])
    out = tmp_path / "compare"
    proc = run(
        [py, "-m", "eval.refine", "compare", str(tmp_path / "before"), str(tmp_path / "after"), "--task", task,
         "--judge_base_url", url, "--judge_model", "judge", "--reward_curve", str(model_dir / "reward_curve.png"),
         "--output_dir", str(out)]
    )  # fmt: skip
    result = json.loads((out / "summary.json").read_text())
    assert result["n"] == result["judged"] == 4 and result["judge_failed"] == 0
    assert result["wins"] + result["ties"] + result["losses"] == 4
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    for pair in pairs:  # the server's rule: longer wins, both orders agree
        longer = (pair["after_words"] > pair["before_words"]) - (pair["after_words"] < pair["before_words"])
        capped = min(pair["after_words"], 20) != min(pair["before_words"], 20)
        assert pair["verdict"] == ({1: "win", -1: "loss", 0: "tie"}[longer] if capped else "tie")
    expected = (result["wins"] + 0.5 * result["ties"]) / 4
    assert result["win_rate"] == pytest.approx(expected)
    low, high = result["win_rate_ci95"]
    assert low <= expected <= high
    assert set(result["lengths"]["before"]) >= {"mean", "median", "p10", "p90", "below_window"}
    for name in ("results.md", "results.html", "lengths.png", "reward_curve.png"):
        assert (out / name).is_file(), name
    assert "win rate of after over before" in proc.stdout


def test_html_escapes_model_output(tmp_path: Path) -> None:
    from eval.refine import html, markdown

    row = {"source": "<b>in</b>", "before": "<script>alert(1)</script>", "after": "a | b", "failed": False,
           "verdict": "win", "before_score": 0.1, "after_score": 0.9}  # fmt: skip
    stats = {"n": 1, "mean": 1.0, "median": 1.0, "p10": 1.0, "p90": 1.0, "min": 1, "max": 1, "empty": 0}
    summary = {"task": "t", "judge": {"model": "<m>"}, "wins": 1, "ties": 0, "losses": 0, "judged": 1, "judge_failed": 0,
               "win_rate": 1.0, "win_rate_ci95": [1.0, 1.0], "lengths": {"before": stats, "after": stats}}  # fmt: skip
    page = html(summary, [row], 5, has_curve=False)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;m&gt;" in page
    table = markdown(summary, [row], 5)
    assert "<script>" not in table and "a \\| b" in table


def test_compare_refuses_mismatched_runs(tmp_path: Path) -> None:
    from eval.refine import main

    for name, ids in (("a", ["x", "y"]), ("b", ["x", "z"])):
        (tmp_path / name).mkdir()
        rows = [{"id": i, "output": "o", "source": "s", "prompt": "p"} for i in ids]
        (tmp_path / name / "outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match="answer different inputs"):
        main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--task", "recipes/refine/tasks/eli5.md",
              "--judge_base_url", "http://127.0.0.1:9/v1", "--judge_model", "m", "--output_dir", str(tmp_path / "c")])  # fmt: skip
    (tmp_path / "b" / "outputs.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(SystemExit, match="string `id` and `output`"):
        main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--task", "recipes/refine/tasks/eli5.md",
              "--judge_base_url", "http://127.0.0.1:9/v1", "--judge_model", "m", "--output_dir", str(tmp_path / "c")])  # fmt: skip
