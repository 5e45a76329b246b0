"""Any character the user names, written for the call (tingshuo.dialogue.improvise), and notes kept out of replies.

Fast: the card's format (what the model writes) read into a persona, the voice cast from its traits, the shared
prompt prefix, the name read as a span of the user's words, a parenthetical reciting a note taken out of a
streamed reply. Slow: real turns through a session with the bundled model — 猪八戒 (no preset plays him) is
entered with a male voice cast for him, 白雪公主 with a female one, a pirate in English; no reply shows a note,
a bracket or the request's echo; leaving returns to the companion.
"""

from __future__ import annotations

import re

import pytest
from conftest import run

from tingshuo.dialogue.improvise import KEY_PREFIX, Card, cast_voice, messages, parse_card, persona_from_card
from tingshuo.dialogue.persona import SAFETY_LINE, role_preamble
from tingshuo.dialogue.speech import NoteEchoes
from tingshuo.intent.reader import _spans
from tingshuo.llm.base import LlmError
from tingshuo.tts.voices import VOICES

# cards as the bundled 1.5B wrote them (2026-12-07, dialogue.improvise's prompt)
ZHU = "自称：猪八戒\n称呼对方：你\n说话：憨厚老实，爱说笑话，喜欢和人开玩笑\n口头禅：我叫猪八戒。\n性别：男\n年纪：中年\n声音：粗犷"
NAI = "自称：奶奶\n称呼对方：你\n说话：慈祥和蔼，说话温和，爱唠叨，常问问题\n口头禅：你真好！\n性别：女\n年纪：中年\n声音：温柔"
PIRATE = ("I call myself: Captain Jack Sparrow\nI call you: matey\nManner: bold and confident, speaks with a pirate "
          "accent\nCatchphrase: Ho ho ho!\nGender: male\nAge: adult\nVoice: lively")


def test_a_card_becomes_a_persona_with_a_voice_cast_from_its_traits():
    zhu = persona_from_card("猪八戒", parse_card(ZHU, "zh"), "zh")
    assert zhu.key == KEY_PREFIX + "猪八戒" and zhu.name == "猪八戒" and zhu.improvised
    assert VOICES[zhu.voice].gender == "male" and zhu.voice == "narrator"  # gruff man: the low voice
    assert "自称“猪八戒”" in zhu.speaking_style and zhu.catchphrases == ("我叫猪八戒。",)
    # the user's grandmother: she calls herself 奶奶, the prompt knows whose grandmother she is
    nai = persona_from_card("我奶奶", parse_card(NAI, "zh"), "zh")
    assert nai.name == "奶奶" and "用户的奶奶" in nai.system_prompt
    assert VOICES[nai.voice].gender == "female" and nai.female and nai.default_emotion == "tender"
    pirate = persona_from_card("pirate captain", parse_card(PIRATE, "en"), "en")
    assert pirate.language == "en" and VOICES[pirate.voice].gender == "male" and "matey" in pirate.reminder
    # every improvised prompt starts with the same rules (their KV state is reused) and keeps the safety line
    for p in (zhu, nai):
        assert p.system_prompt.startswith(role_preamble("zh")) and SAFETY_LINE["zh"] in p.system_prompt
    assert pirate.system_prompt.startswith(role_preamble("en")) and SAFETY_LINE["en"] in pirate.system_prompt
    # no parentheses in an improvised role's reminder: the model copied that form into every reply
    assert "（" not in zhu.reminder and "(" not in nai.reminder
    # without a card (no model could write one) the role goes on with its name and the configured voice
    bare = persona_from_card("诸葛亮", None, "zh")
    assert bare.voice is None and bare.system_prompt.startswith(role_preamble("zh")) and "诸葛亮" in bare.reminder


def test_casting_never_gives_a_role_the_companions_voice():
    voices = {cast_voice(Card("我", "你", "说话", "嗯", female, age, sound))
              for female in (True, False) for age in ("child", "young", "adult", "old")
              for sound in ("lively", "calm", "gentle", "gruff")}
    assert "xiaonuan" not in voices and voices <= set(VOICES)
    assert cast_voice(Card("老夫", "你", "慢", "嗯", False, "old", "lively")) == "narrator"
    assert VOICES[cast_voice(Card("我", "你", "快", "嗯", True, "child", "calm"))].gender == "female"


def test_a_card_the_model_did_not_finish_is_refused():
    with pytest.raises(LlmError):
        parse_card(ZHU.rsplit("\n", 1)[0] + "\n声音：粗", "zh")  # cut inside the last word
    with pytest.raises(LlmError):
        parse_card("自称：猪八戒\n称呼对方：你", "zh")
    with pytest.raises(LlmError):
        parse_card(ZHU.replace("性别：男", "性别：不知道"), "zh")


def test_the_card_prompt_is_the_same_for_every_character_but_the_name():
    a, b = messages("猪八戒", "zh"), messages("海盗", "zh")
    assert a[:-1] == b[:-1] and a[-1]["content"].endswith("猪八戒")


def test_the_name_is_read_from_the_users_own_words():
    """The character slot is held to spans of the words: "武松" (the plan prompt's example) is not one of them."""
    spans = _spans("你当我奶奶，跟我说说话好吗")
    assert "我奶奶" in spans and "奶奶" in spans and "武松" not in spans
    assert "pirate captain" in _spans("Pretend to be a pirate captain and talk to me.")
    assert "猪八戒" in _spans("你扮演猪八戒，我来当唐僧") and not any("，" in s for s in _spans("你扮演猪八戒，我来当唐僧"))
    assert len(_spans("啊" * 10_000)) <= 80 * 12  # a very long turn: a bounded grammar


def test_a_parenthetical_reciting_a_note_is_taken_out_of_the_stream():
    reminder = "用猪八戒自己的话直接回答，自称“猪八戒”，称呼对方“你”，憨厚老实，爱说笑话。"
    e = NoteEchoes([reminder, None])
    # recorded: the 1.5B opened its replies with the note; split over deltas as the model streams it
    out = "".join(e.feed(d) for d in ["（用猪八戒自己", "的话直接回答：）你一个月", "挣多少钱？（刘慈欣写的）"]) + e.flush()
    assert out == "你一个月挣多少钱？（刘慈欣写的）" and len(e.dropped) == 1
    joe = NoteEchoes(["(Stay in character as Joe: speak simple, clear English; gently correct the learner.)"])
    out = joe.feed("(Stay in character as Joe: speak simple, clear English.) Great job! (really)") + joe.flush()
    assert out.strip() == "Great job! (really)"
    # an unclosed parenthetical at the end: kept when it is content, dropped when it recites
    e = NoteEchoes([reminder])
    assert e.feed("好的（我在想") + e.flush() == "好的（我在想"
    e = NoteEchoes([reminder])
    assert e.feed("好的（用猪八戒自己的话直接回答") + e.flush() == "好的"
    assert NoteEchoes([]).feed("（随便）") == "（随便）"


# ---------------------------------------------------------------------------------------------- real turns
async def _turn(session, text: str) -> tuple[str, list]:
    await session.push_text(text)
    await session.wait_idle()
    events = session.drain_events()
    done = [e for e in events if e.type == "response.done"]
    assert done and done[-1].status == "completed", [e for e in events if e.type == "error"]
    return done[-1].text, events


@pytest.mark.slow
def test_characters_no_preset_plays_are_written_for_the_call(stack):
    from tingshuo.engine.session import Session

    async def go():
        settings = stack.settings.model_copy(deep=True)
        settings.emotion.text = False
        async with Session(stack, speak=False, settings=settings) as s:
            out = {}
            # (the guard refused "你当我奶奶，跟我说说话好吗" as a jailbreak once any role had been played in the call —
            # the "grandma" jailbreak's shape — a false refusal on record under issue 20; first in a call it is entered)
            for ask in ("你扮演猪八戒跟我聊聊天吧", "过年回家，亲戚问我一个月挣多少钱。", "好了，别演了，做回你自己吧。",
                        "你扮演白雪公主跟我说说话吧", "Pretend to be a pirate captain and talk to me.",
                        "What did you do today?", "你扮演猪八戒跟我聊聊天吧"):
                out[len(out)] = (ask, *await _turn(s, ask))
            improvised = dict(s.state.improvised)
        async with Session(stack, speak=False, settings=settings) as s:
            # a preset role: the 1.5B answered this turn with 孙悟空's reminder, whole, in parentheses (recorded)
            out[len(out)] = ("你当孙悟空跟我说话", *await _turn(s, "你当孙悟空跟我说话"))
        return out, improvised

    out, improvised = run(go())
    changed = {i: [e for e in ev if e.type == "persona.changed"] for i, (_, _, ev) in out.items()}
    zhu = changed[0]
    assert zhu and zhu[0].persona == KEY_PREFIX + "猪八戒" and zhu[0].name == "猪八戒", zhu
    assert zhu[0].voice and VOICES[zhu[0].voice].gender == "male", zhu
    assert not changed[1]  # still 猪八戒
    assert changed[2] and changed[2][0].persona == "companion", changed[2]
    snow = changed[3]
    assert snow and snow[0].name == "白雪公主" and VOICES[snow[0].voice].gender == "female", snow
    pirate = changed[4]
    assert pirate and "pirate" in pirate[0].name.lower() and VOICES[pirate[0].voice].gender == "male", pirate
    assert re.search(r"[A-Za-z]{3}", out[5][1]) and not re.search(r"[\u4e00-\u9fff]", out[5][1]), out[5]
    # asked for again in the same call: the same persona (card and voice), from the call's own record
    again = changed[6]
    assert again and again[0].persona == zhu[0].persona and again[0].voice == zhu[0].voice, again
    assert set(improvised) == {KEY_PREFIX + "猪八戒", KEY_PREFIX + "白雪公主", pirate[0].persona}
    for i, (ask, reply, _) in out.items():
        assert reply.strip(), (ask, reply)
        # no note, bracket or stage direction shown, and not the request echoed back
        assert not re.search(r"[（(\[【]", reply), (ask, reply)
        assert not re.search(r"口吻|自己的话直接回答|in character|Answer as", reply), (ask, reply)
        assert ask.rstrip("。.!") not in reply, (ask, reply)


def test_a_long_reminder_recited_whole_is_taken_out():
    """孙悟空's reminder (~110 characters) came back whole as the reply to the turn entering the role (recorded);
    a parenthetical is held as long as the longest note, so it is judged whole."""
    from tingshuo.dialogue.persona import get_persona

    wukong = get_persona("wukong").reminder
    echo = ("（你当孙悟空跟我说话，用孙悟空的口吻回答：自称“俺老孙”，叫对方“你这小娃娃”或“施主”，豪爽直率，爱吹牛又讲义气，"
            "说话又快又俏皮；可以说“俺老孙来也！”、“吃俺老孙一棒！”。）俺老孙来也！")
    e = NoteEchoes([wukong])
    assert "".join(e.feed(echo[i:i + 5]) for i in range(0, len(echo), 5)) + e.flush() == "俺老孙来也！"


def test_a_script_line_of_the_assistants_own_is_said_as_its_words():
    """Recorded as 林黛玉 (2026-12-07, the role test's lines, 4 of 5 replies): "（林黛玉说：“…”）" — the voice read out the
    name and the verb, and the history taught the next reply the form. Its words alone are said; a bare speaker
    label ("（你：）") goes; other parentheticals stay."""
    own = ("林黛玉", "黛玉", "林妹妹")
    for reply, said in [("（林黛玉说：“结婚？没时间，等我回来吧。”）", "结婚？没时间，等我回来吧。"),
                        ("（林黛玉回答：罢了。）", "罢了。"), ("（林黛玉“花谢花飞。”）", "花谢花飞。"),
                        ("好的。（林妹妹答：“何必呢？”）", "好的。何必呢？"), ("（你：）别担心。", "别担心。"),
                        ("（林黛玉）嗯，工作确实辛苦。", "嗯，工作确实辛苦。"),
                        ("（刘慈欣写的）", "（刘慈欣写的）"), ("（林黛玉轻轻叹气）", "（林黛玉轻轻叹气）")]:
        e = NoteEchoes([], own=own)
        assert "".join(e.feed(reply[i:i + 3]) for i in range(0, len(reply), 3)) + e.flush() == said, reply
    assert NoteEchoes([]).feed("（你：）别担心。") == "（你：）别担心。"  # no names given: nothing changes


def test_a_parenthetical_echoing_the_users_request_is_taken_out():
    """Recorded in a 孙悟空 role at temperature 0.6: "（你当孙悟空跟我说话）太好了！…" two turns after that request."""
    e = NoteEchoes(["过年回家，亲戚问我一个月挣多少钱。", "你当孙悟空跟我说话"])
    out = e.feed("（你当孙悟空跟我说话）太好了！俺老孙来也！（笑）") + e.flush()
    assert out == "太好了！俺老孙来也！（笑）"
