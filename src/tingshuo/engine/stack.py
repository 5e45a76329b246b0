"""The loaded models a session uses. One stack can serve several sessions (each has its own conversation)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tingshuo.asr import Recognizer, load_recognizer
from tingshuo.audio.smart_turn import SmartTurn
from tingshuo.config import Settings
from tingshuo.engine.faults import NoticeVoice
from tingshuo.engine.health import BackendHealth
from tingshuo.engine.workers import JobObserver, Lane, Worker
from tingshuo.llm import ChatModel, load_chat_model
from tingshuo.tts import SpeechSynthesizer

if TYPE_CHECKING:
    from tingshuo.coach import PronunciationCoach
    from tingshuo.intent import IntentReader
    from tingshuo.safety import SafetyGuard
    from tingshuo.search import SearchProvider
    from tingshuo.tts.singing import Singer, Songbook


@dataclass
class ModelStack:
    settings: Settings
    asr: Recognizer | None = None
    llm: ChatModel | None = None  # writes the replies
    judge: ChatModel | None = None  # reads the turn's end and emotion (llm.judge_model); the reply model by default
    tts: SpeechSynthesizer | None = None
    turn: SmartTurn | None = None  # acoustic end-of-turn model, loaded with ASR
    load_ms: dict[str, float] = field(default_factory=dict)
    _pools: dict[str, Worker] = field(default_factory=dict)
    observer: JobObserver | None = None  # told of every finished job (the server's metrics)
    # per backend (asr, llm, tts, store): failures seen, and whether to try it now (a tripped breaker waits)
    health: dict[str, BackendHealth] = field(default_factory=dict)

    def pool(self, name: str) -> Worker:
        """The one worker thread of a model (``asr``, ``llm``, ``tts``, ``turn``, ``guard``), shared by every session.

        The models are not thread-safe (llama.cpp's context least of all), so sessions queue on the same thread
        instead of each owning one, and take turns (:mod:`tingshuo.engine.workers`). Idle workers cost nothing.
        """
        if name not in self._pools:
            self._pools[name] = Worker(name, self._observe)
        return self._pools[name]

    def lane(self, name: str, owner: object) -> Lane:
        """A session's lane into a model's worker (round robin with the other sessions)."""
        return self.pool(name).lane(owner)

    def _observe(self, name: str, queued_s: float, ran_s: float, failed: bool) -> None:
        if self.observer is not None:
            self.observer(name, queued_s, ran_s, failed)

    @property
    def workers(self) -> dict[str, Worker]:
        return dict(self._pools)

    _notices: "NoticeVoice | None" = None

    @property
    def notices(self) -> "NoticeVoice":
        """Fault notices pre-rendered per voice (so a failing TTS can still say it failed)."""
        if self._notices is None:
            self._notices = NoticeVoice(lambda: self.tts, self.pool("tts"), self.settings.cache_dir / "notices",
                                        self.settings.tts.model_dump_json())
        return self._notices

    def backend(self, name: str) -> BackendHealth:
        if name not in self.health:
            self.health[name] = BackendHealth(name)
        return self.health[name]

    _songbook: "Songbook | None" = None
    _singer: "Singer | None" = None

    @property
    def songbook(self) -> "Songbook":
        if self._songbook is None:
            from tingshuo.tts.singing import Songbook

            self._songbook = Songbook.load(self.settings.dialogue.songs_file)
        return self._songbook

    @property
    def singer(self) -> "Singer":
        """Sings with the Kokoro backend (loaded on first use); runs on the TTS thread like speech."""
        if self._singer is None:
            from tingshuo.tts.singing import Singer

            assert self.tts is not None, "singing needs a stack loaded with TTS"
            self._singer = Singer(self.tts.backend("kokoro"), self.tts.sample_rate, native=self.tts.native())
        return self._singer

    guard: "SafetyGuard | None" = None  # loaded with the LLM when safety is on
    planner: "IntentReader | None" = None  # the turn plan's reader, loaded with the LLM when plan.enabled
    search: "SearchProvider | None" = None  # None: search off (time-sensitive questions are answered honestly)

    _coach: "PronunciationCoach | None" = None

    @property
    def coach(self) -> "PronunciationCoach":
        """The English pronunciation coach (pocketsphinx, loaded on first use, ~0.3 s); runs on the turn thread."""
        if self._coach is None:
            from tingshuo.coach import PronunciationCoach

            self._coach = PronunciationCoach()
        return self._coach

    def warm(self, system_prompt: str) -> None:
        """Have a session's system prompt in the LLM's prefix cache: nothing to do when it is there, a saved state
        loaded when another prompt took its place (a persona switch, another session), evaluated only once."""
        if self.llm is not None:
            self.llm.warmup(system_prompt)

    @classmethod
    def load(cls, settings: Settings, *, asr: bool = True, llm: bool = True, tts: bool = True) -> "ModelStack":
        """Load what the mode needs (speech→text needs no TTS, text→text neither ASR nor TTS)."""
        stack = cls(settings)
        cache = settings.cache_dir
        if settings.dialogue.singing:
            stack.songbook  # parsed here (~0.2 s with imports), not on the event loop at the first user turn
        if settings.dialogue.personas_file is not None:
            from tingshuo.dialogue.persona import load_personas, register

            register(load_personas(settings.dialogue.personas_file))
        if asr:
            t = time.perf_counter()
            stack.asr = load_recognizer(settings.asr, cache)
            stack.turn = SmartTurn()
            stack.load_ms["asr"] = (time.perf_counter() - t) * 1000
        if llm:
            t = time.perf_counter()
            stack.llm = load_chat_model(settings.llm, cache)
            # the judgements' model: the reply model, or a small in-process one beside a big reply model
            jcfg = settings.llm.judge() or settings.llm
            stack.judge = load_chat_model(jcfg, cache) if jcfg is not settings.llm else stack.llm
            stack.load_ms["llm"] = (time.perf_counter() - t) * 1000
            if settings.safety.enabled:
                from tingshuo.safety import SafetyGuard

                # its own llama.cpp context (same file, weights shared by mmap): the guard's prompt stays cached
                # and the conversation's KV cache is not evicted by each check
                own = settings.safety.separate_context and jcfg.backend == "llama-cpp"
                stack.guard = SafetyGuard(load_chat_model(jcfg, cache) if own else stack.judge, settings.safety)
                if own:
                    stack.guard.warmup()  # its fixed prompt, once (~2–4 s), not in the first user's turn
            if settings.plan.enabled:
                from tingshuo.intent import IntentReader

                own = settings.plan.separate_context and jcfg.backend == "llama-cpp"
                from tingshuo.dialogue.songs import find_title

                book = stack.songbook

                def title(text: str) -> str | None:
                    found = find_title(text, book)
                    return found[0].title if found else None

                stack.planner = IntentReader(load_chat_model(jcfg, cache) if own else stack.judge,
                                             settings.plan.threshold, title if settings.dialogue.singing else None,
                                             settings.plan.voice_threshold, settings.plan.probe)
                if own:
                    stack.planner.warmup()  # its fixed prompt, once (~10 s; then loaded from the saved state)
            from tingshuo.search import load_provider

            stack.search = load_provider(settings.search, cache)
        if tts:
            t = time.perf_counter()
            stack.tts = SpeechSynthesizer(settings.tts, cache)
            stack.tts.preload()
            # the "my voice failed" notice in the starting persona's voice: rendered inside the first session's
            # first turn it took the TTS thread for 6.3 s (zh, 2 cores); from the cache directory it loads in ms
            from tingshuo.dialogue.persona import get_persona
            from tingshuo.tts import VoiceSettings

            try:
                voice = VoiceSettings(voice=get_persona(settings.dialogue.persona).voice)
            except ValueError:  # a user's persona not registered yet: its session renders the notice
                voice = None
            for lang in ("zh", "en") if voice is not None else ():
                stack.notices.render_now(voice, lang)
            stack.load_ms["tts"] = (time.perf_counter() - t) * 1000
        return stack
