"""Sessions: who is on the other end of a call, and what a session reports while it runs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

TransportKind = Literal["webrtc", "daily", "twilio"]


@dataclass
class Call:
    """One session's caller and transport.

    Args:
        transport: How the caller is connected.
        session_id: Unique id of the session (random by default).
        user_id: The user id a WebRTC/Daily client passed in its request body, if any.
        from_number: The Twilio caller's phone number, if any.
        to_number: The number the caller dialled, if any.
        call_sid: Twilio's call id, if any.
        body: The client's request body or Twilio's custom parameters.
        pipeline: The pipeline serving the call (set when the session starts).
        persona: The persona the bot plays (set when the session starts).
        stored_user_id: The caller's user id in storage (set when the session starts).
    """

    transport: TransportKind
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    user_id: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    call_sid: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    pipeline: str | None = None
    persona: str | None = None
    stored_user_id: int | None = None

    @property
    def identity(self) -> tuple[str, str] | None:
        """How the caller is known: ``("phone", number)``, ``(transport, user_id)`` or None."""
        if self.from_number:
            return ("phone", self.from_number)
        if self.user_id and self.transport in ("webrtc", "daily"):
            return (self.transport, self.user_id)
        return None

    def __str__(self) -> str:
        # Never the phone number or user id: this string goes into INFO logs.
        return f"session {self.session_id[:8]} ({self.transport})"


@dataclass
class TurnReport:
    """What one completed exchange looked like, as reported by a session.

    Args:
        role: ``"user"`` or ``"assistant"``.
        text: What was said (personal data: log it at DEBUG only).
        interrupted: Whether the bot was cut off (assistant turns).
        started_at: When the turn started (ISO 8601, UTC), if known.
    """

    role: Literal["user", "assistant"]
    text: str
    interrupted: bool = False
    started_at: str | None = None


@dataclass
class LatencyReport:
    """One user-to-bot latency measurement from Pipecat's ``UserBotLatencyObserver``.

    Args:
        seconds: From the caller's detected end of speech to the bot's first audio.
        stages: The named contributions (label → seconds), in the order they happened.
    """

    seconds: float
    stages: dict[str, float] = field(default_factory=dict)


@dataclass
class ToolCallReport:
    """One tool call, for the audit trail and analytics (recorded with the turn it served).

    Args:
        name: The tool the LLM called.
        arguments: Its arguments, secret values redacted.
        status: ``ok``, ``error``, ``awaiting_confirmation``, ``declined`` or ``cancelled``.
        duration_secs: From the call to its result.
        overhead_secs: The tool layer's own share (validation, bookkeeping), without the I/O.
        attempts: How many times the tool ran (read-only tools are retried).
        result: What the LLM was told: the result, or the error's kind and message.
        confirmed: Whether it ran after the caller's spoken yes.
        started_at: When the call started (ISO 8601, UTC).
    """

    name: str
    arguments: dict[str, Any]
    status: Literal["ok", "error", "awaiting_confirmation", "declined", "cancelled"]
    duration_secs: float
    overhead_secs: float
    attempts: int
    result: dict[str, Any]
    confirmed: bool = False
    started_at: str = ""

    def as_record(self) -> dict[str, Any]:
        """The JSON stored with the turn."""
        return {
            "name": self.name,
            "arguments": self.arguments,
            "status": self.status,
            "duration_ms": round(self.duration_secs * 1000, 1),
            "attempts": self.attempts,
            "confirmed": self.confirmed,
            "result": self.result,
            "started_at": self.started_at,
        }


@dataclass
class UsageReport:
    """What one service request used, from Pipecat's usage metrics (for analytics and cost).

    Args:
        service: ``llm``, ``tts`` or ``stt``.
        provider: The configured provider (``openai``, ``local``, ``deepgram``, ``whisper``,
            ``cartesia``, ``piper``).
        model: The model, when the service names one.
        prompt_tokens: LLM input tokens.
        completion_tokens: LLM output tokens.
        characters: Characters sent to the TTS.
        audio_secs: Seconds of audio sent to the STT.
    """

    service: Literal["llm", "tts", "stt"]
    provider: str
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    characters: int = 0
    audio_secs: float = 0.0


@dataclass
class ErrorReport:
    """A failure inside a session's pipeline that the session survived or ended with.

    Args:
        kind: Where it happened: ``llm``, ``stt``, ``tts``, ``transport`` or ``pipeline``.
        processor: The failing processor's name (never personal data).
        message: What went wrong (may quote a provider's error: log it at DEBUG only).
        fatal: Whether the session ended because of it.
    """

    kind: Literal["llm", "stt", "tts", "transport", "pipeline"]
    processor: str
    message: str = ""
    fatal: bool = False


class SessionListener(Protocol):
    """Receives what sessions report; storage, analytics and benchmarks implement it."""

    def on_session_started(self, call: Call) -> None:
        """A session started."""

    def on_turn(self, call: Call, turn: TurnReport) -> None:
        """A user or assistant turn completed."""

    def on_latency(self, call: Call, latency: LatencyReport) -> None:
        """A user-to-bot latency was measured."""

    def on_tool_call(self, call: Call, report: ToolCallReport) -> None:
        """The LLM called a tool (reported when the call has its result)."""

    def on_sources(self, call: Call, sources: list[dict[str, Any]]) -> None:
        """Knowledge-base passages were given to the LLM for the next reply (maybe none)."""

    def on_emotion(self, call: Call, emotion: dict[str, Any]) -> None:
        """The caller's emotion in the turn now ending was estimated (``label``, ``valence``,
        ``arousal``, ``confidence``, numeric ``cues``; never words)."""

    def on_command(self, call: Call, action: str) -> None:
        """A voice command was carried out without the LLM (``stop``, ``repeat``, ...)."""

    def on_end_of_turn_overruled(self, call: Call, decision: str) -> None:
        """The end-of-turn text check overruled smart-turn (``mindbot.turn_text``): ``held``,
        ``hold_expired`` or ``ended``."""

    def on_barge_in_pause(self, call: Call, outcome: str) -> None:
        """A barge-in pause ended (``mindbot.barge_in``): ``interrupted``, ``resumed`` or
        ``expired``."""

    def on_usage(self, call: Call, usage: UsageReport) -> None:
        """A service reported what one request used (tokens, characters, audio seconds)."""

    def on_error(self, call: Call, error: ErrorReport) -> None:
        """A processor in the session's pipeline failed."""

    def on_session_ended(self, call: Call, reason: str) -> None:
        """A session ended (``reason``: ``completed``, ``cancelled`` or ``error``)."""
