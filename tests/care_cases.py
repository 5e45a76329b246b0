"""The care and safety cases of issue 20 (``tests/data/care/``, format in its README): loaded once, shared by the
tests and ``bench/care.py``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data" / "care"


@dataclass(frozen=True)
class CareCase:
    label: str  # care / refuse / allow
    kind: str
    text: str
    history: tuple[tuple[str, str], ...]  # (role, text), oldest first: role "user" or "assistant"
    role: str | None  # the character being played when the turn is said

    @property
    def lang(self) -> str:
        return "zh" if any("\u4e00" <= c <= "\u9fff" for c in self.text) else "en"


def _history(field: str) -> tuple[tuple[str, str], ...]:
    if field == "-":
        return ()
    out = []
    for part in field.split(" | "):
        who, _, text = part.partition(":")
        out.append(({"U": "user", "A": "assistant"}[who.strip()], text.strip()))
    return tuple(out)


def load(split: str) -> list[CareCase]:
    cases = []
    for line in (DATA / f"{split}.tsv").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        label, kind, text, history, role = line.split("\t")
        assert label in ("care", "refuse", "allow"), line
        cases.append(CareCase(label, kind, text, _history(history), None if role == "-" else role))
    return cases


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of a rate k/n (Wilson score: sane at 0 and n, where the normal interval is not)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


@dataclass(frozen=True)
class SafeCase:
    """A user turn in care mode: does it say they are safe now (``safe``) or not (``not``)?"""
    safe: bool
    text: str
    history: tuple[tuple[str, str], ...]


def load_safe(split: str) -> list[SafeCase]:
    cases = []
    for line in (DATA / f"safe_{split}.tsv").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        label, text, history = line.split("\t")
        assert label in ("safe", "not"), line
        cases.append(SafeCase(label == "safe", text, _history(history)))
    return cases
