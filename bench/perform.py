"""Personas, character voices, stories and singing: how distinct, how in tune, how fast — on the real default stack.

    .venv/bin/python bench/perform.py [--out bench/results]     (also run by bench/run.py)

Reports: the pairwise speaker-embedding similarity of the built-in voices (two sentences each; real speech:
same speaker ≥ ~0.8); for every song, render time, real-time factor, share of voiced frames within 50 cents of
the score and onset error (swift-f0, the rule of tests/test_singing.py), and whether the words can be understood:
the CER of our ASR on the sung audio beside its CER on the same words spoken (also for three songs whose new words
the LLM writes; ``--singing`` runs only this table, ~6 min); in a conversation, request → first sung
audio, a story's first audio and how many voices it used, and the first audio of the reply that enters a role.
Then both story asks judged by tests/test_story.py's rule and every built-in role for five lines judged by
tests/test_roleplay.py's (the tests play a sample of each), and a bounds table: off-key notes over the whole
songbook, each story and each role kept. Writes ``perform.json`` and ``perform.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bounds import Bounds  # noqa: E402
from test_roleplay import ROLES, play_role, role_failures  # noqa: E402
from test_singing import off_key  # noqa: E402
from test_story import STORIES, play_story, story_failures  # noqa: E402

from textmetrics import SAME_SOUND, cer  # noqa: E402

from tingshuo.audio.io import INPUT_RATE, resample  # noqa: E402
from tingshuo.audio.speaker import SpeakerEncoder  # noqa: E402
from tingshuo.dialogue.songs import write_lyrics  # noqa: E402
from tingshuo.engine import ModelStack, Session  # noqa: E402
from tingshuo.tts import VOICES, VoiceSettings  # noqa: E402
from tingshuo.tts.singing import measure_sung  # noqa: E402

SENTENCES = ("从前有一座山，山里有一座庙，庙里住着一个老和尚。", "今天我们一起去花果山看看吧，那里的桃子可甜了！")
EN = ("Once upon a time there was a mountain, and on it stood an old temple.",
      "Let's go and see the mountain of flowers today, the peaches there are sweet!")


def voices(stack: ModelStack) -> dict:
    enc = SpeakerEncoder()
    tts = stack.tts
    emb = {}
    for k, v in VOICES.items():
        if k == "joe":
            emb["joe (en)"] = [enc.embed(tts.synthesize(s, VoiceSettings(voice=k), "en"), tts.sample_rate) for s in EN]
        elif v.kokoro not in [VOICES[j].kokoro for j in list(VOICES)[:list(VOICES).index(k)]]:
            emb[k] = [enc.embed(tts.synthesize(s, VoiceSettings(voice=k), "zh"), tts.sample_rate) for s in SENTENCES]
    keys = list(emb)
    m = [[round(enc.similarity(emb[a][0], emb[b][1]), 3) for b in keys] for a in keys]
    off = [m[i][j] for i in range(len(keys)) for j in range(len(keys)) if i != j]
    return {"keys": keys, "matrix": m, "self_min": min(m[i][i] for i in range(len(keys))), "cross_max": max(off)}


def _heard(stack: ModelStack, asr, song, audio: np.ndarray, rate: int, voice: str) -> dict:
    """What our ASR reads back from the sung audio, against the words sung (CER over Han characters, homophones
    no voice can tell apart taken as one: tests/textmetrics.py) — and, as the yardstick, from the same words
    spoken by the same voice (so a high sung CER is the singing's, not the recogniser's or the words')."""
    if asr is None:
        return {}
    ref = "".join(p.text for p in song.phrases)

    def read(a: np.ndarray, r: int) -> tuple[str, float]:
        hyp = asr.transcribe(resample(a, r, INPUT_RATE), "zh").text
        return hyp, round(cer(ref.translate(SAME_SOUND), hyp.translate(SAME_SOUND)), 3)

    hyp, sung = read(audio, rate)
    spoken_text = "，".join(p.text for p in song.phrases) + "。"
    _, spoken = read(stack.tts.synthesize(spoken_text, VoiceSettings(voice=voice), "zh"), stack.tts.sample_rate)
    return {"heard": hyp, "cer": sung, "spoken_cer": spoken}


def singing(stack: ModelStack, voice: str = "xiaonuan", asr=None, composed: tuple[tuple[str, str], ...] = ()) -> dict:
    """Every song in the book (and ``composed``: (melody key, topic) — new words the LLM writes to a melody)."""
    singer = stack.singer
    rows = {}
    songs = list(stack.songbook)
    for key, topic in composed:
        tune = stack.songbook.songs[key]
        songs.append(replace(tune.with_lyrics(write_lyrics(stack.llm, tune, topic, 0.7)), title=f"{tune.title}·{topic}"))
    for song in songs:
        t = time.perf_counter()
        gen = singer.phrases(song, voice)
        first = next(gen)
        t_first = time.perf_counter() - t
        parts, notes, at = [first.audio], list(first.notes), len(first.audio) / first.sample_rate
        for p in gen:
            notes += [type(n)(n.onset_s + at, n.duration_s, n.hz, n.syllable, n.tied) for n in p.notes]
            parts.append(p.audio)
            at += len(p.audio) / p.sample_rate
        el = time.perf_counter() - t
        audio = np.concatenate(parts)
        m = measure_sung(audio, first.sample_rate, notes)
        shares = [s for _, s, _ in m]
        errs = [abs(e) * 1000 for _, _, e in m if e is not None]
        rows[song.title] = {"off_key": len(off_key(song, audio, first.sample_rate, notes)), "seconds": round(len(audio) / first.sample_rate, 2), "render_s": round(el, 2),
                            "rtf": round(el / (len(audio) / first.sample_rate), 3), "first_phrase_s": round(t_first, 2),
                            "notes": len(notes), "notes_in_tune": sum(s >= 0.9 for s in shares),
                            "frames_within_50c": round(float(np.mean(shares)), 4),
                            "onset_err_ms_p50": round(float(np.median(errs)), 1),
                            "onset_err_ms_max": round(float(np.max(errs)), 1),
                            "onsets_found": len(errs), **_heard(stack, asr, song, audio, first.sample_rate, voice)}
    return rows


async def _turn(session: Session, text: str) -> tuple[list, float]:
    """One typed turn and its events; the time is from the turn to the reply's first audio.

    The turn is typed once every model thread is idle, as a user speaks after listening to the reply: the engine
    evaluates the next turn's context for the plan and the guard while the reply plays (``prepare_next``, 1-3 s
    on 2 cores). Typed back to back, the turn queued behind that work and the figures rose by 1-2.5 s a turn
    (2026-12-07: role turn 6.6 → 4.6 s, story 11.1 → 9.3 s on the same tree)."""
    stack = session.ctx.stack
    await asyncio.to_thread(lambda: all(w.wait_idle(120) for w in stack.workers.values()))
    t0 = time.perf_counter()
    await session.push_text(text)
    first = None
    events = []
    async for ev in session.events():
        events.append(ev)
        if ev.type == "reply.audio" and first is None:
            first = time.perf_counter() - t0
        if ev.type == "response.done":
            break
    return events, first or float("nan")


def conversation(stack: ModelStack) -> dict:
    async def go():
        out = {}
        async with Session(stack, speak=True) as s:
            ev, first = await _turn(s, "给我唱一首小星星吧")
            clauses = [e for e in ev if e.type == "reply.clause"]
            sung_at = next(i for i, e in enumerate(clauses) if e.sung)
            out["song_first_audio_s"] = round(first, 2)
            out["song_intro_clauses"] = sung_at
            ev, first = await _turn(s, "把两只老虎改成关于加班的歌")
            out["adapted_first_audio_s"] = round(first, 2)
            out["adapted_lyrics"] = [e.text for e in ev if e.type == "reply.clause" and e.sung]
            ev, first = await _turn(s, "给我讲一个小猫和大象的故事")
            speakers = {e.speaker for e in ev if e.type == "reply.clause" and e.speaker}
            out["story_first_audio_s"] = round(first, 2)
            out["story_speakers"] = sorted(speakers)
            out["story_voices"] = sorted({e.voice or "" for e in ev if e.type == "reply.clause" and e.speaker})
            ev, first = await _turn(s, "你当孙悟空跟我说话")
            out["role_switch_first_audio_s"] = round(first, 2)
            ev, first = await _turn(s, "过年了，亲戚老问我工资多少")
            out["in_role_first_audio_s"] = round(first, 2)
            out["in_role_reply"] = next(e.text for e in ev if e.type == "response.done")
        return out

    return asyncio.run(go())


def references(stack: ModelStack, enc: SpeakerEncoder) -> dict:
    """One embedding per built-in Chinese voice reading one sentence (tests/conftest.py's voice_references)."""
    text = "从前有一座山，山里有一座庙，庙里住着一个老和尚，每天给小和尚讲故事。"
    return {k: enc.embed(stack.tts.synthesize(text, VoiceSettings(voice=k), "zh"), stack.tts.sample_rate)
            for k in VOICES if k != "joe"}


def stories(stack: ModelStack, enc: SpeakerEncoder, refs: dict) -> dict:
    """Every ask of tests/test_story.py, judged by its rule (the test plays the first)."""
    out = {}
    for persona, ask in STORIES:
        t = time.perf_counter()
        events = play_story(stack, persona, ask)
        wrong = story_failures(events, persona, enc, refs, stack.tts.sample_rate)
        out[persona or "companion"] = {"ask": ask, "failures": [str(w)[:300] for w in wrong],
                                       "seconds": round(time.perf_counter() - t, 1),
                                       "speakers": sorted({e.speaker for e in events
                                                           if e.type == "reply.clause" and e.speaker})}
    return out


def roles(stack: ModelStack, enc: SpeakerEncoder, refs: dict) -> dict:
    """Every built-in role, five lines each, judged by tests/test_roleplay.py's rule (the test plays a sample)."""
    out = {}
    for role in ROLES:
        t = time.perf_counter()
        played = play_role(stack, role)
        wrong = role_failures(role, played, enc, refs, stack.tts.sample_rate)
        out[role] = {"failures": [str(w)[:300] for w in wrong], "seconds": round(time.perf_counter() - t, 1),
                     "replies": [r for _, r, _ in played["log"]]}
    return out


def check_bounds(res: dict) -> Bounds:
    b = Bounds()
    off = sum(r["off_key"] for r in res["singing"].values())
    b.check("notes off the score, every song (xiaonuan)", off, "<=", 0, "notes",
            "test_singing::test_songs_are_sung_in_tune_and_on_time (all songs)")
    off = sum(r["off_key"] for r in res["singing_male"].values())
    b.check("notes off the score, every song (tangseng: jm_kumo)", off, "<=", 0, "notes",
            "test_singing::test_songs_are_sung_in_tune_and_on_time[jm_kumo] (all songs)")
    for role, r in res["roles"].items():
        b.check(f"role {role}: ways it was not kept (5 lines)", len(r["failures"]), "<=", 0, "",
                "test_roleplay::test_a_role_keeps_its_voice_and_manner_…")
    for who, r in res["stories"].items():
        b.check(f"story ({who}): ways it broke the rule", len(r["failures"]), "<=", 0, "",
                "test_story::test_a_story_switches_voices_at_its_attributed_lines")
    return b


# new words the LLM writes to a melody from the book, sung and read back like the book's own songs
COMPOSED = (("liangzhi-laohu", "加班"), ("xiao-xingxing", "我家的小猫"), ("shengri-kuaile", "同事升职"))


def print_singing(sg: dict) -> None:
    print(f"{'song':12s} {'audio s':>7s} {'render s':>8s} {'RTF':>5s} {'1st phrase s':>12s} {'notes in tune':>13s} "
          f"{'frames ≤50c':>11s} {'onset err p50/max ms':>20s} {'sung CER':>8s} {'spoken CER':>10s}")
    for title, r in sg.items():
        print(f"{title:12s} {r['seconds']:7.1f} {r['render_s']:8.1f} {r['rtf']:5.2f} {r['first_phrase_s']:12.2f} "
              f"{r['notes_in_tune']:>6d}/{r['notes']:<6d} {r['frames_within_50c']:11.1%} "
              f"{r['onset_err_ms_p50']:>9.0f}/{r['onset_err_ms_max']:<9.0f} {r.get('cer', float('nan')):8.3f} {r.get('spoken_cer', float('nan')):10.3f}")


def run(stack: ModelStack, out_dir: Path, asr=None) -> dict:
    enc = SpeakerEncoder()
    refs = references(stack, enc)
    res = {"voices": voices(stack), "singing": singing(stack, asr=asr, composed=COMPOSED),
           "singing_male": singing(stack, "tangseng", asr=asr),
           "conversation": conversation(stack),
           "stories": stories(stack, enc, refs), "roles": roles(stack, enc, refs)}
    bounds = check_bounds(res)
    res["bounds"] = bounds.as_json()
    (out_dir / "perform.json").write_text(json.dumps(res, indent=2, ensure_ascii=False))
    v, sg, c = res["voices"], res["singing"], res["conversation"]
    print(f"voices: {len(v['keys'])} distinct timbres, same voice ≥ {v['self_min']:.2f}, different voices ≤ {v['cross_max']:.2f}")
    print_singing(sg)
    print(f"in a conversation: song request → first audio {c['song_first_audio_s']} s (the spoken introduction), "
          f"new words → first audio {c['adapted_first_audio_s']} s, story → first audio {c['story_first_audio_s']} s "
          f"({len(c['story_speakers'])} speakers, {len(c['story_voices'])} voices), role switch → first audio "
          f"{c['role_switch_first_audio_s']} s, then {c['in_role_first_audio_s']} s in the role")
    for who, r in res["stories"].items():
        print(f"story {who:11s} {r['seconds']:6.1f} s  {len(r['speakers'])} speakers  "
              f"{'kept the rule' if not r['failures'] else r['failures']}")
    for role, r in res["roles"].items():
        print(f"role {role:12s} {r['seconds']:6.1f} s  {'kept' if not r['failures'] else r['failures']}")
    print(bounds.table("bounds (what the tests check on a sample)"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5))
    im = a1.imshow(np.array(v["matrix"]), vmin=0.3, vmax=1.0, cmap="viridis")
    a1.set_xticks(range(len(v["keys"])), v["keys"], rotation=45)
    a1.set_yticks(range(len(v["keys"])), v["keys"])
    a1.set_title("voice similarity (speaker-embedding cosine)")
    fig.colorbar(im, ax=a1)
    titles = list(sg)
    a2.bar(range(len(titles)), [sg[t]["frames_within_50c"] * 100 for t in titles])
    a2.set_xticks(range(len(titles)), titles, rotation=30)
    a2.set_ylim(80, 100.5)
    a2.set_ylabel("% voiced frames within 50 cents")
    a2.set_title("singing in tune (swift-f0)")
    fig.tight_layout()
    fig.savefig(out_dir / "perform.png", dpi=110)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--singing", action="store_true", help="only the songs (in tune, sung-word CER), ~4 min")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from tingshuo.asr import load_recognizer
    from tingshuo.config import load_settings

    # greedy decoding, as in the tests whose rules the bounds apply
    settings = load_settings({"llm.temperature": 0.0, "llm.seed": 0})
    stack = ModelStack.load(settings, asr=False)
    asr = load_recognizer(settings.asr, settings.cache_dir)  # reads the sung words back
    if args.singing:
        sg = singing(stack, asr=asr, composed=COMPOSED)
        (args.out / "perform-singing.json").write_text(json.dumps(sg, indent=2, ensure_ascii=False))
        print_singing(sg)
    else:
        run(stack, args.out, asr)
