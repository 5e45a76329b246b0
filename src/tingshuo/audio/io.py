"""Audio at the edges: decode any file (wav/flac/ogg via libsndfile, mp3/m4a/… via PyAV), mix to mono, resample.

Inside the engine audio is 16 kHz mono float32 in [-1, 1] (``INPUT_RATE``); output is float32 at the TTS rate.
Every failure becomes an :class:`AudioError` with a sentence a user can act on, never a library traceback.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

INPUT_RATE = 16000


class AudioError(ValueError):
    """Input audio that cannot be used, with a message meant for the user."""


def to_mono(x: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) → (n,) float32 by averaging channels."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise AudioError(f"audio must be 1-D or (samples, channels), got shape {x.shape}")
    return x.astype(np.float32, copy=False)


def pcm16_to_float(data: bytes | np.ndarray) -> np.ndarray:
    arr = np.frombuffer(data, dtype="<i2") if isinstance(data, (bytes, bytearray, memoryview)) else data
    return arr.astype(np.float32) / 32768.0


def float_to_pcm16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """High-quality resampling (libsoxr); a no-op when the rates match."""
    if rate_in <= 0:
        raise AudioError(f"invalid sample rate {rate_in}")
    if rate_in == rate_out or len(x) == 0:
        return x.astype(np.float32, copy=False)
    return soxr.resample(x.astype(np.float32, copy=False), rate_in, rate_out, quality="HQ").astype(np.float32)


class StreamResampler:
    """Resamples a stream of frames to ``rate_out``, the filter's state kept from frame to frame (libsoxr's
    stream mode).

    Resampling each 20 ms frame on its own restarts the filter at every frame edge: a click per frame, which the
    VAD and the ASR hear. The input rate may change between frames (a client's new format): what the old rate left
    in the filter is flushed first, so no sample is lost.
    """

    def __init__(self, rate_out: int) -> None:
        self.rate_out = rate_out
        self._rate: int | None = None
        self._stream: soxr.ResampleStream | None = None

    def __call__(self, x: np.ndarray, rate_in: int) -> np.ndarray:
        if rate_in <= 0:
            raise AudioError(f"invalid sample rate {rate_in}")
        x = x.astype(np.float32, copy=False)
        tail = np.zeros(0, np.float32)
        if rate_in != self._rate:
            tail = self.flush()
            self._rate = rate_in
            if rate_in != self.rate_out:
                self._stream = soxr.ResampleStream(rate_in, self.rate_out, 1, dtype="float32", quality="HQ")
        y = x if self._stream is None else self._stream.resample_chunk(x)
        return np.concatenate([tail, y]) if len(tail) else y

    def flush(self) -> np.ndarray:
        """The samples still in the filter (the end of the stream, or before a change of rate)."""
        stream, self._stream, self._rate = self._stream, None, None
        if stream is None:
            return np.zeros(0, np.float32)
        return stream.resample_chunk(np.zeros(0, np.float32), last=True).astype(np.float32)


def _decode_av(source: str | io.BytesIO) -> tuple[np.ndarray, int]:
    """Formats libsndfile lacks (m4a, aac, webm/opus…) through FFmpeg's decoders bundled in PyAV."""
    import av  # heavy import, only when needed

    try:
        with av.open(source) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioError("the file holds no audio stream")
            rate = stream.codec_context.sample_rate or 0
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except AudioError:
        raise
    except Exception as e:  # av raises many error classes; all mean "not decodable"
        raise AudioError(f"cannot decode audio: {e}") from None
    if not chunks:
        return np.zeros(0, np.float32), rate
    return np.concatenate(chunks).astype(np.float32), rate


def load_audio(source: str | Path | bytes, rate: int = INPUT_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Decode a file or in-memory bytes to mono float32 at ``rate``.

    Raises :class:`AudioError` for a missing, empty, corrupt or over-long input.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"no such audio file: {path}")
        if path.stat().st_size == 0:
            raise AudioError(f"{path} is empty (0 bytes)")
        raw: str | io.BytesIO = str(path)
    else:
        if len(source) == 0:
            raise AudioError("the audio is empty (0 bytes)")
        raw = io.BytesIO(source)
    try:
        info = sf.info(raw)
        if max_seconds is not None and info.frames / max(info.samplerate, 1) > max_seconds:
            raise AudioError(
                f"the audio is {info.frames / info.samplerate / 60:.1f} min long; the limit is {max_seconds:.0f} s "
                "(set asr.max_seconds to raise it)"
            )
        if isinstance(raw, io.BytesIO):
            raw.seek(0)
        data, sr = sf.read(raw, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception:
        if isinstance(raw, io.BytesIO):
            raw.seek(0)
        data, sr = _decode_av(raw)
        if max_seconds is not None and sr and len(data) / sr > max_seconds:
            raise AudioError(f"the audio is {len(data) / sr / 60:.1f} min long; the limit is {max_seconds:.0f} s") from None
    mono = to_mono(data)
    if mono.size == 0 or not sr:
        raise AudioError("the audio holds no samples")
    if not np.all(np.isfinite(mono)):
        raise AudioError("the audio holds invalid (NaN/inf) samples")
    return resample(mono, int(sr), rate)


def write_wav(path: str | Path, audio: np.ndarray, rate: int) -> None:
    """16-bit PCM WAV, the format every player and our own ASR read."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16")


def rms_dbfs(x: np.ndarray) -> float:
    if len(x) == 0:
        return -120.0
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-9))
