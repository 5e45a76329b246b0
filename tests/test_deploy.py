"""The deployment as shipped: compose.yaml, the nginx proxy config and the Dockerfile agree with each other and
with what this suite runs, and the remote-LLM path they configure works end to end — the session server's
settings read from compose.yaml's environment, the LLM served by the same ``tingshuo llm-server`` command on
loopback (``llama_cpp.server``), speech in and speech out through the Realtime API.

Docker itself is not available on CI machines; ``docker compose up --build`` was not run there (docs/deploy.md).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml

from conftest import ZH_CLIP, ZH_REF, llama_server_command
from realtime_client import until
from textmetrics import cer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def compose_settings(compose: dict, monkeypatch, **override: str | None):
    """The session server's Settings exactly as the container gets them (its environment)."""
    from tingshuo.config import Settings

    env = dict(compose["services"]["tingshuo"]["environment"])
    env.update(override)
    for k, v in env.items():
        if v is None:  # an override that removes the variable
            continue
        v = re.sub(r"\$\{TINGSHUO_API_KEY:\?[^}]*\}", "test-key", str(v))
        v = re.sub(r"\$\{TINGSHUO_DB_PASSWORD:-([^}]*)\}", r"\1", v)
        monkeypatch.setenv(k, v)
    return Settings()


def test_compose_proxy_and_image_agree(compose, monkeypatch):
    from tingshuo.server.app import check_bind

    services = compose["services"]
    assert set(services) == {"llm", "tingshuo", "db", "proxy"}
    llm_cmd = services["llm"]["command"]
    port = llm_cmd[llm_cmd.index("--port") + 1]
    # the LLM service runs the command CI runs on loopback (only the listen address differs)
    ci = llama_server_command(int(port))
    assert llm_cmd[:2] == ["tingshuo", "llm-server"] and ci[1:2] == ["llm-server"]
    assert [a for a in llm_cmd[2:] if a != "0.0.0.0"] == [a for a in ci[2:] if a != "127.0.0.1"]
    s = compose_settings(compose, monkeypatch)
    assert s.llm.backend == "openai" and s.llm.base_url == f"http://llm:{port}/v1"
    assert s.llm.model_name == "qwen-local"  # the alias tingshuo llm-server serves
    assert s.server.host == "0.0.0.0" and s.server.api_keys == ["test-key"] and check_bind(s) is None
    mount = services["tingshuo"]["volumes"][0].split(":")[1]
    # one store for every session server: the compose database service, kept audio on the shared volume
    assert s.store.url == "postgresql://tingshuo:tingshuo@db:5432/tingshuo"
    db = services["db"]
    assert db["environment"]["POSTGRES_USER"] == "tingshuo" and db["environment"]["POSTGRES_DB"] == "tingshuo"
    assert "service_healthy" == services["tingshuo"]["depends_on"]["db"]["condition"]
    assert str(s.audio_dir()).startswith(mount + "/")
    assert "[postgres]" in (ROOT / "Dockerfile").read_text()  # the image has the PostgreSQL driver
    assert "/healthz" in " ".join(services["tingshuo"]["healthcheck"]["test"])
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert f"server tingshuo:{s.server.port};" in nginx
    realtime = nginx[nginx.index("location /v1/realtime"):]
    for line in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $connection_upgrade;", "proxy_buffering off;"):
        assert line in realtime, line
    assert int(re.search(r"proxy_read_timeout (\d+)s;", realtime).group(1)) >= 3600
    dockerfile = (ROOT / "Dockerfile").read_text()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    version = re.search(r"^LLAMA_VERSION=(\S+)", setup, re.M).group(1)
    assert f"llama-cpp-python=={version}" in dockerfile and f'"llama-cpp-python=={version}"' in \
        (ROOT / "pyproject.toml").read_text()
    assert "tingshuo prepare" in dockerfile  # weights assembled at build time: containers need no network


@pytest.mark.slow
def test_remote_llm_speech_in_speech_out(compose, monkeypatch, llama_server, stack, recognizer, tmp_path):
    """The compose configuration with its LLM URL pointed at llama_cpp.server on loopback: the real loading
    code builds the remote LLM and the safety guard over it; a spoken Mandarin turn is answered in speech."""
    from starlette.testclient import TestClient

    from tingshuo.audio.io import float_to_pcm16, load_audio, pcm16_to_float, resample
    from tingshuo.engine.stack import ModelStack
    from tingshuo.llm.openai_compat import OpenAICompatChat
    from tingshuo.server.app import create_app

    s = compose_settings(compose, monkeypatch, TINGSHUO_LLM__BASE_URL=llama_server,
                         TINGSHUO_STORE__URL=None, TINGSHUO_STORE__PATH=str(tmp_path / "t.sqlite3"))
    s.server.allow_open, s.server.admit_queue_s = True, 0
    remote = ModelStack.load(s, asr=False, tts=False)
    assert isinstance(remote.llm, OpenAICompatChat) and remote.guard is not None
    remote.asr, remote.tts, remote.turn = stack.asr, stack.tts, stack.turn
    x = load_audio(ZH_CLIP, 16000)
    pcm = base64.b64encode(float_to_pcm16(resample(x, 16000, 24000)).tobytes()).decode()
    with TestClient(create_app(s, remote)) as tc:
        with tc.websocket_connect("/v1/realtime", headers={"Authorization": "Bearer test-key"}) as ws:
            assert ws.receive_json()["type"] == "session.created"
            ws.send_json({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
                "turn_detection": None, "transcription": {"model": "whisper-1"}}}}})
            until(ws, "session.updated")
            ws.send_json({"type": "input_audio_buffer.append", "audio": pcm})
            ws.send_json({"type": "input_audio_buffer.commit"})
            ws.send_json({"type": "response.create"})
            events = until(ws, "response.done", 240)
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert cer(ZH_REF, heard["transcript"]) <= 0.2, heard["transcript"]
    assert events[-1]["response"]["status"] == "completed", [e for e in events if e["type"] == "error"]
    audio = pcm16_to_float(b"".join(base64.b64decode(e["delta"]) for e in events
                                    if e["type"] == "response.output_audio.delta"))
    said = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert len(audio) > 24000 and len(said) >= 4, said
    assert cer(said, recognizer.transcribe(resample(audio, 24000, 16000), "zh").text) <= 0.35
