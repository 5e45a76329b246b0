"""The turn plan (issue 19): how often the model's reading of a turn is right, per intent, on the labelled cases.

    .venv/bin/python bench/understand.py [--split test|dev] [--out bench/results]

Compares each case's hand label (tests/data/intents/*.tsv) with the plan the session acts on: what
``tingshuo.intent.IntentReader`` reads on the default 1.5B (its own llama.cpp context, warm), settled by
``tingshuo.intent.settle`` (readings the words cannot ask for held back; it never starts anything). The reader's
own figures, before settling, are reported beside them. Reports intent accuracy over all cases; per-intent precision
and recall with n; the voice request (any change asked for) as a detector with precision and recall, and whether
the dimension read was the one labelled (whisper and softer counted as one: "小声" is both in everyday speech);
hard negatives that would start an action (a song, a role, a story, a voice change, a search, a stop…) with their
sentences; and the time per read (p50/p90). Writes ``understand-<split>.json`` and a PNG of the per-intent figures.
Prompts and thresholds are tuned on ``dev``; ``test`` is the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from intent_cases import INTENTS, Case, load, role_of  # noqa: E402

from tingshuo.config import Settings  # noqa: E402
from tingshuo.engine.understand import voice_change  # noqa: E402
from tingshuo.intent import Intent, IntentReader, settle  # noqa: E402


def _dimension(v: dict) -> str | None:
    for k in ("speed", "volume", "style", "dialect"):
        if k in v:
            return f"{k}={v[k]}"
    if v.get("whisper") is True:
        return "volume=softer"
    if v.get("whisper") is False or v.get("reset"):
        return "reset"
    return None


def _read_dimension(it: Intent, text: str) -> str | None:
    """The change the session would make: the model's reading, measured from the words (engine's voice_change)."""
    if it.voice is None:
        return None
    ch = voice_change(text, it)
    if ch is None:
        return None
    if ch.speed is not None:
        return "speed=" + ("faster" if ch.speed > 1 else "slower")
    if ch.volume is not None:
        return "volume=" + ("louder" if ch.volume > 1 else "softer")
    if ch.whisper is True:
        return "volume=softer"
    if ch.reset or ch.whisper is False:
        return "reset"
    if ch.style:
        return f"style={ch.style}"
    if ch.dialect is not None:
        return f"dialect={ch.dialect}"
    return None


def score(cases: list[Case], plans: list[Intent]) -> dict:
    out: dict = {"n": len(cases)}
    right = sum(c.intent == p.intent for c, p in zip(cases, plans))
    out["intent_accuracy"] = round(right / len(cases), 3)
    per = {}
    for name in INTENTS:
        tp = sum(c.intent == name and p.intent == name for c, p in zip(cases, plans))
        n_true = sum(c.intent == name for c in cases)
        n_pred = sum(p.intent == name for p in plans)
        per[name] = {"n": n_true, "predicted": n_pred, "precision": round(tp / n_pred, 3) if n_pred else None,
                     "recall": round(tp / n_true, 3) if n_true else None}
    out["per_intent"] = per
    vt = [bool(c.voice) for c in cases]
    vp = [p.voice is not None for p in plans]
    tp = sum(a and b for a, b in zip(vt, vp))
    out["voice"] = {"n": sum(vt), "predicted": sum(vp), "precision": round(tp / sum(vp), 3) if sum(vp) else None,
                    "recall": round(tp / sum(vt), 3) if sum(vt) else None,
                    "dimension_right": sum(bool(c.voice) and _dimension(c.voice) == _read_dimension(p, c.text)
                                           for c, p in zip(cases, plans)),
                    "lasting_right": sum(bool(c.voice) and p.voice is not None
                                         and c.voice.get("lasting", True) == p.voice.lasting
                                         for c, p in zip(cases, plans))}
    negs = [(c, p) for c, p in zip(cases, plans) if c.negative]
    acted = [(c, p) for c, p in negs if p.acts or p.voice is not None]
    out["hard_negatives"] = {"n": len(negs), "acted": len(acted),
                             "cases": [[c.text, p.intent, p.voice.to_dict() if p.voice else None] for c, p in acted]}
    out["wrong"] = [[c.line, c.text, c.intent, p.intent, round(p.p, 2), _dimension(c.voice), _read_dimension(p, c.text)]
                    for c, p in zip(cases, plans)
                    if c.intent != p.intent or bool(c.voice) != (p.voice is not None)
                    or (c.voice and _dimension(c.voice) != _read_dimension(p, c.text))]
    ms = [p.ms for p in plans if p.ms]
    out["read_ms_p50"] = round(float(np.median(ms))) if ms else None
    out["read_ms_p90"] = round(float(np.percentile(ms, 90))) if ms else None
    return out


def reader_for(settings: Settings) -> IntentReader:
    from tingshuo.engine import ModelStack

    stack = ModelStack.load(settings, asr=False, tts=False)
    assert stack.planner is not None, "the turn plan needs an LLM"
    stack.planner.warmup()
    return stack.planner


def _table(r: dict, split: str) -> str:
    lines = [f"turn plan (settled, as the session acts) on the {split} split: n={r['n']}, intent right {r['intent_accuracy']:.1%}, "
             f"read p50 {r['read_ms_p50']} ms / p90 {r['read_ms_p90']} ms",
             f"{'intent':<12}{'n':>4}{'pred':>6}{'precision':>11}{'recall':>8}"]
    for k, v in r["per_intent"].items():
        f = (lambda x: "—" if x is None else f"{x:.2f}")
        lines.append(f"{k:<12}{v['n']:>4}{v['predicted']:>6}{f(v['precision']):>11}{f(v['recall']):>8}")
    v = r["voice"]
    lines.append(f"{'voice':<12}{v['n']:>4}{v['predicted']:>6}{v['precision'] or 0:>11.2f}{v['recall'] or 0:>8.2f}"
                 f"   dimension right {v['dimension_right']}/{v['n']}, lasting right {v['lasting_right']}/{v['n']}")
    h = r["hard_negatives"]
    lines.append(f"hard negatives that would act: {h['acted']} of {h['n']}")
    lines += [f"  {t!r} → {i} {vv or ''}" for t, i, vv in h["cases"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="test", choices=["dev", "test"])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--wrong", action="store_true", help="list every case read wrong")
    a = ap.parse_args()
    cases = load(a.split)
    reader = reader_for(Settings())
    t0 = time.perf_counter()
    raw = [reader.read(c.text, list(c.history), role_of(reader, c)) for c in cases]
    plans = [settle(c.text, p) for c, p in zip(cases, raw)]
    r = score(cases, plans)
    r["split"], r["wall_s"] = a.split, round(time.perf_counter() - t0, 1)
    r["reader_alone"] = alone = score(cases, raw)
    r["held_back"] = [[c.text, c.intent, list(p.held)] for c, p in zip(cases, plans) if p.held]
    r["scores"] = [[c.line, c.intent, p.scores] for c, p in zip(cases, raw)]
    print(_table(r, a.split))
    wrongly_held = [h for h in r["held_back"] if h[1] != "chat" and h[1] in h[2]]
    print(f"reader alone (before settle): intent right {alone['intent_accuracy']:.1%}, hard negatives that would "
          f"act {alone['hard_negatives']['acted']} of {alone['hard_negatives']['n']}; settle held back "
          f"{len(r['held_back'])} readings, {len(wrongly_held)} of them asked for: {wrongly_held}")
    if a.wrong:
        for w in r["wrong"]:
            print("  wrong:", w)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"understand-{a.split}.json").write_text(json.dumps(r, ensure_ascii=False, indent=1), "utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(r["per_intent"])
        x = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.bar(x - 0.2, [r["per_intent"][k]["precision"] or 0 for k in names], 0.4, label="precision")
        ax.bar(x + 0.2, [r["per_intent"][k]["recall"] or 0 for k in names], 0.4, label="recall")
        ax.axhline(0.9, color="grey", lw=0.8, ls="--")
        ax.axhline(0.8, color="grey", lw=0.8, ls=":")
        ax.set_xticks(x, [f"{k}\nn={r['per_intent'][k]['n']}" for k in names], fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"turn plan, {a.split} split (n={r['n']}), intent right {r['intent_accuracy']:.0%}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(a.out / f"understand-{a.split}.png", dpi=110)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
