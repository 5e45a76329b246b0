"""Load and scale-out: fair turns on the shared model threads, admission control under real model load, the
operator's endpoints (health, readiness, Prometheus metrics), and a session continued on another server from the
shared transcript store (the session servers keep no state of their own).
"""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from realtime_client import realtime, say, until



def test_sessions_take_turns_on_a_model_thread():
    """One session queuing four jobs does not make another's one job wait behind all of them (round robin)."""
    from tingshuo.engine.workers import Worker

    w = Worker("test")
    gate, running = threading.Event(), threading.Event()
    order: list[str] = []

    def hold() -> None:
        running.set()
        gate.wait()

    busy = w.submit(hold)  # the thread is busy while everyone queues
    running.wait(5)
    a, b, c = w.lane("A"), w.lane("B"), w.lane("C")
    futs = [a.submit(order.append, f"A{i}") for i in range(4)] + [b.submit(order.append, "B0"),
                                                                   c.submit(order.append, "C0")]
    assert w.queued() == 6 and w.contended("A") and w.contended(object())
    gate.set()
    busy.result(5)
    for f in futs:
        f.result(5)
    assert order == ["A0", "B0", "C0", "A1", "A2", "A3"], order
    # a closed session's queued work is dropped, and its wait for others is what admission sees
    gate.clear()
    w.submit(gate.wait)
    dropped = [a.submit(time.sleep, 0) for _ in range(3)]
    a.shutdown(cancel_futures=True)
    gate.set()
    assert all(f.cancelled() for f in dropped)
    w.shutdown()


def test_waiting_for_a_model_thread_to_go_idle_does_not_hold_its_jobs_back():
    """``wait_idle`` (the suite drains leftover work with it) sees a busy thread, and a job put while someone
    waits still runs: the waiter must not take the wake-up meant for the worker thread."""
    from tingshuo.engine.workers import Worker

    w = Worker("test")
    assert w.wait_idle(1.0)
    gate = threading.Event()
    held = w.submit(gate.wait, 30)
    assert not w.wait_idle(0.1)  # a job running
    drainer = threading.Thread(target=w.wait_idle, args=(30.0,))
    drainer.start()
    gate.set()
    held.result(5)
    later = w.submit(lambda: "ran")  # put while the drainer waits
    assert later.result(5) == "ran"
    drainer.join(10)
    assert not drainer.is_alive() and w.wait_idle(1.0)
    w.shutdown()


@pytest.mark.slow
def test_admission_refuses_a_call_when_real_time_cannot_be_held(stack, settings, tmp_path):
    """Real TTS work from two sessions keeps one waiting on the other: a new call is refused with server_busy
    (close code 1013) and /readyz says why; once the queue has drained, calls are admitted again."""
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from tingshuo.server.app import create_app
    from tingshuo.tts import VoiceSettings

    s = settings.model_copy(deep=True)
    s.store.path, s.server.allow_open, s.server.admit_queue_s = tmp_path / "t.sqlite3", True, 0.5
    tts = stack.pool("tts")
    tts.WINDOW_S = 3.0  # this instance only: the gate reopens 3 s after the load, not 10
    text = "好的，我明白了。"  # real syntheses, short: x's first job is what holds the thread
    release = threading.Event()
    try:
        with TestClient(create_app(s, stack)) as tc:
            t0 = time.time()  # earlier tests' work on the shared models leaves the window within 3 s
            while (first := tc.get("/readyz")).status_code != 200:
                assert time.time() - t0 < 15, first.json()
                time.sleep(0.5)
            x, y = tts.lane("caller-x"), tts.lane("caller-y")
            # x's first job holds the TTS thread until the refusal has been seen: y's wait for x's work grows
            # past the 0.5 s gate on any machine (a synthesis alone may take less than that on a fast one)
            jobs = [x.submit(release.wait, 120)]
            jobs += [x.submit(stack.tts.synthesize, text, VoiceSettings(), "zh") for _ in range(2)]
            jobs.append(y.submit(stack.tts.synthesize, text, VoiceSettings(), "zh"))
            t0 = time.time()
            while (ready := tc.get("/readyz")).status_code == 200:
                assert time.time() - t0 < 15, ready.json()
                time.sleep(0.2)
            with tc.websocket_connect("/v1/realtime") as ws:
                refused = ws.receive_json()
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_json()
            release.set()
            for j in jobs:
                j.result(120)
            t0 = time.time()
            while tc.get("/readyz").status_code != 200:
                assert time.time() - t0 < 15, tc.get("/readyz").json()
                time.sleep(0.5)
            with tc.websocket_connect("/v1/realtime") as ws:
                assert ws.receive_json()["type"] == "session.created"
            metrics = tc.get("/metrics").text
    finally:
        release.set()  # never leave the shared TTS thread held, whatever failed
        del tts.WINDOW_S
    assert ready.status_code == 503 and any("tts" in r for r in ready.json()["reasons"]), ready.json()
    assert refused["type"] == "error" and refused["error"]["code"] == "server_busy", refused
    assert "try again" in refused["error"]["message"].lower()
    assert closed.value.code == 1013
    assert 'tingshuo_sessions_total{outcome="refused_server_busy"} 1.0' in metrics


@pytest.mark.slow
def test_health_readiness_and_prometheus_metrics(stack, settings, tmp_path):
    with realtime(stack, settings, tmp_path) as (tc, ws, sid):
        assert tc.get("/healthz").json()["status"] == "ok"
        ready = tc.get("/readyz").json()
        events = say(ws, "你好，今天过得怎么样？")
        ws.send_text("{not json")
        until(ws, "error")
        text = tc.get("/metrics").text
    assert ready["ready"] and ready["sessions"] == 1, ready
    assert events[-1]["response"]["status"] == "completed"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("tingshuo_sessions_active") == 1
    assert value("tingshuo_responses_total", status="completed") == 1
    for stage in ("first_audio", "llm_first_token", "tts_first_audio"):
        assert value("tingshuo_stage_seconds_count", stage=stage) == 1, stage
    assert value("tingshuo_worker_queue_seconds_count", worker="tts") >= 1
    assert value("tingshuo_worker_run_seconds_count", worker="llm") >= 1
    assert value("tingshuo_errors_total", code="invalid_json") == 1
    assert value("process_resident_memory_bytes") > 100e6


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_session_continues_on_another_server_from_the_store(stack, settings, tmp_path, backend, request):
    """Server A takes two turns and the connection drops; server B (same store, none of A's memory) continues the
    same session: the id, the conversation, and what the user said before. With PostgreSQL (a server the suite
    starts, tests/pgcluster.py) the two servers could be on different machines."""
    from starlette.testclient import TestClient

    from tingshuo.server.app import create_app

    url = request.getfixturevalue("pg_cluster").database() if backend == "postgres" else None
    with realtime(stack, settings, tmp_path, store_url=url) as (tc, ws, sid):
        say(ws, "我叫王小明，我养了一只猫，叫咪咪。", audio=False)
    s = settings.model_copy(deep=True)
    s.store.path, s.store.url, s.server.allow_open = tmp_path / "t.sqlite3", url, True
    if url:
        s.store.path = tmp_path / "elsewhere" / "t.sqlite3"  # nothing of A's on B's disk: only the database
    with TestClient(create_app(s, stack)) as other:
        with other.websocket_connect(f"/v1/realtime?tingshuo_session={sid}") as ws:
            created = ws.receive_json()
            events = say(ws, "我的猫叫什么名字？", audio=False)
        with other.websocket_connect("/v1/realtime?tingshuo_session=sess_nobody") as ws:
            refused = ws.receive_json()
        store = other.app.state.server.store
        store.flush()
        stored = store.export(sid)[0]

    assert created["session"]["id"] == sid
    answer = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert "咪咪" in answer, answer
    assert refused["error"]["code"] == "session_not_found"
    assert [t["role"] for t in stored["turns"]] == ["user", "assistant", "user", "assistant"]
    assert not (tmp_path / "elsewhere").exists()
