"""The wire format alone (no models): session configuration in both shapes, validation, G.711 codecs."""

from __future__ import annotations

import numpy as np
import pytest

from tingshuo.server.protocol import (
    ProtocolError,
    RealtimeConfig,
    decode_audio,
    encode_audio,
    event_name,
)

VOICES = ["jf_alpha", "zf_xiaobei"]


def cfg() -> RealtimeConfig:
    return RealtimeConfig(model="m", instructions="hi", voice="jf_alpha")


def test_ga_and_beta_shapes_update_the_same_config():
    ga, beta = cfg(), cfg()
    ga.update({"type": "realtime", "output_modalities": ["text"], "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
                  "transcription": None},
        "output": {"voice": "zf_xiaobei", "speed": 1.2}}}, VOICES)
    beta.update({"modalities": ["text"], "input_audio_format": "g711_ulaw", "voice": "zf_xiaobei", "speed": 1.2,
                 "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
                 "input_audio_transcription": None}, VOICES)
    for c in (ga, beta):
        assert (c.output_modalities, c.input_format, c.voice, c.speed) == (["text"], "g711_ulaw", "zf_xiaobei", 1.2)
        assert c.turn_detection is not None and c.turn_detection.silence_duration_ms == 700
        assert c.transcription is None and not c.speak
    wire = ga.to_wire("s", beta=False, extra={})
    assert wire["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert wire["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert beta.to_wire("s", beta=True, extra={})["input_audio_format"] == "g711_ulaw"


def test_turn_detection_null_and_semantic_eagerness():
    c = cfg()
    c.update({"audio": {"input": {"turn_detection": None}}}, VOICES)
    assert c.turn_detection is None
    c.update({"turn_detection": {"type": "semantic_vad", "eagerness": "high", "create_response": False}}, VOICES)
    assert c.turn_detection.eagerness == "high" and c.turn_detection.create_response is False
    assert c.turn_detection.interrupt_response is True


@pytest.mark.parametrize("update,param", [
    ({"voice": "nobody"}, "session.audio.output.voice"),
    ({"audio": {"output": {"speed": 3}}}, "session.audio.output.speed"),
    ({"output_modalities": ["video"]}, "session.output_modalities"),
    ({"turn_detection": {"type": "magic"}}, "session.turn_detection.type"),
    ({"turn_detection": {"type": "server_vad", "threshold": 2}}, "session.turn_detection.threshold"),
    ({"input_audio_format": "mp3"}, "session.audio.input.format"),
    # the fuzzer's finds: a list where a format name goes raised TypeError (a server_error, not the client's error)
    ({"audio": {"input": {"format": ["audio/pcm"]}}}, "session.audio.input.format"),
    ({"audio": {"output": {"format": {"type": ["audio/pcmu"]}}}}, "session.audio.output.format"),
    ({"type": "transcription"}, "session.type"),
    ({"max_output_tokens": 0}, "session.max_output_tokens"),
    ({"tools": [{"type": "function", "name": "f"}]}, "session.tools"),
    ({"turn_detection": {"type": "semantic_vad", "idle_timeout_ms": 5000}}, "session.turn_detection.idle_timeout_ms"),
])
def test_invalid_updates_are_refused_and_change_nothing(update, param):
    c = cfg()
    before = c.to_wire("s", beta=False, extra={})
    with pytest.raises(ProtocolError) as e:
        c.update({**update, "instructions": "changed"}, VOICES)
    assert e.value.param == param
    assert c.to_wire("s", beta=False, extra={}) == before  # all or nothing


def test_openai_voice_names_are_accepted():
    c = cfg()
    c.update({"voice": "alloy"}, VOICES)
    assert c.voice == "alloy"


def test_event_names_per_dialect():
    assert event_name("response.output_audio.delta", beta=True) == "response.audio.delta"
    assert event_name("response.output_audio.delta", beta=False) == "response.output_audio.delta"
    assert event_name("conversation.item.added", beta=True) == "conversation.item.created"
    assert event_name("error", beta=True) == "error"


@pytest.mark.parametrize("fmt,rate", [("pcm16", 24000), ("g711_ulaw", 8000), ("g711_alaw", 8000)])
def test_codecs_round_trip(fmt, rate):
    t = np.arange(rate) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    data = encode_audio(x, fmt)
    assert len(data) == len(x) * (2 if fmt == "pcm16" else 1)
    y, r = decode_audio(data, fmt)
    assert r == rate
    snr = 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2))
    assert snr > (70 if fmt == "pcm16" else 30), snr  # 16-bit ≈ 79 dB here; G.711 ≈ 38 dB on a tone


def test_odd_pcm16_is_an_error():
    with pytest.raises(ProtocolError) as e:
        decode_audio(b"\x00\x01\x02", "pcm16")
    assert e.value.code == "invalid_audio"


def test_every_engine_event_has_a_handler_and_every_extension_event_is_documented():
    """The server maps engine events through one table: a new engine event without an entry would be dropped on
    the way to the client (the tutor's pronunciation report was). Every ``tingshuo.*`` event it sends is in
    docs/realtime.md."""
    import inspect
    import re
    from pathlib import Path

    import tingshuo.engine.events as E
    from tingshuo.server import outbound, realtime

    events = [c for c in vars(E).values() if inspect.isclass(c) and issubclass(c, E.Event) and c is not E.Event]
    assert len(events) > 20
    assert [c.__name__ for c in events if c not in outbound.EngineEvents.HANDLERS] == []
    src = inspect.getsource(outbound) + inspect.getsource(realtime)
    sent = set(re.findall(r'emit\("(tingshuo\.[a-z_.]+)"', src))
    doc = (Path(__file__).resolve().parents[1] / "docs" / "realtime.md").read_text(encoding="utf-8")
    assert len(sent) >= 13 and [n for n in sorted(sent) if f"`{n}`" not in doc] == []
