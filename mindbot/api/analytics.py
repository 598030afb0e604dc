"""``/api/v1/analytics``: sessions, latency, tool use, usage and cost per UTC day, per user,
persona or provider, and per session (figures defined in ``mindbot.analytics``).

Every route needs a key with the ``read`` scope. Cost is priced when read, with the price table
in ``Settings.pricing``. Days are ``YYYY-MM-DD`` in UTC; a range is inclusive, at most 366 days,
and defaults to the last 14 days.
"""

# No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations, and
# the scope alias ``Reader`` is local to the router function.

import asyncio
from datetime import date
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from mindbot.analytics import Analytics, date_range, parse_day
from mindbot.api.auth import Principal

if TYPE_CHECKING:
    from mindbot.api.app import Api

DAY = r"^\d{4}-\d{2}-\d{2}$"


class CostParts(BaseModel):
    """Cost by service, in the report's currency."""

    llm: float
    tts: float
    stt: float


class FiguresOut(BaseModel):
    """The figures of a group of sessions (a day, a user, a persona, a provider, a session)."""

    sessions: int = Field(description="Sessions started in the group.")
    turns: int = Field(description="Turns, both roles.")
    duration_secs: float = Field(description="Summed duration of the sessions that ended.")
    interruptions: int = Field(description="Assistant turns cut off by the caller.")
    latency_p50: float | None = Field(
        description="Median voice-to-voice latency of assistant turns, seconds (nearest rank)."
    )
    latency_p95: float | None = Field(description="95th percentile of the same (nearest rank).")
    tool_calls: int = Field(description="Tool calls the LLM made.")
    tool_success_rate: float | None = Field(
        description="ok / (ok + error); declined, cancelled and unconfirmed calls are neither."
    )
    errors: int = Field(description="Pipeline errors (session.error events).")
    llm_prompt_tokens: int
    llm_completion_tokens: int
    tts_characters: int
    stt_audio_secs: float
    cost: float = Field(description="In the currency; priced now, from the stored usage.")
    cost_breakdown: CostParts
    latency_samples: int = Field(description="Assistant turns with a measured latency.")
    tool_errors: int = Field(description="Tool calls that failed.")
    valence_first_half: float | None = Field(
        description="Mean valence of the caller's turns in the first half of each session."
    )
    valence_second_half: float | None = Field(description="The same in the second half.")
    emotion_labels: dict[str, int] = Field(description="Caller turns per detected emotion.")


class DayOut(FiguresOut):
    """One UTC day."""

    day: str = Field(description="YYYY-MM-DD, UTC.")


class DailyOut(BaseModel):
    """Every day of a range, days without sessions included."""

    since: str
    until: str
    currency: str
    days: list[DayOut]
    totals: FiguresOut


class GroupOut(FiguresOut):
    """One user, persona or provider."""

    key: int | str | None = Field(
        description="The user id, persona or provider; null: no user or persona (anonymous "
        "callers, or usage of an erased user's sessions)."
    )


class BreakdownOut(BaseModel):
    """The figures per user, persona or provider over a range of days."""

    by: Literal["user", "persona", "provider"]
    since: str
    until: str
    currency: str
    groups: list[GroupOut]
    totals: FiguresOut


class EmotionPoint(BaseModel):
    """The caller's emotion at one turn."""

    turn: int
    label: str | None
    valence: float | None


class UsageOut(BaseModel):
    """What one service, provider and model used in the session, and its cost."""

    service: str
    provider: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    characters: int
    audio_secs: float
    requests: int
    cost: float


class SessionAnalyticsOut(FiguresOut):
    """One session in figures."""

    session_id: str
    user_id: int | None
    persona: str
    transport: str
    pipeline: str
    started_at: str
    ended_at: str | None
    end_reason: str | None
    day: str
    currency: str
    emotion_trend: list[EmotionPoint]
    usage: list[UsageOut]


Since = Annotated[
    str | None,
    Query(pattern=DAY, description="First UTC day, YYYY-MM-DD (default: 13 days before until)."),
]
Until = Annotated[
    str | None, Query(pattern=DAY, description="Last UTC day, inclusive (default: today).")
]


def _days(since: str | None, until: str | None) -> tuple[date, date]:
    """The range asked for, or 422 saying what is wrong with it."""
    try:
        return date_range(parse_day(since) if since else None, parse_day(until) if until else None)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


def analytics_router(api: "Api") -> APIRouter:
    """The analytics routes."""
    router = APIRouter(tags=["analytics"])
    Reader = Annotated[Principal, Depends(api.auth.require("read"))]

    def analytics() -> Analytics:
        return Analytics(api.storage(), api.bot.settings.pricing)

    @router.get("/analytics/daily", response_model=DailyOut)
    async def daily(_who: Reader, since: Since = None, until: Until = None):
        """Sessions, latency, tools, errors, usage and cost for each UTC day of a range."""
        first, last = _days(since, until)
        return await asyncio.to_thread(analytics().daily, first, last)

    @router.get("/analytics/breakdown", response_model=BreakdownOut)
    async def breakdown(
        _who: Reader,
        by: Annotated[Literal["user", "persona", "provider"], Query()],
        since: Since = None,
        until: Until = None,
    ):
        """The same figures per user (by id), persona or provider over a range of UTC days."""
        first, last = _days(since, until)
        return await asyncio.to_thread(analytics().breakdown, by, first, last)

    @router.get(
        "/analytics/sessions/{session_id}",
        response_model=SessionAnalyticsOut,
        responses={404: {"description": "No such session"}},
    )
    async def session(session_id: str, who: Reader):
        """One session's figures, its cost by service, usage and the caller's emotion by turn."""
        figures = await asyncio.to_thread(analytics().session, session_id)
        if figures is None:
            raise HTTPException(404, "No such session")
        # Emotion by turn is about a person: reading it is audited, as a transcript is.
        await api.audit(
            who, "session.analytics.read", user_id=figures["user_id"], session_id=session_id
        )
        return figures

    return router
