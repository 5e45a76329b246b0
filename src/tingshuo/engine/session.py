"""One conversation: audio frames or text in, one ordered stream of typed events out.

The four modes fall out of two switches: input (``push_audio``/``push_utterance`` vs ``push_text``) and
``speak`` (TTS on or off). A response is one asyncio task with two stages joined by a queue — LLM tokens →
clause splitter → TTS — so the first clause is synthesized while the LLM is still writing the rest. Inference
runs in dedicated single-thread executors (ASR, LLM, TTS), so the event loop only moves frames and events and
the LLM and TTS overlap. ``cancel()`` cancels the task tree; the LLM thread sees a stop flag at its next token
and closes the generator, so a cancelled response stops burning CPU.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tingshuo.audio.io import INPUT_RATE, AudioError, resample, to_mono
from tingshuo.audio.vad import VadSegmenter, speech_fraction
from tingshuo.dialogue.memory import Conversation
from tingshuo.dialogue.persona import get_persona
from tingshuo.dialogue.speech import ClauseSplitter
from tingshuo.engine.events import (
    AudioChunk,
    ErrorEvent,
    Event,
    ReplyClause,
    ReplyTextDelta,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
)
from tingshuo.engine.stack import ModelStack
from tingshuo.llm.base import LlmError
from tingshuo.tts import VoiceSettings, text_language

MAX_FRAME_SECONDS = 10.0  # one push_audio call; streaming clients send 20–100 ms
PARTIAL_EVERY_S = 1.0
_END = object()
_LANG_NOTE = {
    "zh": "请用简体中文口语回应用户刚才的话，不要重复原话。",
    "en": "Reply in spoken English to what the user just said; do not repeat their words.",
}
_ids = itertools.count(1)


class Session:
    def __init__(self, stack: ModelStack, *, speak: bool = True, persona: str | None = None,
                 partials: bool = True) -> None:
        self.stack = stack
        self.settings = stack.settings
        if speak and stack.tts is None:
            raise ValueError("speak=True needs a model stack loaded with TTS")
        self.speak = speak
        self.persona = get_persona(persona or self.settings.dialogue.persona)
        prompt = self.settings.dialogue.system_prompt or self.persona.system_prompt
        self.conversation = Conversation(prompt)
        self.voice = VoiceSettings(voice=self.persona.voice)
        self.partials = partials
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._segmenter: VadSegmenter | None = None
        self._response: asyncio.Task[None] | None = None
        self._turns: set[asyncio.Task[None]] = set()
        self._turn_lock = asyncio.Lock()
        self._partial_task: asyncio.Task[None] | None = None
        self._partial_at = 0
        self._samples_in = 0
        self._asr_pool = ThreadPoolExecutor(1, thread_name_prefix="asr")
        self._llm_pool = ThreadPoolExecutor(1, thread_name_prefix="llm")
        self._tts_pool = ThreadPoolExecutor(1, thread_name_prefix="tts")
        if stack.llm is not None:
            # Fill the prefix cache on the LLM thread: a Session is usually built inside the event loop, which
            # must not block for the ~1 s this takes; the first response queues behind it on the same thread.
            self._llm_pool.submit(stack.warm, prompt)
        self._closed = False

    # ------------------------------------------------------------------ output
    async def events(self) -> AsyncIterator[Event]:
        """Every event in order, until ``close()``."""
        while True:
            ev = await self._queue.get()
            if ev is None:
                return
            yield ev

    def _emit(self, ev: Event) -> None:
        self._queue.put_nowait(ev)

    # ------------------------------------------------------------------ input
    async def push_text(self, text: str) -> None:
        """A typed user turn (text→text, or text→speech with ``speak``)."""
        text = text.strip()
        if not text:
            self._emit(ErrorEvent("empty_input", "the message is empty"))
            return
        await self._start_turn(text, None, time.perf_counter(), {})

    async def push_audio(self, audio: np.ndarray, sample_rate: int = INPUT_RATE) -> None:
        """Streaming input: any frame size and rate, mono or (n, channels). VAD cuts it into user turns."""
        try:
            x = to_mono(np.asarray(audio))
            if len(x) > MAX_FRAME_SECONDS * sample_rate:
                raise AudioError(f"an audio frame of {len(x) / sample_rate:.1f} s is too large "
                                 f"(send ≤ {MAX_FRAME_SECONDS:.0f} s per frame)")
            if not np.all(np.isfinite(x)):
                raise AudioError("the audio frame holds NaN/inf samples")
            x = resample(x, sample_rate, INPUT_RATE)
        except AudioError as e:
            self._emit(ErrorEvent("invalid_audio", str(e)))
            return
        if self._segmenter is None:
            self._segmenter = VadSegmenter(self.settings.vad)
        events = self._segmenter.feed(x)
        self._samples_in += len(x)
        self._handle_vad(events)
        seg = self._segmenter
        if self.partials and seg.in_speech and self._partial_task is None:
            if self._samples_in - self._partial_at >= PARTIAL_EVERY_S * INPUT_RATE:
                self._partial_at = self._samples_in
                self._partial_task = asyncio.create_task(self._partial(seg.current_audio()))

    async def end_audio(self) -> None:
        """The input stream ended: an utterance still open is closed and answered."""
        if self._segmenter is not None:
            self._handle_vad(self._segmenter.flush())

    async def push_utterance(self, audio: np.ndarray, sample_rate: int = INPUT_RATE) -> None:
        """A whole recorded turn (a file): answered as one turn however many pauses it holds."""
        t_end = time.perf_counter()
        try:
            x = resample(to_mono(np.asarray(audio)), sample_rate, INPUT_RATE)
            limit = self.settings.asr.max_seconds
            if len(x) > limit * INPUT_RATE:
                raise AudioError(f"the recording is {len(x) / INPUT_RATE / 60:.1f} min long; one spoken turn may be "
                                 f"at most {limit:.0f} s (asr.max_seconds)")
            if len(x) < INPUT_RATE // 10:
                raise AudioError("the recording is shorter than 0.1 s")
        except AudioError as e:
            self._emit(ErrorEvent("invalid_audio", str(e)))
            return
        frac = await asyncio.get_running_loop().run_in_executor(self._asr_pool, speech_fraction, x)
        if frac < 0.02:
            self._emit(ErrorEvent("no_speech", "no speech was detected in the audio (silence or noise only)"))
            return
        await self._transcribe_and_respond(x, t_end)

    # ------------------------------------------------------------------ control
    async def cancel(self) -> None:
        """Stop the current response (text and audio) at once."""
        task = self._response
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def wait_idle(self) -> None:
        """Wait until every pending turn and response has finished (used by one-shot CLI calls and tests)."""
        while True:
            pending = [t for t in (*self._turns, self._response, self._partial_task) if t is not None and not t.done()]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.cancel()
        for t in list(self._turns):
            t.cancel()
        await asyncio.gather(*self._turns, return_exceptions=True)
        self._queue.put_nowait(None)
        for pool in (self._asr_pool, self._llm_pool, self._tts_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ internals
    def _handle_vad(self, events: list) -> None:
        for ev in events:
            if ev.kind == "start":
                self._partial_at = self._samples_in
                self._emit(SpeechStarted(ev.sample / INPUT_RATE * 1000))
            else:
                self._emit(SpeechStopped(ev.sample / INPUT_RATE * 1000))
                # the end of speech in wall-clock terms: the trailing silence already elapsed before we knew
                lag = max(0, self._samples_in - ev.sample) / INPUT_RATE
                t_end = time.perf_counter() - lag
                task = asyncio.create_task(self._transcribe_and_respond(ev.audio, t_end))
                self._turns.add(task)
                task.add_done_callback(self._turns.discard)

    async def _partial(self, audio: np.ndarray) -> None:
        assert self.stack.asr is not None
        try:
            loop = asyncio.get_running_loop()
            t = await loop.run_in_executor(self._asr_pool, self.stack.asr.transcribe, audio, None)
            if t.text:
                self._emit(TranscriptPartial(t.text))
        finally:
            self._partial_task = None

    async def _transcribe_and_respond(self, audio: np.ndarray, t_end: float) -> None:
        if self.stack.asr is None:
            self._emit(ErrorEvent("no_asr", "this session was started without speech recognition"))
            return
        async with self._turn_lock:  # turns are answered in the order they were spoken
            loop = asyncio.get_running_loop()
            try:
                t = await loop.run_in_executor(self._asr_pool, self.stack.asr.transcribe, audio, None)
            except Exception as e:  # a crashed recognizer must not end the session
                self._emit(ErrorEvent("asr_failed", f"speech recognition failed: {e}"))
                return
            if not t.text.strip():
                self._emit(ErrorEvent("no_speech", "no words were recognized in the audio"))
                return
            self._emit(TranscriptFinal(t.text, t.language, t.audio_seconds))
            await self._start_turn(t.text, t.language, t_end, {"asr": t.decode_ms})

    async def _start_turn(self, text: str, language: str | None, t_end: float, timings: dict[str, float]) -> None:
        await self.cancel()  # a new user turn supersedes an unfinished reply
        if self.stack.llm is None:
            self._emit(ErrorEvent("no_llm", "this session was started without a language model"))
            return
        self.conversation.add_user(text)
        rid = f"resp_{next(_ids)}"
        self._emit(ResponseStarted(rid, text))
        self._response = asyncio.create_task(self._run_response(rid, language, t_end, timings))

    async def _run_response(self, rid: str, user_lang: str | None, t_end: float, timings: dict[str, float]) -> None:
        llm = self.stack.llm
        assert llm is not None
        cfg = self.settings
        loop = asyncio.get_running_loop()
        messages = self.conversation.messages(llm.count_tokens, cfg.dialogue.history_tokens)
        # Answer in the language of *this* turn: a trailing system note (not stored in the history, so the cached
        # prefix is untouched) keeps a small model from continuing in the previous turn's language.
        lang = user_lang or text_language(self.conversation.turns[-1]["content"]) or "zh"
        messages.append({"role": "system", "content": _LANG_NOTE.get(lang, _LANG_NOTE["en"])})
        deltas: asyncio.Queue[object] = asyncio.Queue()
        clauses: asyncio.Queue[str | None] = asyncio.Queue()
        stop = threading.Event()
        generated: list[str] = []
        spoken: list[str] = []
        reply_lang: list[str] = []
        status = "completed"
        t_llm = time.perf_counter()

        def produce() -> None:
            """LLM thread: push deltas to the loop until done or stopped."""
            gen = llm.stream(messages, max_tokens=cfg.llm.max_tokens, temperature=cfg.llm.temperature)
            try:
                for d in gen:
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(deltas.put_nowait, d)
            except Exception as e:  # LlmError or a backend bug: reported as an event
                loop.call_soon_threadsafe(deltas.put_nowait, e)
            finally:
                gen.close()
                loop.call_soon_threadsafe(deltas.put_nowait, _END)

        async def text_stage() -> None:
            splitter = ClauseSplitter()
            while True:
                d = await deltas.get()
                if d is _END:
                    break
                if isinstance(d, Exception):
                    raise d
                assert isinstance(d, str)
                if not generated:
                    timings["llm_first_token"] = (time.perf_counter() - t_llm) * 1000
                    timings["first_text"] = (time.perf_counter() - t_end) * 1000
                generated.append(d)
                self._emit(ReplyTextDelta(rid, d))
                for c in splitter.feed(d):
                    await clauses.put(c)
            for c in splitter.flush():
                await clauses.put(c)
            await clauses.put(None)

        async def audio_stage() -> None:
            while (clause := await clauses.get()) is not None:
                self._emit(ReplyClause(rid, clause))
                if not self.speak:
                    spoken.append(clause)
                    continue
                assert self.stack.tts is not None
                if not reply_lang:
                    reply_lang.append(text_language(clause) or user_lang or "zh")
                t_clause = time.perf_counter()
                audio = await loop.run_in_executor(
                    self._tts_pool, self.stack.tts.synthesize, clause, self.voice, reply_lang[0]
                )
                if "first_audio" not in timings:
                    timings["tts_first_audio"] = (time.perf_counter() - t_clause) * 1000
                    timings["first_audio"] = (time.perf_counter() - t_end) * 1000
                self._emit(AudioChunk(rid, audio, self.stack.tts.sample_rate, clause))
                spoken.append(clause)

        producer = loop.run_in_executor(self._llm_pool, produce)
        try:
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(text_stage())
                    tg.create_task(audio_stage())
            except* LlmError as eg:
                status = "failed"
                self._emit(ErrorEvent("llm_failed", str(eg.exceptions[0])))
            except* Exception as eg:
                status = "failed"
                self._emit(ErrorEvent("response_failed", f"{type(eg.exceptions[0]).__name__}: {eg.exceptions[0]}"))
        except asyncio.CancelledError:
            status = "cancelled"
        finally:
            stop.set()
            full = "".join(generated).strip()
            # What the user actually received: on a cut-off reply only the clauses already delivered.
            kept = full if status == "completed" else "".join(spoken)
            if kept:
                self.conversation.add_assistant(kept)
            timings["total"] = (time.perf_counter() - t_end) * 1000
            lang = reply_lang[0] if reply_lang else (text_language(full) if full else None)
            self._emit(ResponseDone(rid, full, status, lang, {k: round(v, 1) for k, v in timings.items()}))
        try:
            await asyncio.shield(producer)  # the LLM thread exits at its next token once stop is set
        except Exception:
            pass
        if status == "cancelled":
            raise asyncio.CancelledError
