"""Writing systems: the one definition of a Han character and of a text's language.

ASR clean-up, the clause splitter, TTS routing, voice requests, songs and the CLI each had their own, with three
different ranges (``\\u4e00-\\u9fa5``, ``\\u4e00-\\u9fff``, ``\\u3400-\\u9fff``): a rare character could count as a
syllable in one place and not in the next.
"""

from __future__ import annotations

import re

# CJK Unified Ideographs, Extension A and the compatibility ideographs (what Whisper and the LLM write). Not the
# Yijing hexagram symbols at U+4DC0–4DFF, which ``\u3400-\u9fff`` took in.
HAN_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
HAN = re.compile(f"[{HAN_CLASS}]")
# The characters new lyrics may be written in (the GBNF grammar of songs): the basic block of Unicode 1.1, which
# the G2P dictionary covers; a subset of HAN.
COMMON_HAN_CLASS = "\u4e00-\u9fa5"
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_NOT_HAN = re.compile(f"[^{HAN_CLASS}]+")


def is_han(ch: str) -> bool:
    return bool(HAN.fullmatch(ch))


def has_han(text: str) -> bool:
    return HAN.search(text) is not None


def han_only(text: str) -> str:
    """The Han characters of ``text``, in order (a Chinese line's syllables)."""
    return _NOT_HAN.sub("", text)


def han_runs(text: str) -> list[str]:
    """The runs of Han characters (lyric lines split at anything else)."""
    return [x for x in _NOT_HAN.split(text) if x]


def has_words(text: str) -> bool:
    """Anything to say or to have heard: a letter, digit or Han character (``\\w`` is Unicode-aware)."""
    return re.search(r"\w", text) is not None


def text_language(text: str) -> str | None:
    """'zh' when the text holds Han characters, 'en' when only Latin words, None when neither (digits, punctuation)."""
    if has_han(text):
        return "zh"
    if _LATIN_WORD.search(text):
        return "en"
    return None
