"""The voice stage: clauses → audio (TTS, or the singer for a sung phrase) → playout or whole chunks.

Clause 1 is synthesized while the LLM still writes clause 2. Nothing is heard before the gate opens (a speculative
reply is ready but silent until the turn is really ours). A voice that fails says so, with a notice rendered while
it still worked, and the reply goes on as text; a short "嗯，" covers a reply whose first clause is slow to come.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable

import numpy as np

from tingshuo.engine.context import Context, run_on
from tingshuo.engine.events import AudioChunk, ErrorEvent, ReplyClause, ReplyTextDelta, SpeechDegraded
from tingshuo.engine.faults import notice
from tingshuo.engine.playout import Playout
from tingshuo.engine.response.model import Clause, ReplyWords, Response
from tingshuo.engine.response.voices import ReplyVoices
from tingshuo.script import text_language
from tingshuo.tts import get_style

log = logging.getLogger("tingshuo.engine")


def _drop(job: "asyncio.Future[np.ndarray]") -> None:
    """A synthesis whose clause will not be said: cancelled, its result or failure not wanted (the TTS thread
    finishes the clause it is on; asyncio cannot stop a thread)."""
    job.add_done_callback(lambda f: f.cancelled() or f.exception())
    job.cancel()


ACK = {"zh": "嗯，", "en": "Mm,"}
_LEADING_ACK = re.compile(r"^(?:嗯+|恩+|mm+|hmm+)[，,。.！!\s]*", re.IGNORECASE)


class VoiceStage:
    def __init__(self, r: Response, ctx: Context, voices: ReplyVoices, clauses: "asyncio.Queue[Clause | None]",
                 words: ReplyWords, playout: Playout | None, acks: dict[str, np.ndarray],
                 tts_idle: threading.Event) -> None:
        self.r, self.ctx, self.voices, self.clauses, self.words = r, ctx, voices, clauses, words
        self.playout, self.acks, self.tts_idle = playout, acks, tts_idle
        self.acked = False
        self.degraded: list[str] = []  # why speech failed in this response (the rest of it is text)
        self.health = ctx.stack.backend("tts")
        if r.speak and self.health.state == "closed":
            ctx.stack.notices.prepare(voices.base(), r.lang)  # no-op once rendered in this voice

    @property
    def lang(self) -> str:
        return self.words.lang or self.r.lang

    def _out(self, audio: np.ndarray, text: str) -> None:
        assert self.ctx.stack.tts is not None
        self.ctx.emit(AudioChunk(self.r.rid, audio, self.ctx.stack.tts.sample_rate, text))

    async def start(self, acknowledges: Callable[[], bool]) -> None:
        """Once the turn is ours: playout is this response's; maybe "嗯，" while the first clause is made."""
        await self.r.gate.wait()
        if self.playout is not None:
            self.playout.stop()
            self.playout.start(self.r.rid)
            if acknowledges() and self.r.fixed is None:
                # give the reply a moment: acknowledge only if its first clause is not about to be ready
                await asyncio.sleep(0.05)
                self.acknowledge()

    def acknowledge(self) -> None:
        """Turn taken but nothing to say yet: a short "嗯，" now, instead of silence."""
        if self.playout is None or self.words.spoken or self.acked:
            return
        ack = self.acks.get(self.lang)
        if ack is not None and len(self.r.user_text) >= 6:
            self.acked = True
            self.playout.enqueue(ACK[self.lang], ack, is_ack=True)

    async def degrade(self, clause: str, reason: str) -> None:
        """The voice failed: say so (with the notice rendered while it worked) and go on in text."""
        r = self.r
        await r.gate.wait()
        self.degraded.append(reason)
        r.emit(ErrorEvent("tts_failed", f"speech synthesis failed ({reason}); the reply goes on as text"))
        r.emit(SpeechDegraded(r.rid, clause, reason))
        audio = self.ctx.stack.notices.get(self.voices.base(), "tts", self.lang)
        if audio is not None and self.ctx.stack.tts is not None:
            if self.playout is not None:
                self.playout.enqueue(notice("tts", self.lang), audio)
            else:
                self._out(audio, notice("tts", self.lang))

    async def run(self) -> None:
        r, tts, timings = self.r, self.ctx.stack.tts, self.r.timings
        first = True
        while (item := await self.clauses.get()) is not None:
            clause, style = item.text, item.style
            speaking = r.speak and not self.degraded and self.health.available()
            if item.check is not None and not speaking:
                said = await item.check  # nothing is said or shown before it passes
                if said is None:
                    continue
                clause = said
            if first and self.acked:
                clause = _LEADING_ACK.sub("", clause) or clause
            if not speaking:
                first = False
                self._announce(item, clause)
                if r.speak and not self.degraded:  # failing for every clause lately: text until its cooldown ends
                    await self.degrade(clause, self.health.last_error)
                self.words.spoken.append(clause)
                continue
            assert tts is not None
            if self.words.lang is None:
                self.words.lang = text_language(clause) or r.lang
            t_clause = time.perf_counter()
            self.tts_idle.clear()
            job = asyncio.ensure_future(self._render(item, clause, style))
            if item.check is not None:
                # synthesised while the output check runs (on its own thread); the audio waits for the verdict
                try:
                    said = await item.check
                except BaseException:  # the check failed (the response fails as before) or a barge-in
                    _drop(job)
                    self.tts_idle.set()
                    raise
                if said != item.text:
                    _drop(job)
                    if said is None:
                        self.tts_idle.set()
                        continue
                    clause = said  # the notice said in place of a blocked clause
                    job = asyncio.ensure_future(self._render(item, clause, style))
            try:
                audio = await job
            except Exception as e:  # CancelledError is not an Exception: a barge-in still cancels
                log.warning("speech synthesis failed: %s", e)
                self.health.failed(e)
                first = False
                self._announce(item, clause)
                await self.degrade(clause, f"{type(e).__name__}: {e}")
                self.words.spoken.append(clause)
                continue
            finally:
                self.tts_idle.set()
            first = False
            self._announce(item, clause)
            self.health.succeeded()
            if "tts_first_audio" not in timings:
                timings["tts_first_audio"] = (time.perf_counter() - t_clause) * 1000
            await r.gate.wait()  # speculative: ready, but not a word until the turn is really ours
            self.words.spoken.append(clause)
            if self.playout is not None:
                self.playout.enqueue(clause, audio)
            else:
                if "first_audio" not in timings:
                    timings["first_audio"] = (time.perf_counter() - r.t_end) * 1000
                self._out(audio, clause)
        if self.playout is not None:
            self.playout.finish()
            await self.playout.drained()

    def _announce(self, item: Clause, clause: str) -> None:
        """The clause as it will be said (checked, with its style and speaker): emitted just before its audio."""
        self.r.emit(ReplyClause(self.r.rid, clause, get_style(item.style).name if item.style else None, item.speaker,
                                item.voice, item.sung))

    async def _render(self, item: Clause, clause: str, style: str | None) -> np.ndarray:
        """A clause's audio on the TTS thread: its own renderer (a sung phrase: ours, never checked) or the
        synthesizer."""
        tts = self.ctx.stack.tts
        assert tts is not None
        if item.render is not None:
            return await run_on(self.ctx.lanes.tts, item.render)
        return await run_on(self.ctx.lanes.tts, tts.synthesize, clause, self.voices.clause(style, item.voice),
                            self.words.lang)

    async def say_notice(self, kind: str) -> None:
        """A failed response ends with a sentence saying so: spoken after what was already voiced (when the voice
        works), and as text for text clients."""
        r, tts = self.r, self.ctx.stack.tts
        await r.gate.wait()
        text = notice(kind, self.lang)
        r.emit(ReplyTextDelta(r.rid, text))
        if not (r.speak and not self.degraded and tts is not None and self.ctx.stack.backend("tts").available()):
            return
        try:
            audio = await run_on(self.ctx.lanes.tts, tts.synthesize, text, self.voices.base(), self.lang)
        except Exception as e:
            self.ctx.stack.backend("tts").failed(e)
            return
        playout = self.playout
        if playout is not None and playout.rid == r.rid:
            playout.enqueue(text, audio)
            playout.finish()
            await playout.drained()
        elif playout is None:
            self._out(audio, text)
