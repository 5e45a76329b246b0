"""Every session's turns in a local SQLite file, written as they happen, so a crash or a dropped call loses nothing.

Writes go through one worker thread (sqlite3 connections are per thread, and a slow disk must not stall the event
loop); each is its own committed transaction in WAL mode. ``tingshuo sessions export`` reads the same file.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("tingshuo.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, started REAL NOT NULL, ended REAL, client TEXT, key_label TEXT, config TEXT
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(id), item_id TEXT NOT NULL, seq INTEGER NOT NULL,
    role TEXT NOT NULL, text TEXT NOT NULL, full_text TEXT, language TEXT, source TEXT, emotion TEXT,
    timings TEXT, audio_s REAL, truncated_ms REAL, deleted INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
    PRIMARY KEY (session_id, item_id)
);
CREATE TABLE IF NOT EXISTS risk (
    session_id TEXT NOT NULL REFERENCES sessions(id), item_id TEXT, source TEXT NOT NULL, category TEXT NOT NULL,
    action TEXT NOT NULL, confidence REAL, text TEXT, created REAL NOT NULL
);
"""


class TranscriptStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None
        self._submit(self._open).result()

    # ------------------------------------------------------------------ writer thread
    def _open(self) -> None:
        self._conn = sqlite3.connect(self.path, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._conn.commit()

    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        fut = self._pool.submit(fn, *args)
        fut.add_done_callback(lambda f: f.exception() and log.error("transcript store: %s", f.exception()))
        return fut

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        assert self._conn is not None
        with self._conn:
            self._conn.execute(sql, args)

    # ------------------------------------------------------------------ API (non-blocking)
    def open_session(self, session_id: str, *, client: str = "", key_label: str = "",
                     config: dict[str, Any] | None = None) -> None:
        self._submit(self._write, "INSERT OR REPLACE INTO sessions (id, started, client, key_label, config) "
                     "VALUES (?, ?, ?, ?, ?)", (session_id, time.time(), client, key_label,
                                                json.dumps(config or {}, ensure_ascii=False)))

    def close_session(self, session_id: str) -> None:
        self._submit(self._write, "UPDATE sessions SET ended = ? WHERE id = ?", (time.time(), session_id))

    def add_turn(self, session_id: str, item_id: str, role: str, text: str, *, language: str | None = None,
                 source: str = "", timings: dict[str, float] | None = None, full_text: str | None = None,
                 audio_s: float | None = None, emotion: dict[str, Any] | None = None) -> None:
        self._submit(
            self._write,
            "INSERT OR REPLACE INTO turns (session_id, item_id, seq, role, text, full_text, language, source, emotion,"
            " timings, audio_s, created) VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE session_id"
            " = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, item_id, session_id, role, text, full_text, language, source,
             json.dumps(emotion, ensure_ascii=False) if emotion else None,
             json.dumps(timings) if timings else None, audio_s, time.time()))

    def set_emotion(self, session_id: str, item_id: str, emotion: dict[str, Any]) -> None:
        """The Paralinguistics reading of a user turn (it arrives just after the transcript)."""
        self._submit(self._write, "UPDATE turns SET emotion = ? WHERE session_id = ? AND item_id = ?",
                     (json.dumps(emotion, ensure_ascii=False), session_id, item_id))

    def add_risk(self, session_id: str, item_id: str, source: str, category: str, action: str, confidence: float,
                 text: str) -> None:
        """A safety verdict that was not "allow" (refused, care, a blocked clause): the deployer's risk log."""
        self._submit(self._write, "INSERT INTO risk (session_id, item_id, source, category, action, confidence, text,"
                     " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (session_id, item_id, source, category, action, confidence, text, time.time()))

    def update_text(self, session_id: str, item_id: str, text: str, *, truncated_ms: float | None = None) -> None:
        self._submit(self._write, "UPDATE turns SET text = ?, truncated_ms = ? WHERE session_id = ? AND item_id = ?",
                     (text, truncated_ms, session_id, item_id))

    def mark_deleted(self, session_id: str, item_id: str) -> None:
        self._submit(self._write, "UPDATE turns SET deleted = 1 WHERE session_id = ? AND item_id = ?",
                     (session_id, item_id))

    def flush(self) -> None:
        """Wait for every write queued so far."""
        self._pool.submit(lambda: None).result()

    def close(self) -> None:
        self.flush()
        if self._conn is not None:
            self._pool.submit(self._conn.close).result()
        self._pool.shutdown(wait=True)


def export_sessions(path: Path, session_id: str | None = None, include_deleted: bool = False) -> list[dict[str, Any]]:
    """Sessions with their turns, oldest first (read-only; safe while a server is writing)."""
    if not Path(path).is_file():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        q, args = "SELECT * FROM sessions", ()
        if session_id:
            q, args = q + " WHERE id = ?", (session_id,)
        result = []
        for s in conn.execute(q + " ORDER BY started", args):
            turns = []
            for t in conn.execute("SELECT * FROM turns WHERE session_id = ? ORDER BY seq", (s["id"],)):
                if t["deleted"] and not include_deleted:
                    continue
                turns.append({
                    "item_id": t["item_id"], "role": t["role"], "text": t["text"], "full_text": t["full_text"],
                    "language": t["language"], "source": t["source"],
                    "emotion": json.loads(t["emotion"]) if t["emotion"] else None,
                    "timings_ms": json.loads(t["timings"]) if t["timings"] else None, "audio_s": t["audio_s"],
                    "truncated_ms": t["truncated_ms"], "deleted": bool(t["deleted"]), "at": t["created"],
                })
            try:
                risk = [{"item_id": r["item_id"], "source": r["source"], "category": r["category"],
                         "action": r["action"], "confidence": r["confidence"], "text": r["text"], "at": r["created"]}
                        for r in conn.execute("SELECT * FROM risk WHERE session_id = ? ORDER BY created", (s["id"],))]
            except sqlite3.OperationalError:  # a store written before the risk log existed
                risk = []
            result.append({"id": s["id"], "started": s["started"], "ended": s["ended"], "client": s["client"],
                           "key_label": s["key_label"], "turns": turns, "risk": risk})
        return result
    finally:
        conn.close()
