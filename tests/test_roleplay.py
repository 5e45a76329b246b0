"""Role-play: each built-in role, entered by asking, keeps its voice and manner for five turns and is left on request.

Judging rule (issue 7), per role:
- entering: "你当X跟我说话" (or the tutor in English) makes the engine emit ``persona.changed`` for that role;
- voice: every reply's audio is closer (speaker-embedding cosine) to the role's own voice than to any other
  built-in voice, references being a fixed sentence spoken in each voice;
- manner: at least 3 of the 5 replies carry the role's markers (below; the tutor: at least 4 of 5 replies in English);
- leaving: after "别演了，做回你自己" a ``persona.changed`` back to the companion, and the next reply is in the
  companion's voice (same test) with none of the role's markers.
The user's lines are the seed product's favourite game: relatives' new-year questions (and an English learner's
sentences with mistakes, for the tutor).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.conftest import run
from tingshuo.engine.session import Session
from tingshuo.tts import VOICES, text_language

pytestmark = pytest.mark.slow

NEW_YEAR = ["过年回家，亲戚问我一个月挣多少钱。", "我姑妈又问我什么时候结婚。", "表弟考了全班第一，大家都在夸他。",
            "我爸让我明年考公务员，我不太想去。", "年夜饭吃太多了，肚子好撑啊。"]
LEARNER = ["Yesterday I go to the supermarket with my mother.", "She buy many vegetable for the new year.",
           "I am very like the spring festival.", "My brother have two dog.", "Can you tell me how to say 红包 in English?"]

ROLES = {
    "wukong": ("你当孙悟空跟我说话", NEW_YEAR, r"俺|老孙|师父|妖怪|金箍棒|筋斗|猴|大圣|桃|花果山|小娃娃"),
    "tangseng": ("用唐僧的口气跟我聊天", NEW_YEAR, r"贫僧|阿弥陀佛|施主|善哉|徒儿|出家|佛|缘"),
    "daiyu": ("你扮演林黛玉跟我说话", NEW_YEAR, r"罢了|何必|妹妹|宝玉|花|泪|愁|诗|春|怜|心事|倒是|岂"),
    "storyteller": ("你当故事爷爷跟我说话", NEW_YEAR, r"从前|后来|故事|话说|小朋友|呀|孩子"),
    "tutor": ("Please act as an English tutor and talk with me.", LEARNER, None),
}


async def _turn(session: Session, text: str) -> tuple[str, np.ndarray, list]:
    await session.push_text(text)
    await session.wait_idle()
    events = session.drain_events()
    done = [e for e in events if e.type == "response.done"]
    assert done and done[-1].status == "completed", [e for e in events if e.type == "error"]
    chunks = [e.audio for e in events if e.type == "reply.audio"]
    return done[-1].text, (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), events


def _closest(encoder, references, audio, rate) -> str:
    e = encoder.embed(audio, rate)
    return max(references, key=lambda k: encoder.similarity(e, references[k]))


# The test plays a fixed sample of the roles: a Chinese character (a poet's sighs), eight spoken turns (~50 s);
# bench/perform.py plays all five with the same rule (its bounds table), the English tutor among them. 孙悟空 is
# entered and voiced by test_server's role test and recognised by test_voices'; the tutor's own job (the sounds of
# a learner's English) is test_tutor_coach's.
SAMPLE = ("daiyu",)


def play_role(stack, role: str) -> dict:
    """Enter the role, five lines in it, leave it, one more line: what each reply said and sounded like."""
    ask, lines, _ = ROLES[role]

    async def go():
        log = []
        # the words' emotion reading is not what is tested here; short replies keep five roles × eight turns brief
        settings = stack.settings.model_copy(deep=True)
        settings.emotion.text = False
        settings.llm.max_tokens = 70
        async with Session(stack, speak=True, settings=settings) as s:
            _, _, events = await _turn(s, ask)
            entered = [e.persona for e in events if e.type == "persona.changed"]
            for line in lines:
                reply, audio, _ = await _turn(s, line)
                log.append((line, reply, audio))
            _, _, events = await _turn(s, "好了，别演了，做回你自己吧。")
            back = [e.persona for e in events if e.type == "persona.changed"]
            after, after_audio, _ = await _turn(s, "今天晚上吃什么好呢？")
        return {"entered": entered, "log": log, "back": back, "after": after, "after_audio": after_audio}

    return run(go())


def _shares_run(a: str, b: str, n: int) -> bool:
    """Whether ``b`` repeats ``n`` characters in a row of ``a``, as written (the measure of the dev figures)."""
    return any(a[i:i + n] in b for i in range(len(a) - n + 1))


def role_failures(role: str, played: dict, speaker_encoder, voice_references, rate: int) -> list:
    """Every way the role was not kept (empty: kept), by the judging rule at the top of this file."""
    _, _, markers = ROLES[role]
    own = VOICES[stack_persona(role).voice]
    # the reference that speaks Chinese as this role does (the tutor's Chinese is in the narrator's voice)
    expected = next(k for k, v in VOICES.items() if v.kokoro == own.kokoro and k != "joe")
    log, after = played["log"], played["after"]
    report = [(line, reply) for line, reply, _ in log]
    wrong: list = []
    if not played["entered"] or played["entered"][0] != role:
        wrong.append(("not entered", played["entered"]))
    for line, reply, audio in log:
        if role == "tutor" and text_language(reply) == "en":
            continue  # English goes to Piper's joe, the tutor's English voice (checked below)
        if len(audio) <= rate // 2:
            wrong.append(("no audio", line, reply))
            continue
        got = _closest(speaker_encoder, voice_references, audio, rate)
        if got != expected:
            wrong.append(("voice", line, reply, got))
    if role == "tutor":
        if len([r for _, r, _ in log if text_language(r) == "en"]) < 4:
            wrong.append(("fewer than 4 of 5 replies in English", report))
    elif len([r for _, r, _ in log if re.search(markers, r)]) < 3:
        wrong.append(("fewer than 3 of 5 replies in manner", report))
    # a role answers each line, not the one before: before the no-copy block (llm/ngrams.py) 16 of 20 dev replies
    # in the Chinese presets repeated 8 characters of the reply before, 1 of 20 with it. Han characters only: in
    # English 8 characters are two words of a formula ("Yes, that's right!" opened the tutor's replies)
    copied = [(a, b) for (_, a, _), (_, b, _) in zip(log, log[1:]) if role != "tutor" and _shares_run(a, b, 8)]
    if len(copied) > 1:
        wrong.append(("more than one reply copies the reply before", copied))
    if not played["back"] or played["back"][0] != "companion":
        wrong.append(("not left", played["back"]))
    if _closest(speaker_encoder, voice_references, played["after_audio"], rate) != "xiaonuan":
        wrong.append(("not the companion's voice after leaving", after))
    if markers and re.search(r"俺老孙|贫僧|阿弥陀佛|罢了", after):
        wrong.append(("still in manner after leaving", after))
    return wrong


@pytest.mark.parametrize("role", SAMPLE)
def test_a_role_keeps_its_voice_and_manner_for_five_turns_and_is_left_on_request(stack, tts, speaker_encoder,
                                                                                 voice_references, role):
    played = play_role(stack, role)
    wrong = role_failures(role, played, speaker_encoder, voice_references, tts.sample_rate)
    assert not wrong, wrong


def stack_persona(key: str):
    from tingshuo.dialogue.persona import get_persona

    return get_persona(key)
