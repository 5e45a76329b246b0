"""The Realtime server, checked the way its users meet it: the unmodified OpenAI SDK (GA and beta clients) over a
real socket, raw WebSocket abuse, auth and limits, transcripts exported from SQLite, and the call page in Debian's
Chromium with a fake microphone playing a real Mandarin clip.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import ZH_CLIP, ZH_REF, run
from textmetrics import cer
from tingshuo.store.sqlite import export_sessions


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def pcm24(x16k: np.ndarray) -> bytes:
    from tingshuo.audio.io import float_to_pcm16, resample

    return float_to_pcm16(resample(x16k, 16000, 24000)).tobytes()


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@pytest.fixture(scope="module")
def server(stack, settings, tmp_path_factory):
    """A real uvicorn server on a free loopback port, sharing the test session's models."""
    import uvicorn

    from tingshuo.server.app import WS_IMPL, create_app

    db = tmp_path_factory.mktemp("srv") / "transcripts.sqlite3"
    s = settings.model_copy(deep=True)
    s.store.path = db
    s.server.max_input_buffer_s = 20.0  # small, so the limit test sends little
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(create_app(s, stack), host="127.0.0.1", port=port, ws=WS_IMPL,
                                        ws_max_size=s.server.max_frame_bytes, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    t0 = time.time()
    while not srv.started:
        assert th.is_alive() and time.time() - t0 < 30, "server did not start"
        time.sleep(0.05)
    yield {"port": port, "db": db, "settings": s}
    srv.should_exit = True
    th.join(10)


def client(server, beta: bool = False):
    import openai

    port = server["port"]
    # The beta client always builds wss:// from base_url; websocket_base_url is its documented override.
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="local",
                              websocket_base_url=f"ws://127.0.0.1:{port}/v1" if beta else None)


async def collect(conn, until: str, limit_s: float = 120.0, on=None) -> list:
    events = []
    t0 = time.time()
    async for ev in conn:
        events.append(ev)
        if on is not None:
            await on(ev, events)
        if ev.type == until:
            return events
        assert time.time() - t0 < limit_s, f"no {until} within {limit_s} s; last: {[e.type for e in events[-8:]]}"
    raise AssertionError(f"connection closed before {until}")


def audio_of(events, name: str) -> np.ndarray:
    from tingshuo.audio.io import pcm16_to_float

    data = b"".join(base64.b64decode(e.delta) for e in events if e.type == name)
    return pcm16_to_float(data)


@pytest.fixture(scope="module")
def ga_turn(server, zh_clip):
    """One push-to-talk turn through the GA client (a real clip in, a spoken reply), and the user item retrieved.
    A fixture: the export test reads the same turn from the store, whatever order the tests run in."""
    from tingshuo.audio.io import load_audio

    async def main():
        async with client(server).realtime.connect(model="tingshuo-local") as conn:
            first = await conn.recv()
            assert first.type == "session.created" and first.session.type == "realtime"
            assert first.session.audio.output.format.type == "audio/pcm"
            await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
            pcm = pcm24(load_audio(zh_clip))
            for i in range(0, len(pcm), 4800):  # 100 ms appends, as a microphone client sends
                await conn.input_audio_buffer.append(audio=b64(pcm[i : i + 4800]))
            await conn.input_audio_buffer.commit()
            await conn.response.create()
            events = await collect(conn, "response.done")
            user_id = next(e for e in events if e.type == "input_audio_buffer.committed").item_id
            await conn.conversation.item.retrieve(item_id=user_id)
            return events, (await collect(conn, "conversation.item.retrieved"))[-1]

    return run(main())


@pytest.mark.slow
def test_ga_sdk_push_to_talk_speech_in_speech_out(ga_turn, recognizer, zh_clip):
    """client.realtime.connect: a real clip in, the reply's audio transcribes back to its transcript."""
    from tingshuo.audio.io import load_audio, resample

    events, retrieved = ga_turn
    said = base64.b64decode(retrieved.item.content[0].audio)
    assert abs(len(said) / 48000 - len(load_audio(zh_clip)) / 16000) < 0.05, "retrieve returns the user's audio"
    types = [e.type for e in events]
    assert types[0] == "session.updated" and events[0].session.audio.input.turn_detection is None
    assert "input_audio_buffer.committed" in types and "conversation.item.added" in types
    heard = next(e for e in events if e.type == "conversation.item.input_audio_transcription.completed")
    assert cer(ZH_REF, heard.transcript) < 0.2, heard.transcript
    # how it was said: the extension event with the reading and the measurements behind it
    para = next(e for e in events if e.type == "tingshuo.paralinguistics")
    emotion = getattr(para, "emotion", None) or (para.model_extra or {})["emotion"]
    assert para.item_id == heard.item_id and emotion["label"] in ("neutral", "happy", "sad", "angry", "anxious", "tired")
    assert emotion["source"] == "voice+text" and 100 < emotion["features"]["f0_median_hz"] < 400
    created = next(e for e in events if e.type == "response.created")
    style = (getattr(created, "tingshuo", None) or (created.model_extra or {})["tingshuo"])["style"]
    assert style["user_emotion"] == emotion["label"] and "voice_state" in style
    # the GA order of a spoken reply
    order = ["response.created", "response.output_item.added", "response.content_part.added",
             "response.output_audio.delta", "response.output_audio.done", "response.output_audio_transcript.done",
             "response.content_part.done", "response.output_item.done", "response.done"]
    idx = [types.index(t) for t in order]
    assert idx == sorted(idx), types
    done = events[-1].response
    assert done.status == "completed" and done.usage.output_tokens > 0 and done.usage.input_tokens > 0
    transcript = next(e for e in events if e.type == "response.output_audio_transcript.done").transcript
    deltas = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
    assert transcript == deltas and len(transcript) >= 4
    audio = audio_of(events, "response.output_audio.delta")
    assert len(audio) > 24000, "less than a second of reply audio"
    back = recognizer.transcribe(resample(audio, 24000, 16000), "zh").text
    assert cer(transcript, back) < 0.35, (transcript, back)


@pytest.mark.slow
def test_beta_sdk_server_vad_cancel_and_truncate(server, zh_clip):
    """client.beta.realtime.connect with server VAD: the turn is found in the stream; the client interrupts with
    response.cancel and truncates the assistant item to what it played."""
    from tingshuo.audio.io import load_audio

    async def main():
        async with client(server, beta=True).beta.realtime.connect(model="tingshuo-local") as conn:
            first = await conn.recv()
            assert first.type == "session.created" and first.session.input_audio_format == "pcm16"
            await conn.session.update(session={"turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                                               "input_audio_transcription": {"model": "whisper-1"}})
            x = np.concatenate([np.zeros(8000, np.float32), load_audio(zh_clip), np.zeros(32000, np.float32)])
            pcm = pcm24(x)
            for i in range(0, len(pcm), 4800):
                await conn.input_audio_buffer.append(audio=b64(pcm[i : i + 4800]))
            state = {"cancelled": False}

            async def on(ev, events):
                # cancel once ~1 s of reply audio has arrived (a client whose user started talking)
                if ev.type == "response.audio.delta" and not state["cancelled"]:
                    if len(audio_of(events, "response.audio.delta")) >= 24000:
                        state["cancelled"] = True
                        await conn.response.cancel()

            events = await collect(conn, "response.done", on=on)
            item_id = next(e for e in events if e.type == "response.output_item.added").item.id
            played_ms = int(len(audio_of(events, "response.audio.delta")) / 24)
            await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=played_ms // 2)
            events += await collect(conn, "conversation.item.truncated")
            await conn.conversation.item.retrieve(item_id=item_id)
            events += await collect(conn, "conversation.item.retrieved")
            await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=10**7)
            events += await collect(conn, "error")
            return events

    events = run(main())
    types = [e.type for e in events]
    for t in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
              "input_audio_buffer.committed", "conversation.item.created",
              "conversation.item.input_audio_transcription.completed", "response.audio.delta"):
        assert t in types, (t, types)
    assert types.index("input_audio_buffer.speech_stopped") < types.index("response.created")
    heard = next(e for e in events if e.type == "conversation.item.input_audio_transcription.completed")
    assert cer(ZH_REF, heard.transcript) < 0.2, heard.transcript
    done = next(e for e in events if e.type == "response.done").response
    assert done.status == "cancelled"
    # what the client received as captions vs. what the item keeps after truncating at half the received audio
    sent = "".join(e.delta for e in events if e.type == "response.audio_transcript.delta")
    kept = next(e for e in events if e.type == "conversation.item.retrieved").item
    k = (kept.content[0].transcript or "").rstrip("…")
    assert k and len(k) < len(sent) and sent.startswith(k), (kept.content[0].transcript, sent)
    assert kept.content[0].audio, "retrieve returns the item's audio"
    err = events[-1]
    assert err.type == "error" and err.error.param == "audio_end_ms"


@pytest.fixture(scope="module")
def text_items(server):
    """T2T: a typed item answered in text, an out-of-band response, the user item deleted (the export test
    checks that deletion in the store)."""

    async def main():
        async with client(server).realtime.connect(model="tingshuo-local") as conn:
            await conn.recv()
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "用一句话介绍一下北京。"}]})
            await conn.response.create(response={"output_modalities": ["text"]})
            ev1 = await collect(conn, "response.done")
            await conn.response.create(response={"conversation": "none", "output_modalities": ["text"],
                                                 "metadata": {"purpose": "title"},
                                                 "input": [{"type": "message", "role": "user", "content": [
                                                     {"type": "input_text", "text": "Say OK."}]}]})
            ev2 = await collect(conn, "response.done")
            user_id = next(e for e in ev1 if e.type == "conversation.item.added").item.id
            await conn.conversation.item.delete(item_id=user_id)
            ev3 = await collect(conn, "conversation.item.deleted")
            await conn.conversation.item.retrieve(item_id=user_id)
            ev3 += await collect(conn, "error")
            return ev1, ev2, ev3

    return run(main())


@pytest.mark.slow
def test_text_in_text_out_items_and_out_of_band(text_items):
    """T2T on the same engine: item.create + response.create(text); item ops; an out-of-band response leaves
    the conversation alone."""
    ev1, ev2, ev3 = text_items
    text = "".join(e.delta for e in ev1 if e.type == "response.output_text.delta")
    done_text = next(e for e in ev1 if e.type == "response.output_text.done").text
    assert text == done_text and "北京" in text, text
    assert not any(e.type == "response.output_audio.delta" for e in ev1)
    oob = ev2[-1].response
    assert oob.conversation_id is None and oob.metadata == {"purpose": "title"}
    assert not any(e.type == "conversation.item.added" and e.item.role == "user" for e in ev2)
    assert ev3[0].type == "conversation.item.deleted" and ev3[-1].error.code == "item_not_found"


@pytest.mark.slow
def test_bad_input_gets_errors_and_the_session_survives(server):
    """Malformed JSON, unknown types, bad base64, odd PCM, binary and 20 MiB frames: error events, same socket."""
    import websockets

    async def main():
        url = f"ws://127.0.0.1:{server['port']}/v1/realtime?model=x"
        async with websockets.connect(url, max_size=None) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            bad = [
                "{not json",
                json.dumps([1, 2]),
                json.dumps({"type": "no.such.event", "event_id": "e1"}),
                json.dumps({"type": "input_audio_buffer.append", "audio": "%%%not-base64%%%"}),
                json.dumps({"type": "input_audio_buffer.append", "audio": b64(b"\x00\x01\x02")}),
                json.dumps({"type": "session.update", "session": {"audio": {"output": {"voice": "nobody"}}}}),
                json.dumps({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}),
                json.dumps({"type": "conversation.item.truncate", "item_id": "item_nope", "audio_end_ms": 10}),
                json.dumps({"type": "response.cancel"}),
                json.dumps({"type": "input_audio_buffer.commit"}),
                b"\x00binary",
                json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (20 * 2**20)}),
            ]
            codes = []
            for frame in bad:
                await ws.send(frame)
                ev = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert ev["type"] == "error", ev
                codes.append(ev["error"]["code"])
            # push-to-talk buffer limit: the overflowing append is refused, what was buffered is kept
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
                "input": {"turn_detection": None}}}}))
            assert json.loads(await ws.recv())["type"] == "session.updated"
            twelve = b64(bytes(24000 * 2 * 12))
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": twelve}))
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": twelve}))
            full = json.loads(await asyncio.wait_for(ws.recv(), 30))
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            cleared = json.loads(await asyncio.wait_for(ws.recv(), 30))
            await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "你是测试助手。"}}))
            ok = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return codes, ok, full, cleared

    codes, ok, full, cleared = run(main())
    assert full["type"] == "error" and full["error"]["code"] == "input_audio_buffer_full", full
    assert "12 s" in full["error"]["message"] or "24 s" in full["error"]["message"], full
    assert cleared["type"] == "input_audio_buffer.cleared"
    assert codes == ["invalid_json", "invalid_event", "unknown_event_type", "invalid_audio", "invalid_audio",
                     "invalid_value", "invalid_value", "item_not_found", "response_cancel_not_active",
                     "input_audio_buffer_commit_empty", "invalid_event", "event_too_large"], codes
    assert ok["type"] == "session.updated" and ok["session"]["instructions"] == "你是测试助手。"


@pytest.mark.slow
def test_auth_keys_open_mode_and_session_limit(stack, settings, tmp_path):
    """Wrong or missing key: refused handshake (401). Open mode refuses non-loopback clients. Per-key limit."""
    from starlette.testclient import TestClient, WebSocketDenialResponse

    from tingshuo.server.app import check_bind, create_app

    s = settings.model_copy(deep=True)
    s.store.path = tmp_path / "t.sqlite3"
    s.server.api_keys = ["sk-right"]
    s.server.max_sessions_per_key = 1
    with TestClient(create_app(s, stack)) as tc:
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
            with pytest.raises(WebSocketDenialResponse) as denied:
                with tc.websocket_connect("/v1/realtime", headers=headers):
                    pass
            assert denied.value.status_code == 401 and "key" in denied.value.json()["error"]["message"]
        with tc.websocket_connect("/v1/realtime", headers={"Authorization": "Bearer sk-right"}) as ws:
            assert ws.receive_json()["type"] == "session.created"
            with tc.websocket_connect("/v1/realtime", subprotocols=["realtime", "openai-insecure-api-key.sk-right"]) as ws2:
                ev = ws2.receive_json()
                assert ev["type"] == "error" and ev["error"]["code"] == "session_limit_reached"
        # the slot is free again once the first session closed
        with tc.websocket_connect("/v1/realtime", subprotocols=["realtime", "openai-insecure-api-key.sk-right"]) as ws:
            assert ws.receive_json()["type"] == "session.created"
    s.server.api_keys = []
    with TestClient(create_app(s, stack)) as tc:  # TestClient's peer is "testclient", not a loopback address
        with pytest.raises(WebSocketDenialResponse) as denied:
            with tc.websocket_connect("/v1/realtime"):
                pass
        assert denied.value.status_code == 403
        assert tc.get("/").status_code == 200 and "听说" in tc.get("/").text
        assert tc.get("/static/app.js").status_code == 200 and tc.get("/static/../cli.py").status_code == 404
    s.server.host = "0.0.0.0"
    assert check_bind(s) is not None and "api_keys" in check_bind(s)


def export(server, *args: str) -> subprocess.CompletedProcess:
    """`tingshuo sessions export` on the module server's store."""
    import os

    env = {**os.environ, "TINGSHUO_STORE__PATH": str(server["db"])}
    return subprocess.run([sys.executable, "-m", "tingshuo.cli", "sessions", "export", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def exported_until(server, ready, *args: str, limit_s: float = 30.0) -> list:
    """The JSON export once ``ready(sessions)`` holds: the store writes on its own thread, so a turn that was
    answered may reach the file a moment later (more than a moment on a loaded machine)."""
    t0 = time.time()
    while True:
        out = export(server, "--format", "json", *args)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        if ready(data) or time.time() - t0 > limit_s:
            return data
        time.sleep(0.2)


@pytest.mark.slow
def test_transcripts_persist_and_export(server, ga_turn, text_items):
    """Every turn of the sessions above is in SQLite and `tingshuo sessions export` prints it; the item the client
    deleted keeps only that it was deleted, and when (its words are gone from the file)."""
    def stored(data) -> bool:  # both fixtures' turns have reached the file, the deletion too
        turns = [t for s in data for t in s["turns"]]
        return (any(t["role"] == "user" and t["language"] == "zh" and t["emotion"] for t in turns)
                and any(t["deleted"] and t["role"] == "user" for t in turns))

    deleted = [t for s in exported_until(server, stored, "--include-deleted") for t in s["turns"] if t["deleted"]]
    assert any(t["role"] == "user" and t["text"] == "" and t["deleted_at"] for t in deleted), deleted
    db = server["db"]
    raw = b"".join(f.read_bytes() for f in (db, db.with_name(db.name + "-wal")) if f.exists())
    assert "用一句话介绍一下北京。".encode() not in raw, "the deleted item's words are still in the file"
    gone = {t["item_id"] for t in deleted}
    data = json.loads(export(server, "--format", "json").stdout)
    turns = [t for s in data for t in s["turns"]]
    users = [t for t in turns if t["role"] == "user"]
    assert any(cer(ZH_REF, t["text"]) < 0.2 and t["language"] == "zh" for t in users), users
    # the spoken turn's reading with its measurements (a typed turn's reading has no features)
    assert any(t["emotion"] and t["emotion"]["label"] and t["emotion"].get("features") for t in users), "reading stored"
    assert any(t["role"] == "assistant" and t["timings_ms"] and t["text"] for t in turns)
    # by item: other tests on this module's server ask about 北京 too (test_two_sessions…), in any order
    assert not any(t["item_id"] in gone for t in turns), "a turn the client deleted is not exported by default"
    text = export(server, "--format", "text")
    assert text.returncode == 0 and "用户:" in text.stdout and "助手:" in text.stdout


def chromium_with_mic(p, mic: Path):
    import psutil

    chromium = Path("/usr/bin/chromium")
    assert chromium.is_file(), "Debian's chromium is missing: run ./run.sh test (installs it)"
    browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={mic}",
        "--autoplay-policy=no-user-gesture-required"])
    # A caller's browser has its own CPU; here it shares 2 cores with the models, and a starved fake-capture thread
    # garbled the clip now and then (1 run in ~8). Give the browser priority, as its own machine would.
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chrom" in proc.name():
                proc.nice(-5)
        except (psutil.Error, OSError):
            pass  # not permitted (not root): the test still runs, only less steadily
    return browser


@pytest.mark.slow
def test_call_page_in_headless_chromium(server, zh_clip, tmp_path):
    """Chromium with a fake microphone playing the Mandarin clip: click call, the page shows the user's caption
    and plays the assistant's audio. The screenshot is kept in test-artifacts/."""
    from playwright.sync_api import sync_playwright

    from tingshuo.audio.io import load_audio

    mic = tmp_path / "mic.wav"
    # silence while the greeting plays (~1 s to synthesize + ~3.5 s), the clip, then silence while the reply plays:
    # longer than the test waits (≤ 93 s), since Chromium's fake microphone starts the file again at its end (a
    # long reply on a loaded machine once had the clip said twice)
    x = load_audio(zh_clip)
    sf.write(mic, np.concatenate([np.zeros(16000 * 9, np.float32), x, np.zeros(16000 * 90, np.float32)]), 16000,
             subtype="PCM_16")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = chromium_with_mic(p, mic)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844}, locale="zh-CN")
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{server['port']}/")
            assert page.locator("#call").inner_text() == "开始通话"
            page.wait_for_selector("#kept:not([hidden])")
            assert page.locator("#keptText").inner_text() == "这次通话会保存 30 天"  # the default retention
            assert page.locator("#erase").is_disabled()  # nothing to delete before a call
            page.click("#call")
            t0 = time.time()
            st: dict = {}
            while time.time() - t0 < 90:
                st = page.evaluate("() => window.tingshuo")
                replies = [a for a in st["assistantCaptions"] if a]
                if st["userCaptions"] and len(replies) >= 2 and st["played"] > 24000:
                    break
                page.wait_for_timeout(500)
            page.wait_for_timeout(3000)  # a turn cut at a pause shows up as a second caption; let it arrive
            st = page.evaluate("() => window.tingshuo")
            page.screenshot(path=str(ARTIFACTS / "call-page.png"), full_page=True)
            (ARTIFACTS / "call-page.json").write_text(json.dumps(st, ensure_ascii=False, indent=1))
            page.click("#lang")
            assert page.locator("#call").inner_text() == "Hang up"
            # hang up, then "delete this call": the page asks first, then the server erases the call
            sid = page.evaluate("() => state.sessionId")
            page.click("#call")
            page.wait_for_selector("#erase:not([disabled])", timeout=15000)
            page.once("dialog", lambda d: d.accept())
            page.click("#erase")
            page.wait_for_function("() => (window.tingshuo.erased || []).length > 0", timeout=30000)
            erased = page.evaluate("() => window.tingshuo.erased")
        finally:
            browser.close()
    assert not errors, errors
    assert erased == [sid], (erased, sid)
    # (not a check of the file's bytes: other tests on this module's server say the same clip; test_store and
    # test_transcripts_persist_and_export check erasure byte by byte)
    assert not export_sessions(server["db"], sid, include_deleted=True), "the call was not deleted"
    # Chromium's capture path (WebRTC noise suppression, AGC) changes the clip; Whisper base then slips on a
    # word or two (seen: 交易几乎 → 交绾绮绮, CER 0.38), so the bar is looser than for the SDK's clean PCM.
    # The words are what matters here, not where the turn was cut (seen once: "甚至出现交几" + the rest).
    assert st["userCaptions"] and cer(ZH_REF, "".join(st["userCaptions"])) < 0.45, st
    replies = [a for a in st["assistantCaptions"] if a]
    assert len(replies) >= 2, st  # the greeting and the answer
    assert st["played"] > 24000, f"the page played only {st['played']} samples"
    assert st["latencyMs"], "no latency figure shown"
    ev = st["events"]
    assert "tingshuo.input_audio_transcription.partial" in ev, "no live caption while the user spoke"
    assert "conversation.item.input_audio_transcription.delta" in ev, "no standard transcription delta"
    assert ev.index("conversation.item.input_audio_transcription.delta") < ev.index(
        "conversation.item.input_audio_transcription.completed")
    assert not st["errors"], st["errors"]


@pytest.mark.slow
def test_call_page_stops_playback_on_barge_in(server, zh_clip, tmp_path):
    """The user talks over the reply: the page silences it at once (nothing more of it is played after the stop)
    and the server cancels it; the interruption is answered as the next turn."""
    from playwright.sync_api import sync_playwright

    from tingshuo.audio.io import load_audio

    x = load_audio(zh_clip)
    mic = tmp_path / "mic.wav"
    # greeting; the question; 2.5 s later (the reply is playing) the user speaks again; then quiet
    parts = [np.zeros(16000 * 6), x, np.zeros(int(16000 * 2.5)), x, np.zeros(16000 * 30)]
    sf.write(mic, np.concatenate(parts).astype(np.float32), 16000, subtype="PCM_16")
    with sync_playwright() as p:
        browser = chromium_with_mic(p, mic)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(f"http://127.0.0.1:{server['port']}/")
            page.click("#call")
            t0 = time.time()
            st: dict = {}

            def answered(st: dict) -> bool:
                """A reply after the cancelled one is being played (its end is not waited for, in real time)."""
                cancelled = [r for r, s in st["statuses"].items() if s == "cancelled"]
                ids = list(st["playedById"])
                return bool(cancelled) and cancelled[0] in ids and any(
                    st["playedById"][r] > 0 for r in ids[ids.index(cancelled[0]) + 1:])

            while time.time() - t0 < 90:
                st = page.evaluate("() => window.tingshuo")
                if len(st["userCaptions"]) >= 2 and answered(st):
                    break
                page.wait_for_timeout(500)
            page.wait_for_timeout(1000)
            st = page.evaluate("() => window.tingshuo")
        finally:
            browser.close()
    cancelled = [r for r, s in st["statuses"].items() if s == "cancelled"]
    assert cancelled, f"no reply was interrupted: {st['statuses']} {st['events'][-30:]}"
    stops = [s for s in st["stops"] if s["responseId"] in cancelled and s.get("playedAtClear")]
    assert stops, f"the page never stopped a playing reply: {st['stops']}"
    for s in stops:
        after = st["playedById"][s["responseId"]] - s["playedAtClear"]
        assert after <= 24000 * 0.05, f"{after / 24:.0f} ms of the interrupted reply played after the stop"
    assert len(st["userCaptions"]) >= 2, st["userCaptions"]
    assert answered(st), f"the interruption was not answered: {st['statuses']} {st['events'][-30:]}"


@pytest.mark.slow
def test_audio_item_and_g711_telephony_format(server, recognizer, zh_clip):
    """A spoken user item (no transcript) is transcribed before the reply; μ-law 8 kHz in and out, as a phone
    gateway sends it."""
    from tingshuo.audio.io import load_audio, resample
    from tingshuo.server.protocol import decode_audio, encode_audio

    async def main():
        async with client(server).realtime.connect(model="tingshuo-local") as conn:
            await conn.recv()
            await conn.session.update(session={"type": "realtime", "audio": {
                "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                "output": {"format": {"type": "audio/pcmu"}}}})
            ulaw = encode_audio(resample(load_audio(zh_clip), 16000, 8000), "g711_ulaw")
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_audio", "audio": b64(ulaw)}]})
            await conn.response.create()
            return await collect(conn, "response.done")

    events = run(main())
    assert events[0].type == "session.updated" and events[0].session.audio.output.format.type == "audio/pcmu"
    added = next(e for e in events if e.type == "conversation.item.added" and e.item.role == "user")
    assert cer(ZH_REF, added.item.content[0].transcript) < 0.25, added.item
    assert events[-1].response.status == "completed"
    data = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
    audio, rate = decode_audio(data, "g711_ulaw")
    assert rate == 8000 and len(audio) > 8000
    transcript = next(e for e in events if e.type == "response.output_audio_transcript.done").transcript
    back = recognizer.transcribe(resample(audio, 8000, 16000), "zh").text
    assert cer(transcript, back) < 0.45, (transcript, back)  # 8 kHz telephone band: a looser bar


def test_refused_handshake_over_a_real_socket(settings, tmp_path, caplog):
    """uvicorn sends our 401 with its JSON reason (and logs no error for it)."""
    import uvicorn
    import websockets

    from tingshuo.engine.stack import ModelStack
    from tingshuo.server.app import WS_IMPL, create_app

    s = settings.model_copy(deep=True)
    s.server.api_keys, s.store.path = ["k1"], tmp_path / "t.sqlite3"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(create_app(s, ModelStack(s)), host="127.0.0.1", port=port, ws=WS_IMPL,
                                        log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    while not srv.started:
        time.sleep(0.05)

    async def main():
        out = []
        for headers in ({}, {"Authorization": "Bearer nope"}):
            with pytest.raises(websockets.exceptions.InvalidStatus) as e:
                async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime", additional_headers=headers):
                    pass
            out.append((e.value.response.status_code, json.loads(e.value.response.body)["error"]["code"]))
        return out

    try:
        assert run(main()) == [(401, "invalid_api_key"), (401, "invalid_api_key")]
    finally:
        srv.should_exit = True
        th.join(10)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.records


@pytest.mark.slow
def test_dead_llm_endpoint_is_an_error_and_the_call_goes_on(stack, settings, tmp_path):
    """The LLM server is down: the client gets llm_failed and a failed response.done; the user's turn is kept
    (in the conversation and the transcript store) and the session keeps working."""
    from starlette.testclient import TestClient

    from tingshuo.engine.stack import ModelStack
    from tingshuo.llm.openai_compat import OpenAICompatChat
    from tingshuo.server.app import create_app
    from tingshuo.store.sqlite import export_sessions

    s = settings.model_copy(deep=True)
    s.store.path = tmp_path / "t.sqlite3"
    s.server.allow_open = True
    s.llm.backend, s.llm.base_url, s.llm.timeout_s = "openai", "http://127.0.0.1:9/v1", 2.0  # port 9: nobody
    dead = ModelStack(s, asr=stack.asr, llm=OpenAICompatChat(s.llm), tts=stack.tts, turn=stack.turn)
    with TestClient(create_app(s, dead)) as tc:
        with tc.websocket_connect("/v1/realtime") as ws:
            assert ws.receive_json()["type"] == "session.created"
            ws.send_json({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                                        "content": [{"type": "input_text", "text": "你好"}]}})
            ws.send_json({"type": "response.create"})
            events = []
            while not events or events[-1]["type"] != "response.done":
                events.append(ws.receive_json())
            ws.send_json({"type": "session.update", "session": {"instructions": "还在吗"}})
            while (ev := ws.receive_json())["type"] != "session.updated":
                pass
        app_server = tc.app.state.server
        app_server.store.flush()
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert errors and errors[0]["code"] == "llm_failed" and errors[0]["type"] == "server_error", errors
    assert events[-1]["response"]["status"] == "failed"
    turns = [t for x in export_sessions(s.store.path) for t in x["turns"]]
    assert any(t["role"] == "user" and t["text"] == "你好" for t in turns), turns


@pytest.mark.slow
def test_two_sessions_at_once_share_the_models_safely(server):
    """Two callers at the same moment: both replies complete and each answers its own question (the models run
    on one thread each, shared by the sessions; two threads on one llama.cpp context would crash or mix)."""

    async def ask(text: str) -> list:
        async with client(server).realtime.connect(model="tingshuo-local") as conn:
            await conn.recv()
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": text}]})
            await conn.response.create(response={"output_modalities": ["audio"]})
            return await collect(conn, "response.done")

    async def main():
        return await asyncio.gather(ask("北京是哪个国家的首都？"), ask("What is the capital of France?"))

    zh, en = run(main())
    for events in (zh, en):
        assert events[-1].response.status == "completed", [e.type for e in events[-5:]]
        assert len(audio_of(events, "response.output_audio.delta")) > 24000
    zh_text = next(e for e in zh if e.type == "response.output_audio_transcript.done").transcript
    en_text = next(e for e in en if e.type == "response.output_audio_transcript.done").transcript
    assert "中国" in zh_text or "中华人民共和国" in zh_text, zh_text
    assert "Paris" in en_text, en_text


@pytest.mark.slow
def test_idle_timeout_checks_in_after_silence(server):
    """server_vad idle_timeout_ms: after a reply and that much silence, timeout_triggered and a short check-in
    reply; at most two in a row while the user stays silent."""

    async def main():
        async with client(server).realtime.connect(model="tingshuo-local") as conn:
            await conn.recv()
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "audio": {
                "input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 1500}}}})
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "我今天有点累。"}]})
            await conn.response.create()
            events = await collect(conn, "response.done")
            t_done = time.perf_counter()
            events += await collect(conn, "input_audio_buffer.timeout_triggered")
            waited = time.perf_counter() - t_done
            events += await collect(conn, "response.done")
            return events, waited

    events, waited = run(main())
    assert events[0].type == "session.updated"
    assert events[0].session.audio.input.turn_detection.idle_timeout_ms == 1500
    assert 1.3 < waited < 6, waited
    check_in = events[-1].response
    text = check_in.output[0].content[0].text
    assert check_in.status == "completed" and check_in.metadata == {"tingshuo_reason": "idle_timeout"}
    assert text and any(c in text for c in "？?吗呢"), text  # it asks something


@pytest.mark.slow
def test_roles_and_songs_through_the_realtime_api(server):
    """A typed item asking for a role switches the session's persona (extension event, voice, prompt); a song
    request is answered with the lyrics sung phrase by phrase (extension clause events mark them)."""

    async def main():
        async with client(server).realtime.connect(model="tingshuo-local") as conn:
            await conn.recv()
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "你当孙悟空跟我说话"}]})
            await conn.response.create(response={"output_modalities": ["text"]})
            ev1 = await collect(conn, "response.done")
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "唱首新年好"}]})
            await conn.response.create()
            ev2 = await collect(conn, "response.done")
            return ev1, ev2

    ev1, ev2 = run(main())
    changed = [e for e in ev1 if e.type == "tingshuo.persona.changed"]
    assert changed and changed[0].persona == "wukong" and changed[0].voice == "wukong"
    sung = [e for e in ev2 if e.type == "tingshuo.reply.clause" and e.sung]
    # 新年好: the shortest song of the songbook (11 s); 两只老虎 and 小星星 are sung by test_singing and test_cli
    assert [e.text.rstrip("，。") for e in sung][:2] == ["新年好呀", "新年好呀"]
    assert len(audio_of(ev2, "response.output_audio.delta")) > 24000 * 10  # the song (and its introduction), in audio
    created = next(e for e in ev2 if e.type == "response.created")
    assert created.model_extra["tingshuo"]["style"]["persona"] == "wukong"


@pytest.mark.slow
def test_crisis_care_and_risk_log_through_the_realtime_api(server):
    """A typed crisis item goes through the same safety layer: care (extension events, a help line in the reply),
    and the verdict is in the deployer's risk log of the transcript store."""

    async def main():
        async with client(server).realtime.connect(model="tingshuo-local") as conn:
            await conn.recv()
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "我真的不想活了"}]})
            await conn.response.create(response={"output_modalities": ["text"]})
            return await collect(conn, "response.done")

    events = run(main())
    assert any(e.type == "tingshuo.care.changed" and e.on for e in events), [e.type for e in events]
    assert any(e.type == "tingshuo.safety" and e.action == "care" for e in events)
    done = events[-1].response
    assert re.search(r"12356|82951332", done.output[0].content[0].text), done.output[0].content[0].text
    cared = lambda r: r["category"] == "self_harm" and r["action"] == "care" and "不想活" in r["text"]  # noqa: E731
    risk = [r for s in exported_until(server, lambda d: any(cared(r) for s in d for r in s["risk"])) for r in s["risk"]]
    assert any(cared(r) for r in risk), risk
