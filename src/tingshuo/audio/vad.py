"""Streaming voice activity detection: Silero VAD v6 (MIT) through onnxruntime, no torch.

The ONNX file is the one faster-whisper ships (``faster_whisper/assets/silero_vad_v6.onnx``), so the VAD costs
no extra package. It scores 32 ms windows (512 samples at 16 kHz, plus 64 samples of left context) carrying
its LSTM state between calls; ~0.2 ms per window on one core (shared/research/paralinguistics.md).
:class:`VadSegmenter` turns the probabilities into utterance start/end with hysteresis, a minimum speech
length (drops clicks) and padding (keeps word onsets for ASR).
"""

from __future__ import annotations

import importlib.resources as resources
from collections import deque
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from tingshuo.config import VadConfig

WINDOW = 512  # samples at 16 kHz = 32 ms
CONTEXT = 64
RATE = 16000


def _model_path() -> str:
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
            SileroVad._session = ort.InferenceSession(_model_path(), so, providers=["CPUExecutionProvider"])
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


@dataclass
class VadEvent:
    kind: str  # "start" | "end"
    sample: int  # absolute sample index in the input stream (16 kHz)
    audio: np.ndarray | None = None  # on "end": the utterance with padding


class VadSegmenter:
    """Cuts a 16 kHz stream of any frame size into utterances.

    ``feed(frame)`` returns the events the frame completed; audio is buffered so that an utterance comes back
    whole (from ``speech_pad_ms`` before onset to ``speech_pad_ms`` after the last speech window).
    """

    def __init__(self, cfg: VadConfig | None = None) -> None:
        self.cfg = cfg or VadConfig()
        self.vad = SileroVad()
        self._pending = np.zeros(0, np.float32)
        self._pos = 0  # samples scored so far
        pad = int(self.cfg.speech_pad_ms * RATE / 1000)
        self._pre: deque[np.ndarray] = deque(maxlen=max(1, pad // WINDOW + 1))
        self._speech: list[np.ndarray] = []
        self._in_speech = False
        self._start = 0
        self._silence = 0  # samples of silence since the last speech window
        self._voiced = 0  # samples of speech in the current utterance
        self.last_prob = 0.0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def current_audio(self) -> np.ndarray:
        """The utterance so far (for partial transcripts while the user is still talking)."""
        return np.concatenate(self._speech) if self._speech else np.zeros(0, np.float32)

    def feed(self, frame: np.ndarray) -> list[VadEvent]:
        self._pending = np.concatenate([self._pending, frame.astype(np.float32, copy=False)])
        events: list[VadEvent] = []
        n = len(self._pending) // WINDOW
        for i in range(n):
            window = self._pending[i * WINDOW : (i + 1) * WINDOW]
            ev = self._step(window)
            if ev is not None:
                events.append(ev)
        self._pending = self._pending[n * WINDOW :]
        return events

    def flush(self) -> list[VadEvent]:
        """End of stream: close an open utterance (a file that ends mid-word still gets transcribed)."""
        if self._pending.size:
            self._pending = np.pad(self._pending, (0, WINDOW - self._pending.size))
            ev = self._step(self._pending)
            self._pending = np.zeros(0, np.float32)
            if ev is not None and ev.kind == "end":
                return [ev]
            events = [ev] if ev is not None else []
        else:
            events = []
        if self._in_speech:
            events.append(self._close())
        return events

    def _step(self, window: np.ndarray) -> VadEvent | None:
        p = self.vad(window)
        self.last_prob = p
        self._pos += WINDOW
        cfg = self.cfg
        if not self._in_speech:
            self._pre.append(window)
            if p >= cfg.threshold:
                self._in_speech = True
                self._speech = list(self._pre)
                self._pre.clear()
                self._start = self._pos - WINDOW * len(self._speech)
                self._silence = 0
                self._voiced = WINDOW
                return VadEvent("start", self._start)
            return None
        self._speech.append(window)
        if p >= cfg.neg_threshold:
            self._silence = 0
            self._voiced += WINDOW
            return None
        self._silence += WINDOW
        if self._silence >= cfg.min_silence_ms * RATE // 1000:
            if self._voiced < cfg.min_speech_ms * RATE // 1000:
                self._reset_utterance()  # a click or a cough: not an utterance
                return None
            return self._close()
        return None

    def _close(self) -> VadEvent:
        pad = self.cfg.speech_pad_ms * RATE // 1000
        keep_tail = max(0, self._silence - pad) // WINDOW
        speech = self._speech[: len(self._speech) - keep_tail] if keep_tail else self._speech
        audio = np.concatenate(speech) if speech else np.zeros(0, np.float32)
        end = self._start + len(audio)
        self._reset_utterance()
        return VadEvent("end", end, audio)

    def _reset_utterance(self) -> None:
        self._in_speech = False
        self._speech = []
        self._silence = 0
        self._voiced = 0


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
