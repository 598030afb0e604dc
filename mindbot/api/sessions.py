"""``/api/v1/sessions`` and ``/api/v1/conversations/export``: stored and live conversations.

Reading a transcript and exporting conversations write access-audit rows.
"""

# No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations, and
# the scope aliases (``Reader``, ``Writer``...) are local to each router function.

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse
from loguru import logger

from mindbot.api.auth import Principal
from mindbot.api.models import (
    EndingOut,
    SessionDetail,
    SessionOut,
    SessionPage,
    TurnOut,
    VoiceChangeIn,
    VoiceChangeOut,
)

if TYPE_CHECKING:
    from mindbot.api.app import Api

EXPORT_PAGE = 100
EXPORT_CSV_COLUMNS = [
    "session_id",
    "user_id",
    "transport",
    "persona",
    "session_started_at",
    "idx",
    "role",
    "text",
    "started_at",
    "ended_at",
    "interrupted",
    "latency_secs",
]

NOT_FOUND = {404: {"description": "No such session"}}

Since = Annotated[datetime | None, Query(description="Started at or after (ISO 8601)")]
Until = Annotated[datetime | None, Query(description="Started before (ISO 8601)")]


def iso(moment: datetime | None) -> str | None:
    """A query's timestamp as storage compares them; a time without an offset is UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def sessions_router(api: "Api") -> APIRouter:
    """The sessions routes."""
    router = APIRouter(tags=["sessions"])
    Reader = Annotated[Principal, Depends(api.auth.require("read"))]
    Writer = Annotated[Principal, Depends(api.auth.require("write"))]
    Admin = Annotated[Principal, Depends(api.auth.require("admin"))]

    @router.get("/sessions", response_model=SessionPage)
    async def list_sessions(
        who: Reader,
        user_id: Annotated[int | None, Query(ge=1)] = None,
        persona: Annotated[str | None, Query(max_length=64)] = None,
        since: Since = None,
        until: Until = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ):
        """Sessions, newest first, filtered by user, persona and start time."""
        storage = api.storage()
        sessions = await asyncio.to_thread(
            storage.list_sessions,
            user_id=user_id,
            persona=persona,
            since=iso(since),
            until=iso(until),
            limit=limit,
            offset=offset,
        )
        if user_id is not None:
            # One person's sessions are an access to their data; the unfiltered list (which a
            # dashboard polls every few seconds) carries no transcript and is not audited.
            await api.audit(
                who,
                "sessions.listed",
                user_id=user_id,
                detail={"persona": persona, "since": iso(since), "until": iso(until)},
            )
        return SessionPage(
            items=[SessionOut.of(s, api.is_live(s.id)) for s in sessions],
            limit=limit,
            offset=offset,
            next_offset=offset + limit if len(sessions) == limit else None,
        )

    @router.get("/sessions/{session_id}", response_model=SessionDetail, responses=NOT_FOUND)
    async def get_session(session_id: str, who: Reader):
        """A session with its turns (transcript, latency, sources, tool calls) and figures."""
        storage = api.storage()
        session = await asyncio.to_thread(storage.get_session, session_id)
        if session is None:
            raise HTTPException(404, "No such session")
        await api.audit(who, "transcript.read", user_id=session.user_id, session_id=session.id)
        turns = await asyncio.to_thread(storage.turns, session_id)
        stats = await asyncio.to_thread(storage.session_stats, session_id)
        return SessionDetail(
            **SessionOut.of(session, api.is_live(session_id)).model_dump(),
            turns=[TurnOut.of(t) for t in turns],
            stats=stats,
        )

    @router.post(
        "/sessions/{session_id}/end",
        response_model=EndingOut,
        status_code=202,
        responses={**NOT_FOUND, 409: {"description": "The session is not in progress here"}},
    )
    async def end_session(session_id: str, who: Writer):
        """End a session in progress: the bot hangs up (or leaves the room) now."""
        task = api.live.get(session_id)
        if task is None or task.done():
            stored = await asyncio.to_thread(api.storage().get_session, session_id)
            if stored is None:
                raise HTTPException(404, "No such session")
            raise HTTPException(409, "The session is not in progress on this server")
        await api.audit(who, "session.ended", session_id=session_id)
        logger.info(f"API: key {who.key.id} ends session {session_id[:8]}")
        task.cancel()
        return EndingOut(session_id=session_id)

    @router.post(
        "/sessions/{session_id}/voice",
        response_model=VoiceChangeOut,
        status_code=202,
        responses={
            **NOT_FOUND,
            409: {"description": "The session is not in progress here"},
            422: {"description": "No such voice, or a value out of range"},
        },
    )
    async def change_voice(session_id: str, change: VoiceChangeIn, who: Writer):
        """Change a live session's voice, speed or volume, from the bot's next utterance."""
        voice_id = None
        if change.voice is not None:
            voice = api.bot.voices.resolve(change.voice, api.bot.providers.tts)
            if voice is None:
                raise HTTPException(422, f"No {api.bot.providers.tts} voice {change.voice!r}")
            voice_id = voice.id
        changed = await api.bot.restyle(
            session_id, voice=voice_id, speed=change.speed, volume=change.volume
        )
        if not changed:
            stored = await asyncio.to_thread(api.storage().get_session, session_id)
            if stored is None:
                raise HTTPException(404, "No such session")
            raise HTTPException(409, "The session is not in progress on this server")
        logger.info(f"API: key {who.key.id} changes the voice of session {session_id[:8]}")
        return VoiceChangeOut(
            session_id=session_id, voice=voice_id, speed=change.speed, volume=change.volume
        )

    @router.get(
        "/conversations/export",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"application/x-ndjson": {}, "text/csv": {}},
                "description": "One JSON object per session (jsonl) or one CSV row per turn.",
            }
        },
    )
    async def export_conversations(
        who: Admin,
        since: Since = None,
        until: Until = None,
        format: Literal["jsonl", "csv"] = "jsonl",
    ):
        """Every conversation started in a date range with its turns, streamed, oldest first."""
        storage = api.storage()
        start, end = iso(since), iso(until)
        if start and end and start >= end:
            raise HTTPException(422, "'since' must be before 'until'")
        await api.audit(
            who, "conversations.exported", detail={"since": start, "until": end, "format": format}
        )

        async def pages() -> AsyncIterator[list]:
            after = None
            while True:
                page = await asyncio.to_thread(
                    storage.sessions_with_turns,
                    since=start,
                    until=end,
                    after=after,
                    limit=EXPORT_PAGE,
                )
                if not page:
                    return
                yield page
                last = page[-1][0]
                after = (last.started_at, last.id)

        async def jsonl() -> AsyncIterator[str]:
            async for page in pages():
                yield "".join(
                    json.dumps(
                        {**asdict(s), "turns": [asdict(t) for t in turns]}, ensure_ascii=False
                    )
                    + "\n"
                    for s, turns in page
                )

        async def rows() -> AsyncIterator[str]:
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=EXPORT_CSV_COLUMNS)
            writer.writeheader()
            yield out.getvalue()
            async for page in pages():
                out.seek(0)
                out.truncate()
                for s, turns in page:
                    for t in turns:
                        writer.writerow(
                            {
                                "session_id": s.id,
                                "user_id": s.user_id,
                                "transport": s.transport,
                                "persona": s.persona,
                                "session_started_at": s.started_at,
                                "idx": t.idx,
                                "role": t.role,
                                "text": t.text,
                                "started_at": t.started_at,
                                "ended_at": t.ended_at,
                                "interrupted": t.interrupted,
                                "latency_secs": t.latency_secs,
                            }
                        )
                yield out.getvalue()

        name = f"conversations.{format}"
        return StreamingResponse(
            jsonl() if format == "jsonl" else rows(),
            media_type="application/x-ndjson" if format == "jsonl" else "text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return router
