"""Shared plumbing for the loopback stand-ins: lifecycle, HTTP and websocket servers.

Every stand-in binds ``127.0.0.1`` on a free port chosen by the OS, exposes the URL to hand
to the real client, records what it received, and can be used as an async context manager::

    async with ScriptedLLMServer() as llm:
        service = OpenAILLMService(api_key="sk-test", base_url=llm.base_url)

``stop()`` closes every open connection and gives up waiting after a short grace period, so a
misbehaving client can never hang a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from loguru import logger
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

HOST = "127.0.0.1"
"""The only interface a stand-in ever binds."""

STOP_GRACE_SECS = 2.0
"""How long ``stop()`` waits for handlers to finish before cancelling them."""


class StandIn(ABC):
    """Base class: start/stop lifecycle and ``async with`` support.

    Subclasses implement ``_start_server`` (bind and return the port) and ``_stop_server``.
    Background tasks started with ``_spawn`` are cancelled by ``stop()``.
    """

    def __init__(self) -> None:
        """Initialize an unstarted stand-in."""
        self._port: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __str__(self) -> str:
        """Return the class name and port, used as the log prefix."""
        return f"{type(self).__name__}#{self._port or '-'}"

    @property
    def port(self) -> int:
        """The TCP port the stand-in listens on.

        Raises:
            RuntimeError: If the stand-in has not been started.
        """
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def started(self) -> bool:
        """Whether the stand-in is listening."""
        return self._port is not None

    async def start(self) -> Self:
        """Bind 127.0.0.1 on a free port and start serving.

        Returns:
            The stand-in itself, so ``srv = await StandIn().start()`` works.
        """
        if self._port is None:
            self._port = await self._start_server()
            logger.debug(f"{self}: listening on {HOST}:{self._port}")
        return self

    async def stop(self) -> None:
        """Close every connection, cancel background work and stop listening.

        Safe to call twice; never waits more than a few seconds.
        """
        if self._port is None:
            return
        logger.debug(f"{self}: stopping")
        await self._cancel_tasks()
        try:
            await asyncio.wait_for(self._stop_server(), timeout=STOP_GRACE_SECS * 2)
        except TimeoutError:
            logger.warning(f"{self}: server did not stop in time; abandoning it")
        except Exception as e:  # noqa: BLE001 - stopping must not raise
            logger.warning(f"{self}: error while stopping: {e}")
        await self._cancel_tasks()
        self._port = None

    async def __aenter__(self) -> Self:
        """Start the stand-in."""
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the stand-in."""
        await self.stop()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; ``stop()`` cancels it.

        Args:
            coro: The coroutine to run.
            name: A task name, for debugging.

        Returns:
            The task.
        """
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.opt(exception=exc).error(f"{self}: background task failed: {exc}")

    async def _cancel_tasks(self) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_SECS)

    @abstractmethod
    async def _start_server(self) -> int:
        """Start listening on 127.0.0.1 and return the port."""

    @abstractmethod
    async def _stop_server(self) -> None:
        """Stop listening and close every connection."""


class HttpStandIn(StandIn):
    """A stand-in served by aiohttp.

    Subclasses add their routes in ``_add_routes`` and shape unexpected failures in
    ``_error_response`` (each service has its own error body).
    """

    def __init__(self) -> None:
        """Initialize an unstarted HTTP stand-in."""
        super().__init__()
        self._runner: web.AppRunner | None = None
        self._inflight: set[asyncio.Task[Any]] = set()

    @abstractmethod
    def _add_routes(self, app: web.Application) -> None:
        """Add the service's routes."""

    def _error_response(self, status: int, message: str) -> web.Response:
        """Build the service's error reply.

        Args:
            status: HTTP status.
            message: Human-readable message.

        Returns:
            A JSON response; subclasses override the body shape.
        """
        return web.json_response({"error": message}, status=status)

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Turn any handler crash into a logged error reply instead of a dead server."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status >= 400:
                return self._error_response(e.status, e.reason)
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as e:  # noqa: BLE001 - the stand-in must keep serving
            logger.opt(exception=e).error(f"{self}: {request.method} {request.path} failed: {e}")
            return self._error_response(500, f"stand-in error: {e}")
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _start_server(self) -> int:
        app = web.Application(middlewares=[self._guard])
        self._add_routes(app)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=STOP_GRACE_SECS
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def _stop_server(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            # Cut long-running replies (slow SSE streams) short instead of waiting them out.
            inflight = [t for t in self._inflight if not t.done()]
            for task in inflight:
                task.cancel()
            if inflight:
                await asyncio.wait(inflight, timeout=STOP_GRACE_SECS)
            await runner.cleanup()


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """Read a request body that must be a JSON object.

    Args:
        request: The aiohttp request.

    Returns:
        The parsed object.

    Raises:
        ValueError: If the body is not valid UTF-8 JSON or not an object.
    """
    raw = await request.read()
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"We could not parse the JSON body of your request: {e}") from e
    if not isinstance(body, dict):
        raise ValueError("The request body must be a JSON object.")
    return body


def lower_headers(items: Any) -> dict[str, str]:
    """Copy headers into a plain dict with lower-cased names (the last value wins).

    Args:
        items: An iterable of ``(name, value)`` pairs.

    Returns:
        The headers.
    """
    return {str(k).lower(): str(v) for k, v in items}


class WebSocketStandIn(StandIn):
    """A stand-in served by the ``websockets`` package.

    Subclasses set ``path`` and implement ``_serve(ws, info)``; ``_check_auth`` may reject the
    handshake. Every accepted connection is recorded in ``connections`` as a dict with
    ``path``, ``query`` (``parse_qs`` lists) and ``headers`` (lower-cased names).
    """

    path: str = "/"

    def __init__(self) -> None:
        """Initialize an unstarted websocket stand-in."""
        super().__init__()
        self._server: Server | None = None
        self._open: set[ServerConnection] = set()
        self.connections: list[dict[str, Any]] = []

    @property
    def open_connections(self) -> int:
        """How many client connections are open now."""
        return len(self._open)

    def _check_auth(self, headers: dict[str, str]) -> bool:
        """Return whether the handshake headers carry valid credentials.

        Args:
            headers: Handshake headers, lower-cased names.
        """
        return True

    def _check_query(self, query: dict[str, list[str]]) -> str | None:
        """Return an error message if the query string is unacceptable, else None.

        Args:
            query: The parsed query string.
        """
        return None

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        target = urlsplit(request.path)
        if target.path.rstrip("/") != self.path.rstrip("/"):
            logger.warning(f"{self}: rejecting handshake for unknown path {target.path!r}")
            return connection.respond(404, f"Not Found: {target.path}\n")
        headers = lower_headers(request.headers.raw_items())
        if not self._check_auth(headers):
            logger.warning(f"{self}: rejecting handshake with bad credentials")
            return connection.respond(401, "Unauthorized\n")
        query = parse_qs(target.query, keep_blank_values=True)
        if (problem := self._check_query(query)) is not None:
            logger.warning(f"{self}: rejecting handshake: {problem}")
            return connection.respond(400, f"{problem}\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        target = urlsplit(ws.request.path if ws.request else "/")
        info = {
            "path": target.path,
            "query": parse_qs(target.query, keep_blank_values=True),
            "headers": lower_headers(ws.request.headers.raw_items() if ws.request else []),
        }
        self.connections.append(info)
        self._open.add(ws)
        try:
            await self._serve(ws, info)
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - one bad connection must not kill the server
            logger.opt(exception=e).error(f"{self}: connection handler failed: {e}")
            with contextlib.suppress(Exception):
                await ws.close(1011, "stand-in error")
        finally:
            self._open.discard(ws)

    @abstractmethod
    async def _serve(self, ws: ServerConnection, info: dict[str, Any]) -> None:
        """Talk with one connected client until it leaves."""

    async def close_all(self, code: int = 1011, reason: str = "boom") -> None:
        """Close every open client connection (fault injection).

        Args:
            code: The websocket close code.
            reason: The close reason.
        """
        conns = list(self._open)
        logger.debug(f"{self}: closing {len(conns)} connection(s) with {code} {reason!r}")
        await asyncio.gather(
            *(asyncio.wait_for(ws.close(code, reason), STOP_GRACE_SECS) for ws in conns),
            return_exceptions=True,
        )

    async def _start_server(self) -> int:
        self._server = await serve(
            self._handle,
            HOST,
            0,
            process_request=self._process_request,
            max_size=None,
            close_timeout=STOP_GRACE_SECS / 2,
        )
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def _stop_server(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close(close_connections=True)
        try:
            await asyncio.wait_for(server.wait_closed(), timeout=STOP_GRACE_SECS)
        except TimeoutError:
            logger.warning(f"{self}: connections did not close in time")
            for ws in list(self._open):
                ws.transport.abort()
