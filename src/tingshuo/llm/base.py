"""The chat-model protocol: stream the reply to a list of messages, token by token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypedDict


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


def emotion_question(labels: list[str]) -> str:
    """The question every backend asks after the user's turn; the answer's first token is read over ``labels``."""
    return "用一个词说出用户此刻的情绪（" + "、".join(labels) + "）。"


class LlmError(RuntimeError):
    """The model could not answer (endpoint down, stalled, bad response); the message is meant for users."""


class ChatModel(Protocol):
    name: str

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float, prefix: str = "") -> Iterator[str]:
        """Blocking iterator of text deltas. Closing it early (``.close()``) must stop the generation.
        ``prefix``: the reply's first words, already said; the model continues after them where it can."""

    def count_tokens(self, text: str) -> int:
        """Prompt-size estimate used to keep the history inside the context window."""

    def warmup(self, system_prompt: str) -> None:
        """Prepare for a conversation with this system prompt (e.g. fill the prefix cache); may do nothing."""

    def prime(self, messages: list[Message]) -> str:
        """Prepare for prompts that start with these fixed messages and go on with a user turn (fill the prefix
        cache, from a saved state where the backend keeps one). Returns how: "cached", "loaded", "evaluated", or
        "remote" where the server manages its own cache."""

    def turn_end_probability(self, history: list[Message], user_text: str) -> float | None:
        """P(the user's words so far form a complete turn), or None where the backend cannot tell (remote APIs
        do not expose next-token probabilities of an unfinished prompt); the turn detector then uses audio only."""

    def emotion_probabilities(self, history: list[Message], user_text: str, labels: list[str]) -> dict[str, float] | None:
        """P(label) for how the user feels in ``user_text`` (after ``history``), read from the model's next-token
        distribution over the labels' first tokens; None where the backend cannot expose it."""
