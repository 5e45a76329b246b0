"""How a backend has been doing: a circuit breaker per backend, shared by every session on the stack.

After ``threshold`` failures in a row the breaker opens: sessions stop calling the backend (a TTS that raises on
every clause would otherwise cost each reply a failed synthesis and a second of silence) and degrade instead —
text instead of speech. After ``cooldown_s`` one call is let through (half-open); a success closes the breaker.
Readiness and the metrics read the same state.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class BackendHealth:
    name: str
    threshold: int = 2  # failures in a row that open the breaker
    cooldown_s: float = 30.0  # how long an open breaker waits before trying again
    failures: int = 0  # in a row
    total_failures: int = 0
    last_error: str = ""
    opened_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def state(self) -> str:
        """``closed`` (healthy), ``open`` (not called) or ``half-open`` (one try allowed)."""
        with self._lock:
            if self.opened_at is None:
                return "closed"
            return "half-open" if time.monotonic() - self.opened_at >= self.cooldown_s else "open"

    def available(self) -> bool:
        return self.state != "open"

    def failed(self, error: BaseException | str) -> None:
        with self._lock:
            self.failures += 1
            self.total_failures += 1
            self.last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            if self.failures >= self.threshold or self.opened_at is not None:
                self.opened_at = time.monotonic()  # (re)open: a failed half-open try waits a full cooldown again

    def succeeded(self) -> None:
        with self._lock:
            self.failures = 0
            self.opened_at = None

    def to_dict(self) -> dict[str, object]:
        return {"state": self.state, "failures_in_a_row": self.failures, "failures": self.total_failures,
                "last_error": self.last_error or None}
