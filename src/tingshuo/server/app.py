"""``tingshuo serve``: the call page at ``/`` and the OpenAI-Realtime-compatible WebSocket at ``/v1/realtime``.

Starlette on uvicorn (websockets transport). One :class:`~tingshuo.engine.stack.ModelStack` is loaded at start-up
and shared by every call; each connection gets its own engine session, configuration and conversation.

Auth: ``server.api_keys`` as ``Authorization: Bearer KEY`` (the SDK) or the ``openai-insecure-api-key.KEY``
WebSocket subprotocol (browsers cannot set headers). Without keys the server is open, which it only allows on a
loopback address unless ``server.allow_open``. A refused handshake is an HTTP 401/403 with a JSON reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tingshuo.config import Settings
from tingshuo.dialogue.persona import PERSONAS
from tingshuo.engine.stack import ModelStack
from tingshuo.server.realtime import RealtimeConnection
from tingshuo.server.store import TranscriptStore

log = logging.getLogger("tingshuo.server")
KEY_PROTOCOL = "openai-insecure-api-key."
# uvicorn's websockets (legacy) protocol: its sans-io successor logs "ASGI callable returned without completing
# handshake" as an ERROR for every refused key, although the client correctly gets the 401 we send.
WS_IMPL = "websockets"
_WEB_FILES = {"index.html": "text/html", "app.js": "text/javascript", "capture-worklet.js": "text/javascript",
              "style.css": "text/css"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def db_path(settings: Settings) -> Path:
    return settings.server.db_path or settings.cache_dir / "transcripts.sqlite3"


class RealtimeServer:
    """State shared by all connections: the models, the transcript store, the session counts."""

    def __init__(self, settings: Settings, stack: ModelStack | None = None) -> None:
        self.settings = settings
        self.stack = stack
        self.store: TranscriptStore | None = None
        self.sessions: Counter[str] = Counter()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.store = TranscriptStore(db_path(self.settings))
        if self.stack is None:
            log.info("loading models…")
            self.stack = await asyncio.to_thread(ModelStack.load, self.settings)
        log.info("ready")
        try:
            yield
        finally:
            self.store.close()

    # ------------------------------------------------------------------ HTTP
    async def page(self, request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in _WEB_FILES:
            return JSONResponse({"error": "not found"}, status_code=404)
        path = resources.files("tingshuo.web") / name
        with resources.as_file(path) as p:
            return FileResponse(p, media_type=_WEB_FILES[name], headers={"Cache-Control": "no-cache"})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "sessions": sum(self.sessions.values())})

    async def options(self, request: Request) -> Response:
        """What the call page offers in its pickers."""
        from tingshuo.tts import VOICES

        voices: list[str] = list(VOICES)  # character voices (tingshuo voices), then Kokoro's own tables
        if self.stack is not None and self.stack.tts is not None:
            with contextlib.suppress(Exception):
                voices += list(self.stack.tts.backend("zh").voices())
        return JSONResponse({"voices": voices, "default_voice": self.settings.tts.voice_zh,
                             "personas": [{"key": p.key, "name": p.name, "description": p.description,
                                           "voice": p.voice} for p in PERSONAS.values()],
                             "auth": bool(self.settings.server.api_keys)})

    # ------------------------------------------------------------------ WebSocket
    def _authenticate(self, ws: WebSocket) -> tuple[str | None, str | None, int]:
        """(key label, refusal reason, HTTP status)."""
        cfg = self.settings.server
        key = None
        auth = ws.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        for proto in _protocols(ws):
            if proto.startswith(KEY_PROTOCOL):
                key = proto[len(KEY_PROTOCOL):]
        if cfg.api_keys:
            if key is None:
                return None, "missing API key: send 'Authorization: Bearer KEY'", 401
            if key not in cfg.api_keys:
                return None, "invalid API key", 401
            return "key:" + hashlib.sha256(key.encode()).hexdigest()[:10], None, 200
        host = ws.client.host if ws.client else ""
        if not cfg.allow_open and not is_loopback(host):
            return None, "this server has no API keys and only accepts connections from this machine", 403
        return f"open:{host}", None, 200

    async def realtime(self, ws: WebSocket) -> None:
        cfg = self.settings.server
        label, reason, status = self._authenticate(ws)
        if label is None:
            await _deny(ws, status, "invalid_api_key" if status == 401 else "forbidden", reason or "")
            return
        offered = [p for p in _protocols(ws) if not p.startswith(KEY_PROTOCOL)]
        await ws.accept(subprotocol="realtime" if "realtime" in offered else (offered[0] if offered else None))
        if self.sessions[label] >= cfg.max_sessions_per_key or sum(self.sessions.values()) >= cfg.max_sessions:
            limit = (f"{cfg.max_sessions_per_key} per API key" if self.sessions[label] >= cfg.max_sessions_per_key
                     else f"{cfg.max_sessions} in all")
            await ws.send_text(json.dumps({"type": "error", "event_id": "event_limit", "error": {
                "type": "invalid_request_error", "code": "session_limit_reached",
                "message": f"too many concurrent sessions ({limit}); close one and reconnect", "param": None}}))
            await ws.close(code=1008, reason="session limit reached")
            return
        assert self.stack is not None
        self.sessions[label] += 1
        beta = "realtime=v1" in ws.headers.get("openai-beta", "")
        outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def send(ev: dict[str, Any]) -> None:
            if outbox.qsize() > cfg.max_outbox_events:
                # the client stopped reading (paced audio alone is 25 events/s): drop it rather than buffer forever
                if not writer_task.done():
                    writer_task.cancel()
                    asyncio.ensure_future(ws.close(code=1008, reason="the client is not reading its events"))
                return
            outbox.put_nowait(ev)

        async def writer() -> None:
            while (ev := await outbox.get()) is not None:
                await ws.send_text(json.dumps(ev, ensure_ascii=False))

        conn = RealtimeConnection(self.stack, cfg, send, beta=beta, store=self.store,
                                  model=ws.query_params.get("model", "tingshuo"),
                                  client=ws.headers.get("user-agent", ""), key_label=label)
        writer_task = asyncio.create_task(writer())
        try:
            await conn.start()
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                data = msg.get("text")
                await conn.handle(data if data is not None else (msg.get("bytes") or b""))
                if writer_task.done():  # the client stopped reading
                    break
        except WebSocketDisconnect:
            pass
        finally:
            self.sessions[label] -= 1
            await conn.close()
            outbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer_task, 2.0)
            writer_task.cancel()
            with contextlib.suppress(Exception):
                await ws.close()


def _protocols(ws: WebSocket) -> list[str]:
    return [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


async def _deny(ws: WebSocket, status: int, code: str, message: str) -> None:
    body = {"error": {"type": "invalid_request_error", "code": code, "message": message}}
    try:
        await ws.send_denial_response(JSONResponse(body, status_code=status))
    except RuntimeError:  # a server without the denial-response extension: a plain 403
        await ws.close(code=1008, reason=message[:120])


def create_app(settings: Settings, stack: ModelStack | None = None) -> Starlette:
    srv = RealtimeServer(settings, stack)
    app = Starlette(routes=[
        Route("/", srv.page),
        Route("/static/{name}", srv.page),
        Route("/healthz", srv.health),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/v1/tingshuo/options", srv.options),
        WebSocketRoute("/v1/realtime", srv.realtime),
    ], lifespan=srv.lifespan)
    app.state.server = srv
    return app


def check_bind(settings: Settings) -> str | None:
    """Refuse an open server on a public address (a reason), unless configured so."""
    cfg = settings.server
    if not cfg.api_keys and not cfg.allow_open and not is_loopback(cfg.host):
        return (f"refusing to serve on {cfg.host} without API keys: anyone who reaches the port could use it. "
                "Set server.api_keys (TINGSHUO_SERVER__API_KEYS='[\"KEY\"]') or server.allow_open = true")
    return None


def serve(settings: Settings, stack: ModelStack | None = None) -> None:
    import uvicorn

    cfg = settings.server
    uvicorn.run(create_app(settings, stack), host=cfg.host, port=cfg.port, ws=WS_IMPL,
                ws_max_size=cfg.max_frame_bytes, log_level="info", timeout_graceful_shutdown=3,
                ssl_certfile=str(cfg.ssl_certfile) if cfg.ssl_certfile else None,
                ssl_keyfile=str(cfg.ssl_keyfile) if cfg.ssl_keyfile else None)
