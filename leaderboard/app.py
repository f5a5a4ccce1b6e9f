"""The leaderboard server: the upload API `eval.submit` speaks, the prompt files, and the ranked pages.

    python -m leaderboard.app --countdown_set runs/leaderboard/sets/countdown.jsonl \\
        --ultrafeedback_set runs/leaderboard/sets/ultrafeedback.jsonl --serve_judge verifiable --port 8100

Upload (``POST /`` or ``POST /api/submissions``): ``Authorization: Bearer <team token>``, an ``Idempotency-Key``
(`eval.submit` sends the body's sha256), the submission JSON. Answers: 202 stored and queued (the row is
committed before the answer is sent); 200 a replay of a submission already stored (counted once); 401 unknown or
revoked token; 403 board closed; 409 the key was used with another body; 413 body over the limit; 422 schema or
board mismatch, every problem with its field path; 429 the team's limit per 24 hours, with ``Retry-After``.
``GET /api/submissions/<id>`` (the team's own token): status, scores, error. ``GET /prompts/<task>.jsonl``: the
prompts, no answers. ``GET /``: the ranked table; ``/teams/<id>``: a team's history; ``/plot.png``: the best score
over time. While the board is open everyone sees public-split scores; once closed, each team's best public
submission is ranked by its private-split score.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from eval.serving import BoundServer
from eval.submit import SubmissionError, parse_submission
from leaderboard import db
from leaderboard.scoring import Judge, ScoringWorker, check_against_sets
from leaderboard.sets import PRIVATE, PUBLIC, HiddenSets, load_sets

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
BODY_TIMEOUT_S = 60.0
WINDOW_S = 24 * 3600  # the daily limit counts submissions in the last 24 hours
RANK_BY = ("countdown", "ultrafeedback")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers or {}, extra


@dataclass
class Board:
    """What the app serves: the database, the hidden sets, the scoring worker and the display settings."""

    make_session: sessionmaker[Session]
    sets: HiddenSets
    worker: ScoringWorker | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    rank_by: str = "countdown"
    title: str = "Post-training leaderboard"

    def __post_init__(self) -> None:
        self.read_session = db.read_sessions(self.make_session.kw["bind"])
        self.plot_cache: tuple[int, bytes] | None = None


def _iso(epoch: float | None) -> str:
    return (
        "" if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    )


# ----------------------------------------------------------------------------------------------------------
# Accepting a submission
# ----------------------------------------------------------------------------------------------------------


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def token_team(session: Session, token: str) -> db.Team:
    """The team of a valid bearer token, else 401."""
    team = db.team_for_token(session, token) if token else None
    if team is None:
        raise ApiError(401, "unknown or revoked token: send Authorization: Bearer <your team's token>")
    return team


def authenticate(board: Board, token: str) -> tuple[int, str]:
    """(team id, team name) for a valid token, else 401; 403 when the board is closed."""
    with board.read_session() as session:
        team = token_team(session, token)
        if db.is_closed(session):
            raise ApiError(403, "the board is closed: submissions are no longer accepted")
        return team.id, team.name


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"the submission is {length} bytes, over this board's limit of {limit} bytes")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the submission is over this board's limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), BODY_TIMEOUT_S)
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected before sending the whole body") from None
    except asyncio.TimeoutError:
        raise ApiError(408, f"the body did not arrive within {BODY_TIMEOUT_S:g} s") from None


def validate_for_board(board: Board, body: bytes) -> dict[str, Any]:
    try:
        data = parse_submission(body)
    except SubmissionError as exc:
        raise ApiError(422, str(exc).split("\n")[0], problems=exc.problems[:100]) from None
    problems = check_against_sets(data, board.sets)
    if problems:
        raise ApiError(
            422, f"the submission does not fit this board ({len(problems)} problem(s))", problems=problems
        )
    return data


def store_submission(
    board: Board, team_id: int, key: str, body: bytes, data: dict[str, Any]
) -> tuple[int, dict]:
    """Commit the submission (or find the one it replays) and return (HTTP status, answer)."""
    digest = hashlib.sha256(body).hexdigest()
    moment = db.now()
    with board.make_session() as session, session.begin():
        team = session.scalars(select(db.Team).where(db.Team.id == team_id).with_for_update()).one()
        same_key = session.scalars(
            select(db.Submission).where(
                db.Submission.team_id == team_id, db.Submission.idempotency_key == key
            )
        ).first()
        if same_key is not None and same_key.body_sha256 != digest:
            raise ApiError(409, "this Idempotency-Key was already used for a different submission")
        previous = (
            same_key
            or session.scalars(
                select(db.Submission).where(
                    db.Submission.team_id == team_id, db.Submission.body_sha256 == digest
                )
            ).first()
        )
        if previous is not None:
            return 200, {"id": previous.id, "status": previous.status, "replay": True}
        window = select(func.count(), func.min(db.Submission.created_at)).where(
            db.Submission.team_id == team_id, db.Submission.created_at > moment - WINDOW_S
        )
        count, oldest = session.execute(window).one()
        if count >= team.daily_limit:
            wait = max(1, int((oldest or moment) + WINDOW_S - moment) + 1)
            raise ApiError(
                429,
                f"team {team.name!r} has used its {team.daily_limit} submissions of the last 24 hours",
                headers={"Retry-After": str(wait)},
            )
        meta = data["metadata"]
        row = db.Submission(
            team_id=team_id,
            idempotency_key=key,
            body_sha256=digest,
            body=body,
            method=str(meta["method"])[:200],
            model=str(meta["model"])[:500],
            created_at=moment,
            status=db.QUEUED,
            attempts=0,
            not_before=0.0,
        )
        session.add(row)
        session.flush()
        return 202, {"id": row.id, "status": db.QUEUED, "status_url": f"/api/submissions/{row.id}"}


# ----------------------------------------------------------------------------------------------------------
# Reading the board
# ----------------------------------------------------------------------------------------------------------


def _scores_view(row: db.Submission, closed: bool) -> dict[str, Any]:
    """The scores a participant may see: public while open, both once closed."""
    scores = json.loads(row.scores) if row.scores else {}
    shown = {}
    for task, by_split in scores.items():
        keep = (PUBLIC, PRIVATE) if closed else (PUBLIC,)
        shown[task] = {k: v for k, v in by_split.items() if k in keep or k == "judge"}
    return shown


def _metric(row: db.Submission, task: str, split: str) -> float | None:
    return getattr(row, f"{split}_{'countdown' if task == 'countdown' else 'winrate'}")


def ranking(board: Board) -> tuple[list[dict[str, Any]], bool]:
    """Rows of the ranked table and whether the board is closed.

    Each team is represented by its best scored submission on the public split (``rank_by`` first, the other task
    breaking ties); its shown scores are public while the board is open, private once it is closed."""
    other = "ultrafeedback" if board.rank_by == "countdown" else "countdown"
    with board.read_session() as session:
        closed = db.is_closed(session)
        teams = {t.id: t for t in session.scalars(select(db.Team))}
        rows = list(session.scalars(select(db.Submission).order_by(db.Submission.id)))
    by_team: dict[int, list[db.Submission]] = {}
    for row in rows:
        by_team.setdefault(row.team_id, []).append(row)
    table = []
    shown_split = PRIVATE if closed else PUBLIC
    for team_id, subs in by_team.items():
        scored = [s for s in subs if s.status == db.SCORED]
        if not scored:
            continue

        def key(s: db.Submission) -> tuple[float, float, float]:
            first, second = _metric(s, board.rank_by, PUBLIC), _metric(s, other, PUBLIC)
            return (-1 if first is None else first, -1 if second is None else second, -s.id)

        best = max(scored, key=key)
        scores = json.loads(best.scores or "{}")
        uf = scores.get("ultrafeedback", {}).get(shown_split, {})
        table.append(
            {
                "team_id": team_id,
                "team": teams[team_id].name,
                "method": best.method,
                "submission_id": best.id,
                "countdown": _metric(best, "countdown", shown_split),
                "countdown_format": scores.get("countdown", {}).get(shown_split, {}).get("format_rate"),
                "win_rate": _metric(best, "ultrafeedback", shown_split),
                "win_rate_ci95": uf.get("win_rate_ci95"),
                "submissions": len(subs),
                "last": _iso(max(s.created_at for s in subs)),
                "last_epoch": max(s.created_at for s in subs),
            }
        )
    rank_key = "countdown" if board.rank_by == "countdown" else "win_rate"
    second_key = "win_rate" if rank_key == "countdown" else "countdown"
    table.sort(
        key=lambda r: (
            -(r[rank_key] if r[rank_key] is not None else -1),
            -(r[second_key] if r[second_key] is not None else -1),
            r["team"],
        )
    )
    for i, row in enumerate(table, start=1):
        row["rank"] = i
    return table, closed


def team_history(board: Board, team_id: int) -> tuple[str, list[dict[str, Any]], bool]:
    with board.read_session() as session:
        team = session.get(db.Team, team_id)
        if team is None:
            raise ApiError(404, f"no team with id {team_id}")
        closed = db.is_closed(session)
        rows = list(
            session.scalars(
                select(db.Submission)
                .where(db.Submission.team_id == team_id)
                .order_by(db.Submission.id.desc())
            )
        )
    split = PRIVATE if closed else PUBLIC
    history = [
        {
            "id": r.id,
            "created": _iso(r.created_at),
            "method": r.method,
            "model": r.model,
            "status": r.status,
            "countdown": _metric(r, "countdown", split),
            "win_rate": _metric(r, "ultrafeedback", split),
            "error": r.error if r.status == db.FAILED else None,
        }
        for r in rows
    ]
    return team.name, history, closed


def plot_label(name: str) -> str:
    """A team name as matplotlib shows it literally: ``$`` would start mathtext (a parse error for some names) and a
    leading ``_`` hides the entry from the legend."""
    label = name[:30].replace("$", r"\$")
    return "\u200b" + label if label.startswith("_") else label


def best_over_time_png(board: Board) -> bytes:
    """Each team's best score so far against time, one panel per task (the shown split), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with board.read_session() as session:
        closed = db.is_closed(session)
        teams = {t.id: t.name for t in session.scalars(select(db.Team))}
        rows = list(
            session.scalars(
                select(db.Submission)
                .where(db.Submission.status == db.SCORED)
                .order_by(db.Submission.created_at)
            )
        )
    key = hash((closed, tuple((r.id, r.scored_at) for r in rows), tuple(sorted(teams.items()))))
    cached = board.plot_cache
    if cached is not None and cached[0] == key:  # drawing costs ~0.2 s of CPU: once per change of the board
        return cached[1]
    split = PRIVATE if closed else PUBLIC
    tasks = board.sets.tasks()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), dpi=100, squeeze=False)
    labels = {"countdown": "Countdown accuracy", "ultrafeedback": "UltraFeedback win rate"}
    for ax, task in zip(axes[0], tasks, strict=True):
        series: dict[int, tuple[list[datetime], list[float]]] = {}
        for row in rows:
            value = _metric(row, task, split)
            if value is None:
                continue
            xs, ys = series.setdefault(row.team_id, ([], []))
            xs.append(datetime.fromtimestamp(row.created_at, timezone.utc))
            ys.append(max(value, ys[-1]) if ys else value)
        for team_id, (xs, ys) in sorted(series.items()):
            ax.step(xs, ys, where="post", marker="o", label=plot_label(teams.get(team_id, "?")))
        ax.set_title(f"best {labels[task]} ({split} split)", fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        if series:
            ax.legend(loc="upper left", fontsize=7)
        else:
            ax.text(0.5, 0.5, "no scored submissions yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    board.plot_cache = (key, buffer.getvalue())
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------------
# The app
# ----------------------------------------------------------------------------------------------------------

_templates = Environment(
    loader=PackageLoader("leaderboard", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


_templates.filters["fmt"] = _fmt


def create_app(board: Board) -> FastAPI:
    app = FastAPI(title=board.title, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        body = {"error": err.message, **err.extra}
        headers = dict(err.headers)
        if err.status in (401, 403, 408, 413):  # the body may be unread: don't parse it as the next request
            headers["Connection"] = "close"
        return JSONResponse(body, status_code=err.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": f"{exc.detail}: {request.method} {request.url.path}"}, status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("request failed")
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); retry later"}, status_code=500)

    async def submit(request: Request) -> JSONResponse:
        team_id, team_name = await run_in_threadpool(authenticate, board, _bearer(request))
        body = await read_body(request, board.max_body_bytes)
        key = request.headers.get("idempotency-key") or hashlib.sha256(body).hexdigest()
        if len(key) > 128 or not key.isprintable():
            raise ApiError(400, "Idempotency-Key must be at most 128 printable characters")
        data = await run_in_threadpool(validate_for_board, board, body)
        status, answer = await run_in_threadpool(store_submission, board, team_id, key, body, data)
        if status == 202:
            logger.info("team %s: submission %d queued", team_name, answer["id"])
            if board.worker is not None:
                board.worker.wake.set()
        return JSONResponse(answer, status_code=status)

    app.post("/")(submit)
    app.post("/api/submissions")(submit)

    @app.get("/api/submissions/{submission_id}")
    async def submission_status(submission_id: int, request: Request) -> JSONResponse:
        token = _bearer(request)

        def read() -> dict[str, Any]:
            with board.read_session() as session:
                team = token_team(session, token)
                row = session.get(db.Submission, submission_id)
                if row is None or row.team_id != team.id:
                    raise ApiError(404, f"your team has no submission {submission_id}")
                return {
                    "id": row.id,
                    "status": row.status,
                    "created": _iso(row.created_at),
                    "scored": _iso(row.scored_at),
                    "method": row.method,
                    "attempts": row.attempts,
                    "error": row.error,
                    "scores": _scores_view(row, db.is_closed(session)),
                }

        return JSONResponse(await run_in_threadpool(read))

    @app.get("/api/leaderboard")
    async def leaderboard_json() -> JSONResponse:
        table, closed = await run_in_threadpool(ranking, board)
        return JSONResponse(
            {
                "closed": closed,
                "split": PRIVATE if closed else PUBLIC,
                "rank_by": board.rank_by,
                "rows": table,
            }
        )

    @app.get("/prompts/{name}")
    async def prompts(name: str) -> Response:
        task = name.removesuffix(".jsonl")
        if task not in board.sets.tasks():
            raise ApiError(
                404, f"no prompt set {name!r}; this board has {[t + '.jsonl' for t in board.sets.tasks()]}"
            )
        return Response(board.sets.public_prompts(task), media_type="application/jsonl")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "tasks": board.sets.tasks()}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        table, closed = await run_in_threadpool(ranking, board)
        html = _templates.get_template("board.html").render(
            title=board.title,
            rows=table,
            closed=closed,
            rank_by=board.rank_by,
            tasks=board.sets.tasks(),
            sizes={t: len(getattr(board.sets, t)) for t in board.sets.tasks()},
            now=_iso(time.time()),
        )
        return HTMLResponse(html)

    @app.get("/teams/{team_id}", response_class=HTMLResponse)
    async def team_page(team_id: int) -> HTMLResponse:
        name, history, closed = await run_in_threadpool(team_history, board, team_id)
        html = _templates.get_template("team.html").render(
            title=board.title, team=name, history=history, closed=closed
        )
        return HTMLResponse(html)

    @app.get("/plot.png")
    async def plot() -> Response:
        return Response(
            await run_in_threadpool(best_over_time_png, board),
            media_type="image/png",
            headers={"Cache-Control": "no-store"},
        )

    return app


# ----------------------------------------------------------------------------------------------------------
# Serving
# ----------------------------------------------------------------------------------------------------------


class LeaderboardServer(BoundServer):
    """uvicorn serving `create_app(board)` and the scoring worker; `start()` serves in a background thread."""

    def __init__(self, board: Board, *, host: str = "127.0.0.1", port: int = 8100):
        super().__init__(
            host=host,
            port=port,
            name="leaderboard",
            in_use_hint="pass another (make serve-leaderboard LEADERBOARD_PORT=8101)",
        )
        self.board = board
        self.serve(create_app(board))

    def serve_forever(self) -> None:
        """Score in the background while serving (in this thread, or in `start()`'s)."""
        if self.board.worker is not None:
            self.board.worker.start()
        super().serve_forever()

    def close(self) -> None:
        super().close()
        if self.board.worker is not None:
            self.board.worker.stop()


def default_database_url(path: str = "runs/leaderboard/board.db") -> str:
    return os.environ.get("LEADERBOARD_DATABASE_URL") or f"sqlite:///{path}"


def open_database(url: str) -> sessionmaker[Session]:
    """Sessions on the database at ``url`` (created or schema-checked); a bad URL, a missing driver or an
    unreachable server is a `ValueError` naming the URL without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        raise ValueError(
            f"--database_url {url[:80]!r} is not a database URL (e.g. sqlite:///runs/leaderboard/board.db or "
            f"postgresql+psycopg://user:password@host/db)"
        ) from None
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = db.make_engine(url)
        db.init_db(engine)
    except ImportError as exc:
        raise ValueError(
            f"the database {shown} needs a driver that is not installed ({exc}); pip install it"
        ) from None
    except SQLAlchemyError as exc:
        reason = str(exc).split("\n")[0][:300].replace(url, shown)
        raise ValueError(f"cannot open the database {shown}: {reason}") from None
    return db.sessions(engine)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m leaderboard.app", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--database_url",
        default=None,
        help="SQLAlchemy URL (default: $LEADERBOARD_DATABASE_URL, else sqlite:///runs/leaderboard/board.db)",
    )
    p.add_argument("--countdown_set", default=None, help="hidden Countdown set (JSONL id/target/nums/split)")
    p.add_argument(
        "--ultrafeedback_set", default=None, help="hidden UltraFeedback set (JSONL prompt/reference/split)"
    )
    p.add_argument("--public_fraction", type=float, default=0.5, help="public share of rows without a split")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--max_body_mb", type=float, default=DEFAULT_MAX_BODY_BYTES / 2**20)
    p.add_argument(
        "--rank_by", choices=RANK_BY, default=None, help="default: countdown when the board has it"
    )
    p.add_argument("--title", default="Post-training leaderboard")
    j = p.add_argument_group("the UltraFeedback judge (as eval.winrate)")
    j.add_argument("--reward_url", default=None)
    j.add_argument("--reward_model", default="auto")
    j.add_argument("--api_key_env", default="REWARD_API_KEY")
    serve = j.add_mutually_exclusive_group()
    serve.add_argument("--serve_rm", default=None)
    serve.add_argument("--serve_judge", default=None, choices=("verifiable",))
    j.add_argument("--reward_cache", default="runs/leaderboard/reward-cache.jsonl", help="'' disables it")
    j.add_argument("--concurrency", type=int, default=8)
    q = p.add_argument_group("the scoring queue")
    q.add_argument(
        "--lease_s", type=float, default=60.0, help="a claim not renewed for this long is taken over"
    )
    q.add_argument("--max_attempts", type=int, default=3)
    q.add_argument("--retry_backoff_s", type=float, default=10.0)
    return p


def connect(args: argparse.Namespace, sets: HiddenSets) -> tuple[Judge | None, Any]:
    """The judge (and the connection to close) when the board scores UltraFeedback."""
    if not sets.ultrafeedback:
        return None, None
    if not (args.reward_url or args.serve_rm or args.serve_judge):
        raise ValueError(
            "the board has an ultrafeedback set but no judge: pass --serve_judge verifiable (offline, the fixture's "
            "prompts), --serve_rm FOLDER, or --reward_url URL [--reward_model ID --api_key_env VAR]"
        )
    from eval.submit import judge_label
    from eval.winrate import connect_judge

    connection = connect_judge(
        reward_url=args.reward_url,
        reward_model=args.reward_model,
        api_key=os.environ.get(args.api_key_env) if args.api_key_env else None,
        serve_rm=args.serve_rm,
        serve_judge=args.serve_judge,
        reward_cache=args.reward_cache or None,
    )
    return Judge(connection.client, connection.max_reward_tokens, judge_label(connection)), connection


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpx2", "openai"):  # one INFO line per judge request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    connection = None
    try:
        sets = load_sets(args.countdown_set, args.ultrafeedback_set, args.public_fraction)
        make_session = open_database(args.database_url or default_database_url())
        with make_session() as session, session.begin():
            changed = db.record_sets(session, json.dumps(sets.fingerprint, sort_keys=True))
        if changed:
            logger.warning(
                "the hidden sets differ from those this database was scored on (%s): earlier scores stay as they "
                "were; `python -m leaderboard.admin rescore ID` scores a submission again, or start a new database",
                changed,
            )
        judge, connection = connect(args, sets)
        worker = ScoringWorker(
            make_session,
            sets,
            judge,
            lease_s=args.lease_s,
            max_attempts=args.max_attempts,
            retry_backoff_s=args.retry_backoff_s,
            concurrency=args.concurrency,
        )
        board = Board(
            make_session,
            sets,
            worker,
            int(args.max_body_mb * 2**20),
            args.rank_by or ("countdown" if sets.countdown else "ultrafeedback"),
            args.title,
        )
        server = LeaderboardServer(board, host=args.host, port=args.port)
    except (ValueError, FileNotFoundError, OSError, db.SchemaMismatch) as exc:
        if connection is not None:
            connection.close()
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"leaderboard at {server.url}  (tasks: {sets.tasks()}; Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
        if connection is not None:
            connection.close()


if __name__ == "__main__":
    main()
