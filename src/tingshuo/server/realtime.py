"""One Realtime API connection: client events in, the engine's typed events out as protocol events.

The engine :class:`~tingshuo.engine.session.Session` does the listening, turn-taking, barge-in and speaking; this
class only translates. Client events are handled in arrival order; the ones that wait on models (a commit's
transcription, ``response.create`` after it) run as tasks so the socket keeps being read — a ``response.cancel``
must never queue behind the work it cancels. The conversation's items *are* the engine's history
(:class:`~tingshuo.dialogue.memory.Conversation` keeps an id per turn), so create/delete/truncate act on what the
LLM sees next. Engine events become protocol events in :mod:`tingshuo.server.outbound` (one handler per engine
event type); :mod:`tingshuo.server.items` keeps what is known of each item.

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
from typing import TYPE_CHECKING, Any

import numpy as np

from tingshuo.audio.io import INPUT_RATE, StreamResampler, resample
from tingshuo.config import ServerConfig, Settings
from tingshuo.dialogue.memory import new_item_id
from tingshuo.dialogue.persona import PERSONAS, get_persona
from tingshuo.engine.session import ResponseOptions, Session
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
from tingshuo.server.items import KEEP_AUDIO_RESPONSES, Items
from tingshuo.server.outbound import EngineEvents, b64
from tingshuo.store import TranscriptStore
from tingshuo.tts import VoiceSettings

if TYPE_CHECKING:
    from tingshuo.server.metrics import Metrics

log = logging.getLogger("tingshuo.server")
_event_ids = itertools.count(1)
MIN_COMMIT_MS = 100
MAX_IDLE_PROMPTS = 2  # check-ins in a row without the user speaking (then wait quietly)
_IDLE_NOTE = {
    "zh": "用户已经有一会儿没说话了。用一句简短、温和的话问问用户还在不在，或者顺着刚才的话题轻轻接一句。",
    "en": "The user has been quiet for a while. In one short, gentle sentence, check whether they are still there "
          "or pick the last topic back up.",
}  # like OpenAI: "buffer too small. Expected at least 100ms of audio"


class RealtimeConnection:
    def __init__(self, stack: ModelStack, server: ServerConfig, send: Callable[[dict[str, Any]], Awaitable[None]], *,
                 beta: bool, store: TranscriptStore | None = None, model: str = "tingshuo",
                 client: str = "", key_label: str = "", keep_all_audio: bool = False,
                 metrics: "Metrics | None" = None, resume: dict[str, Any] | None = None) -> None:
        """``store``: where the call is kept (None: nothing is); it keeps the audio of turns the recognizer failed
        on, and of every user turn with ``keep_all_audio`` (``store.keep_audio``). ``resume``: a stored session
        (``TranscriptStore.export`` form) this connection continues — same id, its turns back in the
        conversation."""
        self.stack, self.server, self._send, self.beta, self.store = stack, server, send, beta, store
        self.keep_all_audio, self.metrics = keep_all_audio, metrics
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
        self.items = Items(self.session.conversation, beta)  # what is known of each conversation item
        self.outbound = EngineEvents(self, self.items)  # engine events → protocol events
        self._pending: set[asyncio.Task[None]] = set()  # transcriptions that response.create must wait for
        self._tasks: set[asyncio.Task[None]] = set()
        self.meta_next: dict[str, Any] | None = None
        self._idle: asyncio.Task[None] | None = None  # server_vad idle_timeout_ms timer (after a reply)
        self.idle_prompts = 0
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
                self.items.kinds[t["item_id"]] = "audio" if str(t.get("source", "")).startswith("audio") else "text"
                self.items.announced.add(t["item_id"])

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.emit("session.created", session=self._wire_session())
        if self.beta:
            await self.emit("conversation.created", conversation={"id": f"conv_{self.id}", "object": "realtime.conversation"})
        self._pump = asyncio.create_task(self.outbound.pump())

    async def close(self) -> None:
        self.stop_idle()
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
            self.stop_idle()  # the client is doing something: not idle
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
        known = (*PERSONAS, *self.session.state.improvised)  # a character written in this call may be picked again
        if isinstance(ext, dict) and ext.get("persona") not in (None, *known):
            raise ProtocolError("invalid_value", f"unknown persona; available: {', '.join(known)}",
                                "session.tingshuo.persona")
        old_persona = self.cfg.persona
        self.cfg.update(s, self.voices)  # type: ignore[arg-type]
        if self.cfg.persona != old_persona:
            p = self.session.state.find_persona(self.cfg.persona)
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
            return [*VOICES, *tts.backend("kokoro").voices()]  # character voices, then Kokoro's own tables
        except Exception:
            return list(VOICES)

    def _engine_voice(self, voice: str | None) -> str | None:
        if voice is None or voice in OPENAI_VOICES:
            return None  # an OpenAI voice name: our default voice reads it
        return voice

    def _wire_session(self) -> dict[str, Any]:
        extra = {"persona": self.cfg.persona, "personas": {k: p.name for k, p in {**PERSONAS, **self.session.state.improvised}.items()},
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
        if self.metrics is not None:
            self.metrics.input_audio.inc(seconds)
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
        self.idle_prompts = 0
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
        await self.announce_user(item_id, "audio", None)
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
    async def announce_user(self, item_id: str, kind: str, transcript: str | None) -> None:
        """input_audio_buffer.committed + the user item (its transcript may follow later)."""
        if item_id in self.items.announced:
            return
        self.items.announced.add(item_id)
        self.items.kinds[item_id] = kind
        prev = self.items.previous(item_id)
        await self.emit("input_audio_buffer.committed", item_id=item_id, previous_item_id=prev)
        item = self.items.item(item_id, "user", transcript, "completed")
        await self.emit("conversation.item.added", previous_item_id=prev, item=item)

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
            self.idle_prompts = 0
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
        self.items.kinds[item_id] = kind
        self.items.announced.add(item_id)
        item = self.items.item(item_id, role, text, "completed")
        previous = self.items.previous(item_id)
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
        out = self.items.by_item.get(ev["item_id"]) if isinstance(ev.get("item_id"), str) else None
        if out is not None and out.rid == self.items.active:
            raise ProtocolError("item_in_progress", "the item is still being generated", "item_id")
        item_id = self._find(ev)
        msg = self.session.conversation.get(item_id)
        item = self.items.item(item_id, msg["role"], msg["content"], "completed")
        if out is not None and out.speak and out.audio_bytes:
            item["content"][0]["audio"] = b64(bytes(out.audio_bytes))
        elif item_id in self.items.user_audio:  # what the user said, in the session's input format
            x = resample(self.items.user_audio[item_id], INPUT_RATE, format_rate(self.cfg.input_format))
            item["content"][0]["audio"] = b64(encode_audio(x, self.cfg.input_format))
        await self.emit("conversation.item.retrieved", item=item)

    async def _item_delete(self, ev: dict[str, Any]) -> None:
        out = self.items.by_item.get(ev["item_id"]) if isinstance(ev.get("item_id"), str) else None
        if out is not None and out.rid == self.items.active:
            await self._cancel_active()
        item_id = self._find(ev)
        self.session.conversation.remove(item_id)
        self.items.user_audio.pop(item_id, None)  # what the user said goes from memory too
        if self.store is not None:
            self.store.erase_item(self.id, item_id)
        await self.emit("conversation.item.deleted", item_id=item_id)

    async def _item_truncate(self, ev: dict[str, Any]) -> None:
        item_id = ev.get("item_id")
        out = self.items.by_item.get(item_id) if isinstance(item_id, str) else None
        if out is None:
            raise ProtocolError("item_not_found", f"no assistant audio item with id {item_id!r}", "item_id")
        end = ev.get("audio_end_ms")
        if not isinstance(end, (int, float)) or end < 0:
            raise ProtocolError("invalid_value", "audio_end_ms must be a non-negative number", "audio_end_ms")
        if ev.get("content_index", 0) != 0:
            raise ProtocolError("invalid_value", "content_index must be 0", "content_index")
        if not out.speak:
            raise ProtocolError("invalid_value", f"{item_id!r} is a text reply; only audio can be truncated", "item_id")
        if not out.audio and out.rid != self.items.active:
            raise ProtocolError("item_audio_expired", f"the audio of {item_id!r} is no longer kept (only the last "
                                f"{KEEP_AUDIO_RESPONSES} replies are)", "item_id")
        total_ms = len(out.audio_bytes) * 1000 / bytes_per_second(out.fmt)
        if end > total_ms + 1:
            raise ProtocolError("invalid_value", f"audio_end_ms {end} is beyond the item's audio ({total_ms:.0f} ms)",
                                "audio_end_ms")
        if out.rid == self.items.active:
            await self._cancel_active()  # the client stopped playing it: the response is over
        heard = self.items.heard_text(out, float(end))
        conv = self.session.conversation
        if item_id in conv.ids:
            conv.set_text(item_id, heard)
        elif heard:
            conv.add("assistant", heard, item_id)
        if self.store is not None:
            self.store.update_text(self.id, item_id, heard, truncated_ms=float(end))
        await self.emit("conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=int(end))

    # ---- responses
    async def _response_create(self, ev: dict[str, Any]) -> None:
        if self.items.active is not None:
            raise ProtocolError("conversation_already_has_active_response",
                                f"response {self.items.active} is still in progress; cancel it first")
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
        self.meta_next = meta
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
        if self.items.active is None:
            raise ProtocolError("response_cancel_not_active", "there is no response in progress to cancel")
        if rid is not None and rid != self.items.active:
            raise ProtocolError("response_not_found", f"response {rid!r} is not in progress", "response_id")
        await self._cancel_active()

    async def _cancel_active(self) -> None:
        """Cancel the response in progress and wait until it is over, so a ``response.create`` right behind the
        cancel is not refused as concurrent (its ``response.done`` may still be on its way to the client)."""
        await self.session.cancel()
        self.items.active = None

    async def _output_clear(self, ev: dict[str, Any]) -> None:
        rid = self.items.active
        if rid is not None:
            await self._cancel_active()
        await self.emit("output_audio_buffer.cleared", response_id=rid)

    # ------------------------------------------------------------------ idle check-in (server_vad idle_timeout_ms)
    def stop_idle(self) -> None:
        if self._idle is not None and not self._idle.done():
            self._idle.cancel()
        self._idle = None

    def start_idle(self) -> None:
        td = self.cfg.turn_detection
        self.stop_idle()
        if td is None or td.type != "server_vad" or not td.idle_timeout_ms or self.idle_prompts >= MAX_IDLE_PROMPTS:
            return
        self._idle = asyncio.create_task(self._idle_wait(td.idle_timeout_ms))

    async def _idle_wait(self, ms: int) -> None:
        """Silence since the reply ended: say so (``input_audio_buffer.timeout_triggered``) and check in."""
        await asyncio.sleep(ms / 1000)
        if self.items.active is not None or self.session.open_utterance_s is not None:
            return
        self.idle_prompts += 1
        end = int(self._input_ms)
        await self.emit("input_audio_buffer.timeout_triggered", audio_start_ms=max(0, end - ms), audio_end_ms=end,
                        item_id=new_item_id())
        lang = self.session.conversation_language()
        note = _IDLE_NOTE.get(lang, _IDLE_NOTE["en"])
        self.meta_next = {"metadata": {"tingshuo_reason": "idle_timeout"}}
        self._idle = None  # this task must not be cancelled by the response it starts
        await self.session.respond(ResponseOptions(instructions=f"{self.cfg.instructions}\n{note}"))
