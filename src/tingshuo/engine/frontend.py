"""The audio front end: frames at any rate → 16 kHz 32 ms windows, each with its speech probability and the
echo canceller's verdict on whether it is our own voice.

One stateful resampler per stream (no click at frame edges, a change of rate between frames is fine); in duplex,
WebRTC AEC3 with the played audio as reference; Silero VAD.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from tingshuo.audio.aec import BLOCK
from tingshuo.audio.io import INPUT_RATE, AudioError, StreamResampler, to_mono
from tingshuo.audio.vad import WINDOW, SileroVad
from tingshuo.config import Settings
from tingshuo.engine.playout import Playout

MAX_FRAME_SECONDS = 10.0  # one push_audio call; streaming clients send 20–100 ms


class AudioFrontEnd:
    def __init__(self, settings: Settings, playout: Playout | None, tts_rate: int | None) -> None:
        self.settings, self.playout = settings, playout
        self.aec = None
        if playout is not None and settings.duplex.aec:
            from tingshuo.audio.aec import EchoCanceller

            assert tts_rate is not None
            self.aec = EchoCanceller(tts_rate, settings.duplex.lead_ms, predict=settings.duplex.raw_vad)
        self._vad: SileroVad | None = None
        self._resampler = StreamResampler(INPUT_RATE)
        self._pending = np.zeros(0, np.float32)
        self._pending_raw = np.zeros(0, np.float32)  # the same samples before echo cancellation
        self._echo_levels: deque[float] = deque(maxlen=300)  # mic-to-reference dB in playback windows nobody spoke in
        self._raw_vad: SileroVad | None = None  # a second VAD on the microphone before echo cancellation
        self._excess: deque[float] = deque(maxlen=300)  # mic over predicted echo (dB), windows nobody spoke in
        self._at = 0  # 16 kHz samples handed out as windows: the echo predictor's block clock

    def played(self, frame: np.ndarray) -> None:
        """A frame of the reply reached the speaker: the canceller's reference."""
        if self.aec is not None:
            self.aec.played(frame)

    def over_us(self) -> bool:
        """Our voice is (or was a moment ago) in the room: the client's buffer and the room's reverberation."""
        p = self.playout
        return p is not None and (
            p.audible or time.perf_counter() - p.last_release < self.settings.duplex.echo_tail_ms / 1000)

    def accept(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """A pushed frame as 16 kHz mono (AudioError: too large, NaN/inf, an unusable rate)."""
        x = to_mono(np.asarray(audio))
        if len(x) > MAX_FRAME_SECONDS * sample_rate:
            raise AudioError(f"an audio frame of {len(x) / sample_rate:.1f} s is too large "
                             f"(send ≤ {MAX_FRAME_SECONDS:.0f} s per frame)")
        if not np.all(np.isfinite(x)):
            raise AudioError("the audio frame holds NaN/inf samples")
        return self._resampler(x, sample_rate)

    def windows(self, x: np.ndarray, quiet: Callable[[], bool]) -> Iterator[tuple[np.ndarray, float, bool, bool]]:
        """(window, speech probability, our voice is in the room, it is our echo) for each whole window now
        buffered. ``quiet``: nobody is
        talking (asked per window: such windows teach the echo test what our echo looks like)."""
        if self._vad is None:
            self._vad = SileroVad()
        raw = None
        if self.aec is not None:
            self.aec.learn = quiet()
            x, raw = self.aec.process(x)
            self._pending_raw = np.concatenate([self._pending_raw, raw])
            if self._raw_vad is None and self.settings.duplex.raw_vad:
                self._raw_vad = SileroVad()
        self._pending = np.concatenate([self._pending, x.astype(np.float32, copy=False)])
        n = len(self._pending) // WINDOW
        pending, pending_raw = self._pending, self._pending_raw
        self._pending = pending[n * WINDOW :]
        self._pending_raw = pending_raw[n * WINDOW :]
        for i in range(n):
            w = pending[i * WINDOW : (i + 1) * WINDOW]
            over_us = self.over_us()
            is_echo = False
            p = self._vad(w)
            first, self._at = self._at // BLOCK, self._at + WINDOW
            if raw is not None:
                rw = pending_raw[i * WINDOW : (i + 1) * WINDOW]
                # scored on every window, over us or not: Silero carries its state from window to window
                p_raw = self._raw_vad(rw) if self._raw_vad is not None else 0.0
                if over_us:
                    q = quiet()
                    is_echo = self._echo_verdict(w, rw, q)
                    # one window suffices: asking for two in a row lost the gain (dev, offline: a 4 s interruption
                    # first heard after 1.4 s again in 1 of 16)
                    if self._raw_vad is not None and self._louder_than_echo(first, self._at // BLOCK, q) \
                            and p_raw >= self.settings.duplex.barge_in_threshold:
                        p, is_echo = max(p, p_raw), False
            yield w, p, over_us, is_echo

    def _louder_than_echo(self, first_block: int, end_block: int, quiet: bool) -> bool:
        """Is the raw microphone well above what our echo alone would put there (the predictor's excess over
        the 95th percentile of echo-only windows + ``raw_excess_db``)? Then the raw VAD may speak for the window.

        Why: AEC3 mutes a user's first second over our playback in one try of five or so (its double-talk
        suppression), and barge-in then waits for it. Dev voices, offline harness (2026-12-07): stop phrases
        heard through a room 29 → 40 of 40; a 4 s interruption first heard after > 1.4 s in 0 of 16 instead of 3.
        Opt-in (``duplex.raw_vad``): in real time it also paused the reply on our own echo.
        """
        assert self.aec is not None and self.aec.predictor is not None
        if not self.aec.ready:
            return False
        excess = self.aec.predictor.excess_db(first_block, end_block)
        louder = len(self._excess) >= 30 and excess >= float(np.percentile(self._excess, 95)) + self.settings.duplex.raw_excess_db
        if quiet:
            self._excess.append(excess)
        return louder

    def _echo_verdict(self, clean: np.ndarray, raw: np.ndarray, quiet: bool) -> bool:
        """Is this window (during our playback) our own voice rather than the user's?

        Three tests, any of which says echo: the canceller is still learning the room; it removed most of the
        window's energy; or the microphone is no louder, relative to what the speaker just played, than our echo
        usually is. The last one is what stops self-interruption when AEC3 leaks (it does, for a few hundred ms
        after playback restarts). It is a double-talk test in the spirit of Geigel's: the mic-to-reference level
        ratio of pure echo is learnt from playback windows nobody spoke in, and a user cutting in raises it.
        Normalising by the reference lets a user be heard in the quiet moments of the reply, not only over its
        loudest syllables.
        """
        assert self.aec is not None
        dcfg = self.settings.duplex
        raw_db = 10 * np.log10(float(np.mean(raw * raw)) + 1e-10)
        removed = raw_db - 10 * np.log10(float(np.mean(clean * clean)) + 1e-10)
        ratio = raw_db - self.aec.recent_ref_db
        if not self.aec.ready or removed > dcfg.echo_removed_db:
            verdict = True
        elif len(self._echo_levels) >= 30:
            verdict = ratio < float(np.percentile(self._echo_levels, 95)) + dcfg.echo_margin_db
        else:
            verdict = False
        if quiet:
            self._echo_levels.append(ratio)  # nobody is talking: this is what our echo looks like here
        return verdict
