"""Singing in tune: a songbook of scores, and a singer that maps spoken syllables onto the notes.

Why not let the TTS "sing": a speech model has no notion of a note; asked to sing, the seed product drifted
off key. Here the melody is data (``data/songbook.toml``: notes, durations, one lyric syllable per note) and
each syllable is placed on its note (shared/research/tts.md, "Singing", the WORLD route measured at ≈ 1 cent):

1. every lyric syllable is read in context by Kokoro's G2P (跑得快's 得 is "de") and rendered alone by
   Kokoro in the chosen voice at a level pitch near its note (Kokoro's F0 input), so the timbre is the voice's;
2. WORLD (pyworld) splits it into F0, spectral envelope and aperiodicity: the unvoiced onset (the consonant) is
   kept at its natural length and placed *before* the beat, as singers do, so the vowel starts on the beat;
   the vowel's middle is stretched to the note's length (its first 60 ms and last 80 ms keep their natural
   speed, so "liang" does not glide slowly through every sound); F0 is set to the note, with a gentle vibrato
   (±20 cents, 5.5 Hz, fading in after 0.2 s) on notes of 0.4 s or more; a melisma ("~") carries the vowel on
   to the next note with a step in pitch;
3. the song is transposed by whole semitones so its middle sits where the voice speaks.

Sung audio streams one phrase at a time (rendering a phrase takes ~0.1–0.3 × its length on one core), so the
engine plays and interrupts it like a spoken reply. Tests: tests/test_singing.py measures the output with
swift-f0 against the transposed score (per note: ≥ 90 % of voiced frames within 50 cents; onsets within 60 ms).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np

from tingshuo.script import han_only, is_han

FRAME_MS = 5.0
ARTIC_GAP_S = 0.03  # a breath of silence between syllables: repeated notes are heard (and measured) as two
MAX_CONSONANT_S = 0.15
VIBRATO_CENTS = 20.0
VIBRATO_HZ = 5.5
SYLLABLE_SPEED = 0.85  # Kokoro reads each syllable a little slowly: longer vowels stretch more naturally

_NOTE = re.compile(r"^([#b]?)([0-7])(['’,，]*)(_*)(\.?)(-*)$")
_MAJOR = [0, 2, 4, 5, 7, 9, 11]
_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def midi_of(name: str) -> int:
    """"C4" → 60, "F#3" → 54, "Bb4" → 70."""
    m = re.fullmatch(r"([A-G])([#b]?)(-?\d)", name.strip())
    if not m:
        raise ValueError(f"bad pitch name {name!r}")
    return 12 * (int(m.group(3)) + 1) + _NAMES[m.group(1)] + {"#": 1, "b": -1, "": 0}[m.group(2)]


def hz_of(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


@dataclass(frozen=True)
class Note:
    degree_midi: int | None  # semitones above the tonic (None: rest)
    beats: float
    syllable: str | None  # the lyric on this note; "~" continues the previous one; None on a rest


def parse_notes(notes: str, lyrics: str) -> tuple[Note, ...]:
    toks = notes.split()
    syl = [c for c in lyrics if c == "~" or is_han(c)]
    sounding = [t for t in toks if not t.startswith("0")]
    if len(syl) != len(sounding):
        raise ValueError(f"{len(sounding)} notes but {len(syl)} syllables in {lyrics!r} / {notes!r}")
    if syl and syl[0] == "~":
        raise ValueError(f"a phrase cannot start with a melisma: {lyrics!r}")
    out = []
    it = iter(syl)
    for t in toks:
        m = _NOTE.match(t)
        if not m:
            raise ValueError(f"bad note {t!r} in {notes!r}")
        acc, deg, octs, halves, dot, holds = m.groups()
        beats = 0.5 ** len(halves)
        if dot:
            beats *= 1.5
        beats += len(holds)
        if deg == "0":
            out.append(Note(None, beats, None))
            continue
        semis = _MAJOR[int(deg) - 1] + {"#": 1, "b": -1, "": 0}[acc]
        semis += 12 * (octs.count("'") + octs.count("’") - octs.count(",") - octs.count("，"))
        out.append(Note(semis, beats, next(it)))
    return tuple(out)


@dataclass(frozen=True)
class Phrase:
    notes: tuple[Note, ...]

    @property
    def syllables(self) -> list[str]:
        """The sung syllables (melisma continuations and rests left out): what new lyrics must supply."""
        return [n.syllable for n in self.notes if n.syllable and n.syllable != "~"]

    @property
    def text(self) -> str:
        return "".join(self.syllables)

    @property
    def beats(self) -> float:
        return sum(n.beats for n in self.notes)


@dataclass(frozen=True)
class Song:
    key: str
    title: str
    aliases: tuple[str, ...]
    origin: str
    tonic: int  # MIDI of "1" as written
    bpm: float
    beats_per_bar: int
    phrases: tuple[Phrase, ...]
    adapted_from: str | None = None  # set on new lyrics to a known melody

    @property
    def syllable_counts(self) -> list[int]:
        return [len(p.syllables) for p in self.phrases]

    @property
    def lyrics(self) -> str:
        return "，".join(p.text for p in self.phrases) + "。"

    @property
    def seconds(self) -> float:
        return sum(p.beats for p in self.phrases) * 60.0 / self.bpm

    def with_lyrics(self, lines: list[str]) -> "Song":
        """The same melody with new words, one Han syllable per sung syllable of each phrase (melismas kept)."""
        lines = [han_only(x) for x in lines]
        if [len(x) for x in lines] != self.syllable_counts:
            raise ValueError(f"new lyrics have {[len(x) for x in lines]} syllables per phrase; the melody needs "
                             f"{self.syllable_counts}")
        phrases = []
        for p, line in zip(self.phrases, lines):
            it = iter(line)
            phrases.append(Phrase(tuple(replace(n, syllable=next(it)) if n.syllable and n.syllable != "~" else n
                                        for n in p.notes)))
        return replace(self, phrases=tuple(phrases), adapted_from=self.title)


def _norm(title: str) -> str:
    t = re.sub(r"[\s《》<>“”\"'‘’「」，。,.!！?？、:：·\-]+", "", title.lower())
    return re.sub(r"(这首歌|这首|的歌|歌曲|儿歌|歌)$", "", t) or t


@dataclass
class Songbook:
    songs: dict[str, Song] = field(default_factory=dict)

    @classmethod
    def load(cls, extra: Path | None = None) -> "Songbook":
        """The bundled songbook, plus a user's own TOML file in the same format (their songs win on key)."""
        book = cls()
        text = resources.files("tingshuo.tts").joinpath("data/songbook.toml").read_text(encoding="utf-8")
        book.add_toml(text)
        if extra is not None:
            book.add_toml(Path(extra).expanduser().read_text(encoding="utf-8"))
        return book

    def add_toml(self, text: str) -> None:
        for s in tomllib.loads(text).get("song", []):
            song = Song(
                key=s["key"], title=s["title"], aliases=tuple(s.get("aliases", [])), origin=s.get("origin", ""),
                tonic=midi_of(s.get("tonic", "C4")), bpm=float(s.get("bpm", 100)), beats_per_bar=int(s.get("beats", 4)),
                phrases=tuple(Phrase(parse_notes(p["notes"], p["lyrics"])) for p in s["phrases"]),
            )
            self.songs[song.key] = song

    def __iter__(self) -> Iterator[Song]:
        return iter(self.songs.values())

    def find(self, title: str) -> Song | None:
        """A song by its title or an alias, as a person says it ("小星星", "《两只老虎》这首歌", "happy birthday")."""
        q = _norm(title)
        if not q:
            return None
        for song in self:
            names = [_norm(n) for n in (song.key, song.title, *song.aliases)]
            if q in names:
                return song
        # "生日快乐歌" / "两只老虎跑得快": a name inside the query, or the query inside a (long) name
        best = None
        for song in self:
            for n in (_norm(x) for x in (song.title, *song.aliases)):
                if len(n) >= 2 and (n in q or (len(q) >= 3 and q in n)):
                    if best is None or len(n) > best[0]:
                        best = (len(n), song)
        return best[1] if best else None


# ---------------------------------------------------------------------------------------------------- singing
@dataclass(frozen=True)
class SungNote:
    onset_s: float  # where the vowel starts, from the start of this chunk of audio
    duration_s: float
    hz: float
    syllable: str
    tied: bool = False  # a melisma: the previous note's syllable goes on, only the pitch moves


@dataclass
class SungPhrase:
    text: str  # the words of the phrase (what a transcript shows)
    audio: np.ndarray  # float32 mono at ``sample_rate``
    sample_rate: int
    notes: list[SungNote]


@dataclass
class _Unit:
    """One syllable and the notes it is sung on (several for a melisma)."""

    syllable: str
    phonemes: str
    onset: float  # song time (s) of its first note
    end: float  # song time of the end of its last note
    notes: list[tuple[float, float, float]]  # (onset, end, hz)
    audio: np.ndarray | None = None
    consonant_s: float = 0.0
    world: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (f0, envelope, aperiodicity)
    limit: float = MAX_CONSONANT_S  # the longest consonant the note before leaves room for
    vowel: tuple[int, int] = (0, 0)  # first and last WORLD frame of the vowel (the part held on the note)
    loudness: np.ndarray | None = None  # frame RMS relative to the syllable's peak


class Singer:
    """Sings a :class:`Song` one phrase at a time: in a Kokoro voice, or in the native Mandarin voice (tts/baker.py)
    for the character voice that speaks with it — the companion sings in the voice it speaks in.

    A backend that sings provides ``sample_rate``, ``natural_f0(voice)``, ``syllable_phonemes(text)`` and
    ``render_syllable(phonemes, voice, speed, f0_hz)``; WORLD then places each syllable on its notes."""

    def __init__(self, kokoro, sample_rate: int = 24000, native=None) -> None:
        self.kokoro = kokoro
        self.native = native  # the Baker backend when tts.zh_backend is "baker", else None
        self.rate = int(kokoro.sample_rate)
        self.out_rate = sample_rate
        assert native is None or int(native.sample_rate) == self.rate

    def resolve_voice(self, voice: str | None, pitch: float = 1.0) -> tuple[str | None, float]:
        """A character voice key (tingshuo.tts.voices) → its Kokoro spec and pitch; a Kokoro spec stays as it is."""
        from tingshuo.tts.voices import VOICES

        cv = VOICES.get(voice or "")
        return (cv.kokoro, pitch * cv.pitch) if cv else (voice, pitch)

    def backend(self, voice: str | None):
        """Who sings in this voice (a character voice key or a Kokoro spec, before ``resolve_voice``)."""
        from tingshuo.tts.voices import VOICES

        cv = VOICES.get(voice or "")
        return self.native if self.native is not None and cv is not None and cv.native else self.kokoro

    def transposition(self, song: Song, voice: str | None, pitch: float = 1.0, backend=None) -> int:
        """Semitones to move the song so its middle note sits a little below the voice's speaking median."""
        notes = [n.degree_midi for p in song.phrases for n in p.notes if n.degree_midi is not None]
        mid = song.tonic + (min(notes) + max(notes)) / 2
        target = 12 * np.log2(0.95 * pitch * (backend or self.kokoro).natural_f0(voice) / 440.0) + 69
        return int(round(target - mid))

    def layout(self, song: Song, voice: str | None, tempo: float = 1.0, pitch: float = 1.0, backend=None,
               ) -> list[list[_Unit]]:
        """Song time of every syllable and note, per phrase (the score, transposed and at the sung tempo)."""
        shift = self.transposition(song, voice, pitch, backend)
        beat = 60.0 / (song.bpm * tempo)
        t = 0.0
        phrases: list[list[_Unit]] = []
        for p in song.phrases:
            units: list[_Unit] = []
            for n in p.notes:
                d = n.beats * beat
                if n.degree_midi is None:
                    t += d
                    continue
                hz = hz_of(song.tonic + n.degree_midi + shift)
                if n.syllable == "~" and units:
                    units[-1].notes.append((t, t + d, hz))
                    units[-1].end = t + d
                else:
                    units.append(_Unit(n.syllable or "", "", t, t + d, [(t, t + d, hz)]))
                t += d
            phrases.append(units)
        return phrases

    def phrases(self, song: Song, voice: str | None = None, tempo: float = 1.0, pitch: float = 1.0,
                ) -> Iterator[SungPhrase]:
        """Blocking generator: each phrase as audio, cut where the next phrase's first consonant begins."""
        backend = self.backend(voice)
        voice, pitch = self.resolve_voice(voice, pitch)
        plan = self.layout(song, voice, tempo, pitch, backend)
        for units in plan:  # read every phrase in context first (G2P only: ~ms per phrase)
            for u, ph in zip(units, backend.syllable_phonemes("".join(u.syllable for u in units))):
                u.phonemes = ph
        flat = [u for units in plan for u in units]
        for a, b in zip(flat, flat[1:]):
            b.limit = 0.35 * (b.onset - a.onset)  # a consonant may take at most a third of the note before it
        song_end = flat[-1].end if flat else 0.0
        start = 0.0
        for k, units in enumerate(plan):
            if not units:
                continue
            nxt = next((ps[0] for ps in plan[k + 1:] if ps), None)
            for u in units + ([nxt] if nxt else []):
                self._render(u, voice, pitch, backend)
            first = units[0]
            start = first.onset - first.consonant_s
            stop = (nxt.onset - nxt.consonant_s) if nxt else song_end + 0.35
            buf = np.zeros(int(round((stop - start) * self.rate)) + 1, np.float32)
            notes: list[SungNote] = []
            for i, u in enumerate(units):
                following = units[i + 1] if i + 1 < len(units) else nxt
                end = u.end - 0.02
                if following is not None:
                    end = min(end, following.onset - following.consonant_s - ARTIC_GAP_S)
                seg = self._place(u, end)
                at = int(round((u.onset - u.consonant_s - start) * self.rate))
                seg = seg[: max(0, len(buf) - at)]
                buf[at:at + len(seg)] += seg
                notes.extend(SungNote(a - start, b - a, hz, u.syllable, j > 0) for j, (a, b, hz) in enumerate(u.notes))
            audio = _level(buf)
            if self.out_rate != self.rate:
                from tingshuo.audio.io import resample

                audio = resample(audio, self.rate, self.out_rate)
            yield SungPhrase("".join(u.syllable for u in units), audio, self.out_rate, notes)
            for u in units:
                u.audio = u.world = None  # free what is sung

    def sing(self, song: Song, voice: str | None = None, tempo: float = 1.0, pitch: float = 1.0,
             ) -> tuple[np.ndarray, list[SungNote]]:
        """The whole song as one array, and every note's place in it."""
        parts, notes, t = [], [], 0.0
        for p in self.phrases(song, voice, tempo, pitch):
            notes.extend(replace(n, onset_s=n.onset_s + t) for n in p.notes)
            parts.append(p.audio)
            t += len(p.audio) / p.sample_rate
        return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), notes

    # -- one syllable -------------------------------------------------------------------------------------------
    def _render(self, u: _Unit, voice: str | None, pitch: float, backend=None) -> None:
        """The voice reads the syllable; WORLD finds where its voicing starts (the consonant before it)."""
        if u.audio is not None:
            return
        import pyworld as pw

        audio = (backend or self.kokoro).render_syllable(u.phonemes, voice, SYLLABLE_SPEED, u.notes[0][2])
        if len(audio) < self.rate // 20:
            audio = np.concatenate([audio, np.zeros(self.rate // 20 - len(audio), np.float32)])
        x = np.ascontiguousarray(audio, np.float64)
        f0, t = pw.dio(x, self.rate, frame_period=FRAME_MS, f0_floor=60.0, f0_ceil=900.0)
        f0 = pw.stonemask(x, f0, t, self.rate)
        u.audio = audio
        u.world = (f0, pw.cheaptrick(x, f0, t, self.rate), pw.d4c(x, f0, t, self.rate))
        hop = int(self.rate * FRAME_MS / 1000)
        rms = np.array([np.sqrt(np.mean(audio[i * hop:(i + 1) * hop] ** 2)) if i * hop < len(audio) else 0.0
                        for i in range(len(f0))])
        peak = float(rms.max()) or 1.0
        # The vowel starts where the syllable is voiced *and* loud: DIO also calls a /t/'s aspiration or an
        # /m/ voiced, and those belong before the beat with the rest of the consonant.
        loud = np.flatnonzero((f0 > 0) & (rms >= 0.35 * peak))
        quiet_end = np.flatnonzero((f0 > 0) & (rms >= 0.1 * peak))
        if len(loud):
            u.vowel = (int(loud[0]), int(quiet_end[-1]))
        else:
            u.vowel = (0, len(f0) - 1)
        u.loudness = rms / peak
        u.consonant_s = min(u.vowel[0] * FRAME_MS / 1000, MAX_CONSONANT_S, u.limit)

    def _place(self, u: _Unit, end: float) -> np.ndarray:
        """The syllable as sung: consonant (natural length), then the vowel held from ``u.onset`` to ``end``."""
        import pyworld as pw

        assert u.world is not None
        f0, sp, ap = u.world
        fp = FRAME_MS / 1000
        v0, v1 = u.vowel
        c_frames = int(round(u.consonant_s / fp))
        cons = slice(max(0, v0 - c_frames), v0)
        n = v1 - v0 + 1
        m = max(2, int(round((end - u.onset) / fp)))
        head, tail = min(12, n // 4), min(16, n // 4)
        mid = m - head - tail
        if mid >= 1 and n - head - tail >= 1:
            src = np.concatenate([
                np.arange(head),
                head + np.linspace(0, n - head - tail - 1, mid),
                np.arange(n - tail, n),
            ])
        else:
            src = np.linspace(0, n - 1, m)
        idx = v0 + np.round(src).astype(int)
        sp_v, ap_v = sp[idx], ap[idx].copy()
        # a sung vowel is voiced throughout: below 3 kHz the excitation is kept mostly periodic (D4C finds a
        # fricative's noise in the first frames after /ʂ/, and a gap inside the vowel would break the note)
        low = int(3000 / (self.rate / 2) * (ap_v.shape[1] - 1))
        ap_v[:, :low] = np.minimum(ap_v[:, :low], 0.3)
        times = u.onset + np.arange(m) * fp
        target = np.zeros(m)
        for a, b, hz in u.notes:
            sel = (times >= a - 1e-9) & (times < b)
            target[sel] = hz
            length = b - a
            if length >= 0.4:
                local = times[sel] - a
                depth = VIBRATO_CENTS * np.clip((local - 0.2) / 0.15, 0, 1)
                target[sel] *= 2 ** (depth * np.sin(2 * np.pi * VIBRATO_HZ * local) / 1200)
        target[target == 0] = u.notes[-1][2]
        # The consonant: a voiced one (/m/, /l/, /n/) sounds at the note's pitch, but only its last 20 ms before
        # the beat (any earlier and the previous note, if short, ends on the next one's pitch); the rest is noise, and unvoiced frames must be pure noise (ap = 1): WORLD drives them
        # with a 500 Hz pulse train mixed in by (1 − ap), which a consonant's residual periodicity turns into a
        # pitch glide before the note.
        c_f0 = np.zeros(cons.stop - cons.start)
        c_ap = np.ones_like(ap[cons])
        assert u.loudness is not None
        voiced_c = (f0[cons] > 0) & (u.loudness[cons] >= 0.25)
        voiced_c[:] = False
        c_f0[voiced_c] = u.notes[0][2]
        c_ap[voiced_c] = ap[cons][voiced_c]
        f0_out = np.concatenate([c_f0, target])
        sp_out = np.concatenate([sp[cons], sp_v])
        ap_out = np.concatenate([c_ap, ap_v])
        y = pw.synthesize(np.ascontiguousarray(f0_out), np.ascontiguousarray(sp_out), np.ascontiguousarray(ap_out),
                          self.rate, frame_period=FRAME_MS).astype(np.float32)
        # even loudness across syllables (Kokoro reads some louder than others), then short fades
        k = (cons.stop - cons.start) * int(self.rate * fp)
        rms = float(np.sqrt(np.mean(y[k:] ** 2))) if len(y) > k + 10 else 0.0
        if rms > 1e-5:
            y *= 0.1 / rms
        fade_in, fade_out = int(0.008 * self.rate), int(0.02 * self.rate)
        if len(y) > fade_in + fade_out:
            y[:fade_in] *= np.linspace(0, 1, fade_in, dtype=np.float32)
            y[-fade_out:] *= np.linspace(1, 0, fade_out, dtype=np.float32)
        return y


# ---------------------------------------------------------------------------------------------- measuring
ONSET_WINDOW_S = 0.12  # where to look for an onset around the scheduled one
EDGE_S = 0.025  # swift-f0 hears ±32 ms around a frame: one centred this close to the next note hears both


def measure_sung(audio: np.ndarray, sr: int, notes: list[SungNote]) -> list[tuple[str, float, float | None]]:
    """(syllable, share of voiced frames within 50 cents, onset error in s or None) for every note, measured on
    the audio with swift-f0 (tests/test_singing.py states the rule; bench/perform.py reports it per song)."""
    from tingshuo.audio.io import resample
    from tingshuo.audio.prosody import pitch_track

    tr = pitch_track(resample(audio, sr, 16000), 16000)
    hz, voiced, times = np.asarray(tr.pitch_hz), np.asarray(tr.confidence) >= 0.5, np.asarray(tr.timestamps)
    out = []
    prev: SungNote | None = None
    for n in notes:
        inside = (times >= n.onset_s) & (times < n.onset_s + n.duration_s - EDGE_S) & voiced
        cents = 1200 * np.log2(np.maximum(hz, 1e-3) / n.hz)
        share = float(np.mean(np.abs(cents[inside]) <= 50)) if inside.any() else 0.0
        win = np.flatnonzero((times >= n.onset_s - ONSET_WINDOW_S) & (times <= n.onset_s + ONSET_WINDOW_S))
        onset = None
        new_syllable = not n.tied
        if len(win):
            v = voiced[win]
            starts = [win[i] for i in range(1, len(win)) if v[i] and not v[i - 1]]
            if new_syllable and starts:
                onset = float(times[min(starts, key=lambda i: abs(times[i] - n.onset_s))])
            else:
                arrive = [i for i in win if voiced[i] and abs(cents[i]) <= 50]
                if arrive and (prev is None or abs(1200 * np.log2(n.hz / prev.hz)) >= 50):
                    onset = float(times[arrive[0]])
                elif arrive:  # same pitch, no gap found: the note is there, its start cannot be told apart
                    onset = n.onset_s if inside.any() else None
        out.append((n.syllable, share, None if onset is None else onset - n.onset_s))
        prev = n
    return out


def _level(audio: np.ndarray) -> np.ndarray:
    from tingshuo.tts import level

    return level(audio)
