"""Recording every session and turn in storage as it happens, without blocking the audio path.

``SessionRecorder`` is a ``SessionListener``: each event becomes one write queued on the
``AsyncStorageWriter`` thread, so a completed turn is on disk moments after it completes (a
process killed mid-call loses at most the turn in flight) and the event loop never waits on
the disk.
"""

from __future__ import annotations

from mindbot.session import (
    Call,
    ErrorReport,
    LatencyReport,
    ToolCallReport,
    TurnReport,
    UsageReport,
)
from mindbot.storage import (
    AsyncStorageWriter,
    SessionRecord,
    Storage,
    TurnRecord,
    UsageRecord,
    utc_now,
)


class SessionRecorder:
    """Writes sessions, their turns and each reply's latency to storage.

    Args:
        storage: Where the records go.
        writer: The background writer that performs the writes.
    """

    def __init__(self, storage: Storage, writer: AsyncStorageWriter):
        self._storage = storage
        self._writer = writer
        self._next_turn: dict[str, int] = {}
        self._latency: dict[str, LatencyReport] = {}
        self._tool_calls: dict[str, list[dict]] = {}
        self._sources: dict[str, list[dict]] = {}
        self._emotion: dict[str, dict] = {}

    def on_session_started(self, call: Call) -> None:
        """Record the session, bound to its user (``Call.stored_user_id``)."""
        self._next_turn[call.session_id] = 0
        self._writer.submit(self._start, call, utc_now())

    def on_turn(self, call: Call, turn: TurnReport) -> None:
        """Record a completed turn; a reply carries the latency measured for it.

        A user turn with no words (a voice command, whose words no one else sees) is not a
        turn of the conversation and is not stored; the command is (``on_command``).
        """
        if turn.role == "user" and not turn.text.strip():
            self._emotion.pop(call.session_id, None)
            return
        idx = self._next_turn.get(call.session_id, 0)
        self._next_turn[call.session_id] = idx + 1
        reply = turn.role == "assistant"
        latency = self._latency.pop(call.session_id, None) if reply else None
        tool_calls = self._tool_calls.pop(call.session_id, None) if reply else None
        sources = self._sources.pop(call.session_id, None) if reply else None
        emotion = None if reply else self._emotion.pop(call.session_id, None)
        now = utc_now()
        record = TurnRecord(
            session_id=call.session_id,
            idx=idx,
            role=turn.role,
            text=turn.text,
            started_at=turn.started_at or now,
            ended_at=now,
            interrupted=turn.interrupted,
            latency_secs=latency.seconds if latency else None,
            stages=latency.stages if latency else None,
            tool_calls=tool_calls,
            sources=sources or None,
            emotion=emotion,
        )
        self._writer.submit("add_turn", record)

    def on_tool_call(self, call: Call, report: ToolCallReport) -> None:
        """Keep the tool call until the reply it serves completes (it is stored with it)."""
        self._tool_calls.setdefault(call.session_id, []).append(report.as_record())

    def on_latency(self, call: Call, latency: LatencyReport) -> None:
        """Keep the latency until the reply it measures completes."""
        self._latency[call.session_id] = latency

    def on_sources(self, call: Call, sources: list[dict]) -> None:
        """Keep the knowledge-base sources until the reply that used them completes."""
        self._sources[call.session_id] = sources

    def on_command(self, call: Call, action: str) -> None:
        """Record a voice command as an event of the session (the action, never words)."""
        self._writer.submit(
            "add_event", "voice.command", {"session_id": call.session_id, "action": action}
        )

    def on_emotion(self, call: Call, emotion: dict) -> None:
        """Keep the caller's emotion until their turn completes (the latest estimate wins)."""
        self._emotion[call.session_id] = emotion

    def on_usage(self, call: Call, usage: UsageReport) -> None:
        """Record what a service request used, for analytics and cost."""
        record = UsageRecord(
            session_id=call.session_id,
            at=utc_now(),
            service=usage.service,
            provider=usage.provider,
            model=usage.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            characters=usage.characters,
            audio_secs=usage.audio_secs,
        )
        self._writer.submit("add_usage", record)

    def on_error(self, call: Call, error: ErrorReport) -> None:
        """Record a pipeline failure as an event of the session (its kind, never its text)."""
        data = {
            "session_id": call.session_id,
            "kind": error.kind,
            "processor": error.processor,
            "fatal": error.fatal,
        }
        self._writer.submit("add_event", "session.error", data)

    def on_session_ended(self, call: Call, reason: str) -> None:
        """Record how the session ended (and tool calls whose reply never came, on a cut-off
        assistant turn, so the audit trail keeps them)."""
        if self._tool_calls.get(call.session_id):
            self.on_turn(call, TurnReport(role="assistant", text="", interrupted=True))
        self._next_turn.pop(call.session_id, None)
        self._latency.pop(call.session_id, None)
        self._tool_calls.pop(call.session_id, None)
        self._sources.pop(call.session_id, None)
        self._emotion.pop(call.session_id, None)
        self._writer.submit("end_session", call.session_id, reason, utc_now())

    def _start(self, call: Call, started_at: str) -> None:
        self._storage.start_session(
            SessionRecord(
                id=call.session_id,
                user_id=call.stored_user_id,
                transport=call.transport,
                pipeline=call.pipeline or "",
                persona=call.persona or "",
                started_at=started_at,
            )
        )
