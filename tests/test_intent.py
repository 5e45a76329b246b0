"""The turn plan (issue 19): what a turn asks the assistant to do is the model's reading, not a word list's.

Fast: the labelled sets are what they claim (enough cases per intent, no sentence shared with the reader's
examples or between the splits), and the plan → session mapping. Slow, on the real 1.5B: a fixed sample of the test
split (the whole split runs in bench/understand.py), odd input, and whole typed turns whose words mention a song, a
search word or the voice without asking for them.
"""

from __future__ import annotations

import pytest
from conftest import one_turn, reply_of
from intent_cases import ACTIONS, load, role_of

from tingshuo.dialogue.persona import persona_for
from tingshuo.engine.understand import voice_change
from tingshuo.intent import CHAT, Intent, IntentReader, VoiceAsk, settle
from tingshuo.intent.reader import SHOTS

TEST, DEV = load("test"), load("dev")


def test_the_test_split_has_enough_of_every_action_and_hard_negatives():
    for a in ACTIONS:
        assert sum(c.intent == a for c in TEST) >= 15, a
    assert sum(bool(c.voice) for c in TEST) >= 15
    assert sum(bool(c.negative) for c in TEST) >= 40
    assert len(TEST) + len(DEV) >= 300
    assert {c.lang for c in TEST} == {"zh", "en"}


def test_no_example_of_the_reader_is_a_labelled_case_and_the_splits_are_disjoint():
    shots = {t for _, t, _ in SHOTS}
    texts = [c.text for c in TEST + DEV]
    assert not shots & set(texts)
    assert not {c.text for c in TEST} & {c.text for c in DEV}


def test_the_bundled_plan_probe_belongs_to_this_reader_prompt_and_leaves_no_role_it_cannot():
    """Editing the reader's prompt or examples without retraining the probe (bench/train_plan_probe.py) would
    silently drop the plan back to its label tokens: caught here. Without a role that could be played, role_leave
    gets nothing and the rest still sums to one."""
    import numpy as np

    from tingshuo.intent.plan import INTENTS
    from tingshuo.intent.reader import PlanProbe, prompt_hash

    probe = PlanProbe.bundled()
    assert probe is not None
    model, _, digest = probe.fingerprint.partition("#")
    assert digest == prompt_hash() and model.endswith("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
    assert tuple(probe.classes) == INTENTS and probe.W.shape == (len(probe.tokens), len(INTENTS))
    assert np.all(probe.sd > 0)
    logits = np.random.default_rng(0).normal(0, 3, 152_000)
    free, _, _ = probe(logits, can_leave=True)
    fixed, voice, once = probe(logits, can_leave=False)
    assert fixed["role_leave"] == 0.0 and abs(sum(fixed.values()) - 1) < 1e-6 and 0 <= voice <= 1 and 0 <= once <= 1
    rest = 1 - free["role_leave"]
    assert all(abs(fixed[k] - free[k] / rest) < 1e-6 for k in INTENTS if k != "role_leave")


def test_a_voice_reading_becomes_a_change_with_the_measure_from_the_words():
    slow = voice_change("说慢一点", Intent("chat", True, VoiceAsk(speed="slower")))
    much = voice_change("再慢一点", Intent("chat", True, VoiceAsk(speed="slower")))
    assert slow is not None and much is not None and much.speed < slow.speed < 1.0
    loud = voice_change("你声音太小了", Intent("chat", True, VoiceAsk(volume="louder")))
    assert loud is not None and loud.volume > 1.0
    # which way is measured from the words once the model read a speed or loudness request: the 1.5B copies a
    # complaint's word ("你语速太快了" read as faster; test split, 2026-12-03), the words say "slower"
    fast = voice_change("你语速太快了", Intent("chat", True, VoiceAsk(speed="faster")))
    assert fast is not None and fast.speed < 1.0
    up = voice_change("Speak up, I can barely hear you.", Intent("chat", True, VoiceAsk(speed="faster")))
    assert up is not None and up.volume > 1.0 and up.speed is None
    soft = voice_change("你嗓门太大了", Intent("chat", True, VoiceAsk(volume="louder")))
    assert soft is not None and soft.volume < 1.0
    # words that give no measure keep the model's direction
    assert voice_change("能不能换个速度", Intent("chat", True, VoiceAsk(speed="faster"))).speed > 1.0
    once = voice_change("用难过的语气说一句再见", Intent("chat", True, VoiceAsk(style="sad", lasting=False)))
    assert once is not None and once.style == "sad" and once.one_off
    assert voice_change("说慢一点", CHAT) is None  # no reading, no change, whatever the words say


def test_a_dialect_reading_names_the_dialect_from_the_words_and_is_said_in_a_fitting_style():
    from tingshuo.dialogue.policy import plan_reply
    from tingshuo.dialogue.voice import VoiceState
    from tingshuo.intent.reader import _voice

    assert _voice("dialect", None, True, "用东北话跟我唠两句嗑").dialect == "东北话"
    assert _voice("dialect", None, True, "说普通话吧").dialect == ""  # back to Mandarin
    # a mention, read as a request by the model: the words name no dialect, so nothing changes (it named "话有话")
    hard = _voice("dialect", None, True, "我老家是东北的，说话有口音")
    assert hard.dialect is None and voice_change("我老家是东北的，说话有口音", Intent("chat", True, hard)) is None
    plan = plan_reply(None, VoiceState(dialect="东北话"), None, None, "zh")
    assert plan.style == "happy" and "东北话" in plan.note
    assert plan_reply(None, VoiceState(dialect="东北话", whisper=True), None, None, "zh").style != "happy"



def test_readings_the_words_cannot_ask_for_are_held_back_and_nothing_is_started():
    """settle() only blocks: a speed reading on words that say nothing about speaking, a song on words that name
    no singing, a search on words with nothing current; a reading it keeps is the model's, unchanged."""
    for remark in ("时间过得太快了", "这首歌节奏太慢了", "我慢慢走回家的"):
        s = settle(remark, Intent("chat", True, VoiceAsk(speed="faster")))
        assert s.voice is None and not s.addressed and s.held == ("voice",), remark
    assert settle("We walked along the liver after dinner.", Intent("sing_adapt", True)).intent == "chat"
    assert settle("长城有多长", Intent("search", True)).intent == "chat"
    assert settle("来一个笑话", Intent("story", True)).intent == "chat"
    kept = Intent("search", True, p=0.9)
    assert settle("美国现在的总统是谁", kept) is kept
    assert settle("说慢一点", Intent("chat", True, VoiceAsk(speed="slower"))).voice == VoiceAsk(speed="slower")
    assert settle("好的", CHAT) is CHAT  # nothing read, nothing to hold, nothing started


def test_a_character_is_found_by_name_or_alias_in_the_model_answer_or_the_words():
    assert persona_for("孙悟空", "") == "wukong"
    assert persona_for(None, "你就是美猴王，给我讲讲你的本领") == "wukong"
    assert persona_for("猪八戒", "你扮演猪八戒") is None  # no persona plays him (the roles issue writes one)


class _Refuses:
    """A chat model that must not be asked: empty and wordless turns are conversation without a reading."""

    from tingshuo.llm.base import Capabilities
    caps = Capabilities(prompt_scores=True, grammar=True, json_schema=True)
    name = "refuses"

    def __getattr__(self, name):
        raise AssertionError(f"the model was asked ({name}) about a turn with no words")


@pytest.mark.parametrize("text", ["", "   ", "😀😀😀", "……？！", "\u200b"])
def test_turns_without_words_are_chat_without_asking_the_model(text):
    assert IntentReader(_Refuses()).read(text) == CHAT  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ the real model
# two of every action intent, the voice requests' first four, and a hard negative of every kind, fixed
def _sample():
    out, seen = [], {}
    for c in TEST:
        key = f"neg:{c.negative}" if c.negative else ("voice" if c.voice else c.intent)
        if seen.get(key, 0) < (4 if key == "voice" else 2 if not c.negative else 1):
            seen[key] = seen.get(key, 0) + 1
            out.append(c)
    return out


SAMPLE = _sample()


@pytest.fixture(scope="module")
def reader(stack):
    assert stack.planner is not None
    stack.planner.warmup()
    return stack.planner


@pytest.fixture(scope="module")
def sample_reads(reader):
    # what the session acts on: the reading settled, a role request earlier in the history played
    return [(c, settle(c.text, reader.read(c.text, list(c.history), role_of(reader, c)))) for c in SAMPLE]


@pytest.mark.slow
def test_a_fixed_sample_of_the_test_split_is_read_right(sample_reads):
    """The whole split, in bench/understand.py, is the report (97.5 % right); a sample keeps the model honest."""
    wrong = [(c.text, c.intent, p.intent, p.voice) for c, p in sample_reads
             if p.intent != c.intent or bool(c.voice) != (p.voice is not None)]
    assert len(wrong) <= 0.2 * len(SAMPLE), wrong


@pytest.mark.slow
def test_no_hard_negative_in_the_sample_starts_anything(sample_reads):
    """With the probe none of the test split's 55 acted (fourth run; the blind first run: 3, all singing)."""
    acted = [(c.text, p.intent, p.voice) for c, p in sample_reads if c.negative and (p.acts or p.voice is not None)]
    assert not acted, acted


@pytest.mark.slow
@pytest.mark.parametrize("text", ["今天天气不错，我们去散步吧。" * 700, "我今天 feel 有点 down，工作 deadline 太多了 😩",
                                  "👍" * 50 + "好", "ｈｅｌｌｏ，你好！"])
def test_odd_turns_give_a_valid_plan(reader, text):
    p = reader.read(text)
    assert p.intent == "chat" and p.voice is None, p.to_dict()


@pytest.mark.slow
def test_mentions_start_nothing_in_a_whole_turn(stack):
    """Typed turns through a session: the flight complaint does not search, the joke is not sung, the remark on
    time does not slow the voice for the rest of the call."""
    for text in ("我今天误机了，下午约好的会全泡汤了，好烦啊", "来一个笑话", "时间过得太快了"):
        events, s = one_turn(stack, text=text)
        kinds = [e.type for e in events]
        assert "search.done" not in kinds and "voice.changed" not in kinds, (text, kinds)
        assert "persona.changed" not in kinds and not s.state.sung, (text, kinds, s.state.sung)
        assert s.state.voice_state == type(s.state.voice_state)(), (text, s.state.voice_state)


@pytest.mark.slow
def test_a_typed_stop_is_answered_with_one_word(stack):
    events, _ = one_turn(stack, text="好了好了，别说了")
    assert reply_of(events) in ("好。", "Okay."), reply_of(events)


@pytest.mark.slow
def test_a_chat_api_reads_the_plan_as_schema_constrained_json(llama_server, stack):
    """On a remote OpenAI-compatible LLM (no next-token probabilities) the plan is one answer under a JSON schema
    (``response_format``), here against a real llama_cpp.server on loopback over the bundled GGUF."""
    from tingshuo.config import LlmConfig
    from tingshuo.dialogue.songs import find_title
    from tingshuo.intent.reader import LABELS
    from tingshuo.llm.openai_compat import OpenAICompatChat

    # The read timeout is the test's, not the product's: on 2 loaded cores the server's first read of the plan's
    # ~1,500-token prompt took 44 s (30 s, the default, timed out in CI), later ones ~13 s; this test checks the
    # schema path, bench/intent.py the time
    chat = OpenAICompatChat(LlmConfig(backend="openai", base_url=llama_server, model_name="qwen-local",
                                      timeout_s=240))
    sent, post = [], chat._post

    def spy(body, retries=None):
        sent.append(body)
        return post(body, retries)

    chat._post = spy  # type: ignore[method-assign]
    def title(text):
        found = find_title(text, stack.songbook)
        return found[0].title if found else None

    reader = IntentReader(chat, title=title)
    sing = reader.read("你能给我唱一遍小星星吗")
    assert sing.how == "json" and sing.intent == "sing" and sing.song == "小星星", sing.to_dict()
    # OpenAI's json_schema form first; llama-cpp-python's server refuses it, so its json_object + schema form
    fmt, took = sent[0]["response_format"], sent[-1]["response_format"]
    assert fmt["type"] == "json_schema" and "改词" in fmt["json_schema"]["schema"]["properties"]["intent"]["enum"]
    assert took["type"] == "json_object" and took["schema"]["properties"]["intent"]["enum"] == list(LABELS)
    talk = reader.read("我昨天加班到很晚，好累")
    assert talk.intent == "chat" and talk.voice is None, talk.to_dict()
    # a dead endpoint: the turn is conversation, not an exception
    dead = OpenAICompatChat(LlmConfig(backend="openai", base_url="http://127.0.0.1:9/v1", timeout_s=2))
    assert IntentReader(dead).read("给我唱首歌") == CHAT


@pytest.mark.slow
def test_in_a_conversation_the_next_turns_context_is_read_ahead(stack):
    """Once a reply is in the conversation the plan's context holds the next turn's context lines, evaluated
    ahead: the second turn's read evaluates only its own words, and reads as a read from scratch does."""
    import asyncio

    import numpy as np

    from tingshuo.engine import Session

    planner = stack.planner
    batches: list[int] = []

    async def go():
        s = Session(stack, speak=False)
        task = asyncio.create_task(_drain(s))
        await s.push_text("我最近在学做饭，昨天第一次做了红烧肉")
        await s.wait_idle()
        await asyncio.wrap_future(s.ctx.lanes.plan.submit(lambda: None))  # the context read ahead is done
        history = [{"role": r, "content": t} for r, t in s.state.recent(2)]
        evaluate, read, slots = planner.llm.llm.eval, planner.read, planner._with_slots
        reading = []  # counted only inside the read (the next context is read ahead after the reply)

        def counted(tokens):
            if reading:
                batches.append(len(tokens))
            return evaluate(tokens)

        def read_counted(*a, **k):
            reading.append(1)
            try:
                return read(*a, **k)
            finally:
                reading.clear()

        def slots_uncounted(*a, **k):
            # a slot's question (which song? — asked since unknown titles are read) is new text, not the context
            reading.clear()
            return slots(*a, **k)

        planner.llm.llm.eval, planner.read, planner._with_slots = counted, read_counted, slots_uncounted
        try:
            await s.push_text("给我唱首歌庆祝一下吧")
            await s.wait_idle()
        finally:
            planner.llm.llm.eval, planner.read, planner._with_slots = evaluate, read, slots
        await s.close()
        await task
        return history, s.state.last.intent

    history, it = asyncio.run(go())
    assert [m["role"] for m in history] == ["user", "assistant"]
    context = planner.llm.count_tokens(history[0]["content"] + history[1]["content"][:80])
    assert batches and max(batches) < context, (batches, context)  # the turn's words, never its context again
    assert it.intent == "sing"
    fresh = planner.llm.next_token_logits(planner.messages("给我唱首歌庆祝一下吧", history),
                                          fixed=len(planner.messages("", history)) - 1, answer="")
    again, _, _ = planner.probe(fresh)
    assert again["sing"] == pytest.approx(it.scores["sing"], abs=0.01)
    assert np.isfinite(fresh).all()


async def _drain(s):
    async for _ in s.events():
        pass
