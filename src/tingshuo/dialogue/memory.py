"""Conversation memory within a session: the fixed system prompt plus as many recent turns as fit the budget.

Every turn has an id (the Realtime API's item id), so clients can insert, delete and truncate turns by id while
the engine keeps appending to the same list: one history, no copy to keep in sync.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from tingshuo.llm.base import Message

_ids = itertools.count(1)


def new_item_id() -> str:
    return f"item_{next(_ids):06d}"


@dataclass
class Conversation:
    system_prompt: str
    turns: list[Message] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # parallel to ``turns``

    def add(self, role: str, text: str, item_id: str | None = None, after: str | None = None) -> str:
        """Append a turn (or insert it after ``after``; ``"root"`` = first); returns its id."""
        item_id = item_id or new_item_id()
        if item_id in self.ids:
            raise ValueError(f"an item with id {item_id!r} already exists")
        msg: Message = {"role": role, "content": text}  # type: ignore[typeddict-item]
        if after is None:
            self.turns.append(msg)
            self.ids.append(item_id)
        else:
            at = 0 if after == "root" else self.index(after) + 1
            self.turns.insert(at, msg)
            self.ids.insert(at, item_id)
        return item_id

    def add_user(self, text: str, item_id: str | None = None) -> str:
        return self.add("user", text, item_id)

    def add_assistant(self, text: str, item_id: str | None = None) -> str:
        return self.add("assistant", text, item_id)

    def index(self, item_id: str) -> int:
        try:
            return self.ids.index(item_id)
        except ValueError:
            raise KeyError(item_id) from None

    def get(self, item_id: str) -> Message:
        return self.turns[self.index(item_id)]

    def set_text(self, item_id: str, text: str) -> None:
        self.turns[self.index(item_id)]["content"] = text

    def remove(self, item_id: str) -> None:
        i = self.index(item_id)
        del self.turns[i], self.ids[i]

    def messages(self, count_tokens: Callable[[str], int], budget: int) -> list[Message]:
        """System prompt + the newest turns within ``budget`` tokens (after a slide, starting at a user turn).

        Dropping whole old turns (never the newest) keeps the remaining prefix stable, so the KV cache still
        covers it turn after turn until the window slides. Empty turns (an assistant turn truncated to nothing)
        are left out.
        """
        kept: list[Message] = []
        used = 0
        dropped = False
        for msg in reversed(self.turns):
            if not msg["content"]:
                continue
            cost = count_tokens(msg["content"]) + 4
            if kept and used + cost > budget:
                dropped = True
                break
            kept.append(dict(msg))  # type: ignore[arg-type]
            used += cost
        kept.reverse()
        # Only a window that slid starts at a user turn; a call's greeting stays, so the prompt scored while the
        # user speaks ([greeting]) is the prefix of the reply's ([greeting, user]) and its KV cache is reused.
        while dropped and len(kept) > 1 and kept[0]["role"] != "user":
            kept.pop(0)
        return [{"role": "system", "content": self.system_prompt}, *kept]
