"""Running tools for one session: validation, timeouts, retries, filler, confirmation, audit.

``ToolSession`` turns a session's tools into Pipecat ``FunctionSchema``s whose handler is
``ToolSession.handle``. Whatever a tool does, the LLM gets a structured result it can speak
about, never an exception that breaks the pipeline:

- ``{"ok": true, "result": {...}}``
- ``{"ok": false, "error": "unavailable", "message": "I couldn't reach the calendar."}``
- ``{"ok": false, "needs_confirmation": true, "action": "...", "message": "..."}``

Side-effecting tools (``@tool(confirm=...)``) never run when the LLM calls them. The call is
parked as the session's pending action, the LLM is told to ask the caller, and the action runs
only when the LLM calls ``confirm_action`` *and* the caller's own words, transcribed after the
action was proposed, are a yes. The LLM cannot change the parked arguments or skip the caller:
the check reads the transcript in the context, which only the caller's speech writes.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
from loguru import logger
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.services.llm_service import FunctionCallParams, LLMService
from pydantic import BaseModel, ConfigDict

from mindbot.session import ToolCallReport
from mindbot.storage import utc_now
from mindbot.tools.base import Tool, ToolContext, ToolError, ToolUnavailable

#: Results longer than this (as JSON) are cut: the LLM reads them and the caller hears them.
MAX_RESULT_CHARS = 4000

CONFIRM_ACTION = "confirm_action"
CANCEL_ACTION = "cancel_action"

# "cancel" and "stop" are not refusals: "yes, cancel it" confirms a cancellation.
_NO = re.compile(r"\b(no|nope|nah|don'?t|do not|not|wait|never|hold on|hang on|negative)\b")
_YES = re.compile(
    r"\b(yes|yeah|yep|yup|sure|ok|okay|correct|confirm(ed)?|go ahead|do it|please do|"
    r"that'?s right|right|absolutely|definitely|of course|send it|affirmative)\b"
)


def is_yes(words: str) -> bool:
    """Whether the caller's words say yes (and nothing that says no)."""
    text = " ".join(words.lower().replace("’", "'").split())
    return bool(_YES.search(text)) and not _NO.search(text)


def is_no(words: str) -> bool:
    """Whether the caller's words say no."""
    return bool(_NO.search(" ".join(words.lower().replace("’", "'").split())))


@dataclass
class _Pending:
    tool: Tool
    arguments: dict[str, Any]
    action: str
    user_turns: int
    proposed_at: float


class _NoArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolSession:
    """One session's tools and the state of their calls.

    Args:
        tools: The tools this session may use (already filtered by persona and settings).
        context: What each tool call gets (settings, HTTP client, caller); ``user_turns`` is
            filled in per call.
        on_call: Receives a ``ToolCallReport`` for every call (audit and analytics).
        extra: More LLM tools offered as they are (e.g. Pipecat direct functions).
    """

    def __init__(
        self,
        tools: Sequence[Tool],
        context: ToolContext,
        *,
        on_call: Callable[[ToolCallReport], None] | None = None,
        extra: Sequence[Any] = (),
    ):
        self._context = context
        self._settings = context.settings
        self._on_call = on_call
        self._extra = list(extra)
        self._pending: _Pending | None = None
        self.tools: dict[str, Tool] = {t.name: t for t in tools}
        if confirmable := [t for t in tools if t.confirm]:
            # confirm_action runs the slowest of them under its own timeout: outlast it.
            longest = max(t.timeout_secs or self._settings.timeout_secs for t in confirmable)
            for name, run, text in (
                (CONFIRM_ACTION, self._confirm, _CONFIRM_DOC),
                (CANCEL_ACTION, self._cancel, _CANCEL_DOC),
            ):
                self.tools[name] = Tool.from_schema(
                    name=name,
                    description=text,
                    properties={},
                    required=(),
                    arguments=_NoArguments,
                    run=run,
                    label="the pending action",
                    read_only=False,
                    timeout_secs=longest + 1.0,
                )

    def __bool__(self) -> bool:
        return bool(self.tools or self._extra)

    @property
    def pending_action(self) -> str | None:
        """The action waiting for the caller's yes, said aloud, if any."""
        return self._pending.action if self._pending else None

    def instruction(self) -> str:
        """How to use the tools on a call, for the system instruction (empty without tools)."""
        if not self.tools:
            return ""
        lines = [
            "You can use tools. Use one whenever it gives a better answer than memory would "
            "(times, sums, weather, news, the caller's calendar or messages, devices, data).",
            "Say what a tool found in a sentence or two, in plain speech.",
            "If a tool result says it failed, tell the caller briefly in your own words and "
            "offer something else; never read out error codes.",
        ]
        if CONFIRM_ACTION in self.tools:
            lines.append(
                "Actions that change something are only proposed when you call them: ask the "
                f"caller to confirm, then call {CONFIRM_ACTION} once they say yes."
            )
        return "\n".join(lines)

    def schemas(self) -> list[Any]:
        """The session's LLM tools, for ``LLMContext(tools=...)``."""
        return [t.schema(self.handle) for t in self.tools.values()] + self._extra

    def attach(self, llm: LLMService) -> None:
        """Answer calls to tools the session does not have with a structured error."""
        llm.register_function(None, self.handle)

    async def handle(self, params: FunctionCallParams) -> None:
        """Pipecat's function-call handler for every tool of the session."""

        async def say(text: str) -> None:
            await params.llm.push_frame(TTSSpeakFrame(text, append_to_context=False))

        result = await self.invoke(
            params.function_name,
            params.arguments,
            user_turns=_user_turns(params.context),
            say=say,
        )
        await params.result_callback(result)

    async def invoke(
        self,
        name: str,
        arguments: Mapping[str, Any],
        *,
        user_turns: Sequence[str] = (),
        say: Callable[[str], Any] | None = None,
    ) -> dict[str, Any]:
        """Run one tool call and return what the LLM should read (never raises ``ToolError``).

        Args:
            name: The tool the LLM called.
            arguments: The LLM's arguments (untrusted).
            user_turns: What the caller has said in this session, most recent last.
            say: Speaks a filler if the tool is slow to answer (``None``: stay silent).
        """
        started, started_at = time.perf_counter(), utc_now()
        name = str(name)[:64]  # the LLM's choice: bounded before it reaches the audit trail
        tool = self.tools.get(name)
        shown = tool.redact(arguments) if tool and isinstance(arguments, Mapping) else {}
        ctx = replace(self._context, user_turns=tuple(user_turns))
        status, confirmed, effort = "error", False, _Effort()
        try:
            if tool is None:
                raise ToolError(f"There is no tool called {name!r}.", kind="unknown_tool")
            checked = tool.validate(arguments)
            shown = tool.redact(checked)
            if tool.confirm is not None:
                result = self._propose(tool, checked, ctx)
                status = "awaiting_confirmation"
            else:
                value = await self._run(tool, checked, ctx, say, effort)
                if name == CONFIRM_ACTION and isinstance(value, _Outcome):
                    # Report the confirmed action under its own name, with its arguments.
                    name, shown, confirmed = value.name, value.arguments, True
                    value = value.value
                result = {"ok": True, "result": _bounded(value)}
                status = "ok"
        except ToolError as e:
            result = {"ok": False, "error": e.kind, "message": e.message}
            status = "declined" if isinstance(e, _Declined) else "error"
        except asyncio.CancelledError:
            self._report(name, shown, "cancelled", started, started_at, effort, {})
            raise
        self._report(name, shown, status, started, started_at, effort, result, confirmed)
        return result

    # --- Running ------------------------------------------------------------------------------

    async def _run(
        self,
        tool: Tool,
        arguments: dict[str, Any],
        ctx: ToolContext,
        say: Callable | None,
        effort: _Effort,
    ) -> Any:
        """Run with a timeout per attempt, retrying read-only tools on transient errors."""
        timeout = tool.timeout_secs or self._settings.timeout_secs
        attempts = 1 + (self._settings.retries if tool.read_only else 0)
        filler = None
        if say is not None and tool.name != CANCEL_ACTION:
            filler = asyncio.create_task(self._filler(say), name=f"filler {tool.name}")
        try:
            for attempt in range(1, attempts + 1):
                effort.attempts = attempt
                began = time.perf_counter()
                try:
                    async with asyncio.timeout(timeout):
                        value = await tool.run(ctx, **arguments)
                    effort.io_secs += time.perf_counter() - began
                    return value
                except Exception as e:
                    effort.io_secs += time.perf_counter() - began
                    error = _as_tool_error(e, tool)
                    if not (tool.read_only and error.retryable) or attempt == attempts:
                        raise error from None
                    logger.debug(f"tool {tool.name}: attempt {attempt} failed ({error.kind})")
                    slept = time.perf_counter()
                    await asyncio.sleep(0.1 * 2 ** (attempt - 1))
                    effort.io_secs += time.perf_counter() - slept  # waiting on the service
            raise AssertionError("unreachable")  # the loop returns or raises
        finally:
            if filler is not None:
                filler.cancel()

    async def _filler(self, say: Callable[[str], Any]) -> None:
        await asyncio.sleep(self._settings.filler_after_secs)
        try:
            await say(self._settings.filler)
        except Exception as e:  # a filler is a nicety: never let it fail a call
            logger.debug(f"tools: filler not spoken ({type(e).__name__})")

    # --- Confirmation -----------------------------------------------------------------------

    def _propose(self, tool: Tool, arguments: dict[str, Any], ctx: ToolContext) -> dict:
        assert tool.confirm is not None
        try:
            action = tool.confirm(arguments)
        except ToolError:
            raise
        except Exception as e:  # a confirm function that cannot say the action: a bad request
            logger.debug(f"tool {tool.name}: confirm text failed ({type(e).__name__})")
            raise ToolError(f"I couldn't make sense of that {tool.name} request.") from None
        self._pending = _Pending(tool, arguments, action, len(ctx.user_turns), time.monotonic())
        return {
            "ok": False,
            "needs_confirmation": True,
            "action": action,
            "message": (
                f"Nothing has been done yet. Ask the caller whether you should {action}. "
                f"Call {CONFIRM_ACTION} only after they clearly say yes; "
                f"call {CANCEL_ACTION} if they say no."
            ),
        }

    async def _confirm(self, ctx: ToolContext) -> _Outcome:
        pending = self._pending
        if pending is None:
            raise ToolError("There is no action waiting for confirmation.", kind="not_confirmed")
        if time.monotonic() - pending.proposed_at > self._settings.confirm_within_secs:
            self._pending = None
            raise ToolError(
                f"The request to {pending.action} has expired. Ask again if it is still wanted.",
                kind="not_confirmed",
            )
        answer = ctx.user_turns[-1] if len(ctx.user_turns) > pending.user_turns else None
        if answer is None:
            raise ToolError(
                f"The caller has not answered yet. Ask them whether you should {pending.action}.",
                kind="not_confirmed",
            )
        if not is_yes(answer):
            if is_no(answer):
                self._pending = None
                raise _Declined(f"The caller said no, so nothing was done (not {pending.action}).")
            raise ToolError(
                f"The caller did not clearly say yes. Ask them to confirm: {pending.action}?",
                kind="not_confirmed",
            )
        self._pending = None
        # Shielded: an interruption must not abandon a half-done action.
        run = asyncio.ensure_future(pending.tool.run(ctx, **pending.arguments))
        try:
            async with asyncio.timeout(pending.tool.timeout_secs or self._settings.timeout_secs):
                value = await asyncio.shield(run)
        except Exception as e:
            raise _as_tool_error(e, pending.tool) from None
        return _Outcome(pending.tool.name, pending.tool.redact(pending.arguments), value)

    async def _cancel(self, ctx: ToolContext) -> dict[str, Any]:
        pending, self._pending = self._pending, None
        if pending is None:
            return {"cancelled": None}
        return {"cancelled": pending.action}

    # --- Audit ----------------------------------------------------------------------------------

    def _report(
        self,
        name: str,
        arguments: dict[str, Any],
        status: str,
        started: float,
        started_at: str,
        effort: _Effort,
        result: dict[str, Any],
        confirmed: bool = False,
    ) -> None:
        duration = time.perf_counter() - started
        logger.debug(f"tool {name}: {status} in {duration * 1000:.0f} ms")
        if self._on_call is None:
            return
        report = ToolCallReport(
            name=name,
            arguments=arguments,
            status=status,  # type: ignore[arg-type]
            duration_secs=duration,
            overhead_secs=max(0.0, duration - effort.io_secs),
            attempts=effort.attempts,
            result=result,
            confirmed=confirmed,
            started_at=started_at,
        )
        try:
            self._on_call(report)
        except Exception:
            logger.exception("tools: the call report listener failed")


@dataclass
class _Effort:
    """How many times a tool ran, and how long it spent on I/O (waiting included)."""

    attempts: int = 0
    io_secs: float = 0.0


class _Declined(ToolError):
    def __init__(self, message: str):
        super().__init__(message, kind="not_confirmed")


@dataclass
class _Outcome:
    """A confirmed action's result, labelled with the action it belongs to."""

    name: str
    arguments: dict[str, Any]
    value: Any


_CONFIRM_DOC = (
    "Carry out the action you proposed, but only after the caller has clearly said yes to it "
    "in their last reply."
)
_CANCEL_DOC = "Drop the action you proposed, because the caller said no or changed their mind."


def _as_tool_error(error: Exception, tool: Tool) -> ToolError:
    """Any failure, as something the assistant can say."""
    if isinstance(error, ToolError):
        return error
    if isinstance(error, TimeoutError):
        return ToolError(f"{_capital(tool.label)} took too long to answer.", kind="timeout")
    if isinstance(error, httpx.HTTPStatusError):
        if error.response.status_code >= 500 or error.response.status_code == 429:
            return ToolUnavailable(f"{_capital(tool.label)} is having problems right now.")
        return ToolError(f"{_capital(tool.label)} refused the request.", kind="failed")
    if isinstance(error, (httpx.TransportError, OSError, ConnectionError)):
        return ToolUnavailable(f"I couldn't reach {tool.label}.")
    logger.warning(f"tool {tool.name}: failed with {type(error).__name__}")
    return ToolError(f"Something went wrong with {tool.label}.", kind="failed")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _bounded(value: Any) -> Any:
    """The result, or its JSON cut to ``MAX_RESULT_CHARS`` when it is too long to read out."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text) <= MAX_RESULT_CHARS:
        return json.loads(text)
    return {"truncated": True, "text": text[:MAX_RESULT_CHARS]}


def _user_turns(context: Any) -> list[str]:
    """The caller's words so far, from the LLM context (only their speech writes these)."""
    if context is None:
        return []
    turns = []
    for message in context.get_messages():
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        if isinstance(content, str):
            turns.append(content)
    return turns
