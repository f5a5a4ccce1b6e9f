"""The leaderboard's database: tables, a versioned schema, and engines that serialise writers.

SQLite by default (one file; WAL, and every transaction starts ``BEGIN IMMEDIATE`` so a check-then-insert such as
the daily limit cannot interleave, across threads and processes alike); any SQLAlchemy URL, e.g. PostgreSQL for a
shared deployment, where the team row is locked with ``SELECT ... FOR UPDATE`` instead. Times are UTC epoch
seconds. Tokens are stored as sha256 hashes only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

SCHEMA_VERSION = 1
TOKEN_PREFIX = "lb"

QUEUED, SCORING, SCORED, FAILED = "queued", "scoring", "scored", "failed"


class SchemaMismatch(RuntimeError):
    """The database was made by another version of this code."""


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    daily_limit: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the token's public part
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("team_id", "idempotency_key", name="uq_team_idempotency"),
        Index("ix_submissions_status", "status"),
        Index("ix_submissions_team_time", "team_id", "created_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    body_sha256: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # read by the scorer only, not the pages
    method: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    not_before: Mapped[float] = mapped_column(Float, default=0.0)  # retry backoff
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    scored_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    public_countdown: Mapped[float | None] = mapped_column(Float, nullable=True)
    private_countdown: Mapped[float | None] = mapped_column(Float, nullable=True)
    public_winrate: Mapped[float | None] = mapped_column(Float, nullable=True)
    private_winrate: Mapped[float | None] = mapped_column(Float, nullable=True)
    scores: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: per task and split


class AdminLog(Base):
    __tablename__ = "admin_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)


def _sqlite_serialised(engine: Engine) -> None:
    """pysqlite's own transaction handling off, ``BEGIN IMMEDIATE`` on: writers queue instead of racing."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged submission survives a power cut
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # Readers (the pages) take no write lock: under WAL they read a snapshot beside the writers.
        read_only = connection.get_execution_options().get("read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///path.db`` or any SQLAlchemy URL); SQLite gets serialised writers."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})
        _sqlite_serialised(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def init_db(engine: Engine) -> None:
    """Create the tables of a new database, or check that an existing one has this code's schema version."""
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        row = session.get(Meta, "schema_version")
        if row is None:
            session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
            session.add(Meta(key="closed", value="0"))
        elif row.value != str(SCHEMA_VERSION):
            raise SchemaMismatch(
                f"the database has schema version {row.value}, this code needs {SCHEMA_VERSION}: use the code "
                f"that made it, or start a new database (--database_url)"
            )


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def read_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reading only (pages, status): on SQLite they take no write lock."""
    return sessionmaker(engine.execution_options(read_only=True), expire_on_commit=False)


def now() -> float:
    return time.time()


# ----------------------------------------------------------------------------------------------------------
# Tokens: ``lb_<id>_<secret>``; the id finds the row, the secret's hash is compared in constant time.
# ----------------------------------------------------------------------------------------------------------


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_token(session: Session, team: Team) -> str:
    """A new token for ``team``; the only time its secret exists outside the caller is this return value."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    session.add(Token(id=token_id, team_id=team.id, secret_sha256=_hash(secret), created_at=now()))
    return f"{TOKEN_PREFIX}_{token_id}_{secret}"


def team_for_token(session: Session, presented: str) -> Team | None:
    """The team of a valid, unrevoked token, else None (unknown, malformed and revoked look the same)."""
    prefix, _, rest = presented.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not token_id or not secret or len(presented) > 200:
        return None
    row = session.get(Token, token_id)
    expected = row.secret_sha256 if row is not None else _hash(secrets.token_urlsafe(32))
    matches = hmac.compare_digest(_hash(secret), expected)
    if row is None or not matches or row.revoked_at is not None:
        return None
    return session.get(Team, row.team_id)


# ----------------------------------------------------------------------------------------------------------
# Board state
# ----------------------------------------------------------------------------------------------------------


def is_closed(session: Session) -> bool:
    row = session.get(Meta, "closed")
    return row is not None and row.value == "1"


def set_closed(session: Session, closed: bool) -> None:
    row = session.get(Meta, "closed")
    if row is None:
        session.add(Meta(key="closed", value="1" if closed else "0"))
    else:
        row.value = "1" if closed else "0"


def record_sets(session: Session, fingerprint: str) -> str | None:
    """Remember the hidden sets' fingerprint; returns the previous one when it differs (scores in this database
    were computed on other sets)."""
    row = session.get(Meta, "sets")
    if row is None:
        session.add(Meta(key="sets", value=fingerprint))
        return None
    previous, row.value = row.value, fingerprint
    return previous if previous != fingerprint else None


def log_action(session: Session, action: str, detail: str) -> None:
    """An admin action for the audit log; callers pass no secrets (tokens appear by their public id only)."""
    session.add(AdminLog(at=now(), action=action, detail=detail))


def team_by_name(session: Session, name: str) -> Team | None:
    return session.scalars(select(Team).where(Team.name == name)).first()
