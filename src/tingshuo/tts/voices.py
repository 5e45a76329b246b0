"""Character voices: named voices built from what the registry ships, each measured distinct from the others.

Only five Kokoro voice tables ship (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo) plus Piper's joe.
A Kokoro voice table row is 256 numbers: the first 128 condition the decoder (timbre), the last 128 the
prosody predictor (durations and F0). Taking the timbre of one voice and the prosody of another
(``"jm_kumo/jf_tebukuro"``) gives a new voice at no cost: kumo's male timbre speaking with tebukuro's lively,
high prosody is neither of them (speaker-embedding cosine 0.70–0.74 to kumo, ≤ 0.62 to the others).
Weighted blends (``"jf_alpha:0.5,jm_kumo:0.5"``) mostly land near an existing voice (0.83–0.88 to
gongitsune/nezumi), and a global pitch shift keeps the speaker (kumo at ×1.35: 0.89), so those are not used
to make characters. Measured with ``tingshuo voices --measure`` (Resemblyzer embeddings of two Mandarin
sentences per voice; real speech: same speaker ≥ ~0.8, tingshuo/audio/speaker.py); the pairwise table is in
docs/personas.md and checked by tests/test_voices.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CharacterVoice:
    key: str
    name: str  # what a person calls it
    description: str
    kokoro: str  # Kokoro voice spec for Chinese: "name", "a:0.6,b:0.4" (blend), "timbre/prosody" (split)
    en: str = "kokoro"  # English clauses: "kokoro" (same voice, keeps the character) or "piper" (joe, RTF 0.08)
    pitch: float = 1.0  # F0 level × this (Kokoro F0 control; within the voice's natural range)
    speed: float = 1.0
    gender: str = "female"  # "female" / "male": used to cast story characters
    # Chinese in the native Mandarin voice (tts/baker.py) when tts.zh_backend is "baker"; ``kokoro`` is then only
    # the fallback. One Baker speaker exists, so only one character voice can be native.
    native: bool = False
    label: str = ""  # what the call page and `tingshuo voices` show: a name and a description a person understands

    def licence(self, zh_backend: str = "baker") -> str:
        """The licence of the weights this voice's Chinese is spoken with (the Baker corpus is non-commercial)."""
        if self.native and zh_backend == "baker":
            from tingshuo.tts.baker import LICENCE

            return LICENCE
        return "Apache-2.0 (Kokoro-82M)" + ("; English: MIT (Piper joe, CC0 data)" if self.en == "piper" else "")


VOICES: dict[str, CharacterVoice] = {v.key: v for v in (
    CharacterVoice("xiaonuan", "小暖", "warm young woman (default companion; native Mandarin with tts.zh_backend "
                   "= baker)", "jf_alpha", en="piper", native=True, label="小暖 · 温暖的年轻女声"),
    CharacterVoice("daiyu", "黛玉", "soft, delicate young woman, unhurried", "jf_gongitsune", pitch=1.04, speed=0.92,
                   label="黛玉 · 轻柔女声，慢条斯理"),
    CharacterVoice("tangseng", "唐僧", "calm, gentle man, slow", "jm_kumo", speed=0.9, gender="male",
                   label="唐僧 · 沉稳温和的男声"),
    CharacterVoice("wukong", "悟空", "lively, high, quick male voice", "jm_kumo/jf_tebukuro", speed=1.12,
                   gender="male", label="悟空 · 机灵活泼的少年音"),
    CharacterVoice("narrator", "说书人", "low, warm storyteller", "jf_tebukuro/jm_kumo", speed=0.95, gender="male",
                   label="说书人 · 低沉温暖，讲故事"),
    CharacterVoice("xiaoya", "小雅", "clear, high young woman", "jf_tebukuro", label="小雅 · 清亮的年轻女声"),
    CharacterVoice("joe", "Joe", "American English male (Piper); Chinese in the narrator's voice",
                   "jf_tebukuro/jm_kumo", en="piper", gender="male", label="Joe · 美式英语男声"),
)}

DEFAULT_VOICE = "xiaonuan"


def get_voice(key: str) -> CharacterVoice:
    try:
        return VOICES[key]
    except KeyError:
        raise ValueError(f"unknown voice {key!r}; available: {', '.join(VOICES)}") from None
