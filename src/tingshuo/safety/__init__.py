"""One safety policy for what users say (spoken or typed) and for what the assistant is about to say.

The guard is the chat model itself, asked as a classifier on a prompt of its own (never the persona's, so a
role cannot talk it out of its rules) and read from its next-token distribution, not from generated text:

1. a category over 正常 / 自杀 / 暴力 / 色情 / 毒品 / 越狱 / 犯罪 (few-shot; one forward pass, ~0.25 s);
2. a confirming yes/no question when step 1 is not clearly 正常 — the 1.5B's categories alone called
   "这个bug快把我逼疯了" and "kill a python process" violence, and "我失恋了，好难过" suicide; a focused question
   about *the speaker's own intent* separates those (see tests/test_safety.py for the sets and the rates).

A self-harm signal means care, not refusal: care mode (``care.py``) stays warm, asks, listens and gives real
help lines. Everything else flagged is refused — by the LLM in the persona's warm voice, told what not to do.
Each clause of a reply is checked before synthesis with a third question (does this sentence give harmful
instructions?), so a misread request cannot turn into spoken harm.
"""

from tingshuo.safety.guard import SafetyGuard, Verdict

__all__ = ["SafetyGuard", "Verdict"]
