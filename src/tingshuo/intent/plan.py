"""What a user turn asks the assistant to do, as the model judged it: the typed result of :mod:`.reader`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Name = Literal["chat", "sing", "sing_adapt", "sing_new", "story", "role", "role_leave", "stop", "search", "coach"]
INTENTS: tuple[Name, ...] = ("chat", "sing", "sing_adapt", "sing_new", "story", "role", "role_leave", "stop",
                             "search", "coach")


@dataclass(frozen=True)
class VoiceAsk:
    """A change to the assistant's voice the user asked for (one dimension per turn, as people ask)."""

    speed: Literal["slower", "faster"] | None = None
    volume: Literal["louder", "softer"] | None = None
    whisper: bool | None = None
    style: str | None = None  # a tts.style name ("happy", "story", …)
    dialect: str | None = None  # "东北话"; "" back to Mandarin
    reset: bool = False  # back to the normal voice
    lasting: bool = True  # False: for this reply only ("用难过的语气说一句再见")

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and not (k == "reset" and not v)}


@dataclass(frozen=True)
class Intent:
    """One turn's plan. ``addressed``: the turn asks the assistant to *do* something (an action intent or a voice
    change); a sentence that only mentions singing, a story or the time is ``chat`` and not addressed."""

    intent: Name = "chat"
    addressed: bool = False
    voice: VoiceAsk | None = None
    song: str | None = None  # the title the user named (sing, sing_adapt)
    topic: str | None = None  # what the new words or the story are about
    character: str | None = None  # who to play (role)
    query: str | None = None  # what to look up (search)
    p: float = 1.0  # the model's probability of ``intent``
    scores: dict[str, float] = field(default_factory=dict)  # P over every intent (label reading) or {}
    how: str = "none"  # "labels" (next-token probabilities), "json" (schema-constrained answer), "none" (no model)
    ms: float = 0.0
    held: tuple[str, ...] = ()  # readings the words could not be asking for, held back (tingshuo.intent.gate)

    @property
    def acts(self) -> bool:
        return self.intent != "chat"

    def to_dict(self) -> dict:
        out: dict = {"intent": self.intent, "addressed": self.addressed,
                     "voice": self.voice.to_dict() if self.voice else None}
        for k in ("song", "topic", "character", "query"):
            if getattr(self, k):
                out[k] = getattr(self, k)
        out["p"] = round(self.p, 3)
        if self.scores:
            out["scores"] = {k: round(v, 3) for k, v in sorted(self.scores.items(), key=lambda kv: -kv[1])[:3]}
        if self.held:
            out["held"] = list(self.held)
        out["how"], out["ms"] = self.how, round(self.ms)
        return out


CHAT = Intent()
