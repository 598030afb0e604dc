"""``/api/v1/personas``, ``/api/v1/tools`` and ``/api/v1/kb``: what the bot can be and know.

Knowledge-base work (embedding, downloads) runs in a thread. A URL or an uploaded file is
ingested while the request waits; a batch of URLs is a background job. Only http(s) URLs and
uploads are accepted: a path on this machine is never read on an API caller's behalf.
"""

# No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations, and
# the scope aliases (``Reader``, ``Writer``...) are local to each router function.

import asyncio
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, HTTPException, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from mindbot.api.auth import Principal
from mindbot.api.jobs import ingest_result, ingest_urls
from mindbot.api.models import (
    COLLECTION,
    DocumentOut,
    IngestJobIn,
    IngestOut,
    JobOut,
    PersonaOut,
    RemovedOut,
    ToolOut,
    UrlIn,
)
from mindbot.errors import MindBotError
from mindbot.kb.knowledge import IngestReport, KnowledgeError

if TYPE_CHECKING:
    from mindbot.api.app import Api

Collection = Annotated[str, PathParam(pattern=COLLECTION, description="A collection's name")]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
INGESTED = {
    200: {"description": "Nothing changed: the document is already indexed"},
    201: {"description": "Added or re-indexed"},
    422: {"description": "Not ingested (the reason is given)"},
}


def catalog_router(api: "Api") -> APIRouter:
    """The personas, tools and knowledge-base routes."""
    router = APIRouter()
    Reader = Annotated[Principal, Depends(api.auth.require("read"))]
    Writer = Annotated[Principal, Depends(api.auth.require("write"))]
    bot = api.bot

    @router.get("/personas", response_model=list[PersonaOut], tags=["catalog"])
    async def personas(who: Reader):
        """The personas the bot can play."""
        out = []
        for name in bot.personas.names():
            p = bot.personas.get(name)
            out.append(
                PersonaOut(
                    name=p.name,
                    display_name=p.display_name,
                    language=p.language,
                    greeting=p.greeting,
                    tools=list(p.tools),
                    knowledge_base=p.knowledge_base,
                )
            )
        return out

    @router.get("/tools", response_model=list[ToolOut], tags=["catalog"])
    async def tools(who: Reader):
        """The tools the LLM can call, and whether the settings configure each."""
        out = []
        for name in bot.tools.names:
            tool = bot.tools.get(name)
            if tool is None:
                continue
            out.append(
                ToolOut(
                    name=tool.name,
                    description=tool.description,
                    read_only=tool.read_only,
                    confirms=tool.confirm is not None,
                    available=bool(tool.available(bot.settings.tools)),
                )
            )
        return out

    async def open_collection(collection: str, *, create: bool):
        try:
            kb = await asyncio.to_thread(bot.knowledge_base, collection, create=create)
        except MindBotError as e:
            raise HTTPException(503, f"The knowledge base cannot be opened: {e}") from None
        if kb is None:
            raise HTTPException(404, f"No knowledge-base collection {collection!r}")
        return kb

    def ingested(report: IngestReport) -> JSONResponse:
        body = IngestOut(**ingest_result(report)).model_dump()
        if report.skipped and not report.changed and not report.unchanged:
            return JSONResponse(body, status_code=422)
        return JSONResponse(body, status_code=201 if report.changed else 200)

    @router.get("/kb/{collection}/documents", response_model=list[DocumentOut], tags=["kb"])
    async def list_documents(collection: Collection, who: Reader):
        """The documents in a collection, by title."""
        kb = await open_collection(collection, create=False)
        documents = await asyncio.to_thread(kb.list)
        return [
            DocumentOut(
                **{
                    **asdict(d),
                    "added_at": d.added_at.isoformat(),
                    "updated_at": d.updated_at.isoformat(),
                }
            )
            for d in documents
        ]

    @router.post(
        "/kb/{collection}/documents", response_model=IngestOut, responses=INGESTED, tags=["kb"]
    )
    async def add_url(collection: Collection, body: UrlIn, who: Writer):
        """Download a web page or file and index it (the collection is created if new)."""
        kb = await open_collection(collection, create=True)
        return ingested(await asyncio.to_thread(kb.add, [body.url]))

    @router.post(
        "/kb/{collection}/uploads", response_model=IngestOut, responses=INGESTED, tags=["kb"]
    )
    async def upload(collection: Collection, file: UploadFile, who: Writer):
        """Index an uploaded file (Markdown, text, HTML, PDF…); a later upload with the same
        name replaces it."""
        name = _UNSAFE.sub("_", Path(file.filename or "").name).strip("._")[:120]
        if not name:
            raise HTTPException(422, "The upload needs a file name")
        kb = await open_collection(collection, create=True)
        folder = bot.knowledge_folder / "uploads" / collection
        path = folder / name
        data = await file.read()
        await asyncio.to_thread(_write, path, data)
        return ingested(await asyncio.to_thread(kb.add, [path]))

    @router.delete(
        "/kb/{collection}/documents/{doc_id:path}", response_model=RemovedOut, tags=["kb"]
    )
    async def remove_document(collection: Collection, doc_id: str, who: Writer):
        """Remove a document (by doc id, title or file name) from a collection."""
        kb = await open_collection(collection, create=False)
        try:
            chunks = await asyncio.to_thread(kb.remove, doc_id)
        except KnowledgeError as e:
            raise HTTPException(404, str(e)) from None
        return RemovedOut(doc_id=doc_id, chunks=chunks)

    @router.post("/kb/{collection}/jobs", response_model=JobOut, status_code=202, tags=["kb"])
    async def ingest_job(collection: Collection, body: IngestJobIn, who: Writer):
        """Ingest many URLs in the background; follow it at ``GET /api/v1/jobs/{id}``."""
        if len(body.urls) > api.settings.batch_max_urls:
            raise HTTPException(422, f"At most {api.settings.batch_max_urls} URLs per job")
        job = await asyncio.to_thread(
            api.storage().add_job, "kb.ingest", {"collection": collection, "urls": body.urls}
        )
        api.jobs.submit(job, lambda: ingest_urls(bot, collection, body.urls))
        return JobOut.of(job)

    return router


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(data)
    temporary.replace(path)
