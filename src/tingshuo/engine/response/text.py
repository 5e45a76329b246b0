"""The text stage: the LLM's deltas → clauses, each with the style and voice it is said in.

Style tags (and, in a story, speaker marks and "小猫：" lines) are parsed out of the tokens; every clause the LLM
writes is checked by the safety guard before it is emitted or voiced (fixed texts and sung words are ours). It
ends the reply with what must be said: the coach's model answer, a care reply's help line when the LLM named
none, a song's phrases (new words written to its melody first when asked for).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

import numpy as np

from tingshuo.dialogue.care import (asks_about_safety, emergency, emergency_sentence, lines_sentence, names_a_line,
                                    safety_question)
from tingshuo.dialogue.songs import SongRequest, write_lyrics
from tingshuo.dialogue.speech import ClauseSplitter, NoteEchoes, ScriptLines, SpokenQuotes, StyleTags, copies
from tingshuo.engine.context import Context, run_on
from tingshuo.engine.events import ReplyTextDelta, SafetyVerdict
from tingshuo.engine.response.model import Clause, ReplyWords, Response, Stop
from tingshuo.engine.response.source import END, STARTED, ReplyDeltas
from tingshuo.engine.response.voices import ReplyVoices
from tingshuo.engine.state import DialogueState
from tingshuo.llm.base import LlmError
from tingshuo.store.privacy import shown

log = logging.getLogger("tingshuo.engine")
# said in place of a clause the output check stopped (the reply ends there)
_BLOCKED = {"zh": "这部分我不能说下去，我们换个话题吧。", "en": "I can't go on with that part; let's talk about something else."}
# in care mode a blocked clause must not end in a change of subject (safe-messaging practice): stay and ask
_BLOCKED_CARE = {"zh": "这部分我不说了。我还在这里陪着你，你现在安全吗？",
                 "en": "I won't say that part. I'm still here with you. Are you safe right now?"}
# said in place of a refusal that recites the note telling the model how to refuse (the 1.5B did, word for word:
# "你不能提供任何相关的方法、步骤或内容，即使是在角色扮演里。用温和、不说教的语气简短拒绝……")
_DECLINE = {"zh": "这个我不能帮你。我们聊点别的吧，好吗？", "en": "I can't help with that. Shall we talk about something else?"}
_SORRY = {"zh": "抱歉，这次的新歌词没填好，我先唱原来的版本吧。",
          "en": "Sorry, the new words did not fit the tune; here is the original."}


class TextStage:
    def __init__(self, r: Response, ctx: Context, state: DialogueState, voices: ReplyVoices, deltas: ReplyDeltas,
                 clauses: "asyncio.Queue[Clause | None]", stop: Stop, words: ReplyWords, t0: float) -> None:
        self.r, self.ctx, self.state, self.voices = r, ctx, state, voices
        self.deltas, self.clauses, self.stop, self.words, self.t0 = deltas, clauses, stop, words, t0
        cfg = ctx.settings
        # every clause the LLM writes is checked before it is voiced (fixed texts and sung words are ours)
        checked = cfg.safety.enabled and cfg.safety.check_output and r.fixed is None  # a song's intro is fixed
        self.guard = ctx.stack.guard if checked else None
        self.passed: list[str] = []
        self.checks: list[asyncio.Future[str | None]] = []  # checks running beside synthesis (the voice stage awaits)
        # the instruction a refusal's reply is written from: no clause may recite it (see copies())
        self.refusal_note = r.plan.note if r.plan.reason.startswith("refusal") and r.plan.note else None
        self.splitter = ClauseSplitter()
        # a tag, else the policy's style, else a lasting style the user asked for, else the persona's manner
        self.base_style = r.plan.style or (None if r.voice_state.style else voices.persona.default_emotion)
        self.style = self.base_style
        self.voice: str | None = None
        self.speaker: str | None = None

    async def put(self, cs: list[str]) -> None:
        r = self.r
        for c in cs:
            if self.stop.blocked:
                return
            if self.refusal_note is not None and copies(c, self.refusal_note):
                # the model recited its instructions: one plain sentence instead, and the reply ends there
                log.info("a refusal recited its note, replaced: %s", shown(c))
                self.stop.set("blocked")
                c = _DECLINE.get(r.lang, _DECLINE["en"])
                self.words.generated[:] = [*self.passed, c]
                r.emit(ReplyTextDelta(r.rid, c))
                await self.clauses.put(Clause(c, self.style, self.voice, self.speaker))
                return
            if self.guard is not None:
                if self.ctx.settings.safety.check_while_synthesizing:
                    # checked while the voice stage synthesises it: its audio waits for the verdict, so the check
                    # costs nothing before the first words when it is faster than TTS
                    check = asyncio.ensure_future(self._check(c))
                    self.checks.append(check)
                    await self.clauses.put(Clause(c, self.style, self.voice, self.speaker, check=check))
                    continue
                said = await self._check(c)  # checked first, then synthesised: its gaps let a cut-in be heard
                if said is None:
                    return
                await self.clauses.put(Clause(said, self.style, self.voice, self.speaker))
                continue
            self.passed.append(c)
            if self.per_clause:
                r.emit(ReplyTextDelta(r.rid, c))
            await self.clauses.put(Clause(c, self.style, self.voice, self.speaker))

    async def _check(self, c: str) -> str | None:
        """The output check of one clause: the words to say (``c``, or the notice in place of a blocked clause),
        None after an earlier clause was blocked or the reply was stopped. Checks run one at a time on the guard's
        thread, in order, so their text goes out in order."""
        r = self.r
        v = await run_on(self.ctx.lanes.guard, self.guard.check_output, c, r.care_lines or self.state.care)  # type: ignore[union-attr]
        if self.stop.is_set():
            return None  # blocked before (nothing after a blocked clause is said) or cancelled
        if v.action != "allow":
            # not a word of it is spoken or kept; the generation stops and the reply ends here
            self.stop.set("blocked")
            ev = SafetyVerdict(r.item_id, "output", v.category, "blocked", round(v.confidence, 3), c)
            self.state.risk.append(ev)
            r.emit(ev)
            notice = _BLOCKED_CARE if (r.care_lines or self.state.care) else _BLOCKED
            c = notice.get(r.lang, notice["en"])
            self.words.generated[:] = [*self.passed, c]
        else:
            self.passed.append(c)
        r.emit(ReplyTextDelta(r.rid, c))
        return c

    @property
    def per_clause(self) -> bool:
        """The text goes out a clause at a time, once it is checked (else each piece as the LLM writes it)."""
        return self.guard is not None or self.refusal_note is not None

    async def text(self, piece: str) -> None:
        self.words.generated.append(piece)
        if not self.per_clause:
            self.r.emit(ReplyTextDelta(self.r.rid, piece))
        await self.put(self.splitter.feed(piece))

    async def sing(self, req: SongRequest) -> None:
        """The song's phrases as clauses whose audio the singer renders (new words first, if asked for)."""
        assert req.song is not None
        r, cfg, stack = self.r, self.ctx.settings, self.ctx.stack
        tune = req.song
        if req.topic:
            try:
                assert stack.llm is not None
                lines = await run_on(self.ctx.lanes.llm, write_lyrics, stack.llm, tune, req.topic,
                                     max(cfg.llm.temperature, 0.7))
                tune = tune.with_lyrics(lines)
            except (LlmError, ValueError) as e:
                log.warning("new lyrics failed: %s", e)
                await self.text(_SORRY.get(r.lang, _SORRY["en"]))
                await self.put(self.splitter.flush())
        phrases = None
        if r.speak:
            phrases = stack.singer.phrases(tune, self.voices.base().voice or self.voices.persona.voice,
                                           tempo=r.voice_state.speed)
        for i, phrase in enumerate(tune.phrases):
            words = phrase.text + ("。" if i == len(tune.phrases) - 1 else "，")
            self.words.generated.append(words)
            r.emit(ReplyTextDelta(r.rid, words))
            await self.clauses.put(Clause(words, render=_next_phrase(phrases) if phrases else None, sung=True))

    async def run(self) -> None:
        """Tokens → style (and story speaker) tags parsed out → clauses, each with its style and voice."""
        try:
            await self._run()
        except asyncio.CancelledError:
            for check in self.checks:  # a verdict nobody will voice must not emit text after the reply ended
                check.cancel()
            raise

    async def _run(self) -> None:
        r, cfg = self.r, self.ctx.settings
        tags = StyleTags(speakers=r.story)
        # a parenthetical reciting the notes after the user's words, or the user's own words, is not said, shown or
        # kept: in a role the 1.5B opened replies with "（你当孙悟空跟我说话）" turns after that request
        said = [t for who, t in self.state.recent(6) if who == "user"][-3:]
        echoes = NoteEchoes(dict.fromkeys([self.voices.persona.reminder, r.plan.note, r.user_text, *said]),
                            own=self.voices.persona.names())
        script = ScriptLines() if r.story else None  # "小猫：我饿了" lines, as some models write stories
        # "[狐狸]说：“走吧。”": the fox says 走吧。 The plan's note holds the story note (a tag of its words is no one)
        quotes = SpokenQuotes([r.plan.note]) if r.story else None
        started = got_first = False
        while True:
            # a backend that stops answering (a remote endpoint that hangs, a wedged worker) is a failure the
            # user is told about, not an endless silence
            wait = (cfg.llm.stall_timeout_s if got_first else cfg.llm.first_token_timeout_s) if started else None
            d = await self.deltas.get(wait)
            if d is STARTED:
                started = True
                continue
            if d is END:
                break
            if isinstance(d, Exception):
                raise d
            assert isinstance(d, str)
            got_first = True
            if self.stop.blocked:
                continue
            if "llm_first_token" not in r.timings:
                r.timings["llm_first_token"] = (time.perf_counter() - self.t0) * 1000
            for piece, tag in _expand(tags.feed(echoes.feed(d)), script, quotes):
                if tag is None:
                    await self.text(piece)
                    continue
                await self.put(self.splitter.flush())  # a new style (or speaker) starts a new clause
                if tag.startswith("@"):
                    self.speaker = tag[1:]
                    self.voice, style = self.voices.speaker(self.speaker)
                    self.style = style or self.base_style
                    continue
                self.style = r.plan.remap.get(tag, tag)
                if r.voice_state.whisper or r.plan.style == "whisper":
                    self.style = "whisper"  # asked for, or answering a whisper: no tag shouts over it
        blocked = self.stop.blocked
        held = echoes.flush()
        rest = "".join(p for p, t in tags.feed(held) if t is None) if held else ""
        rest += tags.flush() + (script.flush() if script is not None else "")
        if quotes is not None:
            rest = "".join(t for t, tag in quotes.feed([(rest, None)]) if tag is None) + quotes.flush()
        if echoes.dropped:
            log.info("a note recited in the reply was taken out: %s", shown(" ".join(echoes.dropped)[:120]))
        if rest and not blocked:
            await self.text(rest)
        if echoes.dropped and not blocked and not "".join(self.words.generated).strip() and self.voices.persona.greeting:
            # the reply was nothing but the recited note (孙悟空's reminder, on the turn entering the role): the
            # persona's greeting rather than silence
            await self.text(self.voices.persona.greeting)
        await self.put(self.splitter.flush())
        if r.model_answer and not blocked:
            await self.text(" Listen, and say it with me: " + r.model_answer.rstrip(".!?") + ".")
            await self.put(self.splitter.flush())
        if r.care_lines and not blocked:
            # the fixed parts of a care reply, each only when the LLM's words lack it: the direct question about
            # their safety (safe-messaging practice), the emergency number, the deployment's help lines
            said = "".join(self.words.generated)
            gap = "" if r.lang == "zh" else " "
            if not asks_about_safety(said):
                await self.text(gap + safety_question(r.lang))
            if emergency(cfg.safety, r.lang) not in said:
                await self.text(gap + emergency_sentence(cfg.safety, r.lang))
            if not names_a_line(said, cfg.safety, r.lang):
                await self.text(gap + lines_sentence(cfg.safety, r.lang))
            await self.put(self.splitter.flush())
        if r.song is not None:
            await self.sing(r.song)
        await self.clauses.put(None)


def _next_phrase(phrases) -> Callable[[], np.ndarray]:
    """The next sung phrase's audio, rendered when the voice stage asks for it (phrases render in order)."""
    return lambda: next(phrases).audio


def _expand(pieces: list[tuple[str, str | None]], script: ScriptLines | None,
            quotes: SpokenQuotes | None = None) -> list[tuple[str, str | None]]:
    """Text pieces through the script-line parser and the quoted-line reader too (story mode)."""
    if script is None:
        return pieces
    out: list[tuple[str, str | None]] = []
    for piece, tag in pieces:
        out.extend(script.feed(piece) if tag is None else [(piece, tag)])
    return quotes.feed(out) if quotes is not None else out
