"""The fast tier's guard checked on its own: inner pytest runs (in subprocesses, with a clean environment) of tests
that break the rule in each way it can be broken, and of a slow test that may construct a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from _guard.guard import ENV, LOG

INNER = '''
import subprocess, sys
from pathlib import Path
import pytest

@pytest.fixture(scope="session")
def stack():
    return object()

def test_in_process():
    from tingshuo.config import LlmConfig
    from tingshuo.llm.llamacpp import LlamaCppChat
    LlamaCppChat(LlmConfig(gguf=Path("/nonexistent/model.gguf")))

def test_in_a_subprocess_whose_error_is_swallowed():
    code = "from tingshuo.tts.piper import PiperTTS; PiperTTS()"
    subprocess.run([sys.executable, "-c", code], capture_output=True)  # exit code ignored, as a careless test might

def test_asks_for_the_stack(stack):
    pass

def test_harmless():
    from tingshuo.config import LlmConfig
    assert LlmConfig().backend == "llama-cpp"

@pytest.mark.slow
def test_slow_may_construct():
    from tingshuo.config import LlmConfig
    from tingshuo.llm.llamacpp import LlamaCppChat
    with pytest.raises(Exception) as e:
        LlamaCppChat(LlmConfig(gguf=Path("/nonexistent/model.gguf")))
    assert type(e.value).__name__ != "HeavyModelInFastTest", e.value
'''


@pytest.fixture()
def inner(pytester, monkeypatch):
    # the inner run must not inherit this (fast) test's own guard variables
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv(LOG, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent))  # model_guard and _guard importable
    pytester.makepyfile(test_inner=INNER)
    pytester.makeini("[pytest]\nmarkers =\n    slow: loads models\n")
    return pytester.runpytest_subprocess("-p", "model_guard", "-p", "no:randomly", "-p", "no:cacheprovider", "-rA")


def test_the_guard_fails_fast_tests_that_load_models_and_lets_slow_ones(inner):
    out = inner.stdout.str()
    assert "test_in_process is not marked slow but constructs tingshuo.llm.llamacpp.LlamaCppChat" in out, out
    assert ("test_in_a_subprocess_whose_error_is_swallowed is not marked slow but constructs "
            "tingshuo.tts.piper.PiperTTS") in out, out
    assert "test_asks_for_the_stack is not marked slow but uses the model fixture(s) stack" in out, out
    assert "PASSED test_inner.py::test_harmless" in out and "PASSED test_inner.py::test_slow_may_construct" in out, out
    # the swallowed one passed its own call and is failed by the guard at teardown; the slow one is not touched
    for name in ("test_in_process", "test_in_a_subprocess_whose_error_is_swallowed", "test_asks_for_the_stack"):
        assert f"ERROR test_inner.py::{name}" in out, (name, out)
    outcomes = inner.parseoutcomes()
    assert outcomes.get("errors") == 3 and outcomes.get("failed") == 1, outcomes
