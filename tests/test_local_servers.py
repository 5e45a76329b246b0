"""Local model servers found, not configured: `tingshuo models` lists Ollama (and OpenAI-compatible servers) on
loopback, and `--llm ollama:NAME` makes one the reply model. Ollama itself is not installable from a package
registry, so a stand-in answers as Ollama does (``/api/tags``; ``/v1/*`` forwarded to a real ``llama_cpp.server``
over the bundled GGUF); the session server talks to it as it would to Ollama.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from realtime_client import realtime, say


class OllamaStandIn:
    """``/api/tags`` lists ``models``; ``/v1/…`` is forwarded (streamed) to ``upstream``, or 404 without one."""

    def __init__(self, models: list[str], upstream: str | None = None) -> None:
        import httpx
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        self.seen: list[tuple[str, str | None]] = []  # (path, the model a request asked for)

        async def tags(request: Request) -> Response:
            return JSONResponse({"models": [{"name": m, "model": m, "size": 1} for m in models]})

        async def forward(request: Request) -> Response:
            body = await request.body()
            model = json.loads(body).get("model") if body else None
            self.seen.append((request.url.path, model))
            if upstream is None:
                return JSONResponse({"error": "no such route"}, status_code=404)
            client = httpx.AsyncClient(timeout=None)
            url = upstream.rstrip("/") + request.url.path.removeprefix("/v1")
            resp = await client.send(client.build_request(request.method, url, content=body,
                                                          headers={"content-type": "application/json"}), stream=True)

            async def chunks():
                try:
                    async for c in resp.aiter_raw():
                        yield c
                finally:
                    await resp.aclose()
                    await client.aclose()

            return StreamingResponse(chunks(), status_code=resp.status_code,
                                     media_type=resp.headers.get("content-type"))

        app = Starlette(routes=[Route("/api/tags", tags),
                                Route("/v1/{path:path}", forward, methods=["GET", "POST"])])
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "OllamaStandIn":
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            assert time.time() - t0 < 20, "the Ollama stand-in did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_a_local_ollama_is_found_with_its_models():
    from tingshuo.llm.servers import discover

    with OllamaStandIn(["qwen2.5:7b", "llama3.2:3b"]) as ollama:
        found = discover(ollama_url=ollama.url, known=(("ollama", 0, "/api/tags"),))
    assert [(s.kind, s.base_url, s.models) for s in found] == [
        ("ollama", f"{ollama.url}/v1", ["qwen2.5:7b", "llama3.2:3b"])]
    assert discover(ollama_url="http://127.0.0.1:9", known=(("ollama", 0, "/api/tags"),)) == []  # nothing there


def test_one_flag_names_backend_and_model(monkeypatch):
    from typer.testing import CliRunner

    from tingshuo.cli import app
    from tingshuo.cli.common import settings_from

    monkeypatch.delenv("TINGSHUO_CONFIG", raising=False)
    monkeypatch.setenv("TINGSHUO_LLM__OLLAMA_URL", "http://127.0.0.1:7777")
    s = settings_from(llm="ollama:qwen2.5:7b")
    assert (s.llm.backend, s.llm.base_url, s.llm.model_name) == ("openai", "http://127.0.0.1:7777/v1", "qwen2.5:7b")
    s = settings_from("http://gpu-box:11434/v1", llm="ollama:qwen2.5:7b")  # --llm-url wins for the URL
    assert (s.llm.base_url, s.llm.model_name) == ("http://gpu-box:11434/v1", "qwen2.5:7b")
    s = settings_from(llm="server:qwen-local@http://127.0.0.1:8011/v1")
    assert (s.llm.backend, s.llm.base_url, s.llm.model_name) == ("openai", "http://127.0.0.1:8011/v1", "qwen-local")
    s = settings_from(llm="qwen2.5-coder-0.5b")
    assert (s.llm.backend, s.llm.model) == ("llama-cpp", "qwen2.5-coder-0.5b")
    both = CliRunner().invoke(app, ["respond", "--text", "hi", "--llm", "ollama:x", "--llm-model",
                                    "qwen2.5-coder-0.5b"])
    assert both.exit_code != 0 and "not both" in both.output
    bad = CliRunner().invoke(app, ["respond", "--text", "hi", "--llm", "server:nourl"])
    assert bad.exit_code != 0 and "server:NAME@URL" in bad.output


@pytest.mark.slow
def test_ollama_found_listed_and_answering_a_call(llama_server, stack, settings, tmp_path, monkeypatch):
    """`tingshuo models --probe` lists the stand-in's model with the flag to use it and what its logprobs allow;
    a session server configured by `--llm ollama:qwen-local` answers a typed turn through it."""
    from tingshuo.cli.common import settings_from
    from tingshuo.engine.stack import ModelStack
    from tingshuo.llm.openai_compat import OpenAICompatChat

    with OllamaStandIn(["qwen-local"], upstream=llama_server) as ollama:
        env = {**os.environ, "TINGSHUO_LLM__OLLAMA_URL": ollama.url}
        env.pop("TINGSHUO_CONFIG", None)
        listed = subprocess.run([sys.executable, "-m", "tingshuo.cli", "models", "--probe"], capture_output=True,
                                text=True, env=env, timeout=300)
        monkeypatch.delenv("TINGSHUO_CONFIG", raising=False)
        monkeypatch.setenv("TINGSHUO_LLM__OLLAMA_URL", ollama.url)
        s = settings_from(llm="ollama:qwen-local")
        remote = ModelStack(s, asr=stack.asr, llm=OpenAICompatChat(s.llm), tts=stack.tts, turn=stack.turn)
        with realtime(remote, s, tmp_path) as (tc, ws, sid):
            events = say(ws, "What is the capital of France? Answer in one sentence.", audio=False)
    assert listed.returncode == 0, listed.stderr[-500:]
    out = listed.stdout.split("model servers on this machine")[1]
    assert "ollama" in out and f"{ollama.url}/v1" in out and "--llm ollama:qwen-local" in out, out
    assert "guard and emotion reading from its logprobs" in out, out
    answer = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert "Paris" in answer, answer
    assert ("/v1/chat/completions", "qwen-local") in ollama.seen, ollama.seen


@pytest.mark.slow
def test_a_big_reply_model_with_the_small_one_judging(llama_server, settings, monkeypatch):
    """``llm.judge_model``: replies come from the chat server (here the stand-in for Ollama), the turn plan, the
    guard and the end-of-turn reading from the bundled model in process — with the probabilities a chat API
    cannot give, so the end of an unfinished sentence is still told from a finished one."""
    from tingshuo.cli.common import run_turn
    from tingshuo.engine import ModelStack
    from tingshuo.engine.session import Session

    with OllamaStandIn(["qwen-local"], upstream=llama_server) as ollama:
        s = settings.model_copy(deep=True)
        s.llm.backend, s.llm.base_url, s.llm.model_name = "openai", f"{ollama.url}/v1", "qwen-local"
        s.llm.judge_model = "qwen2.5-coder-1.5b"
        stack = ModelStack.load(s, asr=False, tts=False)
        assert stack.llm.name.startswith("openai:qwen-local@") and not stack.llm.caps.prompt_scores
        assert stack.judge.name.startswith("llama-cpp:") and stack.judge.caps.prompt_scores
        assert stack.guard.llm.name.startswith("llama-cpp:") and stack.planner.llm.name.startswith("llama-cpp:")
        done = stack.judge.turn_end_probability([], "你能给我讲个故事吗")
        unfinished = stack.judge.turn_end_probability([], "帮我订一张明天去北京的")
        import asyncio

        async def turn() -> dict:
            session = Session(stack, speak=False)
            try:
                return await run_turn(session, audio=None, text="What is the capital of France? One sentence.")
            finally:
                await session.close()

        result = asyncio.run(turn())
    assert done > 0.3 > 0.05 > unfinished, (done, unfinished)
    assert "Paris" in result["reply_text"], result
    assert ("/v1/chat/completions", "qwen-local") in ollama.seen  # the reply came from the server
