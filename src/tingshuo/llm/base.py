"""The chat-model protocol: stream the reply to a list of messages, token by token."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


def emotion_question(labels: list[str]) -> str:
    """The question every backend asks after the user's turn; the answer's first token is read over ``labels``."""
    return "用一个词说出用户此刻的情绪（" + "、".join(labels) + "）。"


class LlmError(RuntimeError):
    """The model could not answer (endpoint down, stalled, bad response); the message is meant for users."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do besides streaming a reply. Callers branch on these, never on which attributes an
    object happens to have; a method whose capability is missing still exists and answers None or raises
    :class:`LlmError`, so a new backend can say "I cannot" instead of being probed."""

    # next-token probabilities read anywhere in a prompt, including after an unfinished user turn
    # (turn_end_probability, label_probabilities, emotion_probabilities): llama.cpp in process, not a chat API
    prompt_scores: bool
    grammar: bool  # complete_with_grammar: output constrained by a GBNF grammar
    json_schema: bool  # complete_json: an object valid under a JSON schema (grammar or the server's own)


class ChatModel(Protocol):
    name: str
    caps: Capabilities

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float, prefix: str = "",
               stop: threading.Event | None = None, avoid: Sequence[str] = ()) -> Iterator[str]:
        """Blocking iterator of text deltas. Closing it early (``.close()``) must stop the generation.
        ``prefix``: the reply's first words, already said; the model continues after them where it can.
        ``stop``: once set, the iterator ends soon, even from inside a blocking wait for the next delta (a remote
        endpoint that stalls would otherwise hold the caller's thread until its read timeout).
        ``avoid``: texts the reply should not copy long runs from (its previous replies); a backend without
        token-level control may ignore it."""

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

    def label_probabilities(self, messages: list[Message], labels: list[str], *,
                            answer: str | None = None) -> dict[str, float] | None:
        """P over ``labels`` as the first token of the answer to ``messages`` (labels start with distinct
        tokens), or as the next token after ``answer``, the answer so far; None where the backend gives no token
        probabilities."""

    def complete_json(self, messages: list[Message], schema: dict, *, max_tokens: int = 48) -> dict:
        """An answer that is a JSON object valid under ``schema``; LlmError when none came back."""

    def complete_with_grammar(self, messages: list[Message], grammar: str, *, max_tokens: int,
                              temperature: float) -> str:
        """A whole answer matching the GBNF ``grammar``; LlmError where ``caps.grammar`` is False."""
