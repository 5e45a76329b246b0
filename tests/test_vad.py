"""Silero VAD on real speech: the streaming scorer carries its state across windows, speech scores high and the
gaps between utterances low; silence and noise are not speech. (Utterance segmentation with hysteresis and
padding is the session's, exercised by the duplex scenarios.)"""

from __future__ import annotations

import numpy as np
import pytest

from tingshuo.audio.io import load_audio
from tingshuo.audio.vad import WINDOW, SileroVad, has_speech, speech_fraction, window_probs


def test_real_speech_scores_high_and_the_gaps_low(en_clips):
    clips = [load_audio(p) for p in list(en_clips)[:2]]
    gap = np.zeros(16000, np.float32)
    stream = np.concatenate([gap, clips[0], gap, clips[1], gap])
    vad = SileroVad()
    probs = np.array([vad(stream[i:i + WINDOW]) for i in range(0, len(stream) - WINDOW + 1, WINDOW)])
    t = np.arange(len(probs)) * WINDOW / 16000
    a0, a1 = 1.0, 1.0 + len(clips[0]) / 16000
    b0, b1 = a1 + 1.0, a1 + 1.0 + len(clips[1]) / 16000
    inside = ((t > a0 + 0.3) & (t < a1 - 0.3)) | ((t > b0 + 0.3) & (t < b1 - 0.3))
    gaps = (t < a0 - 0.1) | ((t > a1 + 0.4) & (t < b0 - 0.1)) | (t > b1 + 0.4)
    assert np.mean(probs[inside] >= 0.5) > 0.6, np.mean(probs[inside] >= 0.5)  # words, not the pauses between them
    assert np.mean(probs[gaps] < 0.35) > 0.95
    # the state carried across windows is what the whole-recording helper computes from a fresh start
    assert np.allclose(window_probs(stream)[:50], probs[:50], atol=1e-5)
    assert has_speech(clips[0]) and speech_fraction(clips[1]) > 0.3


def test_silence_and_noise_are_not_speech():
    rng = np.random.default_rng(1)
    assert speech_fraction(np.zeros(48000, np.float32)) == 0.0
    assert speech_fraction(0.01 * rng.standard_normal(48000).astype(np.float32)) < 0.05
    assert not has_speech(np.zeros(48000, np.float32))
    with pytest.raises(ValueError, match="512 samples"):
        SileroVad()(np.zeros(320, np.float32))
