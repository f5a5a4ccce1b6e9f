"""The leaderboard's admin CLI: teams, tokens, limits, closing the board, hidden sets. Every action is logged.

    python -m leaderboard.admin team-add "Team A" --daily_limit 5     # prints the token once
    python -m leaderboard.admin token-issue "Team A" | token-revoke "Team A" [--token_id ID]
    python -m leaderboard.admin set-limit "Team A" 10 | close | open | teams | log | rescore 12
    python -m leaderboard.admin build-sets --out runs/leaderboard/sets

The database is ``--database_url`` (default: $LEADERBOARD_DATABASE_URL, else sqlite:///runs/leaderboard/board.db),
the one the server uses. Tokens are stored hashed; the log names tokens by their public id only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import datetime, timezone

from sqlalchemy import func, select

from leaderboard import db
from leaderboard.app import default_database_url, open_database

MAX_NAME_CHARS = 64


def check_team_name(name: str) -> str:
    """A display name: 1-64 printable characters (it is HTML-escaped wherever it is shown)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise ValueError(f"a team name must be 1-{MAX_NAME_CHARS} printable characters, got {name[:80]!r}")
    return name


def _team(session, name: str) -> db.Team:
    team = db.team_by_name(session, name)
    if team is None:
        raise ValueError(f"no team named {name!r}; `teams` lists them")
    return team


def _limit(value: int) -> int:
    if value < 0:
        raise ValueError(f"--daily_limit must be >= 0, got {value}")
    return value


def team_add(make_session, name: str, daily_limit: int = 5) -> str:
    name = check_team_name(name)
    with make_session() as session, session.begin():
        if db.team_by_name(session, name) is not None:
            raise ValueError(f"a team named {name!r} exists; issue it another token with token-issue")
        team = db.Team(name=name, daily_limit=_limit(daily_limit), created_at=db.now())
        session.add(team)
        session.flush()
        token = db.new_token(session, team)
        db.log_action(
            session,
            "team-add",
            f"team {name!r} (id {team.id}), limit {daily_limit}, token {token.split('_')[1]}",
        )
    return token


def token_issue(make_session, name: str) -> str:
    with make_session() as session, session.begin():
        team = _team(session, name)
        token = db.new_token(session, team)
        db.log_action(session, "token-issue", f"team {team.name!r}: token {token.split('_')[1]}")
    return token


def token_revoke(make_session, name: str, token_id: str | None = None) -> int:
    with make_session() as session, session.begin():
        team = _team(session, name)
        query = select(db.Token).where(db.Token.team_id == team.id, db.Token.revoked_at.is_(None))
        if token_id:
            query = query.where(db.Token.id == token_id)
        rows = list(session.scalars(query))
        if token_id and not rows:
            raise ValueError(f"team {team.name!r} has no active token {token_id!r}")
        for row in rows:
            row.revoked_at = db.now()
        db.log_action(session, "token-revoke", f"team {team.name!r}: {[r.id for r in rows]}")
    return len(rows)


def set_limit(make_session, name: str, daily_limit: int) -> None:
    with make_session() as session, session.begin():
        team = _team(session, name)
        team.daily_limit = _limit(daily_limit)
        db.log_action(session, "set-limit", f"team {team.name!r}: {daily_limit} per 24 hours")


def set_closed(make_session, closed: bool) -> None:
    with make_session() as session, session.begin():
        db.set_closed(session, closed)
        db.log_action(session, "close" if closed else "open", "board closed" if closed else "board opened")


def rescore(make_session, submission_id: int) -> None:
    with make_session() as session, session.begin():
        row = session.get(db.Submission, submission_id)
        if row is None:
            raise ValueError(f"no submission {submission_id}")
        row.status, row.attempts, row.not_before, row.claimed_until = db.QUEUED, 0, 0.0, None
        db.log_action(session, "rescore", f"submission {submission_id}")


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m leaderboard.admin", description=__doc__.split("\n\n")[0])
    p.add_argument("--database_url", default=None)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create the database (the server does it too)")
    add = sub.add_parser("team-add", help="create a team and print its first token")
    add.add_argument("name")
    add.add_argument("--daily_limit", type=int, default=5, help="submissions per 24 hours")
    sub.add_parser("token-issue", help="print a new token for a team").add_argument("name")
    revoke = sub.add_parser("token-revoke", help="revoke a team's tokens (all, or --token_id)")
    revoke.add_argument("name")
    revoke.add_argument("--token_id", default=None)
    limit = sub.add_parser("set-limit", help="a team's submissions per 24 hours")
    limit.add_argument("name")
    limit.add_argument("daily_limit", type=int)
    sub.add_parser("close", help="close the board: no more submissions, private scores shown")
    sub.add_parser("open", help="open the board again")
    sub.add_parser("teams", help="list the teams")
    sub.add_parser("log", help="the admin log")
    sub.add_parser("rescore", help="queue a submission for scoring again").add_argument("id", type=int)
    build = sub.add_parser(
        "build-sets", help="write hidden sets (held-out Countdown, UltraFeedback + references)"
    )
    build.add_argument("--out", default="runs/leaderboard/sets")
    build.add_argument("--countdown_n", type=int, default=200)
    build.add_argument("--ultrafeedback_n", type=int, default=64)
    build.add_argument("--ultrafeedback_prompts", default="fixture")
    build.add_argument("--reference", default="Qwen/Qwen2.5-0.5B-Instruct")
    build.add_argument("--max_new_tokens", type=int, default=256)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "build-sets":
            from leaderboard.sets import build_sets

            manifest = build_sets(
                args.out,
                countdown_n=args.countdown_n,
                ultrafeedback_n=args.ultrafeedback_n,
                ultrafeedback_prompts=args.ultrafeedback_prompts,
                reference=args.reference,
                max_new_tokens=args.max_new_tokens,
            )
            print(
                f"hidden sets in {args.out}: {manifest['countdown']['n']} countdown tasks, "
                f"{manifest['ultrafeedback']['n']} ultrafeedback prompts (reference "
                f"{manifest['ultrafeedback']['reference']})"
            )
            return 0
        make_session = open_database(args.database_url or default_database_url())
        if args.command == "init":
            print("database ready")
        elif args.command == "team-add":
            token = team_add(make_session, args.name, args.daily_limit)
            print(f"team {args.name.strip()!r} created. Its token (shown once; keep it secret):\n{token}")
        elif args.command == "token-issue":
            print(f"new token for {args.name!r} (shown once):\n{token_issue(make_session, args.name)}")
        elif args.command == "token-revoke":
            print(f"revoked {token_revoke(make_session, args.name, args.token_id)} token(s) of {args.name!r}")
        elif args.command == "set-limit":
            set_limit(make_session, args.name, args.daily_limit)
            print(f"{args.name!r}: {args.daily_limit} submissions per 24 hours")
        elif args.command in ("close", "open"):
            set_closed(make_session, args.command == "close")
            print(f"board {'closed' if args.command == 'close' else 'open'}")
        elif args.command == "rescore":
            rescore(make_session, args.id)
            print(f"submission {args.id} queued for scoring")
        elif args.command == "teams":
            with make_session() as session:
                for team in session.scalars(select(db.Team).order_by(db.Team.id)):
                    active = session.scalar(
                        select(func.count())
                        .select_from(db.Token)
                        .where(db.Token.team_id == team.id, db.Token.revoked_at.is_(None))
                    )
                    subs = session.scalar(
                        select(func.count())
                        .select_from(db.Submission)
                        .where(db.Submission.team_id == team.id)
                    )
                    print(
                        f"{team.id:>4}  {team.name!r:<40} limit {team.daily_limit}/24h  tokens {active}  "
                        f"submissions {subs}"
                    )
        elif args.command == "log":
            with make_session() as session:
                for row in session.scalars(select(db.AdminLog).order_by(db.AdminLog.id)):
                    print(f"{_time(row.at)}  {row.action:<13} {row.detail}")
    except (ValueError, db.SchemaMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
