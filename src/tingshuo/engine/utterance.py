"""The utterance tracker: speech probabilities per 32 ms window → the user's utterances, as typed frames.

It knows where an utterance opened (with the speech pad before the onset), how much confident speech and trailing
silence it holds, and where its speech last ended; it says what each window meant (:data:`Frame`), and the turn
taker and barge-in controller act on that. Positions are in 16 kHz samples of the input stream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from tingshuo.audio.io import INPUT_RATE
from tingshuo.audio.vad import WINDOW
from tingshuo.config import Settings
from tingshuo.dialogue.memory import new_item_id


def ms(samples: int) -> float:
    return samples * 1000 / INPUT_RATE


@dataclass(frozen=True)
class Quiet:
    """Nobody is talking (no utterance is open)."""


@dataclass(frozen=True)
class Onset:
    """An utterance opened; ``over_us``: while our voice was in the room."""

    over_us: bool


@dataclass(frozen=True)
class Voiced:
    """Speech in the open utterance; ``resumed``: after a pause (the turn was not over)."""

    resumed: bool


@dataclass(frozen=True)
class Paused:
    """A silent window in the open utterance (its trailing silence is :attr:`UtteranceTracker.silence`)."""


@dataclass(frozen=True)
class Noise:
    """The open utterance ended too short to be one (a click, a cough): the caller discards it."""


Frame = Quiet | Onset | Voiced | Paused | Noise


class UtteranceTracker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pos = 0  # samples seen
        self._pre: deque[np.ndarray] = deque(maxlen=max(1, settings.vad.speech_pad_ms * INPUT_RATE // 1000 // WINDOW + 1))
        self.onset = 0  # consecutive windows over the onset threshold
        self.windows: list[np.ndarray] | None = None  # the open utterance (None: nobody is talking)
        self.start = 0
        self.item_id = ""  # the conversation item id the open utterance becomes
        self.speech = 0  # confident speech samples in the open utterance
        self.silence = 0  # trailing silence samples
        self.last_speech_end = 0

    @property
    def open(self) -> bool:
        return self.windows is not None

    def quiet(self) -> bool:
        return self.windows is None and self.onset == 0

    def audio(self) -> np.ndarray:
        assert self.windows is not None
        return np.concatenate(self.windows)

    def window(self, w: np.ndarray, p: float, over_us: bool, is_echo: bool) -> Frame:
        vcfg, dcfg, tcfg = self.settings.vad, self.settings.duplex, self.settings.turn
        self.pos += WINDOW
        if self.windows is None:
            self._pre.append(w)
            thr, need = (dcfg.barge_in_threshold, dcfg.barge_in_windows) if over_us else (vcfg.threshold, 1)
            self.onset = self.onset + 1 if p >= thr and not (over_us and is_echo) else 0
            if self.onset >= need:
                self._open()
                return Onset(over_us)
            return Quiet()
        self.windows.append(w)
        if p >= vcfg.neg_threshold and not (self.silence and p < vcfg.threshold):
            resumed = self.silence > 0
            self.silence = 0
            if p >= vcfg.threshold:
                self.speech += WINDOW  # confident speech only: reverberation tails must not lengthen a "嗯"
            self.last_speech_end = self.pos
            return Voiced(resumed)
        self.silence += WINDOW
        if self.short() and ms(self.silence) >= max(tcfg.pause_ms, dcfg.resume_after_ms):
            return Noise()
        return Paused()

    def short(self) -> bool:
        """Too little confident speech so far to be an utterance."""
        return self.speech < self.settings.vad.min_speech_ms * INPUT_RATE // 1000

    def _open(self) -> None:
        self.windows = list(self._pre)
        self._pre.clear()
        self.onset = 0
        self.start = self.pos - WINDOW * len(self.windows)
        self.item_id = new_item_id()
        self.speech = WINDOW
        self.silence = 0
        self.last_speech_end = self.pos

    def close(self) -> None:
        self.windows = None
        self.speech = self.silence = 0

    def clear(self) -> None:
        """Forget the utterance in progress and the onset being counted."""
        self.close()
        self._pre.clear()
        self.onset = 0

    def until_speech_end(self) -> np.ndarray:
        """The utterance's audio up to its last speech and the speech pad after it."""
        audio = self.audio()
        pad = self.settings.vad.speech_pad_ms * INPUT_RATE // 1000
        return audio[: max(0, len(audio) - max(0, self.silence - pad))]
