"""Shared fixtures: real clips from registry packages and one real model stack for the whole run.

Clips (installed by scripts/setup.sh; a missing clip is an error, never a silent skip):
- LibriVox English, Debian ``pocketsphinx-testdata`` (transcripts in the package).
- FunASR's Mandarin example, from the ``fasr`` 0.5.8 wheel: 甚至出现交易几乎停滞的情况.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CACHE = Path(os.environ.get("TINGSHUO_CACHE", Path.home() / ".cache" / "tingshuo"))
ZH_CLIP = CACHE / "testdata" / "fasr" / "asr_example.wav"
ZH_REF = "甚至出现交易几乎停滞的情况"


def librivox() -> dict[Path, str]:
    """LibriVox clips → reference transcripts (the package's own ``transcription`` file)."""
    refs: dict[Path, str] = {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        m = re.match(r"<s>\s*(.*?)\s*</s>\s*\((.+)\)", line)
        if m:
            refs[LIBRIVOX / f"{m.group(2)}.wav"] = m.group(1)
    return refs


@pytest.fixture(scope="session")
def en_clips() -> dict[Path, str]:
    clips = librivox()
    assert clips and all(p.is_file() for p in clips), "LibriVox clips missing: run scripts/setup.sh"
    return clips


@pytest.fixture(scope="session")
def zh_clip() -> Path:
    assert ZH_CLIP.is_file(), f"{ZH_CLIP} missing: run scripts/setup.sh"
    return ZH_CLIP


@pytest.fixture(scope="session")
def settings():
    from tingshuo.config import load_settings

    # Greedy decoding: the same prompt gives the same reply, so a round-trip check cannot pass or fail by luck.
    # The load gate is off: a test's server must not refuse it because the previous test kept the models busy
    # (test_load.py turns it on and checks it).
    # Replies are cut at 100 tokens (default 160), at a clause boundary as always: what the tests judge is in a
    # reply's first sentences, and the longest replies (a history, a recipe) cost ~7 s of generation and synthesis
    # more each. Stories keep their own budget (dialogue.story_tokens); the benchmarks run with the defaults.
    return load_settings({"llm.temperature": 0.0, "llm.seed": 0, "server.admit_queue_s": 0, "llm.max_tokens": 100})


@pytest.fixture(scope="session")
def recognizer(settings):
    """The default recognizer alone (tests that only listen do not load the LLM and the guard)."""
    from tingshuo.asr import load_recognizer

    return load_recognizer(settings.asr, settings.cache_dir)


@pytest.fixture(scope="session")
def tts(settings):
    from tingshuo.tts import SpeechSynthesizer

    synth = SpeechSynthesizer(settings.tts, settings.cache_dir)
    synth.preload()
    return synth


@pytest.fixture(scope="session")
def stack(settings, recognizer, tts):
    """ASR + the default 1.5B LLM (and the guard's context) + TTS, loaded once; the ASR and TTS are the ones the
    ``recognizer`` and ``tts`` fixtures hold, so a run loads each model once whichever fixture came first."""
    from tingshuo.audio.smart_turn import SmartTurn
    from tingshuo.engine import ModelStack

    stack = ModelStack.load(settings, asr=False, tts=False)
    stack.asr, stack.turn, stack.tts = recognizer, SmartTurn(), tts
    # one spoken turn first, so that whichever test comes first in the random order does not meet a cold stack
    # (the duplex scenarios, run first on one, answered in 3.4–3.7 s instead of ~1.5 s and missed an interruption)
    one_turn(stack, text="你好。", speak=True)
    stack.health.clear()
    return stack


_SWAPPABLE = ("asr", "llm", "tts", "turn", "guard", "planner", "search")


@pytest.fixture(autouse=True)
def _stack_as_it_was(request):
    """Isolation for the one shared stack: whatever a test swapped (a failing TTS, another search provider) is
    put back and the breakers its faults tripped are reset, so no test sees another's changes, in any order.
    The shared settings must not be changed at all (tests change a deep copy): a test that did fails here.

    Work a test left on the model threads (a reply nobody cancelled, a session never closed) is drained before the
    next test starts: it would hold the next test's turns up by seconds (a duplex scenario then missed its turn,
    in an order only a random seed produced). The drain time is kept in the JUnit XML (``drained_s``); more than
    60 s of leftovers fails the test that left them."""
    if "stack" not in request.fixturenames:
        yield
        return
    stack = request.getfixturevalue("stack")
    models = {k: getattr(stack, k) for k in (*_SWAPPABLE, "settings")}
    settings = stack.settings.model_dump_json()
    before = {name: w.busy_s for name, w in stack.workers.items()}
    yield
    t = time.perf_counter()
    busy = [name for name, w in stack.workers.items() if not w.wait_idle(60.0)]
    drained = time.perf_counter() - t
    if drained > 0.5:
        request.node.user_properties.append(("drained_s", round(drained, 1)))
    # seconds each model thread worked for this test: where the suite's minutes go (JUnit XML, per test)
    for name, w in stack.workers.items():
        if (spent := w.busy_s - before.get(name, 0.0)) > 0.05:
            request.node.user_properties.append((f"busy_{name}_s", round(spent, 1)))
    assert not busy, f"{request.node.nodeid} left work running on the {busy} worker(s) for more than 60 s"
    for k, v in models.items():
        setattr(stack, k, v)
    stack.health.clear()
    assert stack.settings.model_dump_json() == settings, f"{request.node.nodeid} changed the shared settings"


def run(coro):
    return asyncio.run(coro)


def one_turn(stack, *, text: str | None = None, audio=None, persona: str | None = None, prepare=None, speak=False,
             push_to_talk: bool = False, settings=None):
    """One user turn (typed or a whole utterance) through a fresh session; returns (events, session) — the
    session closed, its state (care, conversation) kept. ``prepare(session)`` runs first (e.g. earlier turns).
    ``push_to_talk``: the turn is only added, then answered with ``respond()`` (a Realtime client's
    ``create_response: false``). ``settings``: the session's own (a changed copy of the stack's)."""
    from tingshuo.engine import Session

    async def go():
        s = Session(stack, speak=speak, persona=persona, settings=settings)
        s.auto_respond = not push_to_talk
        if prepare is not None:
            prepare(s)
        events = []

        async def consume():
            async for ev in s.events():
                events.append(ev)

        task = asyncio.create_task(consume())
        if text is not None:
            await s.push_text(text)
        else:
            await s.push_utterance(audio)
        if push_to_talk:
            await s.wait_idle()
            await s.respond()
        await s.wait_idle()
        await s.close()
        await task
        return events, s

    return asyncio.run(go())


def reply_of(events) -> str:
    return next(e for e in events if e.type == "response.done").text


@pytest.fixture(scope="session")
def speaker_encoder():
    """Resemblyzer's speaker encoder (numpy port, tingshuo/audio/speaker.py)."""
    from tingshuo.audio.speaker import SpeakerEncoder

    return SpeakerEncoder()


@pytest.fixture(scope="session")
def voice_references(tts, speaker_encoder):
    """One embedding per built-in Chinese voice, all reading the same sentence: a clip's voice is the nearest."""
    from tingshuo.tts import VOICES, VoiceSettings

    text = "从前有一座山，山里有一座庙，庙里住着一个老和尚，每天给小和尚讲故事。"
    return {k: speaker_encoder.embed(tts.synthesize(text, VoiceSettings(voice=k), "zh"), tts.sample_rate)
            for k in VOICES if k != "joe"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_server_command(port: int) -> list[str]:
    """The compose deployment's ``llm`` service command, on loopback (test_deploy checks they agree)."""
    return [str(Path(sys.executable).with_name("tingshuo")), "llm-server", "--host", "127.0.0.1", "--port", str(port)]


@pytest.fixture(scope="session")
def llama_server(settings):
    """A real ``llama_cpp.server`` over the bundled GGUF on a loopback port (the remote-LLM path); its URL."""
    import httpx

    port = free_port()
    proc = subprocess.Popen(llama_server_command(port),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            assert proc.poll() is None, "llama_cpp.server exited at start"
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)



@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL server (tests/pgcluster.py) for the transcript store's PostgreSQL backend."""
    from pgcluster import PgCluster

    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.destroy()
