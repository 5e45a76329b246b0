"""The LLM source: the reply's words, generated on the LLM thread and sent to the event loop.

Before generating, a turn that may need a search asks the LLM whether it does (schema-constrained), and a search
speaks a filler while the provider is asked, then answers from a results note that starts with the source. The
thread stops at :class:`~tingshuo.engine.response.model.Stop`, and waits while a clause is being synthesized: on
2 cores llama.cpp's spinning threads and Kokoro slow each other down ~5x, and speech is far slower than text.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from tingshuo.config import Settings
from tingshuo.engine.events import SearchDone
from tingshuo.engine.response.model import Response, Stop
from tingshuo.engine.stack import ModelStack
from tingshuo.engine.workers import Lane
from tingshuo.llm.base import LlmError
from tingshuo.search import SearchError, decide, results_note, source_lead

log = logging.getLogger("tingshuo.engine")
END = object()  # the source is done
STARTED = object()  # the LLM worker picked the response up (queued time is not a stall)
_FILLER = {"zh": "我查一下。", "en": "Let me look that up."}  # spoken while a search runs


class ReplyDeltas:
    """What the LLM thread sends the text stage (text, markers, an exception), each stamped with its arrival.

    The stall watchdog counts from the last arrival, not from when the text stage next asks: the stage may be busy
    for seconds between two reads (a clause's safety check on a slow remote endpoint), and a stall that began
    meanwhile must still be reported as the stall it is, before a client-side timeout turns it into an error."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._q: asyncio.Queue[tuple[float, object]] = asyncio.Queue()
        self._last = time.perf_counter()

    def put_threadsafe(self, item: object) -> None:
        self._loop.call_soon_threadsafe(lambda: self._q.put_nowait((time.perf_counter(), item)))

    async def get(self, stall_s: float | None) -> object:
        """The next item; LlmError when nothing arrived within ``stall_s`` of the previous one (None: no limit)."""
        stalled = LlmError(f"the language model stopped answering (no output for {stall_s or 0:.0f} s)")
        if not self._q.empty():  # arrived while the stage was busy: not a stall, whatever the time now
            at, item = self._q.get_nowait()
        elif stall_s is None:
            at, item = await self._q.get()
        else:
            left = self._last + stall_s - time.perf_counter()
            if left <= 0:
                raise stalled
            try:
                at, item = await asyncio.wait_for(self._q.get(), left)
            except TimeoutError:
                raise stalled from None
        if stall_s is not None and at - self._last > stall_s and isinstance(item, Exception):
            # the backend's own timeout came after ours would have: the stall is the cause, say so
            raise stalled from item
        self._last = at
        return item


class LlmSource:
    """``produce`` runs on the LLM thread (or, for a fixed text, any thread) and feeds ``deltas``."""

    def __init__(self, r: Response, stack: ModelStack, settings: Settings, lane: Lane, deltas: ReplyDeltas,
                 stop: Stop, tts_idle: threading.Event) -> None:
        self.r, self.stack, self.cfg, self.lane = r, stack, settings, lane
        self.deltas, self.stop, self.tts_idle = deltas, stop, tts_idle
        self.loop = asyncio.get_running_loop()
        self.t0 = time.perf_counter()

    def lookup(self) -> tuple[str, str]:
        """Before generating: a filler is spoken while the provider is asked; the results (or why there are none)
        become a note after the user's words. Returns (note, the source the answer starts with)."""
        r = self.r
        assert r.search is not None
        provider = self.stack.search
        if provider is not None:  # with no provider there is nothing to wait for: the reply says so at once
            self.deltas.put_threadsafe(_FILLER.get(r.lang, _FILLER["en"]))
        results, failure, error = [], None, None
        t = time.perf_counter()
        if provider is None:
            failure = "off"
        else:
            try:
                results = provider.search(r.search.query, self.cfg.search.results)
            except SearchError as e:
                failure, error = "error", str(e)
                log.warning("search failed: %s", e)
        r.timings["search"] = (time.perf_counter() - t) * 1000
        done = SearchDone(r.rid, r.search.query, provider.name if provider is not None else "none",
                          [x.to_dict() for x in results], error)
        self.loop.call_soon_threadsafe(r.emit, done)
        return results_note(r.search.query, results, r.lang, failure), source_lead(results, r.lang)

    def avoid(self) -> list[str]:
        """What this reply must not copy long runs of: the last two replies in its messages and the persona's
        example answer (the 1.5B answered five different lines with its previous reply or the example, a word
        changed; docs/personas.md). Only in a role, where that was measured: out of one, "再说一遍" must be able
        to get the same words again (in a role it gets them said differently), and a story is left to its note."""
        r = self.r
        if r.persona is None or r.persona.key == self.cfg.dialogue.persona or r.story:
            return []
        said = [m["content"] for m in r.messages if m["role"] == "assistant"][-2:]
        return [*said, r.persona.example[1]] if r.persona.example else said

    def produce(self) -> None:
        """Push deltas to the loop until done or stopped."""
        r, deltas, stop = self.r, self.deltas, self.stop
        deltas.put_threadsafe(STARTED)  # the stall clock starts now, not while queued
        if stop.is_set() or r.fixed is not None:
            if r.fixed is not None:
                deltas.put_threadsafe(r.fixed)
            deltas.put_threadsafe(END)
            return
        llm = self.stack.llm
        assert llm is not None
        messages = msgs = r.messages
        lead = ""
        if r.search is None and r.search_candidate and llm.caps.json_schema:
            last = max(i for i, m in enumerate(messages) if m["role"] == "user")
            try:
                # the turn plan read this turn as needing current facts; the search decision confirms it and
                # writes the query (no cue-word gate: "美国现在的总统是谁" has none of 今天/最新)
                d = decide(llm, messages[:last], messages[last]["content"], threshold=self.cfg.search.threshold)
            except LlmError as e:
                log.warning("search decision failed: %s", e)
                d = None
            r.timings["search_decision"] = (time.perf_counter() - self.t0) * 1000
            if d is not None and d.search:
                r.search = d
        if r.search is not None and not stop.is_set():
            note, lead = self.lookup()
            msgs = [*messages, {"role": "system", "content": note}]
            if stop.is_set():
                deltas.put_threadsafe(END)
                return
            if lead:
                deltas.put_threadsafe(lead)
        gen = llm.stream(msgs, max_tokens=r.max_tokens or self.cfg.llm.max_tokens, temperature=self.cfg.llm.temperature,
                         stop=stop.event, avoid=self.avoid(), **({"prefix": lead} if lead else {}))
        try:
            for d in gen:
                if stop.is_set():
                    break
                deltas.put_threadsafe(d)
                # pause while a clause is synthesized, unless another session waits for the LLM thread:
                # then finish quickly and hand it over
                while not self.tts_idle.wait(0.05) and not self.lane.contended():
                    pass
        except Exception as e:  # LlmError or a backend bug: reported as an event
            deltas.put_threadsafe(e)
        finally:
            gen.close()
            deltas.put_threadsafe(END)
