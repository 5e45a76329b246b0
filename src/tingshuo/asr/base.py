"""The recognizer protocol: a few methods any ASR backend implements.

Two shapes of engine must fit: Whisper (batch; "streaming" means re-decoding the growing utterance) and true
streaming transducers (sherpa-onnx) that update a hypothesis per frame. Both expose ``open_stream()`` that
accepts audio as it arrives and ``finish()`` for the final result, so the engine does not care which it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Transcript:
    text: str
    language: str  # ISO 639-1, e.g. "zh", "en"
    language_probability: float = 1.0
    audio_seconds: float = 0.0
    decode_ms: float = 0.0


class RecognizerStream(Protocol):
    def accept(self, audio: np.ndarray) -> None:
        """Append 16 kHz mono float32 samples."""

    def partial(self) -> str:
        """Best hypothesis so far (may cost a decode for batch engines: call from a worker thread)."""

    def finish(self) -> Transcript:
        """Final transcript of everything accepted."""


class Recognizer(Protocol):
    name: str

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        """Blocking: transcribe one utterance (16 kHz mono float32). Run it in a worker thread."""

    def open_stream(self, language: str | None = None) -> RecognizerStream:
        """Start an utterance whose audio arrives incrementally."""

    # Optional: ``phrase_scores(audio, phrases, language) -> list[float]``, how likely each phrase is as the words
    # of ``audio`` (a log-probability; higher is likelier). Whisper has it; the barge-in judge uses it where present
    # to tell a short stop phrase from a backchannel (tingshuo.engine.turns.CUTIN_PHRASES).
