"""Transcript clean-up shared by the backends."""

from __future__ import annotations

import re

import zhconv

from tingshuo.script import HAN_CLASS, has_han, has_words

_FULL = {",": "，", ".": "。", "?": "？", "!": "！", ";": "；", ":": "："}


def normalize_transcript(text: str, language: str) -> str:
    """Whisper writes traditional characters now and then (一個, 年輕); we answer in simplified Chinese.

    A decode cut inside a multi-byte character leaves U+FFFD; with nothing but punctuation left there were no words.
    """
    text = re.sub(r"\s+", " ", text.replace("\ufffd", "")).strip()
    if not has_words(text):
        return ""
    if language.startswith("zh") or has_han(text):
        text = zhconv.convert(text, "zh-cn")
        # Chinese punctuation after Chinese words, as a typed turn has it: the ASR writes "睡不着, 觉得" and the
        # models behind it read the two differently (the care probe: 0.05 against 0.24 for the same words)
        text = re.sub(f"(?<=[{HAN_CLASS}])[,.?!;:](?=\\s|$|[{HAN_CLASS}])", lambda m: _FULL[m.group()], text)
        text = re.sub(f"(?<=[{HAN_CLASS}，。！？、；：]) (?=[{HAN_CLASS}])", "", text)
    return text
