"""Speaking styles: how an emotion or a manner of speaking is realized in the voice.

A style is a small set of prosodic controls every backend can apply: the pitch level and range (Kokoro: its
predicted F0 curve is edited before rendering; Piper: WORLD resynthesis), the speaking rate (Kokoro ``speed``,
Piper ``length_scale``), the level, and whisper (no F0: Kokoro renders an unvoiced curve, Piper's output is
resynthesized with aperiodic excitation). The profile values for the emotions are the ones measured in
shared/research/tts.md (jf_alpha, zh): there they separated on every measured axis. Whether listeners hear the
intended emotion was not tested; ``tests/test_styles.py`` checks the measured direction of each style on
f0 mean/range, energy and rate, and that every style stays intelligible to our ASR.

Each style lists the aliases the LLM's tags and the user's voice instructions may use (``[开心]``, ``[happy]``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpeakingStyle:
    name: str
    label_zh: str
    description: str
    pitch: float = 1.0  # F0 level × this
    range: float = 1.0  # F0 excursions around the mean × this (log domain)
    speed: float = 1.0  # speaking rate × this
    gain_db: float = 0.0
    whisper: bool = False
    aliases: tuple[str, ...] = ()

    def directions(self) -> dict[str, int]:
        """The documented sign (−1, 0, +1) of this style against neutral on each measured axis."""
        def sign(x: float, eps: float) -> int:
            return 0 if abs(x) < eps else (1 if x > 0 else -1)

        d = {"f0_mean": sign(self.pitch - 1, 0.03), "f0_range": sign(self.range - 1, 0.1),
             "energy": sign(self.gain_db, 1.5), "rate": sign(self.speed - 1, 0.04)}
        if self.whisper:
            d["f0_mean"] = d["f0_range"] = 0  # no pitch at all
        return d


STYLES: dict[str, SpeakingStyle] = {s.name: s for s in (
    SpeakingStyle("neutral", "平常", "the voice as it is", aliases=("正常", "平常", "普通", "默认", "normal", "default")),
    SpeakingStyle("happy", "开心", "higher, livelier pitch, a little faster and louder", 1.12, 1.35, 1.1, 2.0,
                  aliases=("开心", "高兴", "快乐", "兴奋", "欢快", "愉快", "激动", "cheerful", "excited", "joyful")),
    SpeakingStyle("sad", "难过", "lower, flat pitch, slower and quieter", 0.9, 0.5, 0.85, -6.0,
                  aliases=("难过", "伤心", "悲伤", "沮丧", "失落", "sorrowful", "unhappy")),
    SpeakingStyle("angry", "生气", "wider pitch, faster and much louder", 1.05, 1.5, 1.15, 5.0,
                  aliases=("生气", "愤怒", "气愤", "恼火", "mad", "furious")),
    SpeakingStyle("fearful", "害怕", "higher, tense narrow pitch, faster and quieter", 1.18, 0.7, 1.2, -3.0,
                  aliases=("害怕", "紧张", "焦虑", "担心", "恐惧", "惊慌", "anxious", "scared", "nervous", "afraid")),
    SpeakingStyle("tender", "温柔", "softer, a little lower and slower, narrow pitch", 0.95, 0.7, 0.9, -4.0,
                  aliases=("温柔", "轻柔", "柔和", "体贴", "安慰", "gentle", "soft", "warm", "caring")),
    SpeakingStyle("calm", "平静", "steady: slightly lower, narrower and slower", 0.97, 0.75, 0.93, -2.0,
                  aliases=("平静", "冷静", "沉稳", "镇定", "平和", "calm", "steady", "soothing")),
    SpeakingStyle("story", "讲故事", "a storyteller: wide pitch, unhurried", 1.0, 1.4, 0.9, 0.0,
                  aliases=("讲故事", "故事", "说书", "narrator", "storytelling", "story-telling")),
    SpeakingStyle("whisper", "悄悄话", "whispered: no voicing, quiet, a little slower", 1.0, 1.0, 0.95, -8.0, True,
                  aliases=("悄悄", "悄悄话", "小声", "耳语", "轻声", "whispering", "whispered")),
)}

_ALIASES: dict[str, str] = {}
for _s in STYLES.values():
    _ALIASES[_s.name] = _s.name
    _ALIASES[_s.label_zh] = _s.name
    for _a in _s.aliases:
        _ALIASES[_a.lower()] = _s.name


def resolve_style(word: str) -> str | None:
    """A style name from a tag word or alias ("开心", "Happy", "温柔地", "sadly"); None when it names no style."""
    w = word.strip().lower()
    for cand in (w, w.removesuffix("地"), w.removesuffix("的"), w.removesuffix("ly"), w.removesuffix("ily") + "y"):
        if cand in _ALIASES:
            return _ALIASES[cand]
    return None


def get_style(name: str | None) -> SpeakingStyle:
    if not name:
        return STYLES["neutral"]
    key = resolve_style(name)
    if key is None:
        raise ValueError(f"unknown speaking style {name!r}; available: {', '.join(STYLES)}")
    return STYLES[key]
