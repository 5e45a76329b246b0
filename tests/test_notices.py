"""The "my voice failed" notice, rendered once and kept in the cache directory.

Rendered inside a fresh process's first turn it held the TTS thread for 6.3 s (bench/timeline.py, 2 cores): the
stack now renders it at load, and a rendering saved by an earlier process is loaded instead. Fast: what is saved,
what is refused on load, what names a rendering (real speech from the LibriVox clips stands for one). Slow: the real
TTS renders once; a second stack on the same cache directory loads the same samples without synthesizing.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import librivox

from tingshuo.audio.io import load_audio
from tingshuo.engine.faults import NoticeVoice, _load, _save
from tingshuo.tts import VoiceSettings


def test_a_saved_rendering_loads_back_and_a_bad_one_is_rendered_again(tmp_path):
    speech = load_audio(sorted(librivox())[0])
    path = tmp_path / "notices" / "a.npy"
    assert _load(path) is None  # nothing saved yet
    _save(path, speech)
    assert np.array_equal(_load(path), speech.astype(np.float32))
    assert not list(path.parent.glob("*.tmp"))  # written whole, then renamed
    path.write_bytes(b"\x93NUMPY garbage")
    assert _load(path) is None
    np.save(path, (speech * 32767).astype(np.int16))
    assert _load(path) is None  # not float audio
    np.save(path, np.full(10, np.nan, np.float32))
    assert _load(path) is None


def test_a_rendering_is_named_by_what_it_depends_on(tmp_path):
    notices = NoticeVoice(lambda: None, None, tmp_path, '{"speed": 1.0}')  # type: ignore[arg-type]
    tts = SimpleNamespace(sample_rate=24000)
    base = notices._path(tts, VoiceSettings(voice="xiaonuan"), "zh", "抱歉")  # type: ignore[arg-type]
    assert base is not None and base.parent == tmp_path
    assert base == notices._path(tts, VoiceSettings(voice="xiaonuan"), "zh", "抱歉")  # type: ignore[arg-type]
    others = {notices._path(tts, VoiceSettings(voice="daiyu"), "zh", "抱歉"),  # type: ignore[arg-type]
              notices._path(tts, VoiceSettings(voice="xiaonuan"), "en", "抱歉"),  # type: ignore[arg-type]
              notices._path(tts, VoiceSettings(voice="xiaonuan", speed=0.8), "zh", "抱歉"),  # type: ignore[arg-type]
              notices._path(SimpleNamespace(sample_rate=16000), VoiceSettings(voice="xiaonuan"), "zh", "抱歉"),  # type: ignore[arg-type]
              NoticeVoice(lambda: None, None, tmp_path, '{"speed": 1.2}')._path(  # type: ignore[arg-type]
                  tts, VoiceSettings(voice="xiaonuan"), "zh", "抱歉")}  # type: ignore[arg-type]
    assert base not in others and len(others) == 5
    assert NoticeVoice(lambda: None, None)._path(tts, VoiceSettings(), "zh", "抱歉") is None  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_notice_is_rendered_once_and_loaded_by_the_next_process(tts, tmp_path):
    calls = []
    synthesize = tts.synthesize

    def counted(*a, **k):
        calls.append(a[0])
        return synthesize(*a, **k)

    voice = VoiceSettings(voice="xiaonuan")
    first = NoticeVoice(lambda: tts, None, tmp_path, "settings")  # type: ignore[arg-type]
    tts.synthesize = counted
    try:
        first.render_now(voice, "zh")
        assert len(calls) == 1 and len(list(tmp_path.glob("*.npy"))) == 1
        second = NoticeVoice(lambda: tts, None, tmp_path, "settings")  # type: ignore[arg-type]
        second.render_now(voice, "zh")
        assert len(calls) == 1  # loaded, not synthesized
    finally:
        tts.synthesize = synthesize
    a, b = first.get(voice, "tts", "zh"), second.get(voice, "tts", "zh")
    assert a is not None and np.array_equal(a, b) and len(a) > tts.sample_rate  # seconds of speech
