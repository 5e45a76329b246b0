"""In-process GGUF chat through llama-cpp-python (llama.cpp).

Default weights: Qwen2.5-Coder-1.5B-Instruct Q4_K_M (22 split packages, assembled once). ``Llama`` keeps the KV
cache of the previous call and reuses the longest common token prefix, so a conversation whose system prompt
stays fixed and whose history is only appended pays for the new turn only (0.38 s → 0.13 s first token,
shared/research/llm.md). One ``Llama`` object serves one conversation at a time (guarded by a lock).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from tingshuo.config import LlmConfig
from tingshuo.llm.base import LlmError, Message


def gguf_path(cfg: LlmConfig, cache_dir: Path | None = None) -> Path:
    if cfg.gguf is not None:
        p = Path(cfg.gguf).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"llm.gguf = {p} does not exist")
        return p
    from tingshuo.assets import QWEN_0_5B, QWEN_1_5B

    asset = {"qwen2.5-coder-1.5b": QWEN_1_5B, "qwen2.5-coder-0.5b": QWEN_0_5B}[cfg.model]
    return asset.ensure(cache_dir)


class LlamaCppChat:
    def __init__(self, cfg: LlmConfig, cache_dir: Path | None = None) -> None:
        from llama_cpp import Llama

        self.cfg = cfg
        path = gguf_path(cfg, cache_dir)
        self.name = f"llama-cpp:{path.name}"
        self.llm = Llama(
            model_path=str(path),
            n_ctx=cfg.n_ctx,
            n_threads=cfg.threads,
            n_threads_batch=cfg.threads,
            seed=cfg.seed if cfg.seed is not None else -1,
            verbose=False,
        )
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def warmup(self, system_prompt: str) -> None:
        """Evaluate the system prompt once so the first real turn only pays for its own tokens."""
        msgs: list[Message] = [{"role": "system", "content": system_prompt}, {"role": "user", "content": "你好"}]
        for _ in self.stream(msgs, max_tokens=1, temperature=0.0):
            pass

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float) -> Iterator[str]:
        with self._lock:
            try:
                chunks = self.llm.create_chat_completion(
                    messages=list(messages),  # type: ignore[arg-type]
                    stream=True,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    top_p=self.cfg.top_p,
                    repeat_penalty=1.1,
                )
            except ValueError as e:  # e.g. the prompt exceeds the context window
                raise LlmError(f"the local model refused the request: {e}") from e
            try:
                for chunk in chunks:
                    delta = chunk["choices"][0]["delta"].get("content")  # type: ignore[index]
                    if delta:
                        yield delta
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # stops llama.cpp's generation loop when the consumer stops early
