"""The turn plan: what one user turn means beyond its words, frozen once understood.

The understanding step (:mod:`tingshuo.engine.understand`) makes it; the dialogue state applies it when the turn
is taken (:meth:`tingshuo.engine.state.DialogueState.accept`); the reply is configured from it
(:func:`tingshuo.response.configure`). Frozen, so a speculative reply and the commit that releases it can share
one plan without either changing it under the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from tingshuo.coach.pronunciation import Report
from tingshuo.dialogue.emotion import EmotionReading
from tingshuo.dialogue.persona import Persona, RoleRequest
from tingshuo.dialogue.policy import ReplyPlan
from tingshuo.dialogue.songs import SongRequest
from tingshuo.dialogue.voice import VoiceChange, VoiceState
from tingshuo.intent import CHAT, Intent
from tingshuo.safety import Verdict


@dataclass(frozen=True)
class TurnPlan:
    """The feeling, a voice request, what the turn asks the assistant to do, and the reply plan they lead to."""

    reading: EmotionReading | None
    change: VoiceChange | None
    voice: VoiceState  # the voice state once this turn is taken
    plan: ReplyPlan
    text: str = ""
    ms: float = 0.0  # time it took (the part of it not overlapped with other work delays the reply)
    persona: Persona | None = None  # the persona that answers once this turn is taken (a role request)
    role: RoleRequest | None = None
    song: SongRequest | None = None  # something to sing (song set), or an unknown title (answered honestly)
    story: bool = False  # the reply is a story with attributed, voiced lines
    safety: Verdict | None = None  # the safety policy's reading of the turn (None: safety off)
    search_candidate: bool = False  # the turn may need a search (the response asks the LLM)
    pronunciation: Report | None = None  # the coach's reading of a spoken English turn (tutor persona)
    intent: Intent = CHAT  # what the model read the turn as asking for (tingshuo.intent)
    says_safe: float | None = None  # in care mode: P(the user says they are safe now) (None: not read)

    @property
    def stop(self) -> bool:
        """The user asked for silence: the reply is at most a one-word acknowledgement."""
        return self.intent.intent == "stop" and (self.safety is None or self.safety.action == "allow")

    @property
    def cares(self) -> bool:
        return self.safety is not None and self.safety.action == "care"

    @property
    def melody(self) -> SongRequest | None:
        """The song to sing (None: nothing to sing, or a title the songbook does not have)."""
        return self.song if self.song is not None and self.song.song is not None else None
