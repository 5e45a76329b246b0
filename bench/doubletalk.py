"""Short cut-ins over the reply: heard, and judged as the session judges them, on 40 stop phrases a split.

    .venv/bin/python bench/doubletalk.py [--splits dev,test] [--per-cue 4] [--out bench/results]

The real-time duplex suite (bench/duplex.py) says a stop phrase over a story once or twice a run; this plays many
(:mod:`tingshuo.engine.doubletalk`): a reply of 8 clauses in the companion's voice, with 0-0.9 s gaps between
clauses, through the simulated room (40 ms, 300 ms reverberation, our echo ~6 dB below the user) or a headset (no
echo), the echo reaching the mic up to 40 ms late now and then; a cue said at a random moment after the canceller's
warm-up. Cues are our TTS in voices the assistant does not use: 5 stop phrases and 3 backchannels; ``dev`` voices
(jm_kumo, jf_nezumi) are for tuning, ``test`` voices (jf_tebukuro, jf_gongitsune) for reporting, ``test2`` the
same voices at other moments (the bounds read it). ``--raw-vad`` turns on the raw-microphone gate (opt-in).

Per split and condition:
- **heard**: the front end (AEC3, Silero, the echo gate) opened an utterance over us while the cue was said
  (the playback would pause);
- **judged stop**: of all cues, those heard *and* taken as an interruption by the session's rule
  (:func:`tingshuo.engine.turns.is_backchannel` on Whisper's transcript in the conversation's language and the
  confident speech the tracker counted) — for stop phrases the share that stops the reply, for backchannels the
  share that wrongly stops it;
- **false onsets**: utterances opened nowhere near a cue (our own echo), per minute of reply.

Not covered: event-loop timing and the end-of-turn wait (bench/duplex.py), a cut-in longer than 0.9 s (always an
interruption). Bounds at the end (``--strict``: exit 1 when one fails); the room's stop-phrase bound is a target
this tree does not meet. Writes ``doubletalk.json`` and ``doubletalk.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from tingshuo.audio.io import resample
from tingshuo.config import Settings
from tingshuo.engine import ModelStack
from tingshuo.engine.doubletalk import doubletalk_trial
from tingshuo.engine.simulate import RATE
from tingshuo.engine.turns import CUTIN_PHRASES, cutin_lean, is_backchannel
from tingshuo.tts import VoiceSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bounds import Bounds  # noqa: E402

REPLY = ["有一天，", "小明和小红一起去公园。", "他们看到一只受伤的小鸟，", "小红轻轻地把它捧在手心里。",
         "小明说：我们带它回家吧。", "第二天早上，", "小鸟的翅膀好多了，", "它在窗台上唱起了歌。"]
STOPS = ["停下。", "等一下。", "别说了。", "停停停。", "不要说了。"]
BACKCHANNELS = ["嗯。", "对。", "好的。"]
# test2: the test voices at other moments (another seed). The test split's figures were read once while the raw-mic
# gate was built (2026-12-07: a judge rule came of it), so test2 is the one no change has been looked at against.
VOICES = {"dev": ["jm_kumo", "jf_nezumi"], "test": ["jf_tebukuro", "jf_gongitsune"],
          "test2": ["jf_tebukuro", "jf_gongitsune"]}
WARMUP_S = 3.5  # a call's greeting: the canceller has learnt the room before the user cuts in


def run_split(stack: ModelStack, settings: Settings, split: str, room: bool, per_cue: int,
              judge: bool = True) -> dict:
    tts, asr = stack.tts, stack.asr
    assert tts is not None and asr is not None
    rate = tts.sample_rate
    clauses = [tts.synthesize(c, VoiceSettings(), "zh") for c in REPLY]
    rng = np.random.default_rng({"dev": 7, "test": 11, "test2": 17}.get(split, 13))
    out: dict = {"stop": {"n": 0, "heard": 0, "judged_stop": 0}, "backchannel": {"n": 0, "heard": 0, "judged_stop": 0},
                 "false_onsets": 0, "reply_s": 0.0, "cases": []}
    for voice in VOICES[split]:
        for text in STOPS + BACKCHANNELS:
            kind = "stop" if text in STOPS else "backchannel"
            cue = resample(tts.synthesize(text, VoiceSettings(voice=voice), "zh"), rate, RATE).astype(np.float32)
            for _ in range(per_cue):
                gaps = list(rng.uniform(0.0, 0.9, len(clauses)))
                seed = int(rng.integers(0, 1000))
                dur = sum(len(c) for c in clauses) / rate + sum(gaps)
                at = float(rng.uniform(WARMUP_S, dur - 1.5))
                r = doubletalk_trial(settings, clauses, rate, gaps, cue, at, seed, room=room)
                said = lean = None
                if r.heard_audio is not None:
                    said = asr.transcribe(r.heard_audio, "zh").text
                    if judge:
                        lean = cutin_lean(asr.phrase_scores(r.heard_audio, sum(CUTIN_PHRASES["zh"], []), "zh"), "zh")
                stops = said is not None and not is_backchannel(said, r.heard_speech_ms,
                                                                settings.duplex.backchannel_max_ms, lean=lean)
                c = out[kind]
                c["n"] += 1
                c["heard"] += r.heard
                c["judged_stop"] += stops
                out["false_onsets"] += r.false_onsets(WARMUP_S)
                out["reply_s"] += dur - WARMUP_S
                out["cases"].append({"voice": voice, "cue": text, "at_s": round(at, 2), "heard": r.heard,
                                     "transcript": said, "speech_ms": round(r.heard_speech_ms), "stopped": stops,
                                     "lean": None if lean is None else round(lean, 2)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splits", default="dev,test,test2")
    ap.add_argument("--per-cue", type=int, default=4, help="trials per voice and cue")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a bound fails")
    ap.add_argument("--raw-vad", action="store_true", help="hear the raw microphone too (duplex.raw_vad)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    settings.duplex.raw_vad = args.raw_vad or settings.duplex.raw_vad
    stack = ModelStack.load(settings, llm=False)
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "runs": {},
                     "raw_vad": settings.duplex.raw_vad}
    t0 = time.perf_counter()
    for split in args.splits.split(","):
        for cond, room in (("room", True), ("headset", False)):
            print(f"{split} / {cond} …", flush=True)
            results["runs"][f"{split}/{cond}"] = run_split(stack, settings, split, room, args.per_cue)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    bounds = check_bounds(results)
    results["bounds"] = bounds.as_json()
    (args.out / "doubletalk.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"\n{'split / condition':18s} {'stop phrases heard':>19s} {'stopped the reply':>18s} "
          f"{'backchannels heard':>19s} {'stopped it (wrong)':>19s} {'false onsets/min':>17s}")
    for name, r in results["runs"].items():
        s, b = r["stop"], r["backchannel"]
        per_min = r["false_onsets"] / max(r["reply_s"] / 60, 1e-9)
        print(f"{name:18s} {s['heard']:>12d} of {s['n']:<4d} {s['judged_stop']:>11d} of {s['n']:<4d} "
              f"{b['heard']:>12d} of {b['n']:<4d} {b['judged_stop']:>12d} of {b['n']:<4d} {per_min:>17.2f}")
    print(bounds.table("bounds (test voices where measured; the room's is a target not met yet)"))
    plot(results, args.out / "doubletalk.png")
    print(f"\nwrote {args.out / 'doubletalk.json'} and {args.out / 'doubletalk.png'} ({results['seconds']:.0f} s)")
    return 1 if args.strict and bounds.failed else 0


def check_bounds(results: dict) -> Bounds:
    """Shares of cues, on test2 (the moments nobody tuned against), else test, else the first split run."""
    runs = results["runs"]
    split = next((s for s in ("test2", "test") if f"{s}/room" in runs), next(iter(runs)).split("/")[0])
    share = lambda cond, kind, key: runs[f"{split}/{cond}"][kind][key] / max(1, runs[f"{split}/{cond}"][kind]["n"])  # noqa: E731
    b = Bounds()
    b.check("stop phrases that stop the reply, headset", share("headset", "stop", "judged_stop"), ">=", 0.75, "",
            "test_duplex::test_a_short_stop_phrase_stops_the_reply")
    b.check("stop phrases that stop the reply, room", share("room", "stop", "judged_stop"), ">=", 0.75, "",
            "target (AEC3 mutes double talk)")
    for cond in ("room", "headset"):
        b.check(f"backchannels that stop the reply, {cond}", share(cond, "backchannel", "judged_stop"), "<=", 0.1, "",
                "test_duplex::test_backchannels_do_not_stop_the_reply")
    return b


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["runs"])
    rows = [("stop phrase heard", "stop", "heard"), ("stop phrase stopped it", "stop", "judged_stop"),
            ("backchannel heard", "backchannel", "heard"), ("backchannel stopped it", "backchannel", "judged_stop")]
    fig, ax = plt.subplots(figsize=(10, 4))
    w = 0.8 / len(rows)
    for i, (label, kind, key) in enumerate(rows):
        vals = [results["runs"][n][kind][key] / max(1, results["runs"][n][kind]["n"]) for n in names]
        ax.bar(np.arange(len(names)) + i * w, vals, w, label=label)
    ax.set_xticks(np.arange(len(names)) + w * (len(rows) - 1) / 2, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of cues")
    ax.legend(fontsize=8)
    ax.set_title("short cut-ins over the reply (our echo 6 dB below the user in the room)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
