"""The real-time engine: turn-taking policy, paced playout, echo cancellation, the end-of-turn models, and the
duplex scenario suite (real clips and our own TTS, fed in real time through a simulated room)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from conftest import run
from tingshuo.audio.io import load_audio
from tingshuo.config import TurnConfig
from tingshuo.engine.playout import Playout
from tingshuo.engine.turns import TurnScore, is_backchannel, required_silence_ms


# ---------------------------------------------------------------- policy (no models)
def test_wait_grows_as_completeness_falls_and_eagerness_scales_it():
    cfg = TurnConfig()
    waits = [required_silence_ms(cfg, TurnScore(p, p)) for p in (0.95, 0.6, 0.3, 0.05)]
    assert waits == sorted(waits) and waits[0] < 350 and waits[-1] > 1300
    # either model saying "unfinished" is enough to wait long
    assert required_silence_ms(cfg, TurnScore(0.95, 0.02)) > 1200
    assert required_silence_ms(cfg, TurnScore(0.02, 0.95)) > 1000
    high = required_silence_ms(TurnConfig(eagerness="high"), TurnScore(0.5, 0.5))
    low = required_silence_ms(TurnConfig(eagerness="low"), TurnScore(0.5, 0.5))
    assert high < required_silence_ms(cfg, TurnScore(0.5, 0.5)) < low
    assert required_silence_ms(TurnConfig(mode="server_vad", silence_ms=420), TurnScore(0.1, 0.1)) == 420


def test_a_transcript_punctuated_as_unfinished_waits_longer():
    from tingshuo.engine.turns import text_score, trails_off

    assert trails_off("如果明天不下雨的话，") and trails_off("我想买苹果、") and trails_off("So, I was thinking...")
    assert not trails_off("如果明天不下雨的话") and not trails_off("你好。") and not trails_off("What?")
    cfg = TurnConfig()
    # the measured case: smart-turn 0.87, the LLM 0.23 on "如果明天不下雨的话，" answered inside a 1 s pause
    plain = required_silence_ms(cfg, TurnScore(0.87, text_score(0.23, "如果明天不下雨的话")))
    comma = required_silence_ms(cfg, TurnScore(0.87, text_score(0.23, "如果明天不下雨的话，")))
    assert plain < 1000 < comma


@pytest.mark.parametrize("text", ["嗯", "嗯嗯。", "对对对", "好的", "好得", "是的", "Mm-hm.", "Yeah, right.", "okay", "", "…"])
def test_backchannels(text):
    assert is_backchannel(text, 500, 900)


@pytest.mark.parametrize("text", ["等一下", "不对", "wait", "嗯，我想问一下", "what about tomorrow"])
def test_interruptions_are_not_backchannels(text):
    assert not is_backchannel(text, 500, 900)


def test_long_speech_is_never_a_backchannel():
    assert not is_backchannel("嗯", 1500, 900)


@pytest.mark.parametrize("text", ["停", "停！", "别说了。", "等一下", "不", "不不不", "Stop.", "wait", "No, no.", "hold on"])
def test_short_stop_words_stop_even_under_one_syllable(text):
    """Under 450 ms the transcript was not trusted and every cut-in resumed the reply: "停" and "不" did not stop."""
    assert not is_backchannel(text, 300, 900)
    assert not is_backchannel(text, 600, 900)


def test_the_recognizers_weighing_decides_a_short_cut_in_beyond_its_margin():
    """Whisper base's transcript of a one- or two-syllable cut-in is a guess ("停下" → "平下", "对" → "推呀"); its
    weighing of the audio against the closed lists (``cutin_lean``) decides when clear, the old rules when not."""
    from tingshuo.engine.turns import CUTIN_MARGIN, CUTIN_PHRASES, cutin_lean

    stops, listeners = CUTIN_PHRASES["zh"]
    scores = [-20.0] * len(stops) + [-25.0] * len(listeners)
    assert cutin_lean(scores, "zh") == 5.0
    assert not is_backchannel("推呀", 500, 900)  # over one syllable, words that are no backchannel: it stopped
    assert is_backchannel("推呀", 500, 900, lean=-2 * CUTIN_MARGIN)  # heard as a listener token: resumes
    assert is_backchannel("平下", 300, 900)  # one syllable's worth of confident speech: it resumed
    assert not is_backchannel("平下", 300, 900, lean=2 * CUTIN_MARGIN)  # heard as a stop phrase: stops
    assert is_backchannel("平下", 300, 900, lean=CUTIN_MARGIN / 2)  # within the margin: the rules decide
    assert not is_backchannel("停", 300, 900, lean=-5.0)  # a stop word written out is never overruled
    assert not is_backchannel("嗯", 1200, 900, lean=-5.0)  # nor is length


@pytest.mark.parametrize("text", ["嗯", "对", "好的", "yeah", "OK", "不错", "停车场"])
def test_listener_tokens_and_stop_lookalikes_under_one_syllable_still_resume(text):
    assert is_backchannel(text, 300, 900)


# ---------------------------------------------------------------- playout (real asyncio clock)
# Behaviour only, against the wall clock as measured (a loaded machine may oversleep); the precision of the
# pacing (heard within ±0.1 s of 0.5 s, drained within 0.8 s) is checked by bench/duplex.py's bounds.
@pytest.fixture(scope="module")
def trial():
    from tingshuo.engine.simulate import playout_trial

    return run(playout_trial())


def test_playout_holds_while_paused_and_sends_nothing_after_a_stop(trial):
    assert trial.frames_at_pause > 0
    assert trial.frames_while_paused == 0  # nothing released while paused
    assert trial.frames_after_stop == 0  # nothing after a stop


def test_playout_knows_what_was_heard(trial):
    t = trial
    # heard: something, never more than the wall clock let anyone hear, never more than was released
    assert 0 < t.heard_at_pause_s <= t.wall_to_pause_s + 1e-3
    assert t.heard_at_pause_s <= t.frames_at_pause * t.frame_s + 1e-6
    # the text heard is the played share of the first clause, marked as cut (or whole clauses, if the pause came late)
    if t.heard_at_pause_s < 1.0:
        assert t.heard_text_at_pause.startswith("一") and t.heard_text_at_pause.endswith("…"), t
    else:
        assert t.heard_text_at_pause.startswith("一二三四。"), t
    # resumed from the heard position: the stop adds what the resumed stretch let through, no more
    assert t.heard_at_pause_s <= t.heard_at_stop_s <= t.heard_at_pause_s + t.wall_resumed_s + 1e-3


def test_playout_is_paced_not_sent_at_once(trial):
    """Released ahead of the ear by at most the lead and one frame at each (re)start, the unheard part re-sent
    once: far fewer frames than the 2 s queued, whatever the machine's load."""
    t = trial
    assert t.frames_at_pause * t.frame_s <= t.heard_at_pause_s + t.lead_s + t.frame_s + 1e-6
    assert t.frames_at_stop * t.frame_s <= t.heard_at_stop_s + 2 * (t.lead_s + t.frame_s) + 1e-6
    assert t.frames_at_stop * t.frame_s < t.total_s


def test_playout_drains_after_the_last_frame_is_heard(trial):
    # all 13 frames of 0.5 s, and not before the listener could have heard them (less the lead)
    assert trial.drain_frames == 13
    assert trial.drain_wall_s >= trial.drain_audio_s - trial.lead_s - trial.frame_s


# ---------------------------------------------------------------- models
@pytest.mark.slow
def test_smart_turn_separates_finished_from_cut_sentences(en_clips):
    from tingshuo.audio.smart_turn import SmartTurn

    st = SmartTurn()
    sil = np.zeros(3200, np.float32)
    full, cut = [], []
    for path in en_clips:
        x = load_audio(path, 16000)
        full.append(st.probability(np.concatenate([x, sil])))
        cut.append(st.probability(np.concatenate([x[: int(0.6 * len(x))], sil])))
    assert np.mean(full) - np.mean(cut) > 0.2, (full, cut)


@pytest.mark.slow
def test_llm_reads_whether_the_words_are_finished(stack):
    from tingshuo.dialogue.persona import COMPANION

    llm = stack.llm
    history = [{"role": "system", "content": COMPANION.system_prompt}]
    done = ["你能给我讲个故事吗", "今天天气怎么样", "Can you tell me a joke"]
    open_ = ["帮我订一张明天去北京的", "因为我觉得", "I was thinking that maybe we could", "我的电话号码是一三八"]
    p_done = [llm.turn_end_probability(history, t) for t in done]
    p_open = [llm.turn_end_probability(history, t) for t in open_]
    assert min(p_done) > 0.3 and max(p_open) < 0.1, (p_done, p_open)


def _over_our_voice(far: np.ndarray, user: np.ndarray, room: bool) -> tuple[float | None, float]:
    """Our (16 kHz) speech played for 2 s, then ``user`` said over the rest of it, with the room's echo or on a
    headset: (seconds played before the canceller was ready, dB it took out of the user's turn)."""
    from tingshuo.audio.aec import EchoCanceller
    from tingshuo.engine.simulate import Room

    r, aec = Room(16000), EchoCanceller(16000, lead_ms=80)
    mic = np.random.default_rng(0).normal(0, 1e-3, len(far) + 16000).astype(np.float32)  # a quiet mic, -60 dBFS
    at = 2 * 16000
    mic[at : at + len(user)] += user[: len(mic) - at]
    ready_at, raw, out = None, [], []
    for pos in range(0, len(far) - 640, 640):
        frame = far[pos : pos + 640]
        aec.played(frame)
        if room:
            shift, e = r.echo(frame)
            j = pos + r.delay + 80 * 16 + shift
            mic[j : j + len(e)] += e[: len(mic) - j]
        o, w = aec.process(mic[pos : pos + 640])
        if aec.ready and ready_at is None:
            ready_at = aec.far_active_s
        if pos >= at:
            out.append(o)
            raw.append(w)
    o, w = np.concatenate(out), np.concatenate(raw)
    return ready_at, float(10 * np.log10(np.mean(w**2) / (np.mean(o**2) + 1e-12)))


def test_a_headset_user_is_heard_over_our_voice_from_the_first_second(zh_clip, en_clips):
    """A headset (or a client cancelling its own echo) with the canceller on: our voice never reaches the mic.
    AEC3 took ~20 dB out of the user all the same, and barge-in waited for 5 s of our speech: 0 of 4 "停下" over
    a story stopped it (real time). Now the mic passes unchanged and barge-in is armed after 1 s; in a room the
    canceller keeps its warm-up and still removes our echo."""
    from tingshuo.audio.aec import GIVE_UP_S, NO_ECHO_S, WARMUP_S
    from tingshuo.tts import level

    far = level(load_audio(zh_clip, 16000))  # at the level our replies are played
    user = level(load_audio(sorted(en_clips)[0], 16000))[: len(far) - 2 * 16000]
    ready, taken = _over_our_voice(far, user, room=False)
    assert ready is not None and NO_ECHO_S <= ready < NO_ECHO_S + 0.5 and abs(taken) < 0.5, (ready, taken)
    ready, _ = _over_our_voice(far, np.zeros(0, np.float32), room=True)
    assert ready is None or WARMUP_S <= ready <= GIVE_UP_S, ready


@pytest.mark.slow
def test_whisper_weighs_short_stop_phrases_against_listener_tokens(recognizer, tts):
    """Clean cut-ins in bench/doubletalk.py's *test* voices (none of them tuned on): a stop phrase must lean to
    "stop", a backchannel never. On these clips Whisper's own transcripts include "听", "同", "推呀推呀…"."""
    from tingshuo.audio.io import resample
    from tingshuo.engine.turns import CUTIN_MARGIN, CUTIN_PHRASES, cutin_lean
    from tingshuo.tts import VoiceSettings

    phrases = sum(CUTIN_PHRASES["zh"], [])

    def lean(text: str, voice: str) -> float:
        audio = resample(tts.synthesize(text, VoiceSettings(voice=voice), "zh"), tts.sample_rate, 16000)
        return cutin_lean(recognizer.phrase_scores(audio.astype(np.float32), phrases, "zh"), "zh")

    voices = ("jf_tebukuro", "jf_gongitsune")
    stops = {(t, v): lean(t, v) for t in ("停下。", "等一下。", "别说了。", "不要说了。") for v in voices}
    listens = {(t, v): lean(t, v) for t in ("嗯。", "对。", "好的。") for v in voices}
    # 7 of 8 when written (jf_tebukuro's 等一下 leans -2.9); the listener tokens lean -0.8 to -7.3
    assert sum(x >= CUTIN_MARGIN for x in stops.values()) >= 6, stops
    assert all(x < CUTIN_MARGIN for x in listens.values()), listens


def test_the_raw_mic_gate_hears_a_user_over_our_speech_sooner_and_never_later(zh_clip, en_clips):
    """Real recordings through the simulated room, offline (`tingshuo.engine.doubletalk`): our reply is four
    LibriVox clips, the user the Chinese clip (its voice starts 0.54 s in), at ten moments of the reply, our echo
    about as loud as the user (a laptop turned up). AEC3 mutes a user over continuous speech until its filter
    re-converges. Measured 2026-12-07, first onset after the clip began, without → with the gate
    (``duplex.raw_vad``): 2.86 → 0.72, 0.89 → 0.64, 0.63 → 0.54 s, never → 2.92 s, the same at the other six
    (one moment unheard either way: the mic never rises 5 dB over the echo's usual excess there).
    Echo alone opens nothing with the gate on."""
    from tingshuo.config import Settings
    from tingshuo.engine.doubletalk import doubletalk_trial
    from tingshuo.tts import level

    clips = sorted(en_clips)
    reply = [level(load_audio(c, 16000)) for c in (clips[0], clips[2], clips[3], clips[4])]
    user = level(load_audio(zh_clip, 16000))
    rng = np.random.default_rng(1)
    moments = [(4.0 + i * 1.3, list(rng.uniform(0, 0.3, len(reply)))) for i in range(10)]
    echo_gaps = [list(rng.uniform(0, 0.3, len(reply))) for _ in range(3)]
    plain, gated = Settings(), Settings()
    gated.duplex.raw_vad = True  # opt-in (config.DuplexConfig says why)
    late: dict[bool, list[float]] = {}
    for raw, settings in ((False, plain), (True, gated)):
        late[raw] = []
        for i, (at, gaps) in enumerate(moments):
            r = doubletalk_trial(settings, reply, 16000, gaps, user, at, seed=i, jitter_ms=20)
            first = [t - at for t in r.onsets_s if at - 0.1 <= t <= at + len(user) / 16000 + 0.2]
            late[raw].append(round(first[0], 2) if first else 99.0)
    before, after = late[False], late[True]
    assert all(a <= b + 0.05 for a, b in zip(after, before)), late  # never later (one 32 ms window of slack)
    assert any(a <= b - 1.0 for a, b in zip(after, before)), late  # and somewhere over a second sooner
    echo_only = [doubletalk_trial(gated, reply, 16000, g, np.zeros(16000, np.float32), 30.0, seed=s,
                                  jitter_ms=20) for s, g in enumerate(echo_gaps)]
    assert all(not e.onsets_s for e in echo_only), [e.onsets_s for e in echo_only]


@pytest.mark.slow
def test_echo_canceller_learns_the_room_and_removes_our_voice(tts):
    from tingshuo.audio.aec import EchoCanceller
    from tingshuo.engine.simulate import Room

    reply = np.concatenate([tts.synthesize(t, lang="zh") for t in
                            ["北京有很多好玩的地方，", "比如故宫、颐和园和天安门广场。", "你可以先去故宫看看。"]])
    room, aec = Room(tts.sample_rate), EchoCanceller(tts.sample_rate, lead_ms=80)
    mic = np.zeros(int(len(reply) / tts.sample_rate * 16000) + 16000, np.float32)
    raw, out, pos = [], [], 0
    for i in range(0, len(reply), 960):
        frame = reply[i : i + 960]
        aec.played(frame)
        shift, e = room.echo(frame)
        j = pos + room.delay + 80 * 16 + shift
        mic[j : j + len(e)] += e[: len(mic) - j]
        o, r = aec.process(mic[pos : pos + 640])
        out.append(o)
        raw.append(r)
        pos += 640
    o, r = np.concatenate(out), np.concatenate(raw)
    tail = slice(len(o) // 2, None)  # after convergence
    erle = 10 * np.log10(np.mean(r[tail] ** 2) / (np.mean(o[tail] ** 2) + 1e-12))
    assert aec.ready and erle > 15, erle


# ---------------------------------------------------------------- the duplex scenario suite
@pytest.fixture(scope="module")
def suite(stack, en_clips):
    """The "test" set in real time, the scenarios the tests below judge: one of its two English clips, one of its
    two backchannels, the Chinese pause and interruption (the benchmark plays them all, and the held-out set:
    the English pause and the soft English interruption over our echo are its figures, asserted by no test).
    The stop phrase is said on a headset here (no room): through the room it stops the reply about half the
    time (5 of 12 real-time runs, 2026-12-07; bench/doubletalk.py measures why, on 40 cues a split)."""
    from dataclasses import replace

    from tingshuo.audio.io import resample
    from tingshuo.engine import Session
    from tingshuo.engine.simulate import RATE, USER_VOICE, Cue, Scenario, build_suite, run_scenario
    from tingshuo.tts import VoiceSettings

    def say(text: str) -> np.ndarray:
        a = stack.tts.synthesize(text, VoiceSettings(voice=USER_VOICE), "zh")
        return resample(a, stack.tts.sample_rate, RATE).astype(np.float32)

    scenarios = build_suite(stack, sorted(map(str, en_clips)), "test", en_sample=(1,))
    # "对" over the story, judged a backchannel and resumed, then 1.2 s later the user goes on (on a headset)
    story = next(sc for sc in scenarios if sc.name == "test/interrupt_zh").cues[0]
    bc, more = say("对。"), say("我想换个话题，我们聊聊天气吧。")
    scenarios.append(Scenario("test/held_backchannel", "interrupt",
                              [story, Cue(bc, after_reply_s=1.5), Cue(more, after_reply_s=1.5 + len(bc) / RATE + 1.2)],
                              story.at_s + len(story.audio) / RATE + 12.0, room=False))

    async def go():
        outcomes = {}
        for sc in scenarios:
            if sc.name in ("test/backchannel_对", "test/pause_en", "test/interrupt_en", "test/stopword_等一下"):
                continue  # each scenario is 15-25 s of real time
            if sc.kind == "stopword":
                sc = replace(sc, room=False)
            s = Session(stack, duplex=True)
            await asyncio.sleep(0.3)  # the session's warm-up on the LLM thread
            outcomes[sc.name] = (await run_scenario(s, sc), s)
        return outcomes

    return run(go())


@pytest.mark.slow
def test_completed_questions_are_answered(suite):
    for name, (o, _) in suite.items():
        if o.kind in ("question", "echo"):
            # answered, with a measured first audio (how soon: bench/duplex.py's bounds, < 2.5 s)
            assert o.took_turn and o.latency_ms is not None and o.latency_ms > 0, (name, o)


@pytest.mark.slow
def test_a_mid_sentence_pause_is_not_taken_over(suite):
    o, _ = suite["test/pause_zh"]
    assert not o.took_turn, o
    assert "|" not in o.transcript  # the two halves were answered as one turn


@pytest.mark.slow
def test_interruption_stops_playback_and_truncates_the_turn_to_what_was_heard(suite):
    o, s = suite["test/interrupt_zh"]
    assert o.stopped and o.stop_ms is not None, o  # how soon (< 400 ms): bench/duplex.py's bounds
    assert o.frames_after_stop == 0
    turns = s.conversation.turns
    heard = [t["content"] for t in turns if t["role"] == "assistant"][1]  # [0] is the greeting
    heard = heard.removeprefix("嗯，")  # the acknowledgement was heard too, but is not part of the LLM's text
    full = o.reply.split(" | ")[0]
    # what stayed in the history is what the user heard: a prefix of the reply, marked as cut
    assert heard.rstrip("…") and full.startswith(heard.rstrip("…")) and len(heard.rstrip("…")) < len(full)
    assert "换个话题" in o.transcript.split(" | ")[-1]


def told(o) -> str:
    """What decided a real-time scenario, in full: pytest cuts an Outcome's repr before the judged backchannels,
    the transcript and the events, and a scenario that failed once cannot be replayed."""
    return (f"{o.name}: stopped {o.stopped}, judged backchannels {o.backchannels}, transcript {o.transcript!r}, "
            f"reply {o.reply[:80]!r}, turn scores {o.turn_scores}, events {o.events[-40:]}, timings {o.timings}")


@pytest.mark.slow
def test_words_judged_a_backchannel_open_the_turn_the_user_goes_on_with(suite):
    """"对" over the story is a backchannel and the story plays on; 1.2 s later the user goes on ("我想换个话题…"):
    the turn is read with the judged audio in front (nothing the user said is lost — a misjudged "等一下，" used to
    vanish so). Whisper base reads our "对" alone as no words or "推", in front of the rest as "退了"."""
    o, _ = suite["test/held_backchannel"]
    assert o.backchannels and "playback.resumed" in o.events, told(o)  # judged a backchannel, the story resumed
    assert o.stopped, told(o)
    turn = o.transcript.split(" | ")[-1]
    assert "我想换个话题" in turn and not turn.startswith("我想"), (turn, o.backchannels)


@pytest.mark.slow
def test_nothing_plays_after_any_stop(suite):
    """For every interruption scenario played. (The soft English interruption over our echo is the benchmark's:
    it is missed in about one run in three, see bench/duplex.py and the closing note of issue 4.)"""
    for name, (o, _) in suite.items():
        if o.kind == "interrupt":
            assert o.frames_after_stop == 0, (name, o.stop_ms, o.transcript, o.reply, o.events)


@pytest.mark.slow
def test_backchannels_do_not_stop_the_reply(suite):
    played = [(name, o) for name, (o, _) in suite.items() if o.kind == "backchannel"]
    assert played
    for name, o in played:
        assert not o.stopped, (name, o)


@pytest.mark.slow
def test_a_short_stop_phrase_stops_the_reply(suite):
    """"停下" said over a story (our TTS, another voice, on a headset with the echo canceller on): the reply is
    cancelled, not resumed as a backchannel. It used to play on: the words were judged an interruption, then the
    end-of-turn score waited for the LLM thread that the story itself held until its generation ended; and on a
    headset the canceller muted the user for the first 5 s we spoke (test_a_headset_user_is_heard_…)."""
    o, s = suite["test/stopword_停下"]
    # it failed once in a full-suite run on a slow machine (2026-12-08; the story's words 4.3 s after the request)
    # and passed 8 of 8 alone right after
    assert o.stopped, told(o)
    assert o.frames_after_stop == 0, told(o)


@pytest.mark.slow
def test_our_own_echo_never_takes_the_turn(suite):
    """Through the simulated room our voice never cancels the reply or becomes a user turn. (A brief pause that
    resumes, when AEC3 leaks, is counted by the benchmark as a self-interruption; it is not a take-over.)"""
    o, _ = suite["test/echo_zh"]
    assert o.took_turn and o.transcript.count("|") == 0, o  # one user turn: nothing of ours was transcribed
    assert "response.done" in o.events and o.events.count("response.started") == 1, o


@pytest.mark.slow
def test_a_cancelled_response_stops_burning_cpu(stack):
    from tingshuo.engine.simulate import cancel_cpu

    cpu = run(cancel_cpu(stack))
    # a running reply keeps the LLM and TTS threads busy; after cancel at most the clause in flight finishes, so
    # the CPU goes quiet whatever else the machine runs (the figures, > 1.5 and < 1.0 CPU-s: bench/duplex.py)
    assert cpu["cancelled"] < 0.5 * cpu["running"], cpu


@pytest.mark.slow
def test_speech_right_after_a_reply_ends_is_a_new_turn_not_a_crash(stack, en_clips):
    """Within the echo tail after the last frame there is nothing to pause: the user simply takes the turn."""
    from tingshuo.engine import Session

    async def go():
        s = Session(stack, duplex=True)
        events = []

        async def watch():
            async for ev in s.events():
                events.append(ev)

        w = asyncio.create_task(watch())
        await s.greet("好。")
        while not any(e.type == "response.done" for e in events):
            await s.push_audio(np.zeros(320, np.float32))
            await asyncio.sleep(0.02)
        speech = load_audio(sorted(en_clips)[1], 16000)
        for i in range(0, len(speech), 320):  # starts at once, inside the 0.7 s echo tail
            await s.push_audio(speech[i : i + 320])
            await asyncio.sleep(0.02)
        await s.end_audio()
        await s.wait_idle()
        await s.close()
        await w
        return events

    events = run(go())
    types = [e.type for e in events]
    assert "transcript.final" in types and types.count("response.done") == 2, types
    assert not any(e.type == "error" for e in events)
