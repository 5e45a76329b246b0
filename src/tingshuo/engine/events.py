"""The typed events a session emits, in order, on one stream. Consumers (CLI, server, tests) only read these."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Event:
    """Base class; ``type`` is a stable string for serialisation."""

    type: str = field(init=False, default="event")


@dataclass
class SpeechStarted(Event):
    at_ms: float  # position in the input audio stream
    item_id: str = ""  # the user turn this speech becomes if it is committed
    type: str = field(init=False, default="speech.started")


@dataclass
class SpeechStopped(Event):
    at_ms: float
    item_id: str = ""
    type: str = field(init=False, default="speech.stopped")


@dataclass
class TranscriptPartial(Event):
    text: str
    item_id: str = ""
    type: str = field(init=False, default="transcript.partial")


@dataclass
class TranscriptFinal(Event):
    text: str
    language: str
    audio_seconds: float
    item_id: str = ""  # the user turn's id in the conversation
    audio: np.ndarray | None = field(default=None, repr=False)  # the turn's audio (16 kHz), for clients that keep it
    type: str = field(init=False, default="transcript.final")


@dataclass
class ResponseStarted(Event):
    response_id: str
    user_text: str
    item_id: str = ""  # the assistant turn this response becomes
    speak: bool = True  # whether audio follows (a text-only response has none)
    type: str = field(init=False, default="response.started")


@dataclass
class ReplyTextDelta(Event):
    response_id: str
    text: str
    type: str = field(init=False, default="reply.text.delta")


@dataclass
class ReplyClause(Event):
    """A clause handed to TTS (clean, speakable text) and the speaking style it is said in."""

    response_id: str
    text: str
    style: str | None = None  # tingshuo.tts.style name; None = neutral
    speaker: str | None = None  # who says it in a story ("旁白", "孙悟空"); None = the assistant itself
    voice: str | None = None  # the voice it is said in (tingshuo.tts.voices key or Kokoro spec)
    sung: bool = False  # a phrase of a song, sung to its melody
    type: str = field(init=False, default="reply.clause")


@dataclass
class Paralinguistics(Event):
    """How the user's turn was said (and felt): the voice's measured cues fused with the words' reading.

    ``details`` holds the raw features behind it (loudness, F0, voicing, rate, pauses), their deviation from the
    speaker's baseline, and the text-side probabilities (see :meth:`EmotionReading.summary`).
    """

    item_id: str
    label: str  # neutral | happy | sad | angry | anxious | tired
    confidence: float
    arousal: float | None  # −1 … 1; None for typed input
    whisper: bool
    pace: str | None  # slow | normal | hurried
    details: dict = field(default_factory=dict, repr=False)
    type: str = field(init=False, default="paralinguistics")


@dataclass
class VoiceChanged(Event):
    """The user asked for a different voice ("说慢一点", "悄悄说"); ``state`` is the new lasting voice state."""

    state: dict
    request: str  # the words that asked for it
    type: str = field(init=False, default="voice.changed")


@dataclass
class PersonaChanged(Event):
    """The assistant entered or left a role ("你当孙悟空跟我说话", "别演了"); replies now come from this persona."""

    persona: str  # key
    name: str
    voice: str | None
    request: str = ""  # the words that asked for it
    type: str = field(init=False, default="persona.changed")


@dataclass
class PronunciationReport(Event):
    """The English coach's reading of a spoken turn (tutor persona): a score per word and what sounded wrong."""

    item_id: str
    expected: str
    score: int
    feedback: str
    words: list[dict] = field(default_factory=list)
    type: str = field(init=False, default="pronunciation.report")


@dataclass
class SafetyVerdict(Event):
    """A user turn or an assistant clause the safety policy did not simply allow (kept in the session log)."""

    item_id: str
    source: str  # "input" (what the user said or typed) | "output" (a clause the assistant was about to say)
    category: str  # self_harm, violence, sexual, drugs, jailbreak, crime, harmful_output, voice_distress
    action: str  # "refuse" | "care" | "blocked"
    confidence: float
    text: str = ""
    type: str = field(init=False, default="safety.verdict")


@dataclass
class CareChanged(Event):
    """Care mode began (``on``; ``reason`` the category) or eased (``reason`` "eased": the user said they are safe
    and the turns after carried no risk signal). While on, the assistant stays warm, asks, listens and offers help
    lines."""

    on: bool
    reason: str
    hotlines: list[dict] = field(default_factory=list)
    type: str = field(init=False, default="care.changed")


@dataclass
class SearchDone(Event):
    """A search ran for a response (query, provider, what came back, or why nothing did)."""

    response_id: str
    query: str
    provider: str
    results: list[dict] = field(default_factory=list)
    error: str | None = None
    type: str = field(init=False, default="search.done")


@dataclass
class AudioChunk(Event):
    response_id: str
    audio: np.ndarray  # float32 mono
    sample_rate: int
    text: str  # the clause this audio speaks
    type: str = field(init=False, default="reply.audio")


@dataclass
class ResponseDone(Event):
    response_id: str
    text: str  # the whole reply as generated (or as far as it got)
    status: str  # "completed" | "cancelled" | "failed"
    language: str | None
    timings_ms: dict[str, float]
    # full duplex: what the listener actually heard before a barge-in (the turn kept in the history)
    heard_text: str | None = None
    played_ms: float | None = None
    item_id: str = ""
    usage: dict[str, int] = field(default_factory=dict)  # input/output tokens (as counted by the LLM's tokenizer)
    type: str = field(init=False, default="response.done")


@dataclass
class TurnDetected(Event):
    """The user's turn is over: the scores and the silence waited (full-duplex audio input)."""

    p_audio: float | None  # smart-turn v3.2: does it sound finished?
    p_text: float | None  # the LLM: is a sentence end the likely next token?
    waited_ms: float  # silence after the last speech before the turn was taken
    type: str = field(init=False, default="turn.detected")


@dataclass
class PlaybackPaused(Event):
    """The user started speaking over the reply: playback stopped at ``heard_ms`` (resumes if a backchannel)."""

    response_id: str
    heard_ms: float
    type: str = field(init=False, default="playback.paused")


@dataclass
class PlaybackResumed(Event):
    response_id: str
    type: str = field(init=False, default="playback.resumed")


@dataclass
class Backchannel(Event):
    """A short listener response ("嗯", "对", "mm-hm") or a cough over the reply: heard, not a turn."""

    text: str
    type: str = field(init=False, default="user.backchannel")


@dataclass
class ErrorEvent(Event):
    code: str
    message: str
    item_id: str = ""  # the user turn it concerns (a committed turn with no words in it), if any
    type: str = field(init=False, default="error")


@dataclass
class UnheardTurn(Event):
    """A user turn the recognizer failed on (twice): its audio is kept, so nothing the user said is lost; an
    ``error`` event follows, and the assistant says it did not catch it."""

    item_id: str
    audio: np.ndarray = field(repr=False)
    audio_seconds: float
    reason: str
    type: str = field(init=False, default="transcript.failed")


@dataclass
class SpeechDegraded(Event):
    """Speech synthesis failed during a response: the rest of it (from ``text`` on) is delivered as text only."""

    response_id: str
    text: str  # the clause that could not be voiced
    reason: str
    type: str = field(init=False, default="reply.degraded")
