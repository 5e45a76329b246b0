"""The local GGUF model and the OpenAI-compatible backend (against llama_cpp.server on loopback)."""

from __future__ import annotations

import time

import pytest

from tingshuo.config import LlmConfig
from tingshuo.llm import LlmError
from tingshuo.llm.openai_compat import OpenAICompatChat

from conftest import free_port


SYS = "你是一个简洁的助手。"


@pytest.mark.slow
def test_local_model_streams_many_deltas(stack):
    msgs = [{"role": "system", "content": SYS}, {"role": "user", "content": "用一句话介绍一下北京。"}]
    deltas = list(stack.llm.stream(msgs, max_tokens=40, temperature=0.0))
    text = "".join(deltas)
    assert len(deltas) >= 5 and "北京" in text


@pytest.mark.slow
def test_closing_the_stream_stops_generation(stack):
    msgs = [{"role": "system", "content": SYS}, {"role": "user", "content": "从1数到100，用逗号隔开。"}]
    gen = stack.llm.stream(msgs, max_tokens=300, temperature=0.0)
    first = [next(gen) for _ in range(3)]
    gen.close()  # how fast it stops (< 0.5 s): bench/duplex.py's bounds
    assert first
    with pytest.raises(StopIteration):
        next(gen)  # nothing more comes from a closed stream
    # the model is free again at once
    assert "".join(stack.llm.stream(msgs, max_tokens=3, temperature=0.0))


@pytest.mark.slow
def test_openai_backend_streams_from_llama_cpp_server(llama_server):
    chat = OpenAICompatChat(LlmConfig(backend="openai", base_url=llama_server, model_name="qwen-local"))
    msgs = [{"role": "system", "content": SYS}, {"role": "user", "content": "Say hello in English in one short sentence."}]
    deltas = list(chat.stream(msgs, max_tokens=30, temperature=0.0))
    assert deltas and "hello" in "".join(deltas).lower()


def test_dead_endpoint_is_a_clear_error():
    chat = OpenAICompatChat(LlmConfig(backend="openai", base_url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=3))
    t = time.perf_counter()
    with pytest.raises(LlmError, match="cannot reach"):
        list(chat.stream([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0.0))
    assert time.perf_counter() - t < 10
