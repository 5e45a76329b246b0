"""Real Whisper base on real speech: English WER, Mandarin CER, language identification."""

from __future__ import annotations

import numpy as np
import pytest
from textmetrics import cer, norm_en, wer

from tingshuo.audio.io import load_audio
from conftest import ZH_REF

pytestmark = pytest.mark.slow


def test_english_librivox_wer(recognizer, en_clips):
    refs, hyps = [], []
    for path, ref in en_clips.items():
        t = recognizer.transcribe(load_audio(path))
        assert t.language == "en"
        refs.append(ref)
        hyps.append(t.text)
    import jiwer

    total = jiwer.wer([norm_en(r) for r in refs], [norm_en(h) for h in hyps])
    assert total <= 0.10, list(zip(refs, hyps))


def test_mandarin_clip_cer_simplified(recognizer, zh_clip):
    t = recognizer.transcribe(load_audio(zh_clip))
    assert t.language == "zh"
    assert cer(ZH_REF, t.text) <= 0.15, t.text
    assert "個" not in t.text and "車" not in t.text  # simplified output


def test_8k_stereo_input_still_recognized(recognizer, en_clips, tmp_path):
    import soundfile as sf

    path, ref = next(iter(en_clips.items()))
    x = load_audio(path, rate=8000)
    sf.write(tmp_path / "x.wav", np.stack([x, x], 1), 8000)
    t = recognizer.transcribe(load_audio(tmp_path / "x.wav"))
    assert wer(ref, t.text) <= 0.15, t.text


def test_silence_gives_no_words(recognizer):
    assert recognizer.transcribe(np.zeros(32000, np.float32)).text.strip() in ("", ".")


def test_streaming_partials_grow_to_final(recognizer, en_clips):
    path, ref = next(iter(en_clips.items()))
    audio = load_audio(path)
    stream = recognizer.open_stream()
    partials = []
    for i in range(0, len(audio), 16000):
        stream.accept(audio[i:i + 16000])
        partials.append(stream.partial())
    final = stream.finish()
    assert partials[-1] and wer(ref, final.text) <= 0.15
    assert len(norm_en(partials[1]).split()) <= len(norm_en(final.text).split())
