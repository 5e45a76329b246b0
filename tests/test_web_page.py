"""The call screen's static promises, checked without a browser: every UI string exists in both languages, the
page loads nothing from outside this server, and the colours it pairs meet WCAG's 4.5:1 contrast for text."""

from __future__ import annotations

import re
from importlib import resources

WEB = resources.files("tingshuo.web")


def _read(name: str) -> str:
    return WEB.joinpath(name).read_text(encoding="utf-8")


def _luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    rgb = [int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_every_ui_string_is_in_both_languages():
    js = _read("app.js")
    block = re.search(r"const I18N = \{(.*?)\n\};", js, re.S).group(1)
    zh, en = re.split(r"\n  en: \{", block)
    keys = lambda part: set(re.findall(r"(?:^|[\s,{])(\w+): [\"`]", part))  # noqa: E731
    assert keys(zh) == keys(en), keys(zh) ^ keys(en)
    html = _read("index.html")
    used = set(re.findall(r'data-i18n(?:-placeholder|-label)?="(\w+)"', html))
    for m in re.finditer(r"""(?:\bt|banner|note)\("(\w+)"|actionLabel: "(\w+)"|e\.key = "(\w+)"|"(micDenied|noMic|micError)\"""", js):
        used.add(next(g for g in m.groups() if g))
    assert used and used <= keys(zh), used - keys(zh)


def test_the_page_loads_nothing_from_elsewhere():
    for name in ("index.html", "app.js", "style.css", "capture-worklet.js"):
        text = _read(name)
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text), name
        assert "@import" not in text and "url(http" not in text, name


def test_text_colours_meet_4_5_to_1():
    css = _read("style.css")
    var = dict(re.findall(r"--(\w+): (#[0-9a-fA-F]{3,6})", css))
    pairs = [("fg", "bg"), ("fg", "bg2"), ("fg", "card"), ("fg", "user"), ("muted", "card"), ("muted", "bg"),
             ("muted", "bg2"), ("muted", "user"), ("accent", "card"), ("accent", "bg"), ("accent", "bg2")]
    for fg, bg in pairs:
        assert contrast(var[fg], var[bg]) >= 4.5, (fg, bg, round(contrast(var[fg], var[bg]), 2))
    for bg in ("call", "stop", "fg"):  # white labels on the call, hang-up, muted and send buttons
        assert contrast("#ffffff", var[bg]) >= 4.5, (bg, round(contrast("#ffffff", var[bg]), 2))
    assert contrast("#5a3200", "#fff4e5") >= 4.5 and contrast("#7f1d1d", "#fdecea") >= 4.5  # the banners
    # the persona avatars: white initials on hsl(h 55% 30%) → hsl(h+40 55% 26%), every hue
    import colorsys

    for h in range(0, 360, 5):
        r, g, b = colorsys.hls_to_rgb(h / 360, 0.30, 0.55)
        assert contrast("#ffffff", "#%02x%02x%02x" % (round(r * 255), round(g * 255), round(b * 255))) >= 4.5, h
