"""One response's task tree: the LLM source on its thread, the text stage and the voice stage joined by a queue,
playout; then what the user received goes into the conversation and ``response.done`` says how it ended.

Cancellation (barge-in, a new turn, ``close()``) cancels the task group; the source's :class:`Stop` ends the LLM
thread at its next token (a stalled remote read is woken for it), and the conversation keeps only what was heard
(duplex) or delivered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tingshuo.dialogue.songs import SongRequest
from tingshuo.engine.context import Context
from tingshuo.engine.events import ErrorEvent, ResponseDone
from tingshuo.engine.playout import Playout
from tingshuo.engine.response.model import Clause, ReplyWords, Response, Stop
from tingshuo.engine.response.source import LlmSource, ReplyDeltas
from tingshuo.engine.response.text import TextStage
from tingshuo.engine.response.voice import VoiceStage
from tingshuo.engine.response.voices import ReplyVoices
from tingshuo.engine.state import DialogueState, Prompts
from tingshuo.llm.base import LlmError
from tingshuo.script import text_language

log = logging.getLogger("tingshuo.engine")


@dataclass
class Studio:
    """What a response needs of its session: the models and outbox, the dialogue state it records into, the
    prompts (for usage counts), the session's playout and pre-rendered acknowledgements."""

    ctx: Context
    state: DialogueState
    prompts: Prompts
    playout: Playout | None
    acks: dict[str, np.ndarray]


def song_intro(req: SongRequest, lang: str) -> str:
    assert req.song is not None
    if lang == "en":
        return (f"Sure! Here is {req.song.title} with new words about {req.topic}." if req.topic
                else f"Sure, here is {req.song.title}.")
    if req.topic:
        return f"好呀，我用《{req.song.title}》的调子，给你唱一首关于{req.topic}的歌。"
    return f"好呀，我来给你唱《{req.song.title}》。"


async def run_response(r: Response, studio: Studio, finished: Callable[[Response], None]) -> None:
    """Answer ``r.messages`` (or say ``r.fixed``; sing ``r.song`` after its introduction). ``finished(r)`` runs
    once ``response.done`` is out, before the LLM thread is waited for (the session has no current reply then)."""
    ctx, state = studio.ctx, studio.state
    if r.song is not None:
        r.fixed = song_intro(r.song, r.lang)
    assert ctx.stack.llm is not None or r.fixed is not None
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    deltas = ReplyDeltas(loop)
    clauses: asyncio.Queue[Clause | None] = asyncio.Queue()
    stop = Stop()
    tts_idle = threading.Event()  # the LLM waits while a clause is synthesized (they slow each other on 2 cores)
    tts_idle.set()
    words = ReplyWords()
    voices = ReplyVoices(r, state)
    playout = studio.playout if r.speak else None
    source = LlmSource(r, ctx.stack, ctx.settings, ctx.lanes.llm, deltas, stop, tts_idle)
    text = TextStage(r, ctx, state, voices, deltas, clauses, stop, words, t0)
    voice = VoiceStage(r, ctx, voices, clauses, words, playout, studio.acks, tts_idle)
    producer = loop.run_in_executor(ctx.lanes.llm if r.fixed is None else None, source.produce)
    status = "completed"
    heard: str | None = None
    played_ms: float | None = None
    failure: str | None = None
    try:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(voice.start(lambda: ctx.settings.duplex.acknowledge and state.persona.acknowledges))
                tg.create_task(text.run())
                tg.create_task(voice.run())
        except* LlmError as eg:
            status, failure = "failed", "llm"
            ctx.stack.backend("llm").failed(eg.exceptions[0])
            r.emit(ErrorEvent("llm_failed", str(eg.exceptions[0])))
        except* Exception as eg:
            status, failure = "failed", "internal"
            log.error("response failed", exc_info=eg.exceptions[0])
            r.emit(ErrorEvent("response_failed", f"{type(eg.exceptions[0]).__name__}: {eg.exceptions[0]}"))
        else:
            if r.fixed is None:
                ctx.stack.backend("llm").succeeded()
        if failure is not None:
            await voice.say_notice(failure)
    except asyncio.CancelledError:
        status = "cancelled"
    finally:
        stop.set("cancelled" if status == "cancelled" else "done")
        tts_idle.set()
        full = words.full()
        timings = r.timings
        if playout is not None and playout.rid == r.rid:
            if playout.first_frame_at is not None:
                timings["first_audio"] = (playout.first_frame_at - r.t_end) * 1000
            if playout.first_reply_frame_at is not None:
                timings["first_reply_audio"] = (playout.first_reply_frame_at - r.t_end) * 1000
            heard_s = playout.pause()
            played_ms = round(heard_s * 1000, 1)
            if status != "completed":
                heard = playout.heard_text(heard_s)
            playout.stop()
        if r.gate.is_set():
            # What the user actually received: on a cut-off reply only what was heard (or delivered).
            kept = full if status == "completed" else (heard if heard is not None else "".join(words.spoken))
            if kept and r.record:
                state.conversation.add_assistant(kept, r.item_id)
            timings["total"] = (time.perf_counter() - r.t_end) * 1000
            lang = words.lang or (text_language(full) if full else None)
            ctx.emit(ResponseDone(r.rid, full, status, lang, {k: round(v, 1) for k, v in timings.items()},
                                  heard if status != "completed" else None, played_ms, r.item_id,
                                  studio.prompts.usage(r.messages, full)))
        finished(r)
    try:
        await asyncio.shield(producer)  # the LLM thread exits once stop is set (a remote read is woken for it)
    except Exception:
        pass
    if status == "cancelled":
        raise asyncio.CancelledError
