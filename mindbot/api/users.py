"""``/api/v1/users`` and ``/api/v1/audit``: a user's data, preferences, export and erasure.

Every access to a user's data writes an access-audit row first (who, what, whose; never the
data), and the audit trail itself is readable with the ``admin`` scope.
"""

# No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations, and
# the scope aliases (``Reader``, ``Writer``...) are local to each router function.

import asyncio
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response
from loguru import logger

from mindbot.api.auth import Principal
from mindbot.api.models import (
    AuditOut,
    ErasedOut,
    IdentityOut,
    LookupIn,
    PreferencesIn,
    UserOut,
)
from mindbot.export import render

if TYPE_CHECKING:
    from mindbot.api.app import Api

NOT_FOUND = {404: {"description": "No such user"}}
EXPORT_TYPES = {
    "json": "application/json",
    "md": "text/markdown; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}


def users_router(api: "Api") -> APIRouter:
    """The users and audit routes."""
    router = APIRouter(tags=["users"])
    Reader = Annotated[Principal, Depends(api.auth.require("read"))]
    Writer = Annotated[Principal, Depends(api.auth.require("write"))]
    Admin = Annotated[Principal, Depends(api.auth.require("admin"))]

    async def user_out(user_id: int) -> UserOut:
        storage = api.storage()
        user = await asyncio.to_thread(storage.get_user, user_id)
        if user is None:
            raise HTTPException(404, "No such user")
        identities = await asyncio.to_thread(storage.identities, user_id)
        preferences = await asyncio.to_thread(storage.preferences, user_id)
        sessions = await asyncio.to_thread(storage.sessions_for_user, user_id)
        return UserOut(
            id=user.id,
            created_at=user.created_at,
            display_name=user.display_name,
            identities=[IdentityOut(kind=i.kind, value=i.value) for i in identities],
            preferences=preferences,
            sessions=len(sessions),
        )

    async def existing(user_id: int) -> None:
        if await asyncio.to_thread(api.storage().get_user, user_id) is None:
            raise HTTPException(404, "No such user")

    @router.get("/users/{user_id}", response_model=UserOut, responses=NOT_FOUND)
    async def get_user(user_id: int, who: Reader):
        """A user: their identities, preferences and how many sessions are stored."""
        await existing(user_id)
        await api.audit(who, "user.read", user_id=user_id)
        return await user_out(user_id)

    @router.post("/users/lookup", response_model=UserOut, responses=NOT_FOUND)
    async def lookup_user(body: LookupIn, who: Reader):
        """The user with an identity (a phone number, a client's user id), sent in the body so
        it stays out of URLs and access logs."""
        user = await asyncio.to_thread(api.storage().find_user, body.identity)
        if user is None:
            raise HTTPException(404, "No such user")
        await api.audit(who, "user.read", user_id=user.id)
        return await user_out(user.id)

    @router.patch("/users/{user_id}/preferences", response_model=dict, responses=NOT_FOUND)
    async def update_preferences(user_id: int, body: PreferencesIn, who: Writer):
        """Change some of a user's preferences (the rest stay); returns them all."""
        changes = body.model_dump(exclude_none=True)
        if not changes:
            raise HTTPException(422, "Give at least one preference to change")
        storage = api.storage()
        await existing(user_id)
        await api.audit(
            who, "user.preferences_updated", user_id=user_id, detail={"keys": sorted(changes)}
        )
        for key, value in changes.items():
            await asyncio.to_thread(storage.set_preference, user_id, key, value)
        return await asyncio.to_thread(storage.preferences, user_id)

    @router.get(
        "/users/{user_id}/export",
        response_class=Response,
        responses={
            **NOT_FOUND,
            200: {"content": {t: {} for t in EXPORT_TYPES.values()}, "description": "The data"},
        },
    )
    async def export_user(user_id: int, who: Admin, format: Literal["json", "md", "csv"] = "json"):
        """Everything stored about a user (GDPR access), as ``mindbot export`` writes it."""
        await existing(user_id)
        await api.audit(who, "user.exported", user_id=user_id, detail={"format": format})
        data = await asyncio.to_thread(api.storage().export_user, user_id)
        return Response(
            render(data, format),
            media_type=EXPORT_TYPES[format],
            headers={"Content-Disposition": f'attachment; filename="user-{user_id}.{format}"'},
        )

    @router.delete("/users/{user_id}", response_model=ErasedOut, responses=NOT_FOUND)
    async def erase_user(user_id: int, who: Admin):
        """Erase everything stored about a user (GDPR erasure); the file is scrubbed too."""
        await existing(user_id)
        # Audited first: the erasure unlinks the row from the user but keeps it.
        await api.audit(who, "user.erased", user_id=user_id)
        await asyncio.to_thread(api.storage().erase_user, user_id)
        logger.info(f"API: key {who.key.id} erased a user")
        return ErasedOut(user_id=user_id)

    @router.get("/audit", response_model=list[AuditOut], tags=["audit"])
    async def audit_trail(
        who: Admin,
        user_id: Annotated[int | None, Query(ge=1)] = None,
        session_id: Annotated[str | None, Query(max_length=200)] = None,
        action: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ):
        """Accesses to personal data, newest first: who, what and whose, never the data."""
        rows = await asyncio.to_thread(
            api.storage().access_audit,
            user_id=user_id,
            session_id=session_id,
            action=action,
            limit=limit,
        )
        return [AuditOut.of(row) for row in rows]

    return router
