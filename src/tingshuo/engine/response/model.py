"""A response and the signals its stages share.

A response is one asyncio task tree (:mod:`tingshuo.engine.response.run`): the LLM source on its thread, the text
stage (tokens → clauses), the voice stage (clauses → audio) and playout. Interruption reaches every stage the same
way: the task tree is cancelled (a barge-in, a new turn, ``close()``), and :class:`Stop` tells the LLM thread,
which asyncio cannot cancel, to end at its next token; the output check stops a reply the same way, with its own
reason.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tingshuo.dialogue.memory import new_item_id
from tingshuo.dialogue.persona import Persona
from tingshuo.dialogue.policy import ReplyPlan
from tingshuo.dialogue.songs import SongRequest
from tingshuo.dialogue.voice import VoiceState
from tingshuo.engine.events import Event
from tingshuo.engine.plan import TurnPlan
from tingshuo.llm.base import Message
from tingshuo.script import text_language
from tingshuo.search import SearchDecision
from tingshuo.tts import VoiceSettings


@dataclass
class ResponseOptions:
    """Per-response overrides (the Realtime API's ``response.create``); None = the session's setting."""

    instructions: str | None = None  # replaces the system prompt for this response only
    speak: bool | None = None  # False: text only
    voice: VoiceSettings | None = None
    max_tokens: int | None = None
    history: list[Message] | None = None  # answer these turns instead of the conversation (out-of-band)
    fixed: str | None = None  # say exactly this (no LLM)
    record: bool = True  # the reply becomes an assistant turn in the conversation


@dataclass
class Response:
    """One reply: what it answers, how it is said, and its gate (a speculative reply is prepared behind it)."""

    rid: str
    user_text: str
    sink: Callable[[Event], None]  # the session's outbox
    messages: list[Message] = field(default_factory=list)
    lang: str = "zh"  # the language of the turn it answers
    fixed: str | None = None  # say exactly this instead of asking the LLM (greetings, notices, a song's intro)
    speak: bool = True
    voice: VoiceSettings | None = None
    max_tokens: int | None = None
    record: bool = True
    plan: ReplyPlan = field(default_factory=ReplyPlan)
    voice_state: VoiceState = field(default_factory=VoiceState)
    item_id: str = field(default_factory=new_item_id)
    task: asyncio.Task[None] | None = None
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # set when the turn is confirmed
    held: list[Event] = field(default_factory=list)  # events produced before the gate opened
    timings: dict[str, float] = field(default_factory=dict)
    t_end: float = 0.0  # wall-clock end of the user's speech (or of the typed message)
    persona: Persona | None = None  # who answers (None: the session's persona)
    story: bool = False  # lines are attributed ("[旁白]", "[孙悟空]") and spoken in the speakers' voices
    cast: dict[str, str] = field(default_factory=dict)  # story speaker → voice
    care_lines: bool = False  # a care reply: it must name a help line (one is added if the LLM did not)
    model_answer: str | None = None  # a sentence to say clearly at the end (the coach's model answer)
    search_candidate: bool = False
    search: SearchDecision | None = None
    song: SongRequest | None = None  # sing it after a short spoken introduction

    def emit(self, ev: Event) -> None:
        """Out now if the turn is ours, else held until the gate opens (a speculative reply says nothing)."""
        if self.gate.is_set():
            self.sink(ev)
        else:
            self.held.append(ev)

    def configure(self, u: TurnPlan | None, story_tokens: int, fallback: VoiceState) -> None:
        """How this reply answers a turn, from the turn's plan (every reply to a user turn is set up here: heard,
        typed or asked for with ``respond()``); ``fallback``: the voice state when there is no plan."""
        if u is None:
            self.voice_state = fallback
            return
        self.plan, self.voice_state = u.plan, u.voice
        self.timings["understand"] = u.ms
        self.story = u.story
        if u.story:
            self.max_tokens = max(self.max_tokens or 0, story_tokens)
        self.care_lines = u.cares
        self.search_candidate = u.search_candidate
        p = u.pronunciation
        if p is not None and any(w.flagged for w in p.words):
            self.model_answer = p.expected
        self.song = u.melody
        if u.stop:  # "停", "别说了": silence, after one word that says it was heard
            self.fixed = _QUIET["en" if text_language(u.text) == "en" else "zh"]


_QUIET = {"zh": "好。", "en": "Okay."}


class Stop:
    """The one stop signal of a response's LLM thread (asyncio cannot cancel a thread): set by the task tree's
    cancellation or by the output check (``reason`` "blocked"). Backends receive ``event`` and end a stalled
    remote read with it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    @property
    def blocked(self) -> bool:
        return self.reason == "blocked"


@dataclass
class Clause:
    """One unit of a reply on its way to the voice: text, speaking style, a story speaker's voice, or — for a
    sung phrase — the call that renders its audio (on the TTS thread)."""

    text: str
    style: str | None = None
    voice: str | None = None
    speaker: str | None = None
    render: Callable[[], np.ndarray] | None = None
    sung: bool = False
    # the output check, running while the clause is synthesised: the words to voice (the clause, or the notice
    # said in place of a blocked one), None when an earlier clause was blocked; no check when None
    check: "asyncio.Future[str | None] | None" = None


@dataclass
class ReplyWords:
    """The reply's words as they went: all generated text, the clauses delivered, and the language it is in."""

    generated: list[str] = field(default_factory=list)
    spoken: list[str] = field(default_factory=list)
    lang: str | None = None  # the language of the first voiced clause

    def full(self) -> str:
        return "".join(self.generated).strip()
