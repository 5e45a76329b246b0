"""Latency benchmark: speech→speech turns on real clips through the real default stack.

    .venv/bin/python bench/run.py [--repeat N] [--out bench/results]

Prints a table (ASR ms, emotion reading ms, LLM first token, TTS first audio, end of speech → first audio p50/p90, ASR and TTS
real-time factors, peak RSS) and writes ``results.json`` and ``latency.png`` to the results folder.
Clips: LibriVox English (Debian pocketsphinx-testdata) and FunASR's Mandarin example (fasr wheel).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import ZH_CLIP, librivox  # noqa: E402

from tingshuo.audio.io import load_audio  # noqa: E402
from tingshuo.config import Settings  # noqa: E402
from tingshuo.engine import ModelStack  # noqa: E402
from turn import one_turn  # noqa: E402  (one file turn through a session: bench/turn.py)
from tingshuo.tts import VoiceSettings  # noqa: E402

STAGES = ("asr", "understand", "llm_first_token", "tts_first_audio", "first_audio")


def pct(xs, q):
    return float(np.percentile(xs, q)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--no-duplex", action="store_true", help="skip the full-duplex scenario benchmark (bench/duplex.py)")
    ap.add_argument("--no-server", action="store_true", help="skip the Realtime API benchmark (bench/server.py)")
    ap.add_argument("--no-emotion", action="store_true", help="skip the emotion benchmark (bench/emotion.py)")
    ap.add_argument("--no-perform", action="store_true", help="skip voices/singing/stories (bench/perform.py)")
    ap.add_argument("--no-care", action="store_true", help="skip safety/care/search/coach (bench/care.py)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    stack = ModelStack.load(Settings())
    load_s = time.perf_counter() - t
    clips = [(p, "en") for p in librivox()] + [(ZH_CLIP, "zh")]
    turns = []
    for _ in range(args.repeat):
        for path, lang in clips:
            audio = load_audio(path)
            r = asyncio.run(one_turn(stack, audio))
            r.update(clip=path.name, lang=lang, audio_s=len(audio) / 16000)
            turns.append(r)
            print(f"  {path.name:50s} " + " ".join(f"{k}={r.get(k, float('nan')):.0f}" for k in STAGES), flush=True)
    # real-time factors measured directly on each model
    asr_rtf = [t["asr"] / 1000 / t["audio_s"] for t in turns if "asr" in t]
    tts_rtf = {}
    for lang, text in (("zh", "今天天气真不错，我们一起去公园散步吧！"), ("en", "The weather is lovely today, shall we take a walk in the park?")):
        rtfs = []
        for _ in range(3):
            t = time.perf_counter()
            a = stack.tts.synthesize(text, VoiceSettings(), lang)
            rtfs.append((time.perf_counter() - t) / (len(a) / stack.tts.sample_rate))
        tts_rtf[lang] = float(np.median(rtfs))
    import resource

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {}
    for k in STAGES:
        xs = [t[k] for t in turns if k in t]
        summary[k] = {"p50": pct(xs, 50), "p90": pct(xs, 90), "n": len(xs)}
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_s": load_s,
        "stages_ms": summary,
        "asr_rtf_p50": pct(asr_rtf, 50),
        "tts_rtf": tts_rtf,
        "peak_rss_mb": peak_rss_mb,
        "turns": turns,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"\nloaded in {load_s:.1f} s; {len(turns)} turns\n")
    print(f"{'stage':28s} {'p50 ms':>8s} {'p90 ms':>8s}")
    for k in STAGES:
        label = "end of speech → first audio" if k == "first_audio" else k
        print(f"{label:28s} {summary[k]['p50']:8.0f} {summary[k]['p90']:8.0f}")
    print(f"{'ASR RTF (p50)':28s} {result['asr_rtf_p50']:8.3f}")
    print(f"{'TTS RTF zh / en':28s} {tts_rtf['zh']:8.3f} {tts_rtf['en']:8.3f}")
    print(f"{'peak RSS MB':28s} {peak_rss_mb:8.0f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    data = [[t[k] for t in turns if k in t] for k in STAGES]
    ax.boxplot(data, tick_labels=["ASR", "emotion", "LLM 1st token", "TTS 1st audio", "speech end→audio"])
    ax.axhline(1500, ls="--", c="r", lw=0.8, label="target p50 1.5 s")
    ax.set_ylabel("ms")
    ax.set_title(f"tingshuo S2S latency, {len(turns)} turns, {os.cpu_count()} CPUs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "latency.png", dpi=120)
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'latency.png'}")
    if not args.no_emotion:
        sys.path.insert(0, str(Path(__file__).parent))
        import emotion

        print("\nemotion (bench/emotion.py):")
        emotion.run(stack, args.out)
    if not args.no_perform:
        sys.path.insert(0, str(Path(__file__).parent))
        import perform

        print("\nvoices, singing, stories, roles (bench/perform.py):")
        perform.run(stack, args.out)
    if not args.no_care:
        sys.path.insert(0, str(Path(__file__).parent))
        import care

        print("\nsafety, care, search, coach (bench/care.py):")
        care.run(stack, args.out)
    if not args.no_duplex:
        sys.path.insert(0, str(Path(__file__).parent))
        import duplex

        print("\nfull-duplex scenarios (bench/duplex.py):")
        duplex.run(stack, args.out, ["test", "heldout"])
    if not args.no_server:
        sys.path.insert(0, str(Path(__file__).parent))
        import server

        print("\nRealtime API (bench/server.py):")
        server.run(stack, args.out)


if __name__ == "__main__":
    main()
