"""Every session's turns in a local SQLite file, written as they happen, so a crash or a dropped call loses nothing.

Writes go through one worker thread (sqlite3 connections are per thread, and a slow disk must not stall the event
loop); each is its own committed transaction in WAL mode. ``tingshuo sessions export`` reads the same file.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
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
    """``on_failure(message)`` / ``on_recovery()`` are called from the writer thread when writes start failing
    (a full disk, an I/O error) and when the backlog has been written after all.

    A failed write is not dropped: it waits in memory, in order, and is retried before every later write and every
    ``RETRY_S`` seconds, so the turns spoken while the disk was full reach the file once there is room. If the
    process ends first, ``close`` logs the backlog as JSON lines (the last place left to keep them).
    """

    RETRY_S = 5.0

    def __init__(self, path: Path, *, on_failure: Callable[[str], None] | None = None,
                 on_recovery: Callable[[], None] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.on_failure, self.on_recovery = on_failure, on_recovery
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None
        self._backlog: deque[tuple[str, tuple[Any, ...]]] = deque()
        self.failure: str | None = None  # why writes fail now (None: healthy)
        self.failed_writes = 0
        self._timer: threading.Timer | None = None
        self._closed = False
        self._submit(self._open).result()

    # ------------------------------------------------------------------ writer thread
    def _open(self) -> None:
        self._conn = sqlite3.connect(self.path, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        cols = {r[1] for r in self._conn.execute("PRAGMA table_info(turns)")}
        if "audio_path" not in cols:  # a store written before unheard turns kept their audio
            self._conn.execute("ALTER TABLE turns ADD COLUMN audio_path TEXT")
        self._conn.commit()

    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        fut = self._pool.submit(fn, *args)
        fut.add_done_callback(lambda f: f.exception() and log.error("transcript store: %s", f.exception()))
        return fut

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        self._backlog.append((sql, args))
        self._drain()

    def _drain(self) -> None:
        """Write the backlog in order; stop at the first failure (it stays queued)."""
        assert self._conn is not None
        while self._backlog:
            sql, args = self._backlog[0]
            try:
                with self._conn:
                    self._conn.execute(sql, args)
            except sqlite3.IntegrityError as e:  # a bad row, not a bad disk: dropping it is the only way on
                log.error("transcript store: dropped a write (%s)", e)
            except sqlite3.Error as e:  # full disk, I/O error, locked: keep it and try again later
                self.failed_writes += 1
                if self.failure is None:
                    self.failure = f"{type(e).__name__}: {e}"
                    log.error("transcript store failing (%s); %d write(s) held in memory", e, len(self._backlog))
                    if self.on_failure is not None:
                        self.on_failure(self.failure)
                self._schedule_retry()
                return
            self._backlog.popleft()
        if self.failure is not None:
            log.warning("transcript store writes again; the held writes are on disk")
            self.failure = None
            if self.on_recovery is not None:
                self.on_recovery()

    def _schedule_retry(self) -> None:
        if self._timer is None and not self._closed:
            def retry() -> None:
                self._timer = None
                if not self._closed:
                    self._submit(self._drain)

            self._timer = threading.Timer(self.RETRY_S, retry)
            self._timer.daemon = True
            self._timer.start()

    @property
    def backlog(self) -> int:
        return len(self._backlog)

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
                 audio_s: float | None = None, emotion: dict[str, Any] | None = None,
                 audio_path: str | None = None) -> None:
        self._submit(
            self._write,
            "INSERT OR REPLACE INTO turns (session_id, item_id, seq, role, text, full_text, language, source, emotion,"
            " timings, audio_s, audio_path, created) VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE"
            " session_id = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, item_id, session_id, role, text, full_text, language, source,
             json.dumps(emotion, ensure_ascii=False) if emotion else None,
             json.dumps(timings) if timings else None, audio_s, audio_path, time.time()))

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

    def with_connection(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` with the store's connection on the store's own thread, the only one that may use it
        (maintenance such as ``PRAGMA max_page_count``; the fault tests fill the disk this way)."""
        return self._pool.submit(lambda: fn(self._conn)).result()

    def flush(self) -> None:
        """Wait for every write queued so far (and try the held ones once more)."""
        self._pool.submit(self._drain).result()

    def close(self) -> None:
        self.flush()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for sql, args in self._backlog:  # the disk never came back: the log is the last place to keep them
            log.error("transcript store: unwritten %s", json.dumps({"sql": sql, "args": args}, ensure_ascii=False,
                                                                  default=str))
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
                    "audio_path": t["audio_path"] if "audio_path" in t.keys() else None,
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
