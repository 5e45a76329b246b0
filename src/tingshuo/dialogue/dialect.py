"""A dialect's flavour when the user asks for 东北话, 四川话…: the reply's note, and the style it is said in.

Flavour, not a dialect TTS: the bundled voices speak Mandarin (Kokoro's tables are Japanese voices; the Baker
voice is one Beijing speaker), so a reply "in 东北话" is Mandarin text the model is asked to write with that
dialect's wording, spoken in a fitting style (东北话, 四川话, 天津话 lively).

What the note can carry was measured on the bundled 1.5B (greedy, three turns after "用东北话跟我唠两句嗑",
2026-12-07): with the dialect's name only, plain Mandarin ("好啊，咱们聊聊天吧。"); with typical words and an
example sentence or exchange, that example, word for word, as the answer to every later turn ("最近工作挺累的" →
"哎呀妈呀，今儿贼冷，你可多穿点儿，别冻着了！") even when told not to copy it; with the words alone, the words listed
as the reply ("咋整？啥意思？整啥？…"). A canned sentence is worse than plain Mandarin, so the note names the
dialect only; a bigger model behind ``llm.base_url`` writes the flavour from it.
"""

from __future__ import annotations

# the speaking style (tingshuo.tts.style) a dialect's replies are said in when neither a feeling nor the user chose
# one; dialects not listed keep the voice's own
_STYLES = {"东北": "happy", "四川": "happy", "天津": "happy", "河南": "happy", "陕西": "happy", "山东": "happy"}


def style(dialect: str | None) -> str | None:
    return _STYLES.get(dialect.strip()[:2]) if dialect else None


def note(dialect: str, lang: str = "zh") -> str:
    if lang != "zh":
        return f"Use {dialect} wording."
    return f"用{dialect}的说法和常用词回答，口气像{dialect}地方的人聊天一样。"
