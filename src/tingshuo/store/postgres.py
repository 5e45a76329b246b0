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
from tingshuo.store.base import Failure, Selection

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

    def _run(self, sql: str, args: tuple[Any, ...]) -> Any:
        assert self._conn is not None
        with self._conn.transaction():
            return self._conn.execute(pg(sql), _clean(args))

    # ------------------------------------------------------------------ writes (SqlBackend, and:)
    def erase_item(self, session_id: str, item_id: str, at: float) -> list[str]:
        assert self._conn is not None
        with self._conn.transaction():
            audio = [r["audio_path"] for r in self._conn.execute(pg(base.ITEM_AUDIO), (session_id, item_id))]
            self._conn.execute(pg(base.ERASE_TURN), (at, session_id, item_id))
            self._conn.execute(pg(base.ERASE_RISK), (session_id, item_id))
        self._conn.execute("VACUUM turns")
        self._conn.execute("VACUUM risk")
        return audio

    # ------------------------------------------------------------------ reads (SqlBackend, and:)
    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        assert self._conn is not None
        return list(self._conn.execute(pg(sql), args).fetchall())

    # ------------------------------------------------------------------ deletion
    def _remove(self, where: str, args: tuple[Any, ...]) -> tuple[list[str], list[str]]:
        assert self._conn is not None
        with self._conn.transaction():
            ids = [r["id"] for r in self._conn.execute(pg(f"SELECT id FROM sessions WHERE {where}"), args)]
            audio = [r["audio_path"] for r in self._conn.execute(
                "SELECT audio_path FROM turns WHERE session_id = ANY(%s) AND audio_path IS NOT NULL", (ids,))]
            self._conn.execute("DELETE FROM turns WHERE session_id = ANY(%s)", (ids,))
            self._conn.execute("DELETE FROM sessions WHERE id = ANY(%s)", (ids,))
        return ids, audio

    def delete(self, selection: Selection) -> tuple[list[str], list[str]]:
        assert self._conn is not None
        if selection.ids:
            where, args = "id = ANY(?)", (list(selection.ids),)
        elif selection.all:
            where, args = "TRUE", ()
        else:
            where, args = base.LAST_ACTIVE_BEFORE, (selection.before, selection.before)
        ids, audio = self._remove(where, args)
        with self._conn.transaction():
            self._conn.execute("DELETE FROM risk WHERE session_id = ANY(%s)", (ids,))
        self._vacuum()
        return ids, audio

    def purge(self, calls_before: float | None, risk_before: float | None) -> tuple[int, list[str]]:
        assert self._conn is not None
        ids, audio = (self._remove(base.LAST_ACTIVE_BEFORE, (calls_before, calls_before))
                      if calls_before is not None else ([], []))
        n_risk = 0
        if risk_before is not None:
            with self._conn.transaction():
                n_risk = self._conn.execute("DELETE FROM risk WHERE created < %s", (risk_before,)).rowcount
        if ids or n_risk:
            self._vacuum()
        return len(ids), audio

    def _vacuum(self) -> None:
        assert self._conn is not None
        for table in ("turns", "risk", "sessions"):
            self._conn.execute(f"VACUUM {table}")
