"""Clause splitting and speech clean-up; configuration; split-asset assembly."""

from __future__ import annotations

import hashlib

import pytest

from tingshuo.assets import AssetError, SplitAsset
from tingshuo.config import load_settings
from tingshuo.dialogue.memory import Conversation
from tingshuo.dialogue.speech import ClauseSplitter, clean_for_speech


def split(text: str) -> list[str]:
    s = ClauseSplitter()
    out = []
    for ch in text:  # token-by-token, as the LLM streams
        out += s.feed(ch)
    return out + s.flush()


def test_clauses_short_first_then_sentence_sized():
    out = split("好的，我们今天先去公园散步，然后再去吃饭，好不好？Version 3.5 is out. Mr. Smith said hi.")
    assert out[0] == "好的，"
    assert "然后再去吃饭，好不好？" in out
    assert "Version 3.5 is out." in out and "Mr. Smith said hi." in out


def test_the_first_sentence_goes_at_its_full_stop_without_waiting_for_the_next_token():
    """The reply's first English sentence is released when its full stop arrives (the token after it costs a
    decode the user waits through); a digit's or an abbreviation's point still waits for what follows."""
    s = ClauseSplitter()
    assert s.feed("That sounds like") == [] and s.feed(" a good plan.") == ["That sounds like a good plan."]
    assert s.feed(" It is 3.") == []  # later sentences, and "3." of 3.5, wait for the next token
    assert s.feed("5 km") == [] and s.feed(". Go") == ["It is 3.5 km."]
    for text in ("It costs 3.", "Ask Dr.", "Ask J.", "The U.S."):
        assert ClauseSplitter().feed(text) == [], text


def test_markdown_lists_and_emoji_are_not_spoken():
    out = split("**重点**：\n1. 多喝水😊\n- 早点睡\n`code` [链接](http://x.y)")
    joined = "".join(out)
    for bad in ("*", "`", "😊", "http", "1.", "- "):
        assert bad not in joined
    assert "多喝水" in joined and "早点睡" in joined and "链接" in joined
    assert clean_for_speech("## 标题") == "标题"


def test_history_keeps_newest_turns_within_budget():
    c = Conversation("sys")
    for i in range(50):
        c.add_user(f"问题{i}" * 10)
        c.add_assistant(f"回答{i}" * 10)
    msgs = c.messages(len, budget=200)
    assert msgs[0] == {"role": "system", "content": "sys"}
    assert msgs[1]["role"] == "user" and msgs[-1]["content"].startswith("回答49")
    assert sum(len(m["content"]) for m in msgs[1:]) <= 200 + 4 * len(msgs)


def test_settings_env_and_overrides(monkeypatch):
    monkeypatch.setenv("TINGSHUO_TTS__SPEED", "1.3")
    monkeypatch.setenv("TINGSHUO_LLM__BACKEND", "openai")
    s = load_settings({"llm.base_url": "http://127.0.0.1:9/v1"})
    assert s.tts.speed == 1.3 and s.llm.backend == "openai" and s.llm.base_url.endswith(":9/v1")


def test_split_asset_assembles_once_and_verifies(tmp_path):
    parts = []
    for i in range(3):
        p = tmp_path / f"part{i}"
        p.write_bytes(bytes([i]) * 1000)
        parts.append(p)
    blob = b"".join(p.read_bytes() for p in parts)
    asset = SplitAsset("toy", "toy.bin", lambda: parts, hashlib.sha256(blob).hexdigest(), len(blob), "MIT", "test")
    out = asset.ensure(tmp_path / "cache", progress=False)
    assert out.read_bytes() == blob and asset.is_ready(tmp_path / "cache")
    mtime = out.stat().st_mtime_ns
    asset.ensure(tmp_path / "cache", progress=False)
    assert out.stat().st_mtime_ns == mtime  # not re-assembled
    bad = SplitAsset("bad", "bad.bin", lambda: parts, "0" * 64, len(blob), "MIT", "test")
    with pytest.raises(AssetError, match="sha256"):
        bad.ensure(tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache" / "bad" / "bad.bin").exists()


def test_one_definition_of_a_han_character_everywhere():
    """The script module's range: Extension A and compatibility ideographs are Han, the Yijing hexagram symbols
    between them are not; the ASR clean-up, clause weights, song lines and the CLI's lyrics all count alike."""
    from tingshuo.asr.text import normalize_transcript
    from tingshuo.dialogue.songs import _lines
    from tingshuo.dialogue.speech import speakable
    from tingshuo.script import han_only, han_runs, has_han, is_han, text_language

    assert is_han("㐀") and is_han("中") and is_han("鿿") and is_han("豈") and not is_han("䷀") and not is_han("a")
    assert text_language("Hello 世界") == "zh" and text_language("hello") == "en" and text_language("123，。") is None
    assert not has_han("䷀䷁") and han_only("两只老虎，跑得快！abc") == "两只老虎跑得快"
    assert han_runs("两只老虎，跑得快 ok 跑得快") == ["两只老虎", "跑得快", "跑得快"]
    # a line with a character past U+9FA5 is counted by the song's parser as the singer counts it
    assert _lines("1. 鿏鿐一起唱\n第2句：两只老虎") == ["鿏鿐一起唱", "两只老虎"]
    assert speakable("嗯") and speakable("ok") and not speakable("…，。") and normalize_transcript("。，", "zh") == ""
