"""The transcript store's writer: every write queued to one thread, in order, and held in memory while the
database cannot take it (a full disk, a PostgreSQL server restarting), so nothing the user said is lost.

The database itself is a :class:`~tingshuo.store.base.Backend` (SQLite or PostgreSQL); this class owns the queue,
the retries, retention and deletion of the audio files that rows point at.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tingshuo.store import files
from tingshuo.store.base import Backend, Selection

log = logging.getLogger("tingshuo.store")
ORPHAN_AGE_S = 3600.0  # a call folder younger than this may belong to a row still on its way
DAY_S = 86400.0
_OPS = frozenset({"open_session", "close_session", "add_turn", "set_emotion", "add_risk", "update_text", "erase_item"})


class TranscriptStore:
    """``on_failure(message)`` / ``on_recovery()`` are called from the writer thread when writes start failing
    and when the backlog has been written after all.

    A failed write is not dropped: it waits in memory, in order, and is retried before every later write and every
    ``RETRY_S`` seconds, so the turns spoken while the database was away reach it once it is back. If the process
    ends first, ``close`` writes the backlog to an owner-only JSON-lines file beside the audio (the last place left
    to keep them) and logs only where.

    ``retention_days`` / ``risk_retention_days``: calls (with their audio) and risk entries older than this are
    deleted when the store opens and then every ``PURGE_EVERY_S``; None keeps them.
    """

    RETRY_S = 5.0
    PURGE_EVERY_S = DAY_S

    def __init__(self, backend: Backend, *, audio_dir: Path | None = None,
                 retention_days: float | None = None, risk_retention_days: float | None = None,
                 risk_log: bool = True, on_failure: Callable[[str], None] | None = None,
                 on_recovery: Callable[[], None] | None = None) -> None:
        self.backend = backend
        self.audio_dir = audio_dir
        self.retention_days, self.risk_retention_days = retention_days, risk_retention_days
        self.risk_log = risk_log
        self.on_failure, self.on_recovery = on_failure, on_recovery
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._backlog: deque[tuple[str, tuple[Any, ...]]] = deque()
        self.failure: str | None = None  # why writes fail now (None: healthy)
        self.failed_writes = 0
        self._connected = False
        self._timer: threading.Timer | None = None
        self._purge_timer: threading.Timer | None = None
        self._closed = False
        self._submit(self._start).result()

    @property
    def where(self) -> str:
        """The store's location for people (a path, or a URL without its password)."""
        return self.backend.where

    # ------------------------------------------------------------------ writer thread
    def _start(self) -> None:
        if self._ensure():
            self._purge()
        else:
            self._schedule_retry()
        self._schedule_purge()

    def _ensure(self) -> bool:
        """Connected (again, after a lost connection)? A failure to connect is a failure like any write's."""
        if self._connected:
            return True
        try:
            self.backend.connect()
        except Exception as e:  # noqa: BLE001 - whatever the driver raises, the writes wait
            self._failed(e)
            return False
        self._connected = True
        return True

    def _failed(self, e: BaseException) -> None:
        self.failed_writes += 1
        if self.failure is None:
            self.failure = f"{type(e).__name__}: {e}".strip()
            log.error("transcript store failing (%s); %d write(s) held in memory", self.failure, len(self._backlog))
            if self.on_failure is not None:
                self.on_failure(self.failure)

    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        fut = self._pool.submit(fn, *args)
        fut.add_done_callback(lambda f: f.exception() and log.error("transcript store: %s", f.exception()))
        return fut

    def _write(self, op: str, args: tuple[Any, ...]) -> None:
        self._backlog.append((op, args))
        self._drain()

    def _drain(self) -> None:
        """Write the backlog in order; stop at the first failure (it stays queued)."""
        while self._backlog:
            if not self._ensure():
                self._schedule_retry()
                return
            op, args = self._backlog[0]
            try:
                gone = getattr(self.backend, op)(*args)
            except Exception as e:  # noqa: BLE001
                kind = self.backend.classify(e)
                if kind == "bad_row":  # a bad row, not a bad database: dropping it is the only way on
                    log.error("transcript store: dropped a %s write (%s)", op, type(e).__name__)
                else:  # full disk, I/O error, connection lost: keep it and try again later
                    if kind == "disconnected":
                        self._connected = False
                        self.backend.close()
                    self._failed(e)
                    self._schedule_retry()
                    return
            else:
                if gone:
                    files.remove(gone, self.audio_dir)
            self._backlog.popleft()
        if self.failure is not None:
            log.warning("transcript store writes again; the held writes are stored")
            self.failure = None
            if self.on_recovery is not None:
                self.on_recovery()

    def _current(self) -> None:
        """Before a read or a deletion: every queued write is in, and the database answers (else OSError)."""
        self._drain()
        if not self._ensure():
            raise OSError(f"the transcript store is unreachable ({self.failure})")

    def _schedule_retry(self) -> None:
        if self._timer is None and not self._closed:
            def retry() -> None:
                self._timer = None
                if not self._closed:
                    self._submit(self._drain)

            self._timer = threading.Timer(self.RETRY_S, retry)
            self._timer.daemon = True
            self._timer.start()

    def _schedule_purge(self) -> None:
        if self._closed or (self.retention_days is None and self.risk_retention_days is None):
            return

        def again() -> None:
            if not self._closed:
                self._submit(self._purge)
                self._schedule_purge()

        self._purge_timer = threading.Timer(self.PURGE_EVERY_S, again)
        self._purge_timer.daemon = True
        self._purge_timer.start()

    def _purge(self) -> tuple[int, int]:
        """Delete expired calls (their rows, risk entries past their own retention, audio). (calls, files)."""
        now = time.time()
        calls = now - self.retention_days * DAY_S if self.retention_days is not None else None
        risk = now - self.risk_retention_days * DAY_S if self.risk_retention_days is not None else None
        if calls is None and risk is None or not self._ensure():
            return 0, 0
        try:
            n, gone = self.backend.purge(calls, risk)
        except Exception as e:  # noqa: BLE001 - retention runs again tomorrow; the writes go on
            log.error("transcript store: expiring old calls failed (%s)", type(e).__name__)
            if self.backend.classify(e) == "disconnected":
                self._connected = False
                self.backend.close()
            return 0, 0
        removed = files.remove(gone, self.audio_dir)
        if calls is not None and self.audio_dir is not None:  # audio with no row (a crash between file and row)
            removed += files.sweep(self.audio_dir, calls)
        removed += self._orphans(now - ORPHAN_AGE_S)
        if n or removed:
            log.info("transcript store: %d call(s) and %d audio file(s) past retention deleted", n, removed)
        return n, removed

    def _orphans(self, before: float) -> int:
        """Audio folders of calls the store no longer has: with a shared PostgreSQL store a call deleted from
        another machine leaves its audio here, where only this machine can remove it. Writer thread."""
        if self.audio_dir is None or self._backlog:  # a held write may be the row of a folder's call
            return 0
        n = 0
        for sid in files.session_dirs(self.audio_dir, before):
            try:
                if self.backend.export(sid, True):
                    continue
            except Exception:  # noqa: BLE001 - try again at the next purge
                return n
            n += files.remove_session_dir(self.audio_dir, sid)
        return n

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    # ------------------------------------------------------------------ API (non-blocking)
    def open_session(self, session_id: str, *, client: str = "", key_label: str = "",
                     config: dict[str, Any] | None = None) -> None:
        self._submit(self._write, "open_session", (session_id, time.time(), client, key_label,
                                                   json.dumps(config or {}, ensure_ascii=False)))

    def close_session(self, session_id: str) -> None:
        self._submit(self._write, "close_session", (session_id, time.time()))

    def add_turn(self, session_id: str, item_id: str, role: str, text: str, *, language: str | None = None,
                 source: str = "", timings: dict[str, float] | None = None, full_text: str | None = None,
                 audio_s: float | None = None, emotion: dict[str, Any] | None = None,
                 audio_path: str | None = None) -> None:
        self._submit(self._write, "add_turn", (
            session_id, item_id, role, text, full_text, language, source,
            json.dumps(emotion, ensure_ascii=False) if emotion else None,
            json.dumps(timings) if timings else None, audio_s, audio_path, time.time()))

    def set_emotion(self, session_id: str, item_id: str, emotion: dict[str, Any]) -> None:
        """The Paralinguistics reading of a user turn (it arrives just after the transcript)."""
        self._submit(self._write, "set_emotion", (session_id, item_id, json.dumps(emotion, ensure_ascii=False)))

    def add_risk(self, session_id: str, item_id: str, source: str, category: str, action: str, confidence: float,
                 text: str) -> None:
        """A safety verdict that was not "allow" (refused, care, a blocked clause): the deployer's risk log."""
        if self.risk_log:
            self._submit(self._write, "add_risk",
                         (session_id, item_id, source, category, action, confidence, text, time.time()))

    def update_text(self, session_id: str, item_id: str, text: str, *, truncated_ms: float | None = None) -> None:
        self._submit(self._write, "update_text", (session_id, item_id, text, truncated_ms))

    def erase_item(self, session_id: str, item_id: str) -> None:
        """``conversation.item.delete``: the item's words, readings, audio and risk-log text are erased from the
        database (not hidden); the row keeps only that an item was deleted, and when."""
        self._submit(self._write, "erase_item", (session_id, item_id, time.time()))

    # ------------------------------------------------------------------ API (blocking: CLI, resume, tests)
    def export(self, session_id: str | None = None, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Sessions with their turns, oldest first, after every write queued so far."""
        def read() -> list[dict[str, Any]]:
            self._current()
            return self.backend.export(session_id, include_deleted)

        return self._pool.submit(read).result()

    def risk_entries(self) -> list[dict[str, Any]]:
        """The deployer's risk log, oldest first (entries outlive their call until ``risk_retention_days``)."""
        return self._pool.submit(lambda: self._ensure() and self.backend.risk_entries() or []).result()

    def delete(self, selection: Selection) -> int:
        """Delete calls with their turns, risk entries and audio, then compact the database (``VACUUM``) so their
        words leave its files. Returns how many calls were deleted."""
        def run() -> int:
            self._current()
            ids, gone = self.backend.delete(selection)
            files.remove(gone, self.audio_dir)
            if self.audio_dir is not None:
                for sid in ids:
                    files.remove_session_dir(self.audio_dir, sid)
            return len(ids)

        return self._pool.submit(run).result()

    def purge(self) -> tuple[int, int]:
        """Apply the retention now (it runs at start and daily by itself): (calls deleted, audio files)."""
        return self._pool.submit(self._purge).result()

    def replay(self, path: Path) -> int:
        """Write the held writes a closing store saved (``unwritten-*.jsonl``) now that the database is back."""
        ops = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        for o in ops:
            if o.get("op") not in _OPS:
                raise ValueError(f"{path}: {o.get('op')!r} is not a store write")
            self._submit(self._write, o["op"], tuple(o["args"]))
        self.flush()
        if self.failure is not None:
            raise OSError(f"the transcript store still fails ({self.failure}); the writes are held until close")
        return len(ops)

    def keep_audio(self, session_id: str, item_id: str, audio: Any, rate: int) -> str | None:
        """Write a turn's audio (owner-only) where this store keeps audio; its path, or None."""
        if self.audio_dir is None:
            return None
        return files.write_wav(self.audio_dir, session_id, item_id, audio, rate)

    def with_connection(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn`` with the backend's connection on the store's own thread, the only one that may use it
        (maintenance such as ``PRAGMA max_page_count``; the fault tests fill the disk this way)."""
        return self._pool.submit(lambda: fn(self.backend.connection)).result()

    def flush(self) -> None:
        """Wait for every write queued so far (and try the held ones once more)."""
        self._pool.submit(self._drain).result()

    def close(self) -> None:
        self.flush()
        self._closed = True
        for t in (self._timer, self._purge_timer):
            if t is not None:
                t.cancel()
        if self._backlog:
            self._spill()
        self._pool.submit(self.backend.close).result()
        self._pool.shutdown(wait=True)

    def _spill(self) -> None:
        """The database never came back: the held writes go to an owner-only file, the last place to keep them
        (the log says only where: logs carry no user text)."""
        lines = [json.dumps({"op": op, "args": args}, ensure_ascii=False, default=str) for op, args in self._backlog]
        base = self.audio_dir.parent if self.audio_dir is not None else Path.cwd()
        path = base / f"unwritten-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
        try:
            files.write_private(path, "\n".join(lines) + "\n")
        except OSError as e:  # the one place user text goes to the log: otherwise it would be lost (README)
            log.error("transcript store: %d unwritten write(s) could not be saved (%s); here they are:\n%s",
                      len(lines), e, "\n".join(lines))
            return
        log.error("transcript store: %d unwritten write(s) saved to %s (replay with `tingshuo sessions import`)",
                  len(lines), path)
