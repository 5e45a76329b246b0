"""Song requests in what the user said, and new lyrics for a known melody.

"唱首两只老虎", "你会唱生日快乐歌吗", "sing Happy Birthday" → sing a song from the songbook; "把两只老虎改成关于加班的
歌" → new words from the LLM fitted to that melody; "唱一首青花瓷" (not in the songbook) → an honest answer from
the LLM, with the songs it can sing, never an off-key guess. Like voice and role requests this is a closed
command domain (a request to sing + a title the songbook knows or names in 《》), so it is parsed, not guessed.

New lyrics must keep one syllable per note. With the bundled llama.cpp model the generation is constrained by a
GBNF grammar to exactly the syllable count of each phrase (Han characters only, one line per phrase), so the
fit is guaranteed; a backend without grammars (OpenAI-compatible servers) is asked twice and its answer checked,
and a mismatch is an error the engine reports, not a padded song.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tingshuo.llm.base import ChatModel, LlmError, Message
from tingshuo.script import COMMON_HAN_CLASS, han_only, is_han
from tingshuo.tts.singing import Song, Songbook


@dataclass(frozen=True)
class SongRequest:
    song: Song | None  # a song from the songbook (None: the title is unknown)
    title: str | None = None  # what the user called it
    topic: str | None = None  # new lyrics about this, to the song's melody


_ASK = re.compile(
    r"(给我|为我|帮我|跟我|陪我|你|请|来|再|能|可以|会不会|会)[^。？！?]{0,8}(唱|哼)|^\s*(唱|哼)|(来|听)[一个首段]+|"
    r"\b(sing|hum)\b", re.I)
_SELF = re.compile(r"我(也|很|最|还|在|刚|想)?(喜欢|爱|在|会|要|正在)?(唱|哼)(?!给)")
_ADAPT = re.compile(r"(改|换|填|编|重写|调子|曲子|旋律|曲调|关于|有关|rewrite|new words|new lyrics|about)", re.I)
_QUOTED = re.compile(r"《([^》]{1,20})》")
# a request for one song: 唱首/唱一首/唱个/来一段/唱歌给我听/再唱一个/sing me a song/sing X
_ASK_ONE = re.compile(r"(唱|哼|来|听)\s*(一|两|几)?\s*(首|个|段|支|曲)|唱歌(给我|吧|呗|好不好)|再唱|\bsing\b", re.I)
_TITLE = re.compile(r"(?:唱|哼)\s*(?:一|两|几)?\s*(?:首|个|段|支|遍|下)\s*([^\s，。！？,.!?吧吗呀呢啊]{2,12})"
                    r"|sing\s+(?:me\s+)?(?:the\s+|a\s+)?(.+?)(?:\s+(?:for me|please|song))?[.!?]*$", re.I)
_GENERIC = re.compile(r"^(歌|首歌|个歌|一首歌|一首|一个|一段|一下|几句|儿歌|歌儿|曲子|a song|song|something)$", re.I)


def parse_song_request(text: str, book: Songbook) -> SongRequest | None:
    """What the user asks to be sung, if anything. A topic without a known melody ("唱一首关于春天的歌") gets
    ``song=None, topic=…``: the engine then picks a melody from the book for the new words."""
    t = text.strip()
    known = _find_title(t, book)
    rest = t.replace(known[1], " ") if known else t
    topic = _topic(rest)
    if known is not None and topic and _ADAPT.search(t):
        return SongRequest(known[0], known[0].title, topic)
    if not _ASK.search(t) or (_SELF.search(t) and not re.search(r"(给我|为我|你)[^。？！?]{0,8}唱", t)):
        return None
    if known is not None:
        return SongRequest(known[0], known[0].title)
    if topic and re.search(r"关于|有关|about", t, re.I):
        return SongRequest(None, None, topic)
    m = _QUOTED.search(t) or _TITLE.search(t)
    title = next((g for g in (m.groups() if m else ()) if g), None)
    if not _QUOTED.search(t) and not _ASK_ONE.search(t):
        return None  # "你唱歌好听吗": about singing, not a request for a song
    if title:
        title = re.sub(r"^(歌曲|歌)", "", title.strip())
        title = re.sub(r"(给我听|给你听|听听|给我|好吗|好不好|for me|please)$", "", title, flags=re.I).strip()
        if not title or _GENERIC.match(title):
            title = None
    if title and not re.search(r"\w", title):
        title = None
    return SongRequest(None, title)


def _topic(text: str) -> str | None:
    for cue in (r"关于|有关|about", r"讲|写|说|唱", r"改成|改编成|换成|填成|写成|给"):
        m = re.search(rf"(?:{cue})\s*[“\"《]?(.+?)[”\"》]?\s*(?:的|这个|主题)?\s*(?:新)?(?:歌词|歌|版本|词|song|lyrics|$|[。！？!?，,])",
                      text, re.I)
        if m:
            topic = re.sub(r"^(成|为|一首|一个|个|首)+", "", m.group(1).strip(" ，,。的"))
            if topic and not _GENERIC.match(topic):
                return topic
    return None


def _find_title(text: str, book: Songbook) -> tuple[Song, str] | None:
    """The longest songbook title or alias mentioned in ``text`` (and the words that named it).

    Titles are matched by their characters, then by their sound: speech recognition writes homophones
    (两只老虎 → 两支老虎 / 两指老虎, 小星星 → 小新星), so a title also matches where the toneless pinyin of the
    words agrees syllable by syllable, the front/back nasals (in/ing, en/eng) and zh/z, ch/c, sh/s counted alike.
    """
    low = text.lower()
    best: tuple[Song, str] | None = None
    for song in book:
        for name in (song.title, *song.aliases):
            n = name.lower()
            if len(n) >= 2 and n in low and (best is None or len(n) > len(best[1])):
                best = (song, text[low.find(n):low.find(n) + len(n)])
    if best is not None:
        return best
    chars = [(i, c) for i, c in enumerate(text) if is_han(c)]
    sound = _sound("".join(c for _, c in chars))
    for song in book:
        for name in (song.title, *song.aliases):
            han = han_only(name)
            if len(han) < 3 or len(han) != len(name):
                continue  # two syllables match too much by sound; only whole Chinese titles
            want = _sound(han)
            for k in range(len(sound) - len(want) + 1):
                if sound[k:k + len(want)] == want and (best is None or len(han) > len(best[1])):
                    a, b = chars[k][0], chars[k + len(want) - 1][0] + 1
                    best = (song, text[a:b])
    return best


def _sound(han: str) -> list[str]:
    from pypinyin import lazy_pinyin

    out = []
    for py in lazy_pinyin(han):
        py = re.sub(r"^([zcs])h", r"\1", py)
        py = re.sub(r"(in|en|an)g$", r"\1", py)
        out.append(py)
    return out


def pick_song(book: Songbook, sung: Iterable[str]) -> Song:
    """For "唱首歌" with no title: the first song of the book not yet sung in this conversation."""
    done = set(sung)
    songs = list(book)
    return next((s for s in songs if s.key not in done), songs[len(done) % len(songs)])


def unknown_song_note(title: str | None, book: Songbook, lang: str = "zh") -> str:
    titles = "、".join(f"《{s.title}》" for s in book)
    if lang == "en":
        return (f"The user asked you to sing {title or 'a song'}. It is not in your songbook, so you cannot sing it: "
                f"do not make up lyrics or pretend to sing. Say so honestly and briefly, and offer the songs you can "
                f"sing: {', '.join(s.title for s in book)}.")
    return (f"用户请你唱《{title}》。这首歌不在你的歌本里，你不会唱它：不要编歌词，也不要假装在唱。"
            f"诚实、简短地说你还不会唱这首，然后说出你会唱的歌：{titles}，问用户想听哪一首。")


def lyrics_grammar(counts: list[int]) -> str:
    """GBNF for exactly ``counts[i]`` Han characters on line i."""
    rules = ["root ::= " + ' "\\n" '.join(f"l{i}" for i in range(len(counts)))]
    rules += [f"l{i} ::= han{{{n}}}" for i, n in enumerate(counts)]
    rules.append(f"han ::= [{COMMON_HAN_CLASS}]")
    return "\n".join(rules)


_EXAMPLE = ("早上上学", [4, 4, 3, 3, 6, 6, 3, 3],
            "早上起床\n早上起床\n背书包\n背书包\n跟着妈妈出门\n一路唱着歌儿\n去上学\n去上学")


def lyrics_prompt(song: Song, topic: str) -> list[Message]:
    """The original words are not shown: the 1.5B model copies them back. It gets the topic, the syllable
    count of each line and one worked example (it follows examples far better than rules)."""
    counts = song.syllable_counts
    ex_topic, ex_counts, ex_text = _EXAMPLE
    ask = "写一首关于“{}”的儿歌歌词，共{}句，每句的字数依次是：{}。每句一行，不要标点，要押韵、有趣、句句都写{}。"
    return [
        {"role": "system", "content": "你是一位会写儿歌的作词人。"},
        {"role": "user", "content": ask.format(ex_topic, len(ex_counts), "、".join(map(str, ex_counts)), ex_topic)},
        {"role": "assistant", "content": ex_text},
        {"role": "user", "content": ask.format(topic, len(counts), "、".join(map(str, counts)), topic)},
    ]


def write_lyrics(llm: ChatModel, song: Song, topic: str, temperature: float = 0.7) -> list[str]:
    """New words for ``song``'s melody about ``topic``: one line per phrase, the phrase's syllable count each."""
    counts = song.syllable_counts
    msgs = lyrics_prompt(song, topic)
    budget = sum(counts) * 3 + 4 * len(counts) + 8
    if llm.caps.grammar:
        text = llm.complete_with_grammar(msgs, lyrics_grammar(counts), max_tokens=budget, temperature=temperature)
        lines = _lines(text)
        if [len(x) for x in lines] == counts:
            return lines
        raise LlmError(f"the constrained lyrics came back as {[len(x) for x in lines]} syllables, not {counts}")
    last: list[int] = []
    for _ in range(2):
        text = "".join(llm.stream(msgs, max_tokens=budget + 40, temperature=temperature))
        lines = _lines(text)
        if [len(x) for x in lines] == counts:
            return lines
        last = [len(x) for x in lines]
    raise LlmError(f"the model's lyrics did not fit the melody ({last} syllables per line, needed {counts})")


def _lines(text: str) -> list[str]:
    out = []
    for line in text.strip().splitlines():
        line = re.sub(r"^\s*(第?\s*\d+\s*[句行]?\s*[:：.、)]?)", "", line)
        han = han_only(line)
        if han:
            out.append(han)
    return out
