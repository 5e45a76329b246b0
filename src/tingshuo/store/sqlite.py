"""The default store: one SQLite file in WAL mode, shared safely by the session servers of one host.

Deletion reaches the file's bytes: ``secure_delete`` zeroes freed content, and after an erase or a deletion the
WAL is checkpointed and truncated, so deleted words are in neither file (tests/test_store.py reads the bytes).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tingshuo.store import base
from tingshuo.store.base import Failure, Selection
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

    def _run(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        assert self._conn is not None
        with self._conn:
            return self._conn.execute(sql, args)

    # ------------------------------------------------------------------ writes (SqlBackend, and:)
    def erase_item(self, session_id: str, item_id: str, at: float) -> list[str]:
        assert self._conn is not None
        with self._conn:
            audio = [r[0] for r in self._conn.execute(base.ITEM_AUDIO, (session_id, item_id))]
            self._conn.execute(base.ERASE_TURN, (at, session_id, item_id))
            self._conn.execute(base.ERASE_RISK, (session_id, item_id))
        self._checkpoint()
        return audio

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it: the WAL still holds the pages as they were written."""
        assert self._conn is not None
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ------------------------------------------------------------------ reads (SqlBackend, and:)
    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        assert self._conn is not None
        return [dict(r) for r in self._conn.execute(sql, args).fetchall()]

    def _has_tables(self) -> bool:
        assert self._conn is not None
        names = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {"sessions", "turns", "risk"} <= names

    # ------------------------------------------------------------------ deletion
    def _where(self, sel: Selection) -> tuple[str, tuple[Any, ...]]:
        if sel.ids:
            return f"id IN ({', '.join('?' * len(sel.ids))})", sel.ids
        if sel.all:
            return "1 = 1", ()
        return base.LAST_ACTIVE_BEFORE, (sel.before, sel.before)

    def _remove(self, where: str, args: tuple[Any, ...]) -> tuple[list[str], list[str]]:
        assert self._conn is not None
        with self._conn:
            ids = [r[0] for r in self._conn.execute(f"SELECT id FROM sessions WHERE {where}", args)]
            audio: list[str] = []
            for sid in ids:
                audio += [r[0] for r in self._conn.execute(
                    "SELECT audio_path FROM turns WHERE session_id = ? AND audio_path IS NOT NULL", (sid,))]
                self._conn.execute("DELETE FROM turns WHERE session_id = ?", (sid,))
                self._conn.execute("DELETE FROM sessions WHERE id = ?", (sid,))
        return ids, audio

    def delete(self, selection: Selection) -> tuple[list[str], list[str]]:
        assert self._conn is not None
        where, args = self._where(selection)
        ids, audio = self._remove(where, args)
        with self._conn:  # a user's deletion takes the call's risk entries too
            for sid in ids:
                self._conn.execute("DELETE FROM risk WHERE session_id = ?", (sid,))
        self._compact()
        return ids, audio

    def purge(self, calls_before: float | None, risk_before: float | None) -> tuple[int, list[str]]:
        assert self._conn is not None
        ids, audio = self._remove(base.LAST_ACTIVE_BEFORE, (calls_before, calls_before)) if calls_before else ([], [])
        n_risk = 0
        if risk_before is not None:
            with self._conn:
                n_risk = self._conn.execute("DELETE FROM risk WHERE created < ?", (risk_before,)).rowcount
        if ids or n_risk:
            self._compact()
        return len(ids), audio

    def _compact(self) -> None:
        assert self._conn is not None
        self._checkpoint()
        self._conn.execute("VACUUM")
        self._checkpoint()


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
