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
