"""The care cases (issue 20) and what the guard reads of a turn: logic only, no model loaded."""

from __future__ import annotations

import warnings

import pytest

from tingshuo.config import SafetyConfig
from tingshuo.dialogue.care import hotlines, lines_sentence
import numpy as np

from tingshuo.safety.guard import _SHOTS, CONTEXT_TURNS, CareProbe, framed, prompt_hash

from tests.care_cases import load, wilson
from tests.safety_cases import BENIGN, CRISIS, NOT_CRISIS, RED_TEAM


def test_the_splits_are_large_enough_and_apart():
    test, dev = load("test"), load("dev")
    n = {lab: sum(c.label == lab for c in test) for lab in ("care", "allow", "refuse")}
    assert n["care"] >= 100 and n["allow"] >= 100 and n["refuse"] >= 15, n
    assert {c.lang for c in test} == {"zh", "en"}
    key = lambda c: (c.text, c.history)  # noqa: E731 - a multi-turn look-alike shares its last line on purpose
    assert not {key(c) for c in test} & {key(c) for c in dev}
    shots = {u.split("：", 1)[1] for u, _ in _SHOTS}
    others = set(BENIGN) | set(CRISIS) | set(NOT_CRISIS) | {t for t, _, _ in RED_TEAM}
    for c in test + dev:
        assert c.text not in shots and c.text not in others, c.text
    # most multi-turn crises have a look-alike: the same last line after harmless turns
    lines = {c.text for c in test if c.label == "allow" and c.kind == "multiturn"}
    assert len(lines & {c.text for c in test if c.label == "care" and c.kind == "multiturn"}) >= 12


def test_the_guard_reads_the_turns_before_and_the_role():
    hist = [("user", "我有时候真想一睡不醒"), ("assistant", "这句话让我有点担心你，你现在还好吗？" * 5)]
    msg = framed("我是认真的", "用户", hist, "孙悟空")
    lines = msg.split("\n")
    assert lines[0] == "（前文）用户：我有时候真想一睡不醒"
    assert lines[1].startswith("（前文）助手：") and len(lines[1]) < 80  # a long turn is cut short
    assert lines[2] == "（你在扮演：孙悟空）" and lines[3] == "用户：我是认真的"
    many = [("user", f"第{i}句") for i in range(10)]
    assert framed("好", history=many).count("（前文）") == CONTEXT_TURNS
    assert framed("  hello\nthere ") == "用户：hello there"  # a newline in the turn cannot fake a context line


def test_one_region_for_every_language():
    cfg = SafetyConfig(region="GB")
    assert hotlines(cfg, "zh") == hotlines(cfg, "en") and "116 123" in lines_sentence(cfg, "zh")
    assert "12356" in lines_sentence(SafetyConfig(), "en")  # the default region is CN, whatever the language
    with pytest.raises(ValueError, match="no help lines"):
        SafetyConfig(region="XX")


def test_the_per_language_regions_still_work_with_a_warning():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cfg = SafetyConfig(region_en="US")
    assert any(issubclass(x.category, DeprecationWarning) and "safety.region" in str(x.message) for x in w)
    assert "988" in lines_sentence(cfg, "en") and "12356" in lines_sentence(cfg, "zh")


def test_wilson_interval():
    lo, hi = wilson(100, 100)
    assert hi > 0.9999 and 0.95 < lo < 0.97
    lo, hi = wilson(0, 106)
    assert lo == 0.0 and 0.03 < hi < 0.04


def test_the_bundled_care_probe_belongs_to_this_guard_prompt():
    """Editing the guard's prompt or examples without retraining the probe (bench/train_care_probe.py) would
    silently drop the guard back to its label threshold: caught here."""
    probe = CareProbe.bundled()
    assert probe is not None
    model, _, digest = probe.fingerprint.partition("#")
    assert digest == prompt_hash() and model.endswith("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
    assert probe.tokens.shape == probe.w.shape == probe.mu.shape and 0 < probe.threshold < 1
    assert np.all(probe.sd > 0)


def test_a_long_turn_is_read_in_windows_that_cover_its_ends():
    from tingshuo.safety.guard import WINDOW_CHARS, WINDOWS, windows

    assert windows("短短一句") == ["短短一句"]
    long = "天气不错。" * 2000 + "我不想活了"
    parts = windows(long)
    assert len(parts) == WINDOWS and all(len(p) == WINDOW_CHARS for p in parts)
    assert parts[0] == long[:WINDOW_CHARS] and parts[-1].endswith("我不想活了")
    mid = windows("甲" * 900)
    assert len(mid) == 2 and mid[-1] == "甲" * WINDOW_CHARS
