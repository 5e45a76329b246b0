"""The OpenAI Realtime wire format: session configuration, audio codecs and event names, GA and beta.

Two dialects share one implementation. GA (``client.realtime.connect``) nests audio settings under
``session.audio`` and names audio deltas ``response.output_audio.delta``; beta (``client.beta.realtime.connect``,
header ``OpenAI-Beta: realtime=v1``) is flat (``input_audio_format: "pcm16"``) and says ``response.audio.delta``.
``session.update`` is parsed liberally (either shape in either dialect); what the server *sends* follows the
client's dialect. tingshuo's own additions travel in a ``tingshuo`` field (ignored by the SDK, which does not
validate events) or in events named ``tingshuo.*``; docs/realtime.md lists them.
"""

from __future__ import annotations

import audioop  # G.711 μ-law/A-law: the stdlib codec (deprecated in 3.13, where the audioop-lts package replaces it)
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tingshuo.audio.io import float_to_pcm16, pcm16_to_float

warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*audioop.*")

RATE = 24000  # "Only a 24kHz sample rate is supported" for audio/pcm (and pcm16 in beta)
G711_RATE = 8000
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")

# GA name → beta name, for the events whose names differ
_BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
_GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
_BETA_FORMATS = {v: k for k, v in _GA_FORMATS.items()}


class ProtocolError(ValueError):
    """A client event that cannot be honoured; becomes an ``error`` event (the session stays open)."""

    def __init__(self, code: str, message: str, param: str | None = None,
                 error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.error_type = code, message, param, error_type


def event_name(ga_name: str, beta: bool) -> str:
    return _BETA_NAMES.get(ga_name, ga_name) if beta else ga_name


# ------------------------------------------------------------------------------------------------ audio codecs
def decode_audio(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """Client audio bytes → (float32 mono, rate)."""
    if fmt == "pcm16":
        if len(data) % 2:
            raise ProtocolError("invalid_audio", "pcm16 audio must hold whole 16-bit samples (an even number of bytes)",
                                "audio")
        return pcm16_to_float(data), RATE
    lin = audioop.ulaw2lin(data, 2) if fmt == "g711_ulaw" else audioop.alaw2lin(data, 2)
    return pcm16_to_float(lin), G711_RATE


def encode_audio(x: np.ndarray, fmt: str) -> bytes:
    """float32 mono at the format's rate → bytes."""
    pcm = float_to_pcm16(x).tobytes()
    if fmt == "pcm16":
        return pcm
    return audioop.lin2ulaw(pcm, 2) if fmt == "g711_ulaw" else audioop.lin2alaw(pcm, 2)


def format_rate(fmt: str) -> int:
    return RATE if fmt == "pcm16" else G711_RATE


def bytes_per_second(fmt: str) -> int:
    return RATE * 2 if fmt == "pcm16" else G711_RATE


def _parse_format(value: Any, param: str) -> str:
    if isinstance(value, dict):
        t = value.get("type")
        if not isinstance(t, str) or t not in _GA_FORMATS:  # a list or object here is a client's error, not ours
            raise ProtocolError("invalid_value", f"unsupported audio format {t!r}; use audio/pcm, audio/pcmu or audio/pcma",
                                param)
        if t == "audio/pcm" and value.get("rate", RATE) != RATE:
            raise ProtocolError("invalid_value", "audio/pcm is supported at 24000 Hz only", param)
        return _GA_FORMATS[t]
    if isinstance(value, str) and value in _BETA_FORMATS:
        return value
    raise ProtocolError("invalid_value", f"unsupported audio format {value!r}; use pcm16, g711_ulaw or g711_alaw", param)


# ------------------------------------------------------------------------------------------------ session config
@dataclass
class TurnDetection:
    type: str = "semantic_vad"  # or "server_vad"
    eagerness: str = "auto"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None  # server_vad: check in after this much silence following a reply

    def to_wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "create_response": self.create_response,
                             "interrupt_response": self.interrupt_response}
        if self.type == "semantic_vad":
            d["eagerness"] = self.eagerness
        else:
            d.update(threshold=self.threshold, prefix_padding_ms=self.prefix_padding_ms,
                     silence_duration_ms=self.silence_duration_ms, idle_timeout_ms=self.idle_timeout_ms)
        return d


@dataclass
class RealtimeConfig:
    """One connection's effective configuration, in the protocol's terms."""

    model: str
    instructions: str
    voice: str
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    input_format: str = "pcm16"
    output_format: str = "pcm16"
    speed: float = 1.0
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    transcription: dict[str, Any] | None = field(default_factory=lambda: {"model": "whisper-base"})
    max_output_tokens: int | str = "inf"
    temperature: float = 0.8
    persona: str = "companion"

    @property
    def speak(self) -> bool:
        return "audio" in self.output_modalities

    # ------------------------------------------------------------------ reading session.update
    def update(self, s: dict[str, Any], voices: list[str]) -> None:
        """Apply the fields present in a ``session.update`` payload (GA or beta shape). Validates everything
        before changing anything, so a rejected update leaves the session as it was."""
        if not isinstance(s, dict):
            raise ProtocolError("invalid_value", "session must be an object", "session")
        new = RealtimeConfig(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        if s.get("type") not in (None, "realtime"):
            raise ProtocolError("invalid_value", f"session type {s.get('type')!r} is not supported; use 'realtime'",
                                "session.type")
        if "instructions" in s:
            if not isinstance(s["instructions"], str):
                raise ProtocolError("invalid_type", "instructions must be a string", "session.instructions")
            new.instructions = s["instructions"]
        mods = s.get("output_modalities", s.get("modalities"))
        if mods is not None:
            if not isinstance(mods, list) or not mods or any(m not in ("text", "audio") for m in mods):
                raise ProtocolError("invalid_value", "output modalities must be ['audio'], ['text'] or "
                                    "['text', 'audio']", "session.output_modalities")
            new.output_modalities = ["audio"] if "audio" in mods else ["text"]
        audio = s.get("audio") or {}
        if not isinstance(audio, dict):
            raise ProtocolError("invalid_type", "session.audio must be an object", "session.audio")
        inp, out = audio.get("input") or {}, audio.get("output") or {}
        for part, name in ((inp, "input"), (out, "output")):
            if not isinstance(part, dict):
                raise ProtocolError("invalid_type", f"session.audio.{name} must be an object", f"session.audio.{name}")
        if "format" in inp or "input_audio_format" in s:
            new.input_format = _parse_format(inp.get("format", s.get("input_audio_format")), "session.audio.input.format")
        if "format" in out or "output_audio_format" in s:
            new.output_format = _parse_format(out.get("format", s.get("output_audio_format")),
                                              "session.audio.output.format")
        voice = out.get("voice", s.get("voice"))
        if voice is not None:
            if isinstance(voice, dict):
                voice = voice.get("id")
            if not isinstance(voice, str) or (voice not in voices and voice not in OPENAI_VOICES):
                raise ProtocolError("invalid_value", f"unknown voice {voice!r}; available: "
                                    f"{', '.join(voices)} (or an OpenAI voice name, read by the default voice)",
                                    "session.audio.output.voice")
            new.voice = voice
        speed = out.get("speed", s.get("speed"))
        if speed is not None:
            if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 1.5:
                raise ProtocolError("invalid_value", "speed must be between 0.25 and 1.5", "session.audio.output.speed")
            new.speed = float(speed)
        if "turn_detection" in inp or "turn_detection" in s:
            td = inp["turn_detection"] if "turn_detection" in inp else s["turn_detection"]
            new.turn_detection = _parse_turn_detection(td, self.turn_detection)
        if "transcription" in inp or "input_audio_transcription" in s:
            tr = inp["transcription"] if "transcription" in inp else s["input_audio_transcription"]
            if tr is not None and not isinstance(tr, dict):
                raise ProtocolError("invalid_type", "transcription must be an object or null",
                                    "session.audio.input.transcription")
            new.transcription = tr
        mot = s.get("max_output_tokens", s.get("max_response_output_tokens"))
        if mot is not None:
            if not (mot == "inf" or (isinstance(mot, int) and 1 <= mot <= 4096)):
                raise ProtocolError("invalid_value", "max_output_tokens must be 1–4096 or 'inf'",
                                    "session.max_output_tokens")
            new.max_output_tokens = mot
        if "temperature" in s:
            if not isinstance(s["temperature"], (int, float)):
                raise ProtocolError("invalid_type", "temperature must be a number", "session.temperature")
            new.temperature = float(s["temperature"])
        if s.get("tools"):
            raise ProtocolError("unsupported", "tools are not supported yet by this server", "session.tools")
        ext = s.get("tingshuo") or {}
        if isinstance(ext, dict) and "persona" in ext:
            new.persona = str(ext["persona"])
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(new, k))

    # ------------------------------------------------------------------ writing session.created / updated
    @staticmethod
    def wire_format(f: str) -> dict[str, Any]:
        """GA's format object for a beta format name."""
        return {"type": _BETA_FORMATS[f], "rate": RATE} if f == "pcm16" else {"type": _BETA_FORMATS[f]}

    def to_wire(self, session_id: str, beta: bool, extra: dict[str, Any]) -> dict[str, Any]:
        td = self.turn_detection.to_wire() if self.turn_detection else None
        if beta:
            return {
                "id": session_id, "object": "realtime.session", "model": self.model,
                "modalities": ["text", "audio"] if self.speak else ["text"],
                "instructions": self.instructions, "voice": self.voice, "speed": self.speed,
                "input_audio_format": self.input_format, "output_audio_format": self.output_format,
                "input_audio_transcription": self.transcription, "turn_detection": td,
                "input_audio_noise_reduction": None, "tools": [], "tool_choice": "auto",
                "temperature": self.temperature, "max_response_output_tokens": self.max_output_tokens,
                "tingshuo": extra,
            }

        fmt = self.wire_format
        return {
            "type": "realtime", "object": "realtime.session", "id": session_id, "model": self.model,
            "output_modalities": list(self.output_modalities), "instructions": self.instructions,
            "audio": {
                "input": {"format": fmt(self.input_format), "transcription": self.transcription,
                          "noise_reduction": None, "turn_detection": td},
                "output": {"format": fmt(self.output_format), "voice": self.voice, "speed": self.speed},
            },
            "tools": [], "tool_choice": "auto", "max_output_tokens": self.max_output_tokens,
            "tracing": None, "truncation": "auto", "prompt": None, "include": None,
            "tingshuo": extra,
        }


def _parse_turn_detection(td: Any, current: TurnDetection | None) -> TurnDetection | None:
    if td is None:
        return None
    if not isinstance(td, dict):
        raise ProtocolError("invalid_type", "turn_detection must be an object or null", "session.turn_detection")
    kind = td.get("type", current.type if current else "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise ProtocolError("invalid_value", f"turn_detection.type {kind!r}: use server_vad, semantic_vad or null",
                            "session.turn_detection.type")
    base = TurnDetection(type=kind)
    if current is not None and current.type == kind:
        base = TurnDetection(**current.__dict__)
    checks = {"threshold": (float, 0.0, 1.0), "prefix_padding_ms": (int, 0, 2000),
              "silence_duration_ms": (int, 0, 10000)}
    for key, (typ, lo, hi) in checks.items():
        if td.get(key) is not None:
            v = td[key]
            if not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ProtocolError("invalid_value", f"turn_detection.{key} must be between {lo} and {hi}",
                                    f"session.turn_detection.{key}")
            setattr(base, key, typ(v))
    if td.get("eagerness") is not None:
        if td["eagerness"] not in ("low", "medium", "high", "auto"):
            raise ProtocolError("invalid_value", "eagerness must be low, medium, high or auto",
                                "session.turn_detection.eagerness")
        base.eagerness = td["eagerness"]
    if "idle_timeout_ms" in td:
        v = td["idle_timeout_ms"]
        if v is not None and (not isinstance(v, int) or not 1000 <= v <= 600_000 or kind != "server_vad"):
            raise ProtocolError("invalid_value", "idle_timeout_ms (server_vad only) must be 1000–600000 or null",
                                "session.turn_detection.idle_timeout_ms")
        base.idle_timeout_ms = v
    for key in ("create_response", "interrupt_response"):
        if td.get(key) is not None:
            base.__dict__[key] = bool(td[key])
    return base
