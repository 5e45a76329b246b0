"""Voice evidence in the care decision (issue 20, item 5): a low, flat voice raises attention — words the guard
reads as borderline get care when said that way — and never switches care on by itself."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from tests.conftest import CACHE, one_turn
from tingshuo.audio import prosody as P
from tingshuo.audio import world
from tingshuo.audio.io import load_audio
from tingshuo.config import SafetyConfig
from tingshuo.dialogue.care import borderline, voice_low
from tingshuo.dialogue.emotion import fuse
from tingshuo.safety import Verdict
from tingshuo.tts import VoiceSettings

# the care probe reads these words at 0.27, typed and as heard: under its threshold (0.3), over the floor
# (safety.voice_care_floor, 0.2); the guard's P(自杀) 0.54
BORDERLINE = "我是不是很没用"
ORDINARY = "我吃过午饭了，下午准备在家看会儿书"
NAME = "我叫李雷，请记住我的名字"  # P(care) 0.27 too, but P(自杀) 0.009
USUAL = "你好呀，今天我想跟你随便聊聊天，可以吗"  # the user's usual voice, heard before
# quiet, slow and flat: our TTS's way of saying it low (against the usual voice: -0.85 for a longer sentence, the
# normal voice +0.06)
FLAT = VoiceSettings(speed=0.7, volume=0.4, pitch=0.9, pitch_range=0.4)


def _spoken(tts, text: str, voice: VoiceSettings) -> np.ndarray:
    return soxr.resample(tts.synthesize(text, voice, "zh"), tts.sample_rate, 16000).astype(np.float32)


def _turn(stack, audio: np.ndarray, usual: "P.ProsodyFeatures") -> dict:
    # the session has heard the user's usual voice once (what an earlier turn leaves in the baseline)
    events, s = one_turn(stack, audio=audio, prepare=lambda s: s.state.baseline.update(usual, False))
    heard = next(e.text for e in events if e.type == "transcript.final")
    para = next((e for e in events if e.type == "paralinguistics"), None)
    verdict = next((e for e in events if e.type == "safety.verdict"), None)
    cared = [e for e in events if e.type == "care.changed" and e.on]
    return {"heard": heard, "arousal": para.arousal if para else None, "care": s.state.care,
            "reason": cared[0].reason if cared else None, "verdict": verdict,
            "scores": stack.guard.check_input(heard).scores}


@pytest.mark.slow
def test_a_low_voice_raises_attention_but_never_cares_alone(stack, tts):
    usual = P.extract(_spoken(tts, USUAL, VoiceSettings()))
    low = _turn(stack, _spoken(tts, BORDERLINE, FLAT), usual)
    normal = _turn(stack, _spoken(tts, BORDERLINE, VoiceSettings()), usual)
    plain = _turn(stack, _spoken(tts, ORDINARY, FLAT), usual)
    name = _turn(stack, _spoken(tts, NAME, FLAT), usual)
    cfg = stack.settings.safety
    # the measurement the rule rests on: the flat voice is low, the normal one is not
    assert low["arousal"] is not None and low["arousal"] <= cfg.voice_low_arousal, low
    assert normal["arousal"] is not None and normal["arousal"] > cfg.voice_low_arousal, normal
    assert plain["arousal"] is not None and plain["arousal"] <= cfg.voice_low_arousal, plain
    # borderline words in a low voice: care, and it says why
    assert low["care"] and low["reason"] == "voice_distress", repr(low)
    # the same words in a normal voice, and ordinary words in the low one: no care
    assert not normal["care"], normal
    assert not plain["care"], plain
    assert not name["care"], name


def test_voice_evidence_is_measured_prosody_with_borderline_words():
    """Real Mandarin speech (the FunASR example) against its own baseline: made quieter, lower and slower by WORLD
    it reads as low; unchanged or whispered it does not; a reading from words alone (no cues) never does. The
    words' side: the care probe's P(care) between the floor and its threshold, P(自杀) without a probe."""
    cfg = SafetyConfig()
    x = load_audio(CACHE / "testdata" / "fasr" / "asr_example.wav", P.RATE)[: P.RATE * 8]
    base = P.SpeakerBaseline()
    base.update(P.extract(world.transform(x, P.RATE)), False)

    def reading(**kw):
        return fuse(None, P.cues(P.extract(world.transform(x, P.RATE, **kw)), base))

    low = reading(shift=1 / 1.3, gain_db=-9.0, tempo=1 / 1.3)
    assert voice_low(low, cfg), low.cues
    assert not voice_low(reading(), cfg)
    assert not voice_low(reading(whisper=True, gain_db=-9.0), cfg)
    assert not voice_low(fuse({"sad": 0.9, "neutral": 0.1}, None), cfg)  # sad words, typed: not the voice
    assert not voice_low(None, cfg)
    assert borderline(Verdict("allow", "none", 0.9, {"care_probe": cfg.voice_care_floor + 0.01, "self_harm": 0.2}), cfg)
    assert not borderline(Verdict("allow", "none", 0.9, {"care_probe": cfg.voice_care_floor - 0.01,
                                                          "self_harm": 0.5}), cfg)  # the probe decides where it ran
    assert borderline(Verdict("allow", "none", 0.9, {"self_harm": cfg.voice_care_floor}), cfg)
    # both readings of the guard's pass must see something (the probe alone reads a name statement at 0.27)
    assert not borderline(Verdict("allow", "none", 0.9, {"care_probe": 0.27, "self_harm": 0.009}), cfg)
    assert borderline(Verdict("allow", "none", 0.9, {"care_probe": 0.27, "self_harm": 0.54}), cfg)
