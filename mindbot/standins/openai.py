"""A scripted OpenAI chat-completions (and embeddings) server for tests and benchmarks.

It speaks the real wire protocol (PROTOCOLS.md section 1), so ``OpenAILLMService`` and the
``openai`` SDK work against it unchanged::

    async with ScriptedLLMServer() as llm:
        llm.script(Text("Hello there."), ToolCall("get_weather", {"city": "Paris"}))
        service = OpenAILLMService(api_key="sk-test", base_url=llm.base_url)

``/v1/embeddings`` answers every input with a deterministic bag-of-words vector (hashed word
stems, L2-normalized), so texts that share words are near each other and retrieval through the
real OpenAI client can be tested offline; ``encoding_format`` ``float`` and ``base64`` (the
SDK's default) are both served, and ``dimensions`` is honoured.

One scripted reply is consumed per request. The SDK retries 408/409/429/5xx twice, so a test
that wants ``OpenAILLMService`` to *see* a 500 must script three ``HttpError(500)`` replies
(or set ``HttpError(..., should_retry=False)``, which sends ``x-should-retry: false``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web
from loguru import logger

from mindbot.standins._server import HttpStandIn, lower_headers, read_json_object

DEFAULT_TEXT = "I heard you."
"""What the server says when nothing is scripted and no default reply is set."""

EMBEDDING_DIM = 256
"""Length of the stand-in's embeddings when the request does not ask for ``dimensions``."""
MAX_EMBEDDING_INPUTS = 2048


@dataclass
class Text:
    """A plain text answer, streamed as word-sized deltas."""

    text: str


@dataclass
class ToolCall:
    """One function call.

    ``arguments`` may be a dict (sent as JSON) or a raw string (sent verbatim, so a test can
    send invalid JSON). ``id`` defaults to a random ``call_…`` id.
    """

    name: str
    arguments: dict[str, Any] | str
    id: str | None = None


@dataclass
class ToolCalls:
    """Several function calls in one answer, optionally preceded by some text."""

    calls: list[ToolCall]
    text: str = ""


@dataclass
class HttpError:
    """An HTTP error reply with OpenAI's error body.

    Like every reply it answers one request. The SDK retries 408/409/429/5xx twice, so
    ``OpenAILLMService`` only reports a 500 after three of them (or one with
    ``should_retry=False``).

    ``retry_after`` (seconds) adds a ``retry-after-ms`` header and ``should_retry`` an
    ``x-should-retry`` header; the SDK honours both when deciding whether to retry (a
    ``retry_after`` of 0 is ignored by the SDK: use e.g. 0.01 to make retries quick).
    """

    status: int
    message: str = "boom"
    code: str | None = None
    type: str = "invalid_request_error"
    retry_after: float | None = None
    should_retry: bool | None = None


@dataclass
class MidStreamError:
    """Stream ``after_text`` then an SSE error event, and close without ``[DONE]``.

    For a non-streaming request this becomes a 500 ``server_error``.
    """

    message: str
    after_text: str = ""


Reply = Text | ToolCall | ToolCalls | HttpError | MidStreamError | str
"""A scripted reply; a bare ``str`` means ``Text(str)``."""

_PIECE_RE = re.compile(r"\s*\S+|\s+")


def split_text(text: str) -> list[str]:
    """Split text into word-sized pieces that join back to exactly ``text``.

    Args:
        text: The text to split.

    Returns:
        Pieces like ``["Hello", " there."]``.
    """
    return _PIECE_RE.findall(text)


def _split_n(s: str, n: int) -> list[str]:
    if not s:
        return [""]
    size = max(1, math.ceil(len(s) / n))
    return [s[i : i + size] for i in range(0, len(s), size)]


def _bag_of_words(text: str, dims: int) -> np.ndarray:
    """Hashed word stems (first five letters), L2-normalized; zero text gives a unit vector."""
    vector = np.zeros(dims, dtype=np.float32)
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word[:5].encode(), digest_size=8).digest()
        vector[int.from_bytes(digest, "little") % dims] += 1.0
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        vector[0] = norm = 1.0
    return vector / norm


def _estimate_tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4)) if chars else 0


def _error_body(
    message: str, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ScriptedLLMServer(HttpStandIn):
    """OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models`` on loopback.

    Records every JSON chat request body in ``requests`` (and its headers, names lower-cased,
    in ``headers`` at the same index), including requests later refused with 401; embedding
    requests go to ``embedding_requests``.
    """

    def __init__(
        self,
        *,
        default_reply: Reply | Callable[[dict[str, Any]], Reply] | None = None,
        first_token_delay: float = 0.0,
        token_delay: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        """Initialize the server (call ``start()`` or use ``async with``).

        Args:
            default_reply: The reply when the script is empty: a reply, or a callable that
                gets the request body and returns one. ``None`` answers "I heard you.".
            first_token_delay: Seconds before the first chunk of each answer.
            token_delay: Seconds between streamed deltas.
            api_key: If set, requests must carry ``Authorization: Bearer <api_key>``.
        """
        super().__init__()
        self._default_reply = default_reply
        self._first_token_delay = first_token_delay
        self._token_delay = token_delay
        self._api_key = api_key
        self._script: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.embedding_requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        """The URL to pass as ``base_url`` to the OpenAI client (ends in ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pending(self) -> int:
        """How many scripted replies are still queued."""
        return len(self._script)

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request consumes the oldest one.

        Args:
            *replies: The replies, in the order requests should get them.
        """
        self._script.extend(replies)

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/embeddings", self._embeddings)

    def _error_response(self, status: int, message: str) -> web.Response:
        type_ = "server_error" if status >= 500 else "invalid_request_error"
        return web.json_response(_error_body(message, type_, None), status=status)

    def _authorized(self, request: web.Request) -> bool:
        if self._api_key is None:
            return True
        return request.headers.get("Authorization", "") == f"Bearer {self._api_key}"

    def _unauthorized(self) -> web.Response:
        body = _error_body(
            "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
        )
        return web.json_response(body, status=401)

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        model = {"id": "scripted", "object": "model", "created": 0, "owned_by": "mindbot"}
        return web.json_response({"object": "list", "data": [model]})

    async def _embeddings(self, request: web.Request) -> web.Response:
        try:
            body = await read_json_object(request)
        except ValueError as e:
            return web.json_response(_error_body(str(e), "invalid_request_error", None), status=400)
        self.embedding_requests.append(body)
        if not self._authorized(request):
            return self._unauthorized()
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        dims = body.get("dimensions", EMBEDDING_DIM)
        problem = None
        if not isinstance(body.get("model"), str):
            problem = "Missing required parameter: 'model'."
        elif (
            not isinstance(inputs, list)
            or not 0 < len(inputs) <= MAX_EMBEDDING_INPUTS
            or not all(isinstance(text, str) and text for text in inputs)
        ):
            problem = "'input' must be a non-empty string or a list of non-empty strings."
        elif not isinstance(dims, int) or not 1 <= dims <= 3072:
            problem = "'dimensions' must be an integer from 1 to 3072."
        elif body.get("encoding_format", "float") not in ("float", "base64"):
            problem = "'encoding_format' must be 'float' or 'base64'."
        if problem:
            error = _error_body(problem, "invalid_request_error", None)
            return web.json_response(error, status=400)
        data = []
        for index, text in enumerate(inputs):
            vector = _bag_of_words(text, dims)
            if body.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode()
            else:
                encoded = [round(float(x), 6) for x in vector]
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(_estimate_tokens(len(text)) for text in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        if self._script:
            return self._script.popleft()
        if callable(self._default_reply):
            return self._default_reply(body)
        if self._default_reply is not None:
            return self._default_reply
        return Text(DEFAULT_TEXT)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json_object(request)
        except ValueError as e:
            logger.warning(f"{self}: malformed request body: {e}")
            return web.json_response(_error_body(str(e), "invalid_request_error", None), status=400)
        self.requests.append(body)
        self.headers.append(lower_headers(request.headers.items()))
        if not self._authorized(request):
            return self._unauthorized()
        if not isinstance(body.get("messages"), list):
            msg = "Missing required parameter: 'messages'."
            return web.json_response(
                _error_body(msg, "invalid_request_error", "missing_required_parameter", "messages"),
                status=400,
            )

        reply = self._next_reply(body)
        if isinstance(reply, str):
            reply = Text(reply)
        logger.debug(f"{self}: request #{len(self.requests)} gets {type(reply).__name__}")

        if isinstance(reply, HttpError):
            return self._http_error(reply)
        if not isinstance(reply, Text | ToolCall | ToolCalls | MidStreamError):
            raise TypeError(f"not a scripted reply: {reply!r}")
        if body.get("stream") is True:
            return await self._stream(request, body, reply)
        return await self._complete(body, reply)

    def _http_error(self, reply: HttpError) -> web.Response:
        headers: dict[str, str] = {}
        if reply.retry_after is not None:
            headers["retry-after-ms"] = f"{reply.retry_after * 1000:g}"
        if reply.should_retry is not None:
            headers["x-should-retry"] = "true" if reply.should_retry else "false"
        return web.json_response(
            _error_body(reply.message, reply.type, reply.code),
            status=reply.status,
            headers=headers,
        )

    @staticmethod
    def _parts(reply: Text | ToolCall | ToolCalls | MidStreamError) -> tuple[str, list[ToolCall]]:
        if isinstance(reply, Text):
            return reply.text, []
        if isinstance(reply, ToolCall):
            return "", [reply]
        if isinstance(reply, ToolCalls):
            return reply.text, list(reply.calls)
        return reply.after_text, []

    @staticmethod
    def _call_json(call: ToolCall, index: int) -> tuple[str, str]:
        call_id = call.id or f"call_{index}_{secrets.token_hex(8)}"
        args = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
        return call_id, args

    @staticmethod
    def _usage(body: dict[str, Any], completion_chars: int) -> dict[str, int]:
        prompt = _estimate_tokens(len(json.dumps(body.get("messages", []))))
        completion = _estimate_tokens(completion_chars)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def _complete(
        self, body: dict[str, Any], reply: Text | ToolCall | ToolCalls | MidStreamError
    ) -> web.Response:
        if isinstance(reply, MidStreamError):
            return web.json_response(_error_body(reply.message, "server_error", None), status=500)
        if self._first_token_delay:
            await asyncio.sleep(self._first_token_delay)
        text, calls = self._parts(reply)
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        chars = len(text)
        if calls:
            tool_calls = []
            for i, call in enumerate(calls):
                call_id, args = self._call_json(call, i)
                chars += len(call.name) + len(args)
                tool_calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": args},
                    }
                )
            message["tool_calls"] = tool_calls
        return web.json_response(
            {
                "id": f"chatcmpl-{secrets.token_hex(12)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": str(body.get("model", "scripted")),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if calls else "stop",
                    }
                ],
                "usage": self._usage(body, chars),
            }
        )

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        reply: Text | ToolCall | ToolCalls | MidStreamError,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            },
        )
        await response.prepare(request)
        base = {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": str(body.get("model", "scripted")),
        }

        async def send(payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps({**base, **payload})
            await response.write(f"data: {data}\n\n".encode())

        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        text, calls = self._parts(reply)
        chars = len(text)
        try:
            if self._first_token_delay:
                await asyncio.sleep(self._first_token_delay)
            await send(choice({"role": "assistant", "content": ""}))
            for i, piece in enumerate(split_text(text)):
                if i and self._token_delay:
                    await asyncio.sleep(self._token_delay)
                await send(choice({"content": piece}))
            for index, call in enumerate(calls):
                call_id, args = self._call_json(call, index)
                chars += len(call.name) + len(args)
                if self._token_delay and (text or index):
                    await asyncio.sleep(self._token_delay)
                head = {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                await send(choice({"tool_calls": [head]}))
                for piece in _split_n(args, 3):
                    if not piece:
                        continue
                    if self._token_delay:
                        await asyncio.sleep(self._token_delay)
                    delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                    await send(choice(delta))
            if isinstance(reply, MidStreamError):
                error = _error_body(reply.message, "server_error", None)
                await response.write(f"data: {json.dumps(error)}\n\n".encode())
                await response.write_eof()
                return response
            await send(choice({}, "tool_calls" if calls else "stop"))
            options = body.get("stream_options")
            if isinstance(options, dict) and options.get("include_usage"):
                await send({"choices": [], "usage": self._usage(body, chars)})
            await send("[DONE]")
            await response.write_eof()
        except (ConnectionResetError, ConnectionError) as e:
            logger.debug(f"{self}: client went away mid-stream: {e}")
        return response
