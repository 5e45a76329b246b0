"""What every ``tingshuo`` command shares: the Typer app, settings and model loading, one turn through a session.

Every user-facing failure (bad audio, missing model packages, a dead LLM endpoint) prints one clear line on
stderr and exits non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from tingshuo.assets import AssetError
from tingshuo.audio.io import AudioError, load_audio, write_wav
from tingshuo.config import load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="听说 tingshuo — offline spoken dialogue.")

EXIT_INPUT, EXIT_MODEL, EXIT_LLM, EXIT_NO_SPEECH = 2, 3, 4, 5

LlmUrl = Annotated[Optional[str], typer.Option("--llm-url", help="OpenAI-compatible base URL (switches llm.backend to 'openai')")]
LlmSpec = Annotated[Optional[str], typer.Option("--llm", help="backend and model in one: ollama:NAME (Ollama on "
                                                  "loopback), server:NAME@URL, or a bundled/pulled model name")]
LlmModel = Annotated[Optional[str], typer.Option("--llm-model", help="qwen2.5-coder-1.5b | qwen2.5-coder-0.5b (bundled), or a model from `tingshuo models pull`")]


def fail(msg: str, code: int) -> None:
    typer.secho(f"tingshuo: {msg}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def settings_from(llm_url: str | None = None, llm_model: str | None = None, *, llm: str | None = None,
                  **more: Any):
    """Settings from the config file and environment, then the command's flags. ``--llm`` names backend and model
    at once; ``--llm-url`` then overrides the URL it implies (Ollama on another host); ``--llm`` and
    ``--llm-model`` together are refused (two answers to one question)."""
    overrides: dict[str, Any] = {}
    if llm:
        if llm_model:
            fail("give --llm or --llm-model, not both", EXIT_INPUT)
        from tingshuo.llm.servers import parse_spec

        try:
            overrides.update(parse_spec(llm, ollama_url=load_settings().llm.ollama_url))
        except ValueError as e:
            fail(str(e), EXIT_INPUT)
    if llm_url:
        overrides["llm.backend"] = "openai"
        overrides["llm.base_url"] = llm_url
    if llm_model:
        overrides["llm.model"] = llm_model
    overrides.update(more)
    try:
        settings = load_settings(overrides)
    except Exception as e:  # pydantic ValidationError, a bad TOML file
        fail(f"invalid configuration: {e}", EXIT_INPUT)
        raise
    from tingshuo.store.privacy import configure

    configure(settings.store.log_user_text)  # logs carry no user text unless the settings say so
    return settings


def read_audio(path: Path, settings) -> np.ndarray:
    """A user's recording as 16 kHz mono; a file that cannot be one turn is a clear error, not a traceback."""
    try:
        return load_audio(path, max_seconds=settings.asr.max_seconds)
    except AudioError as e:
        fail(str(e), EXIT_INPUT)
        raise


def load_stack(settings, **need: bool):
    from tingshuo.engine import ModelStack

    try:
        return ModelStack.load(settings, **need)
    except (AssetError, FileNotFoundError) as e:
        fail(str(e), EXIT_MODEL)
    except ValueError as e:
        fail(str(e), EXIT_INPUT)


async def run_turn(session, *, audio: np.ndarray | None, text: str | None) -> dict[str, Any]:
    """Drive one turn through a session and gather its events into a result dict."""
    result: dict[str, Any] = {"transcript": None, "language": None, "reply_text": "", "timings_ms": {},
                              "errors": [], "audio": [], "sample_rate": None,
                              "safety": {"category": "none", "action": "allow"}, "care": False, "search": None}

    async def consume() -> None:
        async for ev in session.events():
            if ev.type == "transcript.final":
                result["transcript"], result["language"] = ev.text, ev.language
            elif ev.type == "reply.audio":
                result["audio"].append(ev.audio)
                result["sample_rate"] = ev.sample_rate
            elif ev.type == "response.done":
                result["reply_text"] = ev.text
                result["timings_ms"].update(ev.timings_ms)
                result["status"] = ev.status
            elif ev.type == "error":
                result["errors"].append({"code": ev.code, "message": ev.message})
            elif ev.type == "safety.verdict":
                if ev.source == "input":
                    result["safety"] = {"category": ev.category, "action": ev.action, "confidence": ev.confidence}
                else:
                    result.setdefault("blocked", []).append({"category": ev.category, "text": ev.text})
            elif ev.type == "search.done":
                result["search"] = {"query": ev.query, "provider": ev.provider, "results": ev.results, "error": ev.error}

    consumer = asyncio.create_task(consume())
    if text is not None:
        await session.push_text(text)
    else:
        assert audio is not None
        await session.push_utterance(audio)
    await session.wait_idle()
    result["care"] = session.care
    await session.close()
    await consumer
    return result


def require_speech(audio: np.ndarray) -> None:
    from tingshuo.audio.vad import NO_SPEECH_MESSAGE, has_speech

    if not has_speech(audio):
        fail(NO_SPEECH_MESSAGE, EXIT_NO_SPEECH)


def finish_turn(result: dict[str, Any], out: Path | None, as_json: bool) -> None:
    if out is not None and result["audio"]:
        write_wav(out, np.concatenate(result["audio"]), result["sample_rate"])
    errors = result["errors"]
    if as_json:
        payload = {k: result[k] for k in ("transcript", "language", "reply_text", "timings_ms", "safety", "care",
                                          "search")}
        if result.get("blocked"):
            payload["blocked"] = result["blocked"]
        if out is not None:
            payload["audio_file"] = str(out) if result["audio"] else None
        if errors:
            payload["errors"] = errors
        typer.echo(json.dumps(payload, ensure_ascii=False))
    else:
        if result["transcript"] is not None:
            typer.echo(f"you: {result['transcript']}")
        if result["reply_text"]:
            typer.echo(f"tingshuo: {result['reply_text']}")
        if out is not None and result["audio"]:
            typer.echo(f"(audio written to {out})", err=True)
    if errors:
        code = errors[0]["code"]
        exit_code = {"no_speech": EXIT_NO_SPEECH, "llm_failed": EXIT_LLM, "invalid_audio": EXIT_INPUT}.get(code, 1)
        fail(errors[0]["message"], exit_code)


def read_line() -> str | None:
    try:
        return input("you: ")
    except EOFError:
        return None


def player():
    """A blocking play(audio, rate) on the default output device, or None when there is none."""
    try:
        import sounddevice as sd

        sd.query_devices(kind="output")
    except Exception:
        return None

    def play(audio: np.ndarray, rate: int) -> None:
        sd.play(audio, rate, blocking=True)

    return play


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
