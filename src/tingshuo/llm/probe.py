"""Linear read-outs over a chat model's next-token logits, trained by this project on its own labelled turns.

Why: where a prompt asks the 1.5B for a one-token label, the label tokens' softmax carries a small share of what the
model has read; a linear probe over the logits of the few thousand tokens it finds plausible there separates far
better (the care probe: AUC 0.74 → 0.95 on its dev split; the turn plan: bench/train_plan_probe.py). A probe
belongs to one model and one prompt: both are fingerprinted in its file, and a reader falls back to its labels
for any other. Files are package data (``*.npz``, made by this project; same licence as the code)."""

from __future__ import annotations

import logging
from importlib import resources

import numpy as np

log = logging.getLogger(__name__)


class LinearProbe:
    """The shared part: which logits are read (``tokens``), their standardisation, the fingerprint. A subclass
    names its file (``PACKAGE``'s ``data/FILE``) and reads its own weights."""

    PACKAGE = ""
    FILE = ""

    def __init__(self, data: "np.lib.npyio.NpzFile") -> None:
        self.tokens = data["tokens"]
        self.mu, self.sd = data["mu"], data["sd"]
        self.fingerprint = str(data["fingerprint"])

    @classmethod
    def bundled(cls, fingerprint: str | None = None):
        """The bundled probe, or None (missing, unreadable, or made for another model or prompt than
        ``fingerprint``: the caller reads its labels instead)."""
        name = cls.FILE
        try:
            with resources.files(cls.PACKAGE).joinpath(f"data/{name}").open("rb") as f:
                probe = cls(np.load(f))
        except (FileNotFoundError, KeyError, ValueError) as e:
            log.warning("probe %s not loaded (%s): its labels are read instead", name, e)
            return None
        if fingerprint is not None and probe.fingerprint != fingerprint:
            log.info("probe %s made for %s, not %s: its labels are read instead", name, probe.fingerprint, fingerprint)
            return None
        return probe

    def features(self, logits: np.ndarray) -> np.ndarray:
        return (logits[self.tokens] - self.mu) / self.sd


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(-1, keepdims=True)
