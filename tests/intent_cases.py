"""The labelled turn-plan cases of tests/data/intents/ (format in its README.md), for tests and bench/understand.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DATA = Path(__file__).parent / "data" / "intents"
INTENTS = ("chat", "sing", "sing_adapt", "sing_new", "story", "role", "role_leave", "stop", "search", "coach")
ACTIONS = tuple(i for i in INTENTS if i != "chat")


@dataclass(frozen=True)
class Case:
    intent: str
    text: str
    voice: dict = field(default_factory=dict)  # {} when the turn asks for no voice change
    slots: dict = field(default_factory=dict)
    history: tuple[dict, ...] = ()
    line: int = 0

    @property
    def negative(self) -> str | None:
        """What a hard negative mentions without asking for it ("sing", "voice", …), else None."""
        return self.slots.get("neg")

    @property
    def lang(self) -> str:
        return "zh" if any("\u4e00" <= c <= "\u9fff" for c in self.text) else "en"


def _voice(field_: str) -> dict:
    if field_ == "-":
        return {}
    out: dict = {"lasting": True}
    for part in field_.split(","):
        if part == "once":
            out["lasting"] = False
            continue
        k, v = part.split("=", 1)
        out[k] = {"true": True, "false": False}.get(v, v)
    return out


def load(split: str) -> list[Case]:
    """``split``: "dev" or "test"."""
    cases = []
    for n, line in enumerate((DATA / f"{split}.tsv").read_text("utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        intent, voice, slots, text, history = line.split("\t")
        if intent not in INTENTS:
            raise ValueError(f"{split}.tsv:{n}: unknown intent {intent!r}")
        turns = []
        if history != "-":
            for t in history.split(" | "):
                role = {"U": "user", "A": "assistant"}[t[0]]
                turns.append({"role": role, "content": t[2:]})
        sl = dict(s.split("=", 1) for s in slots.split(";")) if slots != "-" else {}
        cases.append(Case(intent, text, _voice(voice), sl, tuple(turns), n))
    return cases


def role_of(reader, c: Case) -> str | None:
    """The character the assistant plays when ``c`` is said, as a session would have it: the earlier user turn
    read by the plan (``reader``: a tingshuo.intent.IntentReader), entered when it asked for a role the persona
    table has, or for coaching (the tutor); the session then tells the reader which character it plays."""
    from tingshuo.dialogue.persona import get_persona, persona_for
    from tingshuo.intent import settle

    asks = [m["content"] for m in c.history if m["role"] == "user"]
    if not asks:
        return None
    it = settle(asks[-1], reader.read(asks[-1]))
    key = persona_for(it.character, asks[-1]) if it.intent == "role" else None
    if it.intent == "coach":  # a coaching request enters the tutor (tingshuo.engine.understand)
        from tingshuo.dialogue.persona import PERSONAS

        key = next((p.key for p in PERSONAS.values() if p.coach), None)
    return get_persona(key).name if key else None
