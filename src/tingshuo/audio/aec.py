"""Echo cancellation for speaker playback: WebRTC AEC3 through ``pywebrtc-audio`` (Apache-2.0).

The played signal is the reference. The playout releases frames ``lead_ms`` before they are heard, so each frame
is placed on the microphone's own sample clock at (samples received so far + lead): the reference reaches AEC3
aligned with the moment the sound leaves the speaker, and AEC3's delay estimator only has to find the acoustic
path and device latency. (Fed unaligned, AEC3 leaked echo loud enough for Silero to call speech ~1.4 s into
every reply while it re-estimated the delay.) ERLE ~19–24 dB, ~0.1 ms per 10 ms block
(shared/research/paralinguistics.md).

AEC3 starts conservative and switches to its adaptive filter after ~1.5 s of far-end speech; around the switch it
passed echo through unchanged for ~0.4 s in our room simulation. ``ready`` turns true once the far end has been
active for ``WARMUP_S`` and the canceller has removed ≥ 10 dB (median) over the last half second of it (or after
``GIVE_UP_S`` regardless; after ``NO_ECHO_S`` when the far end does not reach the microphone at all); until
then the session does not treat speech over its own playback as barge-in (a call's greeting covers this).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import soxr

RATE = 16000
BLOCK = 160  # AEC3 works on 10 ms blocks
WARMUP_S = 2.5
GIVE_UP_S = 5.0
# A headset (or a client that cancels echo itself): our sound never reaches the microphone. There is nothing to
# cancel, yet AEC3's suppressor still took ~20 dB out of a user talking while we played, and waiting for
# GIVE_UP_S kept them from interrupting the first ~5 s the assistant spoke: 0 of 4 "停下" over a story stopped it
# (2026-12-07, real time, no room). When the far end has played for NO_ECHO_S and the microphone stayed this far
# below it (the lower quartile over the last 3 s of loud playback, so a user talking over us most of that time
# does not flip it), the microphone is passed through as it is and barge-in is armed. A room's echo sits ~6-20 dB
# below what was played (our simulated laptop: ~-8 dB median), far above this.
NO_ECHO_S = 1.0
NO_ECHO_DB = -30.0


class EchoPowerPredictor:
    """How loud our echo should be at the microphone now, from the last 400 ms of reference power.

    Why: AEC3 suppresses double talk — a user cutting in while we play is muted in its output for up to ~1.5 s
    while its filter re-converges (the slow mode of barge-in), and ``pywebrtc-audio`` offers no setting for it.
    The raw microphone keeps the user; what it needs is a test of "louder than our echo would be". A
    normalised LMS filter over block *powers* (not samples: no phase to track, so a few ms of jitter in the
    path or the client's buffer does not break it) learns the room's echo-power response from blocks nobody
    spoke in, and the excess of the microphone over its prediction, in dB, tells the user from our echo.
    Tuned on dev voices (``bench/doubletalk.py``'s harness; ``K``, ``MU`` below), 2026-12-07.
    """

    K = 40  # blocks of reference history (400 ms: path delay + the room's reverberation)
    MU = 0.05
    TRUSTED = 300  # learnt blocks before an outlier (mic ≥ 4× the prediction) is kept out of the learning
    STALE = 300  # ...unless outliers run this long: the room changed (volume up), not a user talking
    # A step up is limited to +3 dB over the prediction (a robust, Huber-like NLMS): a user the session has not
    # heard yet is "quiet" to it, and unclipped, 1-2 s of their speech taught the filter that they were our echo
    # (dev, 16 four-second interruptions: first heard after > 1.4 s in 1 of 16 unclipped, 0 clipped; short stop
    # phrases heard 36 → 39 of 40; the skip above alone, without the clip, is not enough: 1 of 16 again).
    CLIP = 1.0

    # The test's tolerance for the path's timing (blocks either side; the reference is released up to 80 ms
    # ahead, so 20 ms of it is known). Real time, raw gate on: 0 of 19 interruption runs and 3 of 26
    # bench/duplex.py scenarios paused on our echo with it, 3 of 12 and 4 of 26 without; offline gain unchanged.
    AHEAD = 2

    def __init__(self) -> None:
        self._h = np.zeros(self.K)
        # reference power, newest first, from AHEAD blocks ahead of the microphone (played frames are released
        # ahead of being heard) back to K + AHEAD blocks behind it
        self._r = np.zeros(self.K + 2 * self.AHEAD)
        self._learnt = 0
        self._skipped = 0
        self.blocks: deque[tuple[float, float]] = deque(maxlen=200)  # (mic power, predicted) of the last 2 s
        self.n_blocks = 0  # blocks seen so far; the clock of ``blocks``

    def step(self, ref_power_ahead: float, mic_power: float, learn: bool) -> None:
        """One 10 ms block: the reference's power ``AHEAD`` blocks from now, the microphone's now."""
        self._r = np.roll(self._r, 1)
        self._r[0] = ref_power_ahead
        d, k = self.AHEAD, self.K
        # the echo were it up to AHEAD blocks sooner (s < d) or later (s > d) than learnt; s = d is the prediction
        preds = [float(self._h @ self._r[s : s + k]) for s in range(2 * d + 1)]
        x, pred = self._r[d : d + k], preds[d]  # the reference up to this block, and what the filter predicts
        # the test compares with the loudest of them: the path's timing wanders (a client's playout, the event
        # loop), and an onset of our speech arriving early is otherwise a burst of "user" over the prediction
        self.blocks.append((mic_power, max(preds)))
        self.n_blocks += 1
        if not learn or float(x.sum()) <= 1e-7:  # nothing played lately: nothing to learn from
            return
        if self._learnt > self.TRUSTED and mic_power > 4 * pred and self._skipped < self.STALE:
            self._skipped += 1  # likely a user over us that the session has not heard: not our echo
            return
        self._skipped = 0
        e = mic_power - pred
        if self._learnt > 50:  # a first estimate exists to clip against
            e = min(e, self.CLIP * pred)
        self._h += self.MU * e * x / (float(x @ x) + 1e-12)
        np.maximum(self._h, 0.0, out=self._h)  # power responses are non-negative
        self._learnt += 1

    def excess_db(self, first_block: int, end_block: int) -> float:
        """Microphone over predicted echo, in dB, summed over blocks [first_block, end_block)."""
        lo = self.n_blocks - len(self.blocks)
        sel = [self.blocks[j - lo] for j in range(max(first_block, lo), min(end_block, self.n_blocks))]
        if not sel:
            return 0.0
        return 10 * np.log10((sum(m for m, _ in sel) + 1e-12) / (sum(q for _, q in sel) + 1e-12))


class EchoCanceller:
    def __init__(self, playback_rate: int, lead_ms: float = 0.0, predict: bool = False) -> None:
        """``predict``: also keep :class:`EchoPowerPredictor` (the opt-in raw-microphone gate needs it)."""
        import pywebrtc_audio

        self._aec = pywebrtc_audio.EchoCanceller(sample_rate=RATE, num_channels=1, stream_delay_ms=0)
        self._resampler = soxr.ResampleStream(playback_rate, RATE, 1, dtype="float32")
        self._rate = playback_rate
        self._fed = 0  # playback-rate samples given to the resampler
        self._got = 0  # 16 kHz samples it has returned (it returns them in blocks, not frame by frame)
        self._lead = int(lead_ms * RATE / 1000)
        self._n_mic = 0  # microphone samples processed (the clock)
        self._ref = np.zeros(0, np.float32)  # reference on the mic clock, starting at sample _ref_start
        self._ref_start = 0
        self._mic = np.zeros(0, np.float32)
        self._ref_pow: deque[float] = deque(maxlen=35)  # the last 350 ms of reference power: delay + reverb
        self.far_active_s = 0.0  # how long the far end has carried sound so far
        self._removed: list[float] = []  # dB removed on recent far-end-active blocks
        self._reach: deque[float] = deque(maxlen=300)  # mic level relative to the far end while it plays (dB)
        self.ready = False
        self.predictor = EchoPowerPredictor() if predict else None
        self.learn = False  # the session says nobody is talking: blocks now teach the predictor our echo

    def played(self, audio: np.ndarray) -> None:
        """Reference: a frame just released to the speaker (at the playback rate); heard ``lead_ms`` from now."""
        audio = np.asarray(audio, np.float32)
        # soxr's stream returns output in blocks (~490 samples at 24→16 kHz: 490, 489, 979… for 40 ms frames), so
        # what it returns now may start with audio of earlier frames it still owed. Those samples are heard just
        # before this frame: placing the output at this frame's position instead (and padding the shortfall with
        # silence, as this did) shifted the reference by up to a block each time, and AEC3 lost the echo path
        # (ERLE 9.6 dB instead of 20.4 with 40 ms frames, measured on the test_duplex echo clip).
        owed = max(0, round(self._fed * RATE / self._rate) - self._got)
        x = self._resampler.resample_chunk(audio)
        self._fed += len(audio)
        self._got += len(x)
        if not len(x):
            return
        end = self._ref_start + len(self._ref)
        at = self._n_mic + len(self._mic) + self._lead - owed  # where the first returned sample is heard
        if at > end:  # playback had stopped: silence until this sound
            self._ref = np.concatenate([self._ref, np.zeros(at - end, np.float32)])
        self._ref = np.concatenate([self._ref, x])

    def _take_ref(self, start: int, n: int) -> np.ndarray:
        i = start - self._ref_start
        seg = self._ref[max(0, i) : max(0, i + n)]
        if i < 0:
            seg = np.concatenate([np.zeros(min(n, -i), np.float32), seg])[:n]
        return np.pad(seg, (0, n - len(seg))) if len(seg) < n else seg

    @property
    def echo_free(self) -> bool:
        """Our sound does not reach the microphone (a headset): nothing to cancel, the input passes unchanged."""
        return len(self._reach) >= NO_ECHO_S * RATE / BLOCK and float(np.percentile(self._reach, 25)) < NO_ECHO_DB

    @property
    def recent_ref_db(self) -> float:
        """Level of what the speaker played over the last 350 ms, on the mic clock (what the echo is made of)."""
        return 10 * np.log10((sum(self._ref_pow) / len(self._ref_pow) if self._ref_pow else 0.0) + 1e-8)

    def process(self, mic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whole 10 ms blocks of 16 kHz audio (the remainder is kept): (echo-cancelled, raw).

        The raw blocks come back too: how much the canceller removed tells our own echo (~20 dB or more) from
        a user talking over the reply (a few dB).
        """
        self._mic = np.concatenate([self._mic, np.asarray(mic, np.float32)])
        n = len(self._mic) // BLOCK
        out = np.empty(n * BLOCK, np.float32)
        for i in range(n):
            near = self._mic[i * BLOCK : (i + 1) * BLOCK]
            ref = self._take_ref(self._n_mic + i * BLOCK, BLOCK)
            pr, pm = float(np.mean(ref * ref)), float(np.mean(near * near))
            self._ref_pow.append(pr)
            if self.predictor is not None:
                ahead = self._take_ref(self._n_mic + (i + self.predictor.AHEAD) * BLOCK, BLOCK)
                self.predictor.step(float(np.mean(ahead * ahead)), pm, self.learn)
            clean = np.asarray(self._aec.process(near, ref), np.float32)  # AEC3 stays adapted either way
            if pr > 1e-4:  # loud enough to be heard over a quiet room's noise if it reached the mic
                self._reach.append(10 * np.log10((pm + 1e-12) / pr))
            echo_free = self.echo_free
            out[i * BLOCK : (i + 1) * BLOCK] = near if echo_free else clean
            if not self.ready and pr > 1e-6:
                self.far_active_s += BLOCK / RATE
                if pm > 1e-7:
                    self._removed = (self._removed + [10 * np.log10(pm / (float(np.mean(clean * clean)) + 1e-12))])[-50:]
                # converged, or our sound does not reach the microphone, or — in a room where AEC3 never gets
                # 10 dB — after long enough that waiting longer would only keep the user from interrupting (the
                # session's echo-ratio gate still applies)
                self.ready = ((self.far_active_s >= WARMUP_S and len(self._removed) >= 25
                               and float(np.median(self._removed)) >= 10.0)
                              or echo_free or self.far_active_s >= GIVE_UP_S)
        raw = self._mic[: n * BLOCK].copy()
        self._mic = self._mic[n * BLOCK :]
        self._n_mic += n * BLOCK
        drop = self._n_mic - self._ref_start
        if drop > 0:  # the past is no longer needed
            self._ref = self._ref[drop:]
            self._ref_start = self._n_mic
        return out, raw
