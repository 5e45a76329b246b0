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


def test_a_stream_of_frames_is_resampled_without_clicks_at_the_frame_edges(en_clips):
    """20 ms frames of real speech at 48 kHz through the session's stream resampler come out as the whole
    recording resampled at once (a one-shot resample per frame does not: its error peaks at every frame edge);
    a change of rate mid-stream loses no sample."""
    from tingshuo.audio.io import StreamResampler

    speech = load_audio(next(iter(en_clips)), rate=48000)[: 48000 * 3]
    whole = resample(speech, 48000, 16000)
    frames = [speech[i : i + 960] for i in range(0, len(speech), 960)]
    r = StreamResampler(16000)
    streamed = np.concatenate([r(f, 48000) for f in frames] + [r.flush()])
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole))
    lag = int(np.argmax(np.correlate(streamed[1000:9000], whole[1000:8000], "valid")))  # the filter's delay
    err = streamed[lag : lag + n - 100] - whole[: n - 100 - lag][: len(streamed[lag : lag + n - 100])]
    snr = 10 * np.log10(np.mean(whole**2) / (np.mean(err**2) + 1e-20))
    one_shot = np.concatenate([resample(f, 48000, 16000) for f in frames])
    bad = 10 * np.log10(np.mean(whole**2) / np.mean((one_shot[: n - 100] - whole[: n - 100]) ** 2))
    assert lag < 100 and snr > 60 and bad < 45, (lag, snr, bad)  # measured: 0, 177 dB, 33 dB
    # 8 kHz frames, then 16 kHz (no filter), then 8 kHz again: every input second is an output second
    r = StreamResampler(16000)
    out = [r(np.zeros(1600, np.float32), 8000), r(np.zeros(3200, np.float32), 16000),
           r(np.zeros(800, np.float32), 8000), r.flush()]
    assert abs(sum(map(len, out)) - (3200 + 3200 + 1600)) <= 4
    with pytest.raises(AudioError):
        r(np.zeros(10, np.float32), 0)
