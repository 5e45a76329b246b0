"""The no-copy logits processor (tingshuo.llm.ngrams) on token lists: what it blocks and what it leaves."""

from __future__ import annotations

import numpy as np
import pytest

from tingshuo.llm.ngrams import NoCopy


def test_blocks_the_token_that_completes_a_copied_run():
    nc = NoCopy([[1, 2, 3, 4, 5]], n=3, start=0)
    assert nc.blocked([9, 2, 3]) == {4}  # 2 3 → 4 would copy "2 3 4"
    assert nc.blocked([9, 3]) == set()  # "9 3" is no run of the source
    assert nc.blocked([2]) == set()  # too short to complete a run


def test_short_words_stay_free_and_the_prompt_is_not_read():
    # a two-token word ("俺老孙") from the previous reply may be said again with n=3; the prompt (before start)
    # holding the source itself does not block the first generated tokens
    nc = NoCopy([[7, 8, 1, 2, 3]], n=3, start=5)
    ids = np.array([7, 8, 1, 2, 3, 7, 8], dtype=np.intc)  # prompt 7 8 1 2 3, generated 7 8
    scores = np.zeros(10, dtype=np.float32)
    out = nc(ids, scores.copy())
    assert out[1] == -np.inf and np.isfinite(out[[0, 2, 3, 4, 5, 6, 7, 8, 9]]).all()
    assert np.isfinite(nc(ids[:6], scores.copy())).all()  # one generated token: nothing to complete yet


def test_several_sources_and_bad_n():
    nc = NoCopy([[1, 2, 3], [1, 2, 4]], n=3, start=0)
    assert nc.blocked([1, 2]) == {3, 4}
    with pytest.raises(ValueError):
        NoCopy([[1, 2]], n=1, start=0)


def test_a_blocked_copy_in_chinese_is_not_replaced_by_english():
    # ids 0-4 "Chinese", 5-6 "Latin": blocking the copy 1 2 → 3 also masks the Latin tokens for that step only
    latin = (np.array([5, 6], dtype=np.intc), frozenset({5, 6}))
    nc = NoCopy([[1, 2, 3]], n=3, start=0, latin=latin)
    out = nc(np.array([1, 2], dtype=np.intc), np.zeros(8, dtype=np.float32))
    assert np.isinf(out[[3, 5, 6]]).all() and np.isfinite(out[[0, 1, 2, 4, 7]]).all()
    assert np.isfinite(nc(np.array([2, 1], dtype=np.intc), np.zeros(8, dtype=np.float32))).all()
    # a copy in English blocked: English stays free
    nc = NoCopy([[1, 2, 5]], n=3, start=0, latin=latin)
    out = nc(np.array([1, 2], dtype=np.intc), np.zeros(8, dtype=np.float32))
    assert np.isinf(out[5]) and np.isfinite(out[6])
