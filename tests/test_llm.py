"""The local GGUF model and the OpenAI-compatible backend (against llama_cpp.server on loopback)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from tingshuo.config import LlmConfig
from tingshuo.llm import LlmError
from tingshuo.llm.openai_compat import OpenAICompatChat

pytestmark = pytest.mark.slow

SYS = "你是一个简洁的助手。"


def test_local_model_streams_many_deltas(stack):
    msgs = [{"role": "system", "content": SYS}, {"role": "user", "content": "用一句话介绍一下北京。"}]
    deltas = list(stack.llm.stream(msgs, max_tokens=40, temperature=0.0))
    text = "".join(deltas)
    assert len(deltas) >= 5 and "北京" in text


def test_closing_the_stream_stops_generation(stack):
    msgs = [{"role": "system", "content": SYS}, {"role": "user", "content": "从1数到100，用逗号隔开。"}]
    gen = stack.llm.stream(msgs, max_tokens=300, temperature=0.0)
    first = [next(gen) for _ in range(3)]
    t = time.perf_counter()
    gen.close()
    assert time.perf_counter() - t < 0.5 and first
    # the model is free again at once
    assert "".join(stack.llm.stream(msgs, max_tokens=3, temperature=0.0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(settings):
    from tingshuo.llm.llamacpp import gguf_path

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path(settings.llm, settings.cache_dir)),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2",
         "--model_alias", "qwen-local"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_openai_backend_streams_from_llama_cpp_server(llama_server):
    chat = OpenAICompatChat(LlmConfig(backend="openai", base_url=llama_server, model_name="qwen-local"))
    msgs = [{"role": "system", "content": SYS}, {"role": "user", "content": "Say hello in English in one short sentence."}]
    deltas = list(chat.stream(msgs, max_tokens=30, temperature=0.0))
    assert deltas and "hello" in "".join(deltas).lower()


def test_dead_endpoint_is_a_clear_error():
    chat = OpenAICompatChat(LlmConfig(backend="openai", base_url=f"http://127.0.0.1:{_free_port()}/v1", timeout_s=3))
    t = time.perf_counter()
    with pytest.raises(LlmError, match="cannot reach"):
        list(chat.stream([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0.0))
    assert time.perf_counter() - t < 10
