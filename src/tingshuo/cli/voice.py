"""Voice commands: say, styles, voices, personas, songs, sing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from tingshuo.assets import AssetError
from tingshuo.audio.io import write_wav
from tingshuo.cli.common import EXIT_INPUT, EXIT_LLM, EXIT_MODEL, app, fail, settings_from
from tingshuo.script import han_runs


@app.command()
def say(
    text: Annotated[str, typer.Argument(help="what to say (Chinese, English or mixed)")],
    out: Annotated[Path, typer.Option("--out", help="output WAV")],
    voice: Annotated[Optional[str], typer.Option("--voice", help="a voice from `tingshuo voices` (wukong, daiyu…) or a Kokoro voice/blend, e.g. 'jf_alpha:0.5,jm_kumo:0.5'")] = None,
    speed: Annotated[float, typer.Option("--speed", min=0.5, max=2.0)] = 1.0,
    style: Annotated[Optional[str], typer.Option("--style", help="speaking style (see `tingshuo styles`): happy, sad, angry, fearful, tender, calm, story, whisper…")] = None,
) -> None:
    """Text→speech without the LLM. Tags in the text switch style per clause: "[生气]你又迟到了！[开心]算了。"."""
    from tingshuo.dialogue.speech import styled_clauses
    from tingshuo.tts import SpeechSynthesizer, VoiceSettings, get_style, text_language

    settings = settings_from()
    try:
        get_style(style)
        tts = SpeechSynthesizer(settings.tts, settings.cache_dir)
        styled = styled_clauses(text, style)
        if not styled:
            fail("nothing speakable in the text", EXIT_INPUT)
        lang = text_language(text) or "zh"
        audio = np.concatenate([tts.synthesize(c, VoiceSettings(voice=voice, speed=speed, style=st), lang)
                                for c, st in styled])
    except (AssetError, FileNotFoundError) as e:
        fail(str(e), EXIT_MODEL)
    except ValueError as e:
        fail(str(e), EXIT_INPUT)
    write_wav(out, audio, tts.sample_rate)
    typer.echo(f"{len(audio) / tts.sample_rate:.2f} s of audio written to {out}")


@app.command()
def styles(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The speaking styles (for `say --style`, the LLM's [tags] and voice requests)."""
    from tingshuo.tts import STYLES

    rows = [{"name": st.name, "zh": st.label_zh, "description": st.description, "pitch": st.pitch,
             "range": st.range, "speed": st.speed, "gain_db": st.gain_db, "whisper": st.whisper,
             "aliases": list(st.aliases)} for st in STYLES.values()]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    for r in rows:
        typer.echo(f"{r['name']:8s} {r['zh']:4s}  pitch ×{r['pitch']:<4} range ×{r['range']:<4} speed ×{r['speed']:<4} "
                   f"{r['gain_db']:+.0f} dB  {r['description']}")


@app.command()
def voices(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    measure: Annotated[bool, typer.Option("--measure", help="speak two sentences in every voice and print how alike "
                                                             "they sound (speaker-embedding cosine; needs resemblyzer)")] = False,
) -> None:
    """The character voices (for personas, stories, `say --voice`, `sing --voice`)."""
    from tingshuo.dialogue.persona import PERSONAS
    from tingshuo.tts import VOICES

    zh_backend = settings_from().tts.zh_backend
    users = {k: [p.name for p in PERSONAS.values() if p.voice == k] for k in VOICES}
    rows = [{"key": v.key, "name": v.name, "label": v.label, "description": v.description,
             "chinese": "baker" if v.native and zh_backend == "baker" else f"kokoro {v.kokoro}", "english": v.en,
             "kokoro": v.kokoro, "pitch": v.pitch, "speed": v.speed, "gender": v.gender,
             "licence": v.licence(zh_backend), "personas": users[v.key]} for v in VOICES.values()]
    if measure:
        sims = _measure_voices(list(VOICES))
        for r in rows:
            r["similarity"] = sims[r["key"]]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    for r in rows:
        who = "、".join(r["personas"]) or "-"
        typer.echo(f"{r['key']:9s} {r['label']}  [{r['chinese']}; en: {r['english']}]  personas: {who}\n"
                   f"{'':9s} licence: {r['licence']}")
    if measure:
        keys = [r["key"] for r in rows]
        typer.echo("\ncosine similarity of speaker embeddings (same speaker on real speech ≥ ~0.8):")
        typer.echo(" " * 10 + " ".join(f"{k[:8]:>8s}" for k in keys))
        for r in rows:
            typer.echo(f"{r['key']:9s} " + " ".join(f"{r['similarity'][k]:8.2f}" for k in keys))


def _measure_voices(keys: list[str]) -> dict[str, dict[str, float]]:
    """Pairwise cosine: sentence A in voice i against sentence B in voice j (the diagonal is the same voice)."""
    from tingshuo.audio.speaker import SpeakerEncoder, SpeakerModelMissing
    from tingshuo.tts import SpeechSynthesizer, VoiceSettings

    settings = settings_from()
    try:
        enc = SpeakerEncoder()
    except SpeakerModelMissing as e:
        fail(str(e), EXIT_MODEL)
    tts = SpeechSynthesizer(settings.tts, settings.cache_dir)
    a, b = VOICE_SENTENCES
    emb = {}
    for k in keys:
        lang = "en" if k == "joe" else "zh"
        emb[k] = [enc.embed(tts.synthesize(x[lang], VoiceSettings(voice=k), lang), tts.sample_rate) for x in (a, b)]
    return {i: {j: round(enc.similarity(emb[i][0], emb[j][1]), 3) for j in keys} for i in keys}


VOICE_SENTENCES = (
    {"zh": "从前有一座山，山里有一座庙，庙里住着一个老和尚。", "en": "Once upon a time there was a mountain, and on it stood an old temple."},
    {"zh": "今天我们一起去花果山看看吧，那里的桃子可甜了！", "en": "Let's go and see the mountain of flowers today, the peaches there are sweet!"},
)


@app.command()
def personas(as_json: Annotated[bool, typer.Option("--json")] = False,
             file: Annotated[Optional[Path], typer.Option("--file", help="also load user personas from this TOML")] = None,
             ) -> None:
    """The personas (built in, plus dialogue.personas_file): who the assistant can be, and with which voice."""
    from tingshuo.dialogue.persona import PERSONAS, load_personas, register

    settings = settings_from()
    try:
        for f in (settings.dialogue.personas_file, file):
            if f is not None:
                register(load_personas(f))
    except (OSError, ValueError) as e:
        fail(str(e), EXIT_INPUT)
    rows = [{"key": p.key, "name": p.name, "description": p.description, "voice": p.voice, "language": p.language,
             "default_emotion": p.default_emotion, "catchphrases": list(p.catchphrases), "aliases": list(p.aliases),
             "speaking_style": p.speaking_style} for p in PERSONAS.values()]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    for r in rows:
        typer.echo(f"{r['key']:12s} {r['name']:6s} voice={r['voice'] or '-':9s} {r['language']}  {r['description']}")


@app.command()
def songs(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The songbook: what `sing` (and "唱首…" in a conversation) can sing in tune."""
    from tingshuo.tts.singing import Songbook

    settings = settings_from()
    try:
        book = Songbook.load(settings.dialogue.songs_file)
    except (OSError, ValueError) as e:
        fail(str(e), EXIT_INPUT)
    rows = [{"key": s.key, "title": s.title, "aliases": list(s.aliases), "phrases": len(s.phrases),
             "syllables": s.syllable_counts, "seconds": round(s.seconds, 1), "lyrics": s.lyrics, "origin": s.origin}
            for s in book]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    for r in rows:
        typer.echo(f"{r['title']:8s} ({r['key']}, {r['seconds']} s)  {r['lyrics']}\n    {r['origin']}")


@app.command()
def sing(
    title: Annotated[str, typer.Argument(help="a song from `tingshuo songs` (title, alias or key)")],
    out: Annotated[Path, typer.Option("--out", help="output WAV")],
    voice: Annotated[Optional[str], typer.Option("--voice", help="a voice from `tingshuo voices` or a Kokoro spec")] = None,
    lyrics: Annotated[Optional[str], typer.Option("--lyrics", help="new words: one Han character per sung syllable, "
                                                                   "phrases separated by punctuation or spaces")] = None,
    about: Annotated[Optional[str], typer.Option("--about", help="let the LLM write new words about this topic")] = None,
    tempo: Annotated[float, typer.Option("--tempo", min=0.5, max=2.0)] = 1.0,
    notes_json: Annotated[Optional[Path], typer.Option("--notes", help="also write each note's place and pitch as JSON")] = None,
) -> None:
    """Sing a song from the songbook, in tune (WORLD places each syllable on its note)."""

    from tingshuo.tts import SpeechSynthesizer
    from tingshuo.tts.singing import Singer, Songbook

    settings = settings_from()
    try:
        book = Songbook.load(settings.dialogue.songs_file)
    except (OSError, ValueError) as e:
        fail(str(e), EXIT_INPUT)
    song = book.find(title) or book.songs.get(title)
    if song is None:
        fail(f"{title!r} is not in the songbook; it has: {', '.join(s.title for s in book)}", EXIT_INPUT)
    assert song is not None
    if lyrics and about:
        fail("give --lyrics or --about, not both", EXIT_INPUT)
    try:
        if lyrics:
            lines = han_runs(lyrics)
            if [len(x) for x in lines] != song.syllable_counts:
                # one run of characters, or phrases split differently: re-cut by the melody's syllable counts
                chars = "".join(lines)
                if len(chars) != sum(song.syllable_counts):
                    fail(f"《{song.title}》 needs {sum(song.syllable_counts)} syllables "
                          f"({' + '.join(map(str, song.syllable_counts))} per phrase); the lyrics have {len(chars)}",
                          EXIT_INPUT)
                lines, i = [], 0
                for n in song.syllable_counts:
                    lines.append(chars[i:i + n])
                    i += n
            song = song.with_lyrics(lines)
        elif about:
            from tingshuo.dialogue.songs import write_lyrics
            from tingshuo.llm import LlmError, load_chat_model

            try:
                llm = load_chat_model(settings.llm, settings.cache_dir)
                song = song.with_lyrics(write_lyrics(llm, song, about, temperature=max(settings.llm.temperature, 0.7)))
            except LlmError as e:
                fail(f"the language model could not write the lyrics: {e}", EXIT_LLM)
        tts = SpeechSynthesizer(settings.tts, settings.cache_dir)
        singer = Singer(tts.backend("kokoro"), tts.sample_rate, native=tts.native())
        audio, notes = singer.sing(song, voice, tempo=tempo)
    except (AssetError, FileNotFoundError) as e:
        fail(str(e), EXIT_MODEL)
    except ValueError as e:
        fail(str(e), EXIT_INPUT)
    write_wav(out, audio, tts.sample_rate)
    if notes_json is not None:
        notes_json.write_text(json.dumps([{"onset_s": round(n.onset_s, 4), "duration_s": round(n.duration_s, 4),
                                           "hz": round(n.hz, 2), "syllable": n.syllable} for n in notes],
                                          ensure_ascii=False, indent=1), encoding="utf-8")
    typer.echo(f"《{song.title}》{'(new words) ' if song.adapted_from else ''}{song.lyrics}\n"
               f"{len(audio) / tts.sample_rate:.1f} s of audio written to {out}")
