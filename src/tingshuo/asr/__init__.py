"""Speech recognition: a small protocol (``base``) and backends chosen by ``AsrConfig.backend``."""

from __future__ import annotations

from pathlib import Path

from tingshuo.asr.base import Recognizer, RecognizerStream, Transcript
from tingshuo.config import AsrConfig

__all__ = ["Recognizer", "RecognizerStream", "Transcript", "load_recognizer"]


def load_recognizer(cfg: AsrConfig, cache_dir: Path | None = None) -> Recognizer:
    if cfg.backend == "faster-whisper":
        from tingshuo.asr.whisper import WhisperRecognizer

        return WhisperRecognizer(cfg, cache_dir)
    if cfg.backend == "sherpa-onnx":
        from tingshuo.asr.sherpa import SherpaRecognizer

        return SherpaRecognizer(cfg)
    raise ValueError(f"unknown asr.backend {cfg.backend!r}")
