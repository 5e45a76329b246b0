"""The default store: one SQLite file in WAL mode, shared safely by the session servers of one host.

Deletion reaches the file's bytes: ``secure_delete`` zeroes freed content, and after an erase or a deletion the
WAL is checkpointed and truncated, so deleted words are in neither file (tests/test_store.py reads the bytes).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tingshuo.store import base
from tingshuo.store.base import Failure
from tingshuo.store.files import private_dir, private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, started REAL NOT NULL, ended REAL, client TEXT, key_label TEXT, config TEXT
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(id), item_id TEXT NOT NULL, seq INTEGER NOT NULL,
    role TEXT NOT NULL, text TEXT NOT NULL, full_text TEXT, language TEXT, source TEXT, emotion TEXT,
    timings TEXT, audio_s REAL, truncated_ms REAL, deleted INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
    audio_path TEXT, deleted_at REAL,
    PRIMARY KEY (session_id, item_id)
);
CREATE TABLE IF NOT EXISTS risk (
    session_id TEXT NOT NULL, item_id TEXT, source TEXT NOT NULL, category TEXT NOT NULL,
    action TEXT NOT NULL, confidence REAL, text TEXT, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS risk_session ON risk (session_id);
"""


class SQLiteBackend(base.SqlBackend):
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = None

    @property
    def connection(self) -> sqlite3.Connection | None:
        return self._conn

    def connect(self) -> None:
        if self.readonly:
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            return
        private_dir(self.path.parent)
        private_file(self.path)
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA secure_delete=ON")  # freed pages and cells are zeroed: deleted words leave the file
        conn.executescript(SCHEMA)
        cols = {r[1] for r in conn.execute("PRAGMA table_info(turns)")}
        for col, kind in (("audio_path", "TEXT"), ("deleted_at", "REAL")):  # a store from an earlier release
            if col not in cols:
                conn.execute(f"ALTER TABLE turns ADD COLUMN {col} {kind}")
        conn.commit()
        for suffix in ("-wal", "-shm"):  # a store created before files were owner-only
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                private_file(side)
        self._conn = conn

    def classify(self, exc: BaseException) -> Failure:
        if isinstance(exc, sqlite3.IntegrityError):
            return "bad_row"
        if isinstance(exc, sqlite3.Error):
            return "held"  # full disk, I/O error, locked
        raise exc

    def _tx(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn  # as a context manager: commit on exit, roll back on an error

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        assert self._conn is not None
        return self._conn.execute(sql, args)

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self._exec(sql, args).fetchall()]

    def _has_tables(self) -> bool:
        names = {r["name"] for r in self._rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {"sessions", "turns", "risk"} <= names

    def _after_erase(self) -> None:
        """Copy the WAL into the database and truncate it: the WAL still holds the pages as they were written."""
        self._exec("PRAGMA wal_checkpoint(TRUNCATE)")

    def _compact(self) -> None:
        self._after_erase()
        self._exec("VACUUM")
        self._after_erase()


def export_sessions(path: Path, session_id: str | None = None, include_deleted: bool = False) -> list[dict[str, Any]]:
    """Sessions with their turns from an SQLite store file, oldest first (read-only; safe while a server
    writes; [] when there is no file)."""
    if not Path(path).is_file():
        return []
    b = SQLiteBackend(path, readonly=True)
    b.connect()
    try:
        return b.export(session_id, include_deleted)
    finally:
        b.close()
