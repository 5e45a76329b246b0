"""Realtime API benchmark: real clips streamed in real time through the unmodified OpenAI SDK to `tingshuo serve`.

    .venv/bin/python bench/server.py [--out bench/results] [--clips N]

What a client on the same machine sees (so protocol, JSON/base64 and pacing are included):
- end of the user's speech (Silero on the clip) → the reply's own words (the headline: the first transcript delta
  that, past any filler or stock opener such as 嗯/好的/我查一下/mm/okay, has ≥ 4 Han characters or ≥ 2 English
  words; the clauses measured are printed), and → the first ``response.output_audio.delta`` (a filler counts),
  one session, then two sessions talking at once;
- barge-in over the API: the client starts a second clip while the reply plays; onset of that speech →
  ``input_audio_buffer.speech_started`` and → the last audio delta received (the voice stops at the client).
The client calls once /readyz says the server takes calls; a call refused by admission control (``server_busy``)
waits for /readyz and tries again (the pairs are not retried: they would no longer be simultaneous), and the table
counts the refusals. Writes ``server.json`` and ``server.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import ZH_CLIP, librivox  # noqa: E402

from tingshuo.audio.io import float_to_pcm16, load_audio, resample  # noqa: E402
from tingshuo.audio.vad import WINDOW, window_probs  # noqa: E402
from tingshuo.config import load_settings  # noqa: E402
from tingshuo.engine import ModelStack  # noqa: E402

FRAME_S = 0.02
# A filler or stock opener is not the reply's own words (issue 22: the headline is when the answer itself starts)
_OPENER = re.compile(r"^\s*(?:(?:嗯+|恩+|哦+|啊+|好的?|好呀|好啊|行|当然(?:可以)?|没问题|我(?:来)?查一下|让我想想|"
                     r"mm+|hmm+|okay|ok|sure|well|alright|got it|let me (?:check|see))[\s，,。.！!、~～…]*)+", re.I)


def own_words(clause: str) -> bool:
    """Whether a transcript delta carries the reply's own words: after any leading filler or stock opener
    (嗯/好的/我查一下/mm/okay…), at least 4 Han characters or 2 English words."""
    rest = _OPENER.sub("", clause)
    return len(re.findall(r"[\u4e00-\u9fff]", rest)) >= 4 or len(re.findall(r"[A-Za-z']+", rest)) >= 2


def start_server(settings, stack) -> tuple[int, object, threading.Thread]:
    import uvicorn

    from tingshuo.server.app import WS_IMPL, create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings, stack), host="127.0.0.1", port=port,
                                        ws=WS_IMPL, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    while not srv.started:
        time.sleep(0.05)
    # like a load balancer, call only once /readyz says the server takes calls: a server still priming its models
    # refuses new sessions (admission control), and a benchmark of refusals measures nothing
    import httpx

    t0 = time.perf_counter()
    while httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code != 200:
        if time.perf_counter() - t0 > 180:
            raise SystemExit("the server did not become ready in 180 s")
        time.sleep(0.5)
    print(f"ready {time.perf_counter() - t0:.1f} s after start")
    return port, srv, th


def speech_span(x: np.ndarray) -> tuple[float, float]:
    p = window_probs(x)
    idx = np.flatnonzero(p >= 0.5)
    return idx[0] * WINDOW / 16000, (idx[-1] + 1) * WINDOW / 16000


async def stream(conn, x16: np.ndarray, t_start: float) -> None:
    """Send 20 ms frames on the wall clock, starting at ``t_start``."""
    pcm = float_to_pcm16(resample(x16, 16000, 24000)).tobytes()
    n = int(24000 * FRAME_S) * 2
    for k, i in enumerate(range(0, len(pcm), n)):
        delay = t_start + k * FRAME_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + n]).decode())


async def ready(port: int, limit_s: float = 60.0) -> float:
    """Seconds until /readyz answers 200 (admission control takes calls again)."""
    import httpx

    t0 = time.perf_counter()
    async with httpx.AsyncClient() as http:
        while (await http.get(f"http://127.0.0.1:{port}/readyz", timeout=5)).status_code != 200:
            if time.perf_counter() - t0 > limit_s:
                break
            await asyncio.sleep(0.5)
    return time.perf_counter() - t0


async def one_turn(port: int, clip: np.ndarray, barge: np.ndarray | None = None, retry: bool = True) -> dict:
    """One call; a refused call (server_busy) waits for /readyz and tries again, as a client would, up to three
    times (``retry``: False for the simultaneous pairs, where a retry would no longer be simultaneous)."""
    refused, waited = 0, 0.0
    for _ in range(3 if retry else 1):
        out = await _one_turn(port, clip, barge)
        if not out.get("refused"):
            break
        refused += 1
        waited += await ready(port)
    out["refusals"], out["waited_s"] = refused, round(waited, 1)
    return out


async def _one_turn(port: int, clip: np.ndarray, barge: np.ndarray | None = None) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="bench")
    on, off = speech_span(clip)
    lead = np.zeros(8000, np.float32)
    tail = np.zeros(16000 * 4, np.float32)
    out: dict = {}
    try:
        return await _turn(client, clip, barge, on, off, lead, tail, out)
    except Exception as e:  # websockets' ConnectionClosedError: admission control said no (1013 server_busy)
        if "server_busy" not in str(e):
            raise
        out["refused"] = True
        return out


async def _turn(client, clip, barge, on, off, lead, tail, out: dict) -> dict:
    async with client.realtime.connect(model="tingshuo") as conn:
        await conn.recv()  # session.created
        t0 = time.perf_counter() + 0.1
        t_end = t0 + 0.5 + off
        sender = asyncio.create_task(stream(conn, np.concatenate([lead, clip, tail]), t0))
        barge_task = None
        reply_audio_s = 0.0
        t_barge_on = None
        async for ev in conn:
            now = time.perf_counter()
            if ev.type == "response.output_audio.delta":
                out.setdefault("first_audio_ms", (now - t_end) * 1000)
                reply_audio_s += len(base64.b64decode(ev.delta)) / 48000
                if t_barge_on is not None:
                    out["last_delta_after_barge_ms"] = (now - t_barge_on) * 1000
                if barge is not None and barge_task is None and reply_audio_s >= 1.0:
                    b_on, _ = speech_span(barge)
                    tb = time.perf_counter() + 0.05
                    t_barge_on = tb + b_on
                    sender.cancel()
                    barge_task = asyncio.create_task(stream(conn, np.concatenate([barge, tail]), tb))
            elif ev.type == "response.output_audio_transcript.delta" and "first_reply_ms" not in out:
                out.setdefault("openers", []).append(ev.delta)
                if own_words(ev.delta):
                    out["first_reply_ms"] = (now - t_end) * 1000
                    out["first_reply_text"] = ev.delta
            elif ev.type == "input_audio_buffer.speech_started" and t_barge_on is not None:
                out.setdefault("speech_started_ms", (now - t_barge_on) * 1000)
            elif ev.type == "response.done":
                if barge is None or t_barge_on is not None:
                    out["status"] = ev.response.status
                    out["server_timings"] = (ev.response.model_extra or {}).get("tingshuo", {}).get("timings_ms", {})
                    break
        for t in (sender, barge_task):
            if t is not None:
                t.cancel()
    return out


def pct(xs: list[float]) -> dict:
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"n": 0, "p50": None, "p90": None}
    return {"n": len(xs), "p50": round(float(np.percentile(xs, 50))), "p90": round(float(np.percentile(xs, 90)))}


async def main_async(port: int, clips: list[np.ndarray]) -> dict:
    single = []
    for c in clips:
        single.append(await one_turn(port, c))
        print(f"  single   first audio {single[-1].get('first_audio_ms', float('nan')):6.0f} ms   reply "
              f"{single[-1].get('first_reply_ms', float('nan')):6.0f} ms", flush=True)
    pair = []
    for i in range(0, len(clips) - 1, 2):
        await ready(port)
        res = await asyncio.gather(one_turn(port, clips[i], retry=False), one_turn(port, clips[i + 1], retry=False))
        pair += res
        print("  2 at once " + "  ".join(f"{r.get('first_audio_ms', float('nan')):6.0f}" for r in res), flush=True)
    barge = []
    for i in range(min(3, len(clips) - 1)):
        barge.append(await one_turn(port, clips[i], clips[i + 1]))
        print(f"  barge-in  speech_started {barge[-1].get('speech_started_ms', float('nan')):5.0f} ms   last audio "
              f"{barge[-1].get('last_delta_after_barge_ms', float('nan')):5.0f} ms  {barge[-1].get('status')}",
              flush=True)
    return {"single": single, "pair": pair, "barge": barge}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--clips", type=int, default=6)
    args = ap.parse_args()
    stack = ModelStack.load(load_settings({"llm.temperature": 0.0, "llm.seed": 0}))
    run(stack, args.out, args.clips)


def run(stack: ModelStack, out: Path, n_clips: int = 6) -> dict:
    """The whole benchmark on a loaded stack (also called by bench/run.py)."""
    settings = stack.settings.model_copy(deep=True)
    out.mkdir(parents=True, exist_ok=True)
    settings.store.path = out / "bench-transcripts.sqlite3"
    paths = [ZH_CLIP, *sorted(librivox())][:n_clips]
    clips = [load_audio(p) for p in paths]
    port, srv, th = start_server(settings, stack)
    print(f"server on :{port}; {len(clips)} clips, streamed in real time")
    raw = asyncio.run(main_async(port, clips))
    srv.should_exit = True
    th.join(10)
    summary = {
        "single_first_audio_ms": pct([r.get("first_audio_ms") for r in raw["single"]]),
        "single_first_reply_ms": pct([r.get("first_reply_ms") for r in raw["single"]]),
        "pair_first_audio_ms": pct([r.get("first_audio_ms") for r in raw["pair"]]),
        "pair_first_reply_ms": pct([r.get("first_reply_ms") for r in raw["pair"]]),
        "barge_speech_started_ms": pct([r.get("speech_started_ms") for r in raw["barge"]]),
        "barge_last_audio_ms": pct([r.get("last_delta_after_barge_ms") for r in raw["barge"]]),
        "barge_cancelled": sum(r.get("status") == "cancelled" for r in raw["barge"]),
        "refused": {k: sum(r.get("refusals", 0) for r in v) for k, v in raw.items()},
        "not_served": {k: sum(bool(r.get("refused")) for r in v) for k, v in raw.items()},
    }
    print("\n| over the Realtime API (client on the same machine) | p50 | p90 | n |\n|---|---|---|---|")
    rows = [("end of speech → the reply's own words (first clause past fillers/openers), 1 session",
             "single_first_reply_ms"),
            ("end of speech → first audio delta (a filler included), 1 session", "single_first_audio_ms"),
            ("end of speech → the reply's own words, 2 sessions at once", "pair_first_reply_ms"),
            ("end of speech → first audio delta, 2 sessions at once", "pair_first_audio_ms"),
            ("barge-in onset → speech_started", "barge_speech_started_ms"),
            ("barge-in onset → last audio delta", "barge_last_audio_ms")]
    for label, key in rows:
        s = summary[key]
        print(f"| {label} | {s['p50']} | {s['p90']} | {s['n']} |")
    print(f"| barge-ins that cancelled the reply | {summary['barge_cancelled']} / {len(raw['barge'])} | | |")
    print("\nthe clauses measured as the reply's own words (one session), after what came before them:")
    for r in raw["single"]:
        before = r.get("openers", [])[:-1] if r.get("first_reply_text") else r.get("openers", [])
        print(f"  {r.get('first_reply_ms', float('nan')):6.0f} ms  {r.get('first_reply_text', '—')!r}"
              + (f"  (after {''.join(before)!r})" if before else ""))
    print("| calls refused (server_busy; single and barge-in calls retry when /readyz is 200) | " + ", ".join(
        f"{k} {v} ({summary['not_served'][k]} of {len(raw[k])} never served)" for k, v in summary["refused"].items())
        + " | | |")
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M")}
    (out / "server.json").write_text(json.dumps({"meta": meta, "summary": summary, "raw": raw}, indent=2,
                                                     default=float))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        data = [[r.get(k) for r in raw[g] if r.get(k) is not None] for g, k in
                (("single", "first_audio_ms"), ("single", "first_reply_ms"), ("pair", "first_audio_ms"),
                 ("pair", "first_reply_ms"), ("barge", "last_delta_after_barge_ms"))]
        ax.boxplot([d or [0] for d in data], showfliers=True)
        ax.set_xticks(range(1, 6), ["first audio\n1 session", "reply audio\n1 session", "first audio\n2 sessions",
                                    "reply audio\n2 sessions", "barge-in →\nlast audio"])
        ax.set_ylabel("ms")
        ax.set_title("tingshuo Realtime API, client-side latency (2-core CPU)")
        fig.tight_layout()
        fig.savefig(out / "server.png", dpi=110)
    except Exception as e:  # plotting is a convenience; the JSON and table are the results
        print(f"(no plot: {e})")
    return summary


if __name__ == "__main__":
    main()
