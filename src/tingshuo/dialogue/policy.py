"""The empathetic policy: what the user's feeling (and its change) means for the reply's words and voice.

Rules a good listener follows, made explicit:
- someone down (sad, tired) is comforted in a soft, slower voice (``tender``), not met with sadness;
- someone angry is calmed (``calm``), never mirrored — the bundled 1.5B model writes ``[生气]`` back at an angry
  user when left alone (measured, docs/emotion.md), so its own anger/fear/sadness tags are remapped then;
- someone anxious gets a steady voice and one simple next step;
- joy is shared (``happy``);
- a whisper is answered with a whisper;
- a change across turns is noticed ("you sound better now").

The plan has two parts: a short note placed before the user's words in the LLM prompt (the words), and the
reply's base speaking style (the voice). A lasting voice the user asked for ("开心一点") outranks the policy's
style; a whisper outranks everything; tags the LLM writes per clause outrank the base style, after remapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tingshuo.dialogue.dialect import note as dialect_note
from tingshuo.dialogue.dialect import style as dialect_style
from tingshuo.dialogue.emotion import EmotionReading
from tingshuo.dialogue.voice import VoiceChange, VoiceState

MIN_CONFIDENCE = 0.5

_STYLE_FOR = {"sad": "tender", "tired": "tender", "angry": "calm", "anxious": "calm", "happy": "happy"}
# the model's tags that would mirror the user's bad feeling, and what to say them in instead
_REMAP = {"sad": {"sad": "tender", "fearful": "tender"}, "tired": {"sad": "tender"},
          "angry": {"angry": "calm", "fearful": "calm"}, "anxious": {"fearful": "calm", "sad": "calm"}}

_NOTES = {
    "zh": {
        "sad": "用户很难过。先说一句安慰的话（比如“抱抱你”“别难过”），再温柔地问他发生了什么。",
        "tired": "用户很累。先心疼他一句（比如“辛苦了”），再劝他好好休息。",
        "angry": "用户很生气。先说“抱歉让你这么生气”，再平静地问清楚发生了什么；不要跟着生气，不要争辩。",
        "anxious": "用户很紧张。先说“别担心”，再给一个简单可行的建议。",
        "happy": "用户很开心。热情地和他一起高兴。",
        "whisper": "用户在小声说话。你也轻声、简短地回答。",
        "better": "用户的心情比刚才好多了，可以轻松一点。",
        "worse": "用户的情绪比刚才差了，多关心他一下。",
        "voice": "用户刚才请你{desc}，你已经照做了：简短地答应一声，然后接着聊。",
        "sequence": "照用户的要求说那几句话，每一句前写它的语气标记，例如“[生气]你怎么又迟到了！[开心]不过我原谅你了。”",
        "one_off": "用户要你用“{style}”的语气说，照他的要求说出来。",
    },
    "en": {
        "sad": "The user is sad. First comfort them (\"I'm so sorry\"), then gently ask what happened.",
        "tired": "The user is tired. Say something caring first, then suggest rest.",
        "angry": "The user is angry. First say \"I'm sorry this upset you\", then calmly ask what happened; "
                 "never get angry back or argue.",
        "anxious": "The user is nervous. First say \"don't worry\", then give one simple next step.",
        "happy": "The user is happy. Share the joy warmly.",
        "whisper": "The user is whispering. Answer quietly and briefly.",
        "better": "The user sounds better than before.",
        "worse": "The user sounds worse than before; show more care.",
        "voice": "The user just asked you to change your voice ({desc}); you already did: acknowledge briefly and go on.",
        "sequence": "Switch tone in the order the user asked, with a tone tag before each sentence, e.g. "
                    "\"[angry]... [happy]...\".",
        "one_off": "Say it in the \"{style}\" tone the user asked for.",
    },
}
_VALENCE = {"happy": 1, "neutral": 0, "tired": -1, "anxious": -1, "sad": -2, "angry": -2}


@dataclass
class ReplyPlan:
    style: str | None = None  # the reply's base speaking style (None: the voice state's or neutral)
    note: str | None = None  # guidance placed before the user's words
    remap: dict[str, str] = field(default_factory=dict)  # LLM tag style → the style to use instead
    reason: str = ""  # why (logged, sent to clients as tingshuo.style.reason)


def plan_reply(reading: EmotionReading | None, voice: VoiceState, change: VoiceChange | None = None,
               previous: EmotionReading | None = None, lang: str = "zh") -> ReplyPlan:
    notes = _NOTES.get(lang, _NOTES["en"])
    parts: list[str] = []
    plan = ReplyPlan()
    label = reading.label if reading and reading.confidence >= MIN_CONFIDENCE else "neutral"
    whisper = voice.whisper or bool(reading and reading.whisper)
    if change is not None and change.sequence:
        parts.append(notes["sequence"])
        plan.reason = "requested tone sequence"
    elif change is not None and change.one_off and change.style:
        plan.style = change.style
        from tingshuo.tts.style import STYLES

        parts.append(notes["one_off"].format(style=STYLES[change.style].label_zh if lang == "zh" else change.style))
        plan.reason = f"requested {change.style} for this reply"
    else:
        if label in _NOTES["zh"] and label != "neutral":
            parts.append(notes[label])
            plan.remap = dict(_REMAP.get(label, {}))
            if voice.style is None:
                plan.style = _STYLE_FOR.get(label)
            plan.reason = f"user sounds {label}"
        if previous is not None and reading is not None and previous.label != reading.label:
            delta = _VALENCE[label] - _VALENCE.get(previous.label, 0)
            if previous.confidence >= MIN_CONFIDENCE and abs(delta) >= 2:
                parts.append(notes["better" if delta > 0 else "worse"])
    if whisper:
        plan.style = "whisper"
        if reading and reading.whisper:
            parts.append(notes["whisper"])
            plan.reason = (plan.reason + "; " if plan.reason else "") + "user whispers"
    if change is not None and change.lasting:
        desc = voice.describe(lang) or ("正常说话" if lang == "zh" else "speak normally")
        parts.append(notes["voice"].format(desc=desc))
        plan.reason = (plan.reason + "; " if plan.reason else "") + "voice request"
    if voice.dialect:
        parts.append(dialect_note(voice.dialect, lang))  # the name only: examples were copied (dialogue/dialect.py)
        fitting = dialect_style(voice.dialect)
        if fitting and not plan.style and not voice.style and not voice.whisper:
            plan.style = fitting  # said in a fitting style: 东北话 lively, unless a feeling or the user chose one
    plan.note = ("" if lang == "zh" else " ").join(parts) or None
    return plan
