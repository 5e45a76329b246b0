"""Fault injection for the reliability tests: real backends made to fail the way they fail in production.

- :class:`Failing` wraps a real model object; chosen methods raise (the process's TTS or ASR worker crashing on a
  call) for as long as the test says, everything else is the real model.
- :class:`FaultyProxy` is a TCP proxy in front of a real LLM server (``llama_cpp.server``): it can cut every
  streamed response after its first N words (SSE events that carry text: the endpoint dies mid-response), stop
  forwarding one after them (it stalls), or close the next N connections at once (it is restarting). The model behind it is real; only the wire
  is broken.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any


class Failing:
    """``Failing(real, "synthesize")``: calls to the named methods raise RuntimeError while ``failing`` is set."""

    def __init__(self, real: Any, *methods: str, failing: bool = True) -> None:
        self._real = real
        self._methods = set(methods)
        self.failing = failing
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if name not in self._methods:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.failing:
                raise RuntimeError(f"injected fault: {type(self._real).__name__}.{name} crashed")
            return attr(*args, **kwargs)

        return call


class FaultyProxy:
    """Forwards 127.0.0.1:<port> → the target; ``mode`` decides what happens to streamed responses.

    Only ``text/event-stream`` responses (the reply) are cut or stalled: a turn also makes short non-streaming
    calls (the emotion of the words, the end-of-turn score), and which of them met the fault used to depend on
    which pooled connection each call happened to get — the test then saw the HTTP client's timeout one run and
    the session's stall watchdog the next.

    The fault comes after ``after`` events that carry text, not after a byte count: the server sends its headers
    and an empty first event at once and the words only after its prefill, so a byte count could fall before the
    first word, and the test then met the client's read timeout during a cold prefill instead of a stall.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"  # "pass" | "cut" (close after `after` words) | "stall" (stop forwarding after them)
        self.after = 0  # SSE events with text content let through before the fault
        self.refuse = 0  # close this many new connections at once
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)
        assert self._server is not None
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def set(self, mode: str, after: int = 0, refuse: int = 0) -> None:
        self.mode, self.after, self.refuse = mode, after, refuse

    def close(self) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for t in list(self._clients):  # a stalled client sleeps for an hour: end it, not leave it pending
                t.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # ------------------------------------------------------------------ the proxy
    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        started.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._forward(reader, writer)
        finally:
            self._clients.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.refuse > 0:
            self.refuse -= 1
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        # per response, not per connection: the HTTP client keeps connections alive across calls (it does not
        # pipeline, so bytes from the client mean a new request and the response state starts over)
        state: dict = {}

        def new_response() -> None:
            state.update(mode=self.mode, after=self.after, body=b"", head=b"", streamed=None)

        new_response()

        gone = asyncio.Event()  # the client closed its side

        async def upstream() -> None:
            try:
                while data := await reader.read(65536):
                    new_response()
                    up_w.write(data)
                    await up_w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                gone.set()

        async def downstream() -> None:
            try:
                while data := await up_r.read(65536):
                    if state["streamed"] is None:  # the headers, until complete: is this response a stream?
                        state["head"] += data
                        if b"\r\n\r\n" in state["head"]:
                            headers = state["head"].split(b"\r\n\r\n", 1)[0].lower()
                            state["streamed"] = b"text/event-stream" in headers
                    if state["mode"] != "pass" and state["streamed"]:
                        sent = len(state["body"])
                        state["body"] += data
                        cut = _after_words(state["body"], state["after"])
                        if cut is not None:
                            writer.write(data[: max(0, cut - sent)])
                            await writer.drain()
                            if state["mode"] == "stall":
                                # holds the connection open and sends nothing more, until the client gives up
                                # (then the server sees the disconnect, as it would without a proxy)
                                await gone.wait()
                            return
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass

        up = asyncio.ensure_future(upstream())
        try:
            await downstream()
        finally:
            up.cancel()
            for w in (writer, up_w):
                try:
                    w.close()
                except Exception:
                    pass


_WORDS = re.compile(rb'^data: [^\n]*"content": ?"(?!")[^\n]*\n', re.M)


def _after_words(stream: bytes, n: int) -> int | None:
    """The offset just past the ``n``-th SSE event carrying text in a response so far (None: not that many yet)."""
    for i, m in enumerate(_WORDS.finditer(stream), 1):
        if i >= n:
            return m.end()
    return None if n > 0 else 0
