"""Fault injection: each backend failure of a running service, through the Realtime API with the real models.

For every failure the session must survive, the user must hear (or, when the voice itself failed, see) a clear
message, and the transcript store must hold every user turn. The LLM faults are a real ``llama_cpp.server`` behind a
proxy that breaks the wire (tests/faults.py); the TTS and ASR faults are the real models made to raise; the full
disk is SQLite's own "database or disk is full".
"""

from __future__ import annotations

import base64
import contextlib
import time

import numpy as np
import pytest

from conftest import ZH_CLIP
from faults import Failing, FaultyProxy
from realtime_client import realtime, say, until
from textmetrics import cer, cer_within

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------------------------------- helpers
def audio24(events: list[dict]) -> np.ndarray:
    from tingshuo.audio.io import pcm16_to_float

    return pcm16_to_float(b"".join(base64.b64decode(e["delta"]) for e in events
                                   if e["type"] == "response.output_audio.delta"))


def heard(recognizer, x24: np.ndarray) -> str:
    from tingshuo.audio.io import resample

    return recognizer.transcribe(resample(x24, 24000, 16000), "zh").text


def stored_turns(db) -> list[dict]:
    from tingshuo.store.sqlite import export_sessions

    return [t for s in export_sessions(db) for t in s["turns"]]


def errors(events: list[dict]) -> list[dict]:
    return [e["error"] for e in events if e["type"] == "error"]


def remote_stack(stack, settings, url: str, **llm):
    """The test's ASR and TTS with the LLM behind an OpenAI-compatible endpoint (the scale-out path)."""
    from tingshuo.engine.stack import ModelStack
    from tingshuo.llm.openai_compat import OpenAICompatChat

    s = settings.model_copy(deep=True)
    s.llm.backend, s.llm.base_url, s.llm.model_name = "openai", url, "qwen-local"
    for k, v in llm.items():
        setattr(s.llm, k, v)
    return ModelStack(s, asr=stack.asr, llm=OpenAICompatChat(s.llm), tts=stack.tts, turn=stack.turn), s


@pytest.fixture()
def proxy(llama_server):
    host_port = llama_server.split("//")[1].split("/")[0]
    p = FaultyProxy("127.0.0.1", int(host_port.split(":")[1]))
    yield p
    p.close()


# ---------------------------------------------------------------------------------------------------- the LLM
def test_llm_endpoint_dies_mid_response(stack, settings, tmp_path, proxy, recognizer):
    """The LLM server's connection drops after a few tokens: llm_failed, the notice is spoken after the words
    already voiced, the response is 'failed'; the next turn works once the endpoint is back."""
    remote, s = remote_stack(stack, settings, proxy.url)
    with realtime(remote, s, tmp_path) as (tc, ws, sid):
        proxy.set("cut", after=4)  # the first four words, then the server is gone
        events = say(ws, "给我介绍一下长城的历史吧。")
        proxy.set("pass")
        again = say(ws, "北京是哪个国家的首都？")
        tc.app.state.server.store.flush()
    errs = errors(events)
    assert any(e["code"] == "llm_failed" and e["type"] == "server_error" for e in errs), errs
    assert events[-1]["response"]["status"] == "failed"
    transcript = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert "语言模型出了问题" in transcript, transcript
    assert cer_within("语言模型出了问题", heard(recognizer, audio24(events))) <= 0.5  # heard, not only shown
    assert again[-1]["response"]["status"] == "completed"
    answer = next(e for e in again if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert "中国" in answer or "中华人民共和国" in answer, answer
    users = [t["text"] for t in stored_turns(tmp_path / "t.sqlite3") if t["role"] == "user"]
    assert users == ["给我介绍一下长城的历史吧。", "北京是哪个国家的首都？"], users


def test_llm_endpoint_stalls_mid_response(stack, settings, tmp_path, proxy):
    """The server stops sending (a hung GPU, a stuck process): after stall_timeout_s the user is told, not left in
    silence, and the session takes the next turn."""
    # the session's stall watchdog (3 s) long before the HTTP client's read timeout (60 s): the message says which
    # fired. The stall comes after the first three words (the proxy stalls only the streamed reply, not the turn's
    # short non-streaming calls); a cold server's prefill before them may take longer than the watchdog's 3 s
    # (first_token_timeout_s covers it), which is why the client's timeout is not a few seconds here
    remote, s = remote_stack(stack, settings, proxy.url, stall_timeout_s=3.0, timeout_s=60.0)
    with realtime(remote, s, tmp_path) as (tc, ws, sid):
        proxy.set("stall", after=3)
        t0 = time.time()
        events = say(ws, "给我讲讲长江吧。", audio=False)
        waited = time.time() - t0
        proxy.set("pass")
        again = say(ws, "What is the capital of France?", audio=False)
        tc.app.state.server.store.flush()
    errs = errors(events)
    assert any(e["code"] == "llm_failed" and "stopped answering" in e["message"] for e in errs), errs
    assert waited < 60, waited  # told before the client's own timeout could have fired
    text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert events[-1]["response"]["status"] == "failed" and "语言模型出了问题" in text, text
    assert again[-1]["response"]["status"] == "completed", errors(again)
    users = [t["text"] for t in stored_turns(tmp_path / "t.sqlite3") if t["role"] == "user"]
    assert len(users) == 2, users


def test_llm_endpoint_restarting_is_retried(stack, settings, tmp_path, proxy):
    """Connections refused while the server restarts are retried with backoff: the user sees nothing wrong."""
    remote, s = remote_stack(stack, settings, proxy.url)
    with realtime(remote, s, tmp_path) as (tc, ws, sid):
        say(ws, "你好", audio=False)  # the first turn's own calls (emotion reading…) go through
        before = proxy.connections
        proxy.set("pass", refuse=2)
        events = say(ws, "用一句话介绍一下上海。", audio=False)
    assert not errors(events), errors(events)
    assert events[-1]["response"]["status"] == "completed"
    assert proxy.connections - before >= 3  # two refused, then the one that answered


# ---------------------------------------------------------------------------------------------------- the voice
def test_tts_failure_speaks_the_notice_and_goes_on_in_text(stack, settings, tmp_path, recognizer):
    """Speech synthesis raises mid-call: the notice rendered while the voice worked is played, the reply arrives as
    transcript text, and once the TTS works again the next reply is spoken."""
    real = stack.tts
    with realtime(stack, settings, tmp_path) as (tc, ws, sid):
        stack.pool("tts").submit(lambda: None).result(60)  # the session's notice is rendered by now
        stack.tts = Failing(real, "synthesize")
        try:
            events = say(ws, "给我讲讲长城吧。")
        finally:
            stack.tts = real
        again = say(ws, "谢谢你。")
    errs = errors(events)
    assert any(e["code"] == "tts_failed" for e in errs), errs
    assert events[-1]["response"]["status"] == "completed"
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert "长城" in transcript and "声音出了点问题" in transcript, transcript
    assert cer_within("我的声音出了点问题接下来先用文字回复你", heard(recognizer, audio24(events))) <= 0.4
    assert again[-1]["response"]["status"] == "completed" and len(audio24(again)) > 24000


# ---------------------------------------------------------------------------------------------------- the ears
def test_asr_failure_keeps_the_audio_and_says_so(stack, settings, tmp_path, recognizer):
    """The recognizer crashes on a turn (twice): transcription.failed and asr_failed, the turn's audio is kept in the
    store, the assistant says it did not catch it; with the recognizer back the same words are understood."""
    import soundfile as sf

    from tingshuo.audio.io import float_to_pcm16, load_audio, resample

    x = load_audio(ZH_CLIP, 16000)
    pcm = base64.b64encode(float_to_pcm16(resample(x, 16000, 24000)).tobytes()).decode()
    real = stack.asr
    with realtime(stack, settings, tmp_path) as (tc, ws, sid):
        ws.send_json({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": None}}}})
        until(ws, "session.updated")
        stack.asr = Failing(real, "transcribe")
        try:
            ws.send_json({"type": "input_audio_buffer.append", "audio": pcm})
            ws.send_json({"type": "input_audio_buffer.commit"})
            events = until(ws, "response.done")
        finally:
            stack.asr = real
        ws.send_json({"type": "input_audio_buffer.append", "audio": pcm})
        ws.send_json({"type": "input_audio_buffer.commit"})
        again = until(ws, "conversation.item.input_audio_transcription.completed")
        tc.app.state.server.store.flush()
    failed = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.failed"]
    assert failed and any(e["code"] == "asr_failed" for e in errors(events)), [e["type"] for e in events]
    assert cer_within("没听清你刚才说的话", heard(recognizer, audio24(events))) <= 0.5
    turns = [t for t in stored_turns(tmp_path / "t.sqlite3") if t["role"] == "user"]
    lost = next(t for t in turns if t["item_id"] == failed[0]["item_id"])
    kept, rate = sf.read(lost["audio_path"])
    assert rate == 16000 and abs(len(kept) / rate - len(x) / 16000) < 0.05
    assert cer("甚至出现交易几乎停滞的情况", again[-1]["transcript"]) <= 0.2
    assert len(turns) == 2


# ---------------------------------------------------------------------------------------------------- the disk
def test_full_disk_holds_turns_until_the_store_recovers(stack, settings, tmp_path):
    """The disk fills up under the transcript store: clients get transcript_store_failed, the conversation goes on,
    and every turn reaches the file, in order, once there is room again."""
    import sqlite3

    with realtime(stack, settings, tmp_path) as (tc, ws, sid):
        store = tc.app.state.server.store
        store.flush()

        def fill(c: sqlite3.Connection) -> None:  # SQLite's own limit: past it writes fail with "disk is full"
            c.execute(f"PRAGMA max_page_count = {c.execute('PRAGMA page_count').fetchone()[0] + 2}")
            n = 0
            for size in (2000, 200, 20, 1):  # every table and index page the turns use, filled to the brim
                with contextlib.suppress(sqlite3.OperationalError):
                    while True:
                        n += 1
                        with c:
                            c.execute("INSERT INTO turns (session_id, item_id, seq, role, text, created) VALUES "
                                      "('filler', ?, 0, 'user', ?, 0)", (f"f{n}", "x" * size))

        store.with_connection(fill)
        first = say(ws, "我叫李雷，请记住我的名字。", audio=False)
        second = say(ws, "我叫什么名字？", audio=False)
        assert store.failure is not None and store.backlog >= 4
        store.with_connection(lambda c: c.execute("PRAGMA max_page_count = 1000000"))
        store.flush()
        assert store.failure is None and store.backlog == 0
    errs = errors(first)
    assert any(e["code"] == "transcript_store_failed" and "kept in memory" in e["message"] for e in errs), errs
    assert second[-1]["response"]["status"] == "completed"
    assert "李雷" in next(e for e in second if e["type"] == "response.output_text.done")["text"]
    turns = stored_turns(tmp_path / "t.sqlite3")
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"], turns
    assert turns[0]["text"] == "我叫李雷，请记住我的名字。" and turns[2]["text"] == "我叫什么名字？"

