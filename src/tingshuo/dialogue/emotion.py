"""One emotion reading per user turn: the voice's cues fused with what the words say.

- The *voice* (:mod:`tingshuo.audio.prosody`) gives arousal (calm ↔ agitated), whisper and pace — measured.
  Arousal alone cannot tell joy from anger (same loudness and pitch rise) or sadness from tiredness.
- The *words* give valence and the kind of feeling: the chat model is asked how the user feels and its
  next-token probabilities over six labels are read (:meth:`ChatModel.emotion_probabilities`; one forward pass).
- Fusion multiplies the two: each label has an expected arousal, and the voice's measured arousal re-weights
  the text's distribution (a Gaussian likelihood around it). "我没事" said in a flat, slow, quiet voice leans to
  sad/tired; "气死我了" said calmly stays angry but with less confidence. With no words (ASR found none) or no
  LLM, the voice alone decides, with a confidence that says how little that is.

No neural speech-emotion model (emotion2vec, SenseVoice's emotion head) ships in a registry package today; one
would multiply in like the text's distribution, as a new backend with its configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tingshuo.audio.prosody import ProsodyCues, ProsodyFeatures
from tingshuo.llm.base import ChatModel, Message

LABELS = ("neutral", "happy", "sad", "angry", "anxious", "tired")
LABELS_ZH = {"neutral": "平静", "happy": "开心", "sad": "难过", "angry": "生气", "anxious": "焦虑", "tired": "疲惫"}
# the arousal each feeling usually comes with (−1 … 1), the anchor of the voice's likelihood
AROUSAL = {"neutral": 0.0, "happy": 0.45, "sad": -0.45, "angry": 0.6, "anxious": 0.35, "tired": -0.55}
SIGMA = 0.45  # how far a voice may stray from its feeling's usual arousal (wide: individual voices vary)
# The bundled 1.5B reads plain requests as 开心 ("给我讲个故事" 0.57, "北京有哪些好玩的地方" 0.60, next to 平静
# ~0.25), while clearly happy words score ≥ 0.95. Its 开心 is damped by this factor before fusion so only clear
# joy stays happy (calibrated on the labelled sentences in tests/test_emotion_policy.py).
TEXT_CALIBRATION = {"happy": 0.35}


@dataclass
class EmotionReading:
    label: str
    confidence: float
    probabilities: dict[str, float]
    text_probabilities: dict[str, float] | None
    arousal: float | None
    whisper: bool
    pace: str | None
    source: str  # "voice+text" | "text" | "voice"
    features: ProsodyFeatures | None = None
    cues: ProsodyCues | None = None
    previous: str | None = None  # the label of the user's previous turn

    @property
    def label_zh(self) -> str:
        return LABELS_ZH[self.label]

    def summary(self) -> dict[str, object]:
        """The JSON the CLI prints and the server sends (``tingshuo.emotion``)."""
        out: dict[str, object] = {
            "label": self.label, "label_zh": self.label_zh, "confidence": round(self.confidence, 3),
            "arousal": self.arousal, "whisper": self.whisper, "pace": self.pace, "source": self.source,
            "probabilities": {k: round(v, 3) for k, v in self.probabilities.items()},
            "text_probabilities": ({k: round(v, 3) for k, v in self.text_probabilities.items()}
                                   if self.text_probabilities else None),
            "previous": self.previous,
        }
        if self.features is not None:
            out["features"] = self.features.as_dict()
        if self.cues is not None:
            out["relative"] = self.cues.relative
            out["whisper_score"] = self.cues.whisper_score
            out["baseline_turns"] = self.cues.baseline_turns
        return out


def read_words(llm: ChatModel, history: list[Message], text: str) -> dict[str, float] | None:
    """P over :data:`LABELS` of the feeling in ``text`` said after ``history``, as the chat model reads it (its
    next-token probabilities over the Chinese labels); None where the backend gives none. The session and
    ``tingshuo listen`` both read the words this way."""
    p = llm.emotion_probabilities(history, text, [LABELS_ZH[k] for k in LABELS])
    return {k: p[LABELS_ZH[k]] for k in LABELS} if p else None


def fuse(text: dict[str, float] | None, cues: ProsodyCues | None, ser: dict[str, float] | None = None,
         features: ProsodyFeatures | None = None) -> EmotionReading:
    logp = np.zeros(len(LABELS))
    sources = []
    if text:
        p = np.array([text.get(k, 0.0) * TEXT_CALIBRATION.get(k, 1.0) for k in LABELS]) + 1e-3
        logp += np.log(p / p.sum())
        sources.append("text")
    if ser:
        p = np.array([ser.get(k, 0.0) for k in LABELS]) + 1e-3
        logp += np.log(p / p.sum())
        sources.append("ser")
    if cues is not None:
        # a first turn (no baseline yet) is judged against population priors only: a third of the weight
        w = 1.0 if cues.baseline_turns > 0 else 0.35
        mu = np.array([AROUSAL[k] for k in LABELS])
        logp += w * -((cues.arousal - mu) ** 2) / (2 * SIGMA**2)
        sources.insert(0, "voice")
    p = np.exp(logp - logp.max())
    p /= p.sum()
    i = int(p.argmax())
    conf = float(p[i])
    if not text and not ser:
        conf = min(conf, 0.5)  # the voice alone cannot tell joy from anger: never claim more than a coin flip
    return EmotionReading(LABELS[i], conf, {k: float(v) for k, v in zip(LABELS, p)}, text,
                          cues.arousal if cues else None, bool(cues and cues.whisper), cues.pace if cues else None,
                          "+".join(sources) or "none", features, cues)


@dataclass
class EmotionTrack:
    """The user's feelings across the session's turns (for the policy: "you sound better than before")."""

    readings: list[EmotionReading] = field(default_factory=list)

    @property
    def last(self) -> EmotionReading | None:
        return self.readings[-1] if self.readings else None

    def add(self, r: EmotionReading) -> None:
        self.readings.append(r)
        del self.readings[:-20]
