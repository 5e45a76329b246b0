"""sherpa-onnx streaming transducer backend (true streaming partials), for user-supplied model files.

No registry package ships sherpa-onnx zh/en model weights (shared/research/asr.md), so this backend is opt-in:
``pip install 'tingshuo[sherpa]'``, download e.g. a streaming zipformer bilingual zh-en model, and set
``asr.backend = "sherpa-onnx"`` with ``asr.sherpa.{encoder,decoder,joiner,tokens}``.
"""

from __future__ import annotations

import time

import numpy as np

from tingshuo.asr.base import Transcript
from tingshuo.asr.text import normalize_transcript
from tingshuo.config import AsrConfig
from tingshuo.script import has_han

RATE = 16000


class SherpaConfigError(ValueError):
    pass


class SherpaRecognizer:
    name = "sherpa-onnx"

    def __init__(self, cfg: AsrConfig) -> None:
        files = cfg.sherpa
        missing = [k for k in ("encoder", "decoder", "joiner", "tokens") if getattr(files, k) is None]
        if missing:
            raise SherpaConfigError(
                "asr.backend = 'sherpa-onnx' needs model files: set asr.sherpa." + ", asr.sherpa.".join(missing)
            )
        for k in ("encoder", "decoder", "joiner", "tokens"):
            p = getattr(files, k)
            if not p.expanduser().is_file():
                raise SherpaConfigError(f"asr.sherpa.{k} = {p} does not exist")
        try:
            import sherpa_onnx
        except ImportError as e:
            raise SherpaConfigError("sherpa-onnx is not installed: pip install 'tingshuo[sherpa]'") from e
        self.recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
            tokens=str(files.tokens),
            encoder=str(files.encoder),
            decoder=str(files.decoder),
            joiner=str(files.joiner),
            num_threads=cfg.threads,
            sample_rate=RATE,
            feature_dim=80,
            decoding_method="greedy_search",
        )

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        stream = self.open_stream(language)
        stream.accept(audio)
        return stream.finish()

    def open_stream(self, language: str | None = None) -> "SherpaStream":
        return SherpaStream(self, language)


class SherpaStream:
    def __init__(self, rec: SherpaRecognizer, language: str | None) -> None:
        self.rec = rec
        self.language = language
        self.stream = rec.recognizer.create_stream()
        self.samples = 0
        self.t0 = time.perf_counter()

    def accept(self, audio: np.ndarray) -> None:
        self.stream.accept_waveform(RATE, np.asarray(audio, np.float32))
        self.samples += len(audio)
        while self.rec.recognizer.is_ready(self.stream):
            self.rec.recognizer.decode_stream(self.stream)

    def partial(self) -> str:
        result = self.rec.recognizer.get_result(self.stream)
        return result if isinstance(result, str) else getattr(result, "text", "")

    def finish(self) -> Transcript:
        self.stream.accept_waveform(RATE, np.zeros(int(0.3 * RATE), np.float32))  # flush the encoder's lookahead
        self.stream.input_finished()
        while self.rec.recognizer.is_ready(self.stream):
            self.rec.recognizer.decode_stream(self.stream)
        text = self.partial()
        lang = self.language or ("zh" if has_han(text) else "en")
        return Transcript(
            text=normalize_transcript(text.lower() if lang == "en" else text, lang),
            language=lang,
            audio_seconds=self.samples / RATE,
            decode_ms=(time.perf_counter() - self.t0) * 1000,
        )
