"""Turn-taking decisions: how long to wait before answering, and whether speech over us is a backchannel.

End of turn combines two real models rather than a fixed silence: smart-turn v3.2 hears whether the voice
sounds finished (falling intonation vs a held "嗯…"), and the LLM reads whether the words are (P of a
sentence-final token next; see ``LlamaCppChat.turn_end_probability``). A clear question is answered after
``min_wait_ms``; an unfinished clause ("帮我订一张明天去北京的", "然后") waits up to ``max_wait_ms``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tingshuo.config import TurnConfig

_EAGER = {"high": 0.6, "medium": 1.0, "auto": 1.0, "low": 1.6}  # scales the waits


@dataclass
class TurnScore:
    p_audio: float | None  # smart-turn v3.2
    p_text: float | None  # the LLM's sentence-end probability
    weight: float = 0.65  # of the text score (TurnConfig.text_weight)

    @property
    def p(self) -> float:
        if self.p_text is None and self.p_audio is None:
            return 0.5
        if self.p_text is None:
            return float(self.p_audio)  # type: ignore[arg-type]
        if self.p_audio is None:
            return self.p_text
        # weighted geometric mean: answering fast needs *both* to agree the turn is over; either one saying
        # "unfinished" (smart-turn hears a held syllable; the LLM reads "如果明天不下雨的话") stretches the wait
        pt, pa = max(self.p_text, 1e-4), max(self.p_audio, 1e-4)
        return float(pt**self.weight * pa ** (1 - self.weight))


# Whisper's own language model punctuates: a transcript that ends in a comma, an enumeration comma, a colon or an
# ellipsis ("如果明天不下雨的话，") is one it expects to go on. The LLM scorer strips punctuation (Whisper's is a
# guess), so this third opinion would be lost; it scales the text score down instead.
_TRAILS_OFF = re.compile(r"(?:[，,、：:；;]|\.\.\.|…+)\s*$")
TRAILING_FACTOR = 0.3


def trails_off(text: str) -> bool:
    """The recognizer punctuated the utterance as unfinished."""
    return bool(_TRAILS_OFF.search(text.strip()))


def text_score(p_text: float | None, transcript: str) -> float | None:
    """The LLM's completeness, lowered when the recognizer's punctuation says the sentence goes on."""
    if p_text is None:
        return None
    return p_text * TRAILING_FACTOR if trails_off(transcript) else p_text


def required_silence_ms(cfg: TurnConfig, score: TurnScore | None) -> float:
    """Silence after the last speech before the assistant takes the turn."""
    if cfg.mode == "server_vad" or score is None:
        return float(cfg.silence_ms)
    k = _EAGER[cfg.eagerness]
    p = min(1.0, max(0.0, score.p))
    return k * (cfg.min_wait_ms + (cfg.max_wait_ms - cfg.min_wait_ms) * (1.0 - p) ** 2)


# What counts as a backchannel: short listener tokens that acknowledge without claiming the floor (Chinese
# 嗯/对/好的/是的/哦/啊/没错, English mm-hm/yeah/right/okay/uh-huh). This is the definition of the category, not a
# stand-in for understanding: anything else ("等一下", "不对", "wait") is an interruption, and so is any
# backchannel word inside a longer utterance.
# 得: how Whisper writes the 的 of "好的" often enough (bench/duplex.py: "好得" stopped a story)
_BC_ZH = "嗯|恩|哦|噢|喔|啊|呀|哈|对|對|是|好|行|没错|沒錯|明白|知道|了|的|得|呢|嘛|呃|唔"
_BC_EN = r"m+|mm+|hm+|mhm|uh[- ]?huh|um+|yeah|yep|yes|right|okay|ok|sure|i see|got it|oh|ah|wow|true|cool"
_BC_RE = re.compile(rf"^(?:(?:{_BC_ZH})+|(?:(?:{_BC_EN})[\s,.!?]*)+)$", re.IGNORECASE)
_PUNCT = re.compile(r"[\s，。！？、,.!?…~～\-]+")


# Short words that mean "stop talking" when said over the reply: the one closed list that acts on its own (the
# turn plan reads the turn afterwards, and answers a stop with one word). A cut-in this short has no room for a
# request, and the plan would come too late to stop the sound. bench/duplex.py measures it on spoken clips.
_STOP_ZH = "停|停停|停一下|停下来|停下|得了|别说了|别说|不要说了|不用说了|等一下|等等|等会儿|不|不要|不对|行了|够了|好了好了|闭嘴|安静"
_STOP_EN = r"stop|wait|no|nope|hold on|enough|quiet|shh+|hang on"
_STOP_RE = re.compile(rf"^(?:(?:{_STOP_ZH})[吧啊呀了]?)+$|^(?:(?:{_STOP_EN})[\s,.!?]*)+$", re.IGNORECASE)


def is_stop_word(text: str) -> bool:
    """A short cut-in that asks the assistant to stop ("停", "别说了", "等一下", "不", "stop", "wait", "no")."""
    t = text.strip().lower()
    if re.search(r"[a-z]", t):
        return bool(_STOP_RE.match(_PUNCT.sub(" ", t).strip()))
    t = _PUNCT.sub("", t)
    return bool(t) and bool(_STOP_RE.match(t))


# The same two closed lists as phrases, for the recognizer to weigh against the audio of a short cut-in
# (``phrase_scores``): Whisper base's free transcript of one is a guess ("停下" → "停笑", "平下", "又说了"; "对" →
# "推"), and its confident-speech length under the echo canceller says little (stop phrases measured 32-448 ms).
# Chinese only: no English cut-in has been measured yet.
CUTIN_PHRASES: dict[str, tuple[list[str], list[str]]] = {
    "zh": (["停", "停下", "停一下", "停下来", "别说了", "不要说了", "等一下", "等等", "不", "不要", "不对", "够了",
            "好了好了", "闭嘴", "安静"],
           ["嗯", "嗯嗯", "对", "对对", "好", "好的", "是的", "是", "哦", "啊", "没错", "明白", "知道了", "行"]),
}
# How much likelier (log-probability) the best stop phrase must be than the best listener token, or the other way
# round, to decide; closer than this, the transcript rules below decide. Chosen on bench/doubletalk.py's dev voices.
CUTIN_MARGIN = 0.5


def cutin_lean(scores: list[float], language: str) -> float:
    """Best stop phrase minus best listener token (``scores`` in ``CUTIN_PHRASES[language]`` order)."""
    stops, _ = CUTIN_PHRASES[language]
    return max(scores[: len(stops)]) - max(scores[len(stops) :])


def is_backchannel(text: str, speech_ms: float, max_ms: float, tiny_ms: float = 450.0,
                   lean: float | None = None) -> bool:
    """True for a short acknowledgement or a non-word (a cough Whisper heard as nothing); never for a stop word.

    ``lean`` (:func:`cutin_lean`): the recognizer's own weighing of the audio as a stop phrase rather than a
    listener token; beyond ``CUTIN_MARGIN`` either way it decides. Otherwise, under ``tiny_ms`` of voiced sound
    (one syllable) the transcript is trusted only to say "stop": Whisper turns a lone "对" into "可以了" or worse,
    and a one-syllable interjection cannot carry a request, but "停" and "不" are one syllable too, and were taken
    for backchannels (the reply played on).
    """
    if speech_ms > max_ms:
        return False
    if is_stop_word(text):
        return False
    if lean is not None and abs(lean) >= CUTIN_MARGIN:
        return lean < 0
    if speech_ms <= tiny_ms:
        return True
    t = _PUNCT.sub("", text.strip().lower()) if not re.search(r"[a-z]", text.lower()) else text.strip().lower()
    if not _PUNCT.sub("", t):
        return True  # no words at all: a cough, a laugh, breath
    if re.search(r"[a-z]", t):
        return bool(_BC_RE.match(_PUNCT.sub(" ", t).strip()))
    return len(t) <= 4 and bool(_BC_RE.match(t))
