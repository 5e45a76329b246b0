"""From LLM tokens to speakable clauses.

The LLM writes text; a voice must not read markdown, list bullets or emoji aloud, and TTS should start as soon as
the first short clause exists (then synthesize clause n+1 while clause n plays). ``ClauseSplitter`` cuts the
token stream at sentence ends, and at commas once a clause is long enough; the first clause is allowed to be
short so the first audio comes early.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import SequenceMatcher

from tingshuo.script import HAN, has_words

_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f900-\U0001f9ff\U00002b00-\U00002bff\ufe0f\u200d]+"
)
_MD_LINE = re.compile(r"^\s*(?:#{1,6}\s+|>\s*|[-*+•]\s+|\d{1,2}[.)、]\s*)", re.M)
_MD_INLINE = re.compile(r"(\*\*|__|\*|`+|~~)")
_URL = re.compile(r"https?://\S+")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")

STRONG = set("。！？!?；;…\n")
WEAK = set("，,、：:")
# a full stop after a word of two or more letters (not a digit, not an initial)
_SENTENCE_END = re.compile(r"(?:^|[^A-Za-z.])[A-Za-z]{2,}[\"'”’)]?\.$")
_ABBREV = re.compile(r"(?:^|\s)(?:Mr|Mrs|Ms|Dr|St|Prof|vs|etc|e\.g|i\.e)$", re.I)


_TAG = re.compile(r"[\[【]([^\[\]【】\n]{1,12})[\]】]")
_TAG_OPEN_MAX = 14  # an unclosed "[" longer than this is text, not a tag
# stage directions, not speakers: "[笑]", "[停顿]", "[音乐]", "[laughs]"
_ASIDE = re.compile(r"^(笑|大笑|微笑|叹气|停顿|沉默|音乐|掌声|哭|哭泣|咳嗽|清嗓子|laughs?|sighs?|pause|music|applause)$", re.I)


class StyleTags:
    """Parses the LLM's style tags (``[开心]``, ``【温柔】``, ``[happy]``) out of the token stream.

    ``feed`` returns the text to show and speak (tags removed, a tag split over deltas held back until closed)
    and the style of each tag in order: a known style name, or None for a bracketed aside that names no style
    (it is dropped too: a voice must never read "[笑]" aloud). Markdown links ``[text](url)`` are left alone.
    """

    def __init__(self, speakers: bool = False) -> None:
        self._buf = ""
        self._prev = ""  # the last character let through ("a[0]" is an index, not a tag)
        # story mode: a tag that names no style names who speaks ("[旁白]", "[孙悟空]"), returned as "@name";
        # "[孙悟空·生气]" gives the speaker and then the style
        self.speakers = speakers

    def feed(self, delta: str) -> list[tuple[str, str | None]]:
        out = self._feed(delta)
        for t, _ in out:
            if t:
                self._prev = t[-1]
        return out

    def _feed(self, delta: str) -> list[tuple[str, str | None]]:
        """[(text, None), ("", style), …] pieces in order; a style piece has empty text."""
        from tingshuo.tts.style import resolve_style

        self._buf += delta
        out: list[tuple[str, str | None]] = []
        while self._buf:
            i = min((k for k in (self._buf.find("["), self._buf.find("【")) if k >= 0), default=-1)
            if i < 0:
                out.append((self._buf, None))
                self._buf = ""
                break
            if i > 0:
                out.append((self._buf[:i], None))
                self._buf = self._buf[i:]
            prev = out[-1][0][-1:] if out and out[-1][0] else self._prev
            m = _TAG.match(self._buf)
            if m is not None and (re.match(r"[A-Za-z0-9_]", prev) or re.search(r"[\d=<>/\\{}()]", m.group(1))):
                m = None  # code or an index ("a[0]", "[x=1]"): text, not a tag
                out.append((self._buf[0], None))
                self._buf = self._buf[1:]
                continue
            if m is None:
                if len(self._buf) < _TAG_OPEN_MAX and "]" not in self._buf and "】" not in self._buf and "\n" not in self._buf:
                    break  # maybe a tag still arriving
                out.append((self._buf[0], None))
                self._buf = self._buf[1:]
                continue
            after = self._buf[m.end():]
            if after.startswith("(") or (not after and self._buf.startswith("[")):
                if not after:
                    break  # could be a markdown link: wait for the next character
                out.append((m.group(0), None))  # [text](url): the splitter's cleaner keeps the text
                self._buf = after
                continue
            style = resolve_style(m.group(1))
            if style is not None:
                out.append(("", style))  # an aside that names no style is simply dropped
            elif self.speakers:
                who, *rest = re.split(r"\s*[·・,，|｜/、:：]\s*", m.group(1).strip(), maxsplit=1)
                if who and not _ASIDE.match(who):
                    out.append(("", "@" + who))
                    st = resolve_style(rest[0]) if rest else None
                    if st is not None:
                        out.append(("", st))
            self._buf = after
        return out

    def flush(self) -> str:
        rest, self._buf = self._buf, ""
        return rest


_LABEL = re.compile(r"^[（(]\s*[^\s（）()：:，,。]{1,6}\s*[：:]\s*[）)]$")
_SCRIPT_NAME = re.compile(r"^[ \t]*([^\s\[\]【】：:，,。.！!？?“”\"'（）()]{1,8})[ \t]*[：:]")


class NoteEchoes:
    """Takes out of a streamed reply a parenthetical that recites a note the model was given after the user's words
    (a role's per-turn reminder, the policy's note) or the user's own recent words (the engine passes both). The 1.5B opened replies with them: "（猪八戒用猪八戒的口吻回答：）
    你一个月挣多少钱？", "(Stay in character as Joe: speak simple, clear English; …)"; kept in the history, the
    next replies copied them even after the role ended. Other parentheticals pass unchanged (held only until they
    close, or ``limit`` characters). Why not drop every parenthetical: "（刘慈欣写的）" is content.

    ``own``: the names the assistant goes by now. A parenthetical that is a script line of its own — "（林黛玉说：“结婚？
    没时间。”）" — is said as its words alone: as 林黛玉 the 1.5B wrote 4 of 5 replies so (2026-12-07, the role test's
    lines), which the voice read out with the name and the verb, and the history taught the next reply the form."""

    def __init__(self, notes: Iterable[str | None], limit: int = 80, own: Iterable[str] = ()) -> None:
        self.notes = [n for n in notes if n]
        names = sorted({n for n in own if n}, key=len, reverse=True)
        self.names = frozenset(names)
        # "（林黛玉说：“…”）", "（林黛玉回答：…）", "（林黛玉“…”）": the name, up to 6 characters of verb, a colon or a quote
        self.own = (re.compile(r"^[（(]\s*(?:" + "|".join(map(re.escape, names)) + r")[^：:“”\"「」（）()]{0,6}"
                               r"(?:[：:]\s*[“\"「]?|[“\"「])(?P<words>.+?)[”\"」]?\s*[）)]$", re.S) if names else None)
        # held up to the longest note's length and more: 孙悟空's reminder (~110 characters) came back whole, and a
        # shorter limit let it through
        self.limit = max([limit, *(len(n) + 40 for n in self.notes)])
        self.held: str | None = None
        self.dropped: list[str] = []

    def feed(self, text: str) -> str:
        if not self.notes and self.own is None:
            return text
        out: list[str] = []
        for ch in text:
            if self.held is None:
                if ch in "（(":
                    self.held = ch
                else:
                    out.append(ch)
                continue
            self.held += ch
            if ch in "）)":
                out.append(self._judge(self.held))
                self.held = None
            elif len(self.held) > self.limit:
                out.append(self.held)
                self.held = None
        return "".join(out)

    def flush(self) -> str:
        held, self.held = self.held, None
        return self._judge(held) if held else ""

    def _judge(self, aside: str) -> str:
        if any(copies(aside, n, han=6, words=5) for n in self.notes):
            self.dropped.append(aside)
            return ""
        if self.own is not None:
            m = self.own.match(aside)
            if m and m.group("words").strip():
                return m.group("words").strip()
            # "（你：）", "（林黛玉：）", "（林黛玉）": a script's speaker label with no words
            if _LABEL.match(aside) or aside[1:-1].strip() in self.names:
                return ""
        return aside


def copies(clause: str, note: str, han: int = 8, words: int = 6) -> bool:
    """Whether ``clause`` repeats a run of ``note``: ``han`` Chinese characters in a row, or ``words`` English words
    (short shared phrases such as "不能提供" are ordinary language; a run this long is a recital)."""
    a, b = re.sub(r"\s+", "", clause), re.sub(r"\s+", "", note)
    m = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    if len(re.findall(r"[\u4e00-\u9fff]", a[m.a:m.a + m.size])) >= han:
        return True
    wa, wb = re.findall(r"[a-z']+", clause.lower()), re.findall(r"[a-z']+", note.lower())
    m = SequenceMatcher(None, wa, wb, autojunk=False).find_longest_match(0, len(wa), 0, len(wb))
    return m.size >= words



class ScriptLines:
    """Story lines written as a script ("旁白：从前…" / "小猫：我饿了"): the name at a line's start is a speaker.

    Text passes through unchanged except for the "NAME：" prefixes, returned as ("", "@NAME"); the start of each
    line is held back until it is clear whether it is such a prefix (a colon within 8 characters).
    """

    def __init__(self) -> None:
        self._head = ""  # the start of the current line, undecided
        self._at_start = True

    def feed(self, text: str) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for ch in text:
            if self._at_start:
                self._head += ch
                m = _SCRIPT_NAME.match(self._head)
                if m:
                    out.append(("", "@" + m.group(1)))
                    self._head, self._at_start = "", False
                elif len(self._head.strip()) > 9 or (self._head.strip() and not _SCRIPT_NAME.match(self._head + "：")):
                    out.append((self._head, None))
                    self._head, self._at_start = "", ch == "\n"
                elif ch == "\n":
                    out.append((self._head, None))
                    self._head = ""
                continue
            out.append((ch, None))
            if ch == "\n":
                self._at_start = True
        return _merge(out)

    def flush(self) -> str:
        rest, self._head = self._head, ""
        return rest


class SpokenQuotes:
    """Story mode: a character's line written as "[狐狸]说：“我们走吧。”" is the fox saying 我们走吧。 — the lead-in
    ("说：", "问道：") and the quotation marks are neither said nor shown. The 1.5B wrote lines so in 3–5 of 12 dev
    stories although the note asks for the words alone. Text after a character's tag is held (up to 7 characters)
    until it is clear whether such a lead-in starts it; narration keeps its quotes."""

    _LEAD = re.compile(r"^\s*(?:[笑着大声小高兴生气难过害怕地回答]{0,4}(?:说道|说|问道|问|喊道|喊|叫道|叫|回答道|回答|道))?"
                       r"\s*[：:，,]?\s*[“\"「]")
    _COULD = re.compile(r"^[\s笑着大声小高兴生气难过害怕地说道问喊叫回答：:，,]*$")
    NARRATORS = ("旁白", "Narrator", "narrator", "叙述")

    def __init__(self, notes: Iterable[str] = ()) -> None:
        """``notes``: the instructions the story was written under; a speaker's tag made of their words names no
        character (the 1.5B tagged narration "[叙述写]", from the note's "叙述写[旁白]"): it is the narrator."""
        self.notes = tuple(n for n in notes if n)
        self.held: str | None = None  # text after a character's tag, undecided
        self.quoted = False  # inside a quote whose opening mark was taken out: its closing mark goes too
        self.narrator: str | None = None  # the narrator's tag while narration runs
        self.sentence = ""  # the narration's current sentence, up to here (who is its subject)
        self.lent: str | None = None  # a quote in narration given to this character: the narrator's tag after it
        self.fresh = False  # right after a speaker's tag

    def feed(self, pieces: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for text, tag in pieces:
            if tag is not None:
                out.extend(self._release())
                self.quoted, self.lent, self.sentence = False, None, ""
                name = tag[1:] if tag.startswith("@") else ""
                if len(name) >= 2 and name not in self.NARRATORS and any(name in n for n in self.notes):
                    tag = "@" + ("Narrator" if name.isascii() else "旁白")
                out.append((text, tag))
                self.narrator = tag if tag.startswith("@") and tag[1:] in self.NARRATORS else None
                if tag.startswith("@") and tag[1:] not in self.NARRATORS:
                    self.held = ""
                self.fresh = tag.startswith("@")
                continue
            for ch in text:
                if self.fresh:
                    # "[旁白]：小猫说…", "[小猫]：我饿了": a script's colon after the speaker's tag is not said or shown
                    # (it stood at the start of a story's lines in the transcript: "散步。：小猫说：…")
                    if ch in "：: ":
                        continue
                    self.fresh = False
                if self.held is not None:
                    self.held += ch
                    if self._LEAD.match(self.held):
                        self.held, self.quoted = None, True
                    elif len(self.held) >= 7 or not self._COULD.match(self.held):
                        out.extend(self._release())
                    continue
                if self.quoted and ch in "”\"」":
                    self.quoted = False
                    continue
                if self.narrator is not None:
                    if self.lent is not None:
                        if ch in "”\"」":  # the character's words end: the narrator again
                            self.lent = None
                            out.append(("", self.narrator))
                        else:
                            out.append((ch, None))
                        continue
                    if ch in "“\"「" and self.sentence.rstrip().endswith(("：", ":")):
                        who = _speaker(self.sentence)
                        if who:
                            self.lent, self.sentence = who, ""
                            out.append(("", "@" + who))
                            continue
                    self.sentence = "" if ch in "。！？!?" else self.sentence + ch
                out.append((ch, None))
        return _merge(out)

    def _release(self) -> list[tuple[str, str | None]]:
        held, self.held = self.held, None
        return [(held, None)] if held else []

    def flush(self) -> str:
        return "".join(t for t, _ in self._release())


def _speaker(sentence: str) -> str | None:
    """Who speaks the quote a narrated sentence leads into ("兔子生气地说：", "乌龟看着小兔子，然后对小兔子说："):
    the subject — a noun before any verb of its clause, not after a preposition (对/向/跟… mark the listener) — of
    the clause before the colon, or else of the nearest clause before it in the sentence that has one ("看到那朵
    花" has an object, not a subject). None when no clause has one (then the quote stays narration). The 1.5B
    writes a story's dialogue so, inside [旁白] lines, for most requests to the storyteller (dev: 5 of 5 stories had
    no tagged character), and the story was one voice. jieba's part-of-speech tags: the TTS front end loads it."""
    import jieba.posseg as psg

    for clause in reversed(re.split(r"[，,；;]", sentence.rstrip().rstrip("：:"))):
        after_prep = False
        for w in psg.cut(clause):
            if w.flag.startswith("v"):
                break
            if w.flag.startswith("p"):
                after_prep = True
                continue
            if w.flag.startswith("n") and not after_prep and len(w.word) <= 6:
                return w.word
            after_prep = False
    return None


def _merge(pieces: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for t, tag in pieces:
        if tag is None and out and out[-1][1] is None:
            out[-1] = (out[-1][0] + t, None)
        else:
            out.append((t, tag))
    return [p for p in out if p[0] or p[1]]


def strip_tags(text: str) -> str:
    """Text without style tags (what a transcript or a text reply shows)."""
    st = StyleTags()
    out = "".join(t for t, _ in st.feed(text)) + st.flush()
    return out


def clean_for_speech(text: str) -> str:
    """Remove what a listener should not hear: markdown syntax, bullets, emoji, raw URLs."""
    text = _LINK.sub(r"\1", text)
    text = _URL.sub("", text)
    text = _MD_LINE.sub("", text)
    text = _MD_INLINE.sub("", text)
    text = _EMOJI.sub("", text)
    text = re.sub(r"[ \t]+", " ", text)
    return text


def speakable(text: str) -> bool:
    return has_words(text)


def _weight(text: str) -> int:
    """Length in 'syllables': one per Han character, one per ~4 Latin letters."""
    han = len(HAN.findall(text))
    latin = len(re.findall(r"[A-Za-z0-9]", text))
    return han + latin // 4


class ClauseSplitter:
    def __init__(self, first_min: int = 2, min_weight: int = 8, max_weight: int = 40) -> None:
        self.first_min = first_min
        self.min_weight = min_weight
        self.max_weight = max_weight
        self._buf = ""
        self._emitted = 0

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            clause, self._buf = self._buf[:cut], self._buf[cut:]
            clause = clean_for_speech(clause).strip()
            if speakable(clause):
                out.append(clause)
                self._emitted += 1
        return out

    def flush(self) -> list[str]:
        clause = clean_for_speech(self._buf).strip()
        self._buf = ""
        if speakable(clause):
            self._emitted += 1
            return [clause]
        return []

    def _find_cut(self) -> int | None:
        buf = self._buf
        need = self.first_min if self._emitted == 0 else self.min_weight
        for i, c in enumerate(buf):
            end = i + 1
            if c == "." :
                # an English full stop only when followed by whitespace (not 3.5, not a URL)
                if end >= len(buf):
                    # ...except at the end of the reply's first sentence, which the user is waiting for: the
                    # token after it costs ~0.1-0.25 s on 2 cores. Not after a digit ("3." of 3.5), an initial
                    # ("J.", "U.S.") or an abbreviation; a domain ("example.com") would be cut, so only the first clause.
                    if self._emitted == 0 and _SENTENCE_END.search(buf) and not _ABBREV.search(buf[:i]):
                        return end
                    return None
                if not buf[end].isspace() or _ABBREV.search(buf[:i]):
                    continue
            elif c not in STRONG and c not in WEAK:
                if c == " " and _weight(buf[:i]) >= self.max_weight:
                    return end  # a run-on English sentence: cut at a space
                continue
            while end < len(buf) and (buf[end] in STRONG or buf[end] in WEAK or buf[end] in "\"'”’）)"):
                end += 1  # keep "！？" and closing quotes with their clause
            if c in STRONG or c == "." or _weight(buf[:end]) >= need:
                return end
        if _weight(buf) >= self.max_weight * 2:
            return len(buf)
        return None


def styled_clauses(text: str, style: str | None = None) -> list[tuple[str, str | None]]:
    """A whole text with inline style tags ("[生气]你又迟到了！[开心]算了。") as clauses, each with the style it is
    said in (``style`` until the first tag). The reply's text stage does the same on a token stream; this is its
    one-shot form for fixed texts (``tingshuo say``)."""
    splitter, tags = ClauseSplitter(), StyleTags()
    current = style
    out: list[tuple[str, str | None]] = []
    for piece, tag in [*tags.feed(text), (tags.flush(), None)]:
        if tag is not None:
            out += [(c, current) for c in splitter.flush()]
            current = tag
        else:
            out += [(c, current) for c in splitter.feed(piece)]
    return out + [(c, current) for c in splitter.flush()]
