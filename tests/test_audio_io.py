"""Audio edges: formats, rates, channels, and every kind of bad input gives an AudioError with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tingshuo.audio.io import AudioError, load_audio, resample, write_wav


def test_8k_stereo_and_formats_become_16k_mono(tmp_path, en_clips):
    clip = next(iter(en_clips))
    ref = load_audio(clip)
    x8 = resample(ref, 16000, 8000)
    stereo = np.stack([x8, 0.5 * x8], axis=1)
    for ext, kw in (("wav", {}), ("flac", {}), ("ogg", {"subtype": "VORBIS"}), ("mp3", {"format": "MP3"})):
        p = tmp_path / f"c.{ext}"
        sf.write(p, stereo, 8000, **kw)
        y = load_audio(p)
        assert abs(len(y) - len(ref)) < 16000 * 0.1, ext  # same duration at 16 kHz
        assert y.ndim == 1 and y.dtype == np.float32
        # the content survives: the mono mix equals 0.75 × the band-limited original (lossless formats), and the
        # loudness is preserved (lossy formats, whose encoders add delay)
        ref8 = resample(x8, 8000, 16000)
        n = min(len(y), len(ref8))
        if ext in ("wav", "flac"):
            assert np.corrcoef(y[:n], ref8[:n])[0, 1] > 0.99, ext
        rms = np.sqrt(np.mean(y**2)) / np.sqrt(np.mean(ref8**2))
        assert 0.6 < rms < 0.9, (ext, rms)


def test_bad_inputs_raise_clear_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError, match="decode"):
        load_audio(corrupt)
    with pytest.raises(AudioError, match="no such"):
        load_audio(tmp_path / "missing.wav")
    hour = tmp_path / "hour.wav"
    with sf.SoundFile(hour, "w", 8000, 1, "PCM_16") as f:
        block = np.zeros(8000 * 60, np.int16)
        for _ in range(60):
            f.write(block)
    with pytest.raises(AudioError, match="min long"):
        load_audio(hour, max_seconds=600)


def test_write_wav_roundtrip(tmp_path):
    x = 0.3 * np.sin(2 * np.pi * 220 * np.arange(24000) / 24000).astype(np.float32)
    write_wav(tmp_path / "a.wav", x, 24000)
    y, sr = sf.read(tmp_path / "a.wav", dtype="float32")
    assert sr == 24000 and np.max(np.abs(y - x)) < 1e-3
