"""The REST API's request and response bodies (they are also its OpenAPI schema)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mindbot.preferences import parse_language, parse_rate, parse_voice, parse_wake_phrase
from mindbot.storage import (
    AccessAuditRecord,
    JobRecord,
    SessionRecord,
    TurnRecord,
)

E164 = r"^\+[1-9][0-9]{1,14}$"
PERSONA_NAME = r"^[a-z0-9]+(-[a-z0-9]+)*$"
COLLECTION = r"^[A-Za-z0-9_-]{1,64}$"


class _In(BaseModel):
    """A request body: unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --- sessions ---------------------------------------------------------------------------------


class SessionOut(BaseModel):
    """A session (a call, a WebRTC or Daily conversation)."""

    id: str
    user_id: int | None
    transport: str
    pipeline: str
    persona: str
    started_at: str
    ended_at: str | None
    end_reason: str | None
    live: bool = Field(description="Whether it is in progress in this server now.")

    @classmethod
    def of(cls, session: SessionRecord, live: bool) -> SessionOut:
        """From a stored session."""
        return cls(**asdict(session), live=live)


class TurnOut(BaseModel):
    """One turn: what was said, how it went and what served it."""

    idx: int
    role: Literal["user", "assistant"]
    text: str
    started_at: str
    ended_at: str
    interrupted: bool
    latency_secs: float | None = Field(description="End of the user's speech to the first audio.")
    stages: dict[str, float] | None = Field(description="Latency contributions, label → seconds.")
    emotion: dict[str, Any] | None
    sources: list[Any] | None = Field(description="Knowledge-base passages the reply used.")
    tool_calls: list[Any] | None = Field(description="Tool calls made for the reply.")

    @classmethod
    def of(cls, turn: TurnRecord) -> TurnOut:
        """From a stored turn."""
        values = asdict(turn)
        values.pop("session_id")
        values.pop("id")
        return cls(**values)


class SessionDetail(SessionOut):
    """A session with its turns and figures."""

    turns: list[TurnOut]
    stats: dict[str, Any] | None = Field(description="Figures stored when the session ended.")


class SessionPage(BaseModel):
    """A page of sessions, newest first."""

    items: list[SessionOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="The offset of the next page, if there may be one.")


class EndingOut(BaseModel):
    """A live session asked to end."""

    session_id: str
    status: Literal["ending"] = "ending"


class VoiceChangeIn(BaseModel):
    """How a live session should sound from its next utterance; omitted fields stay."""

    model_config = ConfigDict(extra="forbid")

    voice: str | None = Field(
        default=None, min_length=1, max_length=100, description="A voice's name or id."
    )
    speed: float | None = Field(default=None, ge=0.6, le=1.5, description="Multiple of normal.")
    volume: float | None = Field(default=None, ge=0.5, le=2.0, description="Multiple of normal.")


class VoiceChangeOut(BaseModel):
    """A voice change queued into a live session."""

    session_id: str
    voice: str | None
    speed: float | None
    volume: float | None
    applies: Literal["from the next utterance"] = "from the next utterance"


# --- users ------------------------------------------------------------------------------------


class IdentityOut(BaseModel):
    """One way the user reaches MindBot."""

    kind: str
    value: str


class UserOut(BaseModel):
    """A user, how they reach MindBot and their preferences."""

    id: int
    created_at: str
    display_name: str | None
    identities: list[IdentityOut]
    preferences: dict[str, Any]
    sessions: int = Field(description="How many sessions are stored for them.")


class LookupIn(_In):
    """Find a user by an identity (a phone number, a client's user id), kept out of the URL."""

    identity: str = Field(min_length=1, max_length=200)


class PreferencesIn(_In):
    """Preferences to change; leave out those that stay. Validated as the voice tool does."""

    name: str | None = Field(default=None, min_length=1, max_length=40)
    memory: bool | None = Field(default=None, description="Whether MindBot remembers them.")
    timezone: str | None = Field(default=None, description="An IANA name, e.g. Europe/London.")
    speaking_rate: str | float | None = Field(
        default=None, description="slow, normal, fast, or 0.6 to 1.5."
    )
    language: str | None = Field(default=None, description="An ISO 639-1 code or English name.")
    voice: str | None = Field(default=None, description="A voice id or name of the TTS.")
    wake_phrase: str | None = Field(
        default=None, description="What the caller says to wake an always-on bot (2-6 words)."
    )

    @field_validator("wake_phrase")
    @classmethod
    def _wake_phrase(cls, value: str | None) -> str | None:
        if value is None:
            return None
        phrase = parse_wake_phrase(value)
        if phrase is None:
            raise ValueError("a wake phrase is two to six words, at most 60 characters")
        return phrase

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone such as Europe/London") from None
        return value

    @field_validator("speaking_rate")
    @classmethod
    def _rate(cls, value: str | float | None) -> float | None:
        if value is None:
            return None
        rate = parse_rate(value)
        if rate is None:
            raise ValueError("a speaking rate is slow, normal, fast or a number from 0.6 to 1.5")
        return rate

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = parse_language(value)
        if code is None:
            raise ValueError("not a supported language (an ISO 639-1 code or its English name)")
        return code

    @field_validator("voice")
    @classmethod
    def _voice(cls, value: str | None) -> str | None:
        if value is None:
            return None
        voice = parse_voice(value)
        if voice is None:
            raise ValueError("not a voice: a provider's voice id or name, at most 100 characters")
        return voice


class ErasedOut(BaseModel):
    """A user erased."""

    user_id: int
    erased: bool = True


class AuditOut(BaseModel):
    """An access to personal data (who, what, whose), without the data."""

    id: int
    at: str
    actor: str
    action: str
    key_id: int | None
    user_id: int | None
    session_id: str | None
    erasure_id: str | None
    detail: dict[str, Any] | None

    @classmethod
    def of(cls, row: AccessAuditRecord) -> AuditOut:
        """From a stored audit row."""
        return cls(**asdict(row))


# --- catalog ----------------------------------------------------------------------------------


class PersonaOut(BaseModel):
    """A persona the bot can play."""

    name: str
    display_name: str
    language: str
    greeting: str
    tools: list[str]
    knowledge_base: str


class ToolOut(BaseModel):
    """A tool the LLM can call."""

    name: str
    description: str
    read_only: bool
    confirms: bool = Field(description="Whether it runs only after the caller says yes.")
    available: bool = Field(description="Whether the settings configure it.")


class DocumentOut(BaseModel):
    """A document in a knowledge-base collection."""

    doc_id: str
    title: str
    source: str
    chunks: int
    added_at: str
    updated_at: str


class UrlIn(_In):
    """A document to download and index."""

    url: str = Field(pattern=r"^https?://", max_length=2000)


class SkippedOut(BaseModel):
    """A source that was not ingested, and why."""

    source: str
    reason: str


class IngestOut(BaseModel):
    """What an ingestion did."""

    added: list[str]
    updated: list[str]
    unchanged: list[str]
    skipped: list[SkippedOut]
    chunks: int


class RemovedOut(BaseModel):
    """A document removed from a collection."""

    doc_id: str
    chunks: int


class IngestJobIn(_In):
    """URLs to ingest in the background."""

    urls: list[str] = Field(min_length=1)

    @field_validator("urls")
    @classmethod
    def _http(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")) or len(url) > 2000:
                raise ValueError(f"not an http(s) URL: {url[:80]!r}")
        return urls


# --- jobs -------------------------------------------------------------------------------------


class QuestionsIn(_In):
    """Questions for a persona to answer in the background, each on its own."""

    persona: str | None = Field(default=None, pattern=PERSONA_NAME, max_length=64)
    questions: list[str] = Field(min_length=1)

    @field_validator("questions")
    @classmethod
    def _texts(cls, questions: list[str]) -> list[str]:
        cleaned = [q.strip() for q in questions]
        if any(not q or len(q) > 4000 for q in cleaned):
            raise ValueError("each question must have 1 to 4000 characters")
        return cleaned


class JobOut(BaseModel):
    """A background job and, once it is done, its result."""

    id: str
    kind: str
    status: Literal["queued", "running", "done", "failed"]
    created_at: str
    updated_at: str
    result: dict[str, Any] | None
    error: str | None

    @classmethod
    def of(cls, job: JobRecord) -> JobOut:
        """From a stored job."""
        values = asdict(job)
        values.pop("input")
        return cls(**values)


# --- calls ------------------------------------------------------------------------------------


class TokenOut(BaseModel):
    """A token for ``/start`` or ``/api/offer`` (``Authorization: Bearer`` or ``?token=``)."""

    token: str
    expires_at: str


class DailyCallIn(_In):
    """Start the bot in a Daily room."""

    persona: str | None = Field(default=None, pattern=PERSONA_NAME, max_length=64)
    user_id: str | None = Field(default=None, min_length=1, max_length=200)


class DailyCallOut(BaseModel):
    """The bot is joining this room as this session."""

    session_id: str
    room_url: str


class TwilioCallIn(_In):
    """Have the bot phone someone."""

    to: str = Field(pattern=E164, description="The number to call, E.164.")
    from_number: str | None = Field(
        default=None, pattern=E164, description="Your Twilio number; default: the setting."
    )
    persona: str | None = Field(default=None, pattern=PERSONA_NAME, max_length=64)


class TwilioCallOut(BaseModel):
    """The call Twilio is placing."""

    call_sid: str
    status: str | None
