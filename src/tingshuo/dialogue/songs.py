"""Songs asked for, and new lyrics for a known melody.

Whether a turn asks for a song is the turn plan's reading (tingshuo.intent); here is what follows from it: the
songbook title the words name (:func:`find_title`, by characters or by sound), a melody not sung yet, and new
words fitted to a melody ("把两只老虎改成关于加班的歌"). A title the songbook lacks ("唱一首青花瓷") gets an honest
answer from the LLM, with the songs it can sing, never an off-key guess.

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


def find_title(text: str, book: Songbook) -> tuple[Song, str] | None:
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
                f"do not make up lyrics or pretend to sing. Say honestly and briefly that you don't know that tune yet, "
                f"then offer to make up new words to a tune you know, or to sing one of yours: "
                f"{', '.join(s.title for s in book)}.")
    names = [s.title for s in book]
    a, b = (names + ["两只老虎", "小星星"])[:2]
    # an example sentence, because the 1.5B follows one: told only what to say, it answered "我不会唱《青花瓷》，
    # 但你可以编一首新词" (who makes the words up turned round, and no song named)
    return (f"用户请你唱《{title}》。这首歌不在你的歌本里，你不会唱它：不要编歌词，也不要假装在唱。"
            f"用“我”诚实、简短地说你还不会唱，提议由你用会的曲子给它编一首新词，或者唱你会的歌（{titles}），问用户想听哪个。"
            f"例如：“《{title}》我还不会唱呢。我可以用《{a}》的调子给你编一首新词，或者给你唱《{b}》，你想听哪个？”")


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
