"""The turn plan read by the chat model: what the user asked the assistant to do, from the model's judgement.

Why the model and not patterns: word lists misfired on ordinary conversation ("我今天误机了" searched because of
今天, "来一个笑话" sang, "时间过得太快了" slowed the voice for the call). Here the model answers one short line,
``意图，声音[，语气][，一直|这次]``, after a fixed prompt with examples (none of them in tests/data/intents/):

- **In process (llama.cpp)** the answer is not generated but *read*: the intent is the next-token distribution
  over the ten intent labels (one forward pass over the turn's ~30–60 new tokens, the fixed prompt cached on this
  reader's own context), then the voice field after the chosen label (2 more tokens), the style and whether it
  lasts only when a voice change was read. A probability can be thresholded and reported; a sampled word cannot.
- **Chat APIs** (OpenAI-compatible servers): one answer constrained by a JSON schema (``response_format``).

Slots (which song, the topic, which character, the search query) are taken from the words only once the model has
said what the turn is: a title from the songbook's names, a character from the persona table, else a short
schema-constrained answer. Word lists never start an action here; the model does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np

from tingshuo.intent.gate import can_ask_voice, can_mean
from tingshuo.intent.plan import CHAT, Intent, Name, VoiceAsk
from tingshuo.llm.base import ChatModel, LlmError, Message
from tingshuo.llm.probe import LinearProbe, softmax

log = logging.getLogger(__name__)

# answer label (its first token is read) → intent; first tokens are distinct in Qwen2.5's vocabulary
LABELS: dict[str, Name] = {"聊天": "chat", "唱歌": "sing", "改词": "sing_adapt", "新歌": "sing_new", "故事": "story",
                           "扮演": "role", "退出": "role_leave", "安静": "stop", "查询": "search", "发音": "coach"}
VOICE_LABELS: dict[str, str | None] = {"无": None, "慢": "slower", "快": "faster", "大声": "louder", "小声": "softer",
                                       "悄悄": "whisper", "正常": "reset", "语气": "style", "方言": "dialect",
                                       "别人": None}  # someone else's voice, a thing's speed: no change
STYLE_LABELS: dict[str, str] = {"开心": "happy", "难过": "sad", "生气": "angry", "害怕": "fearful", "温柔": "tender",
                                "平静": "calm", "讲故事": "story"}
LASTING_LABELS = {"一直": True, "这次": False}

PROMPT = """你是语音助手“小暖”的理解模块。读用户这一轮说的话（前面可能附上一轮对话），判断用户要助手做什么。只回答一行：意图，声音
意图（选一个）：
聊天：普通聊天、提问、倾诉、问知识和常识。只是提到唱歌、故事、角色、说话快慢、时间、停，却没有要助手去做的，都是聊天（例如“我昨天唱了首歌”“来个笑话”“时间过得太快了”“他说话太快”）
唱歌：要助手唱一首歌，说了歌名或随便唱一首
改词：要助手用某首歌的调子配上新的歌词来唱
新歌：要助手现编一首关于某个主题的新歌来唱，没有说用哪首歌的调子
故事：要助手讲一个故事、童话、寓言或传说
扮演：要助手扮演某个人物或角色来跟用户说话
退出：助手正在扮演角色时，用户要助手不要再扮演，变回自己
安静：用户要助手马上停下来、别说了、安静
查询：回答要靠现在的实时信息，必须上网查：天气、新闻、比赛结果、股价汇率金价、现任领导人、最新产品价格。知识、常识、历史、地理、歌名书名这些不变的事是聊天
发音：用户要助手听他说英语并纠正发音
声音（用户要求助手改变自己说话的声音时写；提到别人的声音写别人；否则写无）：慢、快、大声、小声、悄悄、正常（恢复原来的声音）、语气（换一种语气或情绪，后面写哪种：开心、难过、生气、害怕、温柔、平静、讲故事）、方言。只管助手自己怎么说话：嫌助手声音太小就写大声，嫌太快就写慢；说的是别人、东西或用户自己的声音、快慢、大小，写别人。
有声音要求时最后再写：一直（以后都这样）或这次（只这一句）。"""

# (context, turn, answer): context is "" or the previous exchange as the reader shows it
SHOTS: list[tuple[str, str, str]] = [
    ("", "给我唱首铃儿响叮当吧", "唱歌，无"),
    ("", "我上周在婚礼上唱了首歌，紧张死了", "聊天，无"),
    ("", "来个脑筋急转弯", "聊天，无"),
    ("", "把两只老虎的歌词改成关于上学的，唱一下", "改词，无"),
    ("", "唱一首关于星空的歌，词你自己编", "新歌，无"),
    ("", "讲个小兔子的故事", "故事，无"),
    ("", "讲个故事吧，慢慢讲", "故事，慢，一直"),
    ("", "我儿子天天唱小星星", "聊天，无"),
    ("", "来首关于下雨的歌", "新歌，无"),
    ("", "来首属于程序员的歌", "新歌，无"),
    ("", "唱一首后来", "唱歌，无"),
    ("", "Put new words about my goldfish to Happy Birthday and sing it.", "改词，无"),
    ("", "学鲁迅的口吻说两句", "扮演，无"),
    ("", "埃菲尔铁塔有多高", "聊天，无"),
    ("", "这个软件怎么这么慢", "聊天，无"),
    ("", "他说话好快，我都插不上嘴", "聊天，别人"),
    ("", "我妈嗓门特别大", "聊天，别人"),
    ("", "My boss talks way too loud on calls.", "聊天，别人"),
    ("", "你嗓门太大了", "聊天，小声，一直"),
    ("", "你念得太慢了", "聊天，快，一直"),
    ("", "我爸以前常给我讲他当兵的故事", "聊天，无"),
    ("", "你扮演武松跟我说话", "扮演，无"),
    ("", "我师兄说周末去爬山", "聊天，无"),
    ("助手正在扮演：武松", "好啦，不用扮武松了，你变回来吧", "退出，无"),
    ("", "好，停下吧", "安静，无"),
    ("", "我最近减肥，停不下来想吃甜的", "聊天，无"),
    ("", "现在纽约几度", "查询，无"),
    ("", "我今天面试搞砸了，好难受", "聊天，无"),
    ("", "今天的日子过得好慢", "聊天，无"),
    ("", "能慢慢说吗", "聊天，慢，一直"),
    ("", "声音调大点", "聊天，大声，一直"),
    ("", "用生气的语气说一句你好", "聊天，语气，生气，这次"),
    ("", "你用广东话说一下", "聊天，方言，一直"),
    ("", "跟我说悄悄话", "聊天，悄悄，一直"),
    ("", "换回你平时的声音吧", "聊天，正常，一直"),
    ("上一轮用户：周末去哪儿玩好\n上一轮助手：可以去公园走走，悄悄告诉你，那里的花开了。", "行啦，别小声了，大大方方地说",
     "聊天，正常，一直"),
    ("", "Listen to how I say 'water' and tell me if it's right.", "发音，无"),
    ("", "My friend whispered a secret to me.", "聊天，别人"),
    ("", "Sing me a lullaby.", "唱歌，无"),
    ("", "Tell me a fairy tale about a frog.", "故事，无"),
    ("", "Who is the current CEO of OpenAI?", "查询，无"),
    ("", "Stop, I've heard enough.", "安静，无"),
    ("", "I told my kid a story last night.", "聊天，无"),
    ("", "Talk faster, please.", "聊天，快，一直"),
]

MAX_CHARS = 400  # a turn longer than this is read by its start and end (a request sits at one end)
_WORDY = re.compile(r"[\w\u4e00-\u9fff]")
# a place before 话/口音 ("东北话", "四川口音"), not a verb ("同事说话" is not a dialect called 事说)
_DIALECT = re.compile(r"((?:(?![话说讲听的])[\u4e00-\u9fff]){2})(?:话|方言|口音|腔)|\bin (?:an? )?([A-Z][a-z]+) accent|"
                      r"(粤语|闽南语|客家话|吴语)")
_TOPIC_SCHEMA = {"type": "object", "properties": {"topic": {"type": "string", "maxLength": 16}}, "required": ["topic"]}


def prompt_hash() -> str:
    """The reader prompt's identity (instructions, examples, labels): a probe trained on one reads no other."""
    text = PROMPT + "".join(c + t + a for c, t, a in SHOTS) + "".join(LABELS)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _clip(text: str) -> str:
    t = " ".join(text.split())
    if len(t) > MAX_CHARS:
        t = t[: MAX_CHARS // 2] + " … " + t[-MAX_CHARS // 2:]
    return t


def _context(history: Iterable[Message], role: str | None) -> str:
    lines = []
    last = [m for m in history if m["role"] in ("user", "assistant")][-2:]
    for m in last:
        who = "用户" if m["role"] == "user" else "助手"
        lines.append(f"上一轮{who}：{_clip(m['content'])[:80]}")
    if role:
        lines.append(f"助手正在扮演：{role}")
    return "\n".join(lines)


def _turn(context: str, text: str) -> str:
    return f"{context}\n这一轮用户：{text}" if context else f"这一轮用户：{text}"


class PlanProbe(LinearProbe):
    """The intent, whether a voice change is asked for and whether it is for this reply only, from the reader's
    next-token logits where the intent label is read: a softmax regression over the logits of a fixed token set,
    and two binary heads,
    trained on tests/data/intents/dev.tsv by ``bench/train_plan_probe.py`` (why and how: that file). Package data
    (``intent/data/plan_probe.npz``)."""

    PACKAGE, FILE = "tingshuo.intent", "plan_probe.npz"

    def __init__(self, data: "np.lib.npyio.NpzFile") -> None:
        super().__init__(data)
        self.W, self.b, self.Wv, self.bv = data["W"], data["b"], data["Wv"], data["bv"]
        self.Wo, self.bo = data["Wo"], data["bo"]
        self.classes: list[str] = [str(c) for c in data["classes"]]

    def __call__(self, logits: np.ndarray, can_leave: bool = True) -> tuple[dict[str, float], float, float]:
        """P over the intents, P(a voice change is asked for) and P(that change is for this reply only).
        ``can_leave``: a role could be being played (without one role_leave is impossible: its share goes back to
        the others)."""
        f = self.features(logits)
        p = softmax(f @ self.W + self.b)
        if not can_leave:
            p[self.classes.index("role_leave")] = 0.0
            p /= p.sum()
        voice = float(softmax(f @ self.Wv + self.bv)[1])
        return dict(zip(self.classes, p.tolist())), voice, float(softmax(f @ self.Wo + self.bo)[1])


class IntentReader:
    """Reads a turn's :class:`Intent`. Blocking (a worker thread calls it); ``llm`` should be a context of its own
    so the fixed prompt stays cached (~1,300 tokens: ~10 s to evaluate on 2 cores, once, then loaded from the
    saved state)."""

    def __init__(self, llm: ChatModel, threshold: float = 0.4,
                 title: Callable[[str], str | None] | None = None, voice_threshold: float = 0.5,
                 probe: bool = True) -> None:
        self.llm = llm
        self.threshold = threshold  # P(an action intent) needed to act on it; below it the turn is chat
        self.voice_threshold = voice_threshold  # P(the voice label) needed to change the voice
        self.once = 0.5  # P(这次) above which a voice change is for this reply only
        self.title = title  # the songbook title named in the words (tingshuo.dialogue.songs.find_title), if any
        self._warm = False
        # the probe reads the logits of one model after this prompt (in process only); else the label tokens
        self.probe = (PlanProbe.bundled(self.fingerprint())
                      if probe and callable(getattr(type(self.llm), "next_token_logits", None)) else None)

    def _prefix(self) -> list[Message]:
        msgs: list[Message] = [{"role": "system", "content": PROMPT}]
        for ctx, turn, answer in SHOTS:
            msgs += [{"role": "user", "content": _turn(ctx, turn)}, {"role": "assistant", "content": answer}]
        return msgs

    def warmup(self) -> None:
        if not self._warm and self.llm.caps.prompt_scores:
            self.llm.prime(self._prefix())
        self._warm = True

    def messages(self, text: str, history: Iterable[Message] = (), role: str | None = None) -> list[Message]:
        """What the reader reads for a turn: the fixed prompt and examples, then the turn (and its context)."""
        clean = _clip(unicodedata.normalize("NFKC", text or "").strip())
        return [*self._prefix(), {"role": "user", "content": _turn(_context(history, role), clean)}]

    def fingerprint(self) -> str:
        """The model and the reader's prompt a probe is trained for."""
        return f"{self.llm.name}#{prompt_hash()}"

    def logits(self, text: str, history: Iterable[Message] = (), role: str | None = None) -> np.ndarray:
        """The next-token logits where the intent label is read, the same for the same turn every time (from the
        prompt's saved state: see LlamaCppChat.next_token_logits)."""
        return self._logits(self.messages(text, history, role))

    def _logits(self, msgs: list[Message]) -> np.ndarray:
        return self.llm.next_token_logits(msgs, fixed=len(msgs) - 1, answer="")  # type: ignore[attr-defined]

    def prepare(self, history: Iterable[Message] = (), role: str | None = None) -> None:
        """Have the next turn's context (``history``, ``role``: what :meth:`read` will be given) evaluated ahead,
        so a read pays only for the turn's own words. Only with the probe (it reads from the saved state)."""
        if self.probe is not None:
            msgs = self.messages("", list(history), role)
            self.llm.prepare(msgs, fixed=len(msgs) - 1, answer="")  # type: ignore[attr-defined]

    def read(self, text: str, history: Iterable[Message] = (), role: str | None = None) -> Intent:
        """The plan for ``text`` after ``history`` (``role``: the character the assistant plays now, if any).
        Never raises for odd input: empty, emoji-only or unreadable turns are ``chat``."""
        t0 = time.perf_counter()
        history = list(history)
        clean = unicodedata.normalize("NFKC", text or "").strip()
        if not _WORDY.search(clean):
            return CHAT
        msgs = self.messages(clean, history, role)
        try:
            if self.llm.caps.prompt_scores:
                out = self._by_labels(msgs, clean, can_leave=bool(role or history))
            elif self.llm.caps.json_schema:
                out = self._by_json(msgs, clean)
            else:
                return CHAT
        except LlmError as e:
            log.warning("turn plan failed, treated as chat: %s", e)
            return CHAT
        return replace(out, ms=(time.perf_counter() - t0) * 1000)

    # -- in process: read, not generate --------------------------------------------------------------------------
    def _probs(self, msgs: list[Message], labels: Iterable[str], prefix: str = "") -> dict[str, float]:
        p = self.llm.label_probabilities(msgs, list(labels), answer=prefix)
        if not p:
            raise LlmError("no label probabilities")
        return p

    def _by_labels(self, msgs: list[Message], text: str, can_leave: bool = True) -> Intent:
        wants_voice = once = None  # the probe's P(a voice change is asked for), P(for this reply only)
        if self.probe is not None:
            scores, wants_voice, once = self.probe(self._logits(msgs), can_leave)
            p = {k: scores[v] for k, v in LABELS.items()}
        else:
            p = self._probs(msgs, LABELS)
            scores = {LABELS[k]: v for k, v in p.items()}
        # act when the model puts enough weight on *doing* something (the action labels together: a song request
        # split between 唱歌 and 新歌 is still a song request), then on the likeliest action
        if 1.0 - p["聊天"] >= self.threshold:
            label = max((k for k in p if k != "聊天"), key=p.__getitem__)
        else:
            label = "聊天"
        intent: Name = LABELS[label]
        answer = f"{label}，"
        voice = None
        # the voice field only where the words can ask for a voice change at all (settle() would hold any other
        # reading back): each read is a decode of its own, ~100-190 ms on 2 cores however few its tokens
        # with the probe, it says whether a change is asked for and the field only which one
        asked = can_ask_voice(text) and (wants_voice is None or wants_voice >= self.voice_threshold)
        vp = self._probs(msgs, VOICE_LABELS, answer) if asked else {"无": 1.0}
        if wants_voice is not None and asked:
            vlabel = max((k for k, v in VOICE_LABELS.items() if v is not None), key=vp.__getitem__)
        else:
            vlabel = max(vp, key=vp.__getitem__)
        if VOICE_LABELS[vlabel] is not None and (wants_voice is not None or vp[vlabel] >= self.voice_threshold):
            answer += f"{vlabel}，"
            style = None
            if vlabel == "语气":
                sp = self._probs(msgs, STYLE_LABELS, answer)
                slabel = max(sp, key=sp.__getitem__)
                style = STYLE_LABELS[slabel]
                answer += f"{slabel}，"
            if once is None:
                once = self._probs(msgs, LASTING_LABELS, answer)["这次"]
            voice = _voice(VOICE_LABELS[vlabel], style, once < self.once, text)
        return self._with_slots(Intent(intent, intent != "chat" or voice is not None, voice, p=scores[intent],
                                       scores=scores, how="labels"), msgs, text)

    # -- chat APIs: one schema-constrained answer ----------------------------------------------------------------
    def _by_json(self, msgs: list[Message], text: str) -> Intent:
        # The fields take the label words the examples answer with (唱歌, 慢…): with English names after Chinese
        # examples the 1.5B answered "chat" to "你能给我唱一遍小星星吗" (llama_cpp.server, 2026-12-03)
        schema = {"type": "object", "properties": {
            "intent": {"enum": list(LABELS)}, "voice": {"enum": list(VOICE_LABELS)},
            "style": {"enum": [*STYLE_LABELS, "无"]}, "lasting": {"type": "boolean"},
            "song": {"type": "string", "maxLength": 24}, "topic": {"type": "string", "maxLength": 24},
            "character": {"type": "string", "maxLength": 24}, "query": {"type": "string", "maxLength": 40}},
            "required": ["intent", "voice"]}
        note: Message = {"role": "system", "content": (
            "用JSON回答，照上面的例子：intent 写意图，voice 写声音（用户没要求助手改变自己的声音就写无），style 写语气；"
            "song、topic、character、query 只在用得上时写（歌名、内容、人物、要查的事）。")}
        out = self.llm.complete_json([*msgs, note], schema, max_tokens=80)
        intent = LABELS.get(out.get("intent"), "chat")  # type: ignore[arg-type]
        kind = VOICE_LABELS.get(out.get("voice")) if out.get("voice") in VOICE_LABELS else None  # type: ignore[arg-type]
        style = STYLE_LABELS.get(out.get("style"))  # type: ignore[arg-type]
        voice = _voice(kind, style, bool(out.get("lasting", True)), text) if kind else None
        got = Intent(intent, intent != "chat" or voice is not None, voice,  # type: ignore[arg-type]
                     song=_s(out.get("song")), topic=_s(out.get("topic")), character=_s(out.get("character")),
                     query=_s(out.get("query")), how="json")
        return self._with_slots(got, msgs, text)

    # -- slots, once the intent is known -------------------------------------------------------------------------
    def _with_slots(self, it: Intent, msgs: list[Message], text: str) -> Intent:
        if not can_mean(text, it.intent):
            return it  # settle() will hold this reading back: a generated slot (~1-2 s) would be wasted
        if it.intent in ("sing", "sing_adapt") and not it.song:
            it = replace(it, song=self._title(text) or self._named_song(msgs, text))
        # a topic only where it is used (new words to a melody, a new song): a story is told from the user's own
        # words, and generating its topic put 1-2 s before every story's first word for nothing
        if it.intent in ("sing_adapt", "sing_new") and not it.topic and self.llm.caps.json_schema:
            it = replace(it, topic=self._ask(msgs, "用户想要的新歌词或故事讲的是什么内容？不要写歌名，只写两三个词（没说就写空）。", _TOPIC_SCHEMA, "topic"))
        if it.intent == "role" and not it.character:
            it = replace(it, character=self._character(msgs, text))
        if it.intent == "search" and not it.query:
            it = replace(it, query=text)  # the response writes the query itself (tingshuo.search.decide)
        return it

    def _title(self, text: str) -> str | None:
        """A songbook title the words name; else a 《title》; else None (any song will do)."""
        known = self.title(text) if self.title is not None else None
        if known:
            return known
        m = re.search(r"《([^》]{1,20})》", text)
        return m.group(1) if m else None

    def _named_song(self, msgs: list[Message], text: str) -> str | None:
        """A title the songbook does not have ("唱首恭喜发财吧"), as the model reads it, held to the user's words; None
        when none is named ("唱首歌"). Without it such a request sang any song from the book as if asked for it."""
        if not self.llm.caps.json_schema:
            return None
        got = self._ask(msgs, "用户要唱的那首歌叫什么？照抄用户说的歌名；没说歌名就写空。", {"type": "object", "properties": {
            "title": {"type": "string", "maxLength": 20}}, "required": ["title"]}, "title")
        got = got.strip("《》“”\"' ") if got else None
        # a title is a span of the words, shorter than them, and not the word for a song itself
        if not got or _norm(got) not in _norm(text) or len(got) >= len(text.strip()) or re.fullmatch(r"[一首个支歌曲儿]+", got):
            return None
        return got

    def _character(self, msgs: list[Message], text: str) -> str | None:
        """Who the user asks the assistant to play, as a span of their own words. Asked freely, the 1.5B answered
        "你当我奶奶，跟我说说话" with 武松, the name in this prompt's example: an answer not in the words is asked
        again under a grammar of the words' spans (where the backend takes one; else there is no character). The
        grammar is not the first ask: held to spans from the start, the greedy answer began where the words do
        ("Pretend to be a" for a pirate captain)."""
        question = "用户要助手扮演谁？照抄用户话里的人物名字。"
        got = self._ask(msgs, question, {"type": "object", "properties": {
            "character": {"type": "string", "maxLength": 24}}, "required": ["character"]}, "character")
        if got and _norm(got) in _norm(text):
            return got
        spans = _spans(text)
        if not (self.llm.caps.grammar and spans):
            return None
        grammar = ('root ::= "{\\"character\\": \\"" name "\\"}"\nname ::= '
                   + " | ".join(json.dumps(s, ensure_ascii=False) for s in spans))
        try:
            out = self.llm.complete_with_grammar([*msgs, {"role": "system", "content": question + "用JSON回答。"}],
                                                 grammar, max_tokens=24, temperature=0.0)
            return _s(json.loads(out).get("character"))
        except (LlmError, ValueError) as e:
            log.info("slot character not read: %s", e)
            return None

    def _ask(self, msgs: list[Message], question: str, schema: dict, key: str) -> str | None:
        try:
            out = self.llm.complete_json([*msgs, {"role": "system", "content": question}], schema, max_tokens=24)
        except LlmError as e:
            log.info("slot %s not read: %s", key, e)
            return None
        return _s(out.get(key))


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().lower()


def _spans(text: str, within: int = 80) -> list[str]:
    """The answers a name copied from the words can be: runs of up to 12 Chinese characters or 4 English words
    (a run never crosses punctuation), from the first ``within`` characters."""
    out: dict[str, None] = {}
    for run in re.split(r"[，。！？、,.!?;；:：“”\"'（）()《》\[\]【】]+", text[:within]):
        units = re.findall(r"[A-Za-z][A-Za-z'-]*|[^\sA-Za-z]", run)
        for i in range(len(units)):
            for j in range(i + 1, len(units) + 1):
                piece = units[i:j]
                latin = sum(u[0].isascii() for u in piece)
                if latin > 4 or len(piece) - latin > 12:
                    break
                out[" ".join(piece) if latin == len(piece) else "".join(u if not u[0].isascii() else f" {u} "
                                                                         for u in piece).strip()] = None
    return [k for k in out if k]


def _s(v: object) -> str | None:
    return v.strip() if isinstance(v, str) and v.strip() else None


def _voice(kind: str | None, style: str | None, lasting: bool, text: str) -> VoiceAsk | None:
    if kind is None:
        return None
    if kind in ("slower", "faster"):
        return VoiceAsk(speed=kind, lasting=lasting)  # type: ignore[arg-type]
    if kind in ("louder", "softer"):
        return VoiceAsk(volume=kind, lasting=lasting)  # type: ignore[arg-type]
    if kind == "whisper":
        return VoiceAsk(whisper=True, lasting=lasting)
    if kind == "reset":
        return VoiceAsk(reset=True, whisper=False, lasting=True)
    if kind == "style":
        return VoiceAsk(style=style or "neutral", lasting=lasting)
    m = _DIALECT.search(text)
    name = (m.group(1) + "话" if m.group(1) else m.group(2) or m.group(3)) if m else ""
    return VoiceAsk(dialect="" if name in ("普通话",) else (name or None), lasting=lasting)
