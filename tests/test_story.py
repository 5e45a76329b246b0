"""Story mode: "讲个故事" gives a story whose lines are attributed and spoken in their speakers' voices.

Judging rule (issue 7): the reply's clauses name at least two characters besides the narrator; each attributed
line (consecutive clauses of one speaker) is identified by speaker embedding as the voice the engine cast for
it — nearest among every built-in voice's reference — for at least 90 % of the lines, and every character's
voice differs from the narrator's. Streaming and interruption are the ordinary reply path (tests/test_duplex.py);
here the story must also arrive as several clauses, not one block.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import run
from tingshuo.dialogue.persona import get_persona
from tingshuo.dialogue.speech import ScriptLines, StyleTags
from tingshuo.engine.session import Session
from tingshuo.tts import VOICES





async def _story(stack, persona: str | None, ask: str):
    settings = stack.settings.model_copy(deep=True)
    settings.emotion.text = False  # not under test; keeps the run short
    async with Session(stack, speak=True, persona=persona, settings=settings) as s:
        await s.push_text(ask)
        await s.wait_idle()
        events = s.drain_events()
    return events


@pytest.mark.slow
@pytest.mark.parametrize("persona,ask", [(None, "给我讲一个小猫和大象的故事"), ("storyteller", "讲个故事吧")])
def test_a_story_switches_voices_at_its_attributed_lines(stack, tts, speaker_encoder, voice_references, persona, ask):
    events = run(_story(stack, persona, ask))
    clauses = [e for e in events if e.type == "reply.clause"]
    audio = [e for e in events if e.type == "reply.audio"]
    assert len(clauses) == len(audio) and len(clauses) >= 4, [c.text for c in clauses]
    narrator_voice = VOICES[get_persona(persona or "companion").voice]
    # attributed lines: consecutive clauses of one speaker
    lines: list[tuple[str, str, list[np.ndarray], str]] = []
    for c, a in zip(clauses, audio):
        assert c.speaker, c.text
        if lines and lines[-1][0] == c.speaker:
            lines[-1][2].append(a.audio)
            continue
        lines.append((c.speaker, c.voice, [a.audio], c.text))
    characters = {sp for sp, *_ in lines if sp not in ("旁白", "叙述")}
    assert len(characters) >= 2, [(sp, t) for sp, _, _, t in lines]
    for sp, v, _, _ in lines:
        if sp in characters:
            assert VOICES[v].kokoro != narrator_voice.kokoro, (sp, v)
    right = []
    for sp, v, parts, text in lines:
        e = speaker_encoder.embed(np.concatenate(parts), tts.sample_rate)
        got = max(voice_references, key=lambda k: speaker_encoder.similarity(e, voice_references[k]))
        right.append((got == v, sp, v, got, text))
    assert sum(ok for ok, *_ in right) >= 0.9 * len(right), right


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
