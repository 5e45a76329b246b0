"""One store for session servers on several machines: PostgreSQL through psycopg 3 (``store.url``).

A lost connection (the server restarting, a network cut) is a held write like a full disk: the writes wait in
memory, in order, and the next try connects again. The same SQL as SQLite's, ``?`` turned into ``%s``.

Deletion: rows are deleted or their text overwritten, then ``VACUUM`` marks the old row versions free. PostgreSQL
may keep those bytes in its data files until they are reused, and in its WAL and any backups the deployer runs
(docs/deploy.md says so); the rows themselves are gone for every reader at once.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tingshuo.store import base
from tingshuo.store.base import Failure

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, started DOUBLE PRECISION NOT NULL,"
    " ended DOUBLE PRECISION, client TEXT, key_label TEXT, config TEXT)",
    "CREATE TABLE IF NOT EXISTS turns (session_id TEXT NOT NULL REFERENCES sessions(id), item_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL, full_text TEXT, language TEXT, source TEXT,"
    " emotion TEXT, timings TEXT, audio_s DOUBLE PRECISION, truncated_ms DOUBLE PRECISION,"
    " deleted INTEGER NOT NULL DEFAULT 0, created DOUBLE PRECISION NOT NULL, audio_path TEXT,"
    " deleted_at DOUBLE PRECISION, PRIMARY KEY (session_id, item_id))",
    "CREATE TABLE IF NOT EXISTS risk (session_id TEXT NOT NULL, item_id TEXT, source TEXT NOT NULL,"
    " category TEXT NOT NULL, action TEXT NOT NULL, confidence DOUBLE PRECISION, text TEXT,"
    " created DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS risk_session ON risk (session_id)",
]
_PLACEHOLDER = re.compile(r"\?")


def pg(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (the shared SQL has no literal ``?`` or ``%``)."""
    return _PLACEHOLDER.sub("%s", sql)


def redact(url: str) -> str:
    """The URL without its password, for logs and ``tingshuo sessions``."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def _clean(args: tuple[Any, ...]) -> tuple[Any, ...]:
    # PostgreSQL text cannot hold NUL; a transcript with one would otherwise be dropped as a bad row
    return tuple(a.replace("\x00", "") if isinstance(a, str) else a for a in args)


class PostgresBackend(base.SqlBackend):
    CONNECT_TIMEOUT_S = 5

    def __init__(self, url: str) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as e:
            raise RuntimeError("store.url names PostgreSQL, which needs psycopg: pip install 'tingshuo[postgres]'") from e
        self.url = url
        self.where = redact(url)
        self._conn: Any = None

    @property
    def connection(self) -> Any:
        return self._conn

    def connect(self) -> None:
        import psycopg
        from psycopg.rows import dict_row

        conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                               connect_timeout=self.CONNECT_TIMEOUT_S)
        try:
            with conn.transaction():
                # one server creates the tables; the others wait for its lock instead of racing it
                conn.execute("SELECT pg_advisory_xact_lock(7420196)")
                for stmt in SCHEMA:
                    conn.execute(stmt)
        except Exception:
            conn.close()
            raise
        self._conn = conn

    def classify(self, exc: BaseException) -> Failure:
        import psycopg

        if isinstance(exc, (psycopg.IntegrityError, psycopg.DataError)):
            return "bad_row"
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) or (
                self._conn is not None and (self._conn.closed or self._conn.broken)):
            return "disconnected"
        if isinstance(exc, psycopg.Error):
            return "held"  # e.g. disk full on the server (an OperationalError too, but its connection lives)
        raise exc

    def _tx(self) -> Any:
        assert self._conn is not None
        return self._conn.transaction()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        assert self._conn is not None
        return self._conn.execute(pg(sql), _clean(args))

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return list(self._exec(sql, args).fetchall())

    def _after_erase(self) -> None:
        for table in ("turns", "risk"):
            self._exec(f"VACUUM {table}")

    def _compact(self) -> None:
        for table in ("turns", "risk", "sessions"):
            self._exec(f"VACUUM {table}")
