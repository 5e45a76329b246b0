"""Any character the user names: a persona written for the call from the name, with a voice cast from its traits.

The built-in personas are presets; "你扮演猪八戒", "当我奶奶跟我说说话", "pretend to be a pirate" name someone no
preset plays. The bundled 1.5B, given only the name ("你现在是猪八戒…"), answered 6 of 6 characters as a generic
assistant ("今天吃了胡萝卜！"): it follows a described manner far better than it recalls one. So the model first
writes a short character card — how they call themselves and the listener, their manner, one thing they often
say, and the traits a voice is cast from (gender, age, how the voice sounds) — in a fixed line format, few-shot.
A JSON card under a schema took 4–7 s and came back with "口头禅：猪八戒，我叫猪八戒"; the few-shot line card
takes 1.6–2.3 s on 2 cores, once per character per process (cached; a character met again in the call is the
same persona). The card is data for the persona's prompt, which keeps the safety line above the role.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from tingshuo.dialogue.persona import Persona, role_preamble
from tingshuo.llm.base import ChatModel, LlmError, Message

log = logging.getLogger("tingshuo.dialogue")

KEY_PREFIX = "role:"  # an improvised persona's key: "role:猪八戒" (never a built-in or user persona's key)


@dataclass(frozen=True)
class Card:
    """What the model wrote about a character: enough to write a persona prompt and cast a voice."""

    self_name: str  # how they call themselves (俺老猪, 老夫, I)
    address: str  # how they call the listener (猴哥, 年轻人, matey)
    manner: str  # how they talk
    catchphrase: str
    female: bool
    age: str  # child | young | adult | old
    sound: str  # lively | calm | gentle | gruff


_ZH_FIELDS = ("自称", "称呼对方", "说话", "口头禅", "性别", "年纪", "声音")
_EN_FIELDS = ("I call myself", "I call you", "Manner", "Catchphrase", "Gender", "Age", "Voice")
_AGE = {"小孩": "child", "年轻": "young", "中年": "adult", "老人": "old",
        "child": "child", "young": "young", "adult": "adult", "old": "old"}
_SOUND = {"活泼": "lively", "沉稳": "calm", "温柔": "gentle", "粗犷": "gruff",
          "lively": "lively", "calm": "calm", "gentle": "gentle", "gruff": "gruff"}

_SYSTEM = {
    "zh": ("用户想让语音助手扮演一个角色。写出这个角色怎么说话，每项一行，简短：自称、称呼对方、说话（语气和习惯）、"
           "口头禅（这个角色自己会说的一句话）、性别、年纪、声音。性别写男或女；年纪写小孩、年轻、中年或老人；"
           "声音写活泼、沉稳、温柔或粗犷。"),
    "en": ("The user wants a voice assistant to play a character. Write how this character talks, one short item "
           "per line: what they call themselves, what they call the listener, their manner, a catchphrase (something "
           "this character would say), gender (male or female), age (child, young, adult or old) and voice (lively, "
           "calm, gentle or gruff)."),
}
# Examples unlike each other (a literary hero, a lady, an old man, an ordinary job) so no one of them is copied:
# with 唐僧 as the nearest example a pirate's catchphrase came back "阿弥陀佛。"
_EXAMPLES = {
    "zh": (("孙悟空", ("俺老孙", "小娃娃", "豪爽直率，爱吹牛又讲义气，又快又俏皮", "俺老孙来也！", "男", "年轻", "活泼")),
           ("林黛玉", ("我", "你", "文雅含蓄，带古风和诗意，敏感伶俐，爱用“罢了”", "罢了罢了。", "女", "年轻", "温柔")),
           ("老中医", ("老夫", "年轻人", "慢条斯理，爱讲养生的道理，说话带点文气", "年轻人，身体要紧呐。", "男", "老人", "沉稳")),
           ("幼儿园老师", ("老师", "小朋友", "耐心亲切，说话慢，爱夸奖，常问问题", "你真棒！", "女", "年轻", "温柔"))),
    "en": (("Sherlock Holmes", ("I", "my dear fellow", "precise, observant and a little smug, thinks aloud",
                                "Elementary.", "male", "adult", "calm")),
           ("a kindergarten teacher", ("Miss Lily", "sweetie", "patient and cheerful, speaks slowly, praises a lot",
                                       "Good job, sweetie!", "female", "young", "gentle")),
           ("an old village doctor", ("old Doc", "young one", "slow and kindly, full of homely advice",
                                      "Rest is the best medicine.", "male", "old", "calm"))),
}


def _card_text(values: tuple[str, ...], lang: str) -> str:
    names = _ZH_FIELDS if lang == "zh" else _EN_FIELDS
    sep = "：" if lang == "zh" else ": "
    return "\n".join(f"{k}{sep}{v}" for k, v in zip(names, values))


def messages(name: str, lang: str) -> list[Message]:
    lang = "zh" if lang == "zh" else "en"
    msgs: list[Message] = [{"role": "system", "content": _SYSTEM[lang]}]
    label = "角色：" if lang == "zh" else "Character: "
    for who, values in _EXAMPLES[lang]:
        msgs += [{"role": "user", "content": label + who}, {"role": "assistant", "content": _card_text(values, lang)}]
    msgs.append({"role": "user", "content": label + name})
    return msgs


def parse_card(text: str, lang: str) -> Card:
    """The card from the model's lines; LlmError when a line is missing or a trait is none of the choices."""
    lang = "zh" if lang == "zh" else "en"
    names = _ZH_FIELDS if lang == "zh" else _EN_FIELDS
    values: dict[str, str] = {}
    for line in text.strip().splitlines():
        k, sep, v = line.replace("：", ":").partition(":")
        if sep:
            values[k.strip().lower()] = v.strip()
    try:
        got = [values[k.lower()] for k in names]
        gender, age, sound = got[4].lower(), _AGE[got[5].lower()], _SOUND[got[6].lower()]
    except KeyError as e:
        raise LlmError(f"the character card lacks or misreads {e}: {text!r}") from None
    if gender not in ("男", "女", "male", "female") or not all(got[:4]):
        raise LlmError(f"the character card is malformed: {text!r}")
    return Card(got[0], got[1], got[2].rstrip("。."), got[3], gender in ("女", "female"), age, sound)


_LAST = re.compile(r"(声音|Voice)\s*[:：]\s*(%s)\b" % "|".join(_SOUND), re.I)


def write_card(llm: ChatModel, name: str, lang: str) -> Card:
    """One call of the model (blocking: run it on the model's thread). Free text in the examples' line format:
    under a GBNF grammar llama-cpp-python sampled at ~55 ms a token (3.2–3.5 s a card) against ~30 ms free
    (1.6–2.3 s), and the few-shot format came back whole in every case tried; a card that does not parse is an
    LlmError (the role then goes on with its name only)."""
    lang = "zh" if lang == "zh" else "en"
    msgs = messages(name, lang)
    # the instructions and examples are the same for every character: their KV state is kept (saved after the
    # first time), so a card pays for its name and its ~50 tokens only (~3 s of prefill otherwise, on 2 cores)
    llm.prime(msgs[:-1])
    text = ""
    for delta in llm.stream(msgs, max_tokens=110, temperature=0.0):
        text += delta
        if text.count("\n") >= len(_ZH_FIELDS) - 1 and _LAST.search(text):  # the last line is whole: no more tokens to wait for
            break
    return parse_card(text, lang)


# Casting from the voice tables (tingshuo.tts.voices): gender first, then how the voice sounds, age over both at
# the ends of life. 小暖's own voice is never cast, so a role is audibly someone else.
_CAST = {
    (False, "lively"): "wukong", (False, "calm"): "tangseng", (False, "gentle"): "tangseng",
    (False, "gruff"): "narrator", (True, "lively"): "xiaoya", (True, "calm"): "daiyu", (True, "gentle"): "daiyu",
    (True, "gruff"): "xiaoya",
}
_STYLE = {"lively": "happy", "calm": "calm", "gentle": "tender", "gruff": None}


def cast_voice(card: Card) -> str:
    if card.age == "old" and not card.female:
        return "narrator"  # low and warm
    if card.age == "child":
        return "xiaoya" if card.female else "wukong"  # the high voices
    return _CAST[(card.female, card.sound)]


_OWNER = re.compile(r"^(我的|我|my\s+|your\s+)", re.I)


def persona_from_card(name: str, card: Card | None, lang: str) -> Persona:
    """The persona for ``name`` (as the user said it: "我奶奶" is the user's grandmother, who calls herself 奶奶).
    Without a card (no model able to write one) the prompt names the character only."""
    lang = "zh" if lang == "zh" else "en"
    owned = _OWNER.match(name)
    who = name[owned.end():].strip() if owned else name.strip()
    if lang == "zh":
        desc = f"用户的{who}" if owned else f"用户请你扮演的{who}"
    else:
        desc = f"the user's {who}" if owned else f"the character the user asked you to play: {who}"
    if card is None:
        return Persona(key=KEY_PREFIX + who, name=who, description=desc, voice=None, language=lang,
                       greeting=f"好，我是{who}。" if lang == "zh" else f"All right, I'm {who}.", improvised=True)
    if lang == "zh":
        style = f"自称“{card.self_name}”，称呼对方“{card.address}”，{card.manner}"
    else:
        style = f"call yourself {card.self_name} and the user {card.address}; {card.manner}"
    return Persona(key=KEY_PREFIX + who, name=who, description=desc, speaking_style=style, voice=cast_voice(card),
                   default_emotion=_STYLE[card.sound], catchphrases=(card.catchphrase,), language=lang,
                   greeting=f"{card.self_name}来啦！{card.catchphrase}" if lang == "zh" else card.catchphrase,
                   female=card.female, improvised=True)


def prepare(llm: ChatModel, name: str, lang: str) -> Card | None:
    """The card for ``name`` (None when none could be written), and the shared role rules' KV state loaded, so the
    new persona's prompt is evaluated from where they end (model thread)."""
    try:
        card = CARDS.get(llm, name, lang)
    except LlmError as e:
        log.warning("no character card for %s: %s", name, e)
        card = None
    llm.warmup(role_preamble("zh" if lang == "zh" else "en"))
    return card


class CardCache:
    """Cards already written in this process (keyed by model, language and name): a character asked for again, by
    this caller or another, costs nothing. Bounded; thread-safe (model threads write it)."""

    def __init__(self, size: int = 128) -> None:
        self._cards: OrderedDict[tuple[str, str, str], Card] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, llm: ChatModel, name: str, lang: str) -> Card:
        key = (llm.name, "zh" if lang == "zh" else "en", name)
        with self._lock:
            if key in self._cards:
                self._cards.move_to_end(key)
                return self._cards[key]
        card = write_card(llm, name, lang)
        log.info("character card for %s: %s", name, card)
        with self._lock:
            self._cards[key] = card
            while len(self._cards) > self._size:
                self._cards.popitem(last=False)
        return card


CARDS = CardCache()
