"""faster-whisper backend (CTranslate2). Default model: the bundled multilingual Whisper base, int8.

Whisper is a batch model: partial results re-decode the growing utterance (``WhisperStream.partial``). Language
identification is restricted to ``AsrConfig.languages`` (on short Mandarin Whisper base otherwise drifts to
Japanese or Korean) and runs once per utterance; later partials and the final reuse it.
"""

from __future__ import annotations

import os
import threading
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from tingshuo.asr.base import Transcript
from tingshuo.asr.text import normalize_transcript
from tingshuo.audio.vad import has_speech
from tingshuo.config import AsrConfig
from tingshuo.script import HAN_CLASS

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a model *name* must never reach for a hub

RATE = 16000
_STUTTER = re.compile(f"([{HAN_CLASS}])\\1\\1")
# A phrase of three or more words said twice in a row ("That's a good thing. That's a good thing. That's"): Whisper
# base loops like this on short synthetic clips; people almost never do.
# Or one word four times in a row ("take a walk walk walk walk", heard on a Piper clip).
_LOOP = re.compile(r"\b(\w+(?:\W+\w+){2,}?)\W+\1\b|\b(\w+)(?:\W+\2\b){3,}", re.I)


class WhisperRecognizer:
    name = "faster-whisper"

    def __init__(self, cfg: AsrConfig, cache_dir: Path | None = None) -> None:
        from faster_whisper import WhisperModel

        self.cfg = cfg
        if cfg.model_dir is not None:
            model_dir = Path(cfg.model_dir).expanduser()
            if not (model_dir / "model.bin").is_file():
                raise FileNotFoundError(f"asr.model_dir={model_dir} holds no CTranslate2 model.bin")
        else:
            from tingshuo.assets import WHISPER_BASE

            model_dir = WHISPER_BASE.ensure(cache_dir).parent
        self.model_dir = model_dir
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type=cfg.compute_type, cpu_threads=cfg.threads)
        self._lock = threading.Lock()  # one decode at a time per model: CTranslate2 would queue anyway

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        t0 = time.perf_counter()
        audio = np.asarray(audio, np.float32)
        seconds = len(audio) / RATE
        if not has_speech(audio):
            # Whisper writes words into silence ("You", "Okay."): a recording Silero hears no speech in has none
            return Transcript(text="", language=language or (self.cfg.languages or ["en"])[0],
                              language_probability=0.0, audio_seconds=seconds,
                              decode_ms=(time.perf_counter() - t0) * 1000)
        with self._lock:
            if seconds <= 30:
                text, language, prob = self._decode_window(audio, language)
            else:
                text, language, prob = self._decode_long(audio, language)
        return Transcript(
            text=normalize_transcript(text, language),
            language=language,
            language_probability=prob,
            audio_seconds=seconds,
            decode_ms=(time.perf_counter() - t0) * 1000,
        )

    def _pick_language(self, probs: list[tuple[str, float]]) -> tuple[str, float]:
        allowed = {lang: p for lang, p in probs if lang in self.cfg.languages} if self.cfg.languages else dict(probs)
        if not allowed:
            return probs[0][0], float(probs[0][1])
        lang = max(allowed, key=allowed.__getitem__)
        return lang, float(allowed[lang] / (sum(allowed.values()) or 1.0))

    def _encode(self, audio: np.ndarray) -> tuple[Any, int]:
        """Whisper's encoder output for ≤ 30 s of audio, and how many mel frames it covers."""
        from faster_whisper.audio import pad_or_trim

        m = self.model
        features = m.feature_extractor(audio)
        if self.cfg.short_window:
            # Whisper pads every input to a 30 s window (3000 mel frames), so a 2 s turn cost as much as 30 s.
            # CTranslate2 accepts a shorter encoder input: pad only to the utterance plus 1 s of silence, rounded
            # to 2 s steps (≈10x less encoder work on a short turn; WER unchanged on our clips, see tests/bench).
            frames = min(3000, int(np.ceil((features.shape[-1] + 100) / 200) * 200))
        else:
            frames = 3000
        return m.encode(pad_or_trim(features, frames)), min(frames, features.shape[-1])

    def phrase_scores(self, audio: np.ndarray, phrases: list[str], language: str) -> list[float]:
        """How well each of ``phrases`` explains ``audio`` (≤ 30 s): the summed log-probability Whisper gives its
        tokens, end of text included, when made to read the audio as that phrase (one encoder pass).

        For a closed choice on a cut-in of a syllable or two ("停下" or "嗯"): Whisper base's free transcript of
        one is a guess ("停笑", "推了", "Twainer"), but which of a few given phrases it finds likelier holds up
        better (bench/doubletalk.py).
        """
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        m = self.model
        with self._lock:
            encoder_output, frames = self._encode(np.asarray(audio, np.float32))
            tok = Tokenizer(m.hf_tokenizer, True, task="transcribe", language=language)
            texts = [tok.encode(p) + [tok.eot] for p in phrases]
            batch = ctranslate2.StorageView.from_array(np.repeat(np.array(encoder_output), len(texts), axis=0))
            results = m.model.align(batch, list(tok.sot_sequence) + [tok.no_timestamps], texts,
                                    [frames] * len(texts))
        return [float(np.sum(np.log(np.asarray(r.text_token_probs) + 1e-9))) for r in results]

    def _decode_window(self, audio: np.ndarray, language: str | None) -> tuple[str, str, float]:
        """One utterance of ≤ 30 s: encode once, detect the language on that same encoder output, decode.

        ``WhisperModel.transcribe(language=None)`` encodes the window twice (once to detect the language, once to
        decode), which doubled the cost of every short turn; going one level down saves that encoder pass.
        """
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_compression_ratio

        m = self.model
        encoder_output, _ = self._encode(audio)
        prob = 1.0
        if language is None:
            if len(self.cfg.languages) == 1:
                language = self.cfg.languages[0]
            else:
                results = m.model.detect_language(encoder_output)[0]
                language, prob = self._pick_language([(tok[2:-2], p) for tok, p in results])
        tokenizer = Tokenizer(m.hf_tokenizer, True, task="transcribe", language=language)
        # No initial prompt: with one ("以下是普通话的句子…") Whisper base sometimes returned the prompt itself as the
        # transcript of short synthetic speech; zhconv already turns traditional output into simplified.
        prompt = m.get_prompt(tokenizer, [], without_timestamps=True)
        # Cap the output: looping hallucinations on noise otherwise cost 10x a normal decode.
        max_new = int(min(220, 16 + 10 * len(audio) / RATE))
        text = ""
        best: tuple[tuple[bool, int, float], str] | None = None  # ((no loop, attempt, avg), text): runs that looked wrong
        # Whisper's fallback samples at a higher temperature; ours decodes again, still greedily, with repeated
        # trigrams forbidden and repetitions penalized (Whisper base loops, "绿绿绿…", "walk walk walk", on sounds it
        # cannot place). Sampling made the same audio give different words from run to run (CTranslate2's seed
        # does not reach its decoding threads); a recognizer the tests and the users can rely on is deterministic.
        for attempt, kwargs in enumerate(({"beam_size": self.cfg.beam_size},
                                          {"beam_size": self.cfg.beam_size, "no_repeat_ngram_size": 3,
                                           "repetition_penalty": 1.2})):
            result = m.model.generate(
                encoder_output,
                [prompt],
                max_length=len(prompt) + max_new,
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=[-1],
                **kwargs,
            )[0]
            tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
            text = tokenizer.decode(tokens).strip()
            if result.no_speech_prob > 0.6 and result.scores[0] / (len(tokens) + 1) < -1.0:
                return "", language, prob  # Whisper's own "no speech" rule
            avg = result.scores[0] / (len(tokens) + 1)
            # Whisper's fallback rules (compression ratio, mean log-prob) plus one for stutter loops that are too
            # short to compress badly ("几乒乒乒的情况"): a Han character three times in a row, or a phrase said twice.
            looped = get_compression_ratio(text) > 2.4 or bool(_STUTTER.search(text) or _LOOP.search(text))
            if not looped and avg >= -1.0:
                return text, language, prob
            # neither run looked right: a run that does not loop beats one that does; of two that loop, the
            # constrained one (it cannot repeat a trigram: "交几几几…" in the free run, seen through Chromium's
            # capture) beats the free one however likely the free loop is; else the likelier one
            key = (not looped, attempt if looped else 0, avg)
            if best is None or key > best[0]:
                best = (key, text)
        assert best is not None
        return best[1], language, prob

    def _decode_long(self, audio: np.ndarray, language: str | None) -> tuple[str, str, float]:
        """Files over 30 s: faster-whisper's sliding window with its VAD skipping the silences."""
        prob = 1.0
        if language is None:
            _, _, probs = self.model.detect_language(audio)
            language, prob = self._pick_language(probs)
        segments, _ = self.model.transcribe(
            audio,
            language=language,
            beam_size=self.cfg.beam_size,
            condition_on_previous_text=False,
            vad_filter=True,
        )
        sep = "" if language == "zh" else " "
        return sep.join(s.text.strip() for s in segments), language, prob

    def open_stream(self, language: str | None = None) -> "WhisperStream":
        return WhisperStream(self, language)


class WhisperStream:
    """Pseudo-streaming: keep the utterance, re-decode on demand; the language is fixed after the first decode."""

    def __init__(self, rec: WhisperRecognizer, language: str | None) -> None:
        self.rec = rec
        self.language = language
        self._chunks: list[np.ndarray] = []
        self._last: tuple[int, str] = (0, "")

    def accept(self, audio: np.ndarray) -> None:
        self._chunks.append(np.asarray(audio, np.float32))

    def audio(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

    def partial(self) -> str:
        audio = self.audio()
        if len(audio) < RATE // 2:
            return ""
        if self._last[0] == len(audio):
            return self._last[1]
        t = self.rec.transcribe(audio, self.language)
        self.language = t.language
        self._last = (len(audio), t.text)
        return t.text

    def finish(self) -> Transcript:
        return self.rec.transcribe(self.audio(), self.language)
