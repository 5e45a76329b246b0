from __future__ import annotations

import numpy as np

from tingshuo.audio.io import load_audio
from tingshuo.audio.vad import VadSegmenter, speech_fraction


def test_segments_real_speech_between_silences(en_clips):
    clips = [load_audio(p) for p in list(en_clips)[:2]]
    gap = np.zeros(16000, np.float32)
    stream = np.concatenate([gap, clips[0], gap, clips[1], gap])
    seg = VadSegmenter()
    events = []
    for i in range(0, len(stream), 320):  # 20 ms frames
        events += seg.feed(stream[i:i + 320])
    events += seg.flush()
    kinds = [e.kind for e in events]
    assert kinds == ["start", "end", "start", "end"], kinds
    ends = [e for e in events if e.kind == "end"]
    for e, clip in zip(ends, clips):
        assert abs(len(e.audio) - len(clip)) < 0.6 * 16000  # whole utterance, padding included
    assert abs(events[0].sample / 16000 - 1.0) < 0.5


def test_silence_and_noise_are_not_speech():
    rng = np.random.default_rng(1)
    assert speech_fraction(np.zeros(48000, np.float32)) == 0.0
    assert speech_fraction(0.01 * rng.standard_normal(48000).astype(np.float32)) < 0.05
    seg = VadSegmenter()
    assert seg.feed(np.zeros(48000, np.float32)) == [] and seg.flush() == []
