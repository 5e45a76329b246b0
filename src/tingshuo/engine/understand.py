"""The understanding step: one user turn in, one frozen :class:`~tingshuo.engine.plan.TurnPlan` out.

The feeling behind the turn (the voice's prosody against the speaker's baseline, the LLM's reading of the words),
a voice request in it, what it asks the assistant to do (a role, a song, a story), the safety guard's verdict (on
its own thread and llama.cpp context, beside the emotion reading), the pronunciation coach's report in a tutoring
role, and whether the turn may need a search. Nothing here changes the session: the plan is applied when the
turn is taken (:meth:`tingshuo.engine.state.DialogueState.accept`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import Future
from dataclasses import replace

import numpy as np

from tingshuo.audio import prosody
from tingshuo.audio.io import INPUT_RATE
from tingshuo.coach.pronunciation import Report, words_of
from tingshuo.dialogue.care import borderline, care_note, refusal_note, voice_low
from tingshuo.dialogue.emotion import fuse, read_words
from tingshuo.dialogue.improvise import persona_from_card
from tingshuo.dialogue.improvise import prepare as prepare_role
from tingshuo.dialogue.persona import PERSONAS, Persona, RoleRequest, get_persona, persona_for
from tingshuo.dialogue.policy import ReplyPlan, plan_reply
from tingshuo.dialogue.songs import SongRequest, pick_song, unknown_song_note
from tingshuo.dialogue.voice import VoiceChange, parse_voice_instruction
from tingshuo.engine.context import Context, run_on
from tingshuo.engine.plan import TurnPlan
from tingshuo.engine.state import DialogueState, Prompts
from tingshuo.intent import CHAT, Intent, settle
from tingshuo.llm.base import LlmError
from tingshuo.safety import Verdict
from tingshuo.safety.guard import CONTEXT_TURNS
from tingshuo.script import text_language
from tingshuo.store.privacy import shown

log = logging.getLogger("tingshuo.engine")
_QUOTED = re.compile(r"[\"“]([A-Za-z][^\"”]{3,}?)[\"”]|:\s*([A-Z][A-Za-z ,']{3,}[.!?])")
# A note after the user's words (~0.7 s more prompt before a story's first words on 2 cores). In the cached system
# prompt it cost nothing, but the 1.5B then recited it as a reply in role-play. It carries no example story: with
# one (a lost rabbit and an elephant) the 1.5B told that story, renamed, for 11 of 12 dev requests ("小狐狸和月亮"
# began "从前，小狐狸在森林里迷了路。我好害怕呀！"); described instead, none copied it. An example *name* leaks too
# ("比如[狐狸]": a fox spoke in 5 of 12 stories about other animals), so none is given: two characters talked in 11
# of 24 (docs/personas.md). A "[狐狸]说：“…”" line is read as the fox's words (speech.SpokenQuotes).
# "叙述的句子前面写[旁白]" was "叙述写[旁白]", a clipped phrase the 1.5B said back: "叙述写。有一天…" opened a story
# in a real-time call, "[叙述写]" and "（叙述）" tagged its lines; 20 dev stories (companion and storyteller, sampled)
# with the whole phrase: none, and two or more characters talked in 14 of 20 as before (2026-12-07).
_STORY_NOTE = {
    "zh": ("用户想听故事。按用户要的内容讲一个六到十句的小故事，故事里至少有两个角色互相对话。每一句前面标出是谁在说：叙述的句子前面写[旁白]；"
           "角色开口说的话，前面用方括号写上这个角色在故事里的名字，后面只写他说出口的那句话，不写“说”，不加引号，"
           "动作和描写都写在[旁白]后面。"),
    "en": ("The user wants a story. Tell a short story of six to ten sentences about what they asked for, in which at "
           "least two characters talk to each other. Mark who says each sentence: [Narrator] before narration; "
           "before a character's spoken words, that character's name from the story in brackets, then only the "
           "words they say aloud, without \"said\" or quotation marks; actions and descriptions go after "
           "[Narrator]."),
}


class Understander:
    def __init__(self, ctx: Context, state: DialogueState, prompts: Prompts) -> None:
        self.ctx, self.state, self.prompts = ctx, state, prompts

    async def text_emotion(self, text: str, lang: str | None) -> dict[str, float] | None:
        """P over LABELS of the feeling in the words, read by the LLM (None: no LLM, no logprobs, or it failed)."""
        llm = self.ctx.stack.judge or self.ctx.stack.llm
        if llm is None or not text.strip():
            return None
        lang = lang or text_language(text) or self.state.language()
        if self.ctx.lanes.judge.busy_with_others():
            return None  # under load the feeling is read from the voice alone, not after another caller's reply
        try:
            return await run_on(self.ctx.lanes.judge, read_words, llm,
                                self.prompts.with_note(self.prompts.history(), lang), text)
        except LlmError as e:
            log.warning("emotion reading of the words failed: %s", e)
            return None

    async def understand(self, text: str, language: str | None, audio: np.ndarray | None,
                         early: "tuple[str, asyncio.Future[dict[str, float] | None]] | None" = None) -> TurnPlan:
        """The turn's feeling and requests (``feel``), then what the safety policy and the search decision make
        of it. The guard runs on its own thread and context beside the emotion reading."""
        ctx, st = self.ctx, self.state
        guard = ctx.stack.guard if ctx.settings.safety.enabled else None
        job = None
        if guard is not None and text.strip():
            # read with the turns before it and the role being played: a risk is often in the turns together
            # ("我是认真的" after "我不想活了") or inside a frame ("大圣，我活够了")
            job = asyncio.ensure_future(run_on(ctx.lanes.guard, guard.check_input, text,
                                               st.recent(CONTEXT_TURNS), st.role(ctx.settings.dialogue.persona)))
        safe_job = None
        if guard is not None and st.care and text.strip():
            # in care mode: does the user say they are safe now? (queued behind the check on the guard's thread)
            safe_job = asyncio.ensure_future(run_on(ctx.lanes.guard, guard.says_safe, text, st.recent(CONTEXT_TURNS)))
        intent = asyncio.ensure_future(self.read_intent(text))  # on its own context, beside the guard
        u = await self.feel(text, language, audio, early, intent)
        t0 = time.perf_counter()
        report = None
        if (u.persona or st.persona).coach and audio is not None and text.strip() and text_language(text) == "en":
            report = await run_on(ctx.lanes.turn, self.assess, audio, text)
        verdict = None
        if job is not None:
            try:
                verdict = await job
            except LlmError as e:  # the guard failed: the turn goes on, the output check still applies
                log.warning("safety check failed: %s", e)
        says_safe = None
        if safe_job is not None:
            try:
                says_safe = await safe_job
            except LlmError as e:  # care simply stays on
                log.warning("care-easing read failed: %s", e)
        lang = language or text_language(text) or st.language()
        u = self.with_safety(replace(u, pronunciation=report, says_safe=says_safe), verdict, lang)
        # characters in a role do not look things up (a relative's "一个月挣多少钱" is not a price question)
        in_role = (u.persona or st.persona).key != ctx.settings.dialogue.persona
        candidate = False
        if ctx.settings.search.enabled and not in_role and (u.safety is None or u.safety.action == "allow"):
            # the LLM's decision itself is taken by the response, on the LLM thread: here it would queue behind a
            # reply still being generated (the user talking over it) and hold back the turn's transcript
            candidate = u.intent.intent == "search" and ctx.stack.llm is not None  # settled: its words can be current
        return replace(u, search_candidate=candidate, ms=u.ms + (time.perf_counter() - t0) * 1000)

    def prepare_next(self) -> None:
        """The next turn's context — the turns the plan and the guard will read it with, and the role — evaluated
        ahead on their threads once a reply is in the conversation, before the user speaks again: a read then pays
        only for the turn's own words (on 2 cores a two-line context took a plan read 325 → 1,030 ms, a guard
        check 276 → 916). Scores as a read from scratch (to ~0.002 in P); a read whose context differs (a typed
        item, another session on the same model) simply reads it all."""
        ctx, st = self.ctx, self.state
        role = st.role(ctx.settings.dialogue.persona)
        planner = ctx.stack.planner
        jobs = []
        # only on a context of its own: on the conversation's it would evict the reply's cached prompt
        if planner is not None and ctx.settings.plan.enabled and ctx.settings.plan.separate_context:
            recent = [{"role": r, "content": t} for r, t in st.recent(2)]
            jobs.append(ctx.lanes.plan.submit(planner.prepare, recent, role))
        guard = ctx.stack.guard if ctx.settings.safety.enabled else None
        if guard is not None and ctx.settings.safety.separate_context:
            jobs.append(ctx.lanes.guard.submit(guard.prepare, st.recent(CONTEXT_TURNS), role))
        for job in jobs:
            job.add_done_callback(_log_failure)

    async def read_intent(self, text: str) -> Intent:
        """What the turn asks the assistant to do, as the model reads it (tingshuo.intent), on the plan's own
        thread and context; ``chat`` when there is no reader or it failed (the turn is then conversation)."""
        planner = self.ctx.stack.planner
        if planner is None or not self.ctx.settings.plan.enabled or not text.strip():
            return CHAT
        st = self.state
        role = st.role(self.ctx.settings.dialogue.persona)
        recent = [{"role": r, "content": t} for r, t in st.recent(2)]
        try:
            it = await run_on(self.ctx.lanes.plan, planner.read, text, recent, role)
        except LlmError as e:
            log.warning("turn plan failed: %s", e)
            return CHAT
        settled = settle(text, it)
        if settled.held:
            log.info("turn plan %s held back: the words cannot ask for it (%s)", settled.held, shown(text[:60]))
        return settled

    def assess(self, audio: np.ndarray, heard: str) -> Report | None:
        """Turn thread: the learner's audio against the sentence they were asked to say (the last quoted English
        sentence of the tutor's previous turn, when what was heard is close to it), else against what was heard
        (the coach then finds sounds, not words: Whisper tends to hear the intended word)."""
        expected = heard
        last = next((m["content"] for m in reversed(self.state.conversation.turns)
                     if m["role"] == "assistant" and m["content"]), "")
        quotes = [m.group(1) or m.group(2) for m in _QUOTED.finditer(last)]
        if quotes:
            said = set(words_of(heard))
            best = max(quotes, key=lambda q: len(said & set(words_of(q))) / max(len(set(words_of(q))), 1))
            if len(said & set(words_of(best))) >= 0.5 * len(set(words_of(best))):
                expected = best
        try:
            return self.ctx.stack.coach.assess(audio, INPUT_RATE, expected, heard)
        except (ValueError, RuntimeError) as e:  # a word outside the dictionary, a decoder failure
            log.info("pronunciation not assessed: %s", e)
            return None

    def with_safety(self, u: TurnPlan, v: Verdict | None, lang: str) -> TurnPlan:
        """Refusal or care replaces whatever else the turn asked for (a role, a song, a story)."""
        cfg = self.ctx.settings.safety
        st = self.state
        r = u.reading
        if v is not None and v.action == "allow" and borderline(v, cfg) and voice_low(r, cfg):
            # borderline words said in a low, flat voice: care (the voice alone never is)
            v = Verdict("care", "voice_distress", v.scores.get("care_probe", v.scores.get("self_harm", 0.0)),
                        v.scores, v.text)
        u = replace(u, safety=v)
        safe = u.says_safe is not None and u.says_safe >= cfg.safe_threshold
        companion = get_persona(self.ctx.settings.dialogue.persona)
        if v is not None and v.action in ("refuse", "care"):
            if v.action == "care":
                u = replace(u, persona=companion,  # no role plays on over someone at risk
                            plan=replace(u.plan, style="tender", note=care_note(cfg, lang, first=not st.care, safe=safe),
                                         remap={}, reason="care"))
            else:
                u = replace(u, persona=st.persona,
                            plan=replace(u.plan, style=u.plan.style or "calm", note=refusal_note(v.category, lang),
                                         reason=f"refusal ({v.category})"))
            u = replace(u, role=None, song=None, story=False)
        if u.pronunciation is not None and (v is None or v.action == "allow"):
            rep = u.pronunciation
            note = (f"Pronunciation check of what the learner just said (expected: \"{rep.expected}\"): overall "
                    f"{rep.score}/100; " + ", ".join(f"{w.word} {w.score}" for w in rep.words if w.score < 100)
                    + (f". Problems: {rep.feedback()} Tell the learner this kindly in one or two sentences, naming the "
                       "sounds; the correct sentence will be said after your words." if any(w.flagged for w in rep.words)
                       else ". Every sound was clear: praise them briefly and go on."))
            u = replace(u, plan=replace(u.plan, note="\n".join(x for x in (u.plan.note, note) if x)))
        if st.care and not (v is not None and v.action in ("refuse", "care")):
            u = replace(u, role=None, persona=companion, plan=replace(
                u.plan, note="\n".join(x for x in (u.plan.note, care_note(cfg, lang, first=False, safe=safe)) if x)))
        return u

    async def feel(self, text: str, language: str | None, audio: np.ndarray | None,
                   early: "tuple[str, asyncio.Future[dict[str, float] | None]] | None" = None,
                   intent: "asyncio.Future[Intent] | None" = None) -> TurnPlan:
        """The feeling behind a user turn (voice + words), what it asks for (``intent``: the model's reading,
        already under way; read here when not given), and the reply plan.

        ``early``: the words' feeling read (or still being read) from the newest partial transcript while the
        user talked. It is used as the words' reading: asking again on the final transcript would put ~0.45 s
        on the LLM thread between the end of speech and the reply (measured: first audio 0.65 → 1.1–1.5 s).
        A partial lags the speech by about a second, and a feeling is rarely only in the last words.
        """
        cfg = self.ctx.settings.emotion
        st = self.state
        t0 = time.perf_counter()
        lang = language or text_language(text) or st.language()
        it = await intent if intent is not None else await self.read_intent(text)
        requests = self.requests(text, it, await self.improvise(it, lang))
        if not cfg.enabled:
            return self.with_requests(TurnPlan(None, None, st.voice_state, ReplyPlan(), text, intent=it), requests, lang)
        feats_job = None
        st.baseline.use_priors(lang)
        if audio is not None and len(audio) >= INPUT_RATE // 5:
            feats_job = asyncio.ensure_future(run_on(self.ctx.lanes.turn, prosody.extract, audio))
        probs = None
        if cfg.text:
            if early is not None and not early[1].cancelled():
                probs = await early[1]
            else:
                probs = await self.text_emotion(text, lang)
        feats = cues = None
        if feats_job is not None:
            try:
                feats = await feats_job
                cues = prosody.cues(feats, st.baseline)
            except Exception as e:  # a pitch-tracker failure costs the voice side, not the turn
                log.warning("prosody analysis failed: %s", e)
        reading = fuse(probs, cues, features=feats) if (probs or cues) else None
        last = st.emotions.last
        if reading is not None and last is not None:
            reading.previous = last.label
        change = voice_change(text, it) if cfg.voice_requests else None
        voice = change.apply(st.voice_state) if change else st.voice_state
        plan = plan_reply(reading if cfg.policy else None, voice, change, last if cfg.policy else None, lang)
        u = TurnPlan(reading, change, voice, plan, text, (time.perf_counter() - t0) * 1000, intent=it)
        return self.with_requests(u, requests, lang)

    def _known(self, character: str | None, text: str) -> str | None:
        """The key of a persona who already plays ``character``: built in, configured, or written in this call."""
        return persona_for(character, text, {**PERSONAS, **self.state.improvised})

    async def improvise(self, it: Intent, lang: str) -> Persona | None:
        """A persona written for a character no persona plays ("你扮演猪八戒"): the model writes its card on the
        reply model's thread (~2 s the first time in this process; the conversation's prompt is refilled for the
        new role anyway), then the voice is cast from it (tingshuo.dialogue.improvise). None when the turn does
        not ask for such a role, or no card could be written (the role then goes on with its name only)."""
        d = self.ctx.settings.dialogue
        llm = self.ctx.stack.llm
        if (not d.roles or not d.improvise or it.intent != "role" or not it.character
                or self._known(it.character, "") is not None):
            return None
        card = await run_on(self.ctx.lanes.llm, prepare_role, llm, it.character, lang) if llm is not None else None
        return persona_from_card(it.character, card, lang)

    def requests(self, text: str, it: Intent, improvised: Persona | None = None
                 ) -> tuple[RoleRequest | None, SongRequest | None, bool]:
        """What the model read the turn as asking the assistant to *do*, made concrete: which persona to enter or
        leave (``improvised``: one written for this turn's character), which melody to sing (and new words about
        what), whether to tell a story."""
        d, st = self.ctx.settings.dialogue, self.state
        in_role = st.persona.key != d.persona
        role = None
        if d.roles:
            if it.intent == "role" and improvised is not None:
                role = RoleRequest(enter=improvised.key, persona=improvised)
            elif it.intent == "role":
                key = self._known(it.character, text)
                role = RoleRequest(enter=key) if key and key != st.persona.key else None
            elif it.intent == "role_leave" and in_role:
                role = RoleRequest(leave=True)
            elif it.intent == "coach" and not st.persona.coach:
                tutor = next((p.key for p in PERSONAS.values() if p.coach), None)
                role = RoleRequest(enter=tutor) if tutor else None
        song = None
        if d.singing and it.intent in ("sing", "sing_adapt", "sing_new"):
            book = self.ctx.stack.songbook
            named = book.find(it.song) if it.song and it.intent != "sing_new" else None
            if it.song and named is None and it.intent != "sing_new":
                song = SongRequest(None, it.song, it.topic)  # a title the book lacks: answered honestly
            else:
                melody = named or pick_song(book, st.sung)  # "唱首歌", "唱一首关于春天的歌": one not sung yet
                topic = None if it.intent == "sing" else (it.topic or text)
                song = SongRequest(melody, it.song, topic)
        story = song is None and it.intent == "story"
        return role, song, story

    def with_requests(self, u: TurnPlan, requests: tuple[RoleRequest | None, SongRequest | None, bool],
                      lang: str) -> TurnPlan:
        role, song, story = requests
        persona = self.state.persona
        if role is not None:
            persona = (role.persona or self.state.find_persona(role.enter) if role.enter
                       else get_persona(self.ctx.settings.dialogue.persona))
        u = replace(u, role=role, song=song, story=story, persona=persona)
        notes = [u.plan.note] if u.plan.note else []
        if song is not None and song.song is None:
            notes.append(unknown_song_note(song.title, self.ctx.stack.songbook, lang))
        if story:
            notes.append(_STORY_NOTE.get(lang, _STORY_NOTE["en"]))
        if len(notes) > (1 if u.plan.note else 0):
            u = replace(u, plan=replace(u.plan, note="\n".join(notes)))
        return u


# how much a plain "slower", "louder" moves the voice when the words give no measure ("much slower" does)
_STEP = {"slower": 0.8, "faster": 1.25, "louder": 1.4, "softer": 0.7}


def voice_change(text: str, it: Intent) -> VoiceChange | None:
    """The voice change the model read in the turn, with the measure taken from the words where they give one
    (parse_voice_instruction is only the measure here: the model decides whether there is a request at all)."""
    v = it.voice
    if v is None:
        return None
    words = parse_voice_instruction(text)
    once = not v.lasting
    if (v.speed or v.volume) and words is not None and (words.speed is not None or words.volume is not None):
        # The model said the turn asks for a faster/slower or louder/softer voice; which way, and how much, is
        # measured from the words where they give it. The 1.5B copies the word of a complaint instead of turning
        # it round ("你语速太快了" read as faster, "Speak up, I can barely hear you" as faster); the grammar reads
        # "太快了" as "slower". It only measures: without the model's reading there is no change at all.
        return VoiceChange(speed=words.speed, volume=words.volume)
    if v.speed:  # the words give no measure: a plain step the way the model read
        return VoiceChange(speed=_STEP[v.speed])
    if v.volume:
        return VoiceChange(volume=_STEP[v.volume])
    if v.whisper is not None and not v.reset:
        return VoiceChange(whisper=v.whisper)
    if v.reset:
        return VoiceChange(reset=True)
    if v.style:
        seq = words is not None and words.sequence
        if seq:
            return words
        return VoiceChange(style=v.style, one_off=once or (words is not None and words.one_off))
    if v.dialect is not None:
        return VoiceChange(dialect=v.dialect)
    return None


def _log_failure(job: "Future[None]") -> None:
    if not job.cancelled() and job.exception() is not None:
        log.warning("preparing the next turn's context failed (the read will evaluate it): %s", job.exception())
