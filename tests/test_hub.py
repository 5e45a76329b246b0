"""`tingshuo models pull`: a bigger chat model from the Hugging Face hub, here from a mirror on loopback laid out like
the hub (tests/hubmirror.py, ``HF_ENDPOINT``): downloaded with a progress bar, verified against the hub's sha256,
resumed after the connection is cut halfway, refused when the hash is wrong, not even asked for offline; then the
server's engine answers with the pulled model. Nothing contacts a public address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hubmirror import HubMirror
from realtime_client import realtime, say

REPO = "tingshuo-mirror/Tiny-GGUF"
FILE = "tiny-q4_k_m.gguf"
SPEC = f"hf:{REPO}/{FILE}"


def tiny_gguf(path: Path, mb: int) -> Path:
    """A GGUF header (version 3, no tensors, no metadata) and random bytes: enough for the download path."""
    rng = np.random.default_rng(3)
    header = b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") * 2
    path.write_bytes(header + rng.integers(0, 256, mb << 20, dtype=np.uint8).tobytes())
    return path


def tingshuo(tmp_path: Path, mirror: HubMirror | None, *args: str, offline: bool = False,
             timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TINGSHUO_CACHE_DIR": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1" if offline else "0",
           # nothing but the mirror: a request to the public hub would fail here instead of leaving the machine
           "HF_ENDPOINT": mirror.url if mirror else "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    env.pop("TINGSHUO_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "tingshuo.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_pull_downloads_verifies_and_resumes_after_a_cut(tmp_path):
    # huggingface_hub reads 10 MB chunks: the cut (at half) must come after one, or nothing is kept to resume from
    src = tiny_gguf(tmp_path / FILE, mb=24)
    with HubMirror({REPO: {FILE: src}}, cut=True) as hub:
        r = tingshuo(tmp_path, hub, "models", "pull", SPEC)
        first = list(hub.requests)
        again = tingshuo(tmp_path, hub, "models", "pull", SPEC)
        listed = tingshuo(tmp_path, hub, "models")
    assert r.returncode == 0, r.stderr
    got = tmp_path / "cache" / "models" / "tingshuo-mirror--Tiny-GGUF" / FILE
    assert got.read_bytes() == src.read_bytes()
    assert json.loads(got.with_name(FILE + ".ok").read_text())["sha256"] == hub.sha(src)
    gets = [(m, rng) for m, p, rng in first if m == "GET"]
    # the first GET was cut halfway; huggingface_hub asked for the rest with a Range request
    assert len(gets) >= 2 and gets[0][1] is None and gets[-1][1] and gets[-1][1].startswith("bytes="), first
    assert int(gets[-1][1][6:].split("-")[0]) > 0
    assert "verifying" in r.stderr and "%" in r.stderr, r.stderr[-500:]  # progress bars
    assert again.returncode == 0 and len(hub.requests) == len(first), "a pulled model was fetched again"
    assert SPEC in listed.stdout and "ready" in listed.stdout.split(SPEC)[1][:40], listed.stdout[-800:]


def test_a_file_whose_hash_is_not_the_hubs_is_refused(tmp_path):
    src = tiny_gguf(tmp_path / FILE, mb=1)
    with HubMirror({REPO: {FILE: src}}, lie=True) as hub:
        r = tingshuo(tmp_path, hub, "models", "pull", SPEC)
    assert r.returncode != 0 and "is not the hub's" in r.stderr, r.stderr[-500:]
    d = tmp_path / "cache" / "models" / "tingshuo-mirror--Tiny-GGUF"
    assert not (d / FILE).exists() and not (d / (FILE + ".ok")).exists()


def test_offline_asks_nothing_and_a_missing_file_is_named(tmp_path):
    src = tiny_gguf(tmp_path / FILE, mb=1)
    with HubMirror({REPO: {FILE: src}}) as hub:
        offline = tingshuo(tmp_path, hub, "models", "pull", SPEC, offline=True)
        asked_offline = list(hub.requests)
        missing = tingshuo(tmp_path, hub, "models", "pull", f"hf:{REPO}/other.gguf")
    assert offline.returncode != 0 and "HF_HUB_OFFLINE" in offline.stderr, offline.stderr[-300:]
    assert asked_offline == []
    assert missing.returncode != 0 and "has no file other.gguf" in missing.stderr, missing.stderr[-300:]


def test_a_model_that_is_not_pulled_is_a_clear_error(tmp_path, monkeypatch):
    from tingshuo.config import Settings
    from tingshuo.llm.llamacpp import gguf_path

    monkeypatch.delenv("TINGSHUO_CONFIG", raising=False)
    with pytest.raises(ValueError, match="llm.model"):
        Settings(llm={"model": "qwen-9000"})
    with pytest.raises(ValueError, match="llm.judge_model"):
        Settings(llm={"judge_model": "qwen-9000"})
    # the judging model: None or the reply model itself means one model; another one runs in process
    assert Settings(llm={"judge_model": "qwen2.5-coder-1.5b"}).llm.judge() is None
    j = Settings(llm={"backend": "openai", "judge_model": "qwen2.5-coder-1.5b"}).llm.judge()
    assert j is not None and (j.backend, j.model) == ("llama-cpp", "qwen2.5-coder-1.5b")
    s = Settings(cache_dir=tmp_path, llm={"model": "qwen3-4b"})
    with pytest.raises(FileNotFoundError, match="tingshuo models pull qwen3-4b"):
        gguf_path(s.llm, s.cache_dir)


def test_split_files_are_pulled_together():
    from tingshuo.llm.hub import resolve

    m = resolve("hf:Qwen/Qwen2.5-7B-Instruct-GGUF/qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf")
    assert m.repo == "Qwen/Qwen2.5-7B-Instruct-GGUF"
    assert m.files == ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf")


@pytest.mark.slow
def test_a_pulled_model_answers_a_call(tmp_path, stack, settings):
    """The bundled chat GGUF, served by the mirror under another name, pulled, then selected by name
    (``llm.model = "hf:…"``: nothing but the pulled file can serve that name) in a session server that answers a
    typed Realtime turn with it."""
    from tingshuo.assets import QWEN_1_5B
    from tingshuo.engine.stack import ModelStack
    from tingshuo.llm import load_chat_model


    spec = "hf:tingshuo-mirror/Chat-GGUF/chat-q4_k_m.gguf"
    with HubMirror({"tingshuo-mirror/Chat-GGUF": {"chat-q4_k_m.gguf": QWEN_1_5B.ensure()}}) as hub:
        pulled = tingshuo(tmp_path, hub, "models", "pull", spec)
    assert pulled.returncode == 0, pulled.stderr[-500:]
    s = settings.model_copy(deep=True)
    s.cache_dir, s.llm.model = tmp_path / "cache", spec
    llm = load_chat_model(s.llm, s.cache_dir)
    assert llm.name == "llama-cpp:chat-q4_k_m.gguf"
    pulled_stack = ModelStack(s, asr=stack.asr, llm=llm, tts=stack.tts, turn=stack.turn)
    with realtime(pulled_stack, s, tmp_path) as (tc, ws, sid):
        events = say(ws, "What is the capital of France? Answer in one sentence.", audio=False)
    answer = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert "Paris" in answer, answer
