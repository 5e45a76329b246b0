"""What every stage of a session shares: the models, this session's lanes onto their threads, the outbox.

A stage owns its own state; what it needs of the others comes through here (the models and the event outbox) or
through the callables the :class:`~tingshuo.engine.session.Session` hands it when it composes the stages. The
outbox is the one way out of a session: every stage emits typed events into it, in order, and background steps
that crash are reported through it instead of being lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from tingshuo.asr.base import Transcript
from tingshuo.config import Settings
from tingshuo.engine.events import ErrorEvent, Event
from tingshuo.engine.faults import AsrFailed
from tingshuo.engine.stack import ModelStack
from tingshuo.engine.workers import Lane

log = logging.getLogger("tingshuo.engine")
T = TypeVar("T")


@dataclass
class Lanes:
    """One session's lane onto each model thread: sessions take turns on a thread instead of queueing behind one
    busy caller (:mod:`tingshuo.engine.workers`)."""

    asr: Lane
    llm: Lane
    tts: Lane
    turn: Lane
    guard: Lane  # the safety guard's own llama.cpp context
    plan: Lane  # the turn plan's own llama.cpp context (tingshuo.intent)
    judge: Lane  # stack.judge: the llm lane when the reply model judges too, its own thread when not

    @classmethod
    def of(cls, stack: ModelStack, owner: object) -> "Lanes":
        lanes = [stack.lane(n, owner) for n in ("asr", "llm", "tts", "turn", "guard", "plan")]
        own = stack.judge is not None and stack.judge is not stack.llm
        return cls(*lanes, stack.lane("judge", owner) if own else lanes[1])

    def shutdown(self) -> None:
        for lane in {id(x): x for x in (self.asr, self.llm, self.tts, self.turn, self.guard, self.plan,
                                        self.judge)}.values():
            lane.shutdown(cancel_futures=True)  # queued work of a closed session: nobody waits for it


async def run_on(pool: Executor, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a model thread, awaited without blocking the event loop."""
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


class Outbox:
    """The session's one ordered event stream, and the background tasks whose failures must reach it."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.tasks: set[asyncio.Task[Any]] = set()

    def emit(self, ev: Event) -> None:
        self._queue.put_nowait(ev)

    def end(self) -> None:
        self._queue.put_nowait(None)

    def drain(self) -> list[Event]:
        out = []
        while not self._queue.empty():
            ev = self._queue.get_nowait()
            if ev is None:  # closed: the end stays for events()
                self._queue.put_nowait(None)
                break
            out.append(ev)
        return out

    async def events(self) -> AsyncIterator[Event]:
        while True:
            ev = await self._queue.get()
            if ev is None:
                return
            yield ev

    def spawn(self, coro: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A background step that crashed is reported, never silently lost (the session goes on)."""
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            e = task.exception()
            log.error("engine task failed", exc_info=e)
            self.emit(ErrorEvent("internal_error", f"{type(e).__name__}: {e}"))


@dataclass
class Context:
    """The models, the settings of this session, its lanes and its outbox."""

    stack: ModelStack
    settings: Settings
    lanes: Lanes
    out: Outbox

    def emit(self, ev: Event) -> None:
        self.out.emit(ev)

    async def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript | None:
        """The words in ``audio`` (None: no words). A recognizer that raises is tried once more (a transient
        failure, a worker restarted); twice is :class:`AsrFailed` — the caller keeps the audio."""
        if self.stack.asr is None:
            self.emit(ErrorEvent("no_asr", "this session was started without speech recognition"))
            return None
        health = self.stack.backend("asr")
        last: Exception | None = None
        for _ in range(2):
            try:
                t = await run_on(self.lanes.asr, self.stack.asr.transcribe, audio, language)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a crashed recognizer must not end the session
                log.warning("speech recognition failed: %s", e)
                health.failed(e)
                last = e
                continue
            health.succeeded()
            return t if t.text.strip() else None
        raise AsrFailed(f"{type(last).__name__}: {last}")
