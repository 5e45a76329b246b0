"""Engine → client: each typed engine event becomes the Realtime protocol events it means.

One dispatch table maps every engine event type to its handler (tests/test_protocol.py checks that none is
missing, so a new event cannot be dropped on the way to the client without a decision). The handlers keep the
item bookkeeping (:class:`~tingshuo.server.items.Items`) that truncate and retrieve rely on.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tingshuo.audio.io import INPUT_RATE, StreamResampler
from tingshuo.engine import events as E
from tingshuo.config import Settings
from tingshuo.engine.session import Session
from tingshuo.engine.stack import ModelStack
from tingshuo.server.items import Items, Out
from tingshuo.server.protocol import RealtimeConfig, bytes_per_second, encode_audio, format_rate
from tingshuo.store import TranscriptStore

if TYPE_CHECKING:
    from tingshuo.server.metrics import Metrics

log = logging.getLogger("tingshuo.server")


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


class Connection(Protocol):
    """What the translator needs of its Realtime connection (:class:`~tingshuo.server.realtime.RealtimeConnection`)."""

    id: str
    beta: bool
    cfg: RealtimeConfig
    session: Session
    stack: ModelStack
    settings: Settings
    store: TranscriptStore | None
    keep_all_audio: bool  # store.keep_audio: every user turn's audio, not only unheard ones
    metrics: "Metrics | None"
    meta_next: dict[str, Any] | None  # the next response's metadata (response.create's, an idle check-in's)
    idle_prompts: int

    async def emit(self, ga_type: str, **fields: Any) -> None: ...
    async def error(self, code: str, message: str, *, param: str | None = None, event_id: str | None = None,
                    error_type: str = "invalid_request_error") -> None: ...
    async def announce_user(self, item_id: str, kind: str, transcript: str | None) -> None: ...
    def start_idle(self) -> None: ...
    def stop_idle(self) -> None: ...


class EngineEvents:
    def __init__(self, conn: Connection, items: Items) -> None:
        self.conn, self.items = conn, items

    async def pump(self) -> None:
        """Forward the session's events until it closes."""
        async for ev in self.conn.session.events():
            if self.conn.metrics is not None:
                self.conn.metrics.on_event(ev)
            try:
                await self._on_event(ev)
            except Exception:  # never lose the stream over one event
                log.exception("forwarding %s failed", ev.type)

    async def _on_event(self, ev: E.Event) -> None:
        handler = self.HANDLERS.get(type(ev))
        if handler is not None:
            await handler(self, ev)

    async def _on_speech_started(self, ev: E.SpeechStarted) -> None:
        td = self.conn.cfg.turn_detection
        self.conn.stop_idle()
        self.conn.idle_prompts = 0
        if td is not None:
            await self.conn.emit("input_audio_buffer.speech_started", audio_start_ms=int(ev.at_ms), item_id=ev.item_id)

    async def _on_speech_stopped(self, ev: E.SpeechStopped) -> None:
        td = self.conn.cfg.turn_detection
        if td is not None:
            await self.conn.emit("input_audio_buffer.speech_stopped", audio_end_ms=int(ev.at_ms), item_id=ev.item_id)

    async def _on_transcript_partial(self, ev: E.TranscriptPartial) -> None:
        if self.conn.cfg.transcription is not None:
            await self.conn.emit("tingshuo.input_audio_transcription.partial", item_id=ev.item_id, transcript=ev.text)
            # The standard event is append-only: send what extends the text already sent; a partial that
            # revises earlier words (Whisper re-decodes the whole utterance) waits for the final transcript.
            sent = self.items.partial_sent.get(ev.item_id, "")
            text = ev.text.rstrip("。.，,！!？?")
            if text.startswith(sent) and len(text) > len(sent):
                self.items.partial_sent[ev.item_id] = text
                await self.conn.emit("conversation.item.input_audio_transcription.delta", item_id=ev.item_id,
                                content_index=0, delta=text[len(sent):])

    async def _on_transcript_final(self, ev: E.TranscriptFinal) -> None:
        self.items.partial_sent.pop(ev.item_id, None)
        await self.conn.announce_user(ev.item_id, "audio", ev.text)
        if ev.audio is not None:
            self.items.keep_user_audio(ev.item_id, ev.audio)
        if self.conn.cfg.transcription is not None:
            await self.conn.emit("conversation.item.input_audio_transcription.completed", item_id=ev.item_id,
                            content_index=0, transcript=ev.text,
                            tingshuo={"language": ev.language, "audio_seconds": round(ev.audio_seconds, 2),
                                      "emotion": None})
        if not self.conn.beta:
            await self.conn.emit("conversation.item.done", previous_item_id=self.items.previous(ev.item_id),
                            item=self.items.item(ev.item_id, "user", ev.text, "completed"))
        if self.conn.store is not None:
            path = None
            if self.conn.keep_all_audio and ev.audio is not None:  # store.keep_audio: every turn's audio
                path = await asyncio.to_thread(self.conn.store.keep_audio, self.conn.id, ev.item_id, ev.audio,
                                               INPUT_RATE)
            self.conn.store.add_turn(self.conn.id, ev.item_id, "user", ev.text, language=ev.language,
                                source="audio", audio_s=ev.audio_seconds, audio_path=path)

    async def _on_unheard_turn(self, ev: E.UnheardTurn) -> None:
        # the recognizer failed: the turn is still a conversation item, and its audio is kept
        await self.conn.announce_user(ev.item_id, "audio", None)
        if self.conn.store is not None:  # with no store (store.enabled = false) nothing is written
            path = await asyncio.to_thread(self.conn.store.keep_audio, self.conn.id, ev.item_id, ev.audio,
                                           INPUT_RATE)
            self.conn.store.add_turn(self.conn.id, ev.item_id, "user", "", source="audio/unheard", audio_s=ev.audio_seconds,
                                audio_path=path)

    async def _on_speech_degraded(self, ev: E.SpeechDegraded) -> None:
        out = self.items.outs.get(ev.response_id)
        if out is not None and out.speak and not out.degraded:
            out.degraded = True
            out.transcript.append(ev.text)
            await self._delta("response.output_audio_transcript.delta", out, delta=ev.text)

    async def _on_paralinguistics(self, ev: E.Paralinguistics) -> None:
        # after the transcript: how the turn was said (extension event; docs/emotion.md)
        await self.conn.emit("tingshuo.paralinguistics", item_id=ev.item_id, emotion=ev.details)
        if self.conn.store is not None:
            self.conn.store.set_emotion(self.conn.id, ev.item_id, ev.details)

    async def _on_voice_changed(self, ev: E.VoiceChanged) -> None:
        await self.conn.emit("tingshuo.voice.changed", state=ev.state, request=ev.request)

    async def _on_persona_changed(self, ev: E.PersonaChanged) -> None:
        # a role entered or left by asking ("你当孙悟空跟我说话"): the session's persona, prompt and voice follow
        self.conn.cfg.persona = ev.persona
        self.conn.cfg.instructions = self.conn.session.conversation.system_prompt
        self.conn.cfg.voice = ev.voice or self.conn.settings.tts.voice_zh
        await self.conn.emit("tingshuo.persona.changed", persona=ev.persona, name=ev.name, voice=ev.voice,
                        request=ev.request)

    async def _on_safety_verdict(self, ev: E.SafetyVerdict) -> None:
        # refused, care or a blocked clause: told to the client and kept in the deployer's risk log
        await self.conn.emit("tingshuo.safety", item_id=ev.item_id, source=ev.source, category=ev.category,
                        action=ev.action, confidence=ev.confidence)
        if self.conn.store is not None:
            self.conn.store.add_risk(self.conn.id, ev.item_id, ev.source, ev.category, ev.action, ev.confidence, ev.text)

    async def _on_care_changed(self, ev: E.CareChanged) -> None:
        await self.conn.emit("tingshuo.care.changed", on=ev.on, reason=ev.reason, hotlines=ev.hotlines)

    async def _on_search_done(self, ev: E.SearchDone) -> None:
        await self.conn.emit("tingshuo.search", response_id=ev.response_id, query=ev.query, provider=ev.provider,
                        results=ev.results, error=ev.error)

    async def _on_turn_detected(self, ev: E.TurnDetected) -> None:
        await self.conn.emit("tingshuo.turn.detected", p_audio=ev.p_audio, p_text=ev.p_text, waited_ms=ev.waited_ms)

    async def _on_response_started(self, ev: E.ResponseStarted) -> None:
        await self._response_started(ev)

    async def _on_reply_text_delta(self, ev: E.ReplyTextDelta) -> None:
        out = self.items.outs.get(ev.response_id)
        if out is not None and not out.speak:
            out.transcript.append(ev.text)
            await self._delta("response.output_text.delta", out, delta=ev.text)

    async def _on_reply_clause(self, ev: E.ReplyClause) -> None:
        out = self.items.outs.get(ev.response_id)
        if out is not None and out.degraded:  # no audio will carry it: the text goes out now
            out.transcript.append(ev.text)
            await self._delta("response.output_audio_transcript.delta", out, delta=ev.text)
        elif out is not None:
            out.clauses.append(ev.text)
        if ev.speaker or ev.sung:  # who says a story line, or a sung phrase (captions, karaoke)
            await self.conn.emit("tingshuo.reply.clause", response_id=ev.response_id, text=ev.text, style=ev.style,
                            speaker=ev.speaker, voice=ev.voice, sung=ev.sung)

    async def _on_audio_chunk(self, ev: E.AudioChunk) -> None:
        await self._audio(ev)

    async def _on_response_done(self, ev: E.ResponseDone) -> None:
        await self._response_done(ev)

    async def _on_playback_paused(self, ev: E.PlaybackPaused) -> None:
        await self.conn.emit("tingshuo.playback.paused", response_id=ev.response_id, heard_ms=ev.heard_ms)

    async def _on_playback_resumed(self, ev: E.PlaybackResumed) -> None:
        await self.conn.emit("tingshuo.playback.resumed", response_id=ev.response_id)

    async def _on_backchannel(self, ev: E.Backchannel) -> None:
        await self.conn.emit("tingshuo.backchannel", text=ev.text)

    async def _on_error_event(self, ev: E.ErrorEvent) -> None:
        td = self.conn.cfg.turn_detection
        if ev.item_id and ev.code in ("no_speech", "invalid_audio", "asr_failed"):
            if ev.item_id in self.items.announced:
                await self.conn.emit("conversation.item.input_audio_transcription.failed", item_id=ev.item_id,
                                content_index=0, error={"type": "transcription_error", "code": ev.code,
                                                        "message": ev.message})
                if ev.code != "asr_failed":
                    return  # the client's audio held no words; a crashed recognizer is also a server error
            if ev.code == "no_speech" and td is not None:
                return  # the VAD heard a noise that held no words: not the client's error, nothing to commit
        server_side = ev.code in ("internal_error", "response_failed", "asr_failed", "llm_failed", "tts_failed")
        await self.conn.error(ev.code, ev.message, error_type="server_error" if server_side else "invalid_request_error")

    async def _on_pronunciation_report(self, ev: E.PronunciationReport) -> None:
        # the tutor's reading of a spoken English turn, sound by sound (extension event; docs/realtime.md)
        await self.conn.emit("tingshuo.pronunciation", item_id=ev.item_id, expected=ev.expected, score=ev.score,
                        feedback=ev.feedback, words=ev.words)

    # engine event type → its handler: the protocol events it becomes (tests/test_protocol.py checks that every
    # engine event type has one, so a new event cannot be dropped on the way to the client without a decision)
    HANDLERS: dict[type, Callable[["EngineEvents", Any], Awaitable[None]]] = {
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

    async def _delta(self, ga_type: str, out: Out, **fields: Any) -> None:
        await self.conn.emit(ga_type, response_id=out.rid, item_id=out.item_id, output_index=0, content_index=0, **fields)

    def _response_obj(self, out: Out, status: str, output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        r: dict[str, Any] = {"id": out.rid, "object": "realtime.response", "status": status, "output": output,
                             "conversation_id": out.meta.get("conversation_id"), "metadata": out.meta.get("metadata"),
                             "max_output_tokens": self.conn.cfg.max_output_tokens, **extra}
        mods = out.meta.get("output_modalities", ["audio"] if out.speak else ["text"])
        fmt = out.fmt
        if self.conn.beta:
            r.update(modalities=["text", "audio"] if out.speak else ["text"], voice=out.meta.get("voice"),
                     output_audio_format=fmt)
        else:
            r.update(output_modalities=mods,
                     audio={"output": {"format": self.conn.cfg.wire_format(fmt), "voice": out.meta.get("voice")}})
        return r

    async def _response_started(self, ev: E.ResponseStarted) -> None:
        meta, self.conn.meta_next = (self.conn.meta_next or {}), None
        meta.setdefault("conversation_id", f"conv_{self.conn.id}")
        meta.setdefault("voice", self.conn.cfg.voice)
        out = Out(ev.response_id, ev.item_id, ev.speak, self.conn.cfg.output_format, meta)
        tts_rate = self.conn.stack.tts.sample_rate if self.conn.stack.tts else format_rate(out.fmt)
        if ev.speak and tts_rate != format_rate(out.fmt):
            out.resampler, out.tts_rate = StreamResampler(format_rate(out.fmt)), tts_rate
        self.items.add_out(out)
        vs, plan = self.conn.session.voice_state, self.conn.session.plan
        last = self.conn.session.emotions.last
        style = {"voice": self.conn.session.voice.voice or self.conn.cfg.voice, "speed": round(self.conn.session.voice.speed * vs.speed, 3),
                 "persona": self.conn.cfg.persona, "emotion": plan.style or vs.style or ("whisper" if vs.whisper else None),
                 "reason": plan.reason or None, "user_emotion": last.label if last else None,
                 "voice_state": {"speed": vs.speed, "volume": vs.volume, "pitch": vs.pitch, "whisper": vs.whisper,
                                 "style": vs.style, "dialect": vs.dialect}}
        await self.conn.emit("response.created", response=self._response_obj(out, "in_progress", []),
                        tingshuo={"style": style})
        item = self.items.item(out.item_id, "assistant", None, "in_progress")
        item["content"] = []
        await self.conn.emit("response.output_item.added", response_id=out.rid, output_index=0, item=item)
        await self.conn.emit("conversation.item.added", previous_item_id=self.items.previous(out.item_id), item=item)
        part = self.items.item(out.item_id, "assistant", "", "in_progress")["content"][0]
        await self.conn.emit("response.content_part.added", response_id=out.rid, item_id=out.item_id, output_index=0,
                        content_index=0, part=part)

    async def _audio(self, ev: E.AudioChunk) -> None:
        out = self.items.outs.get(ev.response_id)
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
        await self._delta("response.output_audio.delta", out, delta=b64(data))

    async def _response_done(self, ev: E.ResponseDone) -> None:
        out = self.items.outs.get(ev.response_id)
        if out is None:
            return
        if self.items.active == out.rid:
            self.items.active = None
        conv = self.conn.session.conversation
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
        item = self.items.item(out.item_id, "assistant", kept if out.speak else (ev.text if ev.status == "completed" else kept),
                          status_item)
        await self.conn.emit("response.content_part.done", response_id=out.rid, item_id=out.item_id, output_index=0,
                        content_index=0, part=item["content"][0])
        await self.conn.emit("response.output_item.done", response_id=out.rid, output_index=0, item=item)
        if not self.conn.beta:
            await self.conn.emit("conversation.item.done", previous_item_id=self.items.previous(out.item_id), item=item)
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
        await self.conn.emit("response.done", response=self._response_obj(out, ev.status, [item], status_details=details,
                                                                      usage=usage or None, tingshuo=ext))
        if self.conn.store is not None and out.meta.get("conversation_id"):
            self.conn.store.add_turn(self.conn.id, out.item_id, "assistant", kept, language=ev.language, source=ev.status,
                                timings=ev.timings_ms, full_text=ev.text)
        if ev.status == "completed":
            self.conn.start_idle()
