"""Chat models: a small protocol (``base``) and backends chosen by ``LlmConfig.backend``."""

from __future__ import annotations

from pathlib import Path

from tingshuo.config import LlmConfig
from tingshuo.llm.base import Capabilities, ChatModel, LlmError, Message

__all__ = ["Capabilities", "ChatModel", "LlmError", "Message", "load_chat_model"]


def load_chat_model(cfg: LlmConfig, cache_dir: Path | None = None) -> ChatModel:
    if cfg.backend == "llama-cpp":
        from tingshuo.llm.llamacpp import LlamaCppChat

        return LlamaCppChat(cfg, cache_dir)
    if cfg.backend == "openai":
        from tingshuo.llm.openai_compat import OpenAICompatChat

        return OpenAICompatChat(cfg)
    raise ValueError(f"unknown llm.backend {cfg.backend!r}")
