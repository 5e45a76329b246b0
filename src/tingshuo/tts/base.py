"""The synthesizer protocol and the voice settings every backend understands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class VoiceSettings:
    """How to say a clause. Backends map these onto their own controls (Kokoro speed/F0, Piper length_scale)."""

    voice: str | None = None  # backend voice name or a blend "jf_alpha:0.6,jm_kumo:0.4"; None = backend default
    speed: float = 1.0  # 1.0 = the model's natural rate
    volume: float = 1.0  # linear gain
    style: str | None = None  # a speaking style (tingshuo.tts.style.STYLES); the router folds it into the numbers below
    pitch: float = 1.0  # F0 level × this
    pitch_range: float = 1.0  # F0 excursions around the clause's mean × this (log domain)
    whisper: bool = False  # no voicing at all


class Synthesizer(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str, settings: VoiceSettings) -> np.ndarray:
        """Blocking: one clause → float32 mono audio at ``sample_rate``. Run it in a worker thread."""

    def voices(self) -> list[str]:
        """Names accepted in ``VoiceSettings.voice``."""
