"""Transcript store benchmark: what keeping, erasing and expiring calls costs, on SQLite and on PostgreSQL.

    .venv/bin/python bench/store.py [--out bench/results] [--calls 2000] [--turns 20]

Each backend starts from a store of ``--calls`` calls of ``--turns`` turns (30-60 Chinese characters each, as
spoken turns are), a tenth of them past the 30-day retention, then measures on the store's own writer thread
(as the server uses it):
- **write**: 500 ``add_turn`` calls queued, then ``flush``: turns per second (a live call writes ~1 turn per 5 s);
- **resume read**: ``export`` of one call (what a session continued on another server reads), ms;
- **erase item**: ``conversation.item.delete`` (SQLite: secure_delete + WAL checkpoint; PostgreSQL: VACUUM of the
  turns and risk tables), submit → done, ms, n=20;
- **delete call**: ``tingshuo sessions delete ID`` (the rows, then VACUUM of the database), ms, n=5;
- **start purge**: opening the store with retention on (the expired tenth deleted), ms.
The PostgreSQL server is a throwaway cluster on loopback (tests/pgcluster.py), not tuned. Writes ``store.json``
and ``store.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tingshuo.config import Settings  # noqa: E402
from tingshuo.store import Selection, open_store  # noqa: E402

CHARS = "我今天有点累工作上的事情很多不知道怎么说才好你觉得呢其实也没什么大不了的就是想找个人聊聊天气不错我们出去走走吧"


def sentence(rng: random.Random) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(30, 60)))


def fill(settings: Settings, calls: int, turns: int) -> list[str]:
    """A store with ``calls`` calls; a tenth of them last active 40 days ago. Their ids."""
    rng = random.Random(7)
    store = open_store(settings, retention=False)
    ids = []
    for c in range(calls):
        sid = f"sess_{c:06d}"
        ids.append(sid)
        store.open_session(sid, client="bench", key_label="open:bench")
        for t in range(turns):
            role = "user" if t % 2 == 0 else "assistant"
            store.add_turn(sid, f"item_{t:03d}", role, sentence(rng), language="zh", source="audio")
        if c % 50 == 0:
            store.add_risk(sid, "item_000", "input", "自杀", "care", 0.5, sentence(rng))
        store.close_session(sid)
    store.flush()
    old = time.time() - 40 * 86400
    expired = ids[: calls // 10]
    ph = "%s" if settings.store.url else "?"

    def age(conn) -> None:
        for sid in expired:
            conn.execute(f"UPDATE sessions SET started = {ph}, ended = {ph} WHERE id = {ph}", (old, old, sid))
            conn.execute(f"UPDATE turns SET created = {ph} WHERE session_id = {ph}", (old, sid))
        if not settings.store.url:
            conn.commit()

    store.with_connection(age)
    store.close()
    return ids


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def pct(xs: list[float]) -> dict:
    s = sorted(xs)
    return {"n": len(s), "p50": s[len(s) // 2], "p95": s[min(len(s) - 1, int(len(s) * 0.95))], "max": s[-1]}


def measure(settings: Settings, calls: int, turns: int) -> dict:
    t0 = time.perf_counter()
    ids = fill(settings, calls, turns)
    fill_s = ms(t0) / 1000
    t0 = time.perf_counter()
    store = open_store(settings)  # retention on: the expired tenth goes now
    purge_ms = ms(t0)
    out: dict = {"fill_s": fill_s, "start_purge_ms": purge_ms}
    try:
        left = len(store.export())
        out["calls_after_purge"] = left
        rng = random.Random(11)
        sid = ids[-1]
        t0 = time.perf_counter()
        for i in range(500):
            store.add_turn(sid, f"bench_{i}", "user", sentence(rng), language="zh", source="audio")
        store.flush()
        out["write_turns_per_s"] = 500 / (ms(t0) / 1000)
        reads = []
        for sid in ids[-20:]:
            t0 = time.perf_counter()
            store.export(sid)
            reads.append(ms(t0))
        out["resume_read_ms"] = pct(reads)
        erases = []
        for sid in ids[-40:-20]:
            t0 = time.perf_counter()
            store.erase_item(sid, "item_000")
            store.flush()
            erases.append(ms(t0))
        out["erase_item_ms"] = pct(erases)
        deletes = []
        for sid in ids[-45:-40]:
            t0 = time.perf_counter()
            store.delete(Selection(ids=(sid,)))
            deletes.append(ms(t0))
        out["delete_call_ms"] = pct(deletes)
    finally:
        store.close()
    if not settings.store.url:
        p = settings.store_path()
        out["file_mb"] = p.stat().st_size / 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--turns", type=int, default=20)
    a = ap.parse_args()
    from pgcluster import PgCluster

    results: dict = {"calls": a.calls, "turns_per_call": a.turns, "machine": platform.platform(),
                     "date": time.strftime("%Y-%m-%d"), "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(cache_dir=Path(tmp) / "cache")
        s.store.path, s.store.audio_dir = Path(tmp) / "t.sqlite3", Path(tmp) / "audio"
        results["backends"]["sqlite"] = measure(s, a.calls, a.turns)
        cluster = PgCluster()
        try:
            s = s.model_copy(deep=True)
            s.store.url = cluster.database()
            results["backends"]["postgres"] = measure(s, a.calls, a.turns)
        finally:
            cluster.destroy()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "store.json").write_text(json.dumps(results, indent=1))
    print(f"store: {a.calls} calls x {a.turns} turns, a tenth expired ({results['date']})")
    print(f"| | {' | '.join(results['backends'])} |\n|---|---|---|")
    rows = [("fill (s)", lambda r: f"{r['fill_s']:.1f}"),
            ("start with purge (ms)", lambda r: f"{r['start_purge_ms']:.0f}"),
            ("write (turns/s)", lambda r: f"{r['write_turns_per_s']:.0f}"),
            ("resume read p50/p95 (ms, n=20)", lambda r: "{p50:.1f} / {p95:.1f}".format(**r["resume_read_ms"])),
            ("erase item p50/p95 (ms, n=20)", lambda r: "{p50:.0f} / {p95:.0f}".format(**r["erase_item_ms"])),
            ("delete call p50/max (ms, n=5)", lambda r: "{p50:.0f} / {max:.0f}".format(**r["delete_call_ms"]))]
    for name, f in rows:
        print(f"| {name} | {' | '.join(f(r) for r in results['backends'].values())} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = ["start_purge_ms", "erase_item_ms", "delete_call_ms", "resume_read_ms"]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        width = 0.38
        for i, (name, r) in enumerate(results["backends"].items()):
            vals = [r[k] if isinstance(r[k], float) else r[k]["p50"] for k in keys]
            ax.bar([x + i * width for x in range(len(keys))], vals, width, label=name)
        ax.set_xticks([x + width / 2 for x in range(len(keys))], ["start+purge", "erase item", "delete call",
                                                                   "resume read"])
        ax.set_ylabel("ms (p50)")
        ax.set_yscale("log")
        ax.set_title(f"transcript store, {a.calls} calls x {a.turns} turns")
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.out / "store.png", dpi=110)
    except Exception as e:  # plotting is a convenience; the JSON and table are the results
        print(f"(no plot: {e})")


if __name__ == "__main__":
    main()
