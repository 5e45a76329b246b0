"""One Realtime API connection: client events in, the engine's typed events out as protocol events.

The engine :class:`~tingshuo.engine.session.Session` does the listening, turn-taking, barge-in and speaking; this
class only translates. Client events are handled in arrival order; the ones that wait on models (a commit's
transcription, ``response.create`` after it) run as tasks so the socket keeps being read — a ``response.cancel``
must never queue behind the work it cancels. The conversation's items *are* the engine's history
(:class:`~tingshuo.dialogue.memory.Conversation` keeps an id per turn), so create/delete/truncate act on what the
LLM sees next.

Output is paced by the engine (real time, ``server.lead_ms`` ahead), so a barge-in stops the client's speaker
within that lead plus the network, and the engine knows what was heard even from clients that never send
``conversation.item.truncate``. Clients that do are honoured: the assistant turn is cut to their playback point.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tingshuo.audio.io import INPUT_RATE, StreamResampler, resample
from tingshuo.config import ServerConfig, Settings
from tingshuo.dialogue.memory import new_item_id
from tingshuo.dialogue.persona import PERSONAS, get_persona
from tingshuo.engine import events as E
from tingshuo.engine.session import ResponseOptions, Session
from tingshuo.engine.playout import heard_text
from tingshuo.engine.stack import ModelStack
from tingshuo.llm.base import Message
from tingshuo.server.protocol import (
    OPENAI_VOICES,
    ProtocolError,
    RealtimeConfig,
    bytes_per_second,
    decode_audio,
    encode_audio,
    event_name,
    format_rate,
)
from tingshuo.server.store import TranscriptStore
from tingshuo.tts import VoiceSettings

if TYPE_CHECKING:
    from tingshuo.server.metrics import Metrics

log = logging.getLogger("tingshuo.server")
_event_ids = itertools.count(1)
KEEP_AUDIO_RESPONSES = 32  # replies whose audio stays retrievable / truncatable
MIN_COMMIT_MS = 100
MAX_IDLE_PROMPTS = 2  # check-ins in a row without the user speaking (then wait quietly)
_IDLE_NOTE = {
    "zh": "用户已经有一会儿没说话了。用一句简短、温和的话问问用户还在不在，或者顺着刚才的话题轻轻接一句。",
    "en": "The user has been quiet for a while. In one short, gentle sentence, check whether they are still there "
          "or pick the last topic back up.",
}  # like OpenAI: "buffer too small. Expected at least 100ms of audio"


@dataclass
class _Out:
    """An assistant item being produced: what was sent, so truncate can map milliseconds to words."""

    rid: str
    item_id: str
    speak: bool
    fmt: str
    meta: dict[str, Any] = field(default_factory=dict)
    clauses: list[str] = field(default_factory=list)
    next_clause: int = 0
    transcript: list[str] = field(default_factory=list)
    audio: list[tuple[int, str]] = field(default_factory=list)  # (bytes, clause) per delta
    audio_bytes: bytearray = field(default_factory=bytearray)
    resampler: StreamResampler | None = None  # TTS rate → the client format's rate
    tts_rate: int = 0
    last_text: str = ""
    degraded: bool = False  # the voice failed: the rest comes as transcript text only


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


class RealtimeConnection:
    def __init__(self, stack: ModelStack, server: ServerConfig, send: Callable[[dict[str, Any]], Awaitable[None]], *,
                 beta: bool, store: TranscriptStore | None = None, model: str = "tingshuo",
                 client: str = "", key_label: str = "", audio_dir: Path | None = None,
                 metrics: "Metrics | None" = None, resume: dict[str, Any] | None = None) -> None:
        """``audio_dir``: where the audio of turns the recognizer failed on is kept. ``resume``: a stored session
        (``export_sessions`` form) this connection continues — same id, its turns back in the conversation."""
        self.stack, self.server, self._send, self.beta, self.store = stack, server, send, beta, store
        self.audio_dir, self.metrics = audio_dir, metrics
        self.id = resume["id"] if resume else f"sess_{secrets.token_hex(8)}"
        self.settings: Settings = stack.settings.model_copy(deep=True)
        self.settings.duplex.aec = server.aec
        self.settings.duplex.lead_ms = server.lead_ms
        persona = get_persona(self.settings.dialogue.persona)
        self.voices = self._voice_names()
        self.cfg = RealtimeConfig(model=model or "tingshuo",
                                  instructions=self.settings.dialogue.system_prompt or persona.system_prompt,
                                  voice=persona.voice or self.settings.tts.voice_zh, persona=persona.key)
        self.session = Session(stack, duplex=True, settings=self.settings, persona=persona.key)
        # the input audio buffer while turn detection is off (push-to-talk): frames at the client's rate, resampled
        # as one stream at commit
        self._buffer: list[tuple[np.ndarray, int]] = []
        self._buffer_s = 0.0
        self._input_ms = 0.0
        self._forced = False  # a commit forced by the utterance length limit is running
        self._announced: set[str] = set()  # user items already sent as conversation.item.added
        self._kinds: dict[str, str] = {}  # item id → "audio" | "text" (how its content was given)
        self._partial_sent: dict[str, str] = {}  # item id → transcript already sent as deltas
        self._user_audio: dict[str, np.ndarray] = {}  # item id → the user's audio (16 kHz), last replies only
        self._out: dict[str, _Out] = {}  # response id → output state (kept after done, for truncate/retrieve)
        self._by_item: dict[str, _Out] = {}
        self._active: str | None = None  # the in-progress response id
        self._pending: set[asyncio.Task[None]] = set()  # transcriptions that response.create must wait for
        self._tasks: set[asyncio.Task[None]] = set()
        self._meta_next: dict[str, Any] | None = None
        self._idle: asyncio.Task[None] | None = None  # server_vad idle_timeout_ms timer (after a reply)
        self._idle_prompts = 0
        self._pump: asyncio.Task[None] | None = None
        self._apply()
        if resume:
            self._restore(resume)
        if store is not None:
            store.open_session(self.id, client=client, key_label=key_label, config=self._wire_session())

    def _restore(self, stored: dict[str, Any]) -> None:
        """A session continued on this server (after a reconnect, maybe on another one): the store is the state."""
        conv = self.session.conversation
        for t in stored.get("turns", []):
            if t["role"] in ("user", "assistant") and t["text"]:
                conv.add(t["role"], t["text"], t["item_id"])
                self._kinds[t["item_id"]] = "audio" if str(t.get("source", "")).startswith("audio") else "text"
                self._announced.add(t["item_id"])

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.emit("session.created", session=self._wire_session())
        if self.beta:
            await self.emit("conversation.created", conversation={"id": f"conv_{self.id}", "object": "realtime.conversation"})
        self._pump = asyncio.create_task(self._pump_events())

    async def close(self) -> None:
        self._stop_idle()
        for t in [*self._tasks, *self._pending]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._pending, return_exceptions=True)
        await self.session.close()
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)
        if self.store is not None:
            self.store.close_session(self.id)

    async def emit(self, ga_type: str, **fields: Any) -> None:
        await self._send({"type": event_name(ga_type, self.beta), "event_id": f"event_{next(_event_ids)}", **fields})

    async def error(self, code: str, message: str, *, param: str | None = None, event_id: str | None = None,
                    error_type: str = "invalid_request_error") -> None:
        if self.metrics is not None:
            self.metrics.error(code)
        await self.emit("error", error={"type": error_type, "code": code, "message": message, "param": param,
                                        "event_id": event_id})

    # ------------------------------------------------------------------ client → server
    async def handle(self, raw: str | bytes) -> None:
        """One frame from the client. Nothing a client sends can end the session: every problem is an error event."""
        if isinstance(raw, (bytes, bytearray)):
            await self.error("invalid_event", "binary frames are not supported; send JSON text events")
            return
        if len(raw) > self.server.max_event_bytes:
            await self.error("event_too_large", f"the event is {len(raw) / 2**20:.1f} MiB; the limit is "
                             f"{self.server.max_event_bytes / 2**20:.0f} MiB per event (send audio in smaller appends)")
            return
        try:
            ev = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            await self.error("invalid_json", f"the event is not valid JSON: {e}")
            return
        if not isinstance(ev, dict) or not isinstance(ev.get("type"), str):
            await self.error("invalid_event", "an event must be a JSON object with a string 'type'")
            return
        eid = ev.get("event_id") if isinstance(ev.get("event_id"), str) else None
        if ev["type"] != "input_audio_buffer.append":
            self._stop_idle()  # the client is doing something: not idle
        handler = self._handlers().get(ev["type"])
        if handler is None:
            await self.error("unknown_event_type", f"unknown event type {ev['type']!r}", param="type", event_id=eid)
            return
        try:
            await handler(ev)
        except ProtocolError as e:
            await self.error(e.code, e.message, param=e.param, event_id=eid, error_type=e.error_type)
        except Exception as e:  # a bug must cost one event, not the call
            log.exception("handling %s failed", ev["type"])
            await self.error("server_error", f"{ev['type']} failed: {type(e).__name__}: {e}", event_id=eid,
                             error_type="server_error")

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[None]]]:
        return {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.retrieve": self._item_retrieve,
            "conversation.item.delete": self._item_delete,
            "conversation.item.truncate": self._item_truncate,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
            "output_audio_buffer.clear": self._output_clear,
        }

    def _spawn(self, coro: Awaitable[None], eid: str | None, *, pending: bool = False) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await coro
            except ProtocolError as e:
                await self.error(e.code, e.message, param=e.param, event_id=eid, error_type=e.error_type)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("background step failed")
                await self.error("server_error", f"{type(e).__name__}: {e}", event_id=eid, error_type="server_error")

        task = asyncio.create_task(guarded())
        bucket = self._pending if pending else self._tasks
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        return task

    # ---- session
    async def _session_update(self, ev: dict[str, Any]) -> None:
        s = ev.get("session")
        ext = s.get("tingshuo") if isinstance(s, dict) else None
        if isinstance(ext, dict) and ext.get("persona") not in (None, *PERSONAS):
            raise ProtocolError("invalid_value", f"unknown persona; available: {', '.join(PERSONAS)}",
                                "session.tingshuo.persona")
        old_persona = self.cfg.persona
        self.cfg.update(s, self.voices)  # type: ignore[arg-type]
        if self.cfg.persona != old_persona:
            p = get_persona(self.cfg.persona)
            self.session.set_persona(p.key, "session.update")
            if "instructions" not in s:  # type: ignore[operator]
                self.cfg.instructions = self.session.conversation.system_prompt
            if "voice" not in s:  # type: ignore[operator]
                self.cfg.voice = p.voice or self.settings.tts.voice_zh
        self._apply()
        await self.emit("session.updated", session=self._wire_session())

    def _apply(self) -> None:
        """The protocol configuration → the engine's."""
        td = self.cfg.turn_detection
        if td is not None and self.settings.turn.mode == "manual":
            self._buffer, self._buffer_s = [], 0.0  # push-to-talk audio not committed is dropped with the mode
        if td is None:
            self.session.set_turn_taking("manual", barge_in=True, auto_respond=False)
        else:
            self.session.set_turn_taking(td.type, eagerness=td.eagerness, silence_ms=td.silence_duration_ms,
                                         threshold=td.threshold, barge_in=td.interrupt_response,
                                         auto_respond=td.create_response)
        if self.session.conversation.system_prompt != self.cfg.instructions:
            self.session.set_instructions(self.cfg.instructions)
        self.session.voice = VoiceSettings(voice=self._engine_voice(self.cfg.voice), speed=self.cfg.speed)
        self.session.speak = self.cfg.speak

    def _voice_names(self) -> list[str]:
        tts = self.stack.tts
        if tts is None:
            return []
        from tingshuo.tts import VOICES

        try:
            return [*VOICES, *tts.backend("zh").voices()]  # character voices, then Kokoro's own tables
        except Exception:
            return list(VOICES)

    def _engine_voice(self, voice: str | None) -> str | None:
        if voice is None or voice in OPENAI_VOICES:
            return None  # an OpenAI voice name: our default voice reads it
        return voice

    def _wire_session(self) -> dict[str, Any]:
        extra = {"persona": self.cfg.persona, "personas": {k: p.name for k, p in PERSONAS.items()},
                 "voices": self.voices, "lead_ms": self.server.lead_ms}
        return self.cfg.to_wire(self.id, self.beta, extra)

    # ---- input audio
    async def _append(self, ev: dict[str, Any]) -> None:
        audio = ev.get("audio")
        if not isinstance(audio, str):
            raise ProtocolError("missing_field", "input_audio_buffer.append needs 'audio' (base64)", "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("invalid_audio", "'audio' is not valid base64", "audio") from None
        if not data:
            return
        x, rate = decode_audio(data, self.cfg.input_format)
        seconds = len(x) / rate
        if self.cfg.turn_detection is None:
            if self._buffer_s + seconds > self.server.max_input_buffer_s:
                raise ProtocolError("input_audio_buffer_full",
                                    f"the input audio buffer would hold {self._buffer_s + seconds:.0f} s; the limit is "
                                    f"{self.server.max_input_buffer_s:.0f} s. Commit or clear it first (the audio "
                                    "already in it is kept)", "audio")
            self._buffer.append((x, rate))
            self._buffer_s += seconds
        else:
            # at the client's rate: the session resamples its input as one stream (no click at frame edges)
            for i in range(0, len(x), rate):  # the engine takes ≤10 s per frame; yield between seconds
                await self.session.push_audio(x[i : i + rate], rate)
                if len(x) > rate:
                    await asyncio.sleep(0)
            open_s = self.session.open_utterance_s
            if open_s is not None and open_s > self.server.max_input_buffer_s and not self._forced:
                # a stream that never pauses (noise the VAD takes for speech, a monologue): answer what is there
                self._forced = True
                self._spawn(self._force_commit(), ev.get("event_id"), pending=True)
                await self.error("input_audio_buffer_full",
                                 f"{open_s:.0f} s of continuous speech: the turn was committed at the "
                                 f"{self.server.max_input_buffer_s:.0f} s limit", param="audio")
        self._input_ms += seconds * 1000

    async def _commit(self, ev: dict[str, Any]) -> None:
        eid = ev.get("event_id")
        self._idle_prompts = 0
        if self.cfg.turn_detection is not None:
            if self.session.open_utterance_s is None:
                raise ProtocolError("input_audio_buffer_commit_empty",
                                    "buffer too small: no speech is in progress (turn detection commits on its own)")
            self._spawn(self.session.commit(), eid, pending=True)
            return
        if self._buffer_s * 1000 < MIN_COMMIT_MS:
            raise ProtocolError("input_audio_buffer_commit_empty",
                                f"buffer too small: expected at least {MIN_COMMIT_MS} ms of audio, have "
                                f"{self._buffer_s * 1000:.0f} ms")
        r = StreamResampler(INPUT_RATE)
        audio = np.concatenate([r(x, rate) for x, rate in self._buffer] + [r.flush()])
        self._buffer, self._buffer_s = [], 0.0
        item_id = new_item_id()
        await self._announce_user(item_id, "audio", None)
        self._spawn(self.session.push_utterance(audio, INPUT_RATE, item_id), eid, pending=True)

    async def _force_commit(self) -> None:
        try:
            await self.session.commit()
        finally:
            self._forced = False

    async def _clear(self, ev: dict[str, Any]) -> None:
        self._buffer, self._buffer_s = [], 0.0
        self.session.clear_input()
        await self.emit("input_audio_buffer.cleared")

    # ---- conversation items
    def _previous(self, item_id: str) -> str | None:
        ids = self.session.conversation.ids
        if item_id in ids:
            i = ids.index(item_id)
            return ids[i - 1] if i > 0 else None
        return ids[-1] if ids else None

    async def _announce_user(self, item_id: str, kind: str, transcript: str | None) -> None:
        """input_audio_buffer.committed + the user item (its transcript may follow later)."""
        if item_id in self._announced:
            return
        self._announced.add(item_id)
        self._kinds[item_id] = kind
        prev = self._previous(item_id)
        await self.emit("input_audio_buffer.committed", item_id=item_id, previous_item_id=prev)
        item = self._item(item_id, "user", transcript, "completed")
        await self.emit("conversation.item.added", previous_item_id=prev, item=item)

    def _item(self, item_id: str, role: str, text: str | None, status: str) -> dict[str, Any]:
        kind = self._kinds.get(item_id, "text")
        if role == "assistant":
            if kind == "audio":
                part: dict[str, Any] = {"type": "audio" if self.beta else "output_audio", "transcript": text}
            else:
                part = {"type": "text" if self.beta else "output_text", "text": text}
        elif kind == "audio":
            part = {"type": "input_audio", "transcript": text}
        else:
            part = {"type": "input_text", "text": text}
        return {"id": item_id, "object": "realtime.item", "type": "message", "role": role, "status": status,
                "content": [part]}

    async def _item_create(self, ev: dict[str, Any]) -> None:
        item = ev.get("item")
        if not isinstance(item, dict):
            raise ProtocolError("missing_field", "conversation.item.create needs an 'item' object", "item")
        if item.get("type", "message") != "message":
            raise ProtocolError("unsupported", f"item type {item.get('type')!r} is not supported yet (tools are not)",
                                "item.type")
        role = item.get("role")
        if role not in ("user", "assistant", "system"):
            raise ProtocolError("invalid_value", "item.role must be user, assistant or system", "item.role")
        if role == "user":
            self._idle_prompts = 0
        prev = ev.get("previous_item_id")
        conv = self.session.conversation
        if prev is not None and prev != "root" and prev not in conv.ids:
            raise ProtocolError("item_not_found", f"previous_item_id {prev!r} is not in the conversation",
                                "previous_item_id")
        item_id = item.get("id") or new_item_id()
        if not isinstance(item_id, str) or item_id in conv.ids:
            raise ProtocolError("duplicate_item_id", f"an item with id {item_id!r} already exists", "item.id")
        text, audio = self._content(item.get("content"))
        if audio is not None and text is None:
            # a spoken user message without a transcript: transcribe it first (response.create waits for this)
            self._spawn(self._create_from_audio(item_id, role, audio, prev, ev.get("event_id")), ev.get("event_id"),
                        pending=True)
            return
        await self._add_item(item_id, role, text or "", "audio" if audio is not None else "text", prev)

    async def _create_from_audio(self, item_id: str, role: str, audio: np.ndarray, prev: str | None,
                                 eid: str | None) -> None:
        t = await self.session.transcribe(audio, INPUT_RATE)
        if t is None:
            raise ProtocolError("no_speech", "no words were recognized in the item's audio", "item.content")
        await self._add_item(item_id, role, t.text, "audio", prev)

    async def _add_item(self, item_id: str, role: str, text: str, kind: str, prev: str | None) -> None:
        self.session.conversation.add(role, text, item_id, after=prev)
        self._kinds[item_id] = kind
        self._announced.add(item_id)
        item = self._item(item_id, role, text, "completed")
        previous = self._previous(item_id)
        await self.emit("conversation.item.added", previous_item_id=previous, item=item)
        if not self.beta:
            await self.emit("conversation.item.done", previous_item_id=previous, item=item)
        if self.store is not None:
            self.store.add_turn(self.id, item_id, role, text, source=f"item.create/{kind}")

    def _content(self, content: Any) -> tuple[str | None, np.ndarray | None]:
        if not isinstance(content, list) or not content:
            raise ProtocolError("missing_field", "item.content must be a non-empty list", "item.content")
        texts: list[str] = []
        audio: np.ndarray | None = None
        for i, part in enumerate(content):
            if not isinstance(part, dict):
                raise ProtocolError("invalid_type", "each content part must be an object", f"item.content[{i}]")
            kind = part.get("type")
            if kind in ("input_text", "text", "output_text"):
                if not isinstance(part.get("text"), str):
                    raise ProtocolError("missing_field", "a text part needs 'text'", f"item.content[{i}].text")
                texts.append(part["text"])
            elif kind in ("input_audio", "audio", "output_audio"):
                if isinstance(part.get("transcript"), str) and part["transcript"]:
                    texts.append(part["transcript"])
                elif isinstance(part.get("audio"), str):
                    try:
                        data = base64.b64decode(part["audio"], validate=True)
                    except (binascii.Error, ValueError):
                        raise ProtocolError("invalid_audio", "the part's audio is not valid base64",
                                            f"item.content[{i}].audio") from None
                    x, rate = decode_audio(data, self.cfg.input_format)
                    audio = resample(x, rate, INPUT_RATE)
                else:
                    raise ProtocolError("missing_field", "an audio part needs 'audio' or 'transcript'",
                                        f"item.content[{i}]")
            else:
                raise ProtocolError("unsupported", f"content type {kind!r} is not supported", f"item.content[{i}].type")
        return ("".join(texts) if texts else None), audio

    def _find(self, ev: dict[str, Any]) -> str:
        item_id = ev.get("item_id")
        if not isinstance(item_id, str) or item_id not in self.session.conversation.ids:
            raise ProtocolError("item_not_found", f"no item with id {item_id!r} in the conversation", "item_id")
        return item_id

    async def _item_retrieve(self, ev: dict[str, Any]) -> None:
        out = self._by_item.get(ev["item_id"]) if isinstance(ev.get("item_id"), str) else None
        if out is not None and out.rid == self._active:
            raise ProtocolError("item_in_progress", "the item is still being generated", "item_id")
        item_id = self._find(ev)
        msg = self.session.conversation.get(item_id)
        item = self._item(item_id, msg["role"], msg["content"], "completed")
        if out is not None and out.speak and out.audio_bytes:
            item["content"][0]["audio"] = _b64(bytes(out.audio_bytes))
        elif item_id in self._user_audio:  # what the user said, in the session's input format
            x = resample(self._user_audio[item_id], INPUT_RATE, format_rate(self.cfg.input_format))
            item["content"][0]["audio"] = _b64(encode_audio(x, self.cfg.input_format))
        await self.emit("conversation.item.retrieved", item=item)

    async def _item_delete(self, ev: dict[str, Any]) -> None:
        out = self._by_item.get(ev["item_id"]) if isinstance(ev.get("item_id"), str) else None
        if out is not None and out.rid == self._active:
            await self._cancel_active()
        item_id = self._find(ev)
        self.session.conversation.remove(item_id)
        if self.store is not None:
            self.store.mark_deleted(self.id, item_id)
        await self.emit("conversation.item.deleted", item_id=item_id)

    async def _item_truncate(self, ev: dict[str, Any]) -> None:
        item_id = ev.get("item_id")
        out = self._by_item.get(item_id) if isinstance(item_id, str) else None
        if out is None:
            raise ProtocolError("item_not_found", f"no assistant audio item with id {item_id!r}", "item_id")
        end = ev.get("audio_end_ms")
        if not isinstance(end, (int, float)) or end < 0:
            raise ProtocolError("invalid_value", "audio_end_ms must be a non-negative number", "audio_end_ms")
        if ev.get("content_index", 0) != 0:
            raise ProtocolError("invalid_value", "content_index must be 0", "content_index")
        if not out.speak:
            raise ProtocolError("invalid_value", f"{item_id!r} is a text reply; only audio can be truncated", "item_id")
        if not out.audio and out.rid != self._active:
            raise ProtocolError("item_audio_expired", f"the audio of {item_id!r} is no longer kept (only the last "
                                f"{KEEP_AUDIO_RESPONSES} replies are)", "item_id")
        total_ms = len(out.audio_bytes) * 1000 / bytes_per_second(out.fmt)
        if end > total_ms + 1:
            raise ProtocolError("invalid_value", f"audio_end_ms {end} is beyond the item's audio ({total_ms:.0f} ms)",
                                "audio_end_ms")
        if out.rid == self._active:
            await self._cancel_active()  # the client stopped playing it: the response is over
        heard = self._heard_text(out, float(end))
        conv = self.session.conversation
        if item_id in conv.ids:
            conv.set_text(item_id, heard)
        elif heard:
            conv.add("assistant", heard, item_id)
        if self.store is not None:
            self.store.update_text(self.id, item_id, heard, truncated_ms=float(end))
        await self.emit("conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=int(end))

    def _heard_text(self, out: _Out, end_ms: float) -> str:
        """The words in the first ``end_ms`` of the item's audio: whole clauses, and the share of the clause
        being spoken, marked "…" (what a listener heard of it; the unheard rest leaves the history)."""
        bps = bytes_per_second(out.fmt)
        spans: list[tuple[str, float, float]] = []  # (clause, start s, end s) in send order
        pos = 0.0
        for n, text in out.audio:
            dur = n / bps
            if spans and spans[-1][0] == text:
                spans[-1] = (text, spans[-1][1], pos + dur)
            else:
                spans.append((text, pos, pos + dur))
            pos += dur
        return heard_text(spans, end_ms / 1000).strip()

    # ---- responses
    async def _response_create(self, ev: dict[str, Any]) -> None:
        if self._active is not None:
            raise ProtocolError("conversation_already_has_active_response",
                                f"response {self._active} is still in progress; cancel it first")
        spec = ev.get("response") or {}
        if not isinstance(spec, dict):
            raise ProtocolError("invalid_type", "response must be an object", "response")
        opts = ResponseOptions()
        if isinstance(spec.get("instructions"), str) and spec["instructions"]:
            opts.instructions = spec["instructions"]
        mods = spec.get("output_modalities", spec.get("modalities"))
        if mods is not None:
            if not isinstance(mods, list) or not mods or any(m not in ("text", "audio") for m in mods):
                raise ProtocolError("invalid_value", "output_modalities must be ['audio'] or ['text']",
                                    "response.output_modalities")
            opts.speak = "audio" in mods
        audio_out = (spec.get("audio") or {}).get("output") or {}
        voice = audio_out.get("voice", spec.get("voice"))
        if voice is not None:
            if not isinstance(voice, str) or (voice not in self.voices and voice not in OPENAI_VOICES):
                raise ProtocolError("invalid_value", f"unknown voice {voice!r}", "response.voice")
            opts.voice = VoiceSettings(voice=self._engine_voice(voice), speed=self.cfg.speed)
        mot = spec.get("max_output_tokens", spec.get("max_response_output_tokens", self.cfg.max_output_tokens))
        if isinstance(mot, int):
            opts.max_tokens = max(1, min(mot, 4096))
        if spec.get("conversation") not in (None, "auto", "none"):
            raise ProtocolError("invalid_value", "conversation must be 'auto' or 'none'", "response.conversation")
        opts.record = spec.get("conversation") != "none"
        if spec.get("input") is not None:
            opts.history = self._input_items(spec["input"])
        ext = spec.get("tingshuo") or {}
        if isinstance(ext, dict) and ext.get("greeting"):
            opts.fixed = self.session.persona.greeting
        meta = {"metadata": spec.get("metadata"), "conversation_id": f"conv_{self.id}" if opts.record else None,
                "output_modalities": ["audio"] if (self.cfg.speak if opts.speak is None else opts.speak) else ["text"],
                "voice": voice or self.cfg.voice}
        self._spawn(self._respond_after_pending(opts, meta), ev.get("event_id"))

    async def _respond_after_pending(self, opts: ResponseOptions, meta: dict[str, Any]) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        self._meta_next = meta
        await self.session.respond(opts)

    def _input_items(self, items: Any) -> list[Message]:
        if not isinstance(items, list):
            raise ProtocolError("invalid_type", "response.input must be a list of items", "response.input")
        msgs: list[Message] = []
        conv = self.session.conversation
        for i, it in enumerate(items):
            if not isinstance(it, dict):
                raise ProtocolError("invalid_type", "each input entry must be an object", f"response.input[{i}]")
            if it.get("type") == "item_reference":
                if it.get("id") not in conv.ids:
                    raise ProtocolError("item_not_found", f"no item {it.get('id')!r}", f"response.input[{i}].id")
                msgs.append(dict(conv.get(it["id"])))  # type: ignore[arg-type]
                continue
            role = it.get("role")
            if role not in ("user", "assistant", "system"):
                raise ProtocolError("invalid_value", "input items need a role", f"response.input[{i}].role")
            text, audio = self._content(it.get("content"))
            if text is None:
                raise ProtocolError("unsupported", "out-of-band audio input needs a transcript",
                                    f"response.input[{i}].content")
            msgs.append({"role": role, "content": text})  # type: ignore[typeddict-item]
        return msgs

    async def _response_cancel(self, ev: dict[str, Any]) -> None:
        rid = ev.get("response_id")
        if self._active is None:
            raise ProtocolError("response_cancel_not_active", "there is no response in progress to cancel")
        if rid is not None and rid != self._active:
            raise ProtocolError("response_not_found", f"response {rid!r} is not in progress", "response_id")
        await self._cancel_active()

    async def _cancel_active(self) -> None:
        """Cancel the response in progress and wait until it is over, so a ``response.create`` right behind the
        cancel is not refused as concurrent (its ``response.done`` may still be on its way to the client)."""
        await self.session.cancel()
        self._active = None

    async def _output_clear(self, ev: dict[str, Any]) -> None:
        rid = self._active
        if rid is not None:
            await self._cancel_active()
        await self.emit("output_audio_buffer.cleared", response_id=rid)

    # ------------------------------------------------------------------ idle check-in (server_vad idle_timeout_ms)
    def _stop_idle(self) -> None:
        if self._idle is not None and not self._idle.done():
            self._idle.cancel()
        self._idle = None

    def _start_idle(self) -> None:
        td = self.cfg.turn_detection
        self._stop_idle()
        if td is None or td.type != "server_vad" or not td.idle_timeout_ms or self._idle_prompts >= MAX_IDLE_PROMPTS:
            return
        self._idle = asyncio.create_task(self._idle_wait(td.idle_timeout_ms))

    async def _idle_wait(self, ms: int) -> None:
        """Silence since the reply ended: say so (``input_audio_buffer.timeout_triggered``) and check in."""
        await asyncio.sleep(ms / 1000)
        if self._active is not None or self.session.open_utterance_s is not None:
            return
        self._idle_prompts += 1
        end = int(self._input_ms)
        await self.emit("input_audio_buffer.timeout_triggered", audio_start_ms=max(0, end - ms), audio_end_ms=end,
                        item_id=new_item_id())
        lang = self.session.conversation_language()
        note = _IDLE_NOTE.get(lang, _IDLE_NOTE["en"])
        self._meta_next = {"metadata": {"tingshuo_reason": "idle_timeout"}}
        self._idle = None  # this task must not be cancelled by the response it starts
        await self.session.respond(ResponseOptions(instructions=f"{self.cfg.instructions}\n{note}"))

    # ------------------------------------------------------------------ engine → client
    async def _pump_events(self) -> None:
        async for ev in self.session.events():
            if self.metrics is not None:
                self.metrics.on_event(ev)
            try:
                await self._on_event(ev)
            except Exception:  # never lose the stream over one event
                log.exception("forwarding %s failed", ev.type)

    async def _on_event(self, ev: E.Event) -> None:
        handler = self._HANDLERS.get(type(ev))
        if handler is not None:
            await handler(self, ev)

    async def _on_speech_started(self, ev: E.SpeechStarted) -> None:
        td = self.cfg.turn_detection
        self._stop_idle()
        self._idle_prompts = 0
        if td is not None:
            await self.emit("input_audio_buffer.speech_started", audio_start_ms=int(ev.at_ms), item_id=ev.item_id)

    async def _on_speech_stopped(self, ev: E.SpeechStopped) -> None:
        td = self.cfg.turn_detection
        if td is not None:
            await self.emit("input_audio_buffer.speech_stopped", audio_end_ms=int(ev.at_ms), item_id=ev.item_id)

    async def _on_transcript_partial(self, ev: E.TranscriptPartial) -> None:
        if self.cfg.transcription is not None:
            await self.emit("tingshuo.input_audio_transcription.partial", item_id=ev.item_id, transcript=ev.text)
            # The standard event is append-only: send what extends the text already sent; a partial that
            # revises earlier words (Whisper re-decodes the whole utterance) waits for the final transcript.
            sent = self._partial_sent.get(ev.item_id, "")
            text = ev.text.rstrip("。.，,！!？?")
            if text.startswith(sent) and len(text) > len(sent):
                self._partial_sent[ev.item_id] = text
                await self.emit("conversation.item.input_audio_transcription.delta", item_id=ev.item_id,
                                content_index=0, delta=text[len(sent):])

    async def _on_transcript_final(self, ev: E.TranscriptFinal) -> None:
        self._partial_sent.pop(ev.item_id, None)
        await self._announce_user(ev.item_id, "audio", ev.text)
        if ev.audio is not None:
            self._user_audio[ev.item_id] = ev.audio
            for old in list(self._user_audio)[:-KEEP_AUDIO_RESPONSES]:
                del self._user_audio[old]
        if self.cfg.transcription is not None:
            await self.emit("conversation.item.input_audio_transcription.completed", item_id=ev.item_id,
                            content_index=0, transcript=ev.text,
                            tingshuo={"language": ev.language, "audio_seconds": round(ev.audio_seconds, 2),
                                      "emotion": None})
        if not self.beta:
            await self.emit("conversation.item.done", previous_item_id=self._previous(ev.item_id),
                            item=self._item(ev.item_id, "user", ev.text, "completed"))
        if self.store is not None:
            self.store.add_turn(self.id, ev.item_id, "user", ev.text, language=ev.language,
                                source="audio", audio_s=ev.audio_seconds)

    async def _on_unheard_turn(self, ev: E.UnheardTurn) -> None:
        # the recognizer failed: the turn is still a conversation item, and its audio is kept
        await self._announce_user(ev.item_id, "audio", None)
        path = await asyncio.to_thread(self._keep_audio, ev.item_id, ev.audio)
        if self.store is not None:
            self.store.add_turn(self.id, ev.item_id, "user", "", source="audio/unheard", audio_s=ev.audio_seconds,
                                audio_path=path)

    async def _on_speech_degraded(self, ev: E.SpeechDegraded) -> None:
        out = self._out.get(ev.response_id)
        if out is not None and out.speak and not out.degraded:
            out.degraded = True
            out.transcript.append(ev.text)
            await self._delta("response.output_audio_transcript.delta", out, delta=ev.text)

    async def _on_paralinguistics(self, ev: E.Paralinguistics) -> None:
        # after the transcript: how the turn was said (extension event; docs/emotion.md)
        await self.emit("tingshuo.paralinguistics", item_id=ev.item_id, emotion=ev.details)
        if self.store is not None:
            self.store.set_emotion(self.id, ev.item_id, ev.details)

    async def _on_voice_changed(self, ev: E.VoiceChanged) -> None:
        await self.emit("tingshuo.voice.changed", state=ev.state, request=ev.request)

    async def _on_persona_changed(self, ev: E.PersonaChanged) -> None:
        # a role entered or left by asking ("你当孙悟空跟我说话"): the session's persona, prompt and voice follow
        self.cfg.persona = ev.persona
        self.cfg.instructions = self.session.conversation.system_prompt
        self.cfg.voice = ev.voice or self.settings.tts.voice_zh
        await self.emit("tingshuo.persona.changed", persona=ev.persona, name=ev.name, voice=ev.voice,
                        request=ev.request)

    async def _on_safety_verdict(self, ev: E.SafetyVerdict) -> None:
        # refused, care or a blocked clause: told to the client and kept in the deployer's risk log
        await self.emit("tingshuo.safety", item_id=ev.item_id, source=ev.source, category=ev.category,
                        action=ev.action, confidence=ev.confidence)
        if self.store is not None:
            self.store.add_risk(self.id, ev.item_id, ev.source, ev.category, ev.action, ev.confidence, ev.text)

    async def _on_care_changed(self, ev: E.CareChanged) -> None:
        await self.emit("tingshuo.care.changed", on=ev.on, reason=ev.reason, hotlines=ev.hotlines)

    async def _on_search_done(self, ev: E.SearchDone) -> None:
        await self.emit("tingshuo.search", response_id=ev.response_id, query=ev.query, provider=ev.provider,
                        results=ev.results, error=ev.error)

    async def _on_turn_detected(self, ev: E.TurnDetected) -> None:
        await self.emit("tingshuo.turn.detected", p_audio=ev.p_audio, p_text=ev.p_text, waited_ms=ev.waited_ms)

    async def _on_response_started(self, ev: E.ResponseStarted) -> None:
        await self._response_started(ev)

    async def _on_reply_text_delta(self, ev: E.ReplyTextDelta) -> None:
        out = self._out.get(ev.response_id)
        if out is not None and not out.speak:
            out.transcript.append(ev.text)
            await self._delta("response.output_text.delta", out, delta=ev.text)

    async def _on_reply_clause(self, ev: E.ReplyClause) -> None:
        out = self._out.get(ev.response_id)
        if out is not None and out.degraded:  # no audio will carry it: the text goes out now
            out.transcript.append(ev.text)
            await self._delta("response.output_audio_transcript.delta", out, delta=ev.text)
        elif out is not None:
            out.clauses.append(ev.text)
        if ev.speaker or ev.sung:  # who says a story line, or a sung phrase (captions, karaoke)
            await self.emit("tingshuo.reply.clause", response_id=ev.response_id, text=ev.text, style=ev.style,
                            speaker=ev.speaker, voice=ev.voice, sung=ev.sung)

    async def _on_audio_chunk(self, ev: E.AudioChunk) -> None:
        await self._audio(ev)

    async def _on_response_done(self, ev: E.ResponseDone) -> None:
        await self._response_done(ev)

    async def _on_playback_paused(self, ev: E.PlaybackPaused) -> None:
        await self.emit("tingshuo.playback.paused", response_id=ev.response_id, heard_ms=ev.heard_ms)

    async def _on_playback_resumed(self, ev: E.PlaybackResumed) -> None:
        await self.emit("tingshuo.playback.resumed", response_id=ev.response_id)

    async def _on_backchannel(self, ev: E.Backchannel) -> None:
        await self.emit("tingshuo.backchannel", text=ev.text)

    async def _on_error_event(self, ev: E.ErrorEvent) -> None:
        td = self.cfg.turn_detection
        if ev.item_id and ev.code in ("no_speech", "invalid_audio", "asr_failed"):
            if ev.item_id in self._announced:
                await self.emit("conversation.item.input_audio_transcription.failed", item_id=ev.item_id,
                                content_index=0, error={"type": "transcription_error", "code": ev.code,
                                                        "message": ev.message})
                if ev.code != "asr_failed":
                    return  # the client's audio held no words; a crashed recognizer is also a server error
            if ev.code == "no_speech" and td is not None:
                return  # the VAD heard a noise that held no words: not the client's error, nothing to commit
        server_side = ev.code in ("internal_error", "response_failed", "asr_failed", "llm_failed", "tts_failed")
        await self.error(ev.code, ev.message, error_type="server_error" if server_side else "invalid_request_error")

    async def _on_pronunciation_report(self, ev: E.PronunciationReport) -> None:
        # the tutor's reading of a spoken English turn, sound by sound (extension event; docs/realtime.md)
        await self.emit("tingshuo.pronunciation", item_id=ev.item_id, expected=ev.expected, score=ev.score,
                        feedback=ev.feedback, words=ev.words)

    # engine event type → its handler: the protocol events it becomes (tests/test_protocol.py checks that every
    # engine event type has one, so a new event cannot be dropped on the way to the client without a decision)
    _HANDLERS: dict[type, Callable[["RealtimeConnection", Any], Awaitable[None]]] = {
        E.SpeechStarted: _on_speech_started,
        E.SpeechStopped: _on_speech_stopped,
        E.TranscriptPartial: _on_transcript_partial,
        E.TranscriptFinal: _on_transcript_final,
        E.UnheardTurn: _on_unheard_turn,
        E.SpeechDegraded: _on_speech_degraded,
        E.Paralinguistics: _on_paralinguistics,
        E.VoiceChanged: _on_voice_changed,
        E.PersonaChanged: _on_persona_changed,
        E.SafetyVerdict: _on_safety_verdict,
        E.CareChanged: _on_care_changed,
        E.SearchDone: _on_search_done,
        E.TurnDetected: _on_turn_detected,
        E.ResponseStarted: _on_response_started,
        E.ReplyTextDelta: _on_reply_text_delta,
        E.ReplyClause: _on_reply_clause,
        E.AudioChunk: _on_audio_chunk,
        E.ResponseDone: _on_response_done,
        E.PlaybackPaused: _on_playback_paused,
        E.PlaybackResumed: _on_playback_resumed,
        E.Backchannel: _on_backchannel,
        E.ErrorEvent: _on_error_event,
        E.PronunciationReport: _on_pronunciation_report,
    }

    def _keep_audio(self, item_id: str, audio: np.ndarray) -> str | None:
        """Write an unheard turn's audio (16 kHz WAV) next to the store; its path goes into the turn's row."""
        if self.audio_dir is None:
            return None
        import soundfile as sf

        path = self.audio_dir / self.id / f"{item_id}.wav"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio, INPUT_RATE, subtype="PCM_16")
        except OSError as e:
            log.error("could not keep the audio of %s: %s", item_id, e)
            return None
        return str(path)

    async def _delta(self, ga_type: str, out: _Out, **fields: Any) -> None:
        await self.emit(ga_type, response_id=out.rid, item_id=out.item_id, output_index=0, content_index=0, **fields)

    def _response_obj(self, out: _Out, status: str, output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        r: dict[str, Any] = {"id": out.rid, "object": "realtime.response", "status": status, "output": output,
                             "conversation_id": out.meta.get("conversation_id"), "metadata": out.meta.get("metadata"),
                             "max_output_tokens": self.cfg.max_output_tokens, **extra}
        mods = out.meta.get("output_modalities", ["audio"] if out.speak else ["text"])
        fmt = out.fmt
        if self.beta:
            r.update(modalities=["text", "audio"] if out.speak else ["text"], voice=out.meta.get("voice"),
                     output_audio_format=fmt)
        else:
            r.update(output_modalities=mods,
                     audio={"output": {"format": self.cfg.wire_format(fmt), "voice": out.meta.get("voice")}})
        return r

    async def _response_started(self, ev: E.ResponseStarted) -> None:
        meta, self._meta_next = (self._meta_next or {}), None
        meta.setdefault("conversation_id", f"conv_{self.id}")
        meta.setdefault("voice", self.cfg.voice)
        out = _Out(ev.response_id, ev.item_id, ev.speak, self.cfg.output_format, meta)
        tts_rate = self.stack.tts.sample_rate if self.stack.tts else format_rate(out.fmt)
        if ev.speak and tts_rate != format_rate(out.fmt):
            out.resampler, out.tts_rate = StreamResampler(format_rate(out.fmt)), tts_rate
        self._out[out.rid] = out
        self._by_item[out.item_id] = out
        for old in list(self._out.values())[:-KEEP_AUDIO_RESPONSES]:
            old.audio_bytes = bytearray()  # a long call must not keep every reply's audio (~48 kB/s) forever
            old.audio = []
        self._kinds[out.item_id] = "audio" if ev.speak else "text"
        self._active = out.rid
        vs, plan = self.session.voice_state, self.session.plan
        last = self.session.emotions.last
        style = {"voice": self.session.voice.voice or self.cfg.voice, "speed": round(self.session.voice.speed * vs.speed, 3),
                 "persona": self.cfg.persona, "emotion": plan.style or vs.style or ("whisper" if vs.whisper else None),
                 "reason": plan.reason or None, "user_emotion": last.label if last else None,
                 "voice_state": {"speed": vs.speed, "volume": vs.volume, "pitch": vs.pitch, "whisper": vs.whisper,
                                 "style": vs.style, "dialect": vs.dialect}}
        await self.emit("response.created", response=self._response_obj(out, "in_progress", []),
                        tingshuo={"style": style})
        item = self._item(out.item_id, "assistant", None, "in_progress")
        item["content"] = []
        await self.emit("response.output_item.added", response_id=out.rid, output_index=0, item=item)
        await self.emit("conversation.item.added", previous_item_id=self._previous(out.item_id), item=item)
        part = self._item(out.item_id, "assistant", "", "in_progress")["content"][0]
        await self.emit("response.content_part.added", response_id=out.rid, item_id=out.item_id, output_index=0,
                        content_index=0, part=part)

    async def _audio(self, ev: E.AudioChunk) -> None:
        out = self._out.get(ev.response_id)
        if out is None or not out.speak:
            return
        if ev.text != out.last_text:
            # one transcript delta per clause, sent as its audio starts (captions follow the voice, not the LLM)
            if out.next_clause < len(out.clauses) and ev.text == out.clauses[out.next_clause]:
                out.next_clause += 1
                out.transcript.append(ev.text)
                await self._delta("response.output_audio_transcript.delta", out, delta=ev.text)
            elif ev.text not in out.clauses and ev.text not in out.transcript:  # the "嗯，" acknowledgement
                out.transcript.append(ev.text)
                await self._delta("response.output_audio_transcript.delta", out, delta=ev.text)
            out.last_text = ev.text
        x = ev.audio
        if out.resampler is not None:
            x = out.resampler(x, out.tts_rate)
        data = encode_audio(x, out.fmt)
        if not data:
            return
        out.audio.append((len(data), ev.text))
        out.audio_bytes.extend(data)
        await self._delta("response.output_audio.delta", out, delta=_b64(data))

    async def _response_done(self, ev: E.ResponseDone) -> None:
        out = self._out.get(ev.response_id)
        if out is None:
            return
        if self._active == out.rid:
            self._active = None
        conv = self.session.conversation
        kept = conv.get(out.item_id)["content"] if out.item_id in conv.ids else (ev.heard_text or "")
        if ev.status == "completed":
            kept = "".join(out.transcript) if out.speak and out.transcript else ev.text
        elif ev.status == "failed" and out.transcript:
            kept = "".join(out.transcript)  # what was sent, the failure notice included
        status_item = "completed" if ev.status == "completed" else "incomplete"
        if out.speak:
            await self._delta("response.output_audio.done", out)
            await self._delta("response.output_audio_transcript.done", out, transcript=kept)
        else:
            await self._delta("response.output_text.done", out, text=kept if ev.status != "completed" else ev.text)
        item = self._item(out.item_id, "assistant", kept if out.speak else (ev.text if ev.status == "completed" else kept),
                          status_item)
        await self.emit("response.content_part.done", response_id=out.rid, item_id=out.item_id, output_index=0,
                        content_index=0, part=item["content"][0])
        await self.emit("response.output_item.done", response_id=out.rid, output_index=0, item=item)
        if not self.beta:
            await self.emit("conversation.item.done", previous_item_id=self._previous(out.item_id), item=item)
        details: dict[str, Any] | None = None
        if ev.status == "cancelled":
            details = {"type": "cancelled", "reason": "turn_detected" if ev.heard_text is not None else "client_cancelled"}
        elif ev.status == "failed":
            details = {"type": "failed", "error": {"type": "server_error", "code": "response_failed"}}
        usage = dict(ev.usage)
        if usage:
            usage["input_token_details"] = {"text_tokens": usage["input_tokens"], "audio_tokens": 0, "cached_tokens": 0}
            usage["output_token_details"] = {"text_tokens": usage["output_tokens"], "audio_tokens": 0}
        ext = {"timings_ms": ev.timings_ms, "language": ev.language, "heard_text": ev.heard_text,
               "played_ms": ev.played_ms, "audio_ms": round(len(out.audio_bytes) * 1000 / bytes_per_second(out.fmt))}
        await self.emit("response.done", response=self._response_obj(out, ev.status, [item], status_details=details,
                                                                      usage=usage or None, tingshuo=ext))
        if self.store is not None and out.meta.get("conversation_id"):
            self.store.add_turn(self.id, out.item_id, "assistant", kept, language=ev.language, source=ev.status,
                                timings=ev.timings_ms, full_text=ev.text)
        if ev.status == "completed":
            self._start_idle()
