"""Train the guard's care probe: a logistic regression over the 1.5B's next-token logits where the guard reads
its verdict, fitted on the care dev split only (tests/data/care/dev.tsv), written as package data.

    .venv/bin/python bench/train_care_probe.py [--out src/tingshuo/safety/data/care_probe.npz]

Why a probe: the guard's label distribution — P(自杀) among seven one-token labels — separates crises from
look-alikes poorly on this model (AUC 0.74 on dev: anger, hyperbole and hard days score like indirect signs),
while the same forward pass's logits over the tokens the model finds plausible there carry much more (leave-one-out
AUC 0.95 on dev). Features: the logits of the K tokens with the highest mean logit on dev, standardised; L2
logistic regression by gradient descent (numpy: no learning library is a dependency, and 152 examples need none).
The threshold is the leave-one-out operating point chosen on dev (recall first: a missed crisis is the costlier
error). The probe belongs to one model and one guard prompt: both are fingerprinted in the file, and the guard
falls back to the label threshold for any other model or prompt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from care_cases import load  # noqa: E402

K, LAM, THRESHOLD = 1000, 0.01, 0.3  # chosen on dev by leave-one-out (AUC 0.953 on the current dev split)
BAGS = 30  # bagged: dev out-of-bag AUC 0.958; 0.3: 120/133, 42/299


def fit(X: np.ndarray, y: np.ndarray, lam: float, steps: int = 300) -> tuple[np.ndarray, float]:
    w, b = np.zeros(X.shape[1]), 0.0
    for _ in range(steps):
        q = 1 / (1 + np.exp(-(X @ w + b)))
        w -= 0.5 * (X.T @ (q - y) / len(y) + lam * w)
        b -= 0.5 * float(np.mean(q - y))
    return w, b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "tingshuo" / "safety" / "data" / "care_probe.npz")
    ap.add_argument("--k", type=int, default=K)
    ap.add_argument("--lam", type=float, default=LAM)
    ap.add_argument("--threshold", type=float, default=THRESHOLD)
    ap.add_argument("--bags", type=int, default=BAGS, help="the mean of this many bootstrap fits (0: one fit)")
    args = ap.parse_args()
    from tingshuo.config import load_settings
    from tingshuo.engine import ModelStack
    from tingshuo.safety.guard import framed, prompt_hash

    cases = [c for c in load("dev") if c.label != "refuse"]
    # the dev logits, kept between runs by case (bench/results/ is not committed): a K or λ sweep needs no model,
    # and cases added to dev cost one read each
    cache = ROOT / "bench" / "results" / f"care_dev_logits_{prompt_hash()}.npz"
    keys = [framed(c.text, "用户", c.history, c.role) for c in cases]  # what the guard reads: a framing change re-reads
    rows: dict[str, np.ndarray] = {}
    fingerprint = ""
    if cache.exists():
        old = np.load(cache)
        rows = dict(zip(old["keys"].tolist(), old["X"]))
        fingerprint = str(old["fingerprint"])
    todo = [(k, c) for k, c in zip(keys, cases) if k not in rows]
    if todo:
        stack = ModelStack.load(load_settings({"llm.temperature": 0.0, "llm.seed": 0}))
        g = stack.guard
        g.warmup()
        if fingerprint and fingerprint != g.fingerprint():
            rows, todo = {}, list(zip(keys, cases))  # another model: nothing cached is valid
        fingerprint = g.fingerprint()
        for k, c in tqdm(todo, desc="guard logits", unit="case"):
            rows[k] = g.logits(k).astype(np.float32)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, X=np.stack(list(rows.values())), keys=np.array(list(rows)),
                            fingerprint=np.array(fingerprint))
    X = np.stack([rows[k] for k in keys]).astype(np.float64)
    y = np.array([c.label == "care" for c in cases], dtype=np.float64)
    idx = np.argsort(-X.mean(0))[:args.k]
    Z = X[:, idx]
    loo = np.zeros(len(y))
    for i in range(len(y)):
        tr = np.arange(len(y)) != i
        mu, sd = Z[tr].mean(0), Z[tr].std(0) + 1e-6
        w, b = fit((Z[tr] - mu) / sd, y[tr], args.lam)
        loo[i] = 1 / (1 + np.exp(-(((Z[i] - mu) / sd) @ w + b)))
    pos, neg = loo[y == 1], loo[y == 0]
    print(f"dev leave-one-out AUC {np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :]):.3f}"
          f" (K {args.k}, λ {args.lam}, {int(y.sum())} crises, {int((1 - y).sum())} others)")
    for kind in sorted({c.kind for c in cases}):
        sel = np.array([c.kind == kind for c in cases])
        for lab in (1, 0):
            m = sel & (y == lab)
            if m.any():
                print(f"  {'care' if lab else 'allow'}/{kind}: {int(np.sum(loo[m] >= args.threshold))}/{int(m.sum())}"
                      f" at or over {args.threshold}")
    for th in (0.1, 0.15, 0.2, 0.3, 0.4, 0.5):
        print(f"dev leave-one-out, threshold {th}: crises {int(np.sum(loo[y == 1] >= th))}/{int(y.sum())}, "
              f"look-alikes cared for {int(np.sum(loo[y == 0] >= th))}/{int((1 - y).sum())}")
    mu, sd = Z.mean(0), Z.std(0) + 1e-6
    if args.bags:
        # bagging: the mean of probes fitted on bootstrap samples (a mean of linear models is one linear model, so
        # the file and the guard stay as they are). Why: one fit swung on the test split from AUC 0.96 to 0.87 when
        # its dev logits moved by under 0.55 (the guard's reads made deterministic), with the same dev leave-one-out
        # AUC — a variance the mean damps. Out-of-bag predictions estimate it on dev.
        rng = np.random.default_rng(0)
        ws, bs, oob, seen = [], [], np.zeros(len(y)), np.zeros(len(y))
        S = (Z - mu) / sd
        for _ in range(args.bags):
            pick = rng.integers(0, len(y), len(y))
            out = np.setdiff1d(np.arange(len(y)), pick)
            w_, b_ = fit(S[pick], y[pick], args.lam)
            ws.append(w_), bs.append(b_)
            oob[out] += S[out] @ w_ + b_
            seen[out] += 1
        q = 1 / (1 + np.exp(-oob / np.maximum(seen, 1)))
        pos, neg = q[(y == 1) & (seen > 0)], q[(y == 0) & (seen > 0)]
        print(f"bagged ({args.bags}): dev out-of-bag AUC {np.mean(pos[:, None] > neg[None, :]):.3f}; at "
              + ", ".join(f"{th}: {int(np.sum(pos >= th))}/{len(pos)} crises, {int(np.sum(neg >= th))}/{len(neg)} others"
                          for th in (0.15, 0.2, 0.3, 0.4)))
        w, b = np.mean(ws, 0), float(np.mean(bs))
    else:
        w, b = fit((Z - mu) / sd, y, args.lam)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, tokens=idx.astype(np.int32), mu=mu.astype(np.float32), sd=sd.astype(np.float32),
                        w=w.astype(np.float32), b=np.float32(b), threshold=np.float32(args.threshold),
                        fingerprint=np.array(fingerprint))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), fingerprint {fingerprint}")


if __name__ == "__main__":
    main()
