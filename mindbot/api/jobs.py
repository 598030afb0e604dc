"""Background jobs: batches of text questions for a persona, and knowledge-base ingestion.

A job is a row in the ``jobs`` table (``queued`` → ``running`` → ``done`` or ``failed``) and a
task in this process; ``GET /api/v1/jobs/{id}`` reads its status and result. At most
``api.max_concurrent_jobs`` run at once. Jobs still queued or running when the server stops (or
dies) are marked failed at the next start: nothing else would ever run them.
"""

# No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations, and
# the scope aliases (``Reader``, ``Writer``...) are local to each router function.

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from loguru import logger

from mindbot.api.auth import Principal
from mindbot.api.models import JobOut, QuestionsIn
from mindbot.errors import MindBotError, StorageError
from mindbot.storage import JobRecord, Storage

if TYPE_CHECKING:
    from mindbot.api.app import Api
    from mindbot.kb.knowledge import IngestReport
    from mindbot.personas import Persona
    from mindbot.runtime import MindBot

INTERRUPTED = "interrupted: the server stopped before the job finished"


class JobFailed(MindBotError):
    """A job failed as a whole; ``result`` keeps what it did produce.

    Args:
        message: Why, without personal data.
        result: The partial result to store with the failure.
    """

    def __init__(self, message: str, result: dict[str, Any] | None = None):
        super().__init__(message)
        self.result = result


class JobRunner:
    """Runs jobs as tasks of this process, a few at a time, and records their progress.

    Args:
        storage: Returns the storage (jobs need it).
        concurrency: How many jobs run at once.
    """

    def __init__(self, storage: Callable[[], Storage | None], concurrency: int):
        self._storage = storage
        self._concurrency = concurrency
        self._semaphore: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task] = set()

    def __str__(self) -> str:
        return "JobRunner"

    def recover(self) -> None:
        """Mark jobs a previous run left unfinished as failed (blocking)."""
        storage = self._storage()
        if storage is not None and (count := storage.fail_unfinished_jobs(INTERRUPTED)):
            logger.warning(f"{self}: {count} unfinished jobs from an earlier run marked failed")

    def submit(self, job: JobRecord, work: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """Run ``work`` for the queued ``job`` in the background; its return value is the result.

        ``work`` raises ``JobFailed`` to fail the job with a partial result; any other
        exception fails it with the exception's type.
        """
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._concurrency)
        task = asyncio.create_task(self._run(job, work, self._semaphore), name=f"job {job.id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel the jobs in progress; they are recorded as failed."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self,
        job: JobRecord,
        work: Callable[[], Awaitable[dict[str, Any]]],
        semaphore: asyncio.Semaphore,
    ) -> None:
        try:
            async with semaphore:
                await self._update(job, "running")
                logger.info(f"{self}: job {job.id[:8]} ({job.kind}) started")
                result = await work()
        except asyncio.CancelledError:
            await self._update(job, "failed", error=INTERRUPTED)
            raise
        except JobFailed as e:
            # The reason may quote a service's answer to the job's input: DEBUG only.
            logger.warning(f"{self}: job {job.id[:8]} ({job.kind}) failed")
            logger.debug(f"{self}: job {job.id[:8]} failed: {e}")
            await self._update(job, "failed", result=e.result, error=str(e))
        except Exception as e:
            logger.warning(f"{self}: job {job.id[:8]} ({job.kind}) failed ({type(e).__name__})")
            logger.opt(exception=e).debug(f"{self}: job {job.id[:8]} failed: {e}")
            await self._update(job, "failed", error=f"unexpected error ({type(e).__name__})")
        else:
            await self._update(job, "done", result=result)
            logger.info(f"{self}: job {job.id[:8]} ({job.kind}) done")

    async def _update(self, job: JobRecord, status: str, **fields: Any) -> None:
        storage = self._storage()
        if storage is None:
            return
        try:
            await asyncio.to_thread(storage.update_job, job.id, status, **fields)
        except StorageError as e:
            logger.error(f"{self}: recording job {job.id[:8]} as {status} failed: {e}")


async def answer_questions(
    bot: "MindBot", persona: "Persona", questions: list[str]
) -> dict[str, Any]:
    """Ask the configured LLM each question, with the persona's instructions, one at a time.

    Returns:
        ``persona``, ``answers`` (``question``, ``answer`` or None, ``error`` or None, in order),
        ``answered`` and ``failed``.

    Raises:
        JobFailed: No question got an answer (the result lists each error).
    """
    import openai
    from openai import AsyncOpenAI

    endpoint = bot.services.llm_endpoint
    client = AsyncOpenAI(
        base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=60.0, max_retries=1
    )
    instruction = persona.system_instruction()
    answers: list[dict[str, Any]] = []
    try:
        for question in questions:
            try:
                completion = await client.chat.completions.create(
                    model=endpoint.model,
                    messages=[
                        {"role": "system", "content": instruction},
                        {"role": "user", "content": question},
                    ],
                    temperature=bot.settings.llm_temperature,
                    max_tokens=bot.settings.llm_max_tokens,
                )
                answer = (completion.choices[0].message.content or "").strip()
                answers.append({"question": question, "answer": answer, "error": None})
            except (openai.OpenAIError, IndexError) as e:
                error = f"{type(e).__name__}: {str(e)[:200]}"
                answers.append({"question": question, "answer": None, "error": error})
    finally:
        await client.close()
    failed = sum(1 for a in answers if a["error"])
    result = {
        "persona": persona.name,
        "answers": answers,
        "answered": len(answers) - failed,
        "failed": failed,
    }
    if failed == len(answers):
        raise JobFailed(f"no question was answered ({answers[0]['error'][:80]})", result)
    return result


def ingest_result(report: "IngestReport") -> dict[str, Any]:
    """An ingestion report as JSON (the shape of ``IngestOut``)."""
    return {
        "added": list(report.added),
        "updated": list(report.updated),
        "unchanged": list(report.unchanged),
        "skipped": [asdict(s) for s in report.skipped],
        "chunks": report.chunks,
    }


async def ingest_urls(bot: "MindBot", collection: str, urls: list[str]) -> dict[str, Any]:
    """Download and index ``urls`` into a collection (created if new).

    Raises:
        JobFailed: Every URL was skipped (the result says why for each).
    """
    kb = await asyncio.to_thread(bot.knowledge_base, collection, create=True)
    report = await asyncio.to_thread(kb.add, urls)
    result = {"collection": collection, **ingest_result(report)}
    if report.skipped and len(report.skipped) == len(urls):
        raise JobFailed("no URL could be ingested", result)
    return result


def jobs_router(api: "Api") -> APIRouter:
    """The jobs routes: submit a batch of questions, read a job, list jobs."""
    router = APIRouter(tags=["jobs"])
    Reader = Annotated[Principal, Depends(api.auth.require("read"))]
    Writer = Annotated[Principal, Depends(api.auth.require("write"))]
    bot = api.bot

    @router.post("/jobs/questions", response_model=JobOut, status_code=202)
    async def ask(body: QuestionsIn, who: Writer):
        """Have a persona answer each question (text in, text out) with the configured LLM, in
        the background; follow it at ``GET /api/v1/jobs/{id}``."""
        name = body.persona or bot.settings.persona
        if name not in bot.personas.names():
            known = ", ".join(bot.personas.names())
            raise HTTPException(422, f"Unknown persona {name!r}; known: {known}")
        if len(body.questions) > api.settings.batch_max_questions:
            raise HTTPException(
                422, f"At most {api.settings.batch_max_questions} questions per job"
            )
        persona = bot.personas.get(name)
        job = await asyncio.to_thread(
            api.storage().add_job, "questions", {"persona": name, "questions": body.questions}
        )
        api.jobs.submit(job, lambda: answer_questions(bot, persona, body.questions))
        return JobOut.of(job)

    @router.get("/jobs/{job_id}", response_model=JobOut, responses={404: {"description": "None"}})
    async def get_job(job_id: str, who: Reader):
        """A job's status and, once done, its result."""
        job = await asyncio.to_thread(api.storage().get_job, job_id)
        if job is None:
            raise HTTPException(404, "No such job")
        return JobOut.of(job)

    @router.get("/jobs", response_model=list[JobOut])
    async def list_jobs(
        who: Reader,
        kind: Annotated[str | None, Query(max_length=64)] = None,
        status: Literal["queued", "running", "done", "failed"] | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ):
        """Jobs, newest first."""
        jobs = await asyncio.to_thread(api.storage().jobs, kind=kind, status=status, limit=limit)
        return [JobOut.of(job) for job in jobs]

    return router
