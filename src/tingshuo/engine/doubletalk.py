"""Is a user heard over our own voice? Short cues played over a reply through the simulated room, offline.

The duplex scenario suite (:mod:`tingshuo.engine.simulate`) runs whole sessions in real time: ~30 s a scenario,
so a stop phrase over a story was tried twice per benchmark run, and "2 of 2" hid a rate near one half
(2026-12-07: 5 of 12 real-time runs of "停下"). Whether the front end hears a cue at all does not need the
session, the LLM or the wall clock: this plays a synthesized reply (clauses with gaps between them, as when
synthesis falls behind) through the same room, adds the cue at a chosen moment, and feeds the result through the
real front end (AEC3, Silero, the echo gate) and utterance tracker, ~20x faster than real time. The echo may
reach the microphone up to ``jitter_ms`` late, changing now and then: a client's playout clock is not ours.

What it does not cover: what the judge (ASR, stop words) makes of the cue once heard, and event-loop timing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tingshuo.config import Settings
from tingshuo.engine.frontend import AudioFrontEnd
from tingshuo.engine.simulate import RATE, Room
from tingshuo.engine.utterance import Onset, UtteranceTracker

FRAME_S = 0.04  # the playout's frame


class _Playout:
    """What the front end asks of the playout: is a reply audible (paused or between clauses counts)."""

    rid = "doubletalk"
    audible = True
    last_release = 0.0


@dataclass
class DoubleTalk:
    onsets_s: list[float]  # where the tracker opened an utterance over us (s from the start)
    cue_s: tuple[float, float]  # where the cue was (start, end)
    heard_audio: np.ndarray | None = None  # the utterance opened on the cue, as the judge would get it (16 kHz)
    heard_speech_ms: float = 0.0  # its confident speech, as the tracker counts it (the judge's "one syllable" test)

    @property
    def heard(self) -> bool:
        """An utterance opened while the cue was being said (or just after: the VAD's window and the room)."""
        return any(self.cue_s[0] - 0.1 <= t <= self.cue_s[1] + 0.2 for t in self.onsets_s)

    def false_onsets(self, after_s: float) -> int:
        """Onsets nowhere near the cue, once the canceller has had ``after_s`` to learn the room: our own echo."""
        return sum(1 for t in self.onsets_s if t > after_s and not self.cue_s[0] - 0.1 <= t <= self.cue_s[1] + 0.5)


def doubletalk_trial(settings: Settings, clauses: list[np.ndarray], rate: int, gaps_s: list[float],
                     cue: np.ndarray, cue_at_s: float, seed: int = 0, jitter_ms: int = 40,
                     room: bool = True) -> DoubleTalk:
    """Play ``clauses`` (at ``rate``, ``gaps_s`` of silence after each) and the 16 kHz ``cue`` at ``cue_at_s``;
    ``room=False``: a headset (our voice does not reach the microphone)."""
    playout = _Playout()
    fe = AudioFrontEnd(settings, playout, rate)  # type: ignore[arg-type]
    tracker = UtteranceTracker(settings)
    speaker = Room(rate, seed=seed)
    rng = np.random.default_rng(seed)
    step, frame = int(FRAME_S * rate), int(FRAME_S * RATE)
    frames: list[np.ndarray | None] = []
    for c, g in zip(clauses, gaps_s):
        frames += [c[i : i + step] for i in range(0, len(c), step)]
        frames += [None] * int(g / FRAME_S)  # nothing to play: synthesis is behind
    total = (len(frames) + int(1.0 / FRAME_S)) * frame
    mic = np.zeros(total + RATE, np.float32)
    echo = np.zeros_like(mic)
    at = int(cue_at_s * RATE)
    mic[at : at + len(cue)] += cue[: max(0, len(mic) - at)]
    lead = int(settings.duplex.lead_ms * RATE / 1000)
    onsets: list[float] = []
    heard: np.ndarray | None = None
    heard_ms = 0.0
    late = 0
    cue_end = cue_at_s + len(cue) / RATE
    for j, k in enumerate(range(0, total - frame + 1, frame)):
        f = frames[j] if j < len(frames) else None
        if f is not None:
            fe.played(f)
            shift, e = speaker.echo(f)
            if jitter_ms and rng.random() < 0.05:
                late = int(rng.integers(0, jitter_ms)) * RATE // 1000
            i = k + speaker.delay + lead + shift + late
            if i >= 0 and room:
                echo[i : i + len(e)] += e[: max(0, len(echo) - i)]
        playout.audible = j < len(frames)
        for w, p, over_us, is_echo in fe.windows(mic[k : k + frame] + echo[k : k + frame], tracker.quiet):
            if isinstance(tracker.window(w, p, over_us, is_echo), Onset):
                onsets.append(tracker.pos / RATE)
            if not tracker.open:
                continue
            on_cue = cue_at_s - 0.1 <= onsets[-1] <= cue_end + 0.2
            if len(tracker.windows or ()) > 40 or (on_cue and tracker.pos / RATE > cue_end + 0.3):
                if on_cue and heard is None:
                    heard, heard_ms = tracker.audio(), tracker.speech * 1000 / RATE
                tracker.close()  # the session would judge it now; here only the onsets (and the cue's audio) count
    return DoubleTalk(onsets, (cue_at_s, cue_end), heard, heard_ms)
