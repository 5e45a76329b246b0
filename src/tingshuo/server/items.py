"""What a Realtime connection keeps about its conversation's items: how each user item's content was given,
what was announced, and each assistant item being produced (what was sent, so truncate maps ms to words)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tingshuo.audio.io import StreamResampler
from tingshuo.dialogue.memory import Conversation
from tingshuo.engine.playout import heard_text
from tingshuo.server.protocol import bytes_per_second

KEEP_AUDIO_RESPONSES = 32  # replies whose audio stays retrievable / truncatable


@dataclass
class Out:
    """An assistant item being produced: what was sent, so truncate can map milliseconds to words."""

    rid: str
    item_id: str
    speak: bool
    fmt: str
    meta: dict[str, Any] = field(default_factory=dict)
    clauses: list[str] = field(default_factory=list)
    next_clause: int = 0
    transcript: list[str] = field(default_factory=list)
    audio: list[tuple[int, str]] = field(default_factory=list)  # (bytes, clause) per delta
    audio_bytes: bytearray = field(default_factory=bytearray)
    resampler: StreamResampler | None = None  # TTS rate → the client format's rate
    tts_rate: int = 0
    last_text: str = ""
    degraded: bool = False  # the voice failed: the rest comes as transcript text only


class Items:
    def __init__(self, conversation: Conversation, beta: bool) -> None:
        self.conversation, self.beta = conversation, beta
        self.announced: set[str] = set()  # user items already sent as conversation.item.added
        self.kinds: dict[str, str] = {}  # item id → "audio" | "text" (how its content was given)
        self.partial_sent: dict[str, str] = {}  # item id → transcript already sent as deltas
        self.user_audio: dict[str, np.ndarray] = {}  # item id → the user's audio (16 kHz), last replies only
        self.outs: dict[str, Out] = {}  # response id → output state (kept after done, for truncate/retrieve)
        self.by_item: dict[str, Out] = {}
        self.active: str | None = None  # the in-progress response id

    def keep_user_audio(self, item_id: str, audio: np.ndarray) -> None:
        self.user_audio[item_id] = audio
        for old in list(self.user_audio)[:-KEEP_AUDIO_RESPONSES]:
            del self.user_audio[old]

    def add_out(self, out: Out) -> None:
        self.outs[out.rid] = out
        self.by_item[out.item_id] = out
        for old in list(self.outs.values())[:-KEEP_AUDIO_RESPONSES]:
            old.audio_bytes = bytearray()  # a long call must not keep every reply's audio (~48 kB/s) forever
            old.audio = []
        self.kinds[out.item_id] = "audio" if out.speak else "text"
        self.active = out.rid

    def previous(self, item_id: str) -> str | None:
        ids = self.conversation.ids
        if item_id in ids:
            i = ids.index(item_id)
            return ids[i - 1] if i > 0 else None
        return ids[-1] if ids else None

    def item(self, item_id: str, role: str, text: str | None, status: str) -> dict[str, Any]:
        kind = self.kinds.get(item_id, "text")
        if role == "assistant":
            if kind == "audio":
                part: dict[str, Any] = {"type": "audio" if self.beta else "output_audio", "transcript": text}
            else:
                part = {"type": "text" if self.beta else "output_text", "text": text}
        elif kind == "audio":
            part = {"type": "input_audio", "transcript": text}
        else:
            part = {"type": "input_text", "text": text}
        return {"id": item_id, "object": "realtime.item", "type": "message", "role": role, "status": status,
                "content": [part]}

    @staticmethod
    def heard_text(out: Out, end_ms: float) -> str:
        """The words in the first ``end_ms`` of the item's audio: whole clauses, and the share of the clause
        being spoken, marked "…" (what a listener heard of it; the unheard rest leaves the history)."""
        bps = bytes_per_second(out.fmt)
        spans: list[tuple[str, float, float]] = []  # (clause, start s, end s) in send order
        pos = 0.0
        for n, text in out.audio:
            dur = n / bps
            if spans and spans[-1][0] == text:
                spans[-1] = (text, spans[-1][1], pos + dur)
            else:
                spans.append((text, pos, pos + dur))
            pos += dur
        return heard_text(spans, end_ms / 1000).strip()
