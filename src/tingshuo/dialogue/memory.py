"""Conversation memory within a session: the fixed system prompt plus as many recent turns as fit the budget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tingshuo.llm.base import Message


@dataclass
class Conversation:
    system_prompt: str
    turns: list[Message] = field(default_factory=list)

    def add_user(self, text: str) -> None:
        self.turns.append({"role": "user", "content": text})

    def add_assistant(self, text: str) -> None:
        self.turns.append({"role": "assistant", "content": text})

    def messages(self, count_tokens: Callable[[str], int], budget: int) -> list[Message]:
        """System prompt + the newest turns within ``budget`` tokens, always starting at a user turn.

        Dropping whole old turns (never the newest) keeps the remaining prefix stable, so the KV cache still
        covers it turn after turn until the window slides.
        """
        kept: list[Message] = []
        used = 0
        for msg in reversed(self.turns):
            cost = count_tokens(msg["content"]) + 4
            if kept and used + cost > budget:
                break
            kept.append(msg)
            used += cost
        kept.reverse()
        while len(kept) > 1 and kept[0]["role"] != "user":
            kept.pop(0)
        return [{"role": "system", "content": self.system_prompt}, *kept]
