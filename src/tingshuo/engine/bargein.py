"""The barge-in controller: speech over our reply pauses its playback at once and is judged afterwards.

A backchannel ("嗯", "对") or a cough resumes the reply where it paused; anything longer, or words that are not a
backchannel, is a real interruption: the response is cancelled and its turn truncated to what was heard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from tingshuo.audio.io import INPUT_RATE
from tingshuo.config import Settings
from tingshuo.engine.context import Outbox
from tingshuo.engine.events import Backchannel, PlaybackPaused, PlaybackResumed
from tingshuo.engine.playout import Playout
from tingshuo.engine.turns import is_backchannel
from tingshuo.engine.utterance import UtteranceTracker, ms

log = logging.getLogger("tingshuo.engine")


class BargeIn:
    def __init__(self, settings: Settings, playout: Playout | None, aec: Any, out: Outbox,
                 cancel: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """``aec``: the front end's echo canceller (None: none), named in the log of each barge-in."""
        self.settings, self.playout, self.aec, self.out, self._cancel = settings, playout, aec, out, cancel
        self.judging: tuple[str, int] | None = None  # (response id, onset sample) while speech over us is judged

    def onset(self, tracker: UtteranceTracker, over_us: bool) -> None:
        """An utterance opened; over a reply that is still audible, pause it (stop the sound first, judge after).
        Over us but nothing left to pause (the echo tail after a reply ended): an ordinary new turn."""
        p = self.playout
        if over_us and self.settings.duplex.barge_in and p is not None and p.rid is not None and p.audible:
            log.info("speech over playback at %.2f s (aec ready=%s)", tracker.pos / INPUT_RATE,
                     self.aec.ready if self.aec is not None else None)
            heard = p.pause()
            self.judging = (p.rid, tracker.start)
            self.out.emit(PlaybackPaused(p.rid, round(heard * 1000, 1)))

    def backchannel(self, text: str, tracker: UtteranceTracker, lean: float | None = None) -> bool:
        """``lean``: the recognizer's weighing of the audio as a stop phrase or a listener token, if it has one."""
        return is_backchannel(text, ms(tracker.speech), self.settings.duplex.backchannel_max_ms, lean=lean)

    def check_length(self, tracker: UtteranceTracker) -> None:
        """Too long for a backchannel: a real interruption (the second test covers speech that the VAD scores
        0.35–0.5 throughout, which continues an utterance without counting as confident speech)."""
        if self.judging is None:
            return
        limit = self.settings.duplex.backchannel_max_ms
        if ms(tracker.speech) > limit or ms(tracker.pos - self.judging[1]) > 1.5 * limit:
            self.confirm()

    def confirm(self) -> None:
        """Speech over the reply is a real interruption: cancel it; the history keeps what was heard."""
        self.judging = None
        self.out.spawn(self._cancel())

    def forget(self) -> tuple[str, int] | None:
        """The utterance being judged is gone (dropped, or taken as a turn): returns what was being judged."""
        judging, self.judging = self.judging, None
        return judging

    def resume(self, rid: str, text: str) -> None:
        """It was a backchannel (``text``) or nothing: the paused reply plays on."""
        p = self.playout
        if p is not None and p.rid == rid:
            self.out.emit(Backchannel(text))
            p.resume()
            self.out.emit(PlaybackResumed(rid))
