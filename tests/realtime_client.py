"""A Realtime client for the server tests that drive the ASGI app in-process (starlette's TestClient)."""

from __future__ import annotations

import contextlib
import time


@contextlib.contextmanager
def realtime(stack, settings, tmp_path, store_url: str | None = None, **server):
    """A Realtime app on ``stack`` (TestClient: the ASGI app over an in-process socket) and one connected client.
    ``store_url``: a PostgreSQL store instead of the SQLite file in ``tmp_path``."""
    from starlette.testclient import TestClient

    from tingshuo.server.app import create_app

    s = settings.model_copy(deep=True)
    s.store.path, s.store.url = tmp_path / "t.sqlite3", store_url
    s.server.allow_open = True  # TestClient's peer is "testclient", not a loopback address
    for k, v in server.items():
        setattr(s.server, k, v)
    with TestClient(create_app(s, stack)) as tc:
        with tc.websocket_connect("/v1/realtime") as ws:
            created = ws.receive_json()
            assert created["type"] == "session.created"
            yield tc, ws, created["session"]["id"]


def until(ws, kind: str, limit_s: float = 180.0) -> list[dict]:
    events, t0 = [], time.time()
    while True:
        ev = ws.receive_json()
        events.append(ev)
        if ev["type"] == kind:
            return events
        assert time.time() - t0 < limit_s, f"no {kind} in {limit_s} s: {[e['type'] for e in events[-8:]]}"


def say(ws, text: str, *, audio: bool = True) -> list[dict]:
    """A typed user turn and a response to it; the events up to response.done."""
    ws.send_json({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                                "content": [{"type": "input_text", "text": text}]}})
    ws.send_json({"type": "response.create", "response": {"output_modalities": ["audio" if audio else "text"]}})
    return until(ws, "response.done")


