"""Model worker threads shared by every session, served fairly.

Each model (ASR, LLM, TTS, the turn model, the safety guard) runs on one thread: none of them is thread-safe
(llama.cpp's context least of all), and on a small machine two inferences at once only slow each other down.
``ThreadPoolExecutor(1)`` would do that too, but first-come-first-served lets one chatty session queue ten jobs
ahead of everybody else. Here each session submits through its own *lane* and the thread takes the lanes in turn
(round robin), so with N sessions a job waits for at most N−1 others. The worker also measures what admission
control and the metrics need: time spent queued, time spent running, and how busy it was over the last seconds.

Hand-written rather than a library because no executor in the standard library or a kept package offers per-owner
round robin with these measurements; it is a condition variable and a few deques.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

JobObserver = Callable[[str, float, float, bool], None]  # (worker, queued s, ran s, failed)
_LIVE: "weakref.WeakSet[Worker]" = weakref.WeakSet()


def _python_exit() -> None:
    """At interpreter exit, as ``concurrent.futures`` does for its threads: drop queued jobs and wait for the
    running ones. A model thread killed mid-inference while the interpreter frees the model makes llama.cpp abort
    (a failing exit code after a clean Ctrl-C)."""
    workers = list(_LIVE)
    for w in workers:
        w.shutdown(wait=False, cancel_futures=True)
    for w in workers:
        w._thread.join()


threading._register_atexit(_python_exit)  # runs before non-daemon threads are joined


@dataclass
class _Job:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    queued_at: float
    owner: object = None
    busy_mark: float = 0.0  # the worker's busy time given to *other* owners when this job was queued


class Worker(Executor):
    """One model's thread. ``submit`` queues on the shared lane; ``lane(owner)`` gives a session its own."""

    WINDOW_S = 10.0  # how far back ``utilization`` and ``recent_wait`` look

    def __init__(self, name: str, observer: JobObserver | None = None) -> None:
        self.name = name
        self.observer = observer
        self._lanes: OrderedDict[object, deque[_Job]] = OrderedDict()
        self._cv = threading.Condition()
        self._shutdown = False
        self._running_since: float | None = None
        self._running_owner: object = None
        self._spans: deque[tuple[float, float]] = deque()  # finished jobs' (start, end) in the window
        self._waits: deque[tuple[float, float]] = deque()  # (started at, seconds queued) of jobs in the window
        self.jobs = 0
        self.failures = 0
        self.busy_s = 0.0
        self._busy_by: dict[object, float] = {}  # busy seconds per owner (for the waits caused by others)
        self._thread = threading.Thread(target=self._loop, name=name)
        self._thread.start()
        _LIVE.add(self)

    # ------------------------------------------------------------------ Executor
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.put(None, fn, *args, **kwargs)

    def put(self, owner: object, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._cv:
            if self._shutdown:
                raise RuntimeError(f"the {self.name} worker is shut down")
            self._lanes.setdefault(owner, deque()).append(
                _Job(fut, fn, args, kwargs, time.perf_counter(), owner, self._others_busy(owner)))
            self._cv.notify()
        return fut

    def lane(self, owner: object) -> "Lane":
        return Lane(self, owner)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cv:
            self._shutdown = True
            if cancel_futures:
                for q in self._lanes.values():
                    for job in q:
                        job.future.cancel()
                self._lanes.clear()
            self._cv.notify_all()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    # ------------------------------------------------------------------ state
    def _others_busy(self, owner: object, now: float | None = None) -> float:
        """Seconds this worker has run jobs of owners other than ``owner`` (the shared lane counts as other),
        including the running one (call with the lock held)."""
        busy = self.busy_s - (self._busy_by.get(owner, 0.0) if owner is not None else 0.0)
        if self._running_since is not None and (owner is None or self._running_owner is not owner):
            busy += (now or time.perf_counter()) - self._running_since
        return busy

    def queued(self, exclude: object = ...) -> int:
        """Jobs waiting (not running), optionally not counting one owner's."""
        with self._cv:
            return sum(len(q) for o, q in self._lanes.items() if o is not exclude)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing runs or waits on this thread; False if still busy after ``timeout`` seconds.
        (The test suite uses it to see a test leave work running behind.) It polls and sleeps outside the lock:
        the worker thread waits on ``_cv`` and ``put`` wakes a single waiter, which must never be this one."""
        deadline = time.perf_counter() + timeout
        while True:
            with self._cv:
                if self._running_since is None and not any(self._lanes.values()):
                    return True
            if time.perf_counter() >= deadline:
                return False
            time.sleep(0.05)

    def contended(self, owner: object) -> bool:
        """Is anyone else waiting for this thread? (A long job then stops pausing and finishes quickly.)"""
        return self.queued(exclude=owner) > 0

    def busy_with_others(self, owner: object) -> bool:
        """Is the thread running another owner's job, or are others queued? A job submitted now would wait."""
        with self._cv:
            running_other = self._running_since is not None and self._running_owner is not owner
        return running_other or self.contended(owner)

    def utilization(self, window_s: float | None = None) -> float:
        """Share of the last ``window_s`` seconds this thread spent running jobs (0…1)."""
        window_s = window_s or self.WINDOW_S
        now = time.perf_counter()
        start = now - window_s
        with self._cv:
            busy = sum(max(0.0, e - max(s, start)) for s, e in self._spans if e > start)
            if self._running_since is not None:
                busy += now - max(self._running_since, start)
        return min(1.0, busy / window_s)

    def recent_wait(self, quantile: float = 0.9) -> float:
        """The ``quantile``, over jobs started in the last window and jobs still queued, of how long each waited
        for *other sessions'* work. A session waiting for its own earlier job is not load; waiting for others is
        the sign that the model cannot keep real time for everyone."""
        now = time.perf_counter()
        with self._cv:
            waits = [w for t, w in self._waits if t > now - self.WINDOW_S]
            waits += [self._others_busy(job.owner, now) - job.busy_mark for q in self._lanes.values() for job in q]
        if not waits:
            return 0.0
        waits.sort()
        return waits[min(len(waits) - 1, int(quantile * len(waits)))]

    def cancel_owner(self, owner: object) -> None:
        """Drop an owner's queued jobs (a closed session's work nobody will wait for)."""
        with self._cv:
            q = self._lanes.pop(owner, None)
            self._busy_by.pop(owner, None)  # a closed session's share (its key would otherwise live forever)
        for job in q or ():
            job.future.cancel()

    # ------------------------------------------------------------------ thread
    def _next(self) -> _Job | None:
        for owner, q in self._lanes.items():
            if q:
                job = q.popleft()
                self._lanes.move_to_end(owner)  # this lane goes to the back of the round
                if not q and owner is not None:
                    del self._lanes[owner]
                self._running_owner = owner
                return job
        return None

    def _loop(self) -> None:
        while True:
            with self._cv:
                job = self._next()
                while job is None:
                    if self._shutdown:
                        return
                    self._cv.wait()
                    job = self._next()
                if not job.future.set_running_or_notify_cancel():
                    continue
                start = time.perf_counter()
                waited_for_others = self._others_busy(job.owner, start) - job.busy_mark
                self._running_since = start
            failed = False
            try:
                result = job.fn(*job.args, **job.kwargs)
            except BaseException as e:  # noqa: BLE001 — handed to the waiter, like ThreadPoolExecutor
                failed = True
                job.future.set_exception(e)
            else:
                job.future.set_result(result)
            finally:
                end = time.perf_counter()
                with self._cv:
                    self.busy_s += end - start
                    self._running_since = None
                    self._running_owner = None
                    self._spans.append((start, end))
                    while self._spans and self._spans[0][1] < end - self.WINDOW_S:
                        self._spans.popleft()
                    self._waits.append((start, max(0.0, waited_for_others)))
                    self._busy_by[job.owner] = self._busy_by.get(job.owner, 0.0) + (end - start)
                    while self._waits and self._waits[0][0] < end - self.WINDOW_S:
                        self._waits.popleft()
                    self.jobs += 1
                    self.failures += failed
                if self.observer is not None:
                    try:
                        self.observer(self.name, start - job.queued_at, end - start, failed)
                    except Exception:  # metrics must never take a model thread down
                        pass
            del job


class Lane(Executor):
    """A session's way into a :class:`Worker`: its jobs take their turn with other sessions' jobs."""

    def __init__(self, worker: Worker, owner: object) -> None:
        self.worker = worker
        self.owner = owner

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.worker.put(self.owner, fn, *args, **kwargs)

    def contended(self) -> bool:
        return self.worker.contended(self.owner)

    def busy_with_others(self) -> bool:
        return self.worker.busy_with_others(self.owner)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            self.worker.cancel_owner(self.owner)
