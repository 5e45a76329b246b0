"""Acoustic end-of-turn: smart-turn v3.2 (Daily, BSD-2), vendored from the ``pipecat-ai==1.14.0`` wheel.

``data/smart-turn-v3.2-cpu.onnx`` (8.7 MB, sha256 2bb02631…967e4f) and ``_whisper_features.py`` (numpy-only
log-mel, BSD-2 / Apache-2.0 portions) are copied verbatim; the licence is ``data/LICENSE.smart-turn``. Vendoring
avoids ``pipecat-ai`` and its dependency tree for one 8.7 MB file. The model reads the last 8 s of the user's
turn and says whether the speaker sounds finished (intonation, lengthening, a trailing "um"); it is called once
the VAD reports a short silence, ~30 ms per call on one core (shared/research/paralinguistics.md).
"""

from __future__ import annotations

import importlib.resources as resources
import threading

import numpy as np
import onnxruntime as ort

from tingshuo.audio._whisper_features import compute_whisper_log_mel_features

RATE = 16000
WINDOW_S = 8


class SmartTurn:
    """``probability(audio16k) -> P(turn is complete)``; thread-safe (one ORT session, calls serialised)."""

    def __init__(self, threads: int = 1) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 4
        path = resources.files("tingshuo.audio") / "data" / "smart-turn-v3.2-cpu.onnx"
        self._session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()

    def probability(self, audio: np.ndarray) -> float:
        x = np.asarray(audio, np.float32)[-WINDOW_S * RATE :]
        x = np.pad(x, (WINDOW_S * RATE - len(x), 0))  # left-padded, as the model was trained
        feats = compute_whisper_log_mel_features(x, do_normalize=True)[None].astype(np.float32)
        with self._lock:
            out = self._session.run(None, {"input_features": feats})[0]
        return float(np.asarray(out).ravel()[0])
