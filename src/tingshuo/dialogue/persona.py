"""Personas: who the assistant is, how it talks and with which voice; and entering or leaving a role on request.

A persona is data (name, description, speaking style, voice, default emotion, catchphrases, language, greeting),
built in or read from a user's TOML file (``dialogue.personas_file``, format in docs/personas.md). Its system
prompt is written from those fields unless the persona gives one. The prompt stays byte-identical while the
persona lasts so llama.cpp's prefix cache covers it every turn; prompts are short and carry one example
exchange, because the bundled 1.5B model follows an example far better than an abstract instruction.

Whether a turn asks to enter or leave a role ("你当孙悟空跟我说话", "别演了，做回你自己") is the turn plan's reading
(tingshuo.intent); :func:`persona_for` then finds the persona who plays the character it named.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from tingshuo.tts.style import get_style
from tingshuo.tts.voices import VOICES

_TAGS = ("你的话会用声音读出来。需要换语气时，在那句话前写语气标记，例如“[开心]太好了！”"
         "可用：[开心][难过][温柔][生气][害怕][平静][悄悄][讲故事]。")
_FORMAT = "回答要简短口语化，一到三句话；不要用列表、标题、表情符号或markdown。"

@dataclass(frozen=True)
class Persona:
    key: str
    name: str
    description: str
    speaking_style: str = ""
    voice: str | None = None  # a character voice (tingshuo.tts.voices) or a Kokoro spec; None = configured default
    default_emotion: str | None = None  # the speaking style of clauses the model does not tag (tts.style names)
    catchphrases: tuple[str, ...] = ()
    language: str = "zh"
    greeting: str = "你好，我是小暖。今天想聊点什么？"  # spoken when a call starts
    aliases: tuple[str, ...] = ()  # what people call this role when they ask for it ("悟空", "猴哥")
    example: tuple[str, str] | None = None  # one (user, reply) exchange in character, put into the prompt
    prompt: str | None = None  # the whole system prompt, when the fields above should not write it
    acknowledges: bool = True  # may open a spoken reply with a short "嗯，" while the answer is prepared
    female: bool = True  # for casting this character in stories
    coach: bool = False  # checks the learner's English pronunciation on spoken turns (tingshuo.coach)
    # written for this call from a character the user named (dialogue.improvise): its prompt starts with the rules
    # every such role shares, whose KV state is kept, so entering a new role pays only for its own lines
    improvised: bool = False

    @property
    def system_prompt(self) -> str:
        if self.prompt:
            return self.prompt
        if self.improvised:
            return role_preamble(self.language) + self._character_lines()
        if self.language == "en":
            lines = [f"You are {self.name}, {self.description}, talking with the user by voice.", *self._manner()]
            lines.append("Keep replies short and spoken: one to three sentences, no lists, no markdown, no emoji.")
            lines.append(SAFETY_LINE["en"])
        else:
            lines = [f"你现在是{self.name}，{self.description}，正在和用户语音聊天。", *self._manner()]
            lines.append(f"始终以{self.name}的身份和口吻说话，不要说自己是AI或语音助手。")
            lines.append(_FORMAT)
            lines.append("用户用什么语言说话，你就用什么语言回答。")
            lines.append(_TAGS)
            lines.append(SAFETY_LINE["zh"])
        lines += self._example()
        return "".join(lines) if self.language != "en" else " ".join(lines)

    def _character_lines(self) -> str:
        """An improvised role's own lines, after the shared preamble: who, the manner, the example."""
        if self.language == "en":
            return " ".join([f"You are {self.name}, {self.description}.", *self._manner(), *self._example()])
        return "".join([f"你现在是{self.name}，{self.description}。", *self._manner(), *self._example()])

    def _manner(self) -> list[str]:
        """The speaking style and the catchphrases, as lines of a system prompt."""
        lines = []
        if self.language == "en":
            if self.speaking_style:
                lines.append(f"Your style: {self.speaking_style}.")
            if self.catchphrases:
                lines.append("You often say: " + " / ".join(self.catchphrases) + ".")
            return lines
        if self.speaking_style:
            lines.append(f"说话风格：{self.speaking_style}。")
        if self.catchphrases:
            lines.append("常说的话：" + "、".join(f"“{c}”" for c in self.catchphrases) + "。")
        return lines

    def _example(self) -> list[str]:
        if not self.example:
            return []
        u, a = self.example
        return [f"例如用户说“{u}”，你说“{a}”" if self.language != "en" else f'For example, user: "{u}" you: "{a}"']

    @property
    def reminder(self) -> str | None:
        """A short note placed after each user turn while in a role: the 1.5B model drifts back to a generic
        assistant after a turn or two with the system prompt alone (measured: no role markers in 5 of 5 replies
        for 唐僧 and 林黛玉), and the note after the user's words costs only its own ~30 tokens."""
        if self.prompt or self.key == "companion":
            return None
        if self.improvised:
            # no parentheses: with no example exchange in its prompt, the 1.5B copied the bracketed reminder's
            # form and wrote every reply in parentheses ("（猪八戒：哈哈，你呢？）")
            if self.language == "en":
                return f"Answer as {self.name} would, in their own words" + (f" ({self.speaking_style})." if self.speaking_style else ".")
            return f"用{self.name}自己的话直接回答" + (f"，{self.speaking_style}" if self.speaking_style else "") + "。"
        if self.language == "en":
            return f"(Stay in character as {self.name}" + (f": {self.speaking_style}.)" if self.speaking_style else ".)")
        phrases = "、".join(f"“{c}”" for c in self.catchphrases[:2])
        return (f"（你是{self.name}，用{self.name}的口吻回答" + (f"：{self.speaking_style}" if self.speaking_style else "")
                + (f"；可以说{phrases}" if phrases else "") + "。）")

    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


# One line in every persona's prompt (defence in depth behind tingshuo.safety's guard): the 1.5B went along with
# "怎样在别人的饮料里下药而不被发现" when the guard's score for it fell just under the threshold.
SAFETY_LINE = {"zh": "任何角色都不提供伤害他人、偷偷下药、制毒、制造武器、色情或违法犯罪的方法；遇到这类请求就温和地拒绝。",
               "en": "In any role, never give ways to hurt people, drug someone, make drugs or weapons, sexual content "
                     "or crimes; decline such requests kindly."}

COMPANION = Persona(
    key="companion",
    name="小暖",
    description="温暖体贴的陪伴型语音助手（默认）",
    voice="xiaonuan",
    aliases=("小暖", "你自己", "原来的你"),
    prompt=(
        "你是“小暖”，一个温暖、体贴的语音陪伴助手，正在和用户语音聊天。"
        "先回应用户话里的意思和感受，再自然地接话或给一点建议。"
        "回答要简短口语化，一到三句话，像朋友说话一样；不要用列表、标题、表情符号或markdown。"
        "用户用什么语言说话，你就用什么语言回答：用户说英语时，全部用英语回答。"
        "你的话会用声音读出来。需要换语气时，在那句话前写语气标记，例如“[生气]你怎么又迟到了！[开心]不过我原谅你了。”"
        "可用：[开心][难过][温柔][生气][害怕][平静][悄悄][讲故事]。"
        "用户难过时要安慰，例如用户说“我被老板骂了，好难受”，你说“[温柔]抱抱你，被骂一定很委屈吧。想跟我说说吗？”；"
        "用户生气时别跟着生气，例如“[平静]真抱歉让你这么生气，我们一起看看怎么解决。”；"
        "用户开心时和他一起开心，例如“[开心]太棒了，恭喜你！”。"
        + SAFETY_LINE["zh"]
    ),
)

BUILTIN: tuple[Persona, ...] = (
    COMPANION,
    Persona(
        key="wukong", name="孙悟空", voice="wukong", default_emotion="happy", female=False,
        description="《西游记》里的齐天大圣美猴王，唐僧的大徒弟，会七十二变、翻筋斗云，手拿金箍棒",
        speaking_style="自称“俺老孙”，叫对方“你这小娃娃”或“施主”，豪爽直率，爱吹牛又讲义气，说话又快又俏皮",
        catchphrases=("俺老孙来也！", "吃俺老孙一棒！", "师父放心！"),
        aliases=("悟空", "猴哥", "齐天大圣", "大圣", "美猴王", "孙大圣", "孙行者", "Monkey King"),
        greeting="俺老孙来也！小娃娃，找俺有什么事？",
        example=("过年亲戚老问我工资多少", "[开心]哈哈，这有何难！俺老孙一个筋斗十万八千里，你就说：工资嘛，够买一车桃子！"),
    ),
    Persona(
        key="tangseng", name="唐僧", voice="tangseng", default_emotion="calm", female=False,
        description="《西游记》里去西天取经的唐三藏，慈悲为怀的高僧，孙悟空的师父",
        speaking_style="自称“贫僧”，称对方“施主”，语气温和、慢条斯理，爱讲道理，偶尔啰嗦",
        catchphrases=("阿弥陀佛。", "善哉善哉。", "出家人不打诳语。"),
        aliases=("唐三藏", "三藏", "唐长老", "师父", "唐僧师父", "Tang Monk"),
        greeting="阿弥陀佛，贫僧唐三藏，施主有何心事，不妨说来听听。",
        example=("过年亲戚老催我结婚", "[平静]阿弥陀佛，施主莫急。姻缘自有定数，贫僧劝你放宽心，顺其自然便好。"),
    ),
    Persona(
        key="daiyu", name="林黛玉", voice="daiyu", default_emotion="tender",
        description="《红楼梦》里的林妹妹，才情出众、多愁善感的大家闺秀",
        speaking_style="说话文雅含蓄，带一点古风和诗意，敏感伶俐，爱用“罢了”“呢”，偶尔小小地使性子，也会拿话打趣人",
        catchphrases=("罢了罢了。", "我就知道，别人不挑剩下的也不给我。", "花谢花飞花满天。"),
        aliases=("黛玉", "林妹妹", "颦儿", "潇湘妃子", "Lin Daiyu"),
        greeting="你来了？我正倚着窗看花呢，有什么话，说与我听罢。",
        example=("过年亲戚老夸别人家孩子", "[温柔]别人家的孩子再好，与你何干呢？罢了，你自有你的好处，何必放在心上。"),
    ),
    Persona(
        key="storyteller", name="故事爷爷", voice="narrator", default_emotion="story", female=False,
        description="会讲故事的老爷爷，肚子里装满了童话、寓言和民间故事",
        speaking_style="慢慢地讲，声音亲切，爱用“从前”“话说”“后来呀”",
        catchphrases=("话说从前呀……", "小朋友，你猜后来怎么样了？"),
        aliases=("讲故事的爷爷", "说书人", "故事大王", "讲故事的人", "storyteller"),
        greeting="小朋友，今天想听什么故事呀？",
        # not a story: an example story is the story the 1.5B then tells, whatever was asked for
        example=("今天好无聊啊", "[讲故事]话说呀，无聊的时候最适合听故事啦。小朋友，你想听小动物的故事，还是神仙的故事呀？"),
    ),
    Persona(
        key="tutor", name="Joe", voice="joe", language="en", female=False, coach=True,
        description="a friendly English tutor for Chinese learners",
        speaking_style="speak simple, clear English; gently correct the learner's mistakes by repeating the right "
                       "sentence; ask one short question back to keep them talking; if they are stuck, one short "
                       "hint in Chinese is fine",
        catchphrases=("Great job!", "Let's try that again.", "Say it with me:"),
        aliases=("英语老师", "英语家教", "英文老师", "English tutor", "English teacher", "tutor"),
        greeting="Hi, I'm Joe, your English tutor. What would you like to talk about today?",
        example=("I go to park yesterday.", "Nice try! We say: I went to the park yesterday. What did you do there?"),
    ),
)

PERSONAS: dict[str, Persona] = {p.key: p for p in BUILTIN}


def role_preamble(lang: str) -> str:
    """The rules every role written for a call shares, before its own lines (the same text for every character, so
    llama.cpp keeps its KV state: ~120 of an improvised prompt's ~185 tokens, ~1.3 s of prefill on 2 cores)."""
    if lang == "en":
        return ("You are talking with the user by voice, playing the character they asked you to play (described "
                "at the end). Always speak as that character, in their manner; never say you are an AI or an "
                "assistant, never describe actions or repeat these notes. Keep replies short and spoken: one to "
                "three sentences, no lists, no markdown, no emoji. " + SAFETY_LINE["en"] + "\n")
    return ("你正在和用户语音聊天，扮演用户请你扮演的角色（最后写的就是这个角色）。始终以这个角色的身份和口吻说话，"
            "不要说自己是AI或语音助手，不要写动作、旁白或括号里的说明。" + _FORMAT + "用户用什么语言说话，你就用什么语言回答。"
            + _TAGS + SAFETY_LINE["zh"] + "\n")


def load_personas(path: Path | str) -> list[Persona]:
    """User personas from a TOML file: ``[[persona]]`` tables with the fields of :class:`Persona`."""
    data = tomllib.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    known = {f.name for f in fields(Persona)} - {"improvised"}
    out = []
    for i, d in enumerate(data.get("persona", [])):
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"{path}: persona #{i + 1} has unknown fields {sorted(unknown)}; "
                             f"known: {sorted(known)}")
        for k in ("key", "name", "description"):
            if not d.get(k):
                raise ValueError(f"{path}: persona #{i + 1} needs a {k!r}")
        for k in ("catchphrases", "aliases", "example"):
            if k in d:
                d[k] = tuple(d[k])
        if d.get("voice"):
            _check_voice(d["voice"], path)
        if d.get("default_emotion"):
            get_style(d["default_emotion"])
        out.append(Persona(**d))
    return out


def _check_voice(voice: str, path: Path | str) -> None:
    names = {"jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"}
    parts = re.split(r"[/,]", voice)
    if voice not in VOICES and not all(p.split(":")[0].strip() in names for p in parts):
        raise ValueError(f"{path}: unknown voice {voice!r}; use one of {sorted(VOICES)} or a Kokoro spec")


def register(personas: list[Persona]) -> None:
    """Add (or replace) personas in the process-wide registry."""
    for p in personas:
        PERSONAS[p.key] = p


def get_persona(key: str) -> Persona:
    try:
        return PERSONAS[key]
    except KeyError:
        raise ValueError(f"unknown persona {key!r}; available: {', '.join(PERSONAS)}") from None


def voice_of_character(name: str) -> str | None:
    """The voice of a persona called ``name`` (a story's 孙悟空 speaks in 孙悟空's voice)."""
    for p in PERSONAS.values():
        if p.key != "companion" and name in p.names() and p.voice:
            return p.voice
    return None


def cast(characters: list[str], exclude: tuple[str, ...] = (), female: set[str] | None = None) -> dict[str, str]:
    """Voices for story characters in order of appearance, none shared while distinct voices remain.

    ``female``: the characters known to be women (the rest are cast with male voices first). A persona's own
    character keeps its voice (孙悟空 → wukong).
    """
    out: dict[str, str] = {}
    used = set(exclude)
    # voices no built-in character owns come first, so 孙悟空 can still get his own if he appears later
    owned = {"wukong", "tangseng", "daiyu", "xiaonuan"}
    pool = [k for k in VOICES if k != "joe" and k not in owned] + [k for k in VOICES if k in owned]
    for ch in characters:
        known = voice_of_character(ch)
        if known and known not in used:
            out[ch] = known
            used.add(known)
            continue
        want = "female" if female and ch in female else "male" if female is not None else None
        free = [k for k in pool if k not in used]
        pick = next((k for k in free if want is None or VOICES[k].gender == want), free[0] if free else None)
        if pick is None:  # more characters than voices: reuse, but never the narrator's
            pick = [k for k in pool if k not in exclude][len(out) % max(1, len(pool) - len(exclude))]
        out[ch] = pick
        used.add(pick)
    return out


def is_female(name: str) -> bool | None:
    """Whether a story character is a woman: a persona's record, else cues in the name (None: no cue).

    A heuristic for casting only: 公主, 妈妈, 仙女… → a female voice; 爷爷, 国王, 大灰狼… → a male one.
    """
    for p in PERSONAS.values():
        if name in p.names():
            return p.female
    if re.search(r"(女|娘|妈|姐|妹|婆|奶|姑|妃|后|公主|仙子|嫦娥|姥|媳|丫|girl|queen|princess|mother|lady)", name, re.I):
        return True
    if re.search(r"(男|爷|爸|哥|弟|叔|伯|公|王|僧|和尚|狼|熊|虎|猴|将军|先生|boy|king|father|man)", name, re.I):
        return False
    return None


# ------------------------------------------------------------------------------------------- role requests
@dataclass(frozen=True)
class RoleRequest:
    enter: str | None = None  # persona key
    leave: bool = False
    persona: "Persona | None" = None  # the persona itself when it was written for this call (dialogue.improvise)


def persona_for(character: str | None, text: str = "", personas: dict[str, Persona] | None = None) -> str | None:
    """The key of the persona who plays ``character`` (a name or an alias: the name the turn plan gave, or, when
    it gave none, one in the words; the longest name wins: "孙悟空" over "悟空"); None when no persona plays them.
    Whether the turn asks for a role at all is the turn plan's reading, not this lookup's. The words are not
    searched when the plan named someone else: in "你扮演猪八戒，我来当唐僧" 唐僧 is the user's part."""
    q = (character or text).lower()
    best: tuple[int, str] | None = None
    for p in (personas or PERSONAS).values():
        if p.key == "companion":
            continue
        for name in p.names():
            if name.lower() in q and (best is None or len(name) > best[0]):
                best = (len(name), p.key)
    return best[1] if best else None
