"""Pronunciation scoring at the level of sounds, with CMU Sphinx's en-us acoustic model (pocketsphinx, BSD).

Method — an *extended recognition network* (the classic design of computer-assisted pronunciation training):
every expected word may be said as itself or as a variant with one typical learner error (a confusion table of
sounds that Chinese speakers of English are known to merge: th→s/f/t, dh→d/z, v→w, r→l, l→n, i:→ɪ, æ→e,
final consonant dropped…). pocketsphinx decodes the utterance constrained to that network (a JSGF grammar
whose variants carry a low prior), so where a variant wins, the sound that was actually produced is named:
"the 'th' in 'think' sounded like 's'". A variant only counts when it beats the expected word by a margin of
acoustic score per frame (both paths are force-aligned), because a native reader's reduced consonants
otherwise read as errors.

Whole words said differently ("best" → "worst") are not variants of one sound; they are found by comparing
the expected words with what our ASR (Whisper) heard, a word alignment with difflib.

Function words (a, the, to, of…) are not coached for sounds: connected speech reduces them in every accent.
"""

from __future__ import annotations

import difflib
import logging
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RATE = 16000  # the en-us acoustic model is trained on 16 kHz speech

# ARPAbet sound → sounds a learner may produce instead (single substitutions tried per phone)
CONFUSIONS: dict[str, tuple[str, ...]] = {
    "TH": ("S", "F", "T"), "DH": ("D", "Z"), "V": ("W", "F"), "W": ("V",), "R": ("L",), "L": ("R", "N"),
    "N": ("L", "NG"), "NG": ("N",), "IY": ("IH",), "IH": ("IY",), "AE": ("EH", "AA"), "EH": ("AE",),
    "Z": ("S",), "S": ("SH", "TH"), "SH": ("S",), "UH": ("UW",), "UW": ("UH",), "ER": ("AA",), "AA": ("AO",),
    "AO": ("AA",), "CH": ("SH",), "JH": ("ZH",),
}
DROPPABLE = ("T", "D", "K", "S", "Z", "V", "L")  # final consonants learners leave out
FUNCTION_WORDS = frozenset(
    "a an of to and or but in on at for with by from as is are was were be been am do does did have has had "
    "he she it we i you me him her us his its our my your not no so if".split())

# how a sound is named to a learner (spelling-like, as a teacher would say it)
SOUND_NAMES: dict[str, str] = {
    "TH": "th", "DH": "th", "S": "s", "F": "f", "T": "t", "D": "d", "Z": "z", "V": "v", "W": "w", "R": "r",
    "L": "l", "N": "n", "NG": "ng", "IY": "ee", "IH": "short i", "AE": "a (as in cat)", "EH": "e (as in bed)",
    "AA": "ah", "AO": "aw", "SH": "sh", "UH": "oo (as in book)", "UW": "oo (as in food)", "ER": "er",
    "CH": "ch", "JH": "j", "ZH": "zh", "K": "k", "P": "p", "B": "b", "G": "g", "M": "m", "HH": "h", "Y": "y",
    "AH": "uh", "AY": "i (as in time)", "EY": "ay", "OW": "oh", "AW": "ow", "OY": "oy",
}

VARIANT_PRIOR = 0.25  # prior mass of all error variants of a word together (the expected word keeps the rest)
# Language weight on the grammar's priors: the default 6.5 lets a variant win only on gross errors; at 1.0
# the model's noise reads as errors. 3.0 found th→t/s, r→l, v→w on our TTS with ≤ 2 words flagged per real clip.
LW = 3.0
MARGIN = 300.0  # acoustic log-score (pocketsphinx's log base 1.0001) per frame a variant must win by (pocketsphinx units; see tests/test_coach.py)


@dataclass
class SoundIssue:
    expected: str  # ARPAbet
    heard: str | None  # None: left out
    position: int  # phone index in the word

    def describe(self, word: str) -> str:
        e = SOUND_NAMES.get(self.expected, self.expected.lower())
        if self.heard is None:
            return f"the '{e}' at the end of '{word}' was left out"
        return f"the '{e}' in '{word}' sounded like '{SOUND_NAMES.get(self.heard, self.heard.lower())}'"


@dataclass
class WordScore:
    word: str
    score: int  # 0–100
    heard: str | None = None  # what the ASR heard instead (a different word), if anything
    issues: list[SoundIssue] = field(default_factory=list)
    phones: str = ""

    @property
    def flagged(self) -> bool:
        return bool(self.issues) or self.heard is not None

    def feedback(self) -> list[str]:
        out = []
        if self.heard is not None:
            out.append(f"'{self.word}' sounded like '{self.heard}'" if self.heard else f"'{self.word}' was missing")
        out += [i.describe(self.word) for i in self.issues]
        return out


@dataclass
class Report:
    expected: str
    heard: str | None
    words: list[WordScore]

    @property
    def score(self) -> int:
        return round(float(np.mean([w.score for w in self.words]))) if self.words else 0

    def feedback(self) -> str:
        notes = [f for w in self.words for f in w.feedback()]
        if not notes:
            return f"Well read — every sound was clear (score {self.score})."
        return "; ".join(notes[:4]).capitalize() + f". Overall {self.score}."

    def to_dict(self) -> dict:
        return {"expected": self.expected, "heard": self.heard, "score": self.score, "feedback": self.feedback(),
                "words": [{"word": w.word, "score": w.score, "flagged": w.flagged, "heard": w.heard,
                           "phones": w.phones, "issues": [asdict(i) | {"text": i.describe(w.word)} for i in w.issues]}
                          for w in self.words]}


_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower().replace("’", "'"))


class PronunciationCoach:
    """Thread-safe (one decoder, one lock); ~0.1–0.3 s per sentence on one core."""

    def __init__(self, model_dir: Path | None = None) -> None:
        from pocketsphinx import Decoder, get_model_path

        kw = {} if model_dir is None else {"hmm": str(model_dir / "en-us"), "dict": str(model_dir / "cmudict-en-us.dict")}
        self._dec = Decoder(lm=None, loglevel="FATAL", lw=LW, **kw)
        self._lock = threading.Lock()
        self._n = 0
        self.model_path = model_dir or Path(get_model_path())

    def pronunciation(self, word: str) -> list[str] | None:
        p = self._dec.lookup_word(word)
        return p.split() if p else None

    # -- decoding ------------------------------------------------------------------------------------------
    def _add(self, name: str, phones: list[str]) -> None:
        if self._dec.lookup_word(name) is None:
            self._dec.add_word(name, " ".join(phones), update=True)

    def _variants(self, word: str, phones: list[str], final: bool) -> dict[str, SoundIssue]:
        """``final``: the word ends before a pause or a vowel, where a dropped last consonant is an error (before
        a consonant it is ordinary assimilation: "bes(t) day")."""
        if word in FUNCTION_WORDS:
            return {}
        out: dict[str, SoundIssue] = {}
        for j, p in enumerate(phones):
            for q in CONFUSIONS.get(p, ()):
                name = f"{word}__{j}_{q.lower()}"
                self._add(name, phones[:j] + [q] + phones[j + 1:])
                out[name] = SoundIssue(p, q, j)
        if final and len(phones) > 2 and phones[-1] in DROPPABLE:
            name = f"{word}__{len(phones) - 1}_del"
            self._add(name, phones[:-1])
            out[name] = SoundIssue(phones[-1], None, len(phones) - 1)
        return out

    def _decode_grammar(self, pcm: bytes, alternatives: list[list[str]], priors: bool = True) -> list:
        rules = []
        for alts in alternatives:
            if len(alts) == 1:
                rules.append(alts[0])
                continue
            share = VARIANT_PRIOR / (len(alts) - 1)
            rules.append("( " + " | ".join([f"/{1 - VARIANT_PRIOR}/ {alts[0]}"] +
                                           [f"/{share:.5f}/ {a}" for a in alts[1:]]) + " )")
        self._n += 1
        name = f"g{self._n}"
        self._dec.add_jsgf_string(name, "#JSGF V1.0;\ngrammar g;\npublic <s> = " + " ".join(rules) + " ;\n")
        self._dec.activate_search(name)
        try:
            self._dec.start_utt()
            self._dec.process_raw(pcm, full_utt=True)
            self._dec.end_utt()
            return [s for s in self._dec.seg() if s.word not in ("<s>", "</s>", "<sil>", "[NOISE]")
                    and not s.word.startswith("+")]
        finally:
            self._dec.remove_search(name)

    def _word_scores(self, segs: list) -> list[tuple[str, int, float]]:
        """(word, frames, acoustic score) per word of a forced path (pocketsphinx log units)."""
        lm = self._dec.get_logmath()
        return [(re.sub(r"\(\d+\)$", "", s.word), s.end_frame - s.start_frame + 1, lm.log(s.ascore) if s.ascore > 0 else -1e9)
                for s in segs]

    # -- the public call -----------------------------------------------------------------------------------
    def assess(self, audio: np.ndarray, sample_rate: int, expected: str, heard: str | None = None) -> Report:
        """Score ``audio`` as a reading of ``expected``. ``heard``: the ASR transcript, to find whole words said
        differently (without it only sounds are checked)."""
        words = words_of(expected)
        if not words:
            raise ValueError("nothing to coach: the expected text has no English words")
        prons = {w: self.pronunciation(w) for w in words}
        unknown = [w for w, p in prons.items() if p is None]
        if unknown:
            raise ValueError(f"no pronunciation known for: {', '.join(unknown)}")
        if sample_rate != RATE:
            import soxr

            audio = soxr.resample(audio, sample_rate, RATE)
        pcm = (np.clip(np.asarray(audio, np.float32), -1, 1) * 32767).astype(np.int16).tobytes()
        with self._lock:
            vowel = [bool(p) and p[0][:2] in _VOWELS for p in (prons[w] for w in words)]
            variants = [self._variants(w, prons[w], i + 1 == len(words) or vowel[i + 1])  # type: ignore[arg-type]
                        for i, w in enumerate(words)]
            best = self._decode_grammar(pcm, [[w, *v] for w, v in zip(words, variants)])
            chosen = [s.word for s in best]
            canon = self._word_scores(self._decode_grammar(pcm, [[w] for w in words])) if any("__" in c for c in chosen) else []
            issues: list[list[SoundIssue]] = [[] for _ in words]
            if len(chosen) == len(words):
                for i, c in enumerate(chosen):
                    c = re.sub(r"\(\d+\)$", "", c)
                    if "__" not in c:
                        continue
                    # the variant must beat the expected word by MARGIN per frame on the same path otherwise
                    alts = [[w] for w in words]
                    alts[i] = [c]
                    alt = self._word_scores(self._decode_grammar(pcm, alts))
                    if len(alt) != len(canon):
                        continue
                    gain = sum(a[2] for a in alt) - sum(b[2] for b in canon)
                    frames = max(alt[i][1], 1)
                    log.debug("coach: %s → %s gains %.1f/frame", words[i], c, gain / frames)
                    if gain / frames >= MARGIN:
                        issues[i].append(variants[i][c])
        said = _align_words(words, words_of(heard)) if heard else [None] * len(words)
        out = []
        for w, iss, h in zip(words, issues, said):
            if h and self.pronunciation(h) is None:
                h = None  # not an English word: the ASR split or garbled it ("ill-sposed"), not the speaker
            score = max(0, 100 - 35 * len(iss))  # one wrong sound: 65 — clearly below a good word
            if h is not None:  # a different word (or none) was heard: at most the share of sounds in common
                common = difflib.SequenceMatcher(None, prons[w], self.pronunciation(h) or []).ratio() if h else 0.0
                score = min(score, round(40 * common))
            out.append(WordScore(w, int(score), h, iss, " ".join(prons[w] or [])))
        return Report(expected, heard, out)


def _align_words(expected: list[str], heard: list[str]) -> list[str | None]:
    """For each expected word: None if it was heard as itself, else the word heard in its place ('' = missing)."""
    out: list[str | None] = [None] * len(expected)
    sm = difflib.SequenceMatcher(None, expected, heard, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            continue
        for k in range(i1, i2):
            j = j1 + (k - i1)
            out[k] = heard[j] if (op == "replace" and j < j2) else ""
    return out
