"""Emotion in, emotion out: what it costs and how well it hears, on the real default stack.

    .venv/bin/python bench/emotion.py [--out bench/results]     (also run by bench/run.py)

Reports: prosody analysis cost per second of audio; arousal/whisper accuracy on WORLD-transformed real clips
(the test set of tests/test_paralinguistics.py); the LLM's reading of feelings in words (accuracy on the labelled
sentences of tests/test_emotion_policy.py and its cost); render time of each speaking style against neutral;
end of speech → first audio on the file turns with emotion on and off. Writes ``emotion.json`` and
``emotion.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tests.conftest import CACHE, LIBRIVOX, ZH_CLIP  # noqa: E402
from tingshuo.audio import prosody as P  # noqa: E402
from tingshuo.audio import world  # noqa: E402
from tingshuo.audio.io import load_audio, resample  # noqa: E402
from tingshuo.dialogue.emotion import fuse  # noqa: E402
from tingshuo.engine import ModelStack  # noqa: E402
from tingshuo.tts import STYLES, VoiceSettings  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from turn import one_turn  # noqa: E402  (one file turn through a session: bench/turn.py)

TRANSFORMS = {"pitch ×1.3": (dict(shift=1.3), 1), "+6 dB": (dict(gain_db=6.0), 1), "rate ×1.3": (dict(tempo=1.3), 1),
              "pitch ÷1.3": (dict(shift=1 / 1.3), -1), "−6 dB": (dict(gain_db=-6.0), -1),
              "rate ÷1.3": (dict(tempo=1 / 1.3), -1), "whisper": (dict(whisper=True), 0)}


def hearing() -> dict:
    clips = sorted(LIBRIVOX.glob("*.wav")) + [CACHE / "testdata" / "fasr" / n for n in ("asr_example.wav", "vad_example.wav")]
    cost, rows = [], {k: [] for k in TRANSFORMS}
    for path in clips:
        x, sr = sf.read(path, dtype="float32")
        x = resample(x, sr, P.RATE)[: P.RATE * 8]
        ref = P.extract(world.transform(x, P.RATE))
        base = P.SpeakerBaseline()
        base.update(ref, False)
        for name, (kw, sign) in TRANSFORMS.items():
            y = world.transform(x, P.RATE, **kw)
            t = time.perf_counter()
            c = P.cues(P.extract(y), base)
            cost.append((time.perf_counter() - t) * 1000 / (len(y) / P.RATE))
            ok = c.whisper if sign == 0 else (not c.whisper and np.sign(c.arousal) == sign)
            rows[name].append(bool(ok))
    return {"prosody_ms_per_audio_s_p50": float(np.median(cost)),
            "accuracy": {k: float(np.mean(v)) for k, v in rows.items()}, "clips": len(clips)}


def words(stack: ModelStack) -> dict:
    from test_emotion_policy import LABELLED

    from tingshuo.dialogue.emotion import read_words
    from tingshuo.dialogue.persona import COMPANION

    system = [{"role": "system", "content": COMPANION.system_prompt}]  # as a session's first turn reads them
    ok, ms = 0, []
    for text, want in LABELLED:
        t = time.perf_counter()
        probs = read_words(stack.llm, system, text)
        ms.append((time.perf_counter() - t) * 1000)
        ok += fuse(probs, None).label == want
    return {"accuracy": ok / len(LABELLED), "n": len(LABELLED), "ms_p50_cold_text": float(np.median(ms))}


def styles(stack: ModelStack) -> dict:
    text = "今天天气真不错，我们一起去公园散步吧。"
    out = {}
    for name in STYLES:
        ts = []
        for _ in range(2):
            t = time.perf_counter()
            a = stack.tts.synthesize(text, VoiceSettings(style=name), "zh")
            ts.append(time.perf_counter() - t)
        out[name] = {"rtf": float(min(ts) / (len(a) / stack.tts.sample_rate)), "audio_s": len(a) / stack.tts.sample_rate}
    return out


def on_off(stack: ModelStack) -> dict:
    from conftest import librivox

    clips = [load_audio(p) for p in librivox()] + [load_audio(ZH_CLIP)]
    out = {}
    base = stack.settings
    for label, enabled in (("on", True), ("off", False)):
        stack.settings = base.model_copy(update={"emotion": base.emotion.model_copy(update={"enabled": enabled})})
        fa, und = [], []
        for a in clips:
            t = asyncio.run(one_turn(stack, a))
            fa.append(t.get("first_audio", float("nan")))
            und.append(t.get("understand", 0.0))
        out[label] = {"first_audio_p50": float(np.nanmedian(fa)), "first_audio_p90": float(np.nanpercentile(fa, 90)),
                      "understand_p50": float(np.median(und))}
    stack.settings = base
    return out


def run(stack: ModelStack, out_dir: Path) -> dict:
    res = {"hearing": hearing(), "words": words(stack), "styles": styles(stack), "file_turns": on_off(stack)}
    (out_dir / "emotion.json").write_text(json.dumps(res, indent=2, ensure_ascii=False))
    h, w, f = res["hearing"], res["words"], res["file_turns"]
    print(f"{'prosody analysis':34s} {h['prosody_ms_per_audio_s_p50']:6.1f} ms per second of audio")
    for k, v in h["accuracy"].items():
        print(f"  {k:32s} {v:6.0%} right ({h['clips']} real clips)")
    print(f"{'feelings in words (LLM)':34s} {w['accuracy']:6.0%} of {w['n']}, {w['ms_p50_cold_text']:.0f} ms (nothing cached)")
    print(f"{'file turns, first audio p50/p90':34s} on {f['on']['first_audio_p50']:.0f}/{f['on']['first_audio_p90']:.0f} ms"
          f"  off {f['off']['first_audio_p50']:.0f}/{f['off']['first_audio_p90']:.0f} ms"
          f"  (reading p50 {f['on']['understand_p50']:.0f} ms)")
    print("style render RTF (zh): " + "  ".join(f"{k} {v['rtf']:.2f}" for k, v in res["styles"].items()))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.bar(list(h["accuracy"]), list(h["accuracy"].values()))
    a1.set_ylim(0, 1.05)
    a1.set_title("hearing: right direction / whisper flag")
    a1.tick_params(axis="x", rotation=45)
    a2.bar(["on", "off"], [f["on"]["first_audio_p50"], f["off"]["first_audio_p50"]])
    a2.set_title("file turns: end of speech → first audio p50 (ms)")
    fig.tight_layout()
    fig.savefig(out_dir / "emotion.png", dpi=110)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from tingshuo.config import Settings

    run(ModelStack.load(Settings()), args.out)
