"""Speech synthesis: backends behind a small protocol, and the router that picks one per clause.

Chinese in the companion's voice (小暖) and in no named voice goes to the native Mandarin voice (tts/baker.py) when
``TtsConfig.zh_backend`` is "baker" (else to Kokoro), its English words to Kokoro's English; Chinese in the other
character voices and in Kokoro tables goes to Kokoro (espeak reads its English words); a reply in English goes to
``TtsConfig.en_backend`` (Piper by default, RTF 0.08). Everything leaves at ``TtsConfig.sample_rate``.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from tingshuo.audio.io import resample
from tingshuo.config import TtsConfig
from tingshuo.script import has_han, text_language
from tingshuo.tts.base import Synthesizer, VoiceSettings, active_rms
from tingshuo.tts.style import STYLES, SpeakingStyle, get_style
from tingshuo.tts.voices import VOICES, CharacterVoice, get_voice

__all__ = ["STYLES", "VOICES", "CharacterVoice", "SpeakingStyle", "get_voice", "SpeechSynthesizer", "Synthesizer", "VoiceSettings", "get_style", "text_language"]



BACKENDS = ("kokoro", "piper", "baker")
TARGET_RMS = 0.12  # ≈ −18 dBFS over the voiced part: Kokoro's natural level


def level(audio: np.ndarray, volume: float = 1.0) -> np.ndarray:
    """Bring every voice to the same loudness (Piper peaks at full scale, Kokoro ~6 dB lower).

    Switching voices mid-reply must not jump in level, and a speaker driven near full scale distorts, which
    no echo canceller can undo.
    """
    if audio.size == 0:
        return audio
    rms = active_rms(audio)
    if rms == 0.0:
        return audio
    gain = TARGET_RMS * volume / rms
    gain = min(gain, 0.9 / max(1e-6, float(np.abs(audio).max())))
    return (audio * gain).astype(np.float32)


class SpeechSynthesizer:
    """Routes clauses to the Chinese or English backend; backends load on first use."""

    def __init__(self, cfg: TtsConfig, cache_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.cache_dir = cache_dir
        self.sample_rate = cfg.sample_rate
        self._backends: dict[str, Synthesizer] = {}
        self._load_lock = threading.Lock()

    def backend(self, lang: str) -> Synthesizer:
        """The backend for a language ("zh", "en"), or by name ("kokoro", "piper", "baker")."""
        name = lang if lang in BACKENDS else self.cfg.en_backend if lang == "en" else self.cfg.zh_backend
        with self._load_lock:
            if name not in self._backends:
                if name == "piper":
                    from tingshuo.tts.piper import PiperTTS

                    self._backends[name] = PiperTTS(self.cfg.threads)
                elif name == "baker":
                    from tingshuo.tts.baker import BakerTTS

                    self._backends[name] = BakerTTS(self.cfg.threads, latin=self._latin)
                else:
                    from tingshuo.tts.kokoro import KokoroTTS

                    self._backends[name] = KokoroTTS(
                        self.cache_dir, self.cfg.threads, self.cfg.tone_repair, self.kokoro_spec(self.cfg.voice_zh)
                    )
            return self._backends[name]

    def _latin(self, text: str, settings: VoiceSettings) -> np.ndarray:
        """English words inside a Chinese clause for the native voice (its symbols have none): Kokoro's English
        in ``voice_en_kokoro``, a woman's voice like the Baker speaker; the clause's style is applied to the whole
        clause afterwards, so only the rate goes along."""
        kokoro = self.backend("kokoro")
        plain = VoiceSettings(voice=self.cfg.voice_en_kokoro, speed=settings.speed)
        return resample(kokoro.synthesize(text, plain), kokoro.sample_rate, 24000)

    def preload(self, languages: tuple[str, ...] = ("zh", "en")) -> None:
        """Load and warm up (onnxruntime's first run allocates its arenas: ~0.5 s we do not want in a reply).

        Kokoro is loaded beside the native voice: character voices, English words inside Chinese and singing
        use it."""
        for lang in languages:
            self.synthesize({"zh": "你好。", "en": "Hello."}.get(lang, "你好。"), lang=lang)
        if "zh" in languages and self.cfg.zh_backend != "kokoro":
            self.backend("kokoro").synthesize("你好。", VoiceSettings())

    def native(self) -> Synthesizer | None:
        """The native Mandarin voice when Chinese is spoken with it (the companion also sings with it), else None."""
        return self.backend("baker") if self.cfg.zh_backend == "baker" else None

    @staticmethod
    def kokoro_spec(voice: str | None) -> str | None:
        """A character voice's Kokoro table (小暖 → jf_alpha); a Kokoro spec as it is."""
        cv = VOICES.get(voice or "")
        return cv.kokoro if cv is not None else voice

    def voice_for(self, lang: str, requested: str | None) -> str | None:
        if requested:
            return requested
        if lang == "en" and self.cfg.en_backend == "kokoro":
            return self.cfg.voice_en_kokoro
        return None if lang == "en" else self.kokoro_spec(self.cfg.voice_zh)

    def route(self, text: str, settings: VoiceSettings | None = None, lang: str | None = None,
              ) -> tuple[str, VoiceSettings]:
        """Which backend says this clause, and with what settings (no model is loaded to decide)."""
        lang = lang or text_language(text) or "zh"
        if lang == "en" and has_han(text):
            lang = "zh"  # Han characters can only be read by the Chinese voice
        base = settings or VoiceSettings()
        cv = VOICES.get(base.voice or (self.cfg.voice_zh if lang != "en" else ""))
        if cv is not None:  # a character voice: its Kokoro spec, pitch and pace, and where its English goes
            base = replace(base, voice=cv.kokoro, pitch=base.pitch * cv.pitch, speed=base.speed * cv.speed)
            if lang == "en":
                name = "piper" if cv.en == "piper" else "kokoro"
            else:
                name = "baker" if cv.native and self.cfg.zh_backend == "baker" else "kokoro"
        elif lang != "en" and base.voice:  # a Kokoro table or blend named directly
            name = "kokoro"
        else:
            name = self.cfg.en_backend if lang == "en" else self.cfg.zh_backend
        s = self.resolve(base, voice=self.voice_for(lang, base.voice if name == "kokoro" else None))
        if name == "piper" and (s.pitch != 1.0 or s.pitch_range != 1.0):
            if self.cfg.en_styles == "kokoro":
                # expressive English in full (pitch too) from Kokoro's F0 control, in Kokoro's voice
                name, s = "kokoro", replace(s, voice=self.cfg.voice_en_kokoro)
            else:
                # Piper has no pitch input (see PiperTTS.synthesize): its styles keep rate, level and whisper, so
                # the English voice does not change timbre mid-conversation
                s = replace(s, pitch=1.0, pitch_range=1.0)
        return name, s

    def synthesize(self, text: str, settings: VoiceSettings | None = None, lang: str | None = None) -> np.ndarray:
        """Blocking: one clause → float32 mono at ``sample_rate``. ``lang`` pins the reply's voice language."""
        name, s = self.route(text, settings, lang)
        backend = self.backend(name)
        audio = resample(backend.synthesize(text, s), backend.sample_rate, self.sample_rate)
        return level(audio, s.volume)

    def resolve(self, base: VoiceSettings, voice: str | None = None) -> VoiceSettings:
        """Fold the speaking style and the configured speed/volume into the numbers a backend applies."""
        st = get_style(base.style)
        return VoiceSettings(
            voice=voice,
            speed=min(max(base.speed * st.speed * self.cfg.speed, 0.5), 2.0),
            volume=base.volume * self.cfg.volume * 10 ** (st.gain_db / 20),
            style=st.name,
            pitch=base.pitch * st.pitch,
            pitch_range=base.pitch_range * st.range,
            whisper=base.whisper or st.whisper,
        )
