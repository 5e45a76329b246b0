"""Local model servers found, not configured: Ollama and the OpenAI-compatible servers people already run
(llama.cpp's ``llama-server``, ``tingshuo llm-server``, vLLM, LM Studio), looked for on loopback only, at their
usual ports, with a short timeout (a closed port answers at once).

``--llm ollama:NAME`` (or ``server:NAME@URL``) turns one of them into the ``openai`` backend; :func:`judgements`
says which of tingshuo's probability readings such a server can serve and which fall back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

# (kind, port, the path that lists its models): the ports each server listens on by default
KNOWN: tuple[tuple[str, int, str], ...] = (
    ("ollama", 11434, "/api/tags"),
    ("llama.cpp server", 8080, "/v1/models"),
    ("tingshuo llm-server", 8011, "/v1/models"),
    ("vLLM", 8000, "/v1/models"),
    ("LM Studio", 1234, "/v1/models"),
)


@dataclass
class LocalServer:
    kind: str
    base_url: str  # the OpenAI-compatible root (…/v1), what llm.base_url takes
    models: list[str] = field(default_factory=list)


def _models(kind: str, body: object) -> list[str]:
    if not isinstance(body, dict):
        return []
    if kind == "ollama":
        return [str(m.get("name") or m.get("model")) for m in body.get("models", []) if isinstance(m, dict)]
    return [str(m.get("id")) for m in body.get("data", []) if isinstance(m, dict) and m.get("id")]


def probe(kind: str, root: str, path: str, timeout_s: float = 0.5) -> LocalServer | None:
    """The server at ``root`` if it answers like ``kind``; None otherwise (nothing there, or something else)."""
    try:
        r = httpx.get(root.rstrip("/") + path, timeout=timeout_s)
        r.raise_for_status()
        models = _models(kind, r.json())
    except (httpx.HTTPError, ValueError):
        return None
    base = root.rstrip("/") + "/v1"
    return LocalServer(kind, base, models)


def discover(*, ollama_url: str = "http://127.0.0.1:11434", timeout_s: float = 0.5,
             known: tuple[tuple[str, int, str], ...] = KNOWN) -> list[LocalServer]:
    """Servers answering on loopback. ``ollama_url``: where Ollama is (``llm.ollama_url``; loopback by default)."""
    found = []
    for kind, port, path in known:
        root = ollama_url if kind == "ollama" else f"http://127.0.0.1:{port}"
        s = probe(kind, root, path, timeout_s)
        if s is not None:
            found.append(s)
    return found


def parse_spec(spec: str, *, ollama_url: str) -> dict[str, str]:
    """``--llm`` → settings. ``ollama:NAME`` (Ollama at ``llm.ollama_url``), ``server:NAME@URL`` (any
    OpenAI-compatible server); anything else is a model for the in-process backend (bundled or pulled)."""
    if spec.startswith("ollama:"):
        name = spec[len("ollama:"):]
        if not name:
            raise ValueError("--llm ollama:NAME needs the model's name, e.g. ollama:qwen2.5:7b")
        return {"llm.backend": "openai", "llm.base_url": ollama_url.rstrip("/") + "/v1", "llm.model_name": name}
    if spec.startswith("server:"):
        name, sep, url = spec[len("server:"):].rpartition("@")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ValueError("--llm server:NAME@URL, e.g. server:qwen-local@http://127.0.0.1:8011/v1")
        return {"llm.backend": "openai", "llm.base_url": url, "llm.model_name": name}
    return {"llm.backend": "llama-cpp", "llm.model": spec}


def logprobs(base_url: str, model: str, timeout_s: float = 60.0) -> bool:
    """Whether the server returns ``top_logprobs`` for a one-token chat completion (what the safety guard's and
    the emotion reading's probabilities need)."""
    body = {"model": model, "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 5,
            "messages": [{"role": "user", "content": "Say yes."}]}
    try:
        r = httpx.post(base_url.rstrip("/") + "/chat/completions", json=body, timeout=timeout_s)
        r.raise_for_status()
        return bool(r.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"])
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
        return False


def judgements(has_logprobs: bool | None) -> str:
    """What runs where with a chat server instead of the in-process model (tingshuo.llm.base.Capabilities)."""
    guard = {True: "guard and emotion reading from its logprobs",
             False: "no logprobs: the guard fails open (logged; the output check and persona rules stay), emotion "
                    "from the voice alone",
             None: "guard and emotion need its logprobs (`tingshuo models --probe` checks)"}[has_logprobs]
    return f"end of turn from the audio only; the turn plan from JSON answers; {guard}"
