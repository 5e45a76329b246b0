"""The turn taker: partial transcripts while the user talks, the verdict on each pause, speculation, the commit.

While the user talks, growing-window partial transcripts are decoded and the LLM scores them (which also pre-fills
its KV cache with the user's words) and reads their feeling. After ``turn.pause_ms`` of silence the utterance is
transcribed, scored by smart-turn v3.2 and the LLM (:mod:`tingshuo.engine.turns`), and — when it looks complete —
the reply is started *speculatively*: prepared but held behind its gate. The turn is taken once the silence
reaches the wait the scores call for; if the user goes on before that, the speculation is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from tingshuo.asr.base import Transcript
from tingshuo.audio.io import INPUT_RATE
from tingshuo.engine.bargein import BargeIn
from tingshuo.engine.context import Context, run_on
from tingshuo.engine.events import ErrorEvent, SpeechStarted, SpeechStopped, TranscriptFinal, TranscriptPartial, TurnDetected
from tingshuo.engine.faults import AsrFailed
from tingshuo.engine.plan import TurnPlan
from tingshuo.engine.response.control import Replies
from tingshuo.engine.response.model import Response
from tingshuo.engine.state import DialogueState, Prompts
from tingshuo.engine.turns import CUTIN_MARGIN, CUTIN_PHRASES, TurnScore, cutin_lean, required_silence_ms, text_score
from tingshuo.engine.understand import Understander
from tingshuo.engine.utterance import Frame, Noise, Onset, Paused, UtteranceTracker, Voiced, ms
from tingshuo.llm.base import LlmError

log = logging.getLogger("tingshuo.engine")

# Speech over our reply judged a backchannel (or no words) is held this long, from the end of its speech to the next
# utterance's start: when the user goes on, the turn is transcribed with it in front. The judge is wrong now and
# then — "等一下，" under the echo canceller has been read as a listener token, and a lone "对" gives Whisper no words
# — and the turn then began at "我想换个话题…" (or at "我们聊聊天气吧" when it was cut at the next pause): nothing the
# user said may be lost, a misjudged cut-in included. Audio, not text: "对" alone is no words, "对，我想…" is.
HELD_MS = 1500
READ_AGAIN_GROWTH = 1.6  # a partial transcript is read for feelings again once it is this much longer
EarlyReading = tuple[str, "asyncio.Future[dict[str, float] | None]"]  # (partial text, the feeling read from it)


@dataclass
class Evaluation:
    """The verdict on one pause: transcript, scores and the silence they call for."""

    end_sample: int  # where the evaluated speech ends in the input stream
    audio: np.ndarray
    transcript: Transcript | None = None
    score: TurnScore | None = None
    required_ms: float | None = None
    speculation: Response | None = None
    done: bool = False
    eval_ms: float | None = None
    task: asyncio.Task[None] | None = None
    understanding: TurnPlan | None = None
    und_task: "asyncio.Future[TurnPlan] | None" = None  # started once, awaited by speculation or commit
    early_emotion: EarlyReading | None = None  # the words' feeling read while the user was still talking
    asr_failed: bool = False  # the recognizer raised on this audio (not the same as "no words")
    lean: float | None = None  # speech over our reply: stop phrase (>0) or listener token (<0), by the recognizer


@dataclass
class Taken:
    """An utterance closed for the commit (so no later window can commit it twice)."""

    end_sample: int
    t_end: float  # end of speech, wall clock
    audio: np.ndarray
    evaluation: Evaluation | None
    barge: tuple[str, int] | None
    item_id: str
    held: np.ndarray | None = None  # a cut-in judged a backchannel just before, which opens this turn


class TurnTaker:
    def __init__(self, ctx: Context, state: DialogueState, prompts: Prompts, understander: Understander,
                 replies: Replies, tracker: UtteranceTracker, barge: BargeIn, *,
                 accept: Callable[[TurnPlan | None, str], None],
                 commit_text: Callable[[str, str | None, float, dict[str, float], str, TurnPlan | None], None],
                 unheard: Callable[[str, np.ndarray, str], Awaitable[None]], partials: bool) -> None:
        self.ctx, self.state, self.prompts, self.und, self.replies = ctx, state, prompts, understander, replies
        self.tracker, self.barge = tracker, barge
        self._accept, self._commit_text, self._unheard = accept, commit_text, unheard
        self.partials = partials
        # False: a finished user turn is only added to the conversation; ``respond()`` answers it (Realtime
        # clients with ``create_response: false`` or push-to-talk)
        self.auto_respond = True
        self.eval: Evaluation | None = None
        self._partial_busy = False
        self._partial_at = 0
        # (item id, text, reading) of the feeling read from the newest partial transcript while the user talks
        self._partial_emotion: tuple[str, str, asyncio.Future[dict[str, float] | None]] | None = None
        # (audio, end sample) of the last cut-in judged a backchannel, for the turn that may follow it (HELD_MS)
        self._held: tuple[np.ndarray, int] | None = None

    # ------------------------------------------------------------------ one window's frame
    def on(self, f: Frame) -> None:
        tr, settings = self.tracker, self.ctx.settings
        if isinstance(f, Onset):
            self._partial_at = tr.pos
            self.ctx.emit(SpeechStarted(ms(tr.start), tr.item_id))
            self.barge.onset(tr, f.over_us)
        elif isinstance(f, Voiced):
            if f.resumed:  # speech after a pause: the turn was not over; drop the verdict and any speculation
                ev, self.eval = self.eval, None
                if ev is not None:
                    self.ctx.out.spawn(self.drop_speculation(ev))
            self.barge.check_length(tr)
            # Partial transcripts are a preview (captions, an early emotion reading, a warm LLM cache): when another
            # session is waiting for the recognizer, they are skipped so its committed turns go first.
            if (self.partials and not self._partial_busy and not self.ctx.lanes.asr.contended()
                    and tr.pos - self._partial_at >= settings.turn.partial_every_ms * INPUT_RATE // 1000):
                self._partial_at = tr.pos
                self._partial_busy = True
                self.ctx.out.spawn(self.partial(tr.audio(), tr.item_id))
        elif isinstance(f, Noise):
            self.discard()  # a click or a cough: not an utterance
        elif isinstance(f, Paused) and not tr.short():
            if self.eval is None and ms(tr.silence) >= settings.turn.pause_ms:
                ev = Evaluation(tr.last_speech_end, tr.until_speech_end())
                self.eval = ev
                ev.task = self.ctx.out.spawn(self.evaluate(ev))
            self.maybe_commit()

    def discard(self) -> None:
        judging = self.barge.judging
        if judging is not None and not self.tracker.short():
            self.hold()  # speech over us with no words Whisper would write ("对"): the user may go on
        self.ctx.emit(SpeechStopped(ms(self.tracker.last_speech_end), self.tracker.item_id))
        self.reset()
        if judging is not None:
            self.barge.resume(judging[0], "")

    def reset(self) -> None:
        """The open utterance is dropped: no verdict, no speculation, no barge-in being judged."""
        self.tracker.close()
        self.barge.forget()
        ev, self.eval = self.eval, None
        if ev is not None and ev.speculation is not None:
            self.ctx.out.spawn(self.drop_speculation(ev))

    def maybe_commit(self) -> None:
        ev, tr = self.eval, self.tracker
        if ev is None or not ev.done or not tr.open:
            return
        if self.barge.judging is not None:
            text = ev.transcript.text if ev.transcript else ""
            if self.barge.backchannel(text, tr, ev.lean):
                rid = self.barge.judging[0]
                self.hold()
                self.reset()
                self.barge.resume(rid, text)
                return
            self.barge.confirm()
        if self.ctx.settings.turn.mode == "manual":
            return
        if ev.required_ms is not None and ms(tr.pos - ev.end_sample) >= ev.required_ms:
            self.ctx.out.spawn(self.finish_commit(self.take()))

    def hold(self) -> None:
        """Keep the open utterance's audio for the turn that may follow it (after one held before it, if close)."""
        tr = self.tracker
        audio = tr.until_speech_end()
        before = self.held_for(tr.start)
        self._held = (audio if before is None else np.concatenate([before, audio]), tr.last_speech_end)

    def held_for(self, start: int) -> np.ndarray | None:
        """The held cut-in's audio if an utterance starting at ``start`` follows it closely enough."""
        if self._held is None or ms(start - self._held[1]) > HELD_MS:
            return None
        return self._held[0]

    async def weigh_cutin(self, audio: np.ndarray, language: str) -> float | None:
        """Speech over our reply, short enough to be a backchannel: does the recognizer hear a stop phrase or a
        listener token in it (:func:`~tingshuo.engine.turns.cutin_lean`)? None where it cannot say: a recognizer
        without ``phrase_scores``, a language without the lists, a longer utterance (always an interruption)."""
        weigh = getattr(self.ctx.stack.asr, "phrase_scores", None)
        if (weigh is None or language not in CUTIN_PHRASES
                or ms(self.tracker.speech) > self.ctx.settings.duplex.backchannel_max_ms):
            return None
        stops, listeners = CUTIN_PHRASES[language]
        try:
            return cutin_lean(await run_on(self.ctx.lanes.asr, weigh, audio, stops + listeners, language), language)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the transcript's rules still decide
            log.warning("weighing a cut-in failed: %s", e)
            return None

    # ------------------------------------------------------------------ while the user talks
    async def score_text(self, text: str, lang: str) -> float | None:
        llm = self.ctx.stack.judge or self.ctx.stack.llm
        if llm is None or not text.strip():
            return None
        if not llm.caps.prompt_scores:
            return None  # a chat API cannot score an unfinished turn: the end of turn rests on the audio
        if self.ctx.lanes.judge.busy_with_others():
            # another session's reply holds the LLM for seconds: decide the end of the turn on the audio alone
            # rather than wait (with several callers, waiting here was most of their latency)
            return None
        try:
            return await run_on(self.ctx.lanes.judge, llm.turn_end_probability,
                                self.prompts.with_note(self.prompts.history(), lang), text)
        except LlmError:
            return None

    async def partial(self, audio: np.ndarray, item_id: str) -> None:
        tr = self.tracker
        try:
            try:
                t = await self.ctx.transcribe(audio, None)
            except AsrFailed:
                return  # a partial is only a preview; the end of the turn tries again and reports
            if t is None or not tr.open or tr.item_id != item_id:
                return
            self.ctx.emit(TranscriptPartial(t.text, item_id))
            if not self.replies.busy() and not self.ctx.lanes.llm.contended():  # optional work: not while another session waits
                await self.score_text(t.text, t.language)  # pre-fills the LLM cache with the user's words
                # The LLM is idle while the user talks: read the feeling in the words now, so the end of the turn
                # does not wait for it (reused when the final transcript says nearly the same).
                ecfg = self.ctx.settings.emotion
                pe = self._partial_emotion
                # Only while the user is audibly still talking, and again only once the words have grown by half:
                # a reading still running when the turn ends holds the end-of-turn score and the reply up (~0.45 s
                # on the one LLM thread); geometric spacing makes that ever less likely as an utterance goes on.
                if (ecfg.enabled and ecfg.text and self.auto_respond and tr.open
                        and tr.item_id == item_id and len(t.text) >= 4 and self.eval is None
                        and ms(tr.silence) < 200
                        and not (pe is not None and pe[0] == item_id and len(t.text) < READ_AGAIN_GROWTH * len(pe[1]))):
                    job = asyncio.ensure_future(self.und.text_emotion(t.text, t.language))
                    self._partial_emotion = (item_id, t.text, job)
                    await job
        finally:
            self._partial_busy = False

    # ------------------------------------------------------------------ a pause
    async def evaluate(self, ev: Evaluation) -> None:
        """Transcribe the utterance up to the pause, score it, maybe start the reply speculatively."""
        tcfg = self.ctx.settings.turn
        tr, barge = self.tracker, self.barge
        t0 = time.perf_counter()
        pe = self._partial_emotion
        if pe is not None and pe[0] == tr.item_id:
            ev.early_emotion = (pe[1], pe[2])
        turn_model = self.ctx.stack.turn
        audio_job = (asyncio.ensure_future(run_on(self.ctx.lanes.turn, turn_model.probability, ev.audio))
                     if turn_model is not None and tcfg.mode == "semantic_vad" else None)
        # Speech over our reply is judged in the conversation's language: Whisper's language ID on a lone
        # "对" picks English about as often as not ("Twainer").
        held = self.held_for(tr.start)
        try:
            if barge.judging is None and held is not None:  # a turn, and a cut-in just before it: one reading
                ev.transcript = await self.ctx.transcribe(np.concatenate([held, ev.audio]), None)
            else:
                ev.transcript = await self.ctx.transcribe(ev.audio, self.state.language() if barge.judging else None)
        except AsrFailed:
            ev.asr_failed = True  # the commit tries once more, then keeps the audio and says so
        if barge.judging is not None and not ev.asr_failed:
            ev.lean = await self.weigh_cutin(ev.audio, self.state.language())
        p_audio = await audio_job if audio_job is not None else None
        p_text = None
        # An interruption (speech over our reply that is not a backchannel) is a turn like any other: without the
        # LLM's completeness score, smart-turn alone ends it at its first mid-sentence pause.
        interrupting = (barge.judging is not None and ev.transcript is not None
                        and not barge.backchannel(ev.transcript.text, tr, ev.lean))
        if interrupting:
            # Words over our reply that are not a backchannel ("别说了"): stop it now, before the end-of-turn score.
            # That score runs on the LLM thread, which our own reply holds until it is cancelled: a short stop
            # phrase, too short for check_length, waited there for the whole story to be generated.
            barge.confirm()
            if held is not None:
                # the interruption is a turn: read again with what was held of the user's words in front of it
                # (a second reading, only after a held cut-in; a failure keeps the first)
                try:
                    ev.transcript = (await self.ctx.transcribe(np.concatenate([held, ev.audio]), None)
                                     or ev.transcript)
                except AsrFailed:
                    pass
        if self.eval is ev and ev.transcript is not None and (barge.judging is None or interrupting):
            # One reading per utterance (plan, guard, feeling), shared by the speculative reply and the commit,
            # begun now: the plan and the guard run on their own threads beside the end-of-turn score below
            # rather than after it, inside the silence the turn waits for anyway.
            ev.und_task = asyncio.ensure_future(self.und.understand(ev.transcript.text, ev.transcript.language,
                                                                    ev.audio, ev.early_emotion))
        if ev.transcript is not None and tcfg.mode == "semantic_vad" and (barge.judging is None or interrupting):
            p_text = text_score(await self.score_text(ev.transcript.text, ev.transcript.language),
                                ev.transcript.text)
        ev.score = TurnScore(p_audio, p_text, tcfg.text_weight)
        ev.required_ms = required_silence_ms(tcfg, ev.score) if tcfg.mode != "manual" else None
        ev.done = True
        ev.eval_ms = (time.perf_counter() - t0) * 1000
        if self.eval is not ev:
            return  # the user went on talking meanwhile, or the turn was already taken
        if ev.transcript is None and not ev.asr_failed:
            if barge.judging is not None and ev.lean is not None and ev.lean >= CUTIN_MARGIN:
                # no words Whisper would write yet, but the audio reads as a stop phrase ("停下" under the echo
                # canceller): the reply stops, and the utterance stays open (the user may go on: "等一下，我想…";
                # dropping it lost those words)
                barge.confirm()
                return
            if barge.judging is not None or tr.speech < 0.5 * INPUT_RATE:
                self.discard()  # noise, a cough, breath: no words
                return
        elif (self.ctx.stack.llm is not None and barge.judging is None and tcfg.mode != "manual"
              and self.auto_respond and ev.score.p >= tcfg.speculate_above):
            assert ev.und_task is not None
            und = await ev.und_task
            if self.eval is not ev:
                return  # taken (the commit used the same reading) or abandoned meanwhile
            ev.understanding = und
            ev.speculation = self.replies.for_turn(ev.transcript.text, ev.transcript.language, {}, und)
        self.maybe_commit()

    async def drop_speculation(self, ev: Evaluation) -> None:
        if ev.und_task is not None and not ev.und_task.done() and self.eval is not ev:
            ev.und_task.cancel()  # the reading of words the user went on from: nobody will use it
        r, ev.speculation = ev.speculation, None
        await self.replies.drop(r)

    # ------------------------------------------------------------------ the turn is taken
    def take(self) -> Taken:
        """Close the open utterance synchronously (so no later window can commit it twice)."""
        tr = self.tracker
        assert tr.open
        end_sample = tr.last_speech_end
        t_end = time.perf_counter() - (tr.pos - end_sample) / INPUT_RATE
        taken = Taken(end_sample, t_end, tr.until_speech_end(), self.eval, self.barge.forget(), tr.item_id,
                      self.held_for(tr.start))
        self._held = None
        tr.close()
        self.eval = None
        self.ctx.emit(SpeechStopped(ms(end_sample), tr.item_id))
        return taken

    async def finish_commit(self, taken: Taken) -> None:
        """Take the turn: the utterance becomes the user's message and the (speculative) reply is released."""
        ev, audio, barge, item_id, t_end = taken.evaluation, taken.audio, taken.barge, taken.item_id, taken.t_end
        if ev is not None and ev.end_sample == taken.end_sample and not ev.done and ev.task is not None:
            await asyncio.gather(ev.task, return_exceptions=True)
        if ev is None or not ev.done or ev.end_sample != taken.end_sample or ev.asr_failed:
            if ev is not None:
                await self.drop_speculation(ev)
            try:
                t = await self.ctx.transcribe(audio if taken.held is None else np.concatenate([taken.held, audio]),
                                              None)
            except AsrFailed as e:
                if barge is not None:
                    await self.replies.cancel()
                await self._unheard(item_id, audio, str(e))
                return
            ev = Evaluation(taken.end_sample, audio, t)
        if ev.transcript is None:
            self.ctx.emit(ErrorEvent("no_speech", "no words were recognized in the audio", item_id))
            if barge is not None:
                self.barge.resume(barge[0], "")
            return
        if barge is not None:
            await self.replies.cancel()
        t = ev.transcript
        self.ctx.emit(TurnDetected(ev.score.p_audio if ev.score else None, ev.score.p_text if ev.score else None,
                                   round((time.perf_counter() - t_end) * 1000, 1)))
        self.ctx.emit(TranscriptFinal(t.text, t.language, t.audio_seconds, item_id, audio))
        timings = {"asr": t.decode_ms, "turn_wait": (time.perf_counter() - t_end) * 1000}
        if ev.eval_ms is not None:
            timings["turn_eval"] = ev.eval_ms
        spec = ev.speculation
        if spec is not None and spec.task is not None and not spec.task.done():
            await self.replies.interrupt(keep=spec)
            self.state.conversation.add_user(t.text, item_id)
            self._accept(ev.understanding, item_id)
            self.replies.open_gate(spec, t_end, timings)
        else:
            if ev.understanding is not None:
                und = ev.understanding
            elif ev.und_task is not None:
                und = await ev.und_task
            else:
                und = await self.und.understand(t.text, t.language, audio, ev.early_emotion)
            await self.replies.interrupt()
            self._commit_text(t.text, t.language, t_end, timings, item_id, und)
