"""Hearing how something was said, on real speech transformed by known amounts.

No labelled emotional speech ships in any registry (shared/research/paralinguistics.md), so the test set is made
here from real clips — the five LibriVox English clips (Debian pocketsphinx-testdata) and the two Mandarin FunASR
examples — each resynthesized with WORLD (pyworld) in these stated ways:

    pitch ×1.3 / ÷1.3      F0 scaled, everything else kept
    +6 dB / −6 dB          level (capped at 0.99 peak: no clipping)
    rate ×1.3 / ÷1.3       time axis of F0, envelope and aperiodicity resampled
    whisper                F0 = 0, fully aperiodic excitation

The speaker's baseline is the same clip resynthesized unchanged (so the vocoder's own colouring cancels out). The
checks: arousal rises for the first of each pair and falls for the second, the whisper flag is set on whispers
only, and the pace follows the rate changes — each ≥ 90 % over the set.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import CACHE, LIBRIVOX
from tingshuo.audio import prosody as P
from tingshuo.audio import world
from tingshuo.audio.io import resample
from tingshuo.dialogue.emotion import fuse

UP = {"pitch ×1.3": dict(shift=1.3), "+6 dB": dict(gain_db=6.0), "rate ×1.3": dict(tempo=1.3)}
DOWN = {"pitch ÷1.3": dict(shift=1 / 1.3), "−6 dB": dict(gain_db=-6.0), "rate ÷1.3": dict(tempo=1 / 1.3)}


def _clips() -> list:
    clips = sorted(LIBRIVOX.glob("*.wav")) + [CACHE / "testdata" / "fasr" / n for n in ("asr_example.wav", "vad_example.wav")]
    assert len(clips) == 7 and all(c.is_file() for c in clips), "test clips missing: run scripts/setup.sh"
    return clips


@pytest.fixture(scope="module")
def judged() -> list[tuple[str, str, P.ProsodyCues]]:
    out = []
    for path in _clips():
        x, sr = sf.read(path, dtype="float32")
        x = resample(x, sr, P.RATE)[: P.RATE * 8]
        base = P.SpeakerBaseline()
        ref = P.extract(world.transform(x, P.RATE))
        base.update(ref, False)
        for name, kw in {**UP, **DOWN, "whisper": dict(whisper=True)}.items():
            out.append((path.name, name, P.cues(P.extract(world.transform(x, P.RATE, **kw)), base)))
    return out


def test_arousal_direction_follows_pitch_level_and_rate(judged):
    right = [(c, n) for c, n, cu in judged if (n in UP and cu.arousal > 0) or (n in DOWN and cu.arousal < 0)]
    total = [(c, n) for c, n, _ in judged if n in UP or n in DOWN]
    wrong = sorted(set(total) - set(right))
    assert len(right) / len(total) >= 0.9, f"wrong direction: {wrong}"


def test_whisper_flag_only_on_whispers(judged):
    right = sum((n == "whisper") == cu.whisper for _, n, cu in judged)
    assert right / len(judged) >= 0.9
    assert all(cu.whisper for _, n, cu in judged if n == "whisper")
    assert all(cu.arousal < 0 for _, n, cu in judged if n == "whisper")  # a whisper is low-arousal speech


def test_pace_follows_rate(judged):
    """The measured rate moves the right way ≥ 90 %; the pace label (a ±15 % band) never contradicts it."""
    rated = [(n, cu) for _, n, cu in judged if n.startswith("rate")]
    right = sum((cu.relative["rate_log"] > 0) == ("×" in n) for n, cu in rated)
    assert right / len(rated) >= 0.9, [(n, cu.relative) for n, cu in rated]
    assert not [n for n, cu in rated if cu.pace == ("slow" if "×" in n else "hurried")]
    assert sum(cu.pace != "normal" for _, cu in rated) >= len(rated) // 2
    others = [cu.pace for _, n, cu in judged if n.startswith(("pitch", "+6", "−6"))]
    assert others.count("normal") / len(others) >= 0.9


def test_features_are_measured_not_guessed():
    x, sr = sf.read(_clips()[0], dtype="float32")
    x = resample(x, sr, P.RATE)
    f = P.extract(x)
    assert 80 < f.f0_median_hz < 130  # a male reader (LibriVox 0870)
    assert 0.5 < f.voiced_fraction < 0.85
    assert 2.0 < f.rate < 6.0  # syllable nuclei per second of read English
    w = P.extract(world.transform(x, P.RATE, whisper=True))
    assert w.voiced_fraction < 0.05 and w.f0_median_hz is None  # no pitch statistics on a whisper


def test_fusion_words_and_voice():
    base = P.SpeakerBaseline(turns=3, loudness_db=-25.0, f0_median_st=10.0)
    flat = P.ProsodyFeatures(3.0, 2.5, -31.0, 0.6, 90.0, 7.0, 2.0, 2.6, 1, 0.4)  # quieter, lower, flatter, slower
    low = P.cues(flat, base)
    assert low.arousal < -0.3 and low.pace == "slow"
    # "我没事" read as neutral-ish by the words, but said in a low, flat, slow voice: leans to sad/tired
    words = {"neutral": 0.5, "happy": 0.05, "sad": 0.25, "angry": 0.02, "anxious": 0.03, "tired": 0.15}
    r = fuse(words, low)
    assert r.label in ("sad", "tired") and r.source == "voice+text"
    # the voice alone never claims more than a coin flip
    assert fuse(None, low).confidence <= 0.5
    # clear words win over a neutral voice
    r = fuse({"neutral": 0.02, "happy": 0.95, "sad": 0.01, "angry": 0.01, "anxious": 0.005, "tired": 0.005},
             P.cues(P.ProsodyFeatures(3.0, 2.5, -25.0, 0.6, 90.0, 10.0, 4.0, 3.5, 0, 0.0), base))
    assert r.label == "happy" and r.confidence > 0.8
