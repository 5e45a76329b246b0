"""Real-time paced playback: the engine, not the client, decides what is heard and knows how much was.

Reply audio is cut into ``frame_ms`` frames and released on the wall clock, at most ``lead_ms`` ahead of what the
listener hears (enough for a client's jitter buffer, little enough to stop fast). Because release is paced,
``pause()`` can say exactly how many milliseconds of a response were played — what barge-in needs to truncate
the assistant's turn to what the user actually heard — and nothing of a stopped response is sent after the stop.
A paused response rewinds to the heard position, so a false interruption (a backchannel) resumes seamlessly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np


def heard_text(spans: Iterable[tuple[str, float, float]], heard_s: float) -> str:
    """What was heard of clauses laid out as (text, start s, end s) when playback stopped at ``heard_s``: the
    clauses that ended, plus the played share of the one cut off, marked "…". Used by the engine's own playout
    and by the server for a client's ``conversation.item.truncate``."""
    out = []
    for text, start, end in spans:
        if end <= heard_s + 1e-3:
            out.append(text)
        elif start < heard_s:
            n = int(len(text) * (heard_s - start) / max(1e-6, end - start))
            if n:
                out.append(text[:n] + "…")
    return "".join(out)


@dataclass
class _Segment:
    text: str
    audio: np.ndarray
    start_s: float  # position of this segment in the response's timeline
    end_s: float
    is_ack: bool = False


class Playout:
    """One response's audio at a time; ``emit(rid, frame, text)`` is called for every released frame."""

    def __init__(self, sample_rate: int, frame_ms: int, lead_ms: int,
                 emit: Callable[[str, np.ndarray, str], None]) -> None:
        self.rate = sample_rate
        self.frame = int(sample_rate * frame_ms / 1000)
        self.lead_s = lead_ms / 1000
        self._emit = emit
        self.rid: str | None = None
        self._segments: list[_Segment] = []
        self._pos_s = 0.0  # released up to here (response timeline)
        self._clock0 = 0.0  # wall time at which timeline position 0 is heard (while playing)
        self._paused = True
        self._heard_at_pause = 0.0
        self._closed = False  # no more segments will be queued for this response
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.first_frame_at: float | None = None
        self.first_reply_frame_at: float | None = None
        self.last_release = 0.0  # wall time of the last frame released (echo may follow it for a while)

    # ---------------------------------------------------------------- control (event loop only)
    def start(self, rid: str) -> None:
        """Begin a new response timeline (the previous one must have been stopped)."""
        self.rid = rid
        self._segments = []
        self._pos_s = 0.0
        self._paused = False
        self._closed = False
        self._clock0 = 0.0
        self._heard_at_pause = 0.0
        self._drained.clear()
        self.first_frame_at = self.first_reply_frame_at = None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        self._wake.set()

    def enqueue(self, text: str, audio: np.ndarray, *, is_ack: bool = False) -> None:
        start = self._segments[-1].end_s if self._segments else 0.0
        audio = np.asarray(audio, np.float32)
        self._segments.append(_Segment(text, audio, start, start + len(audio) / self.rate, is_ack))
        self._wake.set()

    def finish(self) -> None:
        """No more audio for this response; ``drained()`` completes once the last frame has been heard."""
        self._closed = True
        self._wake.set()

    async def drained(self) -> None:
        await self._drained.wait()

    @property
    def audible(self) -> bool:
        """Audio of the current response is playing, paused for a possible interruption, or still to come."""
        return self.rid is not None and not self._drained.is_set()

    @property
    def paused(self) -> bool:
        return self._paused

    def heard_s(self) -> float:
        """How much of the current response the listener has heard."""
        if self._paused:
            return self._heard_at_pause
        if self._clock0 == 0.0:  # nothing released since start/resume
            return self._pos_s
        return max(0.0, min(self._pos_s, time.perf_counter() - self._clock0))

    def pause(self) -> float:
        """Stop releasing frames now; rewind to what was heard (the unheard lead is re-sent on resume)."""
        if not self._paused:
            heard = self.heard_s()
            self._paused = True
            self._heard_at_pause = heard
            self._pos_s = heard
        return self._heard_at_pause

    def resume(self) -> None:
        if self._paused and self.rid is not None:
            self._paused = False
            self._clock0 = 0.0  # re-anchored at the next released frame
            self._wake.set()

    def stop(self) -> float:
        """End the current response's playback for good; returns the seconds heard."""
        heard = self.pause() if not self._paused else self._heard_at_pause
        self.rid = None
        self._segments = []
        self._drained.set()
        return heard

    def heard_text(self, heard_s: float) -> str:
        """The text the listener heard: whole clauses, plus the played share of the clause cut off."""
        return heard_text(((seg.text, seg.start_s, seg.end_s) for seg in self._segments), heard_s)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # ---------------------------------------------------------------- pacing task
    def _locate(self, pos_s: float) -> tuple[_Segment, int] | None:
        for seg in self._segments:
            if seg.start_s - 1e-9 <= pos_s < seg.end_s - 1e-9:
                return seg, int(round((pos_s - seg.start_s) * self.rate))
        return None

    async def _run(self) -> None:
        while True:
            if self.rid is None or self._paused:
                self._wake.clear()
                await self._wake.wait()
                continue
            loc = self._locate(self._pos_s)
            if loc is None:
                if self._closed:
                    # everything released: done once the listener has heard the tail
                    if self._clock0:
                        rest = self._clock0 + self._pos_s - time.perf_counter()
                        if rest > 0:
                            await asyncio.sleep(rest)
                    if not self._paused and self._locate(self._pos_s) is None and self._closed:
                        self._drained.set()
                        self._wake.clear()
                        await self._wake.wait()
                    continue
                self._wake.clear()
                await self._wake.wait()  # the next clause is still being synthesized
                continue
            seg, i = loc
            frame = seg.audio[i : i + self.frame]
            now = time.perf_counter()
            if self._clock0 == 0.0 or now > self._clock0 + self._pos_s:
                self._clock0 = now - self._pos_s  # (re)start or underrun: the timeline is re-anchored to now
            wait = self._clock0 + self._pos_s - self.lead_s - now
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # re-check: a pause or stop may have come in while sleeping
            rid = self.rid
            self._pos_s = seg.start_s + (i + len(frame)) / self.rate
            if self.first_frame_at is None:
                self.first_frame_at = now
            if not seg.is_ack and self.first_reply_frame_at is None:
                self.first_reply_frame_at = now
            self.last_release = now + self.lead_s
            self._emit(rid, frame, seg.text)
