"""The session's voice state, and the user's spoken or typed requests about the voice itself.

"说慢一点", "大声点", "悄悄跟我说", "开心一点", "像讲故事一样", "speak faster" change *how* the assistant speaks
from then on, until changed again ("正常说话", "back to normal"). A request is not a reply topic: it changes the
:class:`VoiceState`, and the reply that follows is already spoken in the new voice.

Whether a turn asks for a change is the turn plan's reading (tingshuo.intent); this grammar gives the measure of
the change it read (how much slower, which style; tingshuo.engine.understand.voice_change). It is a small
compositional grammar: an aspect (说/讲/语速/声音/音量…, speak/talk/voice) with a direction
(慢/快/大/小/高/低, slower/louder…), an intensity (一点/再/很多, a bit/much), negation (别那么快 = slower) and
the subject (我说话太快了吗 is about the user, not a request). Measured alternative: asking the bundled 1.5B model
"is this a request about your voice? 是/否" separated nothing (P(是) 0.38–0.94 on requests and non-requests
alike, docs/emotion.md); the turn plan reads the voice as one field of a whole answer, after examples, which
does better (docs/understanding.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from tingshuo.script import HAN_CLASS, has_han
from tingshuo.tts.base import VoiceSettings
from tingshuo.tts.style import STYLES, resolve_style

SPEED_RANGE = (0.6, 1.6)
VOLUME_RANGE = (0.35, 2.0)
PITCH_RANGE = (0.85, 1.2)


@dataclass(frozen=True)
class VoiceState:
    """How the assistant speaks until told otherwise (persists across replies)."""

    speed: float = 1.0
    volume: float = 1.0
    pitch: float = 1.0
    whisper: bool = False
    style: str | None = None  # a lasting style the user asked for ("开心一点", "像讲故事一样")
    dialect: str | None = None  # asked-for dialect: the words follow it, the bundled voices cannot pronounce it

    def settings(self, voice: str | None, style: str | None = None) -> VoiceSettings:
        """The clause settings: this state applied to a persona voice; ``style`` is the clause's own style."""
        st = style or self.style
        if self.whisper:
            st = "whisper"
        return VoiceSettings(voice=voice, speed=self.speed, volume=self.volume, pitch=self.pitch, style=st,
                             whisper=self.whisper)

    def describe(self, lang: str = "zh") -> str:
        parts = []
        zh = lang == "zh"
        if self.speed < 0.97:
            parts.append("说得慢一些" if zh else "speaking more slowly")
        elif self.speed > 1.03:
            parts.append("说得快一些" if zh else "speaking faster")
        if self.whisper:
            parts.append("悄悄地说" if zh else "whispering")
        elif self.volume > 1.05:
            parts.append("声音大一些" if zh else "louder")
        elif self.volume < 0.95:
            parts.append("声音小一些" if zh else "more quietly")
        if self.pitch > 1.02:
            parts.append("音调高一些" if zh else "higher pitch")
        elif self.pitch < 0.98:
            parts.append("音调低一些" if zh else "lower pitch")
        if self.style and self.style != "neutral":
            parts.append(f"用{STYLES[self.style].label_zh}的语气" if zh else f"in a {self.style} voice")
        if self.dialect:
            parts.append(f"用{self.dialect}的说法" if zh else f"in {self.dialect}")
        return "、".join(parts) if zh else ", ".join(parts)


@dataclass(frozen=True)
class VoiceChange:
    """One parsed request. Factors multiply the state; None leaves an aspect alone."""

    speed: float | None = None
    volume: float | None = None
    pitch: float | None = None
    whisper: bool | None = None
    style: str | None = None  # "neutral" clears a lasting style
    dialect: str | None = None  # "" clears
    reset: bool = False
    one_off: bool = False  # "用难过的语气说：…" — a style for this reply only, not a lasting change
    sequence: bool = False  # "先生气地说…再开心地说…": several styles within one reply

    def apply(self, s: VoiceState) -> VoiceState:
        if self.reset:
            s = VoiceState(dialect=s.dialect)
        if self.speed is not None:
            s = replace(s, speed=_clamp(s.speed * self.speed, SPEED_RANGE))
        if self.volume is not None:
            s = replace(s, volume=_clamp(s.volume * self.volume, VOLUME_RANGE))
            if self.volume > 1:
                s = replace(s, whisper=False)
        if self.pitch is not None:
            s = replace(s, pitch=_clamp(s.pitch * self.pitch, PITCH_RANGE))
        if self.whisper is not None:
            s = replace(s, whisper=self.whisper, volume=1.0 if not self.whisper else s.volume)
        if self.style is not None and not self.one_off:
            if self.style == "whisper":
                s = replace(s, whisper=True)
            else:
                s = replace(s, style=None if self.style == "neutral" else self.style)
        if self.dialect is not None:
            s = replace(s, dialect=self.dialect or None)
        return s

    @property
    def lasting(self) -> bool:
        """Whether this changes the voice beyond the current reply."""
        return (self.reset or self.speed is not None or self.volume is not None or self.pitch is not None
                or self.whisper is not None or self.dialect is not None or (self.style is not None and not self.one_off))


def _clamp(x: float, r: tuple[float, float]) -> float:
    return min(max(x, r[0]), r[1])


# ----------------------------------------------------------------------------------------------------- grammar
_PUNCT = re.compile(r"[\s，。！？!?,.、；;：:“”\"'‘’~～…]+")
_MORE = r"(?:一点|一些|点儿|点|些|一下)"
_STRONG = re.compile(r"(很多|多了|得多|太多|非常|特别|再|更|much|a lot|way|even)")
_VERB = r"(?:说话|讲话|说|讲|念|读|聊|回答|答|语速|速度|节奏|声音|音量|嗓门)"
_SELF = re.compile(r"我(?:说话|讲话|说|讲|的声音|声音|的语速|语速)(?:得|的)?(?:太|有点|是不是)?(?:快|慢|大|小|高|低)")


def _han_pattern(pattern: str) -> re.Pattern[str]:
    """A pattern whose ``[{H}]`` is one Han character (the range of tingshuo.script)."""
    return re.compile(pattern.replace("{H}", HAN_CLASS))


_ZH_RULES: list[tuple[re.Pattern[str], dict]] = [
    # speed
    (re.compile(rf"(?:{_VERB}(?:得|的)?|放|再|你)慢{_MORE}|慢(?:一?点|一些|下来)(?:说|讲|读|念)?|慢慢(?:地|的)?(?:说|讲|读|念|来)"
                rf"|(?:别|不要|不用)(?:说得|讲得|说的|讲的|说|讲)?(?:那么|这么|太)?快|(?:说|讲|语速)(?:得|的)?太快|太快了|听不过来|跟不上"), {"speed": 0.8}),
    (re.compile(rf"(?:{_VERB}(?:得|的)?|再|你)快{_MORE}|快(?:一?点|一些)(?:说|讲|读|念)|加快|提速"
                rf"|(?:别|不要)(?:说得|讲得|说的|讲的|说|讲)?(?:那么|这么|太)?慢|(?:说|讲|语速)(?:得|的)?太慢|太慢了"), {"speed": 1.25}),
    # whisper (before volume: 小声说 is a whisper, 小声一点 is quieter)
    (re.compile(r"(?:别|不要|不用)(?:再)?(?:悄悄|耳语|说悄悄话|小声说)|正常(?:地)?(?:说话|说|讲|音量|声音)|恢复(?:正常)?(?:音量|声音)"),
     {"whisper": False}),
    (re.compile(r"悄悄(?:地|的)?(?:说|讲|跟我|告诉|话)|说悄悄话|耳语|气声|小声(?:地|的)?(?:说|讲|跟我|告诉)|轻轻(?:地|的)?(?:说|讲|跟我)"),
     {"whisper": True}),
    # volume
    # quieter first: "别那么大声" holds "大声"
    (re.compile(rf"(?:小|轻)声{_MORE}|(?:{_VERB})(?:小|轻){_MORE}|(?:别|不要)(?:那么|这么)?大声|太吵|声音太大|吵到"
                r"|(?:小|轻)点声|(?:声音|音量|嗓门)(?:太|有点|好|特别)(?:大|响|吵)"), {"volume": 0.7}),
    (re.compile(rf"大声{_MORE}|大声(?:地|的)?(?:说|讲|读|念|回答)|(?:{_VERB})大{_MORE}|大点声|(?:说|讲)(?:得)?大声|听不(?:清|见|到)|响亮{_MORE}|(?:别|不要)(?:那么|这么)?小声"
                r"|大点儿?声|(?:声音|音量)(?:太|有点|好|特别)(?:小|轻|低)"),
     {"volume": 1.4}),
    # pitch
    (re.compile(rf"(?:声音|音调|嗓音)(?:高|尖|细){_MORE}"), {"pitch": 1.1}),
    (re.compile(rf"(?:声音|音调|嗓音)(?:低|沉|粗){_MORE}"), {"pitch": 0.9}),
    # reset
    (re.compile(r"恢复(?:正常|原样|原来)|换回(?:正常|原来)|变回(?:正常|原来)|正常(?:一点|点)?(?:说话|说)?(?:吧|啊|呀|嘛|好吗)?$|用(?:原来|正常)的声音"), {"reset": True}),
    # story-telling
    (re.compile(r"像讲故事|讲故事(?:一样|的(?:语气|方式|感觉|声音))|说书(?:一样|的)"), {"style": "story"}),
    # dialect
    (re.compile(r"用?(东北|四川|广东|上海|天津|河南|陕西|山东|湖南|台湾|北京)话"), {"dialect": 1}),
    (re.compile(r"(?:说|讲|用)普通话"), {"dialect": ""}),
]
_ZH_STYLE = [
    _han_pattern(r"(?:用|以|拿|带着?)(?P<w>[{H}]{1,4}?)(?:一点|一些)?的(?:语气|声音|口气|语调|方式|感觉)"),
    _han_pattern(r"(?P<w>[{H}]{2})(?:地|的)(?:说|讲|读|念|回答|跟我说)"),
    _han_pattern(r"(?:^|再|更|你|要|能|说话|说|讲|语气)(?P<w>[{H}]{2})(?:一点|一些|点儿|点|些)(?:嘛|吧|呀|啊|好吗|好不好)?$"),
    _han_pattern(r"(?:语气|声音|口气)(?:再|更)?(?P<w>[{H}]{2})(?:一点|一些|点)?"),
]
_EN_RULES: list[tuple[re.Pattern[str], dict]] = [
    (re.compile(r"\b(?:speak|talk|go|say it|read)\b[\w ]{0,12}\b(?:slower|slowly|more slowly)\b|\bslow down\b|\btoo fast\b"), {"speed": 0.8}),
    (re.compile(r"\b(?:speak|talk|go|say it|read)\b[\w ]{0,12}\bfaster\b|\bspeed up\b|\btoo slow\b|\bhurry up\b"), {"speed": 1.25}),
    (re.compile(r"\b(?:stop|don't|do not|no more) whispering\b|\bnormal (?:voice|volume)\b"), {"whisper": False}),
    (re.compile(r"\bwhisper"), {"whisper": True}),
    (re.compile(r"\b(?:speak|talk) up\b|\blouder\b|\bcan't hear you\b|\bcannot hear you\b"), {"volume": 1.4}),
    (re.compile(r"\b(?:quieter|more quietly|more softly|too loud|lower your voice)\b"), {"volume": 0.7}),
    (re.compile(r"\bhigher (?:voice|pitch)\b"), {"pitch": 1.1}),
    (re.compile(r"\blower (?:pitch|your pitch)\b|\bdeeper voice\b"), {"pitch": 0.9}),
    (re.compile(r"\bback to normal\b|\byour normal voice\b|\breset (?:your|the) voice\b"), {"reset": True}),
    (re.compile(r"\blike (?:you're |you are )?(?:telling|reading) a story\b|\blike a storyteller\b"), {"style": "story"}),
]
_EN_STYLE = [
    re.compile(r"\b(?:sound|be|speak|talk|say it)\b(?: a bit| a little)?(?: more)? (?P<w>[a-z]+?)(?:ier|er)?\b"),
    re.compile(r"\bin an? (?P<w>[a-z]+) (?:voice|tone|way)\b"),
    re.compile(r"\b(?P<w>[a-z]+ly) (?:please|now)?$"),
]
_EN_STYLE_FORMS = {"happier": "happy", "sadder": "sad", "angrier": "angry", "calmer": "calm", "gentler": "tender",
                   "softer": "tender", "happily": "happy", "sadly": "sad", "angrily": "angry", "calmly": "calm",
                   "gently": "tender", "cheerfully": "happy", "excitedly": "happy", "nervously": "fearful"}
_SEQUENCE = re.compile(r"先.{0,12}?(?:地|的语气|的声音)?(?:说|讲).{0,30}?(?:再|然后|接着|又).{0,12}?(?:地|的语气|的声音)?(?:说|讲)|first .{0,40}then")


def _intensity(text: str, factor: float) -> float:
    return factor ** 1.6 if _STRONG.search(text) else factor


def parse_voice_instruction(text: str) -> VoiceChange | None:
    """The voice request in ``text`` (zh or en), or None when it asks nothing about the voice."""
    raw = text.strip()
    if not raw:
        return None
    zh = has_han(raw)
    t = _PUNCT.sub("", raw) if zh else raw.lower().strip(" .!?")
    if zh and _SELF.search(t):
        t = _SELF.sub("", t)  # "我说话太快了吗": a question about the user's own voice
    found: dict[str, object] = {}
    for pat, eff in (_ZH_RULES if zh else _EN_RULES):
        m = pat.search(t)
        if not m:
            continue
        for k, v in eff.items():
            if k in found:
                continue
            if k in ("speed", "volume", "pitch"):
                found[k] = _intensity(t, float(v))  # type: ignore[arg-type]
            elif k == "dialect" and v == 1:
                found[k] = m.group(1) + "话"
            else:
                found[k] = v
    seq = bool(_SEQUENCE.search(t if zh else raw.lower()))
    style = None
    if "style" not in found and not seq:
        for pat in (_ZH_STYLE if zh else _EN_STYLE):
            m = pat.search(t)
            if not m:
                continue
            w = m.group("w")
            style = _EN_STYLE_FORMS.get(w) or resolve_style(w)
            if style is None and not zh:
                style = resolve_style(w + "y") or resolve_style(w[:-1] if w.endswith("i") else w)
            if style:
                break
        if style and style != "whisper":  # whispers are the explicit rules' business (小声一点 is only quieter)
            found["style"] = style
    one_off = False
    if "style" in found:
        # content after the manner phrase ("用难过的语气说：我的小猫走丢了") = say *that* in this style, once
        m = re.search(r"(?:的(?:语气|声音|口气)|地)(?:说|讲|读|念)(?:一句|一下|一遍)?(.*)$", t) if zh else re.search(
            r"\b(?:say|read)\b(.*)$", raw.lower())
        one_off = bool(m and len(m.group(1)) >= 3)
    if seq:
        return VoiceChange(one_off=True, sequence=True, **{k: v for k, v in found.items() if k != "style"})  # type: ignore[arg-type]
    if not found:
        return None
    return VoiceChange(one_off=one_off, **found)  # type: ignore[arg-type]
