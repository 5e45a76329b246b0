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


def active_rms(audio: np.ndarray) -> float:
    """RMS over the samples above −34 dBFS (the voiced part), 0.0 when fewer than 100 are: how loud a voice is,
    not how much silence the clause carries."""
    active = audio[np.abs(audio) > 0.02]
    return float(np.sqrt(np.mean(active**2))) if active.size >= 100 else 0.0


class Synthesizer(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str, settings: VoiceSettings) -> np.ndarray:
        """Blocking: one clause → float32 mono audio at ``sample_rate``. Run it in a worker thread."""

    def voices(self) -> list[str]:
        """Names accepted in ``VoiceSettings.voice``."""
