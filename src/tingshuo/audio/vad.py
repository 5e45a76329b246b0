"""Streaming voice activity detection: Silero VAD v6 (MIT) through onnxruntime, no torch.

The ONNX file is the one faster-whisper ships (``faster_whisper/assets/silero_vad_v6.onnx``), so the VAD costs
no extra package. It scores 32 ms windows (512 samples at 16 kHz, plus 64 samples of left context) carrying
its LSTM state between calls; ~0.2 ms per window on one core (shared/research/paralinguistics.md).
The session's utterance tracker turns the probabilities into utterances (hysteresis, a minimum speech length
that drops clicks, padding that keeps word onsets for ASR); :func:`has_speech` tells a silent recording.
"""

from __future__ import annotations

import importlib.resources as resources

import numpy as np
import onnxruntime as ort

WINDOW = 512  # samples at 16 kHz = 32 ms
CONTEXT = 64
RATE = 16000


def model_path() -> str:
    """The Silero ONNX file faster-whisper ships."""
    return str(resources.files("faster_whisper") / "assets" / "silero_vad_v6.onnx")


class SileroVad:
    """Stateful scorer: feed consecutive 512-sample windows, get speech probabilities."""

    _session: ort.InferenceSession | None = None  # shared: the session is stateless, the LSTM state is ours

    def __init__(self) -> None:
        if SileroVad._session is None:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.log_severity_level = 4
            SileroVad._session = ort.InferenceSession(model_path(), so, providers=["CPUExecutionProvider"])
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._ctx = np.zeros((1, CONTEXT), np.float32)

    def __call__(self, window: np.ndarray) -> float:
        if window.shape != (WINDOW,):
            raise ValueError(f"Silero VAD needs windows of {WINDOW} samples, got {window.shape}")
        x = np.concatenate([self._ctx, window[None, :].astype(np.float32)], axis=1)
        assert self._session is not None
        out, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._ctx = x[:, -CONTEXT:]
        return float(np.asarray(out).ravel()[0])


def window_probs(audio: np.ndarray) -> np.ndarray:
    """Silero's speech probability for each whole 32 ms window of a recording (fresh state)."""
    vad = SileroVad()
    return np.array([vad(audio[i * WINDOW : (i + 1) * WINDOW]) for i in range(len(audio) // WINDOW)], np.float32)


def speech_fraction(audio: np.ndarray, threshold: float = 0.5) -> float:
    """Share of 32 ms windows that Silero scores as speech: how we tell "silence only" from an utterance."""
    probs = window_probs(audio)
    return float(np.mean(probs >= threshold)) if len(probs) else 0.0


MIN_SPEECH_FRACTION = 0.02  # a recording with less speech than this is "silence or noise only"
NO_SPEECH_MESSAGE = "no speech was detected in the audio (silence or noise only)"


def has_speech(audio: np.ndarray) -> bool:
    """Whether a recording holds speech at all: checked before the recognizer is loaded or run (~10 ms a second)."""
    return speech_fraction(audio) >= MIN_SPEECH_FRACTION
