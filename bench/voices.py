"""The Chinese voices side by side: which one should the companion speak with?

    .venv/bin/python bench/voices.py [--out bench/results]      (needs Debian's gcin-voice for the tone measure)

For each voice (the native Mandarin voice, ``tts.zh_backend = "baker"``, and Kokoro's jf_alpha with repaired
tones, ``"kokoro"``; both as the companion 小暖 through the router, as a user hears them) it measures:

- **tones**: every syllable of 30 tone sets (the same syllable in all four tones, common characters) said alone
  ("骂。") and inside a carrier sentence ("我说的是骂，你听清了吗", cut at the syllable's span in the model's own
  predicted durations), its F0 measured by WORLD's Harvest from the audio and classified by a classifier learned
  from a person's isolated syllables (bench/tones.py; its own accuracy on held-out gcin syllables is printed
  first). The classifier knows isolated syllables; in a sentence tones are shorter and coarticulated, so the
  in-sentence figure is a comparison between the voices, not an absolute;
- **read back**: the held-out sentences of ``bench/data/voices_zh.txt`` through our ASR (Whisper base), CER on the
  Han characters (0.3 s of silence around each clip, Whisper's full window: see ``heard``). Before comparing, the
  ASR's digits are read as words by the voice's own normalizer (it writes "3点" for 三点) and characters that sound
  the same are taken as one (他/她/它, 在/再, 的/得/地: no voice can tell them apart). Beside the CER, the toned-
  syllable error rate: both texts read into toned syllables by the native voice's reader (sandhi applied), so
  every homophone matches and every wrong tone counts (textmetrics.ser). English words inside
  Chinese are scored apart: heard (in the ASR's text, any case) or not;
- **tone minimal pairs** (``bench/data/voices_pairs.txt``): the ASR's reading holds the intended character and not
  its partner (买/卖, 汤/糖, 山西/陕西…);
- **whisper**: four sentences in the whisper style, voiced share of frames (swift-f0, as tests/test_styles.py)
  and CER;
- **speed**: time to the first clause's audio and the real-time factor over the held-out sentences (one clause
  at a time, as replies are spoken).

Writes ``voices.json`` and ``voices.png`` to the results folder.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import tones  # noqa: E402
from textmetrics import SAME_SOUND, cer, ser  # noqa: E402

from tingshuo.audio.io import resample  # noqa: E402
from tingshuo.config import load_settings  # noqa: E402
from tingshuo.tts import SpeechSynthesizer, VoiceSettings  # noqa: E402
from tingshuo.tts.baker import normalize  # noqa: E402

VOICES = {"baker": "native Mandarin (Baker)", "kokoro": "Kokoro jf_alpha + tone repair"}
WHISPERED = ("悄悄跟我说句晚安。", "别让别人听见，这是我们的小秘密。", "我们明天早上一起去图书馆看书吧。", "你今天过得怎么样？")
CLAUSE = re.compile(r"(?<=[，。！？；])")


def lines(path: Path) -> list[str]:
    return [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip() and not x.startswith("#")]


def tone_sets(n: int = 30) -> list[tuple[str, list[str]]]:
    """(syllable, [char of tone 1, 2, 3, 4]) for the syllables whose four tones all have a common, unambiguous
    character (jieba's word frequencies rank the characters; a character with two readings is not used)."""
    import jieba
    from pypinyin import Style, pinyin

    freq: dict[str, int] = {}
    with open(Path(jieba.__file__).parent / "dict.txt", encoding="utf-8") as f:
        for line in f:
            w, c, *_ = line.split()
            if len(w) == 1 and "\u4e00" <= w <= "\u9fff":
                freq[w] = int(c)
    best: dict[tuple[str, int], tuple[int, str]] = {}
    for ch, c in freq.items():
        readings = pinyin(ch, style=Style.TONE3, heteronym=True)[0]
        if len(readings) != 1 or not readings[0][-1:] in ("1", "2", "3", "4"):
            continue
        key = (readings[0][:-1], int(readings[0][-1]))
        if c > best.get(key, (0, ""))[0]:
            best[key] = (c, ch)
    bases = {b for b, _ in best}
    full = [(b, [best[(b, t)] for t in (1, 2, 3, 4)]) for b in bases if all((b, t) in best for t in (1, 2, 3, 4))]
    full.sort(key=lambda x: -min(c for c, _ in x[1]))
    return [(b, [ch for _, ch in sets]) for b, sets in full[:n]]


# the target is the fifth syllable and ends a phrase: before a pause a tone keeps its citation shape, the shape
# the classifier learned (inside a phrase tones are coarticulated: a 4 before a 4 barely falls, in people too)
CARRIER = "我说的是{}，你听清了吗"
TARGET = 4


def heard(asr, audio: np.ndarray, sr: int) -> str:
    """Our ASR's reading, with 0.3 s of silence around the audio as a recording (and our VAD's segments) have:
    Whisper base often stopped mid-sentence on audio that ends at the last syllable, for both voices alike.
    The listener decodes Whisper's full 30 s window (``asr.short_window = False``): on the shortened window the
    session uses for speed, Whisper base read some clean synthetic sentences twice over (dev clips)."""
    pad = np.zeros(int(0.3 * sr), np.float32)
    return asr.transcribe(resample(np.concatenate([pad, audio, pad]), sr, 16000), "zh").text


def in_context(tts: SpeechSynthesizer, name: str, char: str) -> np.ndarray:
    """F0 (Harvest, from the audio) of ``char`` said inside the carrier sentence, cut at the syllable's span in
    the model's *own* predicted durations (the durations only place the cut; the F0 is measured, not predicted).
    Neutral style, no trimming, so the durations line up with the samples."""
    text = CARRIER.format(char)
    if name == "baker":
        b = tts.backend("baker")
        phones = b.front.phones(text)
        mel, dur = b.mel(phones, durations=True)
        audio = b.vocode(mel)
        syl = [i for i, p in enumerate(phones) if p[-1:].isdigit() and not p.startswith("#")]
        k = syl[TARGET]  # the target's final; its initial (if any) is the phone before it
        start = k - 1 if not phones[k - 1].startswith("#") else k
        bounds = np.concatenate([[0], np.cumsum(dur)]) * 300
        # the break symbol after a syllable carries its tail (the corpus alignment gave "#0"/"#1" frames of the
        # vowel before them: measured voiced, as loud as the final)
        end = k + 2 if phones[k + 1].startswith("#") else k + 1
        a, z = int(bounds[start]), int(bounds[end])
        return tones.f0_contour(audio[a:z], 24000)
    from tingshuo.tts.kokoro import TONE_MIN_RANGE, clamp_edges, style_f0

    k = tts.backend("kokoro")
    phonemes, mask = k.phonemize(text)
    tokens, chars, zh_mask = k._tokens(phonemes, mask)
    feed = k._feed(tokens, k.voice_table(None), 1.0)
    dur, f0 = k._prosody.run(None, feed)
    dur, f0 = clamp_edges(dur, f0, chars)
    f0 = style_f0(k.apply_tones(f0, dur, chars, zh_mask), VoiceSettings(), TONE_MIN_RANGE)
    audio = np.asarray(k._render.run(None, {**feed, "dur": dur, "f0": f0})[0], np.float32).ravel()
    first, last, _ = k.syllables(chars, zh_mask)[TARGET]
    bounds = np.concatenate([[0], np.cumsum(np.round(dur.reshape(-1)))]) * 600  # token 0 is the BOS pad
    return tones.f0_contour(audio[int(bounds[first + 1]):int(bounds[last + 2])], 24000)


def same_sound(text: str) -> str:
    """Characters no voice can tell apart (他/她/它 tā, 在/再 zài, 的/得/地 de) taken as one, digits as words."""
    return normalize(text).translate(SAME_SOUND)


def voiced_share(audio: np.ndarray, sr: int) -> float:
    """Voiced share of the frames, as tests/test_styles.py measures a whisper (swift-f0 with its confidence)."""
    from tingshuo.audio import prosody as P

    return float(P.extract(resample(audio, sr, P.RATE)).voiced_fraction)


def measure(name: str, tts: SpeechSynthesizer, asr, clf: tones.ToneClassifier, sets, sentences, pairs, front,
            ) -> dict:
    sr = tts.sample_rate
    say = VoiceSettings(voice="xiaonuan")
    out: dict = {"voice": VOICES[name]}
    # tones
    contours, truth = [], []
    for _, chars in sets:
        for t, ch in enumerate(chars, 1):
            contours.append(tones.f0_contour(tts.synthesize(ch + "。", say, "zh"), sr))
            truth.append(t)
    keep, x = tones.matrix(contours)
    pred = clf.predict(x)
    y = np.array([truth[i] for i in keep])
    out["tones"] = {"n": len(truth), "measured": len(keep), "accuracy": float(np.sum(pred == y) / len(truth)),
                    "per_tone": {t: float(np.mean(pred[y == t] == t)) for t in (1, 2, 3, 4)}}
    contours = [in_context(tts, name, ch) for _, chars in sets for ch in chars]
    keep, x = tones.matrix(contours)
    pred = clf.predict(x)
    y = np.array([truth[i] for i in keep])
    out["tones_in_context"] = {"n": len(truth), "measured": len(keep),
                               "accuracy": float(np.sum(pred == y) / len(truth)),
                               "per_tone": {t: float(np.mean(pred[y == t] == t)) for t in (1, 2, 3, 4)}}
    # read back, with timing
    cers, english, first, synth_s, audio_s, worst, said, heard_all = [], [0, 0], [], 0.0, 0.0, [], [], []
    for s in sentences:
        pieces = []
        for k, clause in enumerate(c for c in CLAUSE.split(s) if c.strip()):
            t0 = time.perf_counter()
            a = tts.synthesize(clause, say, "zh")
            dt = time.perf_counter() - t0
            if k == 0:
                first.append(dt * 1000)
            synth_s += dt
            audio_s += len(a) / sr
            pieces.append(a)
        hyp = heard(asr, np.concatenate(pieces), sr)
        words = re.findall(r"[A-Za-z]+(?:\s+[A-Za-z]+)*", s)
        for w in words:
            english[1] += 1
            english[0] += int(w.lower().replace(" ", "") in hyp.lower().replace(" ", ""))
        c = cer(same_sound(s), same_sound(hyp))
        cers.append(c)
        said.append(s)
        heard_all.append(hyp)
        if c > 0:
            worst.append((round(c, 3), s, hyp))
    ref_syl = [x for s in said for x in front.syllables(s)]
    hyp_syl = [x for h in heard_all for x in front.syllables(h)]
    out["read_back"] = {"n": len(sentences), "cer": float(np.mean(cers)), "perfect": int(sum(c == 0 for c in cers)),
                        "syllables": len(ref_syl), "syllable_error_rate": ser(ref_syl, hyp_syl),
                        "english_heard": english, "errors": sorted(worst, reverse=True)}
    out["speed"] = {"first_clause_ms_p50": float(np.median(first)), "rtf": synth_s / audio_s}
    # minimal pairs
    right, misses = 0, []
    for s, want, other in pairs:
        hyp = heard(asr, tts.synthesize(s, say, "zh"), sr)
        ok = want in hyp and other not in hyp
        right += ok
        if not ok:
            misses.append((s, hyp))
    out["pairs"] = {"n": len(pairs), "right": right, "misses": misses}
    # whisper
    wc, wv = [], []
    for s in WHISPERED:
        a = tts.synthesize(s, replace(say, style="whisper"), "zh")
        wc.append(cer(same_sound(s), same_sound(heard(asr, a, sr))))
        wv.append(voiced_share(a, sr))
    out["whisper"] = {"n": len(WHISPERED), "cer": float(np.mean(wc)), "voiced": float(np.mean(wv))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if not tones.GCIN.is_dir():
        sys.exit("bench/voices.py needs Debian's gcin-voice (apt-get install gcin-voice; scripts/setup.sh does it "
                 "with TINGSHUO_TEST_DEPS=1) for the tone classifier")
    cache = a.out / "gcin_f0.pkl"  # Harvest over 2,345 recordings takes ~2.5 min: kept between runs
    data = pickle.loads(cache.read_bytes()) if cache.is_file() else tones.gcin_contours()
    cache.write_bytes(pickle.dumps(data))
    cv = tones.cross_validate(data)
    clf = tones.train(data)
    print(f"tone classifier on held-out natural syllables (gcin-voice, 5-fold by syllable): "
          f"{cv['accuracy']:.1%} of {cv['n']}  " + "  ".join(f"T{t} {v:.0%}" for t, v in cv["per_tone"].items()))
    from tingshuo.asr import load_recognizer

    settings = load_settings({})
    asr = load_recognizer(settings.asr.model_copy(update={"short_window": False}), settings.cache_dir)
    sets = tone_sets()
    sentences = lines(ROOT / "bench" / "data" / "voices_zh.txt")
    pairs = [tuple(x.split("|")) for x in lines(ROOT / "bench" / "data" / "voices_pairs.txt")]
    results = {"classifier": cv, "tone_sets": [b for b, _ in sets], "voices": {}}
    from tingshuo.tts.baker import FrontEnd, data_dir

    # one reader of sounds for both voices' syllable error rate
    front = FrontEnd(json.loads((data_dir() / "baker_mapper.json").read_text(encoding="utf-8")))
    for name in VOICES:
        tts = SpeechSynthesizer(settings.tts.model_copy(update={"zh_backend": name}), settings.cache_dir)
        tts.preload(("zh",))
        results["voices"][name] = measure(name, tts, asr, clf, sets, sentences, pairs, front)
        del tts
    rows = [("tone right, syllables said alone (n=120)", lambda r: f"{r['tones']['accuracy']:.1%}"),
            ("tone right, in a carrier sentence (n=120)", lambda r: f"{r['tones_in_context']['accuracy']:.1%}"),
            ("read-back CER (25 held-out sentences)", lambda r: f"{r['read_back']['cer']:.3f}"),
            ("read-back toned-syllable errors", lambda r: f"{r['read_back']['syllable_error_rate']:.3f}"),
            ("sentences read back perfectly", lambda r: f"{r['read_back']['perfect']}/{r['read_back']['n']}"),
            ("English words heard", lambda r: "{}/{}".format(*r["read_back"]["english_heard"])),
            ("tone minimal pairs right", lambda r: f"{r['pairs']['right']}/{r['pairs']['n']}"),
            ("whisper CER / voiced share", lambda r: f"{r['whisper']['cer']:.3f} / {r['whisper']['voiced']:.1%}"),
            ("first clause audio p50", lambda r: f"{r['speed']['first_clause_ms_p50']:.0f} ms"),
            ("real-time factor", lambda r: f"{r['speed']['rtf']:.3f}")]
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  " + "  ".join(f"{n:>10}" for n in VOICES))
    for label, f in rows:
        print(f"{label:{width}}  " + "  ".join(f"{f(results['voices'][n]):>10}" for n in VOICES))
    for n in VOICES:
        for c, s, h in results["voices"][n]["read_back"]["errors"][:5]:
            print(f"  {n}: {s} → {h} ({c})")
    (a.out / "voices.json").write_text(json.dumps(results, ensure_ascii=False, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
        names = list(VOICES)
        for ax, key, title in ((axes[0], lambda r: r["tones"]["accuracy"], "tone right"),
                               (axes[1], lambda r: r["read_back"]["cer"], "read-back CER"),
                               (axes[2], lambda r: r["whisper"]["cer"], "whispered CER")):
            ax.bar(names, [key(results["voices"][n]) for n in names], color=["#d9534f", "#5b8def"])
            ax.set_title(title)
        fig.tight_layout()
        fig.savefig(a.out / "voices.png", dpi=110)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
