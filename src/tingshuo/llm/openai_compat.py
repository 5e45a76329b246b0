"""Any OpenAI-compatible ``/v1/chat/completions`` server with ``stream: true`` (llama.cpp server,
``llama_cpp.server``, vLLM, Ollama, hosted APIs): the scale-out path for bigger models.

Speaks SSE over httpx. Before the first token, a refused connection, a dropped one, HTTP 429 or a 5xx is retried
``retries`` times with exponential backoff and jitter (the server may be restarting or busy); after it, nothing is
retried (the words already went out) and any failure becomes an :class:`LlmError` with a readable message. A stall
longer than ``timeout_s`` between bytes is such a failure, never retried. A caller's ``stop`` ends a stream
at once, even while the server sends nothing: the connection's socket is shut down (see :func:`_abort_on`).
"""

from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx

from tingshuo.config import LlmConfig
from tingshuo.llm.base import Capabilities, LlmError, Message, emotion_question

_RETRY_STATUS = {429, 500, 502, 503, 504}  # overloaded or restarting: worth another try before the first token


def _backoff(attempt: int, retry_after: str | None = None) -> None:
    """Exponential backoff with jitter (0.3 s, 0.6 s, 1.2 s … capped at 4 s); a server's Retry-After (≤ 4 s) wins."""
    delay = min(4.0, 0.3 * 2**attempt) * (0.75 + 0.5 * random.random())
    if retry_after:
        try:
            delay = min(4.0, max(0.0, float(retry_after)))
        except ValueError:
            pass
    time.sleep(delay)


@contextmanager
def _abort_on(stop: threading.Event | None, resp: httpx.Response) -> Iterator[None]:
    """While inside, ``stop`` being set shuts the response's socket down, which wakes a read blocked on it.

    httpx has no way to cancel a blocking read from another thread (closing the response there does not wake
    it); a shut-down socket does, and the read then fails at once. The socket is httpcore's documented
    ``network_stream`` response extension."""
    if stop is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not stop.wait(0.1):
            if done.is_set():
                return  # the stream ended on its own
        if done.is_set():
            return  # stopped after it ended: the connection may serve the next request, leave it be
        stream = resp.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            else:
                resp.close()
        except (OSError, RuntimeError):
            pass  # already closed: the read has ended anyway

    watcher = threading.Thread(target=watch, name="llm-stream-abort", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()


class OpenAICompatChat:
    caps = Capabilities(prompt_scores=False, grammar=False, json_schema=True)

    def __init__(self, cfg: LlmConfig) -> None:
        self.cfg = cfg
        self.name = f"openai:{cfg.model_name}@{cfg.base_url}"
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self.client = httpx.Client(
            base_url=cfg.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout_s, connect=min(5.0, cfg.timeout_s)),
        )
        self._json_form: str | None = None  # the response_format dialect this endpoint took (complete_json)

    def count_tokens(self, text: str) -> int:
        # The server's tokenizer is not reachable through the chat API; ~1 token per Han character or 4 Latin chars.
        han = sum(1 for c in text if "\u4e00" <= c <= "\u9fff")
        return han + (len(text) - han) // 4 + 1

    def warmup(self, system_prompt: str) -> None:
        """Nothing to prepare locally; the server manages its own cache."""

    def prime(self, messages: list[Message]) -> str:
        """Nothing to prepare locally; the server manages its own cache."""
        return "remote"

    def turn_end_probability(self, history: list[Message], user_text: str) -> float | None:
        """Chat endpoints give no next-token distribution for an open user turn: audio-only end of turn."""
        return None

    def label_probabilities(self, messages: list[Message], labels: list[str], *,
                            answer: str | None = None) -> dict[str, float] | None:
        """P over ``labels`` from one answer token and its ``top_logprobs`` (llama.cpp server, vLLM and OpenAI
        return them); None when the endpoint gives no logprobs or fails, or when ``answer`` asks to continue a
        partial answer (chat APIs cannot be made to: the turn plan uses its JSON path there)."""
        if answer is not None:
            return None
        body = {"model": self.cfg.model_name, "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 20,
                "messages": messages}
        try:
            resp = self._post(body)
            top = resp.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
            return None
        scores = {label: 0.0 for label in labels}
        for entry in top:
            tok = entry.get("token", "")
            for label in labels:
                if tok and label.startswith(tok):
                    scores[label] += math.exp(entry.get("logprob", -100.0))
        total = sum(scores.values())
        return {k: v / total for k, v in scores.items()} if total > 0 else None

    def emotion_probabilities(self, history: list[Message], user_text: str, labels: list[str]) -> dict[str, float] | None:
        """The same question as the local backend; None without logprobs: the emotion rests on the voice alone."""
        q = emotion_question(labels)
        return self.label_probabilities([*history, {"role": "user", "content": user_text}, {"role": "system", "content": q}],
                                        labels)

    def complete_json(self, messages: list[Message], schema: dict, *, max_tokens: int = 48) -> dict:
        """A JSON object under ``schema``, through ``response_format``. OpenAI, vLLM and llama.cpp's own server
        take ``{"type": "json_schema", …}``; llama-cpp-python's server (0.3.x) refuses it ("Input should be 'text'
        or 'json_object'") and takes ``{"type": "json_object", "schema": …}``. The first form is tried, and when
        the endpoint refuses the format the second is used from then on."""
        forms = [self._json_form] if self._json_form else ["json_schema", "json_object"]
        for form in forms:
            fmt = ({"type": "json_schema", "json_schema": {"name": "decision", "schema": schema}}
                   if form == "json_schema" else {"type": "json_object", "schema": schema})
            body = {"model": self.cfg.model_name, "max_tokens": max_tokens, "temperature": 0, "messages": messages,
                    "response_format": fmt}
            probing = self._json_form is None and form != forms[-1]
            try:
                resp = self._post(body, retries=0 if probing else None)
            except httpx.HTTPStatusError as e:
                if probing and "response_format" in e.response.text:
                    continue  # this server speaks the other dialect
                raise LlmError(f"the model gave no valid JSON decision: {e}") from e
            except httpx.HTTPError as e:
                raise LlmError(f"the model gave no valid JSON decision: {e}") from e
            self._json_form = form
            try:
                return json.loads(resp.json()["choices"][0]["message"]["content"])
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise LlmError(f"the model gave no valid JSON decision: {e}") from e
        raise LlmError("the endpoint took no JSON response_format")

    def complete_with_grammar(self, messages: list[Message], grammar: str, *, max_tokens: int,
                              temperature: float) -> str:
        """Chat APIs take no GBNF grammar (``caps.grammar`` is False): callers ask for free text instead."""
        raise LlmError(f"{self.name} cannot constrain its output by a grammar")

    def _post(self, body: dict, retries: int | None = None) -> httpx.Response:
        """A non-streaming call, retried like a stream's start (refused, dropped, timed out, 429, 5xx);
        ``retries``: instead of the configured number (0 for a probe of what the server accepts)."""
        retries = self.cfg.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                resp = self.client.post("/chat/completions", json=body)
                if resp.status_code in _RETRY_STATUS and attempt < retries:
                    _backoff(attempt, resp.headers.get("retry-after"))
                    continue
                resp.raise_for_status()
                return resp
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):  # a stall is not retried
                if attempt == retries:
                    raise
                _backoff(attempt)
        raise AssertionError("unreachable")

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float, prefix: str = "",
               stop: threading.Event | None = None, avoid: Sequence[str] = ()) -> Iterator[str]:
        """``avoid`` is not used: a chat API takes no logits processor (the bigger models it serves copy less).
        ``prefix`` (the reply's start, already said) cannot be pre-filled through every server's chat API;
        the caller's note says how the reply begins instead. Once ``stop`` is set the stream ends quietly, also
        when the server has stalled (its read would otherwise wait ``timeout_s``)."""
        body = {
            "model": self.cfg.model_name,
            "messages": list(messages),
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": self.cfg.top_p,
        }
        retries = self.cfg.retries

        def stopped() -> bool:
            """The caller stopped the stream (its socket shut down for that): whatever failed, not a failure."""
            return stop is not None and stop.is_set()

        for attempt in range(retries + 1):
            sent = False  # once a token went out, a retry would repeat it: failures after that are final
            try:
                with self.client.stream("POST", "/chat/completions", json=body) as resp:
                    if resp.status_code != 200:
                        detail = resp.read().decode("utf-8", "replace")[:300]
                        if resp.status_code in _RETRY_STATUS and attempt < retries:
                            _backoff(attempt, resp.headers.get("retry-after"))
                            continue
                        raise LlmError(f"LLM endpoint {self.cfg.base_url} answered HTTP {resp.status_code}: {detail}")
                    with _abort_on(stop, resp):
                        for delta in self._events(resp):
                            if stopped():
                                return
                            sent = True
                            yield delta
                return
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as e:
                if stopped():
                    return
                if sent or attempt == retries:
                    if sent:
                        raise LlmError(f"the LLM endpoint {self.cfg.base_url} failed mid-response: {e}") from e
                    raise LlmError(f"cannot reach the LLM endpoint {self.cfg.base_url}: {e}") from e
                _backoff(attempt)
            except httpx.TimeoutException as e:  # not retried: a stalled server holds the LLM thread meanwhile
                if stopped():
                    return
                raise LlmError(f"the LLM endpoint {self.cfg.base_url} stalled for more than "
                               f"{self.cfg.timeout_s:.0f} s") from e
            except httpx.HTTPError as e:
                if stopped():
                    return
                raise LlmError(f"the LLM endpoint {self.cfg.base_url} failed mid-response: {e}") from e

    @staticmethod
    def _events(resp: httpx.Response) -> Iterator[str]:
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except json.JSONDecodeError as e:
                raise LlmError(f"the LLM endpoint sent malformed data: {data[:120]!r}") from e
            if "error" in event:
                raise LlmError(f"the LLM endpoint reported an error: {event['error']}")
            for choice in event.get("choices", []):
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    yield delta
