"""Real Kokoro/Piper synthesis checked back through our ASR, plus acoustic checks of the Mandarin tone repair."""

from __future__ import annotations

import numpy as np
import pytest
from textmetrics import cer, wer

from tingshuo.audio.io import resample
from tingshuo.tts import VoiceSettings

pytestmark = pytest.mark.slow

ZH = ["今天天气真不错，我们一起去公园散步吧。", "我明天早上八点要去北京开会。", "请帮我打开客厅的灯，然后播放一首轻松的音乐。"]
EN = ["Hello, I'm your assistant. The weather is lovely today.", "Shall we take a walk in the park this afternoon?"]


def heard(recognizer, tts, text, lang):
    audio = tts.synthesize(text, VoiceSettings(), lang)
    assert audio.dtype == np.float32 and len(audio) > 0.3 * tts.sample_rate
    assert np.max(np.abs(audio)) <= 1.0 and np.sqrt(np.mean(audio**2)) > 0.01
    return recognizer.transcribe(resample(audio, tts.sample_rate, 16000), lang).text


@pytest.mark.parametrize("text", ZH)
def test_chinese_roundtrip_cer(recognizer, tts, text):
    hyp = heard(recognizer, tts, text, "zh")
    assert cer(text.replace("Bluetooth", ""), hyp) <= 0.25, hyp


@pytest.mark.parametrize("text", EN)
def test_english_roundtrip_wer(recognizer, tts, text):
    hyp = heard(recognizer, tts, text, "en")
    assert wer(text, hyp) <= 0.15, hyp


def test_speed_changes_duration(tts):
    slow = tts.synthesize("我们一起去公园散步吧。", VoiceSettings(speed=0.8), "zh")
    fast = tts.synthesize("我们一起去公园散步吧。", VoiceSettings(speed=1.25), "zh")
    assert len(slow) > 1.3 * len(fast)


def f0_track(x: np.ndarray, sr: int, fmin: float = 120, fmax: float = 500) -> np.ndarray:
    """Plain autocorrelation pitch per 10 ms (0 = unvoiced): an independent measurement, not our model's F0."""
    win, hop = int(0.04 * sr), int(0.01 * sr)
    lo, hi = int(sr / fmax), int(sr / fmin)
    out = []
    for i in range(0, len(x) - win, hop):
        f = x[i:i + win] - x[i:i + win].mean()
        if np.sqrt(np.mean(f**2)) < 0.02:
            out.append(0.0)
            continue
        ac = np.correlate(f, f, "full")[win - 1:]
        lag = lo + int(np.argmax(ac[lo:hi]))
        out.append(sr / lag if ac[lag] > 0.5 * ac[0] else 0.0)
    return np.array(out)


def rise_fall(audio: np.ndarray, sr: int) -> tuple[float, float]:
    f0 = f0_track(audio, sr)
    st = 12 * np.log2(np.where(f0 > 0, f0, 1.0))
    steps = [st[i + 1] - st[i] for i in range(len(f0) - 1) if f0[i] > 0 and f0[i + 1] > 0]
    steps = np.array([d for d in steps if abs(d) < 2.0])  # drop octave errors
    return float(np.mean(steps > 0.05)), float(np.mean(steps < -0.05))


def test_tone_repair_gives_rising_and_falling_tones(tts):
    """Tone 2 phrase 人民银行 must rise more and fall less than tone 4 phrase 重要会议 (measured on the audio)."""
    kok = tts.backend("kokoro")
    r2, f2 = rise_fall(kok.synthesize("人民银行。", VoiceSettings()), kok.sample_rate)
    r4, f4 = rise_fall(kok.synthesize("重要会议。", VoiceSettings()), kok.sample_rate)
    assert r2 > r4 + 0.1 and f4 > f2 + 0.1, (r2, f2, r4, f4)
