"""Chat models side by side: whatever is installed here, measured and scored the same way.

    .venv/bin/python bench/models.py [--out bench/results] [--intents 80] [--server NAME@URL ...] [--no-local]

Models: the bundled ones whose weights are assembled, every model pulled with `tingshuo models pull`, and each
``--server NAME@URL`` (an OpenAI-compatible server: Ollama's ``http://127.0.0.1:11434/v1``, vLLM, llama.cpp).
For each, with the companion's system prompt:
- **load** (s) and **RSS** added by loading it (in process only);
- **first token** (ms) and **tokens/s** (reply length in tokens ÷ time after the first), p50 over the prompts;
- **facts**: 20 questions (10 zh, 10 en) with one checkable fact each; right = the reply contains an accepted form
  of it (e.g. 长城 "2万"/"21196"/"两万"). Small n: it tells a 1.5B from a 7B, not a 7B from an 8B;
- **intent**: the turn plan read by that model (the label-token path: the bundled probe is trained on the bundled
  1.5B's logits and reads no other model) on ``--intents`` cases of the labelled test split, intent right
  and hard negatives that would act, scored as bench/understand.py scores them (every k-th case: the split is
  grouped by intent).
Writes ``models.json`` and ``models.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from intent_cases import load, role_of  # noqa: E402

from tingshuo.config import Settings  # noqa: E402

# (question, accepted answer forms as regular expressions): facts a companion is asked about, one per question
FACTS: list[tuple[str, str]] = [
    ("长城总共有多长？", r"2\.?1?\s*万|21[,，]?196|两万|二万"),
    ("《红楼梦》的作者是谁？", r"曹雪芹"),
    ("《茶馆》是谁写的？", r"老舍"),
    ("小品里的白云和黑土是谁演的？", r"赵本山|宋丹丹"),
    ("李白是哪个朝代的诗人？", r"唐"),
    ("珠穆朗玛峰有多高？", r"8[,，]?84[89]"),
    ("第一个登上月球的人是谁？", r"阿姆斯特朗|Armstrong"),
    ("人体有多少块骨头？", r"206"),
    ("太阳系最大的行星是哪一颗？", r"木星"),
    ("中国面积最大的省级行政区是哪个？", r"新疆"),
    ("What is the capital of Australia?", r"Canberra"),
    ("What is the capital of Canada?", r"Ottawa"),
    ("Who painted The Starry Night?", r"Van Gogh"),
    ("Who wrote Romeo and Juliet?", r"Shakespeare"),
    ("At what temperature in Fahrenheit does water boil at sea level?", r"212"),
    ("How many bones are in the adult human body?", r"206"),
    ("Who invented the telephone?", r"Bell"),
    ("What is the longest river in Africa?", r"Nile"),
    ("Which element has the chemical symbol Fe?", r"\biron\b"),
    ("In which year did the Berlin Wall fall?", r"1989"),
]


def candidates(settings: Settings, servers: list[str], local: bool) -> list[tuple[str, dict]]:
    """(label, llm settings) for every model to measure."""
    from tingshuo.assets import ASSETS
    from tingshuo.llm.hub import installed

    out: list[tuple[str, dict]] = []
    if local:
        for name in ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"):
            if ASSETS[name].is_ready(settings.cache_dir):
                out.append((name, {"backend": "llama-cpp", "model": name}))
        for name, _, _ in installed(settings.cache_dir):
            out.append((name, {"backend": "llama-cpp", "model": name}))
    for spec in servers:
        name, _, url = spec.rpartition("@")
        out.append((f"{name} @ {url}", {"backend": "openai", "base_url": url, "model_name": name}))
    return out


def measure(settings: Settings, label: str, llm_cfg: dict, n_intents: int) -> dict:
    from tingshuo.dialogue.persona import get_persona
    from tingshuo.intent import IntentReader, settle
    from tingshuo.llm import load_chat_model

    sys.path.insert(0, str(ROOT / "bench"))
    from understand import score  # noqa: E402

    cfg = settings.llm.model_copy(update=llm_cfg)
    proc = psutil.Process(os.getpid())
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    llm = load_chat_model(cfg, settings.cache_dir)
    load_s = time.perf_counter() - t0
    rss = (proc.memory_info().rss - rss0) / 1e9 if cfg.backend == "llama-cpp" else None
    system = get_persona("companion").system_prompt
    firsts, rates, right, answers = [], [], 0, []
    for q, ok in FACTS:
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": q}]
        t0 = time.perf_counter()
        first = None
        text = ""
        for delta in llm.stream(msgs, max_tokens=120, temperature=0.0):
            if first is None and delta.strip():
                first = time.perf_counter()
            text += delta
        end = time.perf_counter()
        if first is not None:
            firsts.append((first - t0) * 1000)
            n_tok = llm.count_tokens(text)
            if end > first and n_tok > 1:
                rates.append((n_tok - 1) / (end - first))
        good = re.search(ok, text, re.I) is not None
        right += good
        answers.append([q, text.strip(), good])
    reader = IntentReader(llm, settings.plan.threshold, None, settings.plan.voice_threshold, probe=False)
    # spread over the split (it is grouped by intent), hard negatives in their share of it
    every = load("test")
    negs, pos = [c for c in every if c.negative], [c for c in every if not c.negative]
    n_neg = min(len(negs), max(1, round(n_intents * len(negs) / len(every))))
    cases = (pos[:: max(1, len(pos) // (n_intents - n_neg))][: n_intents - n_neg]
             + negs[:: max(1, len(negs) // n_neg)][:n_neg])
    t0 = time.perf_counter()
    plans = [settle(c.text, reader.read(c.text, list(c.history), role_of(reader, c))) for c in cases]
    intents = score(cases, plans)
    return {"model": label, "backend": cfg.backend, "load_s": round(load_s, 1),
            "rss_gb": round(rss, 2) if rss is not None else None,
            "first_token_ms_p50": round(float(np.median(firsts))) if firsts else None,
            "tokens_per_s_p50": round(float(np.median(rates)), 1) if rates else None,
            "facts_right": right, "facts_n": len(FACTS),
            "intent_n": intents["n"], "intent_right": intents["intent_accuracy"],
            "hard_negatives_acted": intents["hard_negatives"]["acted"],
            "hard_negatives_n": intents["hard_negatives"]["n"],
            "intent_wall_s": round(time.perf_counter() - t0, 1), "answers": answers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--intents", type=int, default=80, help="cases of the intent test split (every k-th)")
    ap.add_argument("--server", action="append", default=[], help="NAME@URL of an OpenAI-compatible server")
    ap.add_argument("--no-local", action="store_true", help="only the --server models")
    a = ap.parse_args()
    settings = Settings()
    rows = []
    for label, cfg in candidates(settings, a.server, not a.no_local):
        print(f"measuring {label}…", file=sys.stderr)
        rows.append(measure(settings, label, cfg, a.intents))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(), "cores": os.cpu_count(),
              "rows": rows}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "models.json").write_text(json.dumps(result, ensure_ascii=False, indent=1), "utf-8")
    print("| model | load s | RSS GB | first token ms p50 | tokens/s p50 | facts right | intent right | "
          "hard negatives acting |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        rss = "—" if r["rss_gb"] is None else f"{r['rss_gb']:.2f}"
        print(f"| {r['model']} | {r['load_s']} | {rss} | {r['first_token_ms_p50']} | {r['tokens_per_s_p50']} | "
              f"{r['facts_right']}/{r['facts_n']} | {r['intent_right']:.1%} (n={r['intent_n']}) | "
              f"{r['hard_negatives_acted']}/{r['hard_negatives_n']} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
        names = [r["model"] for r in rows]
        for ax, key, title in ((axes[0], "first_token_ms_p50", "first token (ms)"),
                               (axes[1], "tokens_per_s_p50", "tokens/s"),
                               (axes[2], "intent_right", "intent right")):
            ax.barh(names, [r[key] or 0 for r in rows])
            ax.set_title(title, fontsize=9)
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        fig.savefig(a.out / "models.png", dpi=110)
    except Exception as e:  # plotting is a convenience; the JSON and table are the results
        print(f"(no plot: {e})", file=sys.stderr)


if __name__ == "__main__":
    main()
