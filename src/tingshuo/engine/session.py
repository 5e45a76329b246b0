"""One conversation: audio frames or text in, one ordered stream of typed events out.

``Session`` is a façade over stages that each have one job (docs/architecture.md draws them):

- :class:`~tingshuo.engine.frontend.AudioFrontEnd`: frames at any rate → 16 kHz windows, echo verdict, VAD;
- :class:`~tingshuo.engine.utterance.UtteranceTracker`: windows → utterance frames (onset, speech, pause, noise);
- :class:`~tingshuo.engine.turntaker.TurnTaker`: partials, the verdict on each pause, speculation, the commit;
- :class:`~tingshuo.engine.bargein.BargeIn`: speech over the reply pauses it; a backchannel resumes it;
- :class:`~tingshuo.engine.understand.Understander`: a user turn → one frozen :class:`~tingshuo.engine.plan.TurnPlan`;
- :class:`~tingshuo.engine.state.DialogueState` applies the plan when the turn is taken; one prompt builder;
- :mod:`tingshuo.engine.response`: the reply as a cancellable task tree (LLM source → text stage → voice stage →
  playout). In ``duplex`` mode its audio is paced in real time, so the engine knows what was heard.

Inference runs in single-thread executors (ASR, LLM, TTS, turn model, guard), so the event loop only moves frames.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import numpy as np

from tingshuo.asr.base import Transcript
from tingshuo.audio.io import INPUT_RATE, AudioError, resample, to_mono
from tingshuo.audio.vad import NO_SPEECH_MESSAGE, has_speech
from tingshuo.config import Settings
from tingshuo.dialogue.emotion import EmotionTrack
from tingshuo.dialogue.memory import Conversation, new_item_id
from tingshuo.dialogue.persona import Persona, get_persona
from tingshuo.dialogue.policy import ReplyPlan
from tingshuo.dialogue.voice import VoiceState
from tingshuo.audio.prosody import SpeakerBaseline
from tingshuo.engine.bargein import BargeIn
from tingshuo.engine.context import Context, Lanes, Outbox, run_on
from tingshuo.engine.events import AudioChunk, ErrorEvent, Event, PersonaChanged, SafetyVerdict, TranscriptFinal, UnheardTurn
from tingshuo.engine.faults import AsrFailed, notice
from tingshuo.engine.frontend import MAX_FRAME_SECONDS, AudioFrontEnd
from tingshuo.engine.plan import TurnPlan
from tingshuo.engine.playout import Playout
from tingshuo.engine.response import ReplyDeltas, ResponseOptions
from tingshuo.engine.response.control import Replies
from tingshuo.engine.response.run import Studio
from tingshuo.engine.response.voice import ACK
from tingshuo.engine.stack import ModelStack
from tingshuo.engine.state import DialogueState, Prompts
from tingshuo.engine.turntaker import TurnTaker
from tingshuo.engine.understand import Understander
from tingshuo.engine.utterance import UtteranceTracker
from tingshuo.script import text_language
from tingshuo.tts import VoiceSettings

__all__ = ["MAX_FRAME_SECONDS", "ReplyDeltas", "ResponseOptions", "Session"]


class Session:
    def __init__(self, stack: ModelStack, *, speak: bool = True, persona: str | None = None,
                 partials: bool = True, duplex: bool = False, settings: Settings | None = None) -> None:
        """``settings``: this session's own configuration (turn detection, duplex…); default: the stack's."""
        self.stack = stack
        self.settings = settings or stack.settings
        if speak and stack.tts is None:
            raise ValueError("speak=True needs a model stack loaded with TTS")
        self.duplex = duplex and speak
        p = get_persona(persona or self.settings.dialogue.persona)
        prompt = self.settings.dialogue.system_prompt or p.system_prompt
        self.state = DialogueState(p, Conversation(prompt), VoiceSettings(voice=p.voice))
        self.out = Outbox()
        # One thread per model, shared by every session on the stack (the models are not thread-safe); each session
        # has its own lane, so sessions take turns instead of queueing behind one busy caller.
        self.lanes = Lanes.of(stack, self)
        self.ctx = Context(stack, self.settings, self.lanes, self.out)
        self.prompts = Prompts(self.state, self.settings, stack.llm)
        if stack.guard is not None:
            self.lanes.guard.submit(stack.guard.warmup)  # its prompt evaluated once, before the first turn
        if stack.llm is not None:
            # Fill the prefix cache on the LLM thread: a Session is usually built inside the event loop, which
            # must not block for the ~1 s this takes; the first response queues behind it on the same thread.
            self.lanes.llm.submit(stack.warm, prompt)
        # ---- output
        self._playout: Playout | None = None
        self._acks: dict[str, np.ndarray] = {}
        if self.duplex:
            cfg = self.settings.duplex
            assert stack.tts is not None
            self._playout = Playout(stack.tts.sample_rate, cfg.frame_ms, cfg.lead_ms, self._on_frame)
            if cfg.acknowledge and p.acknowledges:
                self.lanes.tts.submit(self._prepare_acks)
        self.replies = Replies(Studio(self.ctx, self.state, self.prompts, self._playout, self._acks), speak)
        # ---- input: front end → utterance tracker → turn taker (+ barge-in) → understanding → dialogue state
        self.frontend = AudioFrontEnd(self.settings, self._playout, stack.tts.sample_rate if stack.tts else None)
        self.tracker = UtteranceTracker(self.settings)
        self.barge = BargeIn(self.settings, self._playout, self.frontend.aec, self.out, self.cancel)
        self.understander = Understander(self.ctx, self.state, self.prompts)
        self.replies.after = self.understander.prepare_next  # the next turn's context, read ahead
        self.turns = TurnTaker(self.ctx, self.state, self.prompts, self.understander, self.replies, self.tracker,
                               self.barge, accept=self._accept, commit_text=self._commit_text, unheard=self._unheard,
                               partials=partials)
        if speak:
            stack.notices.prepare(self.state.voice, p.language)  # "my voice failed", while it works
        self._closed = False

    # ------------------------------------------------------------------ state, as the server and tests see it
    @property
    def persona(self) -> Persona:
        return self.state.persona

    @property
    def conversation(self) -> Conversation:
        return self.state.conversation

    @property
    def voice(self) -> VoiceSettings:
        return self.state.voice

    @voice.setter
    def voice(self, v: VoiceSettings) -> None:
        self.state.voice = v

    @property
    def voice_state(self) -> VoiceState:
        return self.state.voice_state

    @property
    def baseline(self) -> SpeakerBaseline:
        return self.state.baseline

    @property
    def emotions(self) -> EmotionTrack:
        return self.state.emotions

    @property
    def care(self) -> bool:
        return self.state.care

    @property
    def risk(self) -> list[SafetyVerdict]:
        return self.state.risk

    @property
    def plan(self) -> ReplyPlan:
        """How the last user turn is being answered (style, reason, song, search): the server reports it."""
        return self.state.plan

    @property
    def speak(self) -> bool:
        return self.replies.speak

    @speak.setter
    def speak(self, on: bool) -> None:
        self.replies.speak = on

    @property
    def partials(self) -> bool:
        return self.turns.partials

    @partials.setter
    def partials(self, on: bool) -> None:
        self.turns.partials = on

    @property
    def auto_respond(self) -> bool:
        return self.turns.auto_respond

    @auto_respond.setter
    def auto_respond(self, on: bool) -> None:
        self.turns.auto_respond = on

    @property
    def open_utterance_s(self) -> float | None:
        """Length of the user's utterance in progress (None when nobody is talking)."""
        return None if not self.tracker.open else (self.tracker.pos - self.tracker.start) / INPUT_RATE

    def conversation_language(self) -> str:
        """The language of the user's last turn (the persona's before anyone spoke)."""
        return self.state.language()

    # ------------------------------------------------------------------ output
    def drain_events(self) -> list[Event]:
        """The events emitted and not yet read, without waiting (one-shot callers and tests after ``wait_idle``)."""
        return self.out.drain()

    def events(self) -> AsyncIterator[Event]:
        """Every event in order, until ``close()``."""
        return self.out.events()

    def _on_frame(self, rid: str, frame: np.ndarray, text: str) -> None:
        assert self.stack.tts is not None
        self.frontend.played(frame)
        self.out.emit(AudioChunk(rid, frame, self.stack.tts.sample_rate, text))

    def _prepare_acks(self) -> None:
        assert self.stack.tts is not None
        for lang, text in ACK.items():
            self._acks[lang] = self.stack.tts.synthesize(text, self.state.voice, lang)

    def set_instructions(self, prompt: str) -> None:
        """The system prompt of the replies from now on (a client's instructions, a persona's prompt); its prefix
        is cached on this session's LLM lane, unless another change replaced it before the lane got to it."""
        self.conversation.system_prompt = prompt
        if self.stack.llm is not None:
            def warm() -> None:
                if self.conversation.system_prompt == prompt:
                    self.stack.warm(prompt)

            self.lanes.llm.submit(warm)

    def set_persona(self, key: "str | Persona | None", request: str = "") -> None:
        """Become another persona (None: the configured one): its prompt, voice and manner from the next reply on.
        A :class:`Persona` written for this call (a character no preset plays) is kept for the rest of it.

        The conversation so far stays; only the system prompt changes (the LLM's prefix cache is refilled for it
        on the LLM thread, from its saved state after the first time).
        """
        if isinstance(key, Persona):
            p = key
            if p.improvised:
                self.state.improvised[p.key] = p
        else:
            p = self.state.find_persona(key or self.settings.dialogue.persona)
        if p.key == self.persona.key:
            return
        self.state.persona = p
        default = p.key == self.settings.dialogue.persona and self.settings.dialogue.system_prompt
        prompt = self.settings.dialogue.system_prompt if default else p.system_prompt
        self.set_instructions(prompt or p.system_prompt)
        self.state.voice = replace(self.state.voice, voice=p.voice)
        if self._playout is not None and self.settings.duplex.acknowledge and p.acknowledges:
            self.lanes.tts.submit(self._prepare_acks)  # "嗯，" in the new voice
        self.out.emit(PersonaChanged(p.key, p.name, p.voice, request))

    def set_turn_taking(self, mode: str, *, eagerness: str = "auto", silence_ms: int = 500,
                        threshold: float | None = None, barge_in: bool = True, auto_respond: bool = True) -> None:
        """How turns are taken from now on (a Realtime client's ``turn_detection``): ``mode`` "semantic_vad",
        "server_vad" or "manual" (push-to-talk: an open utterance is dropped); ``threshold`` the VAD's speech
        probability; ``auto_respond`` False: finished turns wait for ``respond()``."""
        t = self.settings.turn
        if mode == "manual":
            if t.mode != "manual":
                self.clear_input()
        else:
            t.eagerness = eagerness  # type: ignore[assignment]
            t.silence_ms = silence_ms
            if threshold is not None:
                self.settings.vad.threshold = threshold
                self.settings.vad.neg_threshold = min(self.settings.vad.neg_threshold, threshold)
        t.mode = mode  # type: ignore[assignment]
        self.settings.duplex.barge_in = barge_in
        self.auto_respond = auto_respond

    # ------------------------------------------------------------------ input
    async def push_text(self, text: str, item_id: str | None = None) -> None:
        """A typed user turn (text→text, or text→speech with ``speak``)."""
        text = text.strip()
        if not text:
            self.out.emit(ErrorEvent("empty_input", "the message is empty"))
            return
        t_end = time.perf_counter()
        await self.replies.interrupt()
        und = await self.understander.understand(text, None, None)
        self._commit_text(text, None, t_end, {}, item_id or new_item_id(), und)

    async def push_audio(self, audio: np.ndarray, sample_rate: int = INPUT_RATE) -> None:
        """Streaming input: any frame size and rate, mono or (n, channels); consecutive frames are resampled as
        one stream (no click at frame edges), and a change of rate between frames is fine."""
        try:
            x = self.frontend.accept(audio, sample_rate)
        except AudioError as e:
            self.out.emit(ErrorEvent("invalid_audio", str(e)))
            return
        for w, p, over_us, is_echo in self.frontend.windows(x, self.tracker.quiet):
            self.turns.on(self.tracker.window(w, p, over_us, is_echo))

    async def push_utterance(self, audio: np.ndarray, sample_rate: int = INPUT_RATE, item_id: str | None = None) -> None:
        """A whole recorded turn (a file): answered as one turn however many pauses it holds."""
        item_id = item_id or new_item_id()
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
            self.out.emit(ErrorEvent("invalid_audio", str(e), item_id))
            return
        if not await run_on(self.lanes.asr, has_speech, x):
            self.out.emit(ErrorEvent("no_speech", NO_SPEECH_MESSAGE, item_id))
            return
        try:
            t = await self.ctx.transcribe(x)
        except AsrFailed as e:
            await self._unheard(item_id, x, str(e))
            return
        if t is None:
            self.out.emit(ErrorEvent("no_speech", "no words were recognized in the audio", item_id))
            return
        await self.replies.interrupt()
        self.out.emit(TranscriptFinal(t.text, t.language, t.audio_seconds, item_id, x))
        und = await self.understander.understand(t.text, t.language, x)
        self._commit_text(t.text, t.language, t_end, {"asr": t.decode_ms}, item_id, und)

    async def transcribe(self, audio: np.ndarray, sample_rate: int = INPUT_RATE) -> Transcript | None:
        """Transcribe audio on the session's ASR thread without making it a turn (items given as audio)."""
        try:
            x = resample(to_mono(np.asarray(audio)), sample_rate, INPUT_RATE)
        except AudioError as e:
            self.out.emit(ErrorEvent("invalid_audio", str(e)))
            return None
        try:
            return await self.ctx.transcribe(x)
        except AsrFailed as e:
            self.out.emit(ErrorEvent("asr_failed", f"speech recognition failed: {e}"))
            return None

    async def end_audio(self) -> None:
        """The input stream ended: an utterance still open is answered now."""
        if self.tracker.open:
            await self.turns.finish_commit(self.turns.take())

    async def commit(self) -> None:
        """Push-to-talk: the user says the turn is over (``turn.mode = manual``, or any time)."""
        await self.end_audio()

    def clear_input(self) -> None:
        """Forget the utterance in progress (``input_audio_buffer.clear``)."""
        if self.tracker.open:
            self.turns.reset()
        self.tracker.clear()

    # ------------------------------------------------------------------ replies
    async def respond(self, options: ResponseOptions | None = None) -> str:
        """Answer the conversation as it stands (``response.create``); returns the response id.

        The last user turn (if the conversation ends with one) gets the per-turn language note before it, as
        in an automatic reply; ``options`` override the session's prompt, voice and output for this one.
        """
        o = options or ResponseOptions()
        await self.replies.interrupt()
        if o.fixed is None and self.stack.llm is None:
            self.out.emit(ErrorEvent("no_llm", "this session was started without a language model"))
            return ""
        history = o.history if o.history is not None else (self.prompts.history() if self.stack.llm else [])
        if history and history[0]["role"] == "system":
            history = history[1:]
        if (o.history is None and o.fixed is None and history and history[-1]["role"] == "user"
                and (self.state.last is None or self.state.last.text != history[-1]["content"])):
            # a user item added directly (Realtime conversation.item.create), not heard or typed through the engine:
            # read now like a typed turn — the safety policy, what it asks for (a role, a song, a story), a search
            text = history[-1]["content"]
            und = await self.understander.understand(text, text_language(text) or self.state.language(), None)
            self._accept(und, self.conversation.ids[-1] if self.conversation.ids else "")
        r = self.replies.answer(o, history)
        self.replies.open_gate(r, time.perf_counter(), {})
        return r.rid

    async def greet(self, text: str | None = None) -> None:
        """Speak first, as a call is answered (the persona's greeting unless ``text``); it goes into the history.

        In duplex mode the greeting also gives the echo canceller the seconds of far-end speech it needs to learn
        the room before the user can barge in.
        """
        r = self.replies.say(text or self.persona.greeting, self.persona.language)
        await self.replies.interrupt()
        self.replies.open_gate(r, r.t_end, {})

    def _accept(self, u: TurnPlan | None, item_id: str) -> None:
        """The turn is taken: the dialogue state applies its plan; a role it asked for takes effect."""
        if u is None:
            return
        for ev in self.state.accept(u, item_id, self.settings):
            self.out.emit(ev)
        if u.persona is not None and u.persona.key != self.persona.key:
            self.set_persona(u.persona, u.text)

    def _commit_text(self, text: str, language: str | None, t_end: float, timings: dict[str, float],
                     item_id: str, und: TurnPlan | None = None) -> None:
        self.conversation.add_user(text, item_id)
        self._accept(und, item_id)
        if not self.auto_respond:
            return
        if self.stack.llm is None:
            self.out.emit(ErrorEvent("no_llm", "this session was started without a language model"))
            return
        r = self.replies.for_turn(text, language, timings, und, committed=True)
        self.replies.open_gate(r, t_end, timings)

    async def _unheard(self, item_id: str, audio: np.ndarray, reason: str) -> None:
        """The recognizer failed on a turn: keep its audio (the server stores it), say so, and go on."""
        self.out.emit(UnheardTurn(item_id, audio, len(audio) / INPUT_RATE, reason))
        self.out.emit(ErrorEvent("asr_failed", f"speech recognition failed ({reason}); the audio of the turn was "
                                 "kept", item_id))
        await self.respond(ResponseOptions(fixed=notice("asr", self.conversation_language()), record=False))

    # ------------------------------------------------------------------ control
    async def cancel(self) -> None:
        """Stop the current response (text and audio) at once; the history keeps what was heard."""
        await self.replies.cancel()

    async def wait_idle(self) -> None:
        """Wait until every pending evaluation, turn and response has finished (one-shot CLI calls, tests)."""
        while True:
            pending = [t for t in self.out.tasks if not t.done()]
            r = self.replies.current
            if r is not None and r.task is not None and not r.task.done() and r.gate.is_set():
                pending.append(r.task)
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.cancel()
        ev = self.turns.eval
        if ev is not None and ev.speculation is not None:
            await self.turns.drop_speculation(ev)
        tasks = list(self.out.tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.replies.close()
        self.lanes.shutdown()
        if self._playout is not None:
            self._playout.close()
        self.out.end()

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
