"""Dialogue state, and the one prompt builder every reply uses.

The state is what a session knows between turns: the conversation, who it is (persona, voice), how it was asked
to speak, the speaker's usual prosody and feelings so far, care mode and the risk log. It changes in one place,
:meth:`DialogueState.accept`, when a user turn is taken; that returns the events the change means, so the session
emits them in order. The prompt builder puts the per-turn notes where the LLM's prefix cache wants them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tingshuo.audio import prosody
from tingshuo.config import Settings
from tingshuo.dialogue.care import hotlines as care_hotlines
from tingshuo.dialogue.emotion import EmotionTrack
from tingshuo.dialogue.memory import Conversation
from tingshuo.dialogue.persona import Persona, get_persona
from tingshuo.dialogue.policy import ReplyPlan
from tingshuo.dialogue.voice import VoiceState
from tingshuo.engine.events import CareChanged, Event, Paralinguistics, PronunciationReport, SafetyVerdict, VoiceChanged
from tingshuo.engine.plan import TurnPlan
from tingshuo.llm.base import ChatModel, Message
from tingshuo.script import text_language
from tingshuo.tts import VoiceSettings

_LANG_NOTE = {
    "zh": "请用简体中文口语回应用户接下来说的话，不要重复原话。",
    "en": "Reply in spoken English to what the user says next; do not repeat their words.",
}


@dataclass
class DialogueState:
    persona: Persona
    conversation: Conversation
    voice: VoiceSettings  # the session's voice (a client may pick another; a persona brings its own)
    voice_state: VoiceState = field(default_factory=VoiceState)  # how to speak until asked otherwise
    baseline: prosody.SpeakerBaseline = field(default_factory=prosody.SpeakerBaseline)  # the speaker's usual prosody
    emotions: EmotionTrack = field(default_factory=EmotionTrack)  # their feelings so far
    plan: ReplyPlan = field(default_factory=ReplyPlan)  # the plan for answering the last user turn
    last: TurnPlan | None = None  # the last taken user turn's plan (``respond()`` uses it)
    sung: list[str] = field(default_factory=list)  # songs sung in this conversation ("再唱一首" picks another)
    # characters written for this call (dialogue.improvise), by key: asked for again, the same card and voice
    improvised: dict[str, Persona] = field(default_factory=dict)
    # care mode (a self-harm signal was heard): stays on until the user says they are safe and the next
    # ``safety.care_ease_turns`` turns carry no risk signal (safe-messaging practice: not on the first "I'm fine")
    care: bool = False
    care_safe_turns: int = -1  # turns without risk since the user said they are safe (-1: they have not said so)
    risk: list[SafetyVerdict] = field(default_factory=list)  # every non-allowed verdict, for the session log

    def recent(self, n: int) -> list[tuple[str, str]]:
        """The last ``n`` said turns, ``("user" | "assistant", text)``, oldest first (what a check reads a new turn
        with)."""
        said = [(m["role"], m["content"]) for m in self.conversation.turns
                if m["role"] in ("user", "assistant") and m["content"]]
        return said[-n:] if n > 0 else []

    def find_persona(self, key: str) -> Persona:
        """A persona by key: one written for this call, else a built-in or configured one (ValueError if none)."""
        if key in self.improvised:
            return self.improvised[key]
        return get_persona(key)

    def role(self, default_key: str) -> str | None:
        """The character being played, None as the companion itself."""
        return self.persona.name if self.persona.key != default_key else None

    def language(self) -> str:
        """The language of the user's last turn (the persona's before anyone spoke)."""
        for t in reversed(self.conversation.turns):
            if t["role"] == "user":
                return text_language(t["content"]) or self.persona.language
        return self.persona.language

    def _ease_care(self, u: TurnPlan, settings: Settings) -> list[Event]:
        """Care mode eases only once the user has said they are safe (the model's reading of their words, not a
        word list) and the turns after that carry no risk signal; a risk signal on the way starts the count again.
        The turn that says "safe" is not itself a calm turn: the guard reads it with the crisis before it."""
        if not self.care or u.safety is None:
            return []
        cfg = settings.safety
        if u.says_safe is not None and u.says_safe >= cfg.safe_threshold:
            self.care_safe_turns = 0
        elif u.safety.action != "allow":
            self.care_safe_turns = -1
        elif self.care_safe_turns >= 0:
            self.care_safe_turns += 1
            if self.care_safe_turns >= cfg.care_ease_turns:
                self.care, self.care_safe_turns = False, -1
                return [CareChanged(False, "eased", [])]
        return []

    def accept(self, u: TurnPlan, item_id: str, settings: Settings) -> list[Event]:
        """The turn is taken: its feeling joins the record, a voice request takes effect, care mode may begin.
        Returns the events that follow, in order (a persona change is the caller's: it touches the models)."""
        events: list[Event] = []
        if u.pronunciation is not None:
            p = u.pronunciation
            events.append(PronunciationReport(item_id, p.expected, p.score, p.feedback(), p.to_dict()["words"]))
        v = u.safety
        if v is not None and v.action != "allow":
            ev = SafetyVerdict(item_id, "input", v.category, v.action, round(v.confidence, 3), u.text)
            self.risk.append(ev)
            events.append(ev)
            if v.action == "care" and not self.care:
                self.care = True
                self.care_safe_turns = -1
                lines = [h.model_dump() for h in care_hotlines(settings.safety, text_language(u.text) or "zh")]
                events.append(CareChanged(True, v.category, lines))
        events += self._ease_care(u, settings)
        r = u.reading
        if r is not None:
            if r.features is not None:
                self.baseline.update(r.features, r.whisper)
            self.emotions.add(r)
            events.append(Paralinguistics(item_id, r.label, round(r.confidence, 3), r.arousal, r.whisper, r.pace,
                                          r.summary()))
        if u.voice != self.voice_state:
            self.voice_state = u.voice
            events.append(VoiceChanged(asdict(u.voice), u.text))
        if u.song is not None and u.song.song is not None:
            self.sung.append(u.song.song.key)
        self.plan = u.plan
        self.last = u
        return events


class Prompts:
    """The messages a reply is generated from: history within its token budget, the language note before the
    user's words and the plan's note after them."""

    def __init__(self, state: DialogueState, settings: Settings, llm: ChatModel | None) -> None:
        self.state, self.settings, self.llm = state, settings, llm

    def history(self) -> list[Message]:
        assert self.llm is not None
        return self.state.conversation.messages(self.llm.count_tokens, self.settings.dialogue.history_tokens)

    @staticmethod
    def with_note(history: list[Message], lang: str) -> list[Message]:
        # The language note goes *before* the user's words: the end-of-turn scorer then pre-fills it along with
        # the partial transcript, and the reply's prompt only adds the few tokens after the user's text.
        return [*history, {"role": "system", "content": _LANG_NOTE.get(lang, _LANG_NOTE["en"])}]

    @staticmethod
    def plan_note(plan: ReplyPlan, persona: Persona | None = None) -> list[Message]:
        """The policy's note (how the user feels, a voice request) and, in a role, the role's reminder, placed
        *after* the user's words: their KV stays cached from the end-of-turn and emotion scoring, and only the
        note is read anew. It is there only when there is something to say."""
        parts = [x for x in (persona.reminder if persona is not None else None, plan.note) if x]
        return [{"role": "system", "content": "\n".join(parts)}] if parts else []

    def reply(self, system: Message, before: list[Message], user: Message, lang: str, plan: ReplyPlan,
              persona: Persona | None) -> list[Message]:
        """Every reply's prompt: system prompt, the turns before, the language note, the user's turn, the plan's
        note (``persona``: its reminder; None for a client's own instructions)."""
        return [*self.with_note([system, *before], lang), user, *self.plan_note(plan, persona)]

    def for_turn(self, text: str, lang: str, plan: ReplyPlan, persona: Persona, *, committed: bool) -> list[Message]:
        """A heard or typed turn's reply (``committed``: the turn is already the conversation's last message).
        Entering or leaving a role with this very turn, the new persona's prompt answers it."""
        history = self.history()
        system = history[0]
        if persona.key != self.state.persona.key:
            system = {"role": "system", "content": persona.system_prompt}
        before = history[1:-1] if committed else history[1:]
        return self.reply(system, before, {"role": "user", "content": text}, lang, plan, persona)

    def usage(self, messages: list[Message], output: str) -> dict[str, int]:
        """Token counts for the Realtime ``usage`` field (empty when the backend cannot count)."""
        if self.llm is None:
            return {}
        try:
            n_in = sum(self.llm.count_tokens(m["content"]) + 4 for m in messages)
            n_out = self.llm.count_tokens(output) if output else 0
        except Exception:  # a remote backend without a tokenizer
            return {}
        return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}
