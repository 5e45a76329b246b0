"""Speaker embeddings: Resemblyzer's GE2E voice encoder (Apache-2.0), run in numpy.

What it is for: telling voices apart by measurement — the character voices must be mutually distinct, a
persona must keep its voice across turns, a story's lines must switch voice where they are attributed
(tests/test_voices.py, tests/test_story.py, ``tingshuo voices --measure``). On real Mandarin speech the same
speaker scores cosine ≈ 0.83 (min 0.71), different speakers ≈ 0.46 (max 0.52), shared/research/paralinguistics.md.

Why a port and not ``import resemblyzer``: the package imports torch at import time, and torch from PyPI on
Linux is the CUDA build (≈ 6 GB of wheels, shared/research/tts.md "Gotchas"). The network is small (3-layer
LSTM 40→256, a linear layer, ReLU, L2 norm; 1.4 M weights), so its forward pass is written here in numpy and
the weights are read from the installed package's ``pretrained.pt`` (``pip install --no-deps resemblyzer``)
with a small reader for torch's legacy pickle format. Input features follow ``resemblyzer.audio``: 40-band
Slaney mel power spectrogram (25 ms window, 10 ms hop at 16 kHz, not log), the utterance cut into 1.6 s
partials at 1.3 per second, their embeddings averaged. Volume normalization (to −30 dBFS, increase only) is
the same; long silences are trimmed with our Silero VAD instead of webrtcvad.
"""

from __future__ import annotations

import importlib.util
import pickle
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
N_MELS = 40
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
PARTIAL_FRAMES = 160  # 1.6 s
SAME_SPEAKER = 0.8  # cosine on real speech at or above which two clips are taken as one voice (see module doc)


class SpeakerModelMissing(RuntimeError):
    pass


def weights_path() -> Path:
    """``pretrained.pt`` of the installed resemblyzer package, found without importing it (that imports torch)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise SpeakerModelMissing(
            "speaker embeddings need resemblyzer's weights: pip install --no-deps resemblyzer==0.1.4")
    return Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"


def load_legacy_torch(path: Path) -> dict[str, np.ndarray]:
    """A ``state_dict`` saved by torch < 1.6 (pickle stream + raw storages) → numpy arrays, without torch."""
    storages: dict[str, tuple[str, np.ndarray | None, int]] = {}
    dtypes = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64,
              "IntStorage": np.int32, "HalfStorage": np.float16}

    class _Storage:
        def __init__(self, key: str) -> None:
            self.key = key

    def rebuild(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: object) -> tuple:
        return ("tensor", storage.key, offset, tuple(size), tuple(stride))

    class Reader(pickle.Unpickler):
        def find_class(self, module: str, name: str):  # type: ignore[override]
            if (module, name) == ("collections", "OrderedDict"):
                return OrderedDict
            if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                return rebuild
            if module == "torch" and name in dtypes:
                return name
            raise pickle.UnpicklingError(f"unexpected class {module}.{name} in {path.name}")

        def persistent_load(self, pid):  # type: ignore[override]
            _, dtype_name, key, _location, size = pid[:5]
            storages.setdefault(key, (dtype_name, None, int(size)))
            return _Storage(key)

    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(f)
        obj = Reader(f).load()
        keys = pickle.load(f)
        for key in keys:
            dtype_name, _, size = storages[key]
            dt = np.dtype(dtypes[dtype_name])
            n = int(np.frombuffer(f.read(8), "<i8")[0])
            storages[key] = (dtype_name, np.frombuffer(f.read(n * dt.itemsize), dt).copy(), n)

    def tensor(t: tuple) -> np.ndarray:
        _, key, offset, size, stride = t
        data = storages[key][1]
        assert data is not None
        return np.lib.stride_tricks.as_strided(data[offset:], size, [s * data.itemsize for s in stride]).copy()

    state = obj["model_state"] if "model_state" in obj else obj
    return {k: tensor(v) for k, v in state.items() if isinstance(v, tuple) and v and v[0] == "tensor"}


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    from tingshuo.audio._whisper_features import mel_filterbank

    # librosa.filters.mel(sr=16000, n_fft=400, n_mels=40), Slaney scale and norm: (201, 40)
    return mel_filterbank(WINDOW // 2 + 1, N_MELS, 0.0, SAMPLE_RATE / 2, SAMPLE_RATE).astype(np.float32)


def mel_frames(wav: np.ndarray) -> np.ndarray:
    """(frames, 40) mel power spectrogram as ``librosa.feature.melspectrogram`` computes it (centred frames)."""
    x = np.pad(np.asarray(wav, np.float32), WINDOW // 2)
    n = 1 + (len(x) - WINDOW) // HOP
    idx = np.arange(WINDOW)[None, :] + HOP * np.arange(n)[:, None]
    win = np.hanning(WINDOW + 1)[:-1].astype(np.float32)  # periodic Hann, as scipy.signal.get_window
    spec = np.abs(np.fft.rfft(x[idx] * win, axis=1)) ** 2
    return (spec @ _mel_basis()).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class SpeakerEncoder:
    """utterance (any rate) → 256-d L2-normed embedding; ``similarity`` is their cosine."""

    def __init__(self, path: Path | None = None) -> None:
        w = load_legacy_torch(path or weights_path())
        self.layers = []
        for i in range(3):
            wi, wh = w[f"lstm.weight_ih_l{i}"], w[f"lstm.weight_hh_l{i}"]
            b = w[f"lstm.bias_ih_l{i}"] + w[f"lstm.bias_hh_l{i}"]
            self.layers.append((wi.T.copy(), wh.T.copy(), b))
        self.linear = (w["linear.weight"].T.copy(), w["linear.bias"])
        self._lock = threading.Lock()
        self._vad = None

    def _forward(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, 40) → (batch, 256): torch.nn.LSTM gate order i, f, g, o; last layer's final h."""
        x = mels
        for wi, wh, b in self.layers:
            batch, steps, _ = x.shape
            hid = wh.shape[0]
            pre = x @ wi + b  # the input projection for every step at once
            h = np.zeros((batch, hid), np.float32)
            c = np.zeros((batch, hid), np.float32)
            out = np.empty((batch, steps, hid), np.float32)
            for t in range(steps):
                g = pre[:, t] + h @ wh
                i, f, gg, o = _sigmoid(g[:, :hid]), _sigmoid(g[:, hid:2 * hid]), np.tanh(g[:, 2 * hid:3 * hid]), \
                    _sigmoid(g[:, 3 * hid:])
                c = f * c + i * gg
                h = o * np.tanh(c)
                out[:, t] = h
            x = out
        e = np.maximum(x[:, -1] @ self.linear[0] + self.linear[1], 0.0)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-9)

    def preprocess(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        from tingshuo.audio.io import resample

        wav = resample(np.asarray(audio, np.float32), sample_rate, SAMPLE_RATE)
        wav = self._trim_silence(wav)
        rms = float(np.sqrt(np.mean(wav**2))) if len(wav) else 0.0
        if 0 < rms < 10 ** (-30 / 20):  # normalize_volume(-30 dBFS, increase_only=True)
            wav = wav * (10 ** (-30 / 20) / rms)
        return wav

    def _trim_silence(self, wav: np.ndarray) -> np.ndarray:
        """Keep speech plus up to ~0.2 s of pause around it (resemblyzer keeps ≤ 6 × 30 ms of silence)."""
        from tingshuo.audio.vad import WINDOW as VAD_WINDOW, SileroVad

        if len(wav) < VAD_WINDOW * 4:
            return wav
        if self._vad is None:
            self._vad = SileroVad()
        vad = self._vad
        vad.reset()
        n = len(wav) // VAD_WINDOW
        speech = np.array([vad(wav[i * VAD_WINDOW:(i + 1) * VAD_WINDOW]) > 0.5 for i in range(n)])
        if not speech.any():
            return wav
        keep = np.convolve(speech.astype(float), np.ones(13), "same") > 0  # dilate by 6 windows each side
        mask = np.repeat(keep, VAD_WINDOW)
        return wav[: len(mask)][mask]

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        wav = self.preprocess(audio, sample_rate)
        # resemblyzer's compute_partial_slices(rate=1.3, min_coverage=0.75)
        n_frames = int(np.ceil((len(wav) + 1) / HOP))
        step = int(round(SAMPLE_RATE / 1.3 / HOP))
        starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
        last = starts[-1] * HOP
        if len(starts) > 1 and (len(wav) - last) / (PARTIAL_FRAMES * HOP) < 0.75:
            starts = starts[:-1]
        need = (starts[-1] + PARTIAL_FRAMES) * HOP
        if need >= len(wav):
            wav = np.pad(wav, (0, need - len(wav)))
        mel = mel_frames(wav)
        mels = np.stack([mel[s:s + PARTIAL_FRAMES] for s in starts])
        with self._lock:
            partial = self._forward(mels)
        e = partial.mean(axis=0)
        return (e / np.linalg.norm(e)).astype(np.float32)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
