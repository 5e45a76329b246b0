"""Story mode: "讲个故事" gives a story whose lines are attributed and spoken in their speakers' voices.

Judging rule (issue 7): the reply's clauses name at least two characters besides the narrator; each attributed
line (consecutive clauses of one speaker) is identified by speaker embedding as the voice the engine cast for
it — nearest among every built-in voice's reference — for at least 90 % of the lines, and every character's
voice differs from the narrator's. Streaming and interruption are the ordinary reply path (tests/test_duplex.py);
here the story must also arrive as several clauses, not one block.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.conftest import run
from tingshuo.dialogue.persona import get_persona
from tingshuo.dialogue.speech import ScriptLines, StyleTags
from tingshuo.engine.session import Session
from tingshuo.tts import VOICES



# The asks: a story requested of the companion, and one of the storyteller persona. The test plays the first
# (the request is recognised as a story there, not by the persona); bench/perform.py judges both by this rule.
STORIES = [(None, "给我讲一个小猫和大象的故事"), ("storyteller", "讲个故事吧")]


def play_story(stack, persona: str | None, ask: str) -> list:
    """The events of one spoken story turn."""

    async def go():
        settings = stack.settings.model_copy(deep=True)
        settings.emotion.text = False  # not under test; keeps the run short
        async with Session(stack, speak=True, persona=persona, settings=settings) as s:
            await s.push_text(ask)
            await s.wait_idle()
            return s.drain_events()

    return run(go())


def story_failures(events: list, persona: str | None, speaker_encoder, voice_references, rate: int) -> list:
    """Every way the story broke the judging rule at the top of this file (empty: it kept it)."""
    clauses = [e for e in events if e.type == "reply.clause"]
    audio = [e for e in events if e.type == "reply.audio"]
    if len(clauses) != len(audio) or len(clauses) < 4:
        return [("fewer than 4 clauses, each with its audio", [c.text for c in clauses], len(audio))]
    narrator_voice = VOICES[get_persona(persona or "companion").voice]
    wrong: list = []
    # attributed lines: consecutive clauses of one speaker
    lines: list[tuple[str, str, list[np.ndarray], str]] = []
    for c, a in zip(clauses, audio):
        if not c.speaker:
            wrong.append(("a clause without a speaker", c.text))
            continue
        if lines and lines[-1][0] == c.speaker:
            lines[-1][2].append(a.audio)
            continue
        lines.append((c.speaker, c.voice, [a.audio], c.text))
    characters = {sp for sp, *_ in lines if sp not in ("旁白", "叙述")}
    if len(characters) < 2:
        wrong.append(("fewer than 2 characters", [(sp, t) for sp, _, _, t in lines]))
    for sp, v, _, _ in lines:
        if sp in characters and VOICES[v].kokoro == narrator_voice.kokoro:
            wrong.append(("a character in the narrator's voice", sp, v))
    right = []
    for sp, v, parts, text in lines:
        e = speaker_encoder.embed(np.concatenate(parts), rate)
        got = max(voice_references, key=lambda k: speaker_encoder.similarity(e, voice_references[k]))
        right.append((got == v, sp, v, got, text))
    if sum(ok for ok, *_ in right) < 0.9 * len(right):
        wrong.append(("under 90 % of the lines in the voice cast for them", right))
    return wrong


@pytest.mark.slow
@pytest.mark.parametrize("persona,ask", STORIES[:1])
def test_a_story_switches_voices_at_its_attributed_lines(stack, tts, speaker_encoder, voice_references, persona, ask):
    wrong = story_failures(play_story(stack, persona, ask), persona, speaker_encoder, voice_references, tts.sample_rate)
    assert not wrong, wrong


def test_speaker_tags_and_script_lines_are_parsed_from_a_stream():
    st = StyleTags(speakers=True)
    out = []
    for d in ["[旁", "白]从前，小兔子迷路了。[小兔子]我好", "害怕呀！[笑][大象·温柔]别怕。"]:
        out += st.feed(d)
    assert out == [("", "@旁白"), ("从前，小兔子迷路了。", None), ("", "@小兔子"), ("我好", None), ("害怕呀！", None),
                   ("", "@大象"), ("", "tender"), ("别怕。", None)]
    assert StyleTags().feed("[旁白]从前") == [("从前", None)]  # outside story mode a name is an aside, dropped
    sl = ScriptLines()
    out = []
    for d in ["旁白：从前", "，小猫去钓鱼。\n小", "猫：我好饿呀！\n今天天气很好，我们走吧。"]:
        out += sl.feed(d)
    assert [t for t in out if t[1]] == [("", "@旁白"), ("", "@小猫")]
    assert "".join(t for t, tag in out if tag is None) == "从前，小猫去钓鱼。\n我好饿呀！\n今天天气很好，我们走吧。"


def test_a_quoted_line_after_a_characters_tag_is_said_as_their_words():
    """"[小兔子]说：“我们来捉迷藏吧！”" (written so in 3–5 of 12 dev stories) is the rabbit saying the words; text
    after a tag that is not a lead-in passes as it came. A quote led into by narration ("[旁白]小猫说：“…”", how the
    1.5B wrote the dialogue of 5 of 5 dev stories asked of the storyteller) is the words of the sentence's subject,
    not of the one spoken to ("对小兔子说"); a quote with no subject to give it to stays narration; a tag made of the
    note's own words ("[叙述写]", bench/perform.py's story) is the narrator."""
    from tingshuo.dialogue.speech import SpokenQuotes

    story = ("[旁白]一天，小兔子和小松鼠去森林里玩。[小兔子]说：“我们来捉迷藏吧！”[小松鼠]也同意了。"
             "[旁白]小猫说：“你看起来很累。”[刺猬]回答说：“是的，我怕黑。”[狐狸]：“走吧”[狼]我来了"
             "[旁白]乌龟看着小兔子，笑了起来，然后对小兔子说：“我也觉得很美。”后来呢，“真好”：“嗯”"
             "[旁白]：小猫说：“我饿了。”[小猫]：我饿了[叙述写]小猫走了。")
    for step in (1, 2, 3, 7):
        tags, quotes, out = StyleTags(speakers=True), SpokenQuotes(["叙述写[旁白]；角色开口说的话"]), []
        for i in range(0, len(story), step):
            out += quotes.feed(tags.feed(story[i:i + step]))
        out.append((quotes.flush(), None))
        lines: list[tuple[str, str]] = []
        for text, tag in out:
            if tag is not None:
                lines.append((tag[1:], ""))
            elif text:
                lines[-1] = (lines[-1][0], lines[-1][1] + text)
        assert lines == [("旁白", "一天，小兔子和小松鼠去森林里玩。"), ("小兔子", "我们来捉迷藏吧！"), ("小松鼠", "也同意了。"),
                         ("旁白", "小猫说："), ("小猫", "你看起来很累。"), ("旁白", ""), ("刺猬", "是的，我怕黑。"),
                         ("狐狸", "走吧"), ("狼", "我来了"), ("旁白", "乌龟看着小兔子，笑了起来，然后对小兔子说："),
                         ("乌龟", "我也觉得很美。"), ("旁白", "后来呢，“真好”：“嗯”"), ("旁白", "小猫说："),
                         ("小猫", "我饿了。"), ("旁白", ""), ("小猫", "我饿了"), ("旁白", "小猫走了。")], step


_LINE = r"\[[^\]]+\]\s?[A-Za-z\u4e00-\u9fff][^\[\];；，,]{3,}[。！？!?.]"  # a tag, then a sentence of words


def test_the_story_note_carries_no_story_to_copy():
    """With an example story in the note the 1.5B told it, renamed, for 11 of 12 dev requests: neither the note
    nor the storyteller's own example may hold one (a story's lines: a speaker's tag followed by words)."""
    from tingshuo.engine.understand import _STORY_NOTE

    for note in _STORY_NOTE.values():
        assert not re.search(_LINE, note), note
    example = get_persona("storyteller").example
    assert example and not re.search(_LINE, example[1].replace("[讲故事]", "")), example
    assert re.search(_LINE, "[旁白]从前，小兔子在森林里迷了路。[小兔子]我好害怕呀！")  # what the old note held
