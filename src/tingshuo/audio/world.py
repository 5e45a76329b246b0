"""WORLD vocoder transforms (pyworld, MIT): pitch, pitch range, tempo, whisper and gain on real speech.

Used for two things that need the same controlled edits:

- expressive speech from backends that have no pitch input (Piper): a style's F0 shift and range, a whisper;
- test material for the paralinguistic analyzer: real clips made higher, louder, faster or whispered by stated
  amounts (no labelled emotional speech ships in any registry, shared/research/paralinguistics.md).

WORLD splits speech into F0, spectral envelope and aperiodicity; each can be edited independently and the
speech resynthesized (0.35 s of DSP for 6.9 s of audio on one core, shared/research/tts.md). pyworld is written
by hand here only in the sense of choosing its calls: dio + stonemask for F0 (fast, 5 ms frames), CheapTrick,
D4C, then ``synthesize``.
"""

from __future__ import annotations

import numpy as np

FRAME_MS = 5.0


def analyze(audio: np.ndarray, sr: int, robust: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(f0, spectral envelope, aperiodicity) at 5 ms frames.

    ``robust``: Harvest instead of DIO + StoneMask for F0 (~20× slower, 0.1 s per second of audio). On a low
    male voice (Piper's joe, ~100 Hz) DIO finds half the voiced frames, often an octave up, and the pitch edit
    then lands an octave off.
    """
    import pyworld as pw

    x = np.ascontiguousarray(audio, dtype=np.float64)
    if robust:
        f0, t = pw.harvest(x, sr, frame_period=FRAME_MS, f0_floor=60.0, f0_ceil=500.0)
    else:
        f0, t = pw.dio(x, sr, frame_period=FRAME_MS, f0_floor=60.0, f0_ceil=800.0)
        f0 = pw.stonemask(x, f0, t, sr)
    sp = pw.cheaptrick(x, f0, t, sr)
    ap = pw.d4c(x, f0, t, sr)
    return f0, sp, ap


def reshape_f0(f0: np.ndarray, shift: float = 1.0, range_scale: float = 1.0) -> np.ndarray:
    """Scale the pitch range (in log-F0, around the voiced mean) and then the pitch level; 0 stays unvoiced."""
    out = np.asarray(f0, np.float64).copy()
    v = out > 0
    if v.sum() < 2:
        return out
    log = np.log(out[v])
    mean = log.mean()
    out[v] = np.exp(mean + range_scale * (log - mean)) * shift
    return out


def retime(frames: np.ndarray, tempo: float) -> np.ndarray:
    """Resample a frame sequence in time: tempo 1.3 = 30 % faster (fewer frames), pitch untouched."""
    n = len(frames)
    m = max(1, int(round(n / tempo)))
    idx = np.minimum(np.round(np.arange(m) * tempo).astype(int), n - 1)
    return frames[idx]


def transform(audio: np.ndarray, sr: int, *, shift: float = 1.0, range_scale: float = 1.0, tempo: float = 1.0,
              whisper: bool = False, gain_db: float = 0.0, robust: bool = False) -> np.ndarray:
    """Resynthesize ``audio`` with the pitch level × ``shift``, range × ``range_scale``, ``tempo`` × faster,
    whispered (F0 = 0, fully aperiodic excitation) and ``gain_db`` louder."""
    import pyworld as pw

    if len(audio) < sr // 20:
        return np.asarray(audio, np.float32)
    f0, sp, ap = analyze(audio, sr, robust and not whisper)
    if whisper:
        f0 = np.zeros_like(f0)
        ap = np.ones_like(ap)
    else:
        f0 = reshape_f0(f0, shift, range_scale)
    if tempo != 1.0:
        f0, sp, ap = retime(f0, tempo), retime(sp, tempo), retime(ap, tempo)
    y = pw.synthesize(np.ascontiguousarray(f0), np.ascontiguousarray(sp), np.ascontiguousarray(ap), sr,
                      frame_period=FRAME_MS)
    y = y * 10 ** (gain_db / 20)
    peak = float(np.abs(y).max()) if len(y) else 0.0
    if peak > 0.99:  # a louder variant must not clip: clipping adds harmonics the analyzer would measure
        y *= 0.99 / peak
    return y.astype(np.float32)
