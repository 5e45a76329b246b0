"""Emotion out: the policy, voice requests and tone switching, end to end on the real models.

The scripted set and the judging rule (a reply "fits" when the styles of all its clauses are in the allowed set
and its words contain one of the markers, and none of the forbidden ones):

    sad       "我今天考试没考好，心情很差。"           styles ⊆ {tender, calm}   words: comfort
    excited   "太好了！我拿到offer了！"                styles ∋ happy           words: shared joy
    angry     "你们这个破服务，气死我了！"              no angry clause, ∋ calm  words: apology/acknowledgement
    whisper   a whispered spoken turn (our TTS, WORLD-whispered)   all clauses whispered
    joking    "哈哈，我刚才把盐当成糖放进咖啡里了，笑死我了"  no tender/sad clause, no condolences

Greedy decoding (conftest) makes the LLM's words repeatable.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tingshuo.audio import prosody as P
from tingshuo.audio import world
from tingshuo.audio.io import resample
from tingshuo.dialogue.voice import VoiceChange, parse_voice_instruction
from tingshuo.engine import Session
from tingshuo.engine.events import AudioChunk, Paralinguistics, ReplyClause, ResponseDone, VoiceChanged
from tingshuo.tts import VoiceSettings

from tests.conftest import run

# 明白 as in 理解: "我明白你可能遇到了困难" (a CI run's reply) acknowledges the feeling as 理解 does
COMFORT = re.compile(r"抱抱|别难过|不要难过|没关系|理解|明白|心疼|陪着|想跟我说|会好起来|辛苦|别担心")
JOY = re.compile(r"太棒|恭喜|真好|太好了|开心|高兴|厉害")
CALM = re.compile(r"抱歉|对不起|理解|别生气|消消气|解决|明白|不好意思")
HOSTILE = re.compile(r"气死你|糟糕透|活该|滚")


async def _turn(session: Session, text: str | None = None, audio: np.ndarray | None = None) -> dict:
    if text is not None:
        await session.push_text(text)
    else:
        await session.push_utterance(audio)
    await session.wait_idle()
    out: dict = {"clauses": [], "audio": [], "para": None, "voice": None}
    for ev in session.drain_events():
        if isinstance(ev, ReplyClause):
            out["clauses"].append((ev.style or "neutral", ev.text))
        elif isinstance(ev, AudioChunk):
            out["audio"].append((ev.text, ev.audio, ev.sample_rate))
        elif isinstance(ev, Paralinguistics):
            out["para"] = ev
        elif isinstance(ev, VoiceChanged):
            out["voice"] = ev.state
        elif isinstance(ev, ResponseDone):
            out["text"] = ev.text
    return out


def _styles(r: dict) -> set[str]:
    return {s for s, _ in r["clauses"]}


@pytest.fixture(scope="module")
def whispered_turn(tts) -> np.ndarray:
    speech = tts.synthesize("我跟你说个秘密，你千万别告诉别人。", VoiceSettings(), "zh")
    x = resample(speech, tts.sample_rate, P.RATE)
    return world.transform(x, P.RATE, whisper=True, gain_db=-6)


@pytest.mark.slow
def test_scripted_feelings_get_fitting_replies(stack, whispered_turn):
    async def main() -> dict[str, dict]:
        res = {}
        for name, text in (("sad", "我今天考试没考好，心情很差。"), ("excited", "太好了！我拿到offer了！"),
                           ("angry", "你们这个破服务，气死我了！"), ("joking", "哈哈，我刚才把盐当成糖放进咖啡里了，笑死我了")):
            # the clauses' styles are judged (reply.clause events, the same with or without a voice); only the
            # whispered reply's audio is measured, so only that one is spoken
            async with Session(stack, speak=False) as s:
                res[name] = await _turn(s, text)
        async with Session(stack, speak=True) as s:
            res["whisper"] = await _turn(s, audio=whispered_turn)
        return res

    res = run(main())
    fits = {}
    sad, exc, ang, wsp, joke = (res[k] for k in ("sad", "excited", "angry", "whisper", "joking"))
    fits["sad"] = (sad["para"].label in ("sad", "tired") and _styles(sad) <= {"tender", "calm"}
                   and bool(COMFORT.search(sad["text"])))
    fits["excited"] = exc["para"].label == "happy" and "happy" in _styles(exc) and bool(JOY.search(exc["text"]))
    fits["angry"] = (ang["para"].label == "angry" and "angry" not in _styles(ang) and "calm" in _styles(ang)
                     and bool(CALM.search(ang["text"])) and not HOSTILE.search(ang["text"]))
    fits["whisper"] = wsp["para"].whisper and _styles(wsp) == {"whisper"}
    fits["joking"] = not (_styles(joke) & {"tender", "sad"}) and not re.search(r"别难过|抱抱", joke["text"])
    report = {k: (res[k]["para"].label if res[k]["para"] else None, res[k]["clauses"]) for k in res}
    assert all(fits.values()), (fits, report)
    # the whispered reply really is whispered
    audio = np.concatenate([a for _, a, _ in wsp["audio"]])
    assert P.extract(resample(audio, wsp["audio"][0][2], P.RATE)).voiced_fraction <= 0.10


def _rate(r: dict) -> float:
    """Han characters per second of reply audio (the measured speech rate)."""
    chars = sum(len(re.findall(r"[\u4e00-\u9fff]", t)) for t, _, _ in r["audio"])
    seconds = sum(len(a) / sr for _, a, sr in r["audio"])
    return chars / seconds


@pytest.mark.slow
def test_voice_requests_change_the_next_reply_and_persist(stack):
    async def main() -> list[dict]:
        async with Session(stack, speak=True) as s:
            before = await _turn(s, "你最喜欢哪个季节？")
            slow = await _turn(s, "说慢一点")
            after = await _turn(s, "那你最喜欢什么水果？")  # persists: still slow
            whisper = await _turn(s, "悄悄跟我说")
            still = await _turn(s, "你觉得明天会下雨吗？")
            s.speak = False  # the last reply is judged on its voice state and clause styles, not its audio
            normal = await _turn(s, "好了，正常说话吧")
            return [before, slow, after, whisper, still, normal]

    before, slow, after, whisper, still, normal = run(main())
    assert slow["voice"]["speed"] < 0.85
    assert _rate(slow) <= 0.85 * _rate(before), (_rate(before), _rate(slow), slow["clauses"])
    assert _rate(after) <= 0.85 * _rate(before)
    for r in (whisper, still):
        assert _styles(r) == {"whisper"}
        audio = np.concatenate([a for _, a, _ in r["audio"]])
        assert P.extract(resample(audio, r["audio"][0][2], P.RATE)).voiced_fraction <= 0.10
    assert normal["voice"] == {"speed": 1.0, "volume": 1.0, "pitch": 1.0, "whisper": False, "style": None,
                               "dialect": None}
    assert "whisper" not in _styles(normal)


@pytest.mark.slow
def test_switching_tone_within_one_reply(stack):
    async def main() -> dict:
        async with Session(stack, speak=True) as s:
            return await _turn(s, "先生气地说一句“你怎么又迟到了”，再开心地说“不过我原谅你了”")

    r = run(main())
    styles = [st for st, _ in r["clauses"]]
    assert "angry" in styles and "happy" in styles and styles.index("angry") < styles.index("happy"), r["clauses"]
    assert "[" not in r["text"] and "生气" not in "".join(t for t, _, _ in r["audio"])  # tags never spoken


# ---------------------------------------------------------------------------------------- the request grammar
REQUESTS = {
    "说慢一点": {"speed": "<"}, "你说话慢一些好吗": {"speed": "<"}, "别说那么快": {"speed": "<"},
    "语速放慢一点": {"speed": "<"}, "太快了，我听不过来": {"speed": "<"}, "再慢一点": {"speed": "<<"},
    "说快一点": {"speed": ">"}, "你可以讲快些吗": {"speed": ">"}, "speak faster please": {"speed": ">"},
    "Could you talk more slowly?": {"speed": "<"}, "slow down": {"speed": "<"},
    "大声点": {"volume": ">"}, "声音大一点，我听不清": {"volume": ">"}, "speak up": {"volume": ">"},
    "小声一点": {"volume": "<"}, "别那么大声": {"volume": "<"}, "a bit quieter": {"volume": "<"},
    "悄悄跟我说": {"whisper": True}, "我们说悄悄话吧": {"whisper": True}, "please whisper": {"whisper": True},
    "别悄悄说了": {"whisper": False}, "stop whispering": {"whisper": False},
    "开心一点": {"style": "happy"}, "说话温柔一点": {"style": "tender"}, "sound happier": {"style": "happy"},
    "像讲故事一样跟我说": {"style": "story"}, "用讲故事的语气": {"style": "story"},
    "声音低一点": {"pitch": "<"}, "用东北话说": {"dialect": "东北话"}, "恢复正常吧": {"reset": True},
}
NOT_REQUESTS = ["我说话太快了吗", "讲个笑话", "你声音真好听", "今天天气怎么样", "我很开心", "快点告诉我答案是什么",
                "我今天考试没考好，心情很差。", "他说话很大声", "What's the fastest car?", "I'm so happy today"]


@pytest.mark.parametrize("text,expect", list(REQUESTS.items()))
def test_voice_request_grammar(text, expect):
    c = parse_voice_instruction(text)
    assert isinstance(c, VoiceChange), text
    for k, v in expect.items():
        got = getattr(c, k)
        if v == "<":
            assert got is not None and got < 1, (k, got)
        elif v == "<<":
            assert got is not None and got < 0.8, (k, got)
        elif v == ">":
            assert got is not None and got > 1, (k, got)
        else:
            assert got == v, (k, got)


@pytest.mark.parametrize("text", NOT_REQUESTS)
def test_not_a_voice_request(text):
    assert parse_voice_instruction(text) is None


def test_one_off_and_sequence_requests_do_not_persist():
    c = parse_voice_instruction("用难过的语气说：我的小猫走丢了")
    assert c is not None and c.one_off and c.style == "sad"
    from tingshuo.dialogue.voice import VoiceState

    assert c.apply(VoiceState()) == VoiceState()
    seq = parse_voice_instruction("先生气地说一句“你怎么又迟到了”，再开心地说“不过我原谅你了”")
    assert seq is not None and seq.sequence and seq.apply(VoiceState()) == VoiceState()


# ------------------------------------------------------------------------------- reading the feeling in the words
LABELLED = [("我今天考试没考好，心情很差。", "sad"), ("太好了！我拿到offer了！", "happy"), ("你们这个破服务，气死我了！", "angry"),
            ("明天就要面试了，我好紧张，怎么办", "anxious"), ("唉，加了一晚上班，累死了", "tired"), ("今天天气怎么样", "neutral"),
            ("I just got promoted!", "happy"), ("帮我订一张明天去北京的机票", "neutral"), ("我的猫昨天去世了", "sad"),
            ("又堵车了，烦死了", "angry"), ("终于放假了！", "happy"), ("我好困，眼睛都睁不开了", "tired"),
            ("What time is it now?", "neutral"), ("This is so unfair, I'm furious!", "angry"),
            ("I feel so lonely these days.", "sad"), ("你觉得明天会下雨吗？", "neutral"), ("我们分手了", "sad"),
            ("我中彩票了！", "happy"), ("请给我讲一个很长的故事吧。", "neutral"), ("给我介绍一下北京有哪些好玩的地方。", "neutral"),
            ("我担心我妈妈的手术", "anxious"), ("I'm really worried about my exam tomorrow.", "anxious")]


@pytest.mark.slow
def test_the_llm_reads_feelings_in_words(stack):
    """The words' reading (LLM next-token probabilities, calibrated) alone, after the companion's prompt as a
    session's first turn reads them (and `tingshuo listen`): ≥ 80 % on this labelled set."""
    from tingshuo.dialogue.emotion import fuse, read_words
    from tingshuo.dialogue.persona import COMPANION

    system = [{"role": "system", "content": COMPANION.system_prompt}]
    got = []
    for text, want in LABELLED:
        got.append((text, want, fuse(read_words(stack.llm, system, text), None).label))
    wrong = [g for g in got if g[1] != g[2]]
    assert len(wrong) <= 0.2 * len(got), wrong


def test_style_tags_are_parsed_out_of_a_token_stream():
    from tingshuo.dialogue.speech import StyleTags, strip_tags

    st = StyleTags()
    pieces = []
    for d in ["[生", "气]你怎么又", "迟到了！[", "开心]不过我原谅你了。[笑]好", "吧，看 [链接](http://x) 哦"]:
        pieces += st.feed(d)
    text = "".join(t for t, _ in pieces) + st.flush()
    assert [s for _, s in pieces if s] == ["angry", "happy"]
    assert text == "你怎么又迟到了！不过我原谅你了。好吧，看 [链接](http://x) 哦"  # the aside is dropped, a link kept
    assert strip_tags("【温柔】别难过，[Happy]我们一起想办法。") == "别难过，我们一起想办法。"
    assert strip_tags("数组 a[0] 和 [这是一段很长的方括号里的说明文字不是标记]") == "数组 a[0] 和 [这是一段很长的方括号里的说明文字不是标记]"
