"""Where a spoken turn's time goes: every model job of one session, relative to the end of the user's speech.

    .venv/bin/python bench/timeline.py [--clips N] [--out bench/results] [--plan on|off]

Real clips (FunASR's Mandarin example, then LibriVox) are streamed in real time, 20 ms a frame, into a
:class:`~tingshuo.engine.Session` on the default stack, one fresh session per clip (a first turn). Every job the
model threads run (ASR, the end-of-turn models, the LLM, the plan, the guard, TTS) is recorded with its start,
end and queueing time, and every llama.cpp decode with its token count. End of speech is the last Silero window
with P(speech) ≥ 0.5 in the clip; first audio is the first ``reply.audio`` chunk of the reply.

Prints, per clip, the jobs from 3 s before the end of speech to the first audio, and a table of each thread's
busy time inside [end of speech, first audio] — the milliseconds that decide the latency and who owns them.
Writes ``timeline.json`` and ``timeline.png`` (a waterfall: one row per thread, one bar per job).

Why it exists: the turn plan's cost (issue 19) would not shrink when its reads were moved ahead onto partial
transcripts. The decode log showed that a small batch costs about one pass over the weights (two tokens took
330–440 ms with three contexts decoding at once on 2 cores), so the number of decodes after the end of speech,
not their tokens, is what the plan costs.
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

from tingshuo.audio.io import INPUT_RATE, load_audio  # noqa: E402
from tingshuo.audio.vad import WINDOW, window_probs  # noqa: E402
from tingshuo.config import load_settings  # noqa: E402
from tingshuo.engine import ModelStack, Session  # noqa: E402

FRAME = 320  # 20 ms at 16 kHz
LANES = ("asr", "turn", "llm", "plan", "guard", "tts")


def speech_end(audio: np.ndarray) -> float:
    """Seconds into the clip where its speech ends (the last window Silero calls speech)."""
    idx = np.flatnonzero(window_probs(audio) >= 0.5)
    return (idx[-1] + 1) * WINDOW / INPUT_RATE


def count_decodes(stack: ModelStack, log: list[tuple[str, float, float, int]]) -> None:
    """Wrap each llama.cpp context's ``eval`` to log (context, start, end, tokens)."""
    for name, model in (("llm", stack.llm), ("plan", getattr(stack.planner, "llm", None)),
                        ("guard", getattr(stack.guard, "llm", None))):
        inner = getattr(model, "llm", None)  # LlamaCppChat.llm is the llama_cpp.Llama
        if inner is None or getattr(inner.eval, "_timed", False):
            continue

        def timed(tokens, _eval=inner.eval, _name=name):
            t = time.perf_counter()
            try:
                return _eval(tokens)
            finally:
                log.append((_name, t, time.perf_counter(), len(tokens)))

        timed._timed = True  # type: ignore[attr-defined]
        inner.eval = timed


async def one(stack: ModelStack, audio: np.ndarray) -> dict:
    """Stream ``audio`` in real time, then 2 s of silence; the session's reply and the wall-clock marks."""
    s = Session(stack)
    got: dict = {}

    async def drain():
        async for ev in s.events():
            if ev.type == "reply.audio" and "first_audio" not in got:
                got["first_audio"] = time.perf_counter()
            elif ev.type == "response.done":
                got["done"] = ev

    task = asyncio.create_task(drain())
    t0 = time.perf_counter()
    for i in range(0, len(audio), FRAME):
        await s.push_audio(audio[i:i + FRAME])
        await asyncio.sleep(max(0.0, t0 + (i + FRAME) / INPUT_RATE - time.perf_counter()))
    for _ in range(100):
        await s.push_audio(np.zeros(FRAME, np.float32))
        await asyncio.sleep(FRAME / INPUT_RATE)
    await s.wait_idle()
    await s.close()
    await task
    got["t0"] = t0
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--plan", choices=("on", "off"), default="on", help="the turn plan (plan.enabled)")
    args = ap.parse_args()
    stack = ModelStack.load(load_settings({"llm.temperature": 0.0, "llm.seed": 0,
                                           "plan.enabled": args.plan == "on"}))
    jobs: list[tuple[str, float, float, float]] = []
    decodes: list[tuple[str, float, float, int]] = []
    stack.observer = lambda name, queued, ran, failed: jobs.append((name, time.perf_counter() - ran,
                                                                     time.perf_counter(), queued))
    count_decodes(stack, decodes)
    clips = [ZH_CLIP, *sorted(librivox())][: args.clips]
    runs = []
    for path in clips:
        audio = load_audio(path)
        jobs.clear()
        decodes.clear()
        got = asyncio.run(one(stack, audio))
        end = got["t0"] + speech_end(audio)
        first = got.get("first_audio")
        done = got.get("done")
        rel = lambda t: round((t - end) * 1000, 1)  # noqa: E731
        run = {"clip": path.name, "reply": done.text if done else None,
               "first_audio_ms": rel(first) if first else None,
               "timings_ms": dict(done.timings_ms) if done else {},
               "jobs": [{"thread": n, "start_ms": rel(a), "end_ms": rel(b), "queued_ms": round(q * 1000, 1)}
                        for n, a, b, q in sorted(jobs, key=lambda j: j[1]) if b > end - 3],
               "decodes": [{"context": n, "start_ms": rel(a), "end_ms": rel(b), "tokens": k}
                           for n, a, b, k in decodes if b > end - 3]}
        stop = first if first else end + 10
        run["busy_ms"] = {lane: round(sum(max(0.0, min(b, stop) - max(a, end)) for n, a, b, _ in jobs if n == lane)
                                      * 1000, 1) for lane in LANES}
        run["decodes_after_end"] = {c: sum(1 for n, a, b, _ in decodes if n == c and b > end and a < stop)
                                    for c in ("llm", "plan", "guard")}
        runs.append(run)
        print(f"\n{path.name}: first audio {run['first_audio_ms']} ms after the end of speech; "
              f"reply {(run['reply'] or '')[:40]!r}")
        for j in run["jobs"]:
            if first is None or j["start_ms"] < run["first_audio_ms"]:
                print(f"  {j['thread']:6s} {j['start_ms']:8.0f} → {j['end_ms']:8.0f}  "
                      f"({j['end_ms'] - j['start_ms']:5.0f} ms, queued {j['queued_ms']:4.0f})")
    print("\n| clip | first audio ms | " + " | ".join(f"{lane} busy" for lane in LANES)
          + " | decodes llm/plan/guard |")
    print("|---|---|" + "---|" * len(LANES) + "---|")
    for run in runs:
        d = run["decodes_after_end"]
        print(f"| {run['clip'][:28]} | {run['first_audio_ms']} | "
              + " | ".join(f"{run['busy_ms'][lane]:.0f}" for lane in LANES)
              + f" | {d['llm']}/{d['plan']}/{d['guard']} |")
    print("(busy: each thread's running time between the end of speech and the first audio; threads run at once "
          "on 2 cores, so the sum exceeds the wall time)")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M"), "plan": args.plan}
    (args.out / "timeline.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2, ensure_ascii=False))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.2 * len(runs)), squeeze=False)
        for ax, run in zip(axes[:, 0], runs):
            for row, lane in enumerate(LANES):
                bars = [(j["start_ms"], j["end_ms"] - j["start_ms"]) for j in run["jobs"] if j["thread"] == lane]
                ax.broken_barh(bars, (row - 0.4, 0.8), color=f"C{row}")
            ax.axvline(0, color="k", lw=1)
            if run["first_audio_ms"] is not None:
                ax.axvline(run["first_audio_ms"], color="r", lw=1)
            ax.set_yticks(range(len(LANES)), LANES)
            ax.set_xlim(-3000, (run["first_audio_ms"] or 3000) + 500)
            ax.set_title(f"{run['clip']} (black: end of speech; red: first audio)", fontsize=9)
        axes[-1, 0].set_xlabel("ms from the end of speech")
        fig.tight_layout()
        fig.savefig(args.out / "timeline.png", dpi=100)
    except Exception as e:  # plotting is a convenience; the JSON and table are the results
        print(f"(no plot: {e})")


if __name__ == "__main__":
    main()
