"""The CLI on good and bad input: JSON shape, exit codes, and never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

TINGSHUO = [str(Path(sys.executable).with_name("tingshuo"))]


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*TINGSHUO, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, en_clips):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.wav").write_bytes(b"")
    (d / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    sf.write(d / "silence.wav", np.zeros(48000, np.float32), 16000)
    with sf.SoundFile(d / "hour.wav", "w", 8000, 1, "PCM_16") as f:
        for _ in range(60):
            f.write(np.zeros(8000 * 60, np.int16))
    return d


@pytest.mark.parametrize("name,code,words", [
    ("empty.wav", 2, "empty"), ("corrupt.wav", 2, "decode"), ("silence.wav", 5, "no speech"), ("hour.wav", 2, "min long"),
])
def test_bad_audio_clear_message_no_traceback(bad_files, name, code, words):
    r = cli("respond", str(bad_files / name), "--json")
    assert r.returncode == code, r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_respond_8k_stereo_json(tmp_path, en_clips):
    from tingshuo.audio.io import load_audio

    path, ref = list(en_clips.items())[1]
    x = load_audio(path, rate=8000)
    sf.write(tmp_path / "in.wav", np.stack([x, x], 1), 8000)
    r = cli("respond", str(tmp_path / "in.wav"), "--out", str(tmp_path / "out.wav"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["language"] == "en" and out["reply_text"]
    assert set(out["timings_ms"]) >= {"asr", "llm_first_token", "tts_first_audio", "first_audio"}
    audio, sr = sf.read(tmp_path / "out.wav")
    assert sr == 24000 and len(audio) > sr * 0.5


@pytest.mark.slow
def test_say_transcribe_and_models(tmp_path):
    r = cli("say", "你好，很高兴认识你。", "--out", str(tmp_path / "s.wav"), "--speed", "1.1")
    assert r.returncode == 0, r.stderr
    r = cli("transcribe", str(tmp_path / "s.wav"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["language"] == "zh"
    assert "高兴" in json.loads(r.stdout)["text"]
    r = cli("models")
    assert r.returncode == 0 and "qwen2.5-coder-1.5b" in r.stdout and "ready" in r.stdout


def test_talk_without_audio_devices_says_so():
    """CI machines have no sound card: `talk` must explain, not crash (with devices it starts a live call)."""
    import sounddevice as sd

    try:
        sd.query_devices(kind="input")
        sd.query_devices(kind="output")
        pytest.skip("this machine has audio devices; the no-device message cannot be provoked")  # noted, not silent
    except Exception:
        pass
    r = cli("talk", timeout=60)
    assert r.returncode == 2, r.stderr
    assert "microphone" in r.stderr and "Traceback" not in r.stderr
    r = cli("talk", "--list-devices", timeout=60)
    assert r.returncode == 0


def test_serve_refuses_an_open_public_address():
    r = cli("serve", "--host", "0.0.0.0", timeout=60)
    assert r.returncode == 2 and "api_keys" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_serve_starts_the_page_and_the_api_and_stops_on_ctrl_c(tmp_path, tls):
    """The main job as `./run.sh` starts it: a real process, the page, a Realtime handshake, a clean Ctrl-C;
    and the same over TLS with a self-signed certificate (what a phone on the LAN needs for its microphone)."""
    import asyncio
    import os
    import signal
    import socket
    import ssl
    import time

    import httpx
    import openai
    import websockets

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "TINGSHUO_STORE__PATH": str(tmp_path / "t.sqlite3")}
    args = ["serve", "--port", str(port)]
    if tls:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=127.0.0.1", "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                       check=True, capture_output=True)
        args += ["--ssl-certfile", str(tmp_path / "cert.pem"), "--ssl-keyfile", str(tmp_path / "key.pem")]
    scheme = "https" if tls else "http"
    proc = subprocess.Popen([*TINGSHUO, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.time() - t0 < 120, "the server did not come up in 120 s"
            try:
                if httpx.get(f"{scheme}://127.0.0.1:{port}/healthz", timeout=1, verify=False).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        page = httpx.get(f"{scheme}://127.0.0.1:{port}/", verify=False)
        assert page.status_code == 200 and "听说" in page.text

        async def handshake() -> str:
            if tls:
                ctx = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
                ctx.check_hostname = False
                async with websockets.connect(f"wss://127.0.0.1:{port}/v1/realtime", ssl=ctx) as ws:
                    return json.loads(await ws.recv())["type"]
            c = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="any")
            async with c.realtime.connect(model="tingshuo") as conn:
                return (await conn.recv()).type

        assert asyncio.run(handshake()) == "session.created"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert "Traceback" not in err and f"{scheme}://127.0.0.1:{port}/" in err


def test_styles_are_listed_and_an_unknown_one_refused(tmp_path):
    r = cli("styles", "--json")
    assert r.returncode == 0
    names = {s["name"] for s in json.loads(r.stdout)}
    assert {"neutral", "happy", "sad", "angry", "fearful", "tender", "whisper"} <= names
    assert cli("say", "你好", "--style", "grumpy", "--out", str(tmp_path / "x.wav")).returncode == 2


@pytest.mark.slow
def test_styles_say_with_style_and_listen(tmp_path):
    """`say --style whisper` whispers; `listen --json` hears the whisper and the features."""
    from tingshuo.audio import prosody

    plain, quiet = tmp_path / "plain.wav", tmp_path / "whisper.wav"
    assert cli("say", "我跟你说一个小秘密，你千万别告诉别人。", "--out", str(plain)).returncode == 0
    assert cli("say", "我跟你说一个小秘密，你千万别告诉别人。", "--style", "whisper", "--out", str(quiet)).returncode == 0
    a, sr = sf.read(quiet, dtype="float32")
    assert prosody.extract(a, sr).voiced_fraction < 0.1
    r = cli("listen", str(quiet), "--json", "--no-words", "--baseline", str(plain))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["whisper"] is True and out["source"] == "voice" and out["confidence"] <= 0.5
    assert out["features"]["voiced_fraction"] < 0.1 and out["baseline_turns"] == 1
    r = cli("listen", str(plain), "--no-words")
    assert r.returncode == 0 and "whisper" not in r.stdout
    # tags switch the style per clause and are never spoken
    both = tmp_path / "both.wav"
    assert cli("say", "[生气]你怎么又迟到了！[开心]不过我原谅你了。", "--out", str(both)).returncode == 0


def test_voices_personas_and_songs_are_listed_and_bad_songs_refused(tmp_path):
    """The listings, and clear refusals: lyrics that do not fit the melody, a song not in the songbook."""
    r = cli("voices", "--json")
    assert r.returncode == 0
    voices = {v["key"]: v for v in json.loads(r.stdout)}
    assert {"xiaonuan", "wukong", "tangseng", "daiyu", "narrator"} <= set(voices)
    assert "孙悟空" in voices["wukong"]["personas"]
    r = cli("personas", "--json")
    assert {"companion", "wukong", "tangseng", "daiyu", "storyteller", "tutor"} <= {p["key"] for p in json.loads(r.stdout)}
    mine = tmp_path / "mine.toml"
    mine.write_text('[[persona]]\nkey = "bajie"\nname = "猪八戒"\ndescription = "贪吃的二师兄"\nvoice = "tangseng"\n',
                    encoding="utf-8")
    r = cli("personas", "--file", str(mine))
    assert r.returncode == 0 and "猪八戒" in r.stdout
    r = cli("songs", "--json")
    assert {"两只老虎", "小星星", "生日快乐", "茉莉花", "新年好"} <= {s["title"] for s in json.loads(r.stdout)}
    r = cli("sing", "两只老虎", "--out", str(tmp_path / "bad.wav"), "--lyrics", "太短了")
    assert r.returncode == 2 and "needs 32 syllables" in r.stderr and "Traceback" not in r.stderr
    r = cli("sing", "青花瓷", "--out", str(tmp_path / "x.wav"))
    assert r.returncode == 2 and "not in the songbook" in r.stderr


@pytest.mark.slow
def test_sing_to_a_wav_with_its_notes_and_new_words(tmp_path):
    """A song sung to a WAV with its notes, in tune, to new lyrics that fit (one rendering: ~11 s each; the
    original words are sung in tune by test_singing)."""
    from tingshuo.audio.io import resample
    from tingshuo.audio.prosody import pitch_track

    out, notes = tmp_path / "tigers.wav", tmp_path / "notes.json"
    r = cli("sing", "两只老虎", "--out", str(out), "--voice", "wukong", "--notes", str(notes),
            "--lyrics", "天天加班，天天加班，真辛苦，真辛苦，一直坐到半夜，一直没有周末，好奇怪，好奇怪")
    assert r.returncode == 0 and "(new words)" in r.stdout, r.stderr
    a, sr = sf.read(out, dtype="float32")
    placed = json.loads(notes.read_text(encoding="utf-8"))
    assert len(placed) == 32 and abs(len(a) / sr - placed[-1]["onset_s"] - placed[-1]["duration_s"]) < 0.6
    tr = pitch_track(resample(a, sr, 16000), 16000)
    t, hz, ok = np.asarray(tr.timestamps), np.asarray(tr.pitch_hz), np.asarray(tr.confidence) >= 0.5
    assert "".join(n["syllable"] for n in placed[:4]) == "天天加班", placed[:4]
    n = placed[8]  # "真" of 真辛苦 (跑得快 in the original), the third degree: its vowel sits on the note
    sel = ok & (t >= n["onset_s"]) & (t < n["onset_s"] + n["duration_s"] - 0.03)
    assert np.mean(np.abs(1200 * np.log2(hz[sel] / n["hz"])) <= 50) >= 0.9


@pytest.mark.slow
def test_respond_json_reports_safety_and_care(tmp_path):
    """respond --text --json: a text turn answered (text → text), through the safety and care layer."""
    import re

    r = cli("respond", "--text", "我真的不想活了", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d["safety"]["category"] == "self_harm" and d["safety"]["action"] == "care" and d["care"] is True
    assert re.search(r"12356|82951332", d["reply_text"]), d["reply_text"]
    r = cli("respond", "--text", "What is the capital of France? Answer in one sentence.", "--json")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0 and "paris" in d["reply_text"].lower() and d["transcript"] is None
    assert d["safety"] == {"category": "none", "action": "allow"} and d["care"] is False


def test_search_add_and_query_the_local_index(tmp_path):
    """search add/query fill and ask the index (no model: BM25 over jieba-segmented text)."""
    import os

    note = tmp_path / "小区通知.md"
    note.write_text("# 小区通知\n本周六上午九点停水，周日恢复供水。", encoding="utf-8")
    env = {**os.environ, "TINGSHUO_SEARCH__INDEX_PATH": str(tmp_path / "index.sqlite")}
    add = subprocess.run([*TINGSHUO, "search", "add", str(note)], capture_output=True, text=True, env=env, timeout=120)
    assert add.returncode == 0 and "1 added" in add.stdout, add.stderr
    q = subprocess.run([*TINGSHUO, "search", "query", "什么时候停水", "--json"], capture_output=True, text=True,
                       env=env, timeout=120)
    hits = json.loads(q.stdout)
    assert hits and "停水" in hits[0]["snippet"] and hits[0]["source"] == "小区通知"
    bad = subprocess.run([*TINGSHUO, "search", "add", str(tmp_path / "missing.txt")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
