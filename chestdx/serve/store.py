"""The service's database through SQLAlchemy: studies (one job each) and API tokens.

Only portable column types (strings, text, integers, timestamps), so the same tables work on
SQLite (the default, a file under the data folder) and PostgreSQL (by URL). Tokens are never
stored in clear: a token is ``cdx_<key id>_<secret>``; the table keeps the key id, a random
salt and the PBKDF2-SHA256 hash of the whole token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timezone

from sqlalchemy import DateTime, Integer, String, Text, create_engine, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from chestdx.errors import ChestDxError

STATUSES = ("queued", "running", "done", "failed")
MAX_ATTEMPTS = 3
"""Runs of one job before it is failed: a job whose process died this often (killed, out of memory) is not retried."""
# 256-bit random secrets cannot be guessed, so the hash needs no large work factor; it keeps a
# leaked database from holding usable tokens while keeping each request's check cheap.
_PBKDF2_ITERATIONS = 20_000


def utcnow() -> datetime:
    """Returns: the current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the service's tables."""


class StudyRow(Base):
    """One uploaded study and its job.

    ``upload`` describes what was sent (number of files and their types) but never a file
    name: exported file names often carry the patient's name.
    """

    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    kind: Mapped[str | None] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(200))
    upload: Mapped[str] = mapped_column(String(200), default="")
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TokenRow(Base):
    """An API token: its name, key id, salt and hash (never the token itself)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    salt: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(128))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def open_database(url: str) -> sessionmaker[Session]:
    """Connect to the database and create the tables that are missing.

    Args:
        url: SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg://...``).

    Returns:
        A session factory bound to the engine.

    Raises:
        ChestDxError: the URL is malformed, or the database cannot be reached or written.
    """
    options = {"connect_args": {"check_same_thread": False, "timeout": 30}} if url.startswith("sqlite") else {}
    try:
        engine: Engine = create_engine(url, **options)
        Base.metadata.create_all(engine)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        reason = getattr(exc, "orig", None) or exc
        shown = url.split("@")[-1] if "@" in url else url  # never the password of a database URL
        raise ChestDxError(f"cannot open the database {shown} ({type(reason).__name__}: {reason}): check --db, "
                           "that the database is running and that its folder can be written") from None
    return sessionmaker(engine, expire_on_commit=False)


def _hash(token: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", token.encode(), bytes.fromhex(salt), _PBKDF2_ITERATIONS).hex()


def create_token(sessions: sessionmaker[Session], name: str) -> str:
    """Make a new API token and store its salted hash.

    Args:
        sessions: the session factory.
        name: who or what the token is for.

    Returns:
        The token, to show once (it cannot be recovered later).
    """
    key_id, salt = secrets.token_hex(6), secrets.token_hex(16)
    token = f"cdx_{key_id}_{secrets.token_urlsafe(32)}"
    with sessions.begin() as session:
        session.add(TokenRow(name=name, key_id=key_id, salt=salt, token_hash=_hash(token, salt)))
    return token


def check_token(sessions: sessionmaker[Session], token: str) -> str | None:
    """Args: sessions: the session factory. token: what the client sent. Returns: the token's name, or None."""
    parts = token.split("_", 2)
    row = None
    if len(parts) == 3 and parts[0] == "cdx" and len(parts[1]) <= 16:
        with sessions() as session:
            row = session.scalar(select(TokenRow).where(TokenRow.key_id == parts[1]))
    # The same work whatever the token: an unknown or malformed one is hashed and compared against a
    # dummy, so the answer's timing says nothing about which key ids exist (compare_digest: constant time).
    salt, stored = (row.salt, row.token_hash) if row is not None else (_DUMMY_SALT, _DUMMY_HASH)
    matches = hmac.compare_digest(stored, _hash(token[:200], salt))
    return row.name if row is not None and matches else None


_DUMMY_SALT = secrets.token_hex(16)
_DUMMY_HASH = "0" * 64


def requeue_interrupted(sessions: sessionmaker[Session], max_attempts: int = MAX_ATTEMPTS) -> tuple[int, int]:
    """Put jobs left ``running`` by a stopped or killed process back in the queue.

    A job that has already run ``max_attempts`` times is failed instead, with the reason: a
    study that brings its process down every time must not bring it down for ever.

    Args:
        sessions: the session factory.
        max_attempts: runs after which an interrupted job is failed.

    Returns:
        How many jobs were re-queued, and how many were failed.
    """
    with sessions.begin() as session:
        failed = session.execute(
            update(StudyRow).where(StudyRow.status == "running", StudyRow.attempts >= max_attempts)
            .values(status="failed", finished=utcnow(), error=interrupted_error(max_attempts))).rowcount
        requeued = session.execute(update(StudyRow).where(StudyRow.status == "running")
                                   .values(status="queued", started=None)).rowcount
    return requeued, failed


def interrupted_error(attempts: int) -> str:
    """Args: attempts: how many runs of the job were cut short. Returns: the job's one-line error."""
    return (f"the service's process stopped while diagnosing this study, {attempts} times (killed, or out of memory?): "
            "it is not tried again; check the study, upload it again, or ask the administrator")


def requeue(sessions: sessionmaker[Session], study_id: str) -> None:
    """Put a running job back in the queue (its worker process died under it).

    Args:
        sessions: the session factory.
        study_id: the study.
    """
    with sessions.begin() as session:
        session.execute(update(StudyRow).where(StudyRow.id == study_id, StudyRow.status == "running")
                        .values(status="queued", started=None))


def claim_next(sessions: sessionmaker[Session]) -> StudyRow | None:
    """Take the oldest queued job and mark it running; safe when several dispatchers share the database.

    Args:
        sessions: the session factory.

    Returns:
        The claimed study, or None when the queue is empty.
    """
    with sessions() as session:
        candidates = session.scalars(select(StudyRow.id).where(StudyRow.status == "queued")
                                     .order_by(StudyRow.created).limit(5)).all()
    for study_id in candidates:
        with sessions.begin() as session:
            claimed = session.execute(
                update(StudyRow).where(StudyRow.id == study_id, StudyRow.status == "queued")
                .values(status="running", started=utcnow(), attempts=StudyRow.attempts + 1)).rowcount
        if claimed == 1:
            with sessions() as session:
                return session.get(StudyRow, study_id)
    return None


def finish(sessions: sessionmaker[Session], study_id: str, *, result: str | None = None, error: str | None = None) -> None:
    """Record a job's end: ``done`` with its result JSON, or ``failed`` with its one-line error.

    Args:
        sessions: the session factory.
        study_id: the study.
        result: the result JSON text (done).
        error: the error message (failed).
    """
    with sessions.begin() as session:
        session.execute(update(StudyRow).where(StudyRow.id == study_id).values(
            status="failed" if error is not None else "done", result=result, error=error, finished=utcnow()))


def count_by_status(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Args: sessions: the session factory. Returns: number of studies per status (every status listed)."""
    with sessions() as session:
        rows = session.execute(select(StudyRow.status, func.count()).group_by(StudyRow.status)).all()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: n for status, n in rows})
    return counts
