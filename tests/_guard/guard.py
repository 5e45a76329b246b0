"""The fast tier's promise, enforced: a test without ``@pytest.mark.slow`` loads no ASR, LLM or TTS model.

The mechanism, shared by the pytest plugin (``tests/model_guard.py``, the test process) and ``sitecustomize.py``
beside this file (every Python subprocess a fast test starts: the CLI tests run ``tingshuo`` as a process). It
imports no pytest, so a guarded subprocess starts as fast as an unguarded one.

How: while a fast test runs, ``TINGSHUO_FORBID_MODELS`` names it. The heavy backends' constructors are wrapped
the moment their modules are imported (an import hook, so nothing heavy is imported just to guard it); a wrapped
constructor called while the variable is set records the violation in the file ``TINGSHUO_FORBID_MODELS_LOG``
and raises :class:`HeavyModelInFastTest`. The plugin fails the test from that file, so a violation that the code
under test catches (the CLI turns load errors into exit codes) still fails it. A fast test that asks for a fixture
holding those models (``stack``, ``tts``, …) fails before the fixture is built: a session fixture built earlier
by a slow test would otherwise be handed over without any constructor running.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

ENV, LOG = "TINGSHUO_FORBID_MODELS", "TINGSHUO_FORBID_MODELS_LOG"
GUARD_DIR = Path(__file__).resolve().parent  # holds sitecustomize.py, put on children's PYTHONPATH

# module → the classes whose construction loads a heavy model
HEAVY: dict[str, tuple[str, ...]] = {
    "tingshuo.asr.whisper": ("WhisperRecognizer",),
    "tingshuo.asr.sherpa": ("SherpaRecognizer",),
    "tingshuo.llm.llamacpp": ("LlamaCppChat",),
    "tingshuo.tts.kokoro": ("KokoroTTS",),
    "tingshuo.tts.piper": ("PiperTTS",),
}
# fixtures (conftest and test modules) that hold or build those models
HEAVY_FIXTURES = frozenset({"stack", "recognizer", "tts", "voice_references", "llama_server", "singer", "server",
                            "suite", "fuzzed", "rendered", "judged_speech"})


class HeavyModelInFastTest(RuntimeError):
    pass


def _wrap(module) -> None:
    for name in HEAVY.get(module.__name__, ()):
        cls = getattr(module, name)
        if getattr(cls, "_tingshuo_guarded", False):
            continue
        original = cls.__init__

        def __init__(self, *args, __original=original, __name=f"{module.__name__}.{name}", **kwargs):
            test = os.environ.get(ENV)
            if test:
                message = f"{test} is not marked slow but constructs {__name}"
                log = os.environ.get(LOG)
                if log:
                    with open(log, "a", encoding="utf-8") as f:
                        f.write(message + "\n")
                raise HeavyModelInFastTest(message)
            __original(self, *args, **kwargs)

        cls.__init__ = __init__
        cls._tingshuo_guarded = True


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the heavy classes right after their module has executed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in HEAVY:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            _wrap(module)

        loader.exec_module = exec_and_wrap
        return spec


def install() -> None:
    """Guard the heavy constructors in this process, whether their modules are imported yet or not."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for name in HEAVY:
        if name in sys.modules:
            _wrap(sys.modules[name])


