"""What a transcript database does (the :class:`Backend` protocol) and the SQL both backends share.

The SQL is written once with ``?`` placeholders (SQLite's); the PostgreSQL backend turns them into ``%s``. Both
dialects take ``INSERT … ON CONFLICT … DO UPDATE``, so a turn written twice (a resumed item) updates its row and a
deleted item is never written back.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Failure = Literal["bad_row", "held", "disconnected"]


@dataclass(frozen=True)
class Selection:
    """Which calls ``tingshuo sessions delete`` removes: some ids, every call, or those whose last activity (its
    end, or its newest turn) is before a time."""

    ids: tuple[str, ...] = ()
    all: bool = False
    before: float | None = None

    def __post_init__(self) -> None:
        if sum((bool(self.ids), self.all, self.before is not None)) != 1:
            raise ValueError("name call ids, or all, or a date before which calls are deleted (one of them)")


class Backend(Protocol):
    """One database. Every method runs on the store's writer thread (connections are per thread); each write
    is its own committed transaction and returns the audio files it orphaned (to delete), if any."""

    where: str  # for people: a path, or a URL without its password

    @property
    def connection(self) -> Any: ...
    def connect(self) -> None: ...
    def close(self) -> None: ...
    def classify(self, exc: BaseException) -> Failure:
        """``bad_row``: this write can never succeed (dropped); ``held``: the database cannot write now (a full
        disk); ``disconnected``: the connection is gone (held, and the next try connects again)."""
        ...

    # writes (TranscriptStore queues these by name)
    def open_session(self, session_id: str, started: float, client: str, key_label: str, config: str) -> None: ...
    def close_session(self, session_id: str, ended: float) -> None: ...
    def add_turn(self, session_id: str, item_id: str, role: str, text: str, full_text: str | None,
                 language: str | None, source: str, emotion: str | None, timings: str | None,
                 audio_s: float | None, audio_path: str | None, created: float) -> None: ...
    def set_emotion(self, session_id: str, item_id: str, emotion: str) -> None: ...
    def add_risk(self, session_id: str, item_id: str, source: str, category: str, action: str,
                 confidence: float, text: str, created: float) -> None: ...
    def update_text(self, session_id: str, item_id: str, text: str, truncated_ms: float | None) -> None: ...
    def erase_item(self, session_id: str, item_id: str, at: float) -> list[str]: ...

    # reads and deletion
    def export(self, session_id: str | None, include_deleted: bool) -> list[dict[str, Any]]: ...
    def risk_entries(self) -> list[dict[str, Any]]: ...
    def delete(self, selection: Selection) -> tuple[list[str], list[str]]:
        """(deleted call ids, their audio files), the database compacted after."""
        ...
    def purge(self, calls_before: float | None, risk_before: float | None) -> tuple[int, list[str]]:
        """Expire calls last active before ``calls_before`` and risk entries written before ``risk_before``."""
        ...


# ---------------------------------------------------------------------------------------------- shared SQL
OPEN_SESSION = (
    "INSERT INTO sessions (id, started, client, key_label, config) VALUES (?, ?, ?, ?, ?) "
    # a continued call keeps its start; it is live again
    "ON CONFLICT (id) DO UPDATE SET ended = NULL, client = excluded.client, config = excluded.config")
CLOSE_SESSION = "UPDATE sessions SET ended = ? WHERE id = ?"
ADD_TURN = (
    "INSERT INTO turns (session_id, item_id, seq, role, text, full_text, language, source, emotion, timings, audio_s,"
    " audio_path, created) VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE session_id = ?),"
    " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (session_id, item_id) DO UPDATE SET seq = excluded.seq, role = excluded.role, text = excluded.text,"
    " full_text = excluded.full_text, language = excluded.language, source = excluded.source,"
    " emotion = excluded.emotion, timings = excluded.timings, audio_s = excluded.audio_s,"
    " audio_path = excluded.audio_path, created = excluded.created WHERE turns.deleted = 0")
SET_EMOTION = "UPDATE turns SET emotion = ? WHERE session_id = ? AND item_id = ? AND deleted = 0"
ADD_RISK = ("INSERT INTO risk (session_id, item_id, source, category, action, confidence, text, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
UPDATE_TEXT = "UPDATE turns SET text = ?, truncated_ms = ? WHERE session_id = ? AND item_id = ? AND deleted = 0"
ITEM_AUDIO = "SELECT audio_path FROM turns WHERE session_id = ? AND item_id = ? AND audio_path IS NOT NULL"
ERASE_TURN = ("UPDATE turns SET text = '', full_text = NULL, emotion = NULL, timings = NULL, audio_path = NULL,"
              " deleted = 1, deleted_at = ? WHERE session_id = ? AND item_id = ?")
ERASE_RISK = "UPDATE risk SET text = NULL WHERE session_id = ? AND item_id = ?"
# a call's last activity: its end, its start, or its newest turn (a call still open keeps its turns' times)
LAST_ACTIVE_BEFORE = ("COALESCE(ended, started) < ? AND NOT EXISTS (SELECT 1 FROM turns t WHERE t.session_id ="
                      " sessions.id AND t.created >= ?)")


class SqlBackend:
    """What both backends do with the same SQL: writes, erasure, deletion and expiry, reads, closing. A backend
    supplies ``_tx`` (a transaction, committed on exit), ``_exec`` (a statement inside one) and ``_rows`` (a
    query's rows as dicts), all with ``?`` placeholders; ``_after_erase`` and ``_compact`` (what makes freed rows
    leave its files); and keeps its connection in ``_conn``."""

    _conn: Any = None

    def _tx(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        raise NotImplementedError

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _after_erase(self) -> None:
        """After an item's words are overwritten: what makes their old bytes go."""

    def _compact(self) -> None:
        """After calls are deleted: what makes their rows leave the database's files."""

    def _has_tables(self) -> bool:
        return True

    def _run(self, sql: str, args: tuple[Any, ...]) -> Any:
        with self._tx():
            return self._exec(sql, args)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    # reads
    def export(self, session_id: str | None, include_deleted: bool) -> list[dict[str, Any]]:
        if not self._has_tables():
            return []
        q, args = "SELECT * FROM sessions", ()
        if session_id:
            q, args = q + " WHERE id = ?", (session_id,)
        out = []
        for s in self._rows(q + " ORDER BY started", args):
            turns = [turn_dict(t) for t in self._rows("SELECT * FROM turns WHERE session_id = ? ORDER BY seq",
                                                      (s["id"],)) if include_deleted or not t["deleted"]]
            risk = [risk_dict(r) for r in self._rows("SELECT * FROM risk WHERE session_id = ? ORDER BY created",
                                                     (s["id"],))]
            out.append(session_dict(s, turns, risk))
        return out

    def risk_entries(self) -> list[dict[str, Any]]:
        if not self._has_tables():
            return []
        return [risk_dict(r) for r in self._rows("SELECT * FROM risk ORDER BY created")]

    # writes
    def open_session(self, session_id: str, started: float, client: str, key_label: str, config: str) -> None:
        self._run(OPEN_SESSION, (session_id, started, client, key_label, config))

    def close_session(self, session_id: str, ended: float) -> None:
        self._run(CLOSE_SESSION, (ended, session_id))

    def add_turn(self, session_id: str, item_id: str, role: str, text: str, full_text: str | None,
                 language: str | None, source: str, emotion: str | None, timings: str | None,
                 audio_s: float | None, audio_path: str | None, created: float) -> None:
        self._run(ADD_TURN, (session_id, item_id, session_id, role, text, full_text, language, source, emotion,
                             timings, audio_s, audio_path, created))

    def set_emotion(self, session_id: str, item_id: str, emotion: str) -> None:
        self._run(SET_EMOTION, (emotion, session_id, item_id))

    def add_risk(self, session_id: str, item_id: str, source: str, category: str, action: str,
                 confidence: float, text: str, created: float) -> None:
        self._run(ADD_RISK, (session_id, item_id, source, category, action, confidence, text, created))

    def update_text(self, session_id: str, item_id: str, text: str, truncated_ms: float | None) -> None:
        self._run(UPDATE_TEXT, (text, truncated_ms, session_id, item_id))

    def erase_item(self, session_id: str, item_id: str, at: float) -> list[str]:
        with self._tx():
            audio = [r["audio_path"] for r in self._rows(ITEM_AUDIO, (session_id, item_id))]
            self._exec(ERASE_TURN, (at, session_id, item_id))
            self._exec(ERASE_RISK, (session_id, item_id))
        self._after_erase()
        return audio

    # deletion and expiry
    def _remove(self, where: str, args: tuple[Any, ...], *, risk: bool) -> tuple[list[str], list[str]]:
        """Delete the calls ``where`` selects with their turns (and, ``risk``, their risk entries): (ids, audio).
        The rows go by subquery, not by a list of ids: ``--all`` on a big store would pass SQL's parameter limit."""
        calls = f"(SELECT id FROM sessions WHERE {where})"
        with self._tx():
            ids = [r["id"] for r in self._rows(f"SELECT id FROM sessions WHERE {where}", args)]
            audio = [r["audio_path"] for r in self._rows(
                f"SELECT audio_path FROM turns WHERE session_id IN {calls} AND audio_path IS NOT NULL", args)]
            self._exec(f"DELETE FROM turns WHERE session_id IN {calls}", args)
            if risk:  # a user's deletion takes the call's risk entries (expiry leaves them their own retention)
                self._exec(f"DELETE FROM risk WHERE session_id IN {calls}", args)
            self._exec(f"DELETE FROM sessions WHERE {where}", args)
        return ids, audio

    def delete(self, selection: Selection) -> tuple[list[str], list[str]]:
        if selection.ids:
            where, args = f"id IN ({', '.join('?' * len(selection.ids))})", selection.ids
        elif selection.all:
            where, args = "1 = 1", ()
        else:
            where, args = LAST_ACTIVE_BEFORE, (selection.before, selection.before)
        ids, audio = self._remove(where, args, risk=True)
        self._compact()
        return ids, audio

    def purge(self, calls_before: float | None, risk_before: float | None) -> tuple[int, list[str]]:
        ids, audio = ([], []) if calls_before is None else self._remove(
            LAST_ACTIVE_BEFORE, (calls_before, calls_before), risk=False)
        n_risk = 0
        if risk_before is not None:
            with self._tx():
                n_risk = self._exec("DELETE FROM risk WHERE created < ?", (risk_before,)).rowcount
        if ids or n_risk:
            self._compact()
        return len(ids), audio


def turn_dict(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "item_id": t["item_id"], "role": t["role"], "text": t["text"], "full_text": t["full_text"],
        "language": t["language"], "source": t["source"],
        "emotion": json.loads(t["emotion"]) if t["emotion"] else None,
        "timings_ms": json.loads(t["timings"]) if t["timings"] else None, "audio_s": t["audio_s"],
        "truncated_ms": t["truncated_ms"], "deleted": bool(t["deleted"]), "deleted_at": t.get("deleted_at"),
        "at": t["created"], "audio_path": t.get("audio_path"),
    }


def risk_dict(r: dict[str, Any]) -> dict[str, Any]:
    return {"session_id": r["session_id"], "item_id": r["item_id"], "source": r["source"],
            "category": r["category"], "action": r["action"], "confidence": r["confidence"], "text": r["text"],
            "at": r["created"]}


def session_dict(s: dict[str, Any], turns: list[dict[str, Any]], risk: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": s["id"], "started": s["started"], "ended": s["ended"], "client": s["client"],
            "key_label": s["key_label"], "turns": turns, "risk": risk}
