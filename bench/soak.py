"""Soak and capacity: N callers streaming real speech to a real ``tingshuo serve`` over loopback WebSockets.

    .venv/bin/python bench/soak.py --sessions 2 --minutes 30          # the soak
    .venv/bin/python bench/soak.py --capacity 1,2,3 --minutes 3        # capacity: a few minutes per load level

Each caller behaves like a person on a call: it streams a real clip (LibriVox English, FunASR Mandarin) in real
time, 40 ms frames, with the server's own turn detection; keeps streaming silence while the reply plays (a
microphone never stops); pauses 1.5–3 s; speaks again. Measured per turn: end of the user's speech → first reply
audio. The server runs in its own process (its RSS is what is sampled, every 5 s).

Prints a table per time window (turns, latency p50/p90/p99, errors, RSS) and writes ``soak.json`` and
``soak.png`` (latency percentiles and RSS over time) — or ``capacity.json``/``capacity.png`` — to ``--out``.
Memory is "flat" when the RSS after warm-up stays within 10 % of its first post-warm-up sample.
Capacity is the most sessions per core whose p90 first-audio latency stays within ``--budget-ms`` with no errors
and no refused calls.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import ZH_CLIP, free_port, librivox  # noqa: E402

from tingshuo.audio.io import float_to_pcm16, load_audio, resample  # noqa: E402

RATE = 24000
FRAME = RATE * 40 // 1000  # 40 ms
ROOT = Path(__file__).resolve().parents[1]


def clips() -> list[tuple[str, np.ndarray, float]]:
    """(name, 24 kHz audio, end of speech in s) for every real clip."""
    out = []
    for path in [ZH_CLIP, *librivox()]:
        x = resample(load_audio(path, 16000), 16000, RATE).astype(np.float32)
        loud = np.flatnonzero(np.abs(x) > 0.05 * np.abs(x).max())
        out.append((path.stem, x, (loud[-1] + 1) / RATE if len(loud) else len(x) / RATE))
    return out


def b64(x: np.ndarray) -> str:
    return base64.b64encode(float_to_pcm16(x).tobytes()).decode()


class Caller:
    def __init__(self, idx: int, url: str, pool, stop_at: float, log: list[dict]) -> None:
        self.idx, self.url, self.pool, self.stop_at, self.log = idx, url, pool, stop_at, log
        self.rng = random.Random(idx)
        self.refused: str | None = None

    async def run(self) -> None:
        import websockets

        try:
            ws = await websockets.connect(self.url, max_size=None, open_timeout=30)
        except Exception as e:
            self.refused = f"connect: {e}"
            return
        async with ws:
            first = json.loads(await ws.recv())
            if first["type"] == "error":
                self.refused = first["error"]["code"]
                return
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": RATE}}}}}))
            state: dict = {"first_audio": None, "done": None, "errors": []}
            reader = asyncio.create_task(self._read(ws, state))
            silence = b64(np.zeros(FRAME, np.float32))
            t_next = time.perf_counter()

            async def paced(frame_b64: str) -> None:
                nonlocal t_next
                t_next += FRAME / RATE
                await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": frame_b64}))

            try:
                while time.time() < self.stop_at and not reader.done():
                    name, x, speech_end = self.pool[self.rng.randrange(len(self.pool))]
                    state.update(first_audio=None, done=None, errors=[], timings={})
                    t_start = time.perf_counter()
                    for i in range(0, len(x), FRAME):
                        await paced(b64(x[i : i + FRAME]))
                    t_end = t_start + speech_end
                    deadline = time.perf_counter() + 60
                    while state["done"] is None and time.perf_counter() < deadline and not reader.done():
                        await paced(silence)  # the microphone keeps sending while the reply plays
                    for _ in range(int(self.rng.uniform(1.5, 3.0) / 0.04)):
                        await paced(silence)
                    fa = state["first_audio"]
                    self.log.append({"t": time.time(), "caller": self.idx, "clip": name,
                                     "first_audio_ms": (fa - t_end) * 1000 if fa else None,
                                     # the server's own clock: from its end-of-speech mark to the reply's own words
                                     # (first_audio may be the short "嗯" acknowledgement)
                                     "first_reply_audio_ms": state["timings"].get("first_reply_audio"),
                                     "turn_wait_ms": state["timings"].get("turn_wait"),
                                     "status": state["done"] or "no_response", "errors": list(state["errors"])})
            finally:
                reader.cancel()

    async def _read(self, ws, state: dict) -> None:
        async for raw in ws:
            ev = json.loads(raw)
            t = ev["type"]
            if t == "response.output_audio.delta" and state["first_audio"] is None:
                state["first_audio"] = time.perf_counter()
            elif t == "response.done":
                state["done"] = ev["response"]["status"]
                state["timings"] = (ev["response"].get("tingshuo") or {}).get("timings_ms") or {}
            elif t == "error" and ev["error"]["code"] not in ("no_speech",):
                state["errors"].append(ev["error"]["code"])


def start_server(tmp: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "TINGSHUO_SERVER__PORT": str(port), "TINGSHUO_SERVER__DB_PATH": str(tmp / "t.sqlite3"),
           "TINGSHUO_SERVER__MAX_SESSIONS_PER_KEY": "64"}
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "tingshuo"), "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "w"))
    import httpx

    for _ in range(240):
        assert proc.poll() is None, (tmp / "server.log").read_text()[-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become ready")


async def soak(n: int, minutes: float, port: int, pid: int, pool) -> dict:
    import psutil

    log: list[dict] = []
    rss: list[tuple[float, float]] = []
    t0 = time.time()
    stop_at = t0 + minutes * 60
    proc = psutil.Process(pid)

    async def sample() -> None:
        while time.time() < stop_at + 5:
            rss.append((time.time() - t0, proc.memory_info().rss / 2**20))
            await asyncio.sleep(5)

    sampler = asyncio.create_task(sample())
    callers = [Caller(i, f"ws://127.0.0.1:{port}/v1/realtime", pool, stop_at, log) for i in range(n)]
    tasks = []
    for c in callers:  # staggered, as calls arrive
        tasks.append(asyncio.create_task(c.run()))
        await asyncio.sleep(2.0)
    await asyncio.gather(*tasks, return_exceptions=True)
    sampler.cancel()
    return {"sessions": n, "minutes": minutes, "turns": log, "rss_mb": rss, "t0": t0,
            "refused": [c.refused for c in callers if c.refused], "workers": worker_load(port, time.time() - t0)}


def worker_load(port: int, seconds: float) -> dict:
    """From the server's /metrics: per model worker, the share of the run it was busy and the mean queue wait;
    per response stage, the mean latency — where the capacity goes."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    sums: dict = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name.endswith(("_sum", "_count")) and ("worker" in smp.labels or "stage" in smp.labels):
                key = (smp.name.rsplit("_", 1)[0], smp.labels.get("worker") or smp.labels.get("stage"))
                sums.setdefault(key, {})[smp.name.rsplit("_", 1)[1]] = smp.value
    out: dict = {"busy_share": {}, "mean_queue_ms": {}, "mean_stage_ms": {}}
    for (name, label), v in sums.items():
        if name == "tingshuo_worker_run_seconds":
            out["busy_share"][label] = round(v.get("sum", 0) / seconds, 3)
        elif name == "tingshuo_worker_queue_seconds" and v.get("count"):
            out["mean_queue_ms"][label] = round(v["sum"] / v["count"] * 1000, 1)
        elif name == "tingshuo_stage_seconds" and v.get("count"):
            out["mean_stage_ms"][label] = round(v["sum"] / v["count"] * 1000, 1)
    return out


def pct(xs, q):
    return round(float(np.percentile(xs, q)), 1) if xs else None


def windows(run: dict, width_s: float) -> list[dict]:
    out = []
    t0, end = run["t0"], run["minutes"] * 60
    for a in np.arange(0, end, width_s):
        turns = [t for t in run["turns"] if a <= t["t"] - t0 < a + width_s]
        lat = [t["first_audio_ms"] for t in turns if t["first_audio_ms"] is not None]
        mem = [m for s, m in run["rss_mb"] if a <= s < a + width_s]
        out.append({"from_min": round(a / 60, 1), "turns": len(turns), "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90),
                    "p99_ms": pct(lat, 99), "no_response": sum(t["status"] == "no_response" for t in turns),
                    "failed": sum(t["status"] == "failed" for t in turns),
                    "errors": sum(len(t["errors"]) for t in turns), "rss_mb": round(max(mem), 1) if mem else None})
    return out


def summary(run: dict, warmup_min: float) -> dict:
    lat = [t["first_audio_ms"] for t in run["turns"] if t["first_audio_ms"] is not None]
    words = [t["first_reply_audio_ms"] for t in run["turns"] if t.get("first_reply_audio_ms") is not None]
    after = [m for s, m in run["rss_mb"] if s >= warmup_min * 60]
    growth = (max(after) - after[0]) / after[0] * 100 if after else None
    return {"turns": len(run["turns"]), "answered": len(lat), "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90),
            "p99_ms": pct(lat, 99), "reply_words_p50_ms": pct(words, 50), "reply_words_p90_ms": pct(words, 90),
            "errors": sum(len(t["errors"]) for t in run["turns"]),
            "error_codes": sorted({c for t in run["turns"] for c in t["errors"]}),
            "no_response": sum(t["status"] == "no_response" for t in run["turns"]),
            "failed": sum(t["status"] == "failed" for t in run["turns"]), "refused": run["refused"],
            "rss_after_warmup_mb": [round(after[0], 1), round(max(after), 1)] if after else None,
            "rss_growth_after_warmup_pct": round(growth, 1) if growth is not None else None,
            "memory_flat": growth is not None and growth <= 10.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=None, help="minutes excluded from the memory check (default 1/6)")
    ap.add_argument("--capacity", type=str, default=None, help="comma-separated session counts to try")
    ap.add_argument("--budget-ms", type=float, default=2500.0, help="p90 first audio a real-time call may take")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--replot", type=Path, default=None, help="redraw the PNG of a soak.json / capacity.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        doc = json.loads(args.replot.read_text())
        (plot_capacity if doc["capacity"] else plot)(doc["runs"], args.replot.with_suffix(".png"), doc["capacity"])
        return
    pool = clips()
    cores = os.cpu_count() or 1
    warmup = args.warmup if args.warmup is not None else args.minutes / 6
    levels = [int(x) for x in args.capacity.split(",")] if args.capacity else [args.sessions]
    results = []
    for n in levels:
        with tempfile.TemporaryDirectory() as d:
            port = free_port()
            server = start_server(Path(d), port)
            try:
                run = asyncio.run(soak(n, args.minutes, port, server.pid, pool))
            finally:
                server.terminate()
                server.wait(30)
        run["summary"] = summary(run, warmup)
        run["windows"] = windows(run, max(60.0, args.minutes * 60 / 6))
        results.append(run)
        s = run["summary"]
        print(f"\n== {n} session(s), {args.minutes:g} min on {cores} cores: {s['turns']} turns, first audio "
              f"p50/p90/p99 {s['p50_ms']}/{s['p90_ms']}/{s['p99_ms']} ms (the reply's own words p50/p90 "
              f"{s['reply_words_p50_ms']}/{s['reply_words_p90_ms']} ms), errors {s['errors']} {s['error_codes']}, "
              f"no response {s['no_response']}, failed {s['failed']}, refused {len(s['refused'])}")
        print(f"{'from min':>8} {'turns':>5} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'errors':>6} {'RSS MB':>7}")
        for w in run["windows"]:
            print(f"{w['from_min']:>8} {w['turns']:>5} {w['p50_ms'] or '-':>7} {w['p90_ms'] or '-':>7} "
                  f"{w['p99_ms'] or '-':>7} {w['errors']:>6} {w['rss_mb'] or '-':>7}")
        print(f"model workers busy (share of the run): {run['workers']['busy_share']}; mean queue wait ms: "
              f"{run['workers']['mean_queue_ms']}; mean stage ms: {run['workers']['mean_stage_ms']}")
        print(f"RSS after {warmup:g} min warm-up: {s['rss_after_warmup_mb']} MB, growth "
              f"{s['rss_growth_after_warmup_pct']} % → memory flat (≤ 10 %): {s['memory_flat']}")
    capacity = None
    if args.capacity:
        ok = [r["sessions"] for r in results if r["summary"]["p90_ms"] is not None
              and r["summary"]["p90_ms"] <= args.budget_ms and not r["summary"]["errors"]
              and not r["summary"]["refused"] and not r["summary"]["failed"]]
        capacity = {"budget_p90_ms": args.budget_ms, "cores": cores, "max_sessions": max(ok) if ok else 0,
                    "sessions_per_core": round((max(ok) if ok else 0) / cores, 2)}
        print(f"\ncapacity: {capacity['max_sessions']} real-time session(s) on {cores} cores "
              f"= {capacity['sessions_per_core']} per core (p90 first audio ≤ {args.budget_ms:g} ms, no errors)")
    name = "capacity" if args.capacity else "soak"
    doc = {"machine": {"cores": cores, "python": sys.version.split()[0]}, "budget_ms": args.budget_ms,
           "capacity": capacity, "runs": [{k: v for k, v in r.items() if k != "t0"} for r in results]}
    (args.out / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    (plot_capacity if capacity else plot)(results, args.out / f"{name}.png", capacity)
    print(f"wrote {args.out / (name + '.json')} and {args.out / (name + '.png')}")


def plot(results: list[dict], path: Path, capacity: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for r in results:
        mins = [w["from_min"] for w in r["windows"]]
        for q, style in (("p50_ms", "-"), ("p90_ms", "--"), ("p99_ms", ":")):
            ax1.plot(mins, [w[q] if w[q] is not None else np.nan for w in r["windows"]], style, marker="o",
                     label=f"{r['sessions']} sess {q[:3]}")
        ax2.plot([s / 60 for s, _ in r["rss_mb"]], [m for _, m in r["rss_mb"]], label=f"{r['sessions']} sess")
    ax1.set_ylabel("end of speech → first audio (ms)")
    ax1.legend(fontsize=7, ncol=3)
    ax1.grid(alpha=0.3)
    ax2.set_ylabel("server RSS (MiB)")
    ax2.set_xlabel("minutes")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    title = "tingshuo soak" if capacity is None else (f"capacity: {capacity['max_sessions']} sessions on "
                                                      f"{capacity['cores']} cores")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_capacity(results: list[dict], path: Path, capacity: dict) -> None:
    """Latency percentiles against the number of sessions (with the budget), and RSS over time per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    n = [r["sessions"] for r in results]
    for key, style, label in (("p50_ms", "o-", "first audio p50"), ("p90_ms", "s--", "first audio p90"),
                              ("reply_words_p50_ms", "^-", "reply's words p50"),
                              ("reply_words_p90_ms", "v--", "reply's words p90")):
        ax1.plot(n, [r["summary"][key] for r in results], style, label=label)
    ax1.axhline(capacity["budget_p90_ms"], color="red", lw=1, label="p90 budget")
    for r in results:
        if r["summary"]["refused"]:
            ax1.annotate(f"{len(r['summary']['refused'])} refused (server_busy)", (r["sessions"], r["summary"]["p50_ms"]),
                         textcoords="offset points", xytext=(-40, -18), fontsize=8)
    ax1.set_xticks(n)
    ax1.set_xlabel("concurrent sessions")
    ax1.set_ylabel("end of speech → audio (ms)")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    for r in results:
        ax2.plot([t / 60 for t, _ in r["rss_mb"]], [m for _, m in r["rss_mb"]], label=f"{r['sessions']} sessions")
    ax2.set_xlabel("minutes")
    ax2.set_ylabel("server RSS (MiB)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(f"capacity: {capacity['max_sessions']} real-time session(s) on {capacity['cores']} cores "
                 f"({capacity['sessions_per_core']} per core)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
