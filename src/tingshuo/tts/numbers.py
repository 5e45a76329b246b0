"""Numbers in Chinese text as a speaker reads them, for every Chinese voice (the native one and Kokoro)."""

from __future__ import annotations

import re

_DIGITS = "零一二三四五六七八九"


def _spell_digits(s: str) -> str:
    return "".join(_DIGITS[int(c)] for c in s)


def normalize(text: str) -> str:
    """Numbers in words as a speaker reads them. cn2an does most; what it reads wrong aloud is done first:
    clock times (10:30 → 十点三十分, not 十:三十), long digit strings (phone numbers, codes, read digit by digit,
    not 一百三十八亿…) and years (2024年 → 二零二四年, which cn2an does, kept here for years without 年)."""
    import cn2an

    def clock(m: re.Match[str]) -> str:
        h, mm = int(m.group(1)), int(m.group(2))
        return f"{cn2an.an2cn(str(h))}点" + ("整" if mm == 0 else ("零" if mm < 10 else "") + f"{cn2an.an2cn(str(mm))}分")

    text = re.sub(r"(?<![\d.])([01]?\d|2[0-3])[:：]([0-5]\d)(?![\d.])", clock, text)
    # phone numbers in groups (010-82951332, 400-161-9995): digit by digit with a pause between groups (cn2an
    # read the hyphen as 负 and 010 as 十), and any number with a leading zero
    text = re.sub(r"(?<![\d.])\d{3,}(?:[-‐–]\d{3,})+(?![\d.])",
                  lambda m: "、".join(_spell_digits(g) for g in re.split(r"[-‐–]", m.group(0))), text)
    text = re.sub(r"(?<![\d.])0\d+(?![\d.])", lambda m: _spell_digits(m.group(0)), text)
    text = re.sub(r"(?<![\d.])(\d{5,})(?![\d.]*%)", lambda m: _spell_digits(m.group(1)), text)
    text = re.sub(r"(\d)\s*[:：]\s*(\d)", r"\1比\2", text)  # 3:2 left after clock times: a score or a ratio
    try:
        return cn2an.transform(text, "an2cn")
    except Exception:  # cn2an raises on odd mixes ("1.2.3"): read what is left digit by digit
        return re.sub(r"\d", lambda m: _DIGITS[int(m.group(0))], text)

