"""The session's replies: which one is current, how each is set up and launched, released, cancelled.

Every reply is built here, from one prompt builder (:class:`~tingshuo.engine.state.Prompts`) and one set-up from
the turn's plan (:meth:`Response.configure`): a heard or typed turn's (maybe speculative, held behind its gate
until the turn is taken), ``respond()``'s (the Realtime ``response.create``), a greeting or a fixed notice.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from tingshuo.engine.events import ResponseStarted
from tingshuo.engine.plan import TurnPlan
from tingshuo.engine.response.model import Response, ResponseOptions
from tingshuo.engine.response.run import Studio, run_response
from tingshuo.llm.base import Message
from tingshuo.script import text_language

_ids = itertools.count(1)


class Replies:
    def __init__(self, studio: Studio, speak: bool) -> None:
        self.studio, self.speak = studio, speak
        self.current: Response | None = None
        self.tasks: set[asyncio.Task[None]] = set()  # every response task, speculative ones included
        self.after: Callable[[], None] | None = None  # told when a reply (or what was heard of it) is recorded

    def _finished(self, r: Response) -> None:
        if self.current is r:
            self.current = None
        if self.after is not None and r.record and r.gate.is_set():
            self.after()

    def new(self, user_text: str, o: ResponseOptions | None = None) -> Response:
        o = o or ResponseOptions()
        return Response(f"resp_{next(_ids)}", user_text, self.studio.ctx.emit,
                        speak=self.speak if o.speak is None else o.speak, voice=o.voice, max_tokens=o.max_tokens,
                        record=o.record, t_end=time.perf_counter())

    def launch(self, r: Response) -> Response:
        """Every response task is tracked, so ``close()`` can cancel speculative ones too."""
        r.task = asyncio.create_task(run_response(r, self.studio, self._finished))
        self.tasks.add(r.task)
        r.task.add_done_callback(self.tasks.discard)
        return r

    def open_gate(self, r: Response, t_end: float, timings: dict[str, float]) -> None:
        """The turn is ours: the reply becomes current and what it held back goes out."""
        r.t_end = t_end
        r.timings.update(timings)
        self.current = r
        r.sink(ResponseStarted(r.rid, r.user_text, r.item_id, r.speak))
        r.gate.set()
        for e in r.held:
            r.sink(e)
        r.held.clear()

    def busy(self) -> bool:
        r = self.current
        return r is not None and r.task is not None and not r.task.done()

    async def cancel(self) -> None:
        """Stop the current response (text and audio) at once; the history keeps what was heard."""
        r = self.current
        if r is not None and r.task is not None and not r.task.done():
            r.task.cancel()
            try:
                await r.task
            except asyncio.CancelledError:
                pass

    async def interrupt(self, keep: Response | None = None) -> None:
        """A new user turn supersedes an unfinished reply."""
        if self.current is not None and self.current is not keep:
            await self.cancel()

    @staticmethod
    async def drop(r: Response | None) -> None:
        """A speculative reply the turn did not become: cancelled before a word of it was out."""
        if r is not None and r.task is not None and not r.gate.is_set():
            r.task.cancel()
            await asyncio.gather(r.task, return_exceptions=True)

    async def close(self) -> None:
        await self.cancel()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def for_turn(self, text: str, language: str | None, timings: dict[str, float], u: TurnPlan | None, *,
                 committed: bool = False) -> Response:
        """The reply to a heard or typed turn (``committed``: already in the conversation), launched at once
        and held behind its gate until the turn is taken."""
        st, settings = self.studio.state, self.studio.ctx.settings
        r = self.new(text)
        r.timings.update(timings)
        r.persona = (u.persona if u is not None else None) or st.persona
        r.configure(u, settings.dialogue.story_tokens, st.voice_state)
        r.lang = language or text_language(text) or r.persona.language
        r.messages = self.studio.prompts.for_turn(text, r.lang, r.plan, r.persona, committed=committed)
        return self.launch(r)

    def answer(self, o: ResponseOptions, history: list[Message]) -> Response:
        """``respond()``: ``history`` (the conversation as it stands, or ``o.history``; no system prompt), the last
        user turn answered with its plan and the language note before it, as in an automatic reply."""
        st, prompts = self.studio.state, self.studio.prompts
        last_user = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
        system: Message = {"role": "system", "content": o.instructions or st.conversation.system_prompt}
        r = self.new(last_user, o)
        r.lang = text_language(last_user) or st.language()
        r.fixed = o.fixed
        r.voice_state = st.voice_state
        if history and history[-1]["role"] == "user":
            if o.history is None:  # the plan belongs to the conversation's last user turn, not to given items
                u = st.last
                if u is not None and u.text == last_user and o.fixed is None:
                    r.configure(u, self.studio.ctx.settings.dialogue.story_tokens, st.voice_state)
                r.plan = st.plan
            r.messages = prompts.reply(system, history[:-1], history[-1], r.lang, r.plan,
                                       st.persona if o.instructions is None else None)
        else:
            r.messages = [system, *history]
        return self.launch(r)

    def say(self, text: str, lang: str, *, record: bool = True) -> Response:
        """Speak exactly ``text`` (a greeting, a notice); not released until ``open_gate``."""
        r = self.new("", ResponseOptions(record=record))
        r.voice_state = self.studio.state.voice_state
        r.lang, r.fixed = lang, text
        return self.launch(r)
