"""One safety policy for what users say (spoken or typed) and for what the assistant is about to say.

The guard is the chat model itself, asked as a classifier on a prompt of its own (never the persona's, so a
role cannot talk it out of its rules) and read from its next-token distribution, not from generated text:

a category over 正常 / 自杀 / 暴力 / 色情 / 毒品 / 越狱 / 犯罪 (few-shot, each user turn read with the turns before it
and the role being played; one forward pass, ~0.3 s), and care decided by a probe over that pass's logits.

A self-harm signal means care, not refusal: care mode (``dialogue/care.py``) stays warm, asks, listens and gives
real help lines, and eases only after the user says they are safe (``SafetyGuard.says_safe``) and the turns after
carry no risk. Everything else flagged is refused — by the LLM in the persona's warm voice, told what not to do.
Each clause of a reply is checked before synthesis, so a misread request cannot turn into spoken harm.
``judge.py`` reads replies against the care rules and the red team's requests (benchmarks and tests).
"""

from tingshuo.safety.guard import SafetyGuard, Verdict

__all__ = ["SafetyGuard", "Verdict"]
