"""How something was said: prosodic features of a user turn, against the speaker's own baseline.

What is *measured* (per turn, from the audio alone):

- loudness: energy in dB over the active (non-pause) frames;
- pitch: median F0 in semitones and its spread (20th–80th percentile, semitones), from swift-f0 (MIT, 135 kB ONNX,
  ~6 ms per second of audio; the most accurate of the pitch trackers measured in
  shared/research/paralinguistics.md), on voiced frames only: F0 statistics of unvoiced speech are garbage;
- voiced fraction: voiced frames among active frames (≈0 for a whisper, 0.5–0.75 for normal speech);
- rate: syllable nuclei (loudness peaks on voiced frames) per second of active speech;
- pauses: silent gaps ≥ 250 ms inside the turn.

What is *derived* (rules on those measurements, relative to the speaker's running baseline in the session):

- arousal in [-1, 1] (calm ↔ agitated): a weighted sum of louder, higher, wider and faster than usual;
- whisper: almost no voiced frames while there is speech energy;
- pace: slow / normal / hurried from the rate against the baseline.

No emotion model or labelled emotional speech ships in any registry, so arousal and whisper are the acoustic
side; which emotion that arousal means comes from the words (:mod:`tingshuo.dialogue.emotion`). Before the
speaker has a baseline (their first turn), population priors stand in and the cues are marked less certain.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field

import numpy as np

RATE = 16000
HOP_S = 256 / RATE  # swift-f0's hop: 16 ms
ACTIVE_DB = 30.0  # frames within 30 dB of the turn's loud frames count as speech
PAUSE_S = 0.25


@dataclass(frozen=True)
class ProsodyFeatures:
    duration_s: float
    active_s: float  # time with speech energy
    loudness_db: float  # mean energy over active frames, dBFS
    voiced_fraction: float
    f0_median_hz: float | None  # None when too few voiced frames (whispers)
    f0_median_st: float | None  # semitones re 55 Hz
    f0_range_st: float | None  # 80th − 20th percentile
    rate: float  # syllable nuclei per active second
    pauses: int
    pause_s: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ProsodyCues:
    arousal: float  # -1 calm/low … +1 agitated/high
    whisper: bool
    whisper_score: float  # 0…1; above 0.5 = whispered
    pace: str  # "slow" | "normal" | "hurried"
    relative: dict[str, float]  # the deviations from the baseline behind the cues
    baseline_turns: int  # how many earlier turns the baseline is built from (0 = priors)


_F0_DETECTOR = None
_F0_LOCK = threading.Lock()


def _detector():
    global _F0_DETECTOR
    with _F0_LOCK:
        if _F0_DETECTOR is None:
            from swift_f0 import SwiftF0

            _F0_DETECTOR = SwiftF0(threads=1)
        return _F0_DETECTOR


def pitch_track(audio: np.ndarray, sr: int = RATE):
    """swift-f0 on ``audio``: a result with ``pitch_hz``, ``confidence`` (voiced ≥ 0.5), ``loudness_db`` per 16 ms."""
    det = _detector()
    with _F0_LOCK:  # one onnxruntime session shared by every caller
        return det.detect(np.asarray(audio, np.float32), sr)


def _runs(mask: np.ndarray, min_len: int = 1) -> list[tuple[int, int]]:
    """[start, end) of each run of True at least ``min_len`` long."""
    out: list[tuple[int, int]] = []
    start = None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        elif not m and start is not None:
            if i - start >= min_len:
                out.append((start, i))
            start = None
    if start is not None and len(mask) - start >= min_len:
        out.append((start, len(mask)))
    return out


def syllable_nuclei(loud_db: np.ndarray, voiced: np.ndarray, min_gap: int = 5, dip_db: float = 2.0) -> int:
    """Count syllable nuclei: peaks of the (smoothed) loudness contour on voiced frames, separated by a dip of at
    least ``dip_db`` and ``min_gap`` frames (80 ms) — de Jong & Wempe's speech-rate method. Voiced-segment counts
    alone merge syllables when speech gets faster, so they under-read rate exactly where it matters.

    Hand-written (20 lines) rather than pulling scipy (~40 MB) in for ``find_peaks``.
    """
    sm = np.convolve(loud_db, np.ones(3) / 3, mode="same")
    peaks: list[int] = []
    for i in range(1, len(sm) - 1):
        if not (voiced[i] and sm[i] >= sm[i - 1] and sm[i] > sm[i + 1]):
            continue
        if peaks:
            p = peaks[-1]
            dip = float(sm[p : i + 1].min())
            if i - p < min_gap or min(sm[p], sm[i]) - dip < dip_db:
                if sm[i] > sm[p]:
                    peaks[-1] = i  # the same syllable: keep its louder peak
                continue
        peaks.append(i)
    return len(peaks)


def extract(audio: np.ndarray, sr: int = RATE) -> ProsodyFeatures:
    """Measure one turn (16 kHz mono float32 preferred; other rates are tracked at their own rate)."""
    x = np.asarray(audio, np.float32)
    r = pitch_track(x, sr)
    loud = np.asarray(r.loudness_db, np.float64)
    n = len(loud)
    hop = len(x) / sr / max(1, n)
    if n == 0:
        return ProsodyFeatures(len(x) / sr, 0.0, -120.0, 0.0, None, None, None, 0.0, 0, 0.0)
    top = float(np.percentile(loud, 95))
    active = (loud > top - ACTIVE_DB) & (loud > -70)
    voiced = (np.asarray(r.confidence) >= 0.5) & active
    active_s = float(active.sum() * hop)
    energy = 10 ** (loud[active] / 10) if active.any() else np.array([1e-12])
    loudness = float(10 * np.log10(energy.mean() + 1e-12))
    vf = float(voiced.sum() / max(1, active.sum()))
    f0 = np.asarray(r.pitch_hz)[voiced]
    if len(f0) >= 10:
        st = 12 * np.log2(f0 / 55.0)
        med_hz: float | None = float(np.median(f0))
        med_st: float | None = float(np.median(st))
        rng: float | None = float(np.percentile(st, 80) - np.percentile(st, 20))
    else:
        med_hz = med_st = rng = None
    nuclei = syllable_nuclei(loud, voiced)
    rate = nuclei / active_s if active_s > 0.2 else 0.0
    # pauses: gaps of inactivity inside the turn (not its leading/trailing silence)
    idx = np.flatnonzero(active)
    pauses, pause_s = 0, 0.0
    if len(idx):
        inner = ~active[idx[0] : idx[-1] + 1]
        for a, b in _runs(inner, int(math.ceil(PAUSE_S / hop))):
            pauses += 1
            pause_s += (b - a) * hop
    return ProsodyFeatures(len(x) / sr, active_s, loudness, vf, med_hz, med_st, rng, rate, pauses, pause_s)


# neutral (rate in syllable nuclei per active second, pitch range 20–80th percentile in semitones), measured here:
# LibriVox English readers 2.9–4.3 / 3.4–6.4; Kokoro-read and FunASR Mandarin 3.8–5.4 / 1.8–5.8
PRIORS: dict[str, tuple[float, float]] = {"en": (3.6, 4.5), "zh": (4.8, 5.0)}


@dataclass
class SpeakerBaseline:
    """The speaker's usual way of talking in this session: a running mean over their earlier turns.

    Until a first turn exists, per-language population priors stand in (:data:`PRIORS`: Mandarin is faster in
    syllables and wider in pitch, its tones move F0); loudness and pitch level have no meaningful prior (they
    depend on the microphone and the speaker), so a first turn is judged on rate and range only, and its
    reading counts for less in the fusion.
    Whispered turns do not move the pitch or voicing baseline (they have none).
    """

    alpha: float = 0.35  # weight of the newest turn once a few exist
    turns: int = 0
    loudness_db: float | None = None
    f0_median_st: float | None = None
    f0_range_st: float = 4.0
    rate: float = 3.5
    voiced_fraction: float = 0.6
    _pitched: int = field(default=0, repr=False)

    def use_priors(self, language: str | None) -> None:
        """Before the first turn: the neutral rate and pitch range of speech in ``language``."""
        if self.turns == 0:
            self.rate, self.f0_range_st = PRIORS.get(language or "", PRIORS["en"])

    def _mix(self, old: float | None, new: float, n: int) -> float:
        if old is None or n == 0:
            return new
        w = max(self.alpha, 1.0 / (n + 1))
        return (1 - w) * old + w * new

    def update(self, f: ProsodyFeatures, whisper: bool) -> None:
        if f.active_s < 0.3:
            return
        if not whisper:
            self.loudness_db = self._mix(self.loudness_db, f.loudness_db, self.turns)
            self.voiced_fraction = self._mix(self.voiced_fraction, f.voiced_fraction, self.turns)
            if f.rate > 0:
                self.rate = self._mix(self.rate, f.rate, self.turns)
            if f.f0_median_st is not None and f.f0_range_st is not None:
                self.f0_median_st = self._mix(self.f0_median_st, f.f0_median_st, self._pitched)
                self.f0_range_st = self._mix(self.f0_range_st, f.f0_range_st, self._pitched)
                self._pitched += 1
            self.turns += 1


# Weights of the arousal sum, each deviation in "one clear step" units: +6 dB, +3 semitones, range ×1.5, rate ×1.3.
W_LOUD, W_PITCH, W_RANGE, W_RATE = 0.35, 0.30, 0.20, 0.15
WHISPER_VOICED = 0.2


def cues(f: ProsodyFeatures, base: SpeakerBaseline) -> ProsodyCues:
    """Arousal, whisper and pace of a turn relative to ``base`` (which this does not change)."""
    rel: dict[str, float] = {}
    # 1 at no voicing, 0.5 at the threshold (scaled by how voiced this speaker usually is), 0 at twice it
    thr = WHISPER_VOICED * float(np.clip(base.voiced_fraction / 0.6, 0.6, 1.4))
    whisper_score = float(np.clip(1 - f.voiced_fraction / (2 * thr), 0, 1)) if f.active_s >= 0.3 else 0.0
    whisper = whisper_score > 0.5
    score = 0.0
    if base.loudness_db is not None:
        rel["loudness_db"] = f.loudness_db - base.loudness_db
        score += W_LOUD * rel["loudness_db"] / 6.0
    if not whisper and f.f0_median_st is not None:
        if base.f0_median_st is not None:
            rel["pitch_st"] = f.f0_median_st - base.f0_median_st
            score += W_PITCH * rel["pitch_st"] / 3.0
        if f.f0_range_st is not None and base.f0_range_st > 0:
            rel["range_log2"] = math.log2(max(f.f0_range_st, 0.3) / base.f0_range_st)
            # capped at one step: the spread of a short or monotone turn is the least reliable measure
            score += W_RANGE * float(np.clip(rel["range_log2"] / math.log2(1.5), -1, 1))
    if not whisper and f.rate > 0 and base.rate > 0:  # a whisper has too few voiced peaks to count
        rel["rate_log"] = math.log(f.rate / base.rate)
        score += W_RATE * rel["rate_log"] / math.log(1.3)
    if whisper:
        score -= 0.2  # a whisper is low-arousal speech, whatever its rate
    arousal = float(np.tanh(score * 1.5))
    r = rel.get("rate_log", 0.0) / math.log(1.3)
    pace = "hurried" if r > 0.55 else "slow" if r < -0.55 else "normal"
    return ProsodyCues(round(arousal, 3), bool(whisper), round(whisper_score, 3),
                       pace, {k: round(v, 3) for k, v in rel.items()}, base.turns)
