"""Conversation commands: one turn (respond), pronunciation (coach), feelings (listen), transcribe, chat, talk."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from tingshuo.assets import AssetError
from tingshuo.audio.io import INPUT_RATE, write_wav
from tingshuo.cli.common import (
    EXIT_INPUT, EXIT_MODEL, LlmModel, LlmSpec, LlmUrl, app, fail, finish_turn, load_stack, read_audio, read_line,
    require_speech, run_turn, settings_from,
)


@app.command()
def respond(
    in_audio: Annotated[Optional[Path], typer.Argument(help="a recorded user turn (wav/flac/ogg/mp3/…)")] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="a typed user turn instead of audio")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="write the spoken reply here (WAV)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    llm_url: LlmUrl = None,
    llm_model: LlmModel = None,
    llm: LlmSpec = None,
) -> None:
    """One turn: speech→speech (IN_AUDIO --out), speech→text (IN_AUDIO), text→speech (--text --out), text→text."""
    from tingshuo.engine import Session

    if (in_audio is None) == (text is None):
        fail("give either IN_AUDIO or --text", EXIT_INPUT)
    settings = settings_from(llm_url, llm_model, llm=llm)
    audio = None
    if in_audio is not None:
        audio = read_audio(in_audio, settings)
        require_speech(audio)  # before the models load: a silent file is answered in a second, not twenty
    speak = out is not None
    stack = load_stack(settings, asr=audio is not None, llm=True, tts=speak)

    async def main() -> dict[str, Any]:
        session = Session(stack, speak=speak)
        return await run_turn(session, audio=audio, text=text)

    finish_turn(asyncio.run(main()), out, as_json)


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

    settings = settings_from()
    audio = read_audio(in_audio, settings)
    heard = None
    if asr:
        stack = load_stack(settings, asr=True, llm=False, tts=False)
        t = stack.asr.transcribe(audio, language="en") if stack.asr is not None else None
        heard = t.text if t is not None else ""
    try:
        report = PronunciationCoach().assess(audio, INPUT_RATE, expect, heard)
    except ValueError as e:
        fail(str(e), EXIT_INPUT)
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
def listen(
    in_audio: Annotated[Path, typer.Argument(help="one spoken turn (any format ffmpeg/libsndfile reads)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    baseline: Annotated[Optional[list[Path]], typer.Option("--baseline", help="earlier turns of the same speaker (their usual voice); repeatable")] = None,
    words: Annotated[bool, typer.Option("--words/--no-words", help="also read the feeling in the words (ASR + LLM)")] = True,
    llm_url: LlmUrl = None,
) -> None:
    """How a turn was said: the Paralinguistics reading (label, confidence, arousal, whisper, pace, raw features).

    Read by the session's own understanding step, as a conversation reads a first turn (the words after the
    persona's cached prompt and the language note; the voice against the speaker's baseline)."""
    from tingshuo.audio import prosody
    from tingshuo.engine import Session

    settings = settings_from(llm_url)
    audio = read_audio(in_audio, settings)
    refs = [read_audio(p, settings) for p in baseline or []]
    if not settings.emotion.enabled:
        fail("emotion reading is off in the configuration (emotion.enabled = false)", EXIT_INPUT)
    stack = load_stack(settings, asr=words, llm=words, tts=False)

    async def read():
        async with Session(stack, speak=False) as session:
            for ref in refs:
                f = prosody.extract(ref)
                session.baseline.update(f, prosody.cues(f, session.baseline).whisper)
            t = await session.transcribe(audio) if words else None
            text, lang = (t.text, t.language) if t is not None else (None, None)
            plan = await session.understander.feel(text or "", lang, audio)
            return text, plan.reading

    text, r = asyncio.run(read())
    if r is None:
        fail("the turn is too short to read how it was said", EXIT_INPUT)
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

    settings = settings_from()
    audio = read_audio(in_audio, settings)
    require_speech(audio)
    try:
        rec = load_recognizer(settings.asr, settings.cache_dir)
    except (AssetError, FileNotFoundError, ValueError) as e:
        fail(str(e), EXIT_MODEL)
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
    llm: LlmSpec = None,
) -> None:
    """Text chat REPL (text→text; text→speech with --speak). Memory lasts for the session. Ctrl-D to quit."""
    from tingshuo.engine import Session

    settings = settings_from(llm_url, llm_model, llm=llm)
    player = None
    if speak and out_dir is None:
        player = player()
        if player is None:
            out_dir = Path("tingshuo-replies")
            typer.echo(f"(no audio output device: spoken replies go to {out_dir}/)", err=True)
    stack = load_stack(settings, asr=False, llm=True, tts=speak)

    async def main() -> None:
        session = Session(stack, speak=speak)
        loop = asyncio.get_running_loop()
        n = 0
        async with session:
            events = session.events()
            typer.echo("听说 tingshuo — type a message (Ctrl-D to quit)")
            while True:
                line = await loop.run_in_executor(None, read_line)
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
    llm: LlmSpec = None,
) -> None:
    """Live full-duplex conversation on the microphone and speakers: interrupt it any time. Ctrl-C to stop."""
    try:
        import sounddevice as sd
    except Exception as e:  # PortAudio missing
        fail(f"audio devices are unavailable ({e}); install libportaudio2, or use `tingshuo chat`", 2)
    try:
        devices = sd.query_devices()
    except Exception as e:
        fail(f"cannot list audio devices: {e}", 2)
    if list_devices:
        typer.echo(str(devices))
        return
    dev_in = int(input_device) if input_device and input_device.isdigit() else input_device
    dev_out = int(output_device) if output_device and output_device.isdigit() else output_device
    try:
        sd.query_devices(dev_in, kind="input")
        sd.query_devices(dev_out, kind="output")
    except Exception as e:
        fail(f"no usable microphone and speaker ({e}). `tingshuo talk --list-devices` shows what exists; "
              "without audio devices use `tingshuo chat --speak` or the server.", 2)
    from tingshuo.engine import Session

    settings = settings_from(llm_url, llm_model, llm=llm, **{"duplex.aec": aec})
    stack = load_stack(settings, asr=True, llm=True, tts=True)
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


def _history(path: Path) -> list[dict]:
    """Earlier turns: a JSON list of {"role", "content"}, or lines "U: …" / "A: …" (user / assistant)."""
    try:
        raw = path.read_text("utf-8")
    except OSError as e:
        fail(f"cannot read the history file: {e}", EXIT_INPUT)
    if raw.lstrip().startswith("["):
        try:
            msgs = json.loads(raw)
            return [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs]
        except (ValueError, KeyError, TypeError) as e:
            fail(f"the history file is not a JSON list of messages: {e}", EXIT_INPUT)
    out = []
    for line in raw.splitlines():
        who, _, said = line.partition(":")
        role = {"u": "user", "user": "user", "a": "assistant", "assistant": "assistant"}.get(who.strip().lower())
        if role and said.strip():
            out.append({"role": role, "content": said.strip()})
    return out


@app.command()
def understand(
    text: Annotated[Optional[str], typer.Argument(help="one user turn")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="one user turn per line; one JSON line out per line")] = None,
    history: Annotated[Optional[Path], typer.Option("--history", help="earlier turns (JSON messages or 'U: …'/'A: …' lines)")] = None,
    role: Annotated[Optional[str], typer.Option("--role", help="the character the assistant is playing now")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (one line per turn with --file)")] = False,
    llm_url: LlmUrl = None,
    llm_model: LlmModel = None,
    llm: LlmSpec = None,
) -> None:
    """What a turn asks the assistant to do — the turn plan the model reads — without generating a reply.

    Fields: intent (chat, sing, sing_adapt, sing_new, story, role, role_leave, stop, search, coach), addressed,
    voice (speed, volume, whisper, style, dialect, lasting; or null), and song, topic, character, query where
    they apply; p is the model's probability of the intent; held names a reading held back because the words
    cannot be asking for it (the session acts on the plan printed)."""
    from tingshuo.intent import settle

    if (text is None) == (file is None):
        fail("give one turn as an argument, or --file with one turn per line", EXIT_INPUT)
    if file is not None:
        try:
            turns = file.read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            fail(f"cannot read {file}: {e}", EXIT_INPUT)
    else:
        turns = [text or ""]
    # one context for the reader alone: no guard, no second copy of the model
    settings = settings_from(llm_url, llm_model, llm=llm, **{"safety.enabled": False, "plan.separate_context": False})
    if not settings.plan.enabled:
        fail("the turn plan is off in the configuration (plan.enabled = false)", EXIT_INPUT)
    past = _history(history) if history is not None else []
    stack = load_stack(settings, asr=False, tts=False)
    reader = stack.planner
    assert reader is not None
    reader.warmup()
    for turn in turns:
        if file is not None and not turn.strip():
            continue
        plan = settle(turn, reader.read(turn, past, role))  # what the session would act on
        d = {"text": turn, **plan.to_dict()}
        if as_json:
            typer.echo(json.dumps(d, ensure_ascii=False))
        else:
            extra = "  ".join(f"{k}={d[k]}" for k in ("song", "topic", "character", "query") if k in d)
            voice = f"  voice={d['voice']}" if d["voice"] else ""
            typer.echo(f"{plan.intent:<11} p={plan.p:.2f}{voice}  {extra}  «{turn[:60]}»")
