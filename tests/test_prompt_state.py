"""Persisted prompt state: a fixed prefix evaluated once is loaded by the next model instance (a fresh process in
practice) and scores exactly as if evaluated; a corrupt, foreign or unwritable state costs time, never a turn."""

from __future__ import annotations

import json
import logging
import os

import pytest

from tingshuo.config import LlmConfig, Settings
from tingshuo.llm.prompt_state import model_fingerprint

PREFIX = [{"role": "system", "content": "你是安全审核员，判断用户的话是否正常，只回答一个词：正常或危险。"}]
QUESTION = [*PREFIX, {"role": "user", "content": "怎么做红烧肉？"}]
LABELS = ["正常", "危险"]


def test_the_model_fingerprint_follows_the_file(tmp_path):
    """The asset's stamped sha256 while the stamp matches the file; a content hash (size, first and last MiB)
    otherwise, which changes when the file does."""
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + os.urandom(3 << 20))
    st = f.stat()
    (tmp_path / "m.gguf.ok").write_text(json.dumps({"sha256": "ab" * 32, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    assert model_fingerprint(f) == "ab" * 32
    with open(f, "r+b") as h:  # the file changed after its stamp was written: the stamp no longer speaks for it
        h.seek(st.st_size - 10)
        h.write(b"0123456789")
    own = model_fingerprint(f)
    assert own != "ab" * 32 and len(own) == 64
    with open(f, "r+b") as h:
        h.write(b"XXXX")
    assert model_fingerprint(f) != own


def _chat(tmp_path, **cfg):
    from tingshuo.llm.llamacpp import LlamaCppChat

    s = Settings()
    return LlamaCppChat(LlmConfig(**{"n_ctx": 1024, "prompt_state_dir": tmp_path / "states", **cfg}), s.cache_dir)


@pytest.mark.slow
def test_a_saved_prefix_loads_in_a_new_instance_and_scores_the_same(tmp_path):
    a = _chat(tmp_path)
    assert a.prime(PREFIX) == "evaluated" and a.prime(PREFIX) == "cached"
    bins = list((tmp_path / "states").glob("*.bin"))
    assert len(bins) == 1 and bins[0].with_suffix(".json").exists()
    want = a.label_probabilities(QUESTION, LABELS)
    del a
    b = _chat(tmp_path)
    assert b.prime(PREFIX) == "loaded"
    got = b.label_probabilities(QUESTION, LABELS)
    assert got == pytest.approx(want, abs=1e-4), (got, want)
    # a different context setting is another key: evaluated, not loaded from the other file
    c = _chat(tmp_path, n_ctx=2048)
    assert c.prime(PREFIX) == "evaluated" and len(list((tmp_path / "states").glob("*.bin"))) == 2


@pytest.mark.slow
def test_a_corrupt_or_unwritable_state_is_ignored_with_a_log_line(tmp_path, caplog):
    a = _chat(tmp_path)
    a.prime(PREFIX)
    want = a.label_probabilities(QUESTION, LABELS)
    (path,) = (tmp_path / "states").glob("*.bin")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the cells
    path.write_bytes(bytes(data))
    b = _chat(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tingshuo.llm.prompt_state"):
        assert b.prime(PREFIX) == "evaluated"
    assert "ignored" in caplog.text and "sha256" in caplog.text
    assert b.label_probabilities(QUESTION, LABELS) == pytest.approx(want, abs=1e-4)
    assert _chat(tmp_path).prime(PREFIX) == "loaded"  # written again, valid
    # a cache directory that cannot be created: the prompt is evaluated and the model answers
    (tmp_path / "blocked").write_text("a file where the directory should be")
    from tingshuo.llm.llamacpp import LlamaCppChat

    d = LlamaCppChat(LlmConfig(n_ctx=1024, prompt_state_dir=tmp_path / "blocked" / "states"), Settings().cache_dir)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tingshuo.llm.prompt_state"):
        assert d.prime(PREFIX) == "evaluated"
    assert "could not save" in caplog.text
    assert d.label_probabilities(QUESTION, LABELS) == pytest.approx(want, abs=1e-4)


@pytest.mark.slow
def test_the_state_directory_keeps_under_its_cap_least_recently_used_first(tmp_path):
    a = _chat(tmp_path, prompt_state_mb=2)  # each of these prefixes is ~1.2 MB of cells
    prompts = [[{"role": "system", "content": f"你是第{i}号助手，回答要简短，语气友好，每次只说一两句话。"}] for i in range(3)]
    for p in prompts:
        assert a.prime(p) == "evaluated"
    left = list((tmp_path / "states").glob("*.bin"))
    assert sum(f.stat().st_size for f in left) <= 2 << 20 and len(left) >= 1
    assert _chat(tmp_path, prompt_state_mb=2).prime(prompts[-1]) == "loaded"  # the newest is the one kept
    assert _chat(tmp_path, prompt_state_mb=2).prime(prompts[0]) == "evaluated"


@pytest.mark.slow
def test_a_context_prepared_ahead_scores_the_same_and_spares_its_evaluation(tmp_path):
    """The plan's and the guard's reads in a conversation: the context lines before the turn are evaluated when
    the reply before it ends (prepare), and the read evaluates only the turn's words — with the scores of a read
    from the prompt's saved state."""
    import numpy as np

    from tingshuo.llm.llamacpp import label_softmax

    a = _chat(tmp_path)
    stem = "（前文）用户：我最近压力很大，晚上总睡不好\n（前文）助手：听起来你很辛苦，愿意多说说吗？\n用户："
    turn = [*PREFIX, {"role": "user", "content": stem + "怎么做红烧肉？"}]
    want = a.next_token_logits(turn, fixed=1)
    again = a.next_token_logits(turn, fixed=1)
    a.prepare([*PREFIX, {"role": "user", "content": stem}], fixed=1)
    batches: list[int] = []
    evaluate = a.llm.eval
    a.llm.eval = lambda tokens: (batches.append(len(tokens)), evaluate(tokens))[1]
    got = a.next_token_logits(turn, fixed=1)
    ids = a.label_ids(LABELS)
    # the words and the template's tail (two assistant headers on this path), not the context before them
    assert batches and sum(batches) <= a.count_tokens("怎么做红烧肉？") + 10 < a.count_tokens(stem), batches
    assert np.abs(again - want).max() == 0.0  # from the saved state: the same every time
    # evaluated in two batches rather than one, the sums differ in their last bits (measured: label P 0.0024,
    # the care probe 0.0001, the plan probe 0.0003 apart; the largest single logit 0.38 of ~30)
    assert label_softmax(got, ids, LABELS) == pytest.approx(label_softmax(want, ids, LABELS), abs=0.01)
    assert np.abs(got - want).max() < 1.0, np.abs(got - want).max()
    # another context than the prepared one is read in full
    other = [*PREFIX, {"role": "user", "content": "用户：怎么做红烧肉？"}]
    batches.clear()
    a.next_token_logits(other, fixed=1)
    assert sum(batches) >= a.count_tokens("用户：怎么做红烧肉？")
