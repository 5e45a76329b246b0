"""One conversation: audio frames or text in, one ordered stream of typed events out.

Input. ``push_audio`` takes a live stream (any frame size and rate). Each 32 ms window goes through echo
cancellation (duplex, with the played audio as reference) and Silero VAD. While the user talks, growing-window
partial transcripts are decoded and the LLM scores them (which also pre-fills its KV cache with the user's
words). After ``turn.pause_ms`` of silence the utterance is transcribed, scored by smart-turn v3.2 and the LLM
(:mod:`tingshuo.engine.turns`), and — when it looks complete — the reply is started *speculatively*: its text
and first clause of audio are prepared but held back. The turn is taken once the silence reaches the wait the
scores call for; if the user goes on before that, the speculation is cancelled and the utterance continues.

Output. A response is one asyncio task (LLM thread → clause splitter → TTS thread). In ``duplex`` mode its
audio goes through :class:`~tingshuo.engine.playout.Playout`, paced in real time, so the engine knows what was
heard. Speech over the reply pauses playback at once (barge-in); a short backchannel or cough resumes it, a
real interruption cancels the response and truncates the assistant's turn in the history to what was heard.
Without ``duplex`` (files, the CLI) each clause's audio is emitted whole as soon as it is synthesized.

Inference runs in single-thread executors (ASR, LLM, TTS, turn model), so the event loop only moves frames.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from tingshuo.audio import prosody
from tingshuo.audio.io import INPUT_RATE, AudioError, StreamResampler, resample, to_mono
from tingshuo.audio.vad import NO_SPEECH_MESSAGE, WINDOW, SileroVad, has_speech
from tingshuo.asr.base import Transcript
from tingshuo.config import Settings
from tingshuo.dialogue.care import hotlines as care_hotlines
from tingshuo.dialogue.care import care_note, lines_sentence, names_a_line, refusal_note
from tingshuo.dialogue.emotion import EmotionReading, EmotionTrack, fuse, read_words
from tingshuo.dialogue.memory import Conversation, new_item_id
from tingshuo.dialogue.persona import PERSONAS, Persona, RoleRequest, cast, get_persona, is_female, parse_role_request
from tingshuo.dialogue.policy import ReplyPlan, plan_reply
from tingshuo.dialogue.songs import SongRequest, parse_song_request, pick_song, unknown_song_note, write_lyrics
from tingshuo.dialogue.speech import ClauseSplitter, ScriptLines, StyleTags
from tingshuo.dialogue.voice import VoiceChange, VoiceState, parse_voice_instruction
from tingshuo.engine.events import (
    AudioChunk,
    Backchannel,
    ErrorEvent,
    Event,
    Paralinguistics,
    PersonaChanged,
    PronunciationReport,
    SafetyVerdict,
    CareChanged,
    SearchDone,
    PlaybackPaused,
    PlaybackResumed,
    ReplyClause,
    ReplyTextDelta,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
    SpeechDegraded,
    TurnDetected,
    UnheardTurn,
    VoiceChanged,
)
from tingshuo.engine.faults import AsrFailed, notice
from tingshuo.engine.playout import Playout
from tingshuo.engine.stack import ModelStack
from tingshuo.engine.turns import TurnScore, is_backchannel, required_silence_ms, text_score
from tingshuo.coach.pronunciation import Report, words_of
from tingshuo.llm.base import LlmError, Message
from tingshuo.safety import Verdict
from tingshuo.search import FRESH_CUE, SearchDecision, SearchError, results_note, route, source_lead
from tingshuo.tts import VoiceSettings, get_style, text_language

MAX_FRAME_SECONDS = 10.0  # one push_audio call; streaming clients send 20–100 ms
_END = object()
_STARTED = object()  # the LLM worker picked the response up (queued time is not a stall)
_LANG_NOTE = {
    "zh": "请用简体中文口语回应用户接下来说的话，不要重复原话。",
    "en": "Reply in spoken English to what the user says next; do not repeat their words.",
}
_ACK = {"zh": "嗯，", "en": "Mm,"}
_QUOTED = re.compile(r"[\"“]([A-Za-z][^\"”]{3,}?)[\"”]|:\s*([A-Z][A-Za-z ,']{3,}[.!?])")
_FILLER = {"zh": "我查一下。", "en": "Let me look that up."}  # spoken while a search runs
# said in place of a clause the output check stopped (the reply ends there)
_BLOCKED = {"zh": "这部分我不能说下去，我们换个话题吧。", "en": "I can't go on with that part; let's talk about something else."}
_LEADING_ACK = re.compile(r"^(?:嗯+|恩+|mm+|hmm+)[，,。.！!\s]*", re.IGNORECASE)
_ids = itertools.count(1)
log = logging.getLogger("tingshuo.engine")


READ_AGAIN_GROWTH = 1.6  # a partial transcript is read for feelings again once it is this much longer
# "讲个故事", "给我讲一个孙悟空的故事", "tell me a story": the reply is a story with voiced characters
_STORY = re.compile(r"(讲|说|来|编)[^。？！?]{0,12}(故事|童话|寓言|传说)|(tell|read)\b[^.?!]{0,20}\b(story|tale|fairy)", re.I)
# A note after the user's words (~0.7 s more prompt before a story's first words on 2 cores). In the cached system
# prompt it cost nothing, but the 1.5B then recited it as a reply in role-play and copied its example as every story.
_STORY_NOTE = {
    "zh": ("用户想听故事。讲一个六到十句的小故事，至少有两个角色说话。每一句前面标出是谁在说：叙述写[旁白]，"
           "角色说的话写[角色名]。例如：[旁白]从前，小兔子在森林里迷了路。[小兔子]我好害怕呀！[旁白]这时，大象走了过来。"
           "[大象]别怕，我带你回家。"),
    "en": ("The user wants a story. Tell a short story of six to ten sentences in which at least two characters "
           "speak. Mark who says each sentence: [Narrator] for narration, [Name] for a character's line. For "
           "example: [Narrator] Once upon a time, a little rabbit got lost. [Rabbit] I'm so scared! [Narrator] "
           "Then an elephant came by. [Elephant] Don't worry, I'll take you home."),
}
NARRATOR = re.compile(r"^(旁白|叙述|叙述者|讲述者|说书人|narrator|narration)$", re.I)


def _ms(samples: int) -> float:
    return samples * 1000 / INPUT_RATE


@dataclass
class _Understanding:
    """What a user turn means beyond its words: the feeling, a voice request, and the reply plan they lead to."""

    reading: EmotionReading | None
    change: VoiceChange | None
    voice: VoiceState  # the voice state once this turn is taken
    plan: ReplyPlan
    text: str = ""
    ms: float = 0.0  # time it took (the part of it not overlapped with other work delays the reply)
    persona: Persona | None = None  # the persona that answers once this turn is taken (a role request)
    role: RoleRequest | None = None
    song: SongRequest | None = None  # something to sing (song set), or an unknown title (answered honestly)
    story: bool = False  # the reply is a story with attributed, voiced lines
    safety: Verdict | None = None  # the safety policy's reading of the turn (None: safety off)
    search_candidate: bool = False  # the turn may need a search (the response asks the LLM)
    pronunciation: "Report | None" = None  # the coach's reading of a spoken English turn (tutor persona)


@dataclass
class _Evaluation:
    """The verdict on one pause: transcript, scores and the silence they call for."""

    end_sample: int  # where the evaluated speech ends in the input stream
    audio: np.ndarray
    transcript: Transcript | None = None
    score: TurnScore | None = None
    required_ms: float | None = None
    speculation: "_Response | None" = None
    done: bool = False
    eval_ms: float | None = None
    task: asyncio.Task[None] | None = None
    understanding: _Understanding | None = None
    und_task: "asyncio.Future[_Understanding] | None" = None  # started once, awaited by speculation or commit
    # the words' feeling as read (or being read) from a partial transcript while the user was still talking
    early_emotion: "tuple[str, asyncio.Future[dict[str, float] | None]] | None" = None
    asr_failed: bool = False  # the recognizer raised on this audio (not the same as "no words")


@dataclass
class ResponseOptions:
    """Per-response overrides (the Realtime API's ``response.create``); None = the session's setting."""

    instructions: str | None = None  # replaces the system prompt for this response only
    speak: bool | None = None  # False: text only
    voice: VoiceSettings | None = None
    max_tokens: int | None = None
    history: list[Message] | None = None  # answer these turns instead of the conversation (out-of-band)
    fixed: str | None = None  # say exactly this (no LLM)
    record: bool = True  # the reply becomes an assistant turn in the conversation


@dataclass
class _Response:
    rid: str
    user_text: str
    speak: bool = True
    voice: VoiceSettings | None = None
    max_tokens: int | None = None
    record: bool = True
    plan: ReplyPlan = field(default_factory=ReplyPlan)
    voice_state: VoiceState = field(default_factory=VoiceState)
    item_id: str = field(default_factory=new_item_id)
    task: asyncio.Task[None] | None = None
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # set when the turn is confirmed
    held: list[Event] = field(default_factory=list)  # events produced before the gate opened
    timings: dict[str, float] = field(default_factory=dict)
    t_end: float = 0.0  # wall-clock end of the user's speech (or of the typed message)
    persona: Persona | None = None  # who answers (None: the session's persona)
    story: bool = False  # lines are attributed ("[旁白]", "[孙悟空]") and spoken in the speakers' voices
    cast: dict[str, str] = field(default_factory=dict)  # story speaker → voice
    care_lines: bool = False  # a care reply: it must name a help line (one is added if the LLM did not)
    model_answer: str | None = None  # a sentence to say clearly at the end (the coach's model answer)
    search_candidate: bool = False
    search: SearchDecision | None = None

    def emit(self, session: "Session", ev: Event) -> None:
        if self.gate.is_set():
            session._emit(ev)
        else:
            self.held.append(ev)


class Session:
    def __init__(self, stack: ModelStack, *, speak: bool = True, persona: str | None = None,
                 partials: bool = True, duplex: bool = False, settings: Settings | None = None) -> None:
        """``settings``: this session's own configuration (turn detection, duplex…); default: the stack's."""
        self.stack = stack
        self.settings = settings or stack.settings
        if speak and stack.tts is None:
            raise ValueError("speak=True needs a model stack loaded with TTS")
        self.speak = speak
        self.duplex = duplex and speak
        self.persona = get_persona(persona or self.settings.dialogue.persona)
        prompt = self.settings.dialogue.system_prompt or self.persona.system_prompt
        self.conversation = Conversation(prompt)
        self.voice = VoiceSettings(voice=self.persona.voice)
        # how the assistant speaks until asked otherwise, the speaker's usual prosody, their feelings so far
        self.voice_state = VoiceState()
        self.baseline = prosody.SpeakerBaseline()
        self.emotions = EmotionTrack()
        self._plan = ReplyPlan()  # the plan for answering the last user turn (``respond()`` uses it)
        self._sung: list[str] = []  # songs sung in this conversation ("再唱一首" picks another)
        self._und: _Understanding | None = None  # the last user turn's understanding (``respond()`` uses it)
        self.partials = partials
        # False: a finished user turn is only added to the conversation; ``respond()`` answers it (Realtime
        # clients with ``create_response: false`` or push-to-talk)
        self.auto_respond = True
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._response: _Response | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._responses: set[asyncio.Task[None]] = set()  # every response task, speculative ones included
        # One thread per model, shared by every session on the stack (the models are not thread-safe); each session
        # has its own lane, so sessions take turns instead of queueing behind one busy caller.
        self._asr_pool = stack.lane("asr", self)
        self._llm_pool = stack.lane("llm", self)
        self._tts_pool = stack.lane("tts", self)
        self._turn_pool = stack.lane("turn", self)
        self._guard_pool = stack.lane("guard", self)  # the safety guard's own llama.cpp context
        self.care = False  # care mode (a self-harm signal was heard): stays on for the session
        self.risk: list[SafetyVerdict] = []  # every non-allowed verdict, for the deployer's session log
        self._prev_user = ""
        if stack.guard is not None:
            self._guard_pool.submit(stack.guard.warmup)  # its prompt evaluated once, before the first turn
        if stack.llm is not None:
            # Fill the prefix cache on the LLM thread: a Session is usually built inside the event loop, which
            # must not block for the ~1 s this takes; the first response queues behind it on the same thread.
            self._llm_pool.submit(stack.warm, prompt)
        # ---- input state (16 kHz stream positions in samples)
        self._vad: SileroVad | None = None
        self._aec = None
        self._pending = np.zeros(0, np.float32)
        self._pending_raw = np.zeros(0, np.float32)  # the same samples before echo cancellation
        self._resampler = StreamResampler(INPUT_RATE)  # push_audio's frames, at whatever rate they come
        self._echo_levels: deque[float] = deque(maxlen=300)  # mic-to-reference dB in playback windows nobody spoke in
        self._pos = 0
        self._pre: deque[np.ndarray] = deque(maxlen=max(1, self.settings.vad.speech_pad_ms * INPUT_RATE // 1000 // WINDOW + 1))
        self._onset = 0
        self._utt: list[np.ndarray] | None = None  # the open user utterance (None: nobody is talking)
        self._utt_start = 0
        self._utt_id = ""  # the conversation item id the open utterance becomes
        self._speech = 0  # speech samples in the open utterance
        self._silence = 0  # trailing silence samples
        self._last_speech_end = 0
        self._eval: _Evaluation | None = None
        self._partial_busy = False
        self._partial_at = 0
        # (item id, text, reading) of the feeling read from the newest partial transcript while the user talks
        self._partial_emotion: tuple[str, str, asyncio.Future[dict[str, float] | None]] | None = None
        self._barge: tuple[str, int] | None = None  # (response id, onset sample) while speech over us is judged
        # ---- output
        self._playout: Playout | None = None
        self._ack_audio: dict[str, np.ndarray] = {}
        if self.duplex:
            cfg = self.settings.duplex
            assert stack.tts is not None
            self._playout = Playout(stack.tts.sample_rate, cfg.frame_ms, cfg.lead_ms, self._on_frame)
            if cfg.aec:
                from tingshuo.audio.aec import EchoCanceller

                self._aec = EchoCanceller(stack.tts.sample_rate, cfg.lead_ms)
            if cfg.acknowledge and self.persona.acknowledges:
                self._tts_pool.submit(self._prepare_acks)
        if self.speak:
            stack.notices.prepare(self.voice, self.persona.language)  # "my voice failed", while it works
        self._closed = False

    # ------------------------------------------------------------------ output
    def set_instructions(self, prompt: str) -> None:
        """The system prompt of the replies from now on (a client's instructions, a persona's prompt); its prefix
        is cached on this session's LLM lane, unless another change replaced it before the lane got to it."""
        self.conversation.system_prompt = prompt
        if self.stack.llm is not None:
            def warm() -> None:
                if self.conversation.system_prompt == prompt:
                    self.stack.warm(prompt)

            self._llm_pool.submit(warm)

    @property
    def plan(self) -> ReplyPlan:
        """How the last user turn is being answered (style, reason, song, search): the server reports it."""
        return self._plan

    def drain_events(self) -> list[Event]:
        """The events emitted and not yet read, without waiting (one-shot callers and tests after ``wait_idle``)."""
        out = []
        while not self._queue.empty():
            ev = self._queue.get_nowait()
            if ev is None:  # closed: the end stays for events()
                self._queue.put_nowait(None)
                break
            out.append(ev)
        return out

    async def events(self) -> AsyncIterator[Event]:
        """Every event in order, until ``close()``."""
        while True:
            ev = await self._queue.get()
            if ev is None:
                return
            yield ev

    def _emit(self, ev: Event) -> None:
        self._queue.put_nowait(ev)

    def _on_frame(self, rid: str, frame: np.ndarray, text: str) -> None:
        assert self.stack.tts is not None
        if self._aec is not None:
            self._aec.played(frame)
        self._emit(AudioChunk(rid, frame, self.stack.tts.sample_rate, text))

    def _prepare_acks(self) -> None:
        assert self.stack.tts is not None
        for lang, text in _ACK.items():
            self._ack_audio[lang] = self.stack.tts.synthesize(text, self.voice, lang)

    # ------------------------------------------------------------------ input
    async def push_text(self, text: str, item_id: str | None = None) -> None:
        """A typed user turn (text→text, or text→speech with ``speak``)."""
        text = text.strip()
        if not text:
            self._emit(ErrorEvent("empty_input", "the message is empty"))
            return
        t_end = time.perf_counter()
        await self._interrupt()
        und = await self._understand(text, None, None)
        self._commit_text(text, None, t_end, {}, item_id or new_item_id(), und)

    async def respond(self, options: ResponseOptions | None = None) -> str:
        """Answer the conversation as it stands (``response.create``); returns the response id.

        The last user turn (if the conversation ends with one) gets the per-turn language note before it, as
        in an automatic reply; ``options`` override the session's prompt, voice and output for this one.
        """
        o = options or ResponseOptions()
        await self._interrupt()
        if o.fixed is None and self.stack.llm is None:
            self._emit(ErrorEvent("no_llm", "this session was started without a language model"))
            return ""
        history = o.history if o.history is not None else (self._history() if self.stack.llm else [])
        if history and history[0]["role"] == "system":
            history = history[1:]
        last_user = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
        lang = text_language(last_user) or self.conversation_language()
        if (o.history is None and o.fixed is None and history and history[-1]["role"] == "user"
                and (self._und is None or self._und.text != last_user)):
            # a user item added directly (Realtime conversation.item.create), not heard or typed through the engine:
            # read now like a typed turn — the safety policy, what it asks for (a role, a song, a story), a search
            und = await self._understand(last_user, lang, None)
            self._accept(und, self.conversation.ids[-1] if self.conversation.ids else "")
        system: Message = {"role": "system", "content": o.instructions or self.conversation.system_prompt}
        r = self._new_response(last_user, o)
        r.voice_state = self.voice_state
        song = None
        if history and history[-1]["role"] == "user":
            if o.history is None:  # the plan belongs to the conversation's last user turn, not to given items
                r.plan = self._plan
                und = self._und
                if und is not None and und.text == last_user and o.fixed is None:
                    r.care_lines = und.safety is not None and und.safety.action == "care"
                    r.search_candidate = und.search_candidate
                    r.story = und.story
                    if und.story:
                        r.max_tokens = max(r.max_tokens or 0, self.settings.dialogue.story_tokens)
                    if und.song is not None and und.song.song is not None:
                        song = und.song
            messages = [*self._with_note([system, *history[:-1]], lang), history[-1],
                        *self._plan_note(r.plan, self.persona if o.instructions is None else None)]
        else:
            messages = [system, *history]
        self._launch(r, self._run_response(r, messages, lang, fixed=o.fixed, song=song))
        self._open_gate(r, time.perf_counter(), {})
        return r.rid

    def _new_response(self, user_text: str, o: ResponseOptions | None = None) -> _Response:
        o = o or ResponseOptions()
        return _Response(f"resp_{next(_ids)}", user_text, speak=self.speak if o.speak is None else o.speak,
                         voice=o.voice, max_tokens=o.max_tokens, record=o.record, t_end=time.perf_counter())

    def set_persona(self, key: str | None, request: str = "") -> None:
        """Become another persona (None: the configured one): its prompt, voice and manner from the next reply on.

        The conversation so far stays; only the system prompt changes (the LLM's prefix cache is refilled for it
        on the LLM thread, from its saved state after the first time).
        """
        p = get_persona(key or self.settings.dialogue.persona)
        if p.key == self.persona.key:
            return
        self.persona = p
        default = p.key == self.settings.dialogue.persona and self.settings.dialogue.system_prompt
        prompt = self.settings.dialogue.system_prompt if default else p.system_prompt
        self.set_instructions(prompt or p.system_prompt)
        self.voice = replace(self.voice, voice=p.voice)
        if self._playout is not None and self.settings.duplex.acknowledge and p.acknowledges:
            self._tts_pool.submit(self._prepare_acks)  # "嗯，" in the new voice
        self._emit(PersonaChanged(p.key, p.name, p.voice, request))

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

    def clear_input(self) -> None:
        """Forget the utterance in progress (``input_audio_buffer.clear``)."""
        if self._utt is not None:
            self._reset_utterance()
        self._pre.clear()
        self._onset = 0

    async def greet(self, text: str | None = None) -> None:
        """Speak first, as a call is answered (the persona's greeting unless ``text``); it goes into the history.

        In duplex mode the greeting also gives the echo canceller the seconds of far-end speech it needs to learn
        the room before the user can barge in.
        """
        text = text or self.persona.greeting
        r = self._new_response("")
        r.voice_state = self.voice_state
        self._launch(r, self._run_response(r, [], self.persona.language, fixed=text))
        await self._interrupt()
        self._open_gate(r, r.t_end, {})

    async def push_audio(self, audio: np.ndarray, sample_rate: int = INPUT_RATE) -> None:
        """Streaming input: any frame size and rate, mono or (n, channels); consecutive frames are resampled as
        one stream (no click at frame edges), and a change of rate between frames is fine."""
        try:
            x = to_mono(np.asarray(audio))
            if len(x) > MAX_FRAME_SECONDS * sample_rate:
                raise AudioError(f"an audio frame of {len(x) / sample_rate:.1f} s is too large "
                                 f"(send ≤ {MAX_FRAME_SECONDS:.0f} s per frame)")
            if not np.all(np.isfinite(x)):
                raise AudioError("the audio frame holds NaN/inf samples")
            x = self._resampler(x, sample_rate)
        except AudioError as e:
            self._emit(ErrorEvent("invalid_audio", str(e)))
            return
        if self._vad is None:
            self._vad = SileroVad()
        raw = None
        if self._aec is not None:
            x, raw = self._aec.process(x)
            self._pending_raw = np.concatenate([self._pending_raw, raw])
        self._pending = np.concatenate([self._pending, x.astype(np.float32, copy=False)])
        n = len(self._pending) // WINDOW
        for i in range(n):
            w = self._pending[i * WINDOW : (i + 1) * WINDOW]
            is_echo = False
            if raw is not None and self._playout is not None and (
                    self._playout.audible
                    or time.perf_counter() - self._playout.last_release < self.settings.duplex.echo_tail_ms / 1000):
                is_echo = self._echo_verdict(w, self._pending_raw[i * WINDOW : (i + 1) * WINDOW])
            self._window(w, is_echo)
        self._pending = self._pending[n * WINDOW :]
        self._pending_raw = self._pending_raw[n * WINDOW :]

    @property
    def open_utterance_s(self) -> float | None:
        """Length of the user's utterance in progress (None when nobody is talking)."""
        return None if self._utt is None else (self._pos - self._utt_start) / INPUT_RATE

    async def transcribe(self, audio: np.ndarray, sample_rate: int = INPUT_RATE) -> Transcript | None:
        """Transcribe audio on the session's ASR thread without making it a turn (items given as audio)."""
        try:
            x = resample(to_mono(np.asarray(audio)), sample_rate, INPUT_RATE)
        except AudioError as e:
            self._emit(ErrorEvent("invalid_audio", str(e)))
            return None
        try:
            return await self._transcribe(x)
        except AsrFailed as e:
            self._emit(ErrorEvent("asr_failed", f"speech recognition failed: {e}"))
            return None

    async def end_audio(self) -> None:
        """The input stream ended: an utterance still open is answered now."""
        if self._utt is not None:
            await self._finish_commit(self._detach_turn())

    async def commit(self) -> None:
        """Push-to-talk: the user says the turn is over (``turn.mode = manual``, or any time)."""
        await self.end_audio()

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
            self._emit(ErrorEvent("invalid_audio", str(e), item_id))
            return
        if not await asyncio.get_running_loop().run_in_executor(self._asr_pool, has_speech, x):
            self._emit(ErrorEvent("no_speech", NO_SPEECH_MESSAGE, item_id))
            return
        try:
            t = await self._transcribe(x)
        except AsrFailed as e:
            await self._unheard(item_id, x, str(e))
            return
        if t is None:
            self._emit(ErrorEvent("no_speech", "no words were recognized in the audio", item_id))
            return
        await self._interrupt()
        self._emit(TranscriptFinal(t.text, t.language, t.audio_seconds, item_id, x))
        und = await self._understand(t.text, t.language, x)
        self._commit_text(t.text, t.language, t_end, {"asr": t.decode_ms}, item_id, und)

    # ------------------------------------------------------------------ control
    async def cancel(self) -> None:
        """Stop the current response (text and audio) at once; the history keeps what was heard."""
        r = self._response
        if r is not None and r.task is not None and not r.task.done():
            r.task.cancel()
            try:
                await r.task
            except asyncio.CancelledError:
                pass

    async def wait_idle(self) -> None:
        """Wait until every pending evaluation, turn and response has finished (one-shot CLI calls, tests)."""
        while True:
            pending = [t for t in self._tasks if not t.done()]
            r = self._response
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
        if self._eval is not None and self._eval.speculation is not None:
            await self._drop_speculation(self._eval)
        for t in [*self._tasks, *self._responses]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._responses, return_exceptions=True)
        for lane in (self._asr_pool, self._llm_pool, self._tts_pool, self._turn_pool, self._guard_pool):
            lane.shutdown(cancel_futures=True)  # queued work of a closed session: nobody waits for it
        if self._playout is not None:
            self._playout.close()
        self._queue.put_nowait(None)

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ the input loop (one 32 ms window)
    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        """A background step that crashed is reported, never silently lost (the session goes on)."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            e = task.exception()
            log.error("engine task failed", exc_info=e)
            self._emit(ErrorEvent("internal_error", f"{type(e).__name__}: {e}"))

    def _echo_verdict(self, clean: np.ndarray, raw: np.ndarray) -> bool:
        """Is this window (during our playback) our own voice rather than the user's?

        Three tests, any of which says echo: the canceller is still learning the room; it removed most of the
        window's energy; or the microphone is no louder, relative to what the speaker just played, than our echo
        usually is. The last one is what stops self-interruption when AEC3 leaks (it does, for a few hundred ms
        after playback restarts). It is a double-talk test in the spirit of Geigel's: the mic-to-reference level
        ratio of pure echo is learnt from playback windows nobody spoke in, and a user cutting in raises it.
        Normalising by the reference lets a user be heard in the quiet moments of the reply, not only over its
        loudest syllables.
        """
        assert self._aec is not None
        dcfg = self.settings.duplex
        raw_db = 10 * np.log10(float(np.mean(raw * raw)) + 1e-10)
        removed = raw_db - 10 * np.log10(float(np.mean(clean * clean)) + 1e-10)
        ratio = raw_db - self._aec.recent_ref_db
        if not self._aec.ready or removed > dcfg.echo_removed_db:
            verdict = True
        elif len(self._echo_levels) >= 30:
            verdict = ratio < float(np.percentile(self._echo_levels, 95)) + dcfg.echo_margin_db
        else:
            verdict = False
        if self._utt is None and self._onset == 0:
            self._echo_levels.append(ratio)  # nobody is talking: this is what our echo looks like here
        return verdict

    def _window(self, window: np.ndarray, is_echo: bool = False) -> None:
        """One 32 ms window; ``is_echo``: the echo canceller's verdict that it holds our own voice, not the user."""
        assert self._vad is not None
        p = self._vad(window)
        self._pos += WINDOW
        vcfg, dcfg, tcfg = self.settings.vad, self.settings.duplex, self.settings.turn
        # still "over us" for a moment after the last frame: the client's buffer and the room's reverberation
        over_us = self._playout is not None and (
            self._playout.audible or time.perf_counter() - self._playout.last_release < dcfg.echo_tail_ms / 1000)
        if self._utt is None:
            self._pre.append(window)
            thr, need = (dcfg.barge_in_threshold, dcfg.barge_in_windows) if over_us else (vcfg.threshold, 1)
            self._onset = self._onset + 1 if p >= thr and not (over_us and is_echo) else 0
            if self._onset >= need:
                self._open_utterance(over_us)
            return
        self._utt.append(window)
        if p >= vcfg.neg_threshold and not (self._silence and p < vcfg.threshold):
            if self._silence:
                self._resumed()
            if p >= vcfg.threshold:
                self._speech += WINDOW  # confident speech only: reverberation tails must not lengthen a "嗯"
            self._last_speech_end = self._pos
            if self._barge is not None and (_ms(self._speech) > dcfg.backchannel_max_ms
                                            or _ms(self._pos - self._barge[1]) > 1.5 * dcfg.backchannel_max_ms):
                # too long for a backchannel: a real interruption (the second test covers speech that the VAD
                # scores 0.35–0.5 throughout, which continues an utterance without counting as confident speech)
                self._confirm_barge_in()
            # Partial transcripts are a preview (captions, an early emotion reading, a warm LLM cache): when another
            # session is waiting for the recognizer, they are skipped so its committed turns go first.
            if (self.partials and not self._partial_busy and not self._asr_pool.contended()
                    and self._pos - self._partial_at >= tcfg.partial_every_ms * INPUT_RATE // 1000):
                self._partial_at = self._pos
                self._partial_busy = True
                self._spawn(self._partial(np.concatenate(self._utt), self._utt_id))
            return
        self._silence += WINDOW
        if self._speech < vcfg.min_speech_ms * INPUT_RATE // 1000:
            if _ms(self._silence) >= max(tcfg.pause_ms, dcfg.resume_after_ms):
                self._discard_utterance()  # a click or a cough: not an utterance
            return
        if self._eval is None and _ms(self._silence) >= tcfg.pause_ms:
            keep = self._silence - min(self._silence, vcfg.speech_pad_ms * INPUT_RATE // 1000)
            audio = np.concatenate(self._utt)
            ev = _Evaluation(self._last_speech_end, audio[: len(audio) - keep] if keep else audio)
            self._eval = ev
            ev.task = self._spawn(self._evaluate(ev))
        self._maybe_commit()

    def _open_utterance(self, over_us: bool) -> None:
        self._utt = list(self._pre)
        self._pre.clear()
        self._onset = 0
        self._utt_start = self._pos - WINDOW * len(self._utt)
        self._utt_id = new_item_id()
        self._speech = WINDOW
        self._silence = 0
        self._last_speech_end = self._pos
        self._partial_at = self._pos
        self._emit(SpeechStarted(_ms(self._utt_start), self._utt_id))
        # over us but nothing left to pause (the echo tail after a reply ended): an ordinary new turn
        if (over_us and self.settings.duplex.barge_in and self._playout is not None and self._playout.rid is not None
                and self._playout.audible):
            log.info("speech over playback at %.2f s (aec ready=%s)", self._pos / INPUT_RATE,
                     self._aec.ready if self._aec else None)
            heard = self._playout.pause()  # stop the sound first; judge afterwards
            self._barge = (self._playout.rid, self._utt_start)
            self._emit(PlaybackPaused(self._playout.rid, round(heard * 1000, 1)))

    def _resumed(self) -> None:
        """Speech after a pause: the turn was not over. Drop the verdict and any speculative reply."""
        self._silence = 0
        ev, self._eval = self._eval, None
        if ev is not None:
            self._spawn(self._drop_speculation(ev))

    def _discard_utterance(self) -> None:
        barge = self._barge
        self._emit(SpeechStopped(_ms(self._last_speech_end), self._utt_id))
        self._reset_utterance()
        if barge is not None:
            self._resume_playback(barge[0], "")

    def _reset_utterance(self) -> None:
        self._utt = None
        self._speech = self._silence = 0
        self._barge = None
        ev, self._eval = self._eval, None
        if ev is not None and ev.speculation is not None:
            self._spawn(self._drop_speculation(ev))

    def _resume_playback(self, rid: str, text: str) -> None:
        if self._playout is not None and self._playout.rid == rid:
            self._emit(Backchannel(text))
            self._playout.resume()
            self._emit(PlaybackResumed(rid))

    def _confirm_barge_in(self) -> None:
        """Speech over the reply is a real interruption: cancel it; the history keeps what was heard."""
        self._barge = None
        self._spawn(self.cancel())

    def _maybe_commit(self) -> None:
        ev = self._eval
        if ev is None or not ev.done or self._utt is None:
            return
        if self._barge is not None:
            text = ev.transcript.text if ev.transcript else ""
            if is_backchannel(text, _ms(self._speech), self.settings.duplex.backchannel_max_ms):
                rid = self._barge[0]
                self._reset_utterance()
                self._resume_playback(rid, text)
                return
            self._confirm_barge_in()
        if self.settings.turn.mode == "manual":
            return
        if ev.required_ms is not None and _ms(self._pos - ev.end_sample) >= ev.required_ms:
            self._spawn(self._finish_commit(self._detach_turn()))

    # ------------------------------------------------------------------ workers
    async def _run(self, pool: Executor, fn: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def _transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript | None:
        """The words in ``audio`` (None: no words). A recognizer that raises is tried once more (a transient
        failure, a worker restarted); twice is :class:`AsrFailed` — the caller keeps the audio."""
        if self.stack.asr is None:
            self._emit(ErrorEvent("no_asr", "this session was started without speech recognition"))
            return None
        health = self.stack.backend("asr")
        last: Exception | None = None
        for _ in range(2):
            try:
                t = await self._run(self._asr_pool, self.stack.asr.transcribe, audio, language)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a crashed recognizer must not end the session
                log.warning("speech recognition failed: %s", e)
                health.failed(e)
                last = e
                continue
            health.succeeded()
            return t if t.text.strip() else None
        raise AsrFailed(f"{type(last).__name__}: {last}")

    async def _unheard(self, item_id: str, audio: np.ndarray, reason: str) -> None:
        """The recognizer failed on a turn: keep its audio (the server stores it), say so, and go on."""
        self._emit(UnheardTurn(item_id, audio, len(audio) / INPUT_RATE, reason))
        self._emit(ErrorEvent("asr_failed", f"speech recognition failed ({reason}); the audio of the turn was kept",
                              item_id))
        lang = self.conversation_language()
        await self.respond(ResponseOptions(fixed=notice("asr", lang), record=False))

    def conversation_language(self) -> str:
        """The language of the user's last turn (the persona's before anyone spoke)."""
        for t in reversed(self.conversation.turns):
            if t["role"] == "user":
                return text_language(t["content"]) or self.persona.language
        return self.persona.language

    def _usage(self, messages: list[Message], output: str) -> dict[str, int]:
        llm = self.stack.llm
        if llm is None:
            return {}
        try:
            n_in = sum(llm.count_tokens(m["content"]) + 4 for m in messages)
            n_out = llm.count_tokens(output) if output else 0
        except Exception:  # a remote backend without a tokenizer
            return {}
        return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}

    def _history(self) -> list[Message]:
        llm = self.stack.llm
        assert llm is not None
        return self.conversation.messages(llm.count_tokens, self.settings.dialogue.history_tokens)

    def _with_note(self, history: list[Message], lang: str) -> list[Message]:
        # The language note goes *before* the user's words: the end-of-turn scorer then pre-fills it along with
        # the partial transcript, and the reply's prompt only adds the few tokens after the user's text.
        return [*history, {"role": "system", "content": _LANG_NOTE.get(lang, _LANG_NOTE["en"])}]

    @staticmethod
    def _plan_note(plan: ReplyPlan, persona: Persona | None = None) -> list[Message]:
        """The policy's note (how the user feels, a voice request) and, in a role, the role's reminder, placed
        *after* the user's words: their KV stays cached from the end-of-turn and emotion scoring, and only the
        note is read anew. It is there only when there is something to say."""
        parts = [x for x in (persona.reminder if persona is not None else None, plan.note) if x]
        return [{"role": "system", "content": "\n".join(parts)}] if parts else []

    async def _text_emotion(self, text: str, lang: str | None) -> dict[str, float] | None:
        """P over LABELS of the feeling in the words, read by the LLM (None: no LLM, no logprobs, or it failed)."""
        llm = self.stack.llm
        if llm is None or not text.strip():
            return None
        lang = lang or text_language(text) or self.conversation_language()
        if self._llm_pool.busy_with_others():
            return None  # under load the feeling is read from the voice alone, not after another caller's reply
        try:
            return await self._run(self._llm_pool, read_words, llm, self._with_note(self._history(), lang), text)
        except LlmError as e:
            log.warning("emotion reading of the words failed: %s", e)
            return None

    async def _understand(self, text: str, language: str | None, audio: np.ndarray | None,
                          early: "tuple[str, asyncio.Future[dict[str, float] | None]] | None" = None,
                          ) -> _Understanding:
        """The turn's feeling and requests (``_feel``), then what the safety policy and the search decision make
        of it. The guard runs on its own thread and context beside the emotion reading."""
        guard = self.stack.guard if self.settings.safety.enabled else None
        job = None
        if guard is not None and text.strip():
            job = asyncio.ensure_future(self._run(self._guard_pool, guard.check_input, text, self._prev_user))
        u = await self._feel(text, language, audio, early)
        t0 = time.perf_counter()
        if (u.persona or self.persona).coach and audio is not None and text.strip() and text_language(text) == "en":
            u.pronunciation = await self._run(self._turn_pool, self._assess, audio, text)
        verdict = None
        if job is not None:
            try:
                verdict = await job
            except LlmError as e:  # the guard failed: the turn goes on, the output check still applies
                log.warning("safety check failed: %s", e)
        lang = language or text_language(text) or self.conversation_language()
        u = self._with_safety(u, verdict, lang)
        # characters in a role do not look things up (a relative's "一个月挣多少钱" is not a price question)
        in_role = (u.persona or self.persona).key != self.settings.dialogue.persona
        if self.settings.search.enabled and not in_role and (u.safety is None or u.safety.action == "allow"):
            # the LLM's decision itself is taken by the response, on the LLM thread: here it would queue behind a
            # reply still being generated (the user talking over it) and hold back the turn's transcript
            u.search_candidate = bool(FRESH_CUE.search(text)) and self.stack.llm is not None
        u.ms += (time.perf_counter() - t0) * 1000
        return u

    def _assess(self, audio: np.ndarray, heard: str) -> "Report | None":
        """Turn thread: the learner's audio against the sentence they were asked to say (the last quoted English
        sentence of the tutor's previous turn, when what was heard is close to it), else against what was heard
        (the coach then finds sounds, not words: Whisper tends to hear the intended word)."""
        expected = heard
        last = next((m["content"] for m in reversed(self.conversation.messages(lambda t: 0, 10**9))
                     if m["role"] == "assistant"), "")
        quotes = [m.group(1) or m.group(2) for m in _QUOTED.finditer(last)]
        if quotes:
            said = set(words_of(heard))
            best = max(quotes, key=lambda q: len(said & set(words_of(q))) / max(len(set(words_of(q))), 1))
            if len(said & set(words_of(best))) >= 0.5 * len(set(words_of(best))):
                expected = best
        try:
            return self.stack.coach.assess(audio, INPUT_RATE, expected, heard)
        except (ValueError, RuntimeError) as e:  # a word outside the dictionary, a decoder failure
            log.info("pronunciation not assessed: %s", e)
            return None

    def _with_safety(self, u: _Understanding, v: Verdict | None, lang: str) -> _Understanding:
        """Refusal or care replaces whatever else the turn asked for (a role, a song, a story)."""
        cfg = self.settings.safety
        r = u.reading
        if (v is not None and v.action == "allow" and r is not None and r.label in ("sad", "anxious")
                and r.confidence >= cfg.voice_distress and v.scores.get("self_harm", 0.0) >= 0.1):
            # borderline words said in a distressed voice: care (the voice alone never is)
            v = Verdict("care", "voice_distress", r.confidence, v.scores, v.text)
        u.safety = v
        companion = get_persona(self.settings.dialogue.persona)
        if v is not None and v.action in ("refuse", "care"):
            u.role, u.song, u.story = None, None, False
            if v.action == "care":
                u.persona = companion  # no role plays on over someone at risk
                u.plan = replace(u.plan, style="tender", note=care_note(cfg, lang, first=not self.care), remap={},
                                 reason="care")
            else:
                u.persona = self.persona
                u.plan = replace(u.plan, style=u.plan.style or "calm", note=refusal_note(v.category, lang),
                                 reason=f"refusal ({v.category})")
        if u.pronunciation is not None and (v is None or v.action == "allow"):
            rep = u.pronunciation
            note = (f"Pronunciation check of what the learner just said (expected: \"{rep.expected}\"): overall "
                    f"{rep.score}/100; " + ", ".join(f"{w.word} {w.score}" for w in rep.words if w.score < 100)
                    + (f". Problems: {rep.feedback()} Tell the learner this kindly in one or two sentences, naming the "
                       "sounds; the correct sentence will be said after your words." if any(w.flagged for w in rep.words)
                       else ". Every sound was clear: praise them briefly and go on."))
            u.plan = replace(u.plan, note="\n".join(x for x in (u.plan.note, note) if x))
        if self.care and not (v is not None and v.action in ("refuse", "care")):
            u.role = None
            u.persona = companion
            u.plan = replace(u.plan, note="\n".join(x for x in (u.plan.note, care_note(cfg, lang, first=False)) if x))
        return u

    async def _feel(self, text: str, language: str | None, audio: np.ndarray | None,
                    early: "tuple[str, asyncio.Future[dict[str, float] | None]] | None" = None,
                    ) -> _Understanding:
        """The feeling behind a user turn (voice + words), a voice request in it, and the reply plan.

        ``early``: the words' feeling read (or still being read) from the newest partial transcript while the
        user talked. It is used as the words' reading: asking again on the final transcript would put ~0.45 s
        on the LLM thread between the end of speech and the reply (measured: first audio 0.65 → 1.1–1.5 s).
        A partial lags the speech by about a second, and a feeling is rarely only in the last words.
        """
        cfg = self.settings.emotion
        t0 = time.perf_counter()
        lang = language or text_language(text) or self.conversation_language()
        requests = self._requests(text, lang)
        if not cfg.enabled:
            return self._with_requests(_Understanding(None, None, self.voice_state, ReplyPlan(), text), requests, lang)
        feats_job = None
        self.baseline.use_priors(lang)
        if audio is not None and len(audio) >= INPUT_RATE // 5:
            feats_job = asyncio.ensure_future(self._run(self._turn_pool, prosody.extract, audio))
        probs = None
        if cfg.text:
            if early is not None and not early[1].cancelled():
                probs = await early[1]
            else:
                probs = await self._text_emotion(text, lang)
        feats = cues = None
        if feats_job is not None:
            try:
                feats = await feats_job
                cues = prosody.cues(feats, self.baseline)
            except Exception as e:  # a pitch-tracker failure costs the voice side, not the turn
                log.warning("prosody analysis failed: %s", e)
        reading = fuse(probs, cues, features=feats) if (probs or cues) else None
        last = self.emotions.last
        if reading is not None and last is not None:
            reading.previous = last.label
        change = parse_voice_instruction(text) if cfg.voice_requests else None
        voice = change.apply(self.voice_state) if change else self.voice_state
        plan = plan_reply(reading if cfg.policy else None, voice, change, last if cfg.policy else None, lang)
        u = _Understanding(reading, change, voice, plan, text, (time.perf_counter() - t0) * 1000)
        return self._with_requests(u, requests, lang)

    def _requests(self, text: str, lang: str) -> tuple[RoleRequest | None, SongRequest | None, bool]:
        """What the turn asks the assistant to *do*: take or leave a role, sing, tell a story."""
        d = self.settings.dialogue
        role = parse_role_request(text) if d.roles else None
        song = None
        if d.singing:
            song = parse_song_request(text, self.stack.songbook)
            if song is not None and song.song is None and song.title is None:
                # "唱首歌" (no title) or "唱一首关于春天的歌" (words, no melody): a melody from the book not sung yet
                song = SongRequest(pick_song(self.stack.songbook, self._sung), None, song.topic)
        story = song is None and bool(_STORY.search(text))
        return role, song, story

    def _with_requests(self, u: _Understanding, requests: tuple, lang: str) -> _Understanding:
        role, song, story = requests
        u.role, u.song, u.story = role, song, story
        u.persona = self.persona
        if role is not None:
            u.persona = get_persona(role.enter) if role.enter else get_persona(self.settings.dialogue.persona)
        notes = [u.plan.note] if u.plan.note else []
        if song is not None and song.song is None:
            notes.append(unknown_song_note(song.title, self.stack.songbook, lang))
        if story:
            notes.append(_STORY_NOTE.get(lang, _STORY_NOTE["en"]))
        if len(notes) > (1 if u.plan.note else 0):
            u.plan = replace(u.plan, note="\n".join(notes))
        return u

    def _accept(self, u: _Understanding | None, item_id: str) -> None:
        """The turn is taken: its feeling joins the session's record, a voice request takes effect."""
        if u is None:
            return
        self._prev_user = u.text
        if u.pronunciation is not None:
            p = u.pronunciation
            self._emit(PronunciationReport(item_id, p.expected, p.score, p.feedback(), p.to_dict()["words"]))
        v = u.safety
        if v is not None and v.action != "allow":
            ev = SafetyVerdict(item_id, "input", v.category, v.action, round(v.confidence, 3), u.text)
            self.risk.append(ev)
            self._emit(ev)
            if v.action == "care" and not self.care:
                self.care = True
                lines = [h.model_dump() for h in care_hotlines(self.settings.safety, text_language(u.text) or "zh")]
                self._emit(CareChanged(True, v.category, lines))
        r = u.reading
        if r is not None:
            if r.features is not None:
                self.baseline.update(r.features, r.whisper)
            self.emotions.add(r)
            self._emit(Paralinguistics(item_id, r.label, round(r.confidence, 3), r.arousal, r.whisper, r.pace,
                                       r.summary()))
        if u.voice != self.voice_state:
            self.voice_state = u.voice
            self._emit(VoiceChanged(asdict(u.voice), u.text))
        if u.persona is not None and u.persona.key != self.persona.key:
            self.set_persona(u.persona.key, u.text)
        if u.song is not None and u.song.song is not None:
            self._sung.append(u.song.song.key)
        self._plan = u.plan
        self._und = u

    def _clause_voice(self, r: _Response, style: str | None, voice: str | None = None) -> VoiceSettings:
        """``voice``: a story speaker's voice instead of the response's own."""
        base = self._base_voice(r)
        s = r.voice_state.settings(voice or base.voice, style)
        return replace(s, speed=s.speed * base.speed) if base.speed != 1.0 else s

    def _base_voice(self, r: _Response) -> VoiceSettings:
        """The response's own voice: per-response override, else the session's (a client may pick one), else —
        for the reply that enters or leaves a role, before the session switched — the new persona's."""
        if r.voice is not None:
            return r.voice
        if r.persona is not None and r.persona.key != self.persona.key:
            return VoiceSettings(voice=r.persona.voice)
        return self.voice

    def _speaker_voice(self, r: _Response, name: str) -> tuple[str | None, str | None]:
        """(voice, default style) of a story line's speaker: the narrator is the persona itself; characters get
        voices of their own (a persona's if the character is one: 孙悟空 → wukong), none shared with another."""
        persona = r.persona or self.persona
        if NARRATOR.match(name):
            return persona.voice, "story"
        if name not in r.cast:
            female = is_female(name)
            hint = None if female is None else ({name} if female else set())
            r.cast[name] = cast([name], exclude=(persona.voice or "", *r.cast.values()), female=hint)[name]
        known = next((p for p in PERSONAS.values() if p.key != "companion" and name in p.names()), None)
        return r.cast[name], known.default_emotion if known else None

    async def _score_text(self, text: str, lang: str) -> float | None:
        llm = self.stack.llm
        if llm is None or not text.strip():
            return None
        if not llm.caps.prompt_scores:
            return None  # a chat API cannot score an unfinished turn: the end of turn rests on the audio
        if self._llm_pool.busy_with_others():
            # another session's reply holds the LLM for seconds: decide the end of the turn on the audio alone
            # rather than wait (with several callers, waiting here was most of their latency)
            return None
        try:
            return await self._run(self._llm_pool, llm.turn_end_probability, self._with_note(self._history(), lang), text)
        except LlmError:
            return None

    async def _partial(self, audio: np.ndarray, item_id: str) -> None:
        try:
            try:
                t = await self._transcribe(audio, None)
            except AsrFailed:
                return  # a partial is only a preview; the end of the turn tries again and reports
            if t is None or self._utt is None or self._utt_id != item_id:
                return
            self._emit(TranscriptPartial(t.text, item_id))
            if (self._response is None or self._response.task is None or self._response.task.done()) \
                    and not self._llm_pool.contended():  # optional work: not while another session waits
                await self._score_text(t.text, t.language)  # pre-fills the LLM cache with the user's words
                # The LLM is idle while the user talks: read the feeling in the words now, so the end of the turn
                # does not wait for it (reused when the final transcript says nearly the same).
                ecfg = self.settings.emotion
                pe = self._partial_emotion
                # Only while the user is audibly still talking, and again only once the words have grown by half:
                # a reading still running when the turn ends holds the end-of-turn score and the reply up (~0.45 s
                # on the one LLM thread); geometric spacing makes that ever less likely as an utterance goes on.
                if (ecfg.enabled and ecfg.text and self.auto_respond and self._utt is not None
                        and self._utt_id == item_id and len(t.text) >= 4 and self._eval is None
                        and _ms(self._silence) < 200
                        and not (pe is not None and pe[0] == item_id and len(t.text) < READ_AGAIN_GROWTH * len(pe[1]))):
                    job = asyncio.ensure_future(self._text_emotion(t.text, t.language))
                    self._partial_emotion = (item_id, t.text, job)
                    await job
        finally:
            self._partial_busy = False

    async def _evaluate(self, ev: _Evaluation) -> None:
        """Transcribe the utterance up to the pause, score it, maybe start the reply speculatively."""
        tcfg = self.settings.turn
        t0 = time.perf_counter()
        pe = self._partial_emotion
        if pe is not None and pe[0] == self._utt_id:
            ev.early_emotion = (pe[1], pe[2])
        turn_model = self.stack.turn
        audio_job = (asyncio.ensure_future(self._run(self._turn_pool, turn_model.probability, ev.audio))
                     if turn_model is not None and tcfg.mode == "semantic_vad" else None)
        # Speech over our reply is judged in the conversation's language: Whisper's language ID on a lone
        # "对" picks English about as often as not ("Twainer").
        try:
            ev.transcript = await self._transcribe(ev.audio, self.conversation_language() if self._barge else None)
        except AsrFailed:
            ev.asr_failed = True  # the commit tries once more, then keeps the audio and says so
        p_audio = await audio_job if audio_job is not None else None
        p_text = None
        # An interruption (speech over our reply that is not a backchannel) is a turn like any other: without the
        # LLM's completeness score, smart-turn alone ends it at its first mid-sentence pause.
        interrupting = self._barge is not None and ev.transcript is not None and not is_backchannel(
            ev.transcript.text, _ms(self._speech), self.settings.duplex.backchannel_max_ms)
        if ev.transcript is not None and tcfg.mode == "semantic_vad" and (self._barge is None or interrupting):
            p_text = text_score(await self._score_text(ev.transcript.text, ev.transcript.language),
                                ev.transcript.text)
        ev.score = TurnScore(p_audio, p_text, tcfg.text_weight)
        ev.required_ms = required_silence_ms(tcfg, ev.score) if tcfg.mode != "manual" else None
        ev.done = True
        ev.eval_ms = (time.perf_counter() - t0) * 1000
        if self._eval is not ev:
            return  # the user went on talking meanwhile, or the turn was already taken
        if ev.transcript is not None and (self._barge is None or interrupting):
            # one reading per utterance, shared by the speculative reply and the commit (whichever comes first)
            ev.und_task = asyncio.ensure_future(self._understand(ev.transcript.text, ev.transcript.language,
                                                                 ev.audio, ev.early_emotion))
        if ev.transcript is None and not ev.asr_failed:
            if self._barge is not None or self._speech < 0.5 * INPUT_RATE:
                self._discard_utterance()  # noise, a cough, breath: no words
                return
        elif (self.stack.llm is not None and self._barge is None and tcfg.mode != "manual" and self.auto_respond
              and ev.score.p >= tcfg.speculate_above):
            assert ev.und_task is not None
            und = await ev.und_task
            if self._eval is not ev:
                return  # taken (the commit used the same reading) or abandoned meanwhile
            ev.understanding = und
            ev.speculation = self._start_response(ev.transcript.text, ev.transcript.language, {},
                                                  und=ev.understanding)
        self._maybe_commit()

    async def _drop_speculation(self, ev: _Evaluation) -> None:
        r, ev.speculation = ev.speculation, None
        if r is not None and r.task is not None and not r.gate.is_set():
            r.task.cancel()
            await asyncio.gather(r.task, return_exceptions=True)

    def _detach_turn(self) -> tuple:
        """Close the open utterance synchronously (so no later window can commit it twice)."""
        assert self._utt is not None
        end_sample = self._last_speech_end
        t_end = time.perf_counter() - (self._pos - end_sample) / INPUT_RATE  # end of speech, wall clock
        audio = np.concatenate(self._utt)
        pad = self.settings.vad.speech_pad_ms * INPUT_RATE // 1000
        audio = audio[: max(0, len(audio) - max(0, self._silence - pad))]
        snap = (end_sample, t_end, audio, self._eval, self._barge, self._utt_id)
        self._utt = None
        self._eval = None
        self._barge = None
        self._speech = self._silence = 0
        self._emit(SpeechStopped(_ms(end_sample), self._utt_id))
        return snap

    async def _finish_commit(self, snap: tuple) -> None:
        """Take the turn: the utterance becomes the user's message and the (speculative) reply is released."""
        end_sample, t_end, audio, ev, barge, item_id = snap
        if ev is not None and ev.end_sample == end_sample and not ev.done and ev.task is not None:
            await asyncio.gather(ev.task, return_exceptions=True)
        if ev is None or not ev.done or ev.end_sample != end_sample or ev.asr_failed:
            if ev is not None:
                await self._drop_speculation(ev)
            try:
                t = await self._transcribe(audio, None)
            except AsrFailed as e:
                if barge is not None:
                    await self.cancel()
                await self._unheard(item_id, audio, str(e))
                return
            ev = _Evaluation(end_sample, audio, t)
        if ev.transcript is None:
            self._emit(ErrorEvent("no_speech", "no words were recognized in the audio", item_id))
            if barge is not None:
                self._resume_playback(barge[0], "")
            return
        if barge is not None:
            await self.cancel()
        t = ev.transcript
        self._emit(TurnDetected(ev.score.p_audio if ev.score else None, ev.score.p_text if ev.score else None,
                                round((time.perf_counter() - t_end) * 1000, 1)))
        self._emit(TranscriptFinal(t.text, t.language, t.audio_seconds, item_id, audio))
        timings = {"asr": t.decode_ms, "turn_wait": (time.perf_counter() - t_end) * 1000}
        if ev.eval_ms is not None:
            timings["turn_eval"] = ev.eval_ms
        spec = ev.speculation
        if spec is not None and spec.task is not None and not spec.task.done():
            await self._interrupt(keep=spec)
            self.conversation.add_user(t.text, item_id)
            self._accept(ev.understanding, item_id)
            self._open_gate(spec, t_end, timings)
        else:
            if ev.understanding is not None:
                und = ev.understanding
            elif ev.und_task is not None:
                und = await ev.und_task
            else:
                und = await self._understand(t.text, t.language, audio, ev.early_emotion)
            await self._interrupt()
            self._commit_text(t.text, t.language, t_end, timings, item_id, und)

    async def _interrupt(self, keep: _Response | None = None) -> None:
        """A new user turn supersedes an unfinished reply."""
        if self._response is not None and self._response is not keep:
            await self.cancel()

    def _commit_text(self, text: str, language: str | None, t_end: float, timings: dict[str, float],
                     item_id: str, und: _Understanding | None = None) -> None:
        self.conversation.add_user(text, item_id)
        self._accept(und, item_id)
        if not self.auto_respond:
            return
        if self.stack.llm is None:
            self._emit(ErrorEvent("no_llm", "this session was started without a language model"))
            return
        r = self._start_response(text, language, timings, committed=True, und=und)
        self._open_gate(r, t_end, timings)

    def _open_gate(self, r: _Response, t_end: float, timings: dict[str, float]) -> None:
        r.t_end = t_end
        r.timings.update(timings)
        self._response = r
        self._emit(ResponseStarted(r.rid, r.user_text, r.item_id, r.speak))
        r.gate.set()
        for e in r.held:
            self._emit(e)
        r.held.clear()

    # ------------------------------------------------------------------ the response task tree
    def _start_response(self, text: str, language: str | None, timings: dict[str, float], *,
                        committed: bool = False, und: _Understanding | None = None) -> _Response:
        r = self._new_response(text)
        r.timings.update(timings)
        r.persona = (und.persona if und is not None else None) or self.persona
        if und is not None:
            r.plan, r.voice_state = und.plan, und.voice
            r.timings["understand"] = und.ms
            r.story = und.story
            if und.story:
                r.max_tokens = max(r.max_tokens or 0, self.settings.dialogue.story_tokens)
            r.care_lines = und.safety is not None and und.safety.action == "care"
            r.search_candidate = und.search_candidate
            p = und.pronunciation
            if p is not None and any(w.flagged for w in p.words):
                r.model_answer = p.expected
        else:
            r.voice_state = self.voice_state
        lang = language or text_language(text) or r.persona.language
        history = self._history()
        if r.persona.key != self.persona.key:  # entering or leaving a role with this very turn
            history[0] = {"role": "system", "content": r.persona.system_prompt}
        if committed:
            history = history[:-1]  # the user's message was just added; it goes after the note
        messages = [*self._with_note(history, lang), {"role": "user", "content": text},
                    *self._plan_note(r.plan, r.persona)]
        song = und.song if und is not None and und.song is not None and und.song.song is not None else None
        self._launch(r, self._run_response(r, messages, lang, song=song))
        return r

    def _launch(self, r: _Response, coro) -> None:
        """Every response task is tracked, so ``close()`` can cancel speculative ones too."""
        r.task = asyncio.create_task(coro)
        self._responses.add(r.task)
        r.task.add_done_callback(self._responses.discard)

    async def _say_notice(self, r: _Response, kind: str, lang: str, playout: Playout | None, *,
                          spoken: bool = True) -> None:
        """A failed response ends with a sentence saying so: spoken after what was already voiced (when the voice
        works), and as text for text clients."""
        await r.gate.wait()
        text = notice(kind, lang)
        r.emit(self, ReplyTextDelta(r.rid, text))
        tts = self.stack.tts
        if not (r.speak and spoken and tts is not None and self.stack.backend("tts").available()):
            return
        try:
            audio = await self._run(self._tts_pool, tts.synthesize, text, self._base_voice(r), lang)
        except Exception as e:
            self.stack.backend("tts").failed(e)
            return
        if playout is not None and playout.rid == r.rid:
            playout.enqueue(text, audio)
            playout.finish()
            await playout.drained()
        elif playout is None:
            self._emit(AudioChunk(r.rid, audio, tts.sample_rate, text))

    async def _run_response(self, r: _Response, messages: list[Message], user_lang: str,
                            fixed: str | None = None, song: SongRequest | None = None) -> None:
        """``fixed``: speak this text instead of asking the LLM (greetings). ``song``: sing it (new words to
        its melody first when it has a topic), after a short spoken introduction."""
        llm = self.stack.llm
        if song is not None:
            fixed = _song_intro(song, user_lang)
        assert llm is not None or fixed is not None
        cfg = self.settings
        loop = asyncio.get_running_loop()
        deltas = ReplyDeltas(loop)
        clauses: asyncio.Queue[_Clause | None] = asyncio.Queue()
        persona = r.persona or self.persona
        stop = threading.Event()
        # On 2 cores llama.cpp's spinning threads and Kokoro's slow each other down ~5x; speech is far slower than
        # generation, so the LLM simply waits while a clause is being synthesized.
        tts_idle = threading.Event()
        tts_idle.set()
        generated: list[str] = []
        spoken: list[str] = []
        reply_lang: list[str] = []
        status = "completed"
        timings = r.timings
        t_llm = time.perf_counter()
        playout = self._playout if r.speak else None
        acked = [False]
        # every clause the LLM writes is checked before it is voiced (fixed texts and sung words are ours)
        guard = self.stack.guard if (cfg.safety.enabled and cfg.safety.check_output and fixed is None) else None
        blocked: list[str] = []
        passed: list[str] = []

        def lookup() -> tuple[str, str]:
            """LLM thread, before generating: a filler is spoken while the provider is asked; the results (or
            why there are none) become a note after the user's words."""
            assert r.search is not None
            deltas.put_threadsafe(_FILLER.get(user_lang, _FILLER["en"]))
            provider = self.stack.search
            results, failure, error = [], None, None
            t = time.perf_counter()
            if provider is None:
                failure = "off"
            else:
                try:
                    results = provider.search(r.search.query, cfg.search.results)
                except SearchError as e:
                    failure, error = "error", str(e)
                    log.warning("search failed: %s", e)
            timings["search"] = (time.perf_counter() - t) * 1000
            loop.call_soon_threadsafe(r.emit, self, SearchDone(r.rid, r.search.query, provider.name if provider is not None else "none",
                                                               [x.to_dict() for x in results], error))
            return results_note(r.search.query, results, user_lang, failure), source_lead(results, user_lang)

        def produce() -> None:
            """LLM thread: push deltas to the loop until done or stopped."""
            deltas.put_threadsafe(_STARTED)  # the stall clock starts now, not while queued
            if stop.is_set() or fixed is not None:
                if fixed is not None:
                    deltas.put_threadsafe(fixed)
                deltas.put_threadsafe(_END)
                return
            assert llm is not None
            msgs, lead = messages, ""
            if r.search is None and r.search_candidate and llm.caps.json_schema:
                last = max(i for i, m in enumerate(messages) if m["role"] == "user")
                try:
                    d = route(llm, messages[:last], messages[last]["content"], cfg.search.threshold)
                except LlmError as e:
                    log.warning("search decision failed: %s", e)
                    d = None
                timings["search_decision"] = (time.perf_counter() - t_llm) * 1000
                if d is not None and d.search:
                    r.search = d
            if r.search is not None and not stop.is_set():
                note, lead = lookup()
                msgs = [*messages, {"role": "system", "content": note}]
                if stop.is_set():
                    deltas.put_threadsafe(_END)
                    return
                if lead:
                    deltas.put_threadsafe(lead)
            gen = llm.stream(msgs, max_tokens=r.max_tokens or cfg.llm.max_tokens, temperature=cfg.llm.temperature,
                             stop=stop, **({"prefix": lead} if lead else {}))
            try:
                for d in gen:
                    if stop.is_set():
                        break
                    deltas.put_threadsafe(d)
                    # pause while a clause is synthesized, unless another session waits for the LLM thread:
                    # then finish quickly and hand it over
                    while not tts_idle.wait(0.05) and not self._llm_pool.contended():
                        pass
            except Exception as e:  # LlmError or a backend bug: reported as an event
                deltas.put_threadsafe(e)
            finally:
                gen.close()
                deltas.put_threadsafe(_END)

        async def text_stage() -> None:
            """Tokens → style (and story speaker) tags parsed out → clauses, each with its style and voice."""
            splitter = ClauseSplitter()
            tags = StyleTags(speakers=r.story)
            script = ScriptLines() if r.story else None  # "小猫：我饿了" lines, as some models write stories
            # a tag, else the policy's style, else a lasting style the user asked for, else the persona's manner
            base_style = r.plan.style or (None if r.voice_state.style else persona.default_emotion)
            style = base_style
            voice: str | None = None
            speaker: str | None = None

            async def put(cs: list[str]) -> None:
                for c in cs:
                    if blocked:
                        return
                    if guard is not None:
                        v = await loop.run_in_executor(self._guard_pool, guard.check_output, c, r.care_lines or self.care)
                        if v.action != "allow":
                            # not a word of it is spoken or kept; the generation stops and the reply ends here
                            blocked.append(c)
                            stop.set()
                            ev = SafetyVerdict(r.item_id, "output", v.category, "blocked", round(v.confidence, 3), c)
                            self.risk.append(ev)
                            r.emit(self, ev)
                            c = _BLOCKED.get(user_lang, _BLOCKED["en"])
                            generated[:] = [*passed, c]
                        else:
                            passed.append(c)
                        r.emit(self, ReplyTextDelta(r.rid, c))
                    await clauses.put(_Clause(c, style, voice, speaker))

            async def text(piece: str) -> None:
                generated.append(piece)
                if guard is None:
                    r.emit(self, ReplyTextDelta(r.rid, piece))
                await put(splitter.feed(piece))

            async def sing(req: SongRequest) -> None:
                """The song's phrases as clauses whose audio the singer renders (new words first, if asked for)."""
                assert req.song is not None
                tune = req.song
                if req.topic:
                    try:
                        assert llm is not None
                        lines = await loop.run_in_executor(self._llm_pool, write_lyrics, llm, tune, req.topic,
                                                           max(cfg.llm.temperature, 0.7))
                        tune = tune.with_lyrics(lines)
                    except (LlmError, ValueError) as e:
                        log.warning("new lyrics failed: %s", e)
                        sorry = {"zh": "抱歉，这次的新歌词没填好，我先唱原来的版本吧。",
                                 "en": "Sorry, the new words did not fit the tune; here is the original."}
                        await text(sorry.get(user_lang, sorry["en"]))
                        await put(splitter.flush())
                phrases = None
                if r.speak:
                    phrases = self.stack.singer.phrases(tune, self._base_voice(r).voice or persona.voice,
                                                        tempo=r.voice_state.speed)
                for i, phrase in enumerate(tune.phrases):
                    words = phrase.text + ("。" if i == len(tune.phrases) - 1 else "，")
                    generated.append(words)
                    r.emit(self, ReplyTextDelta(r.rid, words))
                    await clauses.put(_Clause(words, None, None, None, _next_phrase(phrases) if phrases else None,
                                              sung=True))

            started = got_first = False
            while True:
                # a backend that stops answering (a remote endpoint that hangs, a wedged worker) is a failure the
                # user is told about, not an endless silence
                wait = (cfg.llm.stall_timeout_s if got_first else cfg.llm.first_token_timeout_s) if started else None
                d = await deltas.get(wait)
                if d is _STARTED:
                    started = True
                    continue
                if d is _END:
                    break
                if isinstance(d, Exception):
                    raise d
                assert isinstance(d, str)
                got_first = True
                if blocked:
                    continue
                if "llm_first_token" not in timings:
                    timings["llm_first_token"] = (time.perf_counter() - t_llm) * 1000
                for piece, tag in _expand(tags.feed(d), script):
                    if tag is None:
                        await text(piece)
                        continue
                    await put(splitter.flush())  # a new style (or speaker) starts a new clause
                    if tag.startswith("@"):
                        speaker = tag[1:]
                        voice, style = self._speaker_voice(r, speaker)
                        style = style or base_style
                        continue
                    style = r.plan.remap.get(tag, tag)
                    if r.voice_state.whisper or r.plan.style == "whisper":
                        style = "whisper"  # asked for, or answering a whisper: no tag shouts over it
            rest = tags.flush() + (script.flush() if script is not None else "")
            if rest and not blocked:
                await text(rest)
            await put(splitter.flush())
            if r.model_answer and not blocked:
                await put(splitter.flush())
                await text(" Listen, and say it with me: " + r.model_answer.rstrip(".!?") + ".")
                await put(splitter.flush())
            if r.care_lines and not blocked and not names_a_line("".join(generated), cfg.safety, user_lang):
                # the one fixed sentence of a care reply: the deployment's help lines, when the LLM named none
                await text(("" if user_lang == "zh" else " ") + lines_sentence(cfg.safety, user_lang))
                await put(splitter.flush())
            if song is not None and song.song is not None:
                await sing(song)
            await clauses.put(None)

        async def acknowledge() -> None:
            """Turn taken but nothing to say yet: a short "嗯，" now, instead of silence."""
            await r.gate.wait()
            if playout is None or spoken or acked[0]:
                return
            lang = reply_lang[0] if reply_lang else user_lang
            ack = self._ack_audio.get(lang)
            if ack is not None and len(r.user_text) >= 6:
                acked[0] = True
                playout.enqueue(_ACK[lang], ack, is_ack=True)

        tts_health = self.stack.backend("tts")
        degraded: list[str] = []  # why speech failed in this response (the rest of it is text)
        if r.speak and tts_health.state == "closed":
            self.stack.notices.prepare(self._base_voice(r), user_lang)  # no-op once rendered in this voice

        async def degrade(clause: str, reason: str) -> None:
            """The voice failed: say so (with the notice rendered while it worked) and go on in text."""
            await r.gate.wait()
            degraded.append(reason)
            r.emit(self, ErrorEvent("tts_failed", f"speech synthesis failed ({reason}); the reply goes on as text"))
            r.emit(self, SpeechDegraded(r.rid, clause, reason))
            lang = reply_lang[0] if reply_lang else user_lang
            audio = self.stack.notices.get(self._base_voice(r), "tts", lang)
            if audio is not None and self.stack.tts is not None:
                if playout is not None:
                    playout.enqueue(notice("tts", lang), audio)
                else:
                    self._emit(AudioChunk(r.rid, audio, self.stack.tts.sample_rate, notice("tts", lang)))

        async def audio_stage() -> None:
            first = True
            while (item := await clauses.get()) is not None:
                clause, style = item.text, item.style
                if first and acked[0]:
                    clause = _LEADING_ACK.sub("", clause) or clause
                first = False
                r.emit(self, ReplyClause(r.rid, clause, get_style(style).name if style else None, item.speaker,
                                         item.voice, item.sung))
                if not r.speak or degraded:
                    spoken.append(clause)
                    continue
                assert self.stack.tts is not None
                if not reply_lang:
                    reply_lang.append(text_language(clause) or user_lang)
                if not tts_health.available():  # failing for every clause lately: text until its cooldown ends
                    await degrade(clause, tts_health.last_error)
                    spoken.append(clause)
                    continue
                t_clause = time.perf_counter()
                tts_idle.clear()
                try:
                    if item.render is not None:
                        audio = await loop.run_in_executor(self._tts_pool, item.render)
                    else:
                        audio = await loop.run_in_executor(self._tts_pool, self.stack.tts.synthesize, clause,
                                                           self._clause_voice(r, style, item.voice), reply_lang[0])
                except Exception as e:  # CancelledError is not an Exception: a barge-in still cancels
                    log.warning("speech synthesis failed: %s", e)
                    tts_health.failed(e)
                    await degrade(clause, f"{type(e).__name__}: {e}")
                    spoken.append(clause)
                    continue
                finally:
                    tts_idle.set()
                tts_health.succeeded()
                if "tts_first_audio" not in timings:
                    timings["tts_first_audio"] = (time.perf_counter() - t_clause) * 1000
                await r.gate.wait()  # speculative: ready, but not a word until the turn is really ours
                spoken.append(clause)
                if playout is not None:
                    playout.enqueue(clause, audio)
                else:
                    if "first_audio" not in timings:
                        timings["first_audio"] = (time.perf_counter() - r.t_end) * 1000
                    self._emit(AudioChunk(r.rid, audio, self.stack.tts.sample_rate, clause))
            if playout is not None:
                playout.finish()
                await playout.drained()

        async def start_playout() -> None:
            await r.gate.wait()
            if playout is not None:
                playout.stop()
                playout.start(r.rid)
                if self.settings.duplex.acknowledge and self.persona.acknowledges and fixed is None:
                    # give the reply a moment: acknowledge only if its first clause is not about to be ready
                    await asyncio.sleep(0.05)
                    await acknowledge()

        producer = (loop.run_in_executor(self._llm_pool, produce) if fixed is None
                    else asyncio.get_running_loop().run_in_executor(None, produce))
        heard: str | None = None
        played_ms: float | None = None
        failure: str | None = None
        try:
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(start_playout())
                    tg.create_task(text_stage())
                    tg.create_task(audio_stage())
            except* LlmError as eg:
                status, failure = "failed", "llm"
                self.stack.backend("llm").failed(eg.exceptions[0])
                r.emit(self, ErrorEvent("llm_failed", str(eg.exceptions[0])))
            except* Exception as eg:
                status, failure = "failed", "internal"
                log.error("response failed", exc_info=eg.exceptions[0])
                r.emit(self, ErrorEvent("response_failed", f"{type(eg.exceptions[0]).__name__}: {eg.exceptions[0]}"))
            else:
                if fixed is None:
                    self.stack.backend("llm").succeeded()
            if failure is not None:
                await self._say_notice(r, failure, reply_lang[0] if reply_lang else user_lang, playout,
                                       spoken=not degraded)
        except asyncio.CancelledError:
            status = "cancelled"
        finally:
            stop.set()
            tts_idle.set()
            full = "".join(generated).strip()
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
                kept = full if status == "completed" else (heard if heard is not None else "".join(spoken))
                if kept and r.record:
                    self.conversation.add_assistant(kept, r.item_id)
                timings["total"] = (time.perf_counter() - r.t_end) * 1000
                lang = reply_lang[0] if reply_lang else (text_language(full) if full else None)
                self._emit(ResponseDone(r.rid, full, status, lang, {k: round(v, 1) for k, v in timings.items()},
                                        heard if status != "completed" else None, played_ms, r.item_id,
                                        self._usage(messages, full)))
            if self._response is r:
                self._response = None
        try:
            await asyncio.shield(producer)  # the LLM thread exits once stop is set (a remote read is woken for it)
        except Exception:
            pass
        if status == "cancelled":
            raise asyncio.CancelledError


class ReplyDeltas:
    """What the LLM thread sends the text stage (text, markers, an exception), each stamped with its arrival.

    The stall watchdog counts from the last arrival, not from when the text stage next asks: the stage may be busy
    for seconds between two reads (a clause's safety check on a slow remote endpoint), and a stall that began
    meanwhile must still be reported as the stall it is, before a client-side timeout turns it into an error."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._q: asyncio.Queue[tuple[float, object]] = asyncio.Queue()
        self._last = time.perf_counter()

    def put_threadsafe(self, item: object) -> None:
        self._loop.call_soon_threadsafe(lambda: self._q.put_nowait((time.perf_counter(), item)))

    async def get(self, stall_s: float | None) -> object:
        """The next item; LlmError when nothing arrived within ``stall_s`` of the previous one (None: no limit)."""
        stalled = LlmError(f"the language model stopped answering (no output for {stall_s or 0:.0f} s)")
        if not self._q.empty():  # arrived while the stage was busy: not a stall, whatever the time now
            at, item = self._q.get_nowait()
        elif stall_s is None:
            at, item = await self._q.get()
        else:
            left = self._last + stall_s - time.perf_counter()
            if left <= 0:
                raise stalled
            try:
                at, item = await asyncio.wait_for(self._q.get(), left)
            except TimeoutError:
                raise stalled from None
        if stall_s is not None and at - self._last > stall_s and isinstance(item, Exception):
            # the backend's own timeout came after ours would have: the stall is the cause, say so
            raise stalled from item
        self._last = at
        return item


@dataclass
class _Clause:
    """One unit of a reply on its way to the voice: text, speaking style, a story speaker's voice, or — for a
    sung phrase — the call that renders its audio (on the TTS thread)."""

    text: str
    style: str | None = None
    voice: str | None = None
    speaker: str | None = None
    render: Callable[[], np.ndarray] | None = None
    sung: bool = False


def _next_phrase(phrases) -> Callable[[], np.ndarray]:
    """The next sung phrase's audio, rendered when the audio stage asks for it (phrases render in order)."""
    return lambda: next(phrases).audio


def _song_intro(req: SongRequest, lang: str) -> str:
    assert req.song is not None
    if lang == "en":
        return (f"Sure! Here is {req.song.title} with new words about {req.topic}." if req.topic
                else f"Sure, here is {req.song.title}.")
    if req.topic:
        return f"好呀，我用《{req.song.title}》的调子，给你唱一首关于{req.topic}的歌。"
    return f"好呀，我来给你唱《{req.song.title}》。"


def _expand(pieces: list[tuple[str, str | None]], script: ScriptLines | None) -> list[tuple[str, str | None]]:
    """Text pieces through the script-line parser too (story mode)."""
    if script is None:
        return pieces
    out: list[tuple[str, str | None]] = []
    for piece, tag in pieces:
        out.extend(script.feed(piece) if tag is None else [(piece, tag)])
    return out
