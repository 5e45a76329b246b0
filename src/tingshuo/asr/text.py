"""Transcript clean-up shared by the backends."""

from __future__ import annotations

import re

import zhconv

_HAN = re.compile(r"[\u4e00-\u9fff]")


def normalize_transcript(text: str, language: str) -> str:
    """Whisper writes traditional characters now and then (一個, 年輕); we answer in simplified Chinese.

    A decode cut inside a multi-byte character leaves U+FFFD; with nothing but punctuation left there were no words.
    """
    text = re.sub(r"\s+", " ", text.replace("\ufffd", "")).strip()
    if not re.search(r"[\w\u3400-\u9fff]", text):
        return ""
    if language.startswith("zh") or _HAN.search(text):
        text = zhconv.convert(text, "zh-cn")
        text = re.sub(r"(?<=[\u4e00-\u9fff，。！？、]) (?=[\u4e00-\u9fff])", "", text)
    return text
