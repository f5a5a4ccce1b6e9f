"""Load test of the self-hosted leaderboard on this machine: uploads accepted per second, upload latency (p50/p95),
and submissions scored per second, with the server in its own process as `make serve-leaderboard` runs it.

    .venv/bin/python benchmarks/leaderboard_load.py --teams 8 --per_team 50 --clients 32
    make bench-leaderboard

Traffic goes to 127.0.0.1 only, bounded in count (teams x per_team uploads plus one resend each) and time
(--timeout_s). Each team's daily limit is set to --limit (default: per_team - 10), so the limit is exercised too;
the run checks that exactly min(limit, per_team) rows per team were stored and every stored row got scored. The
Countdown set has --tasks held-out tasks (answers from the project's verifier: cheap); --ultrafeedback N adds N
fixture prompts judged by the verifiable judge served in the server's process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _post(url: str, body: bytes, token: str) -> tuple[int, float, dict]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": hashlib.sha256(body).hexdigest(),
        },
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
            return response.status, time.perf_counter() - start, answer
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code, time.perf_counter() - start, {}


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _submission(tasks: list[dict], uf_prompts: list[str], team: int, k: int) -> bytes:
    items = [
        {
            "id": t["id"],
            "target": t["target"],
            "nums": t["nums"],
            "prompt": "p",
            "completion": f"<answer>{'+'.join(map(str, t['nums']))}</answer> {team}-{k}",
        }
        for t in tasks
    ]
    data = {
        "schema_version": 1,
        "metadata": {
            "model": f"team{team}/model{k}",
            "model_revision": None,
            "method": "load-test",
            "git_commit": None,
            "created": "2026-11-30T00:00:00+00:00",
            "seed": 0,
            "sampling": {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "n": 1, "seed": 0,
                         "batch_size": None},
            "backend": "hf",
        },
        "countdown": {"prompt_source": {}, "template": "short", "items": items},
    }  # fmt: skip
    if uf_prompts:
        data["ultrafeedback"] = {
            "prompt_source": {},
            "items": [
                {"id": hashlib.sha256(p.encode()).hexdigest(), "prompt": p, "response": f"answer {team}-{k}"}
                for p in uf_prompts
            ],
        }
    return json.dumps(data).encode()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teams", type=int, default=8)
    p.add_argument("--per_team", type=int, default=50)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument(
        "--ultrafeedback", type=int, default=0, help="fixture prompts in the UltraFeedback set (0: none)"
    )
    p.add_argument("--timeout_s", type=float, default=600)
    p.add_argument(
        "--database_url",
        default=None,
        help="a database server to run on instead of a fresh SQLite file (its leaderboard tables are dropped first)",
    )
    args = p.parse_args(argv)
    from leaderboard import admin, db
    from leaderboard.app import open_database
    from posttrain.chat_fixture import ultrafeedback_fixture_rows
    from posttrain.data import heldout_tasks

    limit = args.limit if args.limit is not None else max(1, args.per_team - 10)
    work = Path(tempfile.mkdtemp(prefix="leaderboard-load-"))
    tasks = [
        {"id": f"t{i}", "target": t.target, "nums": list(t.nums)}
        for i, t in enumerate(heldout_tasks(args.tasks, seed=99))
    ]
    (work / "cd.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    database = args.database_url or f"sqlite:///{work / 'b.db'}"
    if args.database_url:
        db.Base.metadata.drop_all(db.make_engine(database))
    command = [sys.executable, "-m", "leaderboard.app", "--database_url", database,
               "--countdown_set", str(work / "cd.jsonl")]  # fmt: skip
    uf_prompts: list[str] = []
    if args.ultrafeedback:
        rows = ultrafeedback_fixture_rows("test_prefs")[: args.ultrafeedback]
        uf_prompts = [r["prompt"] for r in rows]
        uf = [{"prompt": r["prompt"], "reference": r["rejected"][-1]["content"]} for r in rows]
        (work / "uf.jsonl").write_text("".join(json.dumps(r) + "\n" for r in uf))
        # The reward cache on, as `make serve-leaderboard` runs: the references are scored once, not per upload.
        command += ["--ultrafeedback_set", str(work / "uf.jsonl"), "--serve_judge", "verifiable",
                    "--reward_cache", str(work / "reward-cache.jsonl")]  # fmt: skip
    make_session = open_database(database)
    tokens = [admin.team_add(make_session, f"team{i}", daily_limit=limit) for i in range(args.teams)]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (work / "server.log").open(
        "wb"
    )  # a file, not a pipe: an unread pipe would block the server's logging
    server = subprocess.Popen(command + ["--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + args.timeout_s
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    print((work / "server.log").read_text()[-2000:], file=sys.stderr)
                    return 1
                time.sleep(0.2)
        jobs = [
            (tokens[t], _submission(tasks, uf_prompts, t, k))
            for t in range(args.teams)
            for k in range(args.per_team)
        ]
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(lambda job: _post(url, job[1], job[0]), jobs))
        upload_s = time.perf_counter() - start
        with ThreadPoolExecutor(args.clients) as pool:
            resends = list(pool.map(lambda job: _post(url, job[1], job[0])[0], jobs))
        codes = [code for code, _, _ in results]
        latencies = sorted(lat for _, lat, _ in results)
        accepted = codes.count(202)

        def scored() -> int:
            with make_session() as session:
                return session.query(db.Submission).filter(db.Submission.status == db.SCORED).count()

        while scored() < accepted and time.monotonic() < deadline:
            time.sleep(0.1)
        all_scored_s = time.perf_counter() - start
        with make_session() as session:
            stored = session.query(db.Submission).count()
            first = session.query(db.Submission).order_by(db.Submission.created_at).first()
            last_scored = (
                max(r.scored_at for r in session.query(db.Submission).all() if r.scored_at) if stored else 0
            )
            score_span = (last_scored - first.created_at) if stored else 0
    finally:
        server.terminate()
        server.wait(30)
    expected = args.teams * min(limit, args.per_team)
    done = scored()
    print(f"leaderboard load test: {args.teams} teams x {args.per_team} uploads, {args.clients} client threads, "
          f"limit {limit}/team, {args.tasks} Countdown tasks" + (f", {args.ultrafeedback} UF prompts" if uf_prompts else ""))  # fmt: skip
    engine = "SQLite WAL" if database.startswith("sqlite") else database.split(":")[0]
    print(f"  machine: {os.cpu_count()} CPUs; server in its own process (uvicorn, {engine})")
    print(f"  answers: {dict(sorted({c: codes.count(c) for c in set(codes)}.items()))}; resends: "
          f"{dict(sorted({c: resends.count(c) for c in set(resends)}.items()))}")  # fmt: skip
    print(
        f"  uploads handled: {len(jobs) / upload_s:.1f}/s ({accepted / upload_s:.1f} accepted/s) over {upload_s:.2f} s"
    )
    print(f"  upload latency: p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p95 {_p95(latencies) * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")  # fmt: skip
    print(f"  scored: {done}/{accepted} stored rows; {done / score_span if score_span else 0:.1f} submissions scored/s "
          f"(first upload to last score {score_span:.2f} s; all scored {all_scored_s:.2f} s after the first upload)")  # fmt: skip
    ok = stored == expected == accepted and done == accepted and set(resends) <= {200, 429}
    print(f"  rows stored {stored} (expected {expected}): {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
