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


def test_a_stop_ends_a_remote_stream_that_has_stalled():
    """A server that sends its first words and then nothing: setting ``stop`` ends the stream quietly at once,
    not after the client's read timeout (60 s here), so the caller's thread is free for the next turn."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    held: list[socket.socket] = []

    def serve() -> None:
        conn, _ = srv.accept()
        held.append(conn)
        conn.recv(65536)
        event = b'data: {"choices": [{"index": 0, "delta": {"content": "\u4f60\u597d"}}]}\n\n'
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"content-length: 100000\r\n\r\n" + event)  # and then it stalls

    threading.Thread(target=serve, daemon=True).start()
    chat = OpenAICompatChat(LlmConfig(backend="openai", base_url=f"http://127.0.0.1:{srv.getsockname()[1]}/v1",
                                      timeout_s=60))
    stop = threading.Event()
    got: list[str] = []
    t = time.perf_counter()
    for delta in chat.stream([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0.0, stop=stop):
        got.append(delta)
        threading.Timer(0.3, stop.set).start()  # the session's watchdog, from another thread
    assert got == ["你好"]
    assert time.perf_counter() - t < 30  # woken by the stop, not by the 60 s read timeout
    srv.close()
    for c in held:
        c.close()


def test_every_backend_implements_the_whole_protocol_with_the_same_signatures():
    """Optional abilities are declared (``caps``), not probed: each backend has every method of ChatModel, with
    the protocol's parameters, and says through ``caps`` which of them can really answer."""
    import inspect

    from tingshuo.llm.base import Capabilities, ChatModel
    from tingshuo.llm.llamacpp import LlamaCppChat

    methods = [n for n, v in vars(ChatModel).items() if callable(v) and not n.startswith("_")]
    assert {"stream", "prime", "turn_end_probability", "label_probabilities", "complete_json",
            "complete_with_grammar"} <= set(methods)
    for backend in (LlamaCppChat, OpenAICompatChat):
        assert isinstance(backend.caps, Capabilities)
        for name in methods:
            want = list(inspect.signature(getattr(ChatModel, name)).parameters)
            assert list(inspect.signature(getattr(backend, name)).parameters) == want, (backend.__name__, name)
    assert LlamaCppChat.caps == Capabilities(prompt_scores=True, grammar=True, json_schema=True)


def test_a_chat_api_says_what_it_cannot_do():
    """The remote backend: no grammar (a clear error, and the lyrics writer asks for free text instead), no
    end-of-turn scoring of an unfinished prompt (None: the audio decides); a dead endpoint's search decision is an
    LlmError, never an AttributeError."""
    from tingshuo.search.decide import decide

    chat = OpenAICompatChat(LlmConfig(backend="openai", base_url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=2,
                                      retries=0))
    assert not chat.caps.grammar and not chat.caps.prompt_scores and chat.caps.json_schema
    with pytest.raises(LlmError, match="grammar"):
        chat.complete_with_grammar([{"role": "user", "content": "hi"}], 'root ::= "a"', max_tokens=2, temperature=0)
    assert chat.turn_end_probability([], "因为我觉得") is None
    with pytest.raises(LlmError):
        decide(chat, [], "今天北京天气怎么样")
