"""Which voice says what in a response: its own voice, a clause's style on it, a story speaker's voice."""

from __future__ import annotations

import re
from dataclasses import replace

from tingshuo.dialogue.persona import PERSONAS, Persona, cast, is_female
from tingshuo.engine.response.model import Response
from tingshuo.engine.state import DialogueState
from tingshuo.tts import VoiceSettings

NARRATOR = re.compile(r"^(旁白|叙述|叙述者|讲述者|说书人|narrator|narration)$", re.I)


class ReplyVoices:
    """Read from the dialogue state when asked: a speculative reply to "你来当孙悟空" is voiced after the turn was
    taken, when the session already is the new persona."""

    def __init__(self, r: Response, state: DialogueState) -> None:
        self.r, self.state = r, state

    @property
    def persona(self) -> Persona:
        return self.r.persona or self.state.persona

    def base(self) -> VoiceSettings:
        """The response's own voice: per-response override, else the session's (a client may pick one), else —
        for the reply that enters or leaves a role, before the session switched — the new persona's."""
        r = self.r
        if r.voice is not None:
            return r.voice
        if r.persona is not None and r.persona.key != self.state.persona.key:
            return VoiceSettings(voice=r.persona.voice)
        return self.state.voice

    def clause(self, style: str | None, voice: str | None = None) -> VoiceSettings:
        """A clause's voice settings; ``voice``: a story speaker's voice instead of the response's own."""
        base = self.base()
        s = self.r.voice_state.settings(voice or base.voice, style)
        return replace(s, speed=s.speed * base.speed) if base.speed != 1.0 else s

    def speaker(self, name: str) -> tuple[str | None, str | None]:
        """(voice, default style) of a story line's speaker: the narrator is the persona itself; characters get
        voices of their own (a persona's if the character is one: 孙悟空 → wukong), none shared with another."""
        r, persona = self.r, self.persona
        if NARRATOR.match(name):
            return persona.voice, "story"
        if name not in r.cast:
            female = is_female(name)
            hint = None if female is None else ({name} if female else set())
            r.cast[name] = cast([name], exclude=(persona.voice or "", *r.cast.values()), female=hint)[name]
        known = next((p for p in PERSONAS.values() if p.key != "companion" and name in p.names()), None)
        return r.cast[name], known.default_emotion if known else None
