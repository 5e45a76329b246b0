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
from typing import Any

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tingshuo.config import Settings
from tingshuo.dialogue.persona import PERSONAS
from tingshuo.engine.stack import ModelStack
from tingshuo.server.realtime import RealtimeConnection
from tingshuo.server.metrics import CONTENT_TYPE as METRICS_TYPE
from tingshuo.server.metrics import Metrics
from tingshuo.store import Selection, TranscriptStore, open_store
from tingshuo.store.privacy import configure as configure_privacy

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


class RealtimeServer:
    """State shared by all connections: the models, the transcript store, the session counts, the metrics."""

    def __init__(self, settings: Settings, stack: ModelStack | None = None) -> None:
        self.settings = settings
        self.stack = stack
        self.store: TranscriptStore | None = None
        self.sessions: Counter[str] = Counter()
        self.connections: dict[str, RealtimeConnection] = {}
        self._closing: set[asyncio.Future[None]] = set()  # sessions winding down (held so they are not collected)
        self.metrics = Metrics()
        self.ready = False
        self._loop: asyncio.AbstractEventLoop | None = None
        if stack is not None:
            stack.observer = self.metrics.on_job

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        configure_privacy(self.settings.store.log_user_text)
        self.store = await asyncio.to_thread(open_store, self.settings, on_failure=self._store_failed,
                                             on_recovery=self._store_recovered)
        if self.stack is None:
            log.info("loading models…")
            self.stack = await asyncio.to_thread(ModelStack.load, self.settings)
            self.stack.observer = self.metrics.on_job
        self.ready = True
        if self.voice_licence() is not None:
            log.warning("the default Chinese voice is licensed for NON-COMMERCIAL use only (%s); "
                        "tts.zh_backend = \"kokoro\" uses Apache-2.0 weights", self.voice_licence())
        log.info("ready")
        try:
            yield
        finally:
            self.ready = False
            if self._closing:  # sessions still winding down write their last turns before the store closes
                await asyncio.wait(set(self._closing), timeout=10.0)
            if self.store is not None:
                self.store.close()

    def _store_failed(self, reason: str) -> None:
        """Writer thread: tell every connected client that its turns are held in memory for now."""
        msg = (f"the transcript store cannot write ({reason}); your turns are kept in memory and written as soon as "
               "it can")
        self._broadcast("transcript_store_failed", msg)

    def _store_recovered(self) -> None:
        log.info("transcript store recovered")

    def _broadcast(self, code: str, message: str) -> None:
        if self._loop is None:
            return

        def send() -> None:
            for conn in list(self.connections.values()):
                asyncio.ensure_future(conn.error(code, message, error_type="server_error"))

        self._loop.call_soon_threadsafe(send)

    def admission(self, label: str) -> tuple[str, str] | None:
        """Why a new session must be refused now (code, message), or None. Hard caps first, then load: when the
        models' queues already hold jobs longer than real time allows, another caller would slow everyone."""
        cfg = self.settings.server
        if self.sessions[label] >= cfg.max_sessions_per_key:
            return "session_limit_reached", (f"too many concurrent sessions ({cfg.max_sessions_per_key} per API key);"
                                             " close one and reconnect")
        if sum(self.sessions.values()) >= cfg.max_sessions:
            return "session_limit_reached", f"too many concurrent sessions ({cfg.max_sessions} in all); try later"
        if cfg.admit_queue_s > 0 and self.stack is not None:
            for name in ("asr", "llm", "tts"):
                w = self.stack.workers.get(name)
                wait = w.recent_wait() if w is not None else 0.0
                if wait > cfg.admit_queue_s:
                    return "server_busy", (f"the server is at capacity: {name} jobs wait {wait:.1f} s (limit "
                                           f"{cfg.admit_queue_s:.1f} s), so another call would break real time for "
                                           "everyone. Try again in a minute, or another server")
        return None

    # ------------------------------------------------------------------ HTTP
    async def page(self, request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in _WEB_FILES:
            return JSONResponse({"error": "not found"}, status_code=404)
        path = resources.files("tingshuo.web") / name
        with resources.as_file(path) as p:
            return FileResponse(p, media_type=_WEB_FILES[name], headers={"Cache-Control": "no-cache"})

    def voice_licence(self) -> str | None:
        """The default voice's licence when it restricts use (the Baker corpus: non-commercial), else None."""
        from tingshuo.tts import VOICES

        cv = VOICES.get(self.settings.tts.voice_zh)
        licence = cv.licence(self.settings.tts.zh_backend) if cv is not None else ""
        return licence if "non-commercial" in licence else None

    async def health(self, request: Request) -> Response:
        """Liveness: the process answers (a load balancer restarts it when this fails)."""
        return JSONResponse({"status": "ok", "sessions": sum(self.sessions.values())})

    async def readiness(self, request: Request) -> Response:
        """Readiness: models loaded, the LLM's breaker not open, a new session would be admitted. 503 with the
        reasons otherwise, so a load balancer sends new calls to another server (live ones stay)."""
        reasons: list[str] = []
        if not self.ready or self.stack is None:
            reasons.append("models are loading")
        else:
            for name, h in self.stack.health.items():
                if h.state == "open":
                    reasons.append(f"{name} is failing ({h.last_error})")
            refusal = self.admission("")
            if refusal is not None:
                reasons.append(refusal[1])
        body = {"ready": not reasons, "reasons": reasons, "sessions": sum(self.sessions.values()),
                "voice_licence": self.voice_licence(),
                "backends": {k: v.to_dict() for k, v in (self.stack.health.items() if self.stack else [])},
                "store": {"failing": self.store.failure if self.store else None,
                          "held_writes": self.store.backlog if self.store else 0}}
        return JSONResponse(body, status_code=200 if not reasons else 503)

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(self.stack, self.store), media_type=METRICS_TYPE)

    async def options(self, request: Request) -> Response:
        """What the call page offers in its pickers."""
        from tingshuo.tts import VOICES

        # the character voices by the names a person understands (Kokoro's own tables stay usable through the API's
        # session.update, but "jf_alpha" means nothing on a call screen)
        voices: list[str] = list(VOICES)
        zh = self.settings.tts.zh_backend
        st = self.settings.store
        return JSONResponse({"voices": voices, "default_voice": self.settings.tts.voice_zh,
                             "voice_labels": {k: v.label or v.name for k, v in VOICES.items()},
                             "voice_licences": {k: v.licence(zh) for k, v in VOICES.items()},
                             # what the call page tells a person is kept of the call (README "What is kept")
                             "store": {"enabled": st.enabled, "retention_days": st.retention_days,
                                       "keep_audio": st.keep_audio},
                             "personas": [{"key": p.key, "name": p.name, "description": p.description,
                                           "voice": p.voice} for p in PERSONAS.values()],
                             "auth": bool(self.settings.server.api_keys)})

    async def delete_call(self, request: Request) -> Response:
        """``DELETE /v1/tingshuo/sessions/{id}``: the call page's "delete this call" at hang-up. The call's turns,
        risk entries and audio are deleted, with the same key (or, on an open server, from the same address)
        that made it."""
        label, reason, status = self._authenticate(request)
        if label is None:
            return JSONResponse({"error": {"code": "invalid_api_key", "message": reason}}, status_code=status)
        sid = request.path_params["session_id"]
        if self.store is None:
            return JSONResponse({"deleted": 0, "kept": False})
        if sid in self.connections:
            return JSONResponse({"error": {"code": "session_live", "message": "hang up before deleting the call"}},
                                status_code=409)
        if self._closing:  # a call just hung up writes its last turns first; deleting before would leave them
            await asyncio.wait(set(self._closing), timeout=10.0)
        try:
            found = await asyncio.to_thread(self.store.export, sid, True)
            if not found:
                return JSONResponse({"error": {"code": "session_not_found", "message": f"no stored call {sid!r}"}},
                                    status_code=404)
            if found[0]["key_label"] != label:
                return JSONResponse({"error": {"code": "forbidden", "message": "this call was made with another "
                                               "key"}}, status_code=403)
            n = await asyncio.to_thread(self.store.delete, Selection(ids=(sid,)))
        except OSError as e:
            return JSONResponse({"error": {"code": "store_unavailable", "message": str(e)}}, status_code=503)
        return JSONResponse({"deleted": n})

    # ------------------------------------------------------------------ WebSocket
    def _authenticate(self, ws: HTTPConnection) -> tuple[str | None, str | None, int]:
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
        refusal = self.admission(label)
        resume_id = ws.query_params.get("tingshuo_session")
        resume = None
        if refusal is None and resume_id:
            resume = await asyncio.to_thread(self._stored, resume_id, label)
            if isinstance(resume, str):
                refusal, resume = ("session_not_found", resume), None
        if refusal is not None:
            code, message = refusal
            self.metrics.sessions.labels(f"refused_{code}").inc()
            self.metrics.error(code)
            await ws.send_text(json.dumps({"type": "error", "event_id": "event_limit", "error": {
                "type": "invalid_request_error", "code": code, "message": message, "param": None}}))
            # 1013 "try again later" for load; 1008 policy for caps and unknown sessions
            await ws.close(code=1013 if code == "server_busy" else 1008, reason=code)
            return
        assert self.stack is not None
        self.sessions[label] += 1
        self.metrics.sessions.labels("accepted").inc()
        self.metrics.sessions_active.inc()
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
                                  client=ws.headers.get("user-agent", ""), key_label=label,
                                  keep_all_audio=self.settings.store.keep_audio, metrics=self.metrics, resume=resume)
        self.connections[conn.id] = conn
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
            self.metrics.sessions_active.dec()
            self.connections.pop(conn.id, None)

            async def wind_down() -> None:
                await conn.close()
                outbox.put_nowait(None)
                # asyncio.wait, not wait_for: wait_for turns a cancellation into a bare CancelledError that
                # anyio's cancel scope (Starlette's test client) no longer recognises as its own
                await asyncio.wait({writer_task}, timeout=2.0)
                writer_task.cancel()
                with contextlib.suppress(Exception):
                    await ws.close()

            # The handler may be cancelled while the session winds down (a test client's cancel scope, a server
            # shutting down): the session's threads, tasks and store record are released all the same.
            closing = asyncio.ensure_future(wind_down())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            await asyncio.shield(closing)


    def _stored(self, session_id: str, label: str) -> dict[str, Any] | str:
        """A stored session to continue (any server sharing the store may have started it), or why not."""
        if session_id in self.connections:
            return f"session {session_id} is connected already"
        if self.store is None:
            return "this server keeps no calls (store.enabled = false), so none can be continued"
        try:
            found = self.store.export(session_id)
        except OSError as e:
            return f"the transcript store cannot be read now ({e}); try again in a moment"
        if not found:
            return f"no stored session {session_id!r}"
        if found[0]["key_label"] != label:
            return f"session {session_id!r} belongs to another API key"
        return found[0]


def _protocols(ws: HTTPConnection) -> list[str]:
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
        Route("/readyz", srv.readiness),
        Route("/metrics", srv.prometheus),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/v1/tingshuo/options", srv.options),
        Route("/v1/tingshuo/sessions/{session_id}", srv.delete_call, methods=["DELETE"]),
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
