"""No copying of long runs: a reply may not repeat ``n`` tokens in a row from texts it should not copy.

The bundled 1.5B copies: in a role it answers each new line with its previous reply, or with its prompt's example
answer, changing a word or two ("太好了！俺老孙一个筋斗十万八千里，你就说：…" for five different lines in a row). The
sampler's repeat penalty does not reach them — llama.cpp's penalties see only the tokens generated in this reply,
not the prompt — and a penalty on every token of the history would also push away the words a reply should reuse
(a role's "俺老孙", the user's own topic). Blocking an ``n``-token run, as transformers' ``no_repeat_ngram_size``
does within one text, keeps the short words and stops the copy after its first ``n-1`` tokens.
Hand-written because llama-cpp-python takes a logits processor but ships none of this kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class NoCopy:
    """A llama-cpp-python logits processor: the token that would complete an ``n``-token run found in any of
    ``sources`` (token lists) is masked. Looks only at the tokens generated after ``start`` (the prompt may hold
    the sources themselves)."""

    def __init__(self, sources: Iterable[Sequence[int]], n: int, start: int,
                 latin: "tuple[np.ndarray, frozenset[int]] | None" = None) -> None:
        """``latin``: the vocabulary's tokens with Latin letters (as an index array and a set). Where a copy in
        another script is blocked they are masked for that step too: the 1.5B, kept from copying "十万八千里" and
        "够买", wrote "十万 eight千里" and "够 buy" — the same word in English is the next likeliest token."""
        if n < 2:
            raise ValueError("n must be at least 2")
        self.n, self.start, self.latin = n, start, latin
        self.banned: dict[tuple[int, ...], set[int]] = {}
        for toks in sources:
            for i in range(len(toks) - n + 1):
                self.banned.setdefault(tuple(toks[i: i + n - 1]), set()).add(int(toks[i + n - 1]))

    def blocked(self, generated: Sequence[int]) -> set[int]:
        """The tokens that may not come next after ``generated``."""
        if len(generated) < self.n - 1:
            return set()
        return self.banned.get(tuple(int(t) for t in generated[len(generated) - self.n + 1:]), set())

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        ban = self.blocked(input_ids[self.start:])
        if ban:
            scores[list(ban)] = -np.inf
            if self.latin is not None and not ban & self.latin[1]:
                scores[self.latin[0]] = -np.inf
        return scores
