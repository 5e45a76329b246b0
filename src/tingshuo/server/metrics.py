"""Prometheus metrics at ``/metrics``: what an operator needs to see a voice service degrade before users do.

- per-stage latency of every response (ASR, end-of-turn wait, first LLM token, first TTS audio, first audio heard)
- model workers: time jobs waited in the queue and ran (per worker), queued jobs, busy share of the last 20 s
- sessions: active, accepted and refused (by reason); responses by status; errors by code
- backend health: the circuit breakers' state, the transcript store's held writes
- the process itself (RSS, CPU, open files) from prometheus_client's standard collectors

One registry per server (tests start several in one process; the global registry would refuse duplicates).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tingshuo.engine import events as E

if TYPE_CHECKING:
    from tingshuo.engine.stack import ModelStack
    from tingshuo.store import TranscriptStore

CONTENT_TYPE = CONTENT_TYPE_LATEST
# response timings_ms keys → stage label
STAGES = {"asr": "asr", "turn_wait": "turn_wait", "understand": "understand", "search": "search",
          "llm_first_token": "llm_first_token", "tts_first_audio": "tts_first_audio", "first_audio": "first_audio",
          "first_reply_audio": "first_reply_audio", "total": "total"}
_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 40.0)
_STATES = {"closed": 0, "half-open": 1, "open": 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.sessions_active = Gauge("tingshuo_sessions_active", "Realtime sessions connected now", registry=r)
        self.sessions = Counter("tingshuo_sessions", "Session requests by outcome", ["outcome"], registry=r)
        self.stage = Histogram("tingshuo_stage_seconds", "Latency of each response stage", ["stage"],
                               buckets=_LATENCY_BUCKETS, registry=r)
        self.responses = Counter("tingshuo_responses", "Responses by final status", ["status"], registry=r)
        self.errors = Counter("tingshuo_errors", "Error events sent to clients, by code", ["code"], registry=r)
        # what the call page's mute is checked against: muted, the client sends nothing
        self.input_audio = Counter("tingshuo_input_audio_seconds", "Seconds of user audio received", registry=r)
        self.user_turns = Counter("tingshuo_user_turns", "User turns by how they arrived", ["source"], registry=r)
        self.queue = Histogram("tingshuo_worker_queue_seconds", "Time a model job waited for its worker",
                               ["worker"], buckets=_LATENCY_BUCKETS, registry=r)
        self.run = Histogram("tingshuo_worker_run_seconds", "Time a model job ran", ["worker"],
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.job_failures = Counter("tingshuo_worker_failures", "Model jobs that raised", ["worker"], registry=r)
        self.queued = Gauge("tingshuo_worker_queued", "Model jobs waiting now", ["worker"], registry=r)
        self.busy = Gauge("tingshuo_worker_utilization", "Share of the last 20 s a model worker was busy",
                          ["worker"], registry=r)
        self.backend = Gauge("tingshuo_backend_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                             ["backend"], registry=r)
        self.store_backlog = Gauge("tingshuo_store_backlog", "Transcript writes held in memory (store failing)",
                                   registry=r)

    # ------------------------------------------------------------------ hooks
    def on_job(self, worker: str, queued_s: float, ran_s: float, failed: bool) -> None:
        """Called by the model workers for every finished job (from their threads)."""
        self.queue.labels(worker).observe(queued_s)
        self.run.labels(worker).observe(ran_s)
        if failed:
            self.job_failures.labels(worker).inc()

    def on_event(self, ev: E.Event) -> None:
        if isinstance(ev, E.ResponseDone):
            self.responses.labels(ev.status).inc()
            for key, ms in (ev.timings_ms or {}).items():
                stage = STAGES.get(key)
                if stage is not None and ms is not None:
                    self.stage.labels(stage).observe(ms / 1000)
        elif isinstance(ev, E.TranscriptFinal):
            self.user_turns.labels("audio").inc()
        elif isinstance(ev, E.UnheardTurn):
            self.user_turns.labels("audio_unheard").inc()

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    # ------------------------------------------------------------------ exposition
    def render(self, stack: "ModelStack | None", store: "TranscriptStore | None") -> bytes:
        """The text exposition, with the gauges read from the live state first."""
        if stack is not None:
            for name, w in stack.workers.items():
                self.queued.labels(name).set(w.queued())
                self.busy.labels(name).set(round(w.utilization(), 4))
            for name, h in stack.health.items():
                self.backend.labels(name).set(_STATES[h.state])
        if store is not None:
            self.store_backlog.set(store.backlog)
        return generate_latest(self.registry)
