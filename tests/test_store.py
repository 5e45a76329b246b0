"""What is kept of a call, for how long, and how it is erased — on a real SQLite file and on a real PostgreSQL
server the suite starts itself (tests/pgcluster.py). The fast ones load no model: the store's own behaviours; the
slow ones drive it through a Realtime server (test_server.py and test_load.py have more of that).

- ``conversation.item.delete`` erases the item's words from the database (SQLite: from the files' bytes, WAL
  included), its emotion reading, its risk-log text and its kept audio; the row keeps only that it was deleted.
- ``tingshuo sessions delete ID|--all|--before DATE`` deletes calls with their rows, risk entries and audio.
- A call older than ``retention_days`` is gone at the next start; risk entries follow their own retention.
- Files are owner-only; ``enabled = false`` keeps nothing; the old ``server.db_path`` still works, with a warning.
- PostgreSQL restarting in the middle of a call loses nothing: the writes wait in memory and land in order.
"""

from __future__ import annotations

import json
import os
import stat
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

SECRET = "我其实一直没告诉任何人我欠了三万块钱"  # words that must leave the store when deleted
OTHER = "今天天气不错我们去公园走走吧"


@pytest.fixture(params=["sqlite", "postgres"])
def cfg(request, tmp_path, monkeypatch):
    from tingshuo.config import Settings

    monkeypatch.delenv("TINGSHUO_CONFIG", raising=False)
    s = Settings(cache_dir=tmp_path / "cache")
    s.store.path = tmp_path / "db" / "t.sqlite3"
    s.store.audio_dir = tmp_path / "audio"
    if request.param == "postgres":
        s.store.url = request.getfixturevalue("pg_cluster").database()
    return s


def _env(s) -> dict[str, str]:
    """The same store for a CLI command (settings come from the environment there)."""
    env = {"TINGSHUO_STORE__PATH": str(s.store.path), "TINGSHUO_STORE__AUDIO_DIR": str(s.store.audio_dir),
           "TINGSHUO_CACHE_DIR": str(s.cache_dir)}
    if s.store.url:
        env["TINGSHUO_STORE__URL"] = s.store.url
    return env


def cli(s, *args: str):
    from typer.testing import CliRunner

    from tingshuo.cli import app

    return CliRunner().invoke(app, list(args), env=_env(s))


def a_call(store, sid: str, words: str, *, audio_dir: Path | None = None) -> str:
    """A call as the server writes it: a user turn with its emotion and audio, a reply, a risk verdict."""
    store.open_session(sid, client="test", key_label="open:test", config={"voice": "x"})
    path = store.keep_audio(sid, "item_u1", np.zeros(1600, np.float32), 16000)
    store.add_turn(sid, "item_u1", "user", words, language="zh", source="audio", audio_s=0.1, audio_path=path)
    store.set_emotion(sid, "item_u1", {"label": "sad", "note": words})
    store.add_turn(sid, "item_a1", "assistant", "嗯，我在听。", language="zh", source="completed")
    store.add_risk(sid, "item_u1", "input", "自杀", "care", 0.4, words)
    store.close_session(sid)
    store.flush()
    return path


def store_bytes(s) -> bytes:
    """Every byte of the SQLite store: the database, its WAL and shared-memory files."""
    p = s.store_path()
    return b"".join(f.read_bytes() for f in (p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm"))
                    if f.exists())


def test_deleting_an_item_erases_its_words_reading_risk_text_and_audio(cfg):
    from tingshuo.store import open_store

    store = open_store(cfg)
    try:
        audio = a_call(store, "sess_a", SECRET)
        a_call(store, "sess_b", OTHER)
        assert Path(audio).is_file()
        if not cfg.store.url:  # the test can fail: the words are in the file before the deletion
            assert SECRET.encode() in store_bytes(cfg)
        store.erase_item("sess_a", "item_u1")
        store.flush()
        [call] = store.export("sess_a", include_deleted=True)
        shown = store.export("sess_a")[0]
    finally:
        store.close()
    gone = next(t for t in call["turns"] if t["item_id"] == "item_u1")
    assert gone["deleted"] and gone["deleted_at"] and gone["text"] == "" and gone["emotion"] is None, gone
    assert gone["audio_path"] is None and not Path(audio).exists()
    assert [t["item_id"] for t in shown["turns"]] == ["item_a1"]  # the reply stays, the erased turn is not listed
    assert call["risk"] and all(r["text"] is None for r in call["risk"])  # the verdict stays for the deployer
    assert call["risk"][0]["category"] == "自杀"
    assert SECRET not in json.dumps(call, ensure_ascii=False)
    if not cfg.store.url:
        raw = store_bytes(cfg)
        assert SECRET.encode() not in raw and OTHER.encode() in raw  # gone from the bytes, the other call kept


def test_sessions_delete_removes_calls_with_their_risk_entries_and_audio(cfg):
    from tingshuo.store import open_store

    store = open_store(cfg)
    audio_a = a_call(store, "sess_a", SECRET)
    audio_b = a_call(store, "sess_b", OTHER)
    store.close()
    r = cli(cfg, "sessions", "delete", "sess_a", "sess_nobody")
    assert r.exit_code == 0 and "1 call(s) deleted" in r.output and "were not stored" in r.output, r.output
    store = open_store(cfg, retention=False)
    try:
        left = store.export(include_deleted=True)
        risk = store.risk_entries()
    finally:
        store.close()
    assert [c["id"] for c in left] == ["sess_b"] and [x["session_id"] for x in risk] == ["sess_b"]
    assert not Path(audio_a).exists() and not Path(audio_a).parent.exists() and Path(audio_b).is_file()
    if not cfg.store.url:
        assert SECRET.encode() not in store_bytes(cfg) and OTHER.encode() in store_bytes(cfg)
    assert SECRET not in cli(cfg, "sessions", "export", "--include-deleted").output

    r = cli(cfg, "sessions", "delete", "--before", "2000-01-01")
    assert r.exit_code == 0 and "0 call(s) deleted" in r.output, r.output
    r = cli(cfg, "sessions", "delete", "--before", time.strftime("%Y-%m-%d", time.localtime(time.time() + 2 * 86400)))
    assert r.exit_code == 0 and "1 call(s) deleted" in r.output, r.output
    assert json.loads(cli(cfg, "sessions", "export").output) == []
    assert cli(cfg, "sessions", "delete", "--all", "sess_b").exit_code != 0  # one way to choose at a time
    assert cli(cfg, "sessions", "delete", "--before", "yesterday").exit_code != 0


def test_a_call_deleted_from_another_machine_loses_its_audio_here_too(cfg, tmp_path):
    """Two session servers share the store, each with its own audio folder: a call deleted from one leaves its
    audio on the other until that one's next purge, which removes folders of calls the store no longer has
    (younger folders are left: their call's row may still be on its way)."""
    from tingshuo.store import open_store

    here, there = cfg.model_copy(deep=True), cfg.model_copy(deep=True)
    there.store.audio_dir = tmp_path / "other-machine"
    store = open_store(there)
    audio = Path(a_call(store, "sess_a", SECRET))
    young = Path(store.keep_audio("sess_young", "item_1", np.zeros(160, np.float32), 16000))
    store.close()
    assert audio.parent.parent == there.store.audio_dir
    assert cli(here, "sessions", "delete", "sess_a").exit_code == 0
    assert audio.is_file()  # the command ran on the other machine: it cannot reach this folder
    hour_ago = time.time() - 2 * 3600
    os.utime(audio.parent, (hour_ago, hour_ago))
    store = open_store(there)  # this machine's next start (or daily purge)
    store.close()
    assert not audio.exists() and not audio.parent.exists() and young.is_file()


def test_calls_past_retention_are_deleted_at_the_next_start(cfg):
    from tingshuo.store import open_store

    cfg.store.retention_days, cfg.store.risk_retention_days = 30, 90
    store = open_store(cfg)
    old_audio = a_call(store, "sess_old", SECRET)
    a_call(store, "sess_new", OTHER)
    month, long_ago = time.time() - 40 * 86400, time.time() - 100 * 86400

    def age(conn, sql=cfg.store.url and "%s" or "?"):
        # 40 days since the old call (its turns too); one risk entry 100 days old
        for q, args in ((f"UPDATE sessions SET started = {sql}, ended = {sql} WHERE id = 'sess_old'", (month, month)),
                        (f"UPDATE turns SET created = {sql} WHERE session_id = 'sess_old'", (month,)),
                        (f"UPDATE risk SET created = {sql} WHERE session_id = 'sess_new'", (long_ago,))):
            conn.execute(q, args)
        if not cfg.store.url:
            conn.commit()

    store.with_connection(age)
    os.utime(old_audio, (month, month))
    stray = Path(cfg.store.audio_dir) / "sess_gone" / "item_x.wav"  # audio whose row never got written
    stray.parent.mkdir()
    stray.write_bytes(b"RIFF")
    os.utime(stray, (month, month))
    store.close()

    store = open_store(cfg)  # a server starting: retention runs before the first call
    try:
        left = {c["id"]: c for c in store.export(include_deleted=True)}
        risk = store.risk_entries()
    finally:
        store.close()
    assert list(left) == ["sess_new"]
    assert not Path(old_audio).exists() and not stray.exists()
    # risk entries have their own retention: the old call's (40 days) stay for the deployer, the 100-day one goes
    assert [(x["session_id"], x["text"]) for x in risk] == [("sess_old", SECRET)]
    if not cfg.store.url:
        assert OTHER.encode() in store_bytes(cfg)


def test_postgres_restarting_mid_call_loses_no_turn(pg_cluster, tmp_path):
    """The database goes away between two turns and comes back: the client is told once, the writes wait in
    memory in order, and every turn is stored after the restart — none lost, none twice."""
    from tingshuo.config import Settings
    from tingshuo.store import open_store

    s = Settings(cache_dir=tmp_path)
    s.store.url = pg_cluster.database()
    failures, recoveries = [], []
    store = open_store(s, on_failure=failures.append, on_recovery=lambda: recoveries.append(1))
    store.RETRY_S = 0.5
    try:
        store.open_session("sess_pg", key_label="k")
        store.add_turn("sess_pg", "u1", "user", "第一句")
        store.flush()
        pg_cluster.stop()
        for i in range(2, 6):
            store.add_turn("sess_pg", f"u{i}", "user", f"第{i}句")
        store.flush()
        assert store.failure is not None and store.backlog == 4 and len(failures) == 1, store.failure
        pg_cluster.start()
        pg_cluster.wait_ready()
        deadline = time.time() + 30
        while store.backlog and time.time() < deadline:
            time.sleep(0.2)
        turns = store.export("sess_pg")[0]["turns"]
    finally:
        store.close()
    assert store.failure is None and recoveries == [1]
    assert [t["text"] for t in turns] == ["第一句", "第2句", "第3句", "第4句", "第5句"]


def test_writes_held_at_shutdown_are_saved_privately_and_imported_later(pg_cluster, tmp_path):
    """A server stopping while the database is down writes the held turns to an owner-only file (not to the log);
    ``tingshuo sessions import`` stores them once the database is back."""
    from tingshuo.config import Settings
    from tingshuo.store import open_store

    s = Settings(cache_dir=tmp_path)
    s.store.url, s.store.audio_dir = pg_cluster.database(), tmp_path / "audio"
    store = open_store(s)
    store.open_session("sess_spill", key_label="k")
    store.flush()
    pg_cluster.stop()
    try:
        store.add_turn("sess_spill", "u1", "user", SECRET)
        store.close()
        [spill] = tmp_path.glob("unwritten-*.jsonl")
        assert stat.S_IMODE(spill.stat().st_mode) == 0o600
    finally:
        pg_cluster.start()
        pg_cluster.wait_ready()
    r = cli(s, "sessions", "import", str(spill))
    assert r.exit_code == 0 and "1 write(s) stored" in r.output, r.output
    out = json.loads(cli(s, "sessions", "export", "--session", "sess_spill").output)
    assert [t["text"] for t in out[0]["turns"]] == [SECRET]


def test_store_files_are_owner_only(tmp_path, monkeypatch):
    from tingshuo.config import Settings
    from tingshuo.store import open_store

    monkeypatch.delenv("TINGSHUO_CONFIG", raising=False)
    old = os.umask(0o022)  # a usual umask would make files world-readable
    try:
        s = Settings(cache_dir=tmp_path / "cache")
        store = open_store(s)
        a_call(store, "sess_p", OTHER)
        store.close()
    finally:
        os.umask(old)
    db = s.store_path()
    assert db.parent == tmp_path / "cache" and s.audio_dir() == tmp_path / "cache" / "unheard"
    for f in db.parent.glob("transcripts.sqlite3*"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE(s.audio_dir().stat().st_mode) == 0o700
    for f in s.audio_dir().rglob("*"):
        assert stat.S_IMODE(f.stat().st_mode) == (0o700 if f.is_dir() else 0o600), f


def test_an_existing_world_readable_store_is_tightened(tmp_path):
    from tingshuo.store.sqlite import SQLiteBackend

    p = tmp_path / "old.sqlite3"
    p.write_bytes(b"")
    os.chmod(p, 0o644)
    b = SQLiteBackend(p)
    b.connect()
    b.close()
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_a_disabled_store_keeps_nothing(tmp_path, monkeypatch):
    from tingshuo.config import Settings
    from tingshuo.store import open_store

    monkeypatch.delenv("TINGSHUO_CONFIG", raising=False)
    s = Settings(cache_dir=tmp_path / "cache", store={"enabled": False})
    assert open_store(s) is None
    assert not (tmp_path / "cache").exists()


def test_the_old_db_path_setting_still_works_with_a_warning(tmp_path, monkeypatch):
    from tingshuo.config import Settings

    monkeypatch.delenv("TINGSHUO_CONFIG", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = Settings(server={"db_path": str(tmp_path / "old.sqlite3")})
    assert s.store_path() == tmp_path / "old.sqlite3" and s.audio_dir() == tmp_path / "unheard"
    assert any(issubclass(w.category, DeprecationWarning) and "store.path" in str(w.message) for w in caught)


def test_logs_carry_no_user_text_unless_asked(caplog):
    from tingshuo.store import privacy

    try:
        privacy.configure(False)
        assert SECRET not in privacy.shown(SECRET) and str(len(SECRET)) in privacy.shown(SECRET)
        privacy.configure(True)
        assert SECRET in privacy.shown(SECRET)
    finally:
        privacy.configure(False)


def test_a_postgres_url_keeps_its_password_out_of_what_is_shown():
    from tingshuo.store.postgres import pg, redact

    assert redact("postgresql://u:s3cret@db:5432/t") == "postgresql://u:***@db:5432/t"
    assert "%s" in pg("SELECT ? FROM t") and "?" not in pg("UPDATE t SET a = ? WHERE b = ?")


# ---------------------------------------------------------------- over the wire (the server, no model loaded)
# A Realtime server on the suite's model stack (a session speaks, so it needs one); typed items and their deletion
# use no model, only the disabled store's call asks for a reply. test_load.py continues a call on a second server.

import contextlib  # noqa: E402


@contextlib.contextmanager
def server_app(s, stack, **server):
    from starlette.testclient import TestClient

    from tingshuo.server.app import create_app

    store = s.store
    s = stack.settings.model_copy(deep=True)  # the suite's models and cache, with this test's store
    s.store = store.model_copy(deep=True)
    s.server.allow_open = True  # TestClient's peer is "testclient", not a loopback address
    for k, v in server.items():
        setattr(s.server, k, v)
    with TestClient(create_app(s, stack)) as tc:
        yield tc


def _until(ws, kind: str) -> list[dict]:
    events = []
    while True:
        events.append(ws.receive_json())
        if events[-1]["type"] == kind:
            return events


def typed(ws, text: str, item_id: str) -> list[dict]:
    ws.send_json({"type": "conversation.item.create", "item": {"id": item_id, "type": "message", "role": "user",
                                                                "content": [{"type": "input_text", "text": text}]}})
    return _until(ws, "conversation.item.added")


@pytest.mark.slow
def test_an_item_deleted_over_the_wire_leaves_the_store(stack, cfg):
    """``conversation.item.delete`` from a client: the words leave the store (SQLite: the files' bytes)."""
    with server_app(cfg, stack) as tc:
        with tc.websocket_connect("/v1/realtime") as ws:
            sid = ws.receive_json()["session"]["id"]
            typed(ws, SECRET, "item_secret")
            typed(ws, OTHER, "item_other")
            tc.app.state.server.store.flush()
            if not cfg.store.url:
                assert SECRET.encode() in store_bytes(cfg)  # it was written: the test can fail
            ws.send_json({"type": "conversation.item.delete", "item_id": "item_secret"})
            assert _until(ws, "conversation.item.deleted")[-1]["item_id"] == "item_secret"
        store = tc.app.state.server.store
        store.flush()
        call = store.export(sid, include_deleted=True)[0]
    assert [(t["item_id"], t["text"], t["deleted"]) for t in call["turns"]] == [
        ("item_secret", "", 1), ("item_other", OTHER, 0)]
    if not cfg.store.url:
        raw = store_bytes(cfg)
        assert SECRET.encode() not in raw and OTHER.encode() in raw


@pytest.mark.slow
def test_with_the_store_off_a_call_works_and_nothing_is_written(stack, tmp_path, monkeypatch):
    """``store.enabled = false``: the session takes turns as usual, no file appears, /readyz says so, and
    continuing a call is refused with the reason (there is nothing to continue from)."""
    from tingshuo.config import Settings

    monkeypatch.delenv("TINGSHUO_CONFIG", raising=False)
    s = Settings(cache_dir=tmp_path / "cache", store={"enabled": False, "path": str(tmp_path / "t.sqlite3"),
                                                      "audio_dir": str(tmp_path / "audio")})
    with server_app(s, stack) as tc:
        with tc.websocket_connect("/v1/realtime") as ws:
            sid = ws.receive_json()["session"]["id"]
            added = typed(ws, SECRET, "item_1")[-1]
            assert added["item"]["content"][0]["text"] == SECRET
            ws.send_json({"type": "response.create", "response": {"output_modalities": ["text"]}})
            done = _until(ws, "response.done")[-1]["response"]
        with tc.websocket_connect(f"/v1/realtime?tingshuo_session={sid}") as ws:
            refused = ws.receive_json()
        ready = tc.get("/readyz").json()
        opts = tc.get("/v1/tingshuo/options").json()
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"], done
    assert refused["type"] == "error" and refused["error"]["code"] == "session_not_found"
    assert "store.enabled = false" in refused["error"]["message"]
    assert ready["store"] == {"failing": None, "held_writes": 0}
    assert opts["store"]["enabled"] is False
    assert not list(tmp_path.rglob("*.sqlite3*")) and not list(tmp_path.rglob("*.wav"))


@pytest.mark.slow
def test_metrics_readyz_and_logs_carry_no_user_text(stack, cfg, caplog):
    """What an operator's scraper and log collector see of a call: counts, never the words."""
    import logging

    caplog.set_level(logging.DEBUG)
    with server_app(cfg, stack) as tc:
        with tc.websocket_connect("/v1/realtime") as ws:
            ws.receive_json()
            typed(ws, SECRET, "item_1")
            ws.send_json({"type": "conversation.item.delete", "item_id": "nope"})  # an error that names an item
            _until(ws, "error")
            ws.send_text("{not json " + SECRET)  # a malformed event carrying user text
            _until(ws, "error")
            metrics, ready = tc.get("/metrics").text, tc.get("/readyz").text
    assert "tingshuo_sessions_total" in metrics  # the scrape worked
    for shown in (metrics, ready, caplog.text):
        assert SECRET not in shown and SECRET[:6] not in shown


@pytest.mark.slow
def test_deleting_a_call_through_the_api_needs_the_key_that_made_it(stack, cfg):
    """``DELETE /v1/tingshuo/sessions/{id}`` (the call page's "delete this call"): another key is refused, a live
    call must hang up first, the owner's key deletes the call, and a second delete finds nothing."""
    with server_app(cfg, stack, api_keys=["key-one", "key-two"]) as tc:
        one, two = {"Authorization": "Bearer key-one"}, {"Authorization": "Bearer key-two"}
        with tc.websocket_connect("/v1/realtime", headers=one) as ws:
            sid = ws.receive_json()["session"]["id"]
            typed(ws, SECRET, "item_1")
            live = tc.delete(f"/v1/tingshuo/sessions/{sid}", headers=one)
        anonymous = tc.delete(f"/v1/tingshuo/sessions/{sid}")
        other = tc.delete(f"/v1/tingshuo/sessions/{sid}", headers=two)
        owner = tc.delete(f"/v1/tingshuo/sessions/{sid}", headers=one)
        again = tc.delete(f"/v1/tingshuo/sessions/{sid}", headers=one)
        left = tc.app.state.server.store.export(sid, include_deleted=True)
    assert (live.status_code, live.json()["error"]["code"]) == (409, "session_live")
    assert anonymous.status_code == 401 and other.status_code == 403
    assert owner.status_code == 200 and owner.json() == {"deleted": 1}
    assert again.status_code == 404 and left == []
    if not cfg.store.url:
        assert SECRET.encode() not in store_bytes(cfg)


@pytest.mark.slow
def test_postgres_restarting_during_a_live_call_loses_nothing_the_user_said(stack, pg_cluster, tmp_path, monkeypatch):
    """The database stops in the middle of a call: the client hears once that its turns are held, the call goes
    on, and after the restart every turn is stored, in order."""
    from tingshuo.config import Settings

    monkeypatch.delenv("TINGSHUO_CONFIG", raising=False)
    s = Settings(cache_dir=tmp_path / "cache")
    s.store.url = pg_cluster.database()
    with server_app(s, stack) as tc:
        store = tc.app.state.server.store
        store.RETRY_S = 0.5
        with tc.websocket_connect("/v1/realtime") as ws:
            sid = ws.receive_json()["session"]["id"]
            typed(ws, "第一句", "item_1")
            store.flush()
            pg_cluster.stop()
            try:
                events = typed(ws, "第二句", "item_2")  # the store's error may come before or after the item
                if not any(e["type"] == "error" for e in events):
                    events += _until(ws, "error")
                told = next(e for e in events if e["type"] == "error")["error"]
                typed(ws, "第三句", "item_3")
            finally:
                pg_cluster.start()
                pg_cluster.wait_ready()
            typed(ws, "第四句", "item_4")
        deadline = time.time() + 30
        while (store.backlog or store.failure) and time.time() < deadline:
            time.sleep(0.2)
        turns = store.export(sid)[0]["turns"]
    assert told["code"] == "transcript_store_failed", told
    assert [t["text"] for t in turns] == ["第一句", "第二句", "第三句", "第四句"]
