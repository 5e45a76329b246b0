"""WER/CER with the normalisation every test uses (jiwer does the alignment)."""

from __future__ import annotations

import re

import jiwer
import zhconv


# Contractions spelt out on both sides (as Whisper's English normaliser does): the recognizer writes "the weather's"
# for "the weather is" as it pleases, and two word errors for one apostrophe made a round trip fail by spelling.
_CONTRACTIONS = [(r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"n't\b", " not"), (r"'re\b", " are"),
                 (r"'m\b", " am"), (r"'ll\b", " will"), (r"'ve\b", " have"), (r"'d\b", " would"), (r"'s\b", " is")]


def norm_en(text: str) -> str:
    text = text.lower().replace("mr.", "mister").replace("-", " ").replace("’", "'")
    for pattern, full in _CONTRACTIONS:
        text = re.sub(pattern, full, text)
    return " ".join(re.sub(r"[^a-z' ]", " ", text).split())


_INTERJECTIONS = str.maketrans({"恩": "嗯", "摁": "嗯"})  # one interjection, spelt three ways (our TTS reads 嗯 as 恩)


def norm_zh(text: str) -> str:
    return "".join(re.findall(r"[\u4e00-\u9fff]", zhconv.convert(text, "zh-cn"))).translate(_INTERJECTIONS)


def wer(ref: str, hyp: str) -> float:
    return jiwer.wer(norm_en(ref), norm_en(hyp) or "<empty>")


def cer(ref: str, hyp: str) -> float:
    r = norm_zh(ref)
    h = norm_zh(hyp)
    # characters as "words": jiwer.cer on the space-joined string would count the spaces as matched characters
    # and halve the error rate
    return jiwer.wer(" ".join(r), " ".join(h) or "<empty>") if r else float(bool(h))


def cer_within(ref: str, hyp: str) -> float:
    """CER of ``ref`` against the best-matching stretch of ``hyp`` (a sentence heard inside a longer reply)."""
    r, h = norm_zh(ref), norm_zh(hyp)
    if len(h) <= len(r):
        return cer(r, h)
    return min(cer(r, h[i : i + n]) for n in range(max(1, len(r) - 2), len(r) + 3) for i in range(len(h) - n + 1))


# Characters no voice can tell apart (他/她/它 tā, 在/再 zài, 的/得/地 de): taken as one before a TTS round trip's CER
SAME_SOUND = str.maketrans({"她": "他", "它": "他", "在": "再", "得": "的", "地": "的"})


def ser(ref: list[str], hyp: list[str]) -> float:
    """Syllable error rate between two toned-syllable readings (tingshuo.tts.baker.FrontEnd.syllables): what was
    said against what was heard, in sounds, so homophones the recognizer spells its own way (河/和, 旧/就) do not
    count and a wrong tone does."""
    return jiwer.wer(" ".join(s.replace(" ", "") for s in ref), " ".join(s.replace(" ", "") for s in hyp) or "<empty>")
