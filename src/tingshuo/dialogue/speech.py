"""From LLM tokens to speakable clauses.

The LLM writes text; a voice must not read markdown, list bullets or emoji aloud, and TTS should start as soon as
the first short clause exists (then synthesize clause n+1 while clause n plays). ``ClauseSplitter`` cuts the
token stream at sentence ends, and at commas once a clause is long enough; the first clause is allowed to be
short so the first audio comes early.
"""

from __future__ import annotations

import re

_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f900-\U0001f9ff\U00002b00-\U00002bff\ufe0f\u200d]+"
)
_MD_LINE = re.compile(r"^\s*(?:#{1,6}\s+|>\s*|[-*+•]\s+|\d{1,2}[.)、]\s*)", re.M)
_MD_INLINE = re.compile(r"(\*\*|__|\*|`+|~~)")
_URL = re.compile(r"https?://\S+")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")

STRONG = set("。！？!?；;…\n")
WEAK = set("，,、：:")
_HAN = re.compile(r"[\u3400-\u9fff]")
_ABBREV = re.compile(r"(?:^|\s)(?:Mr|Mrs|Ms|Dr|St|Prof|vs|etc|e\.g|i\.e)$", re.I)


def clean_for_speech(text: str) -> str:
    """Remove what a listener should not hear: markdown syntax, bullets, emoji, raw URLs."""
    text = _LINK.sub(r"\1", text)
    text = _URL.sub("", text)
    text = _MD_LINE.sub("", text)
    text = _MD_INLINE.sub("", text)
    text = _EMOJI.sub("", text)
    text = re.sub(r"[ \t]+", " ", text)
    return text


def speakable(text: str) -> bool:
    return bool(re.search(r"[\w\u3400-\u9fff]", text))


def _weight(text: str) -> int:
    """Length in 'syllables': one per Han character, one per ~4 Latin letters."""
    han = len(_HAN.findall(text))
    latin = len(re.findall(r"[A-Za-z0-9]", text))
    return han + latin // 4


class ClauseSplitter:
    def __init__(self, first_min: int = 2, min_weight: int = 8, max_weight: int = 40) -> None:
        self.first_min = first_min
        self.min_weight = min_weight
        self.max_weight = max_weight
        self._buf = ""
        self._emitted = 0

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            clause, self._buf = self._buf[:cut], self._buf[cut:]
            clause = clean_for_speech(clause).strip()
            if speakable(clause):
                out.append(clause)
                self._emitted += 1
        return out

    def flush(self) -> list[str]:
        clause = clean_for_speech(self._buf).strip()
        self._buf = ""
        if speakable(clause):
            self._emitted += 1
            return [clause]
        return []

    def _find_cut(self) -> int | None:
        buf = self._buf
        need = self.first_min if self._emitted == 0 else self.min_weight
        for i, c in enumerate(buf):
            end = i + 1
            if c == "." :
                # an English full stop only when followed by whitespace (not 3.5, not a URL)
                if end >= len(buf):
                    return None
                if not buf[end].isspace() or _ABBREV.search(buf[:i]):
                    continue
            elif c not in STRONG and c not in WEAK:
                if c == " " and _weight(buf[:i]) >= self.max_weight:
                    return end  # a run-on English sentence: cut at a space
                continue
            while end < len(buf) and (buf[end] in STRONG or buf[end] in WEAK or buf[end] in "\"'”’）)"):
                end += 1  # keep "！？" and closing quotes with their clause
            if c in STRONG or c == "." or _weight(buf[:end]) >= need:
                return end
        if _weight(buf) >= self.max_weight * 2:
            return len(buf)
        return None
