"""What a tool is: one typed async function whose signature and docstring are its LLM schema.

A tool file needs three things from here::

    from mindbot.tools import ToolContext, ToolError, tool

    @tool(label="the weather service")
    async def get_weather(ctx: ToolContext, city: str, days: int = 1) -> dict:
        \"\"\"Get the weather forecast for a city.

        Args:
            city: The city, e.g. "Paris".
            days: How many days ahead, 1 to 7.
        \"\"\"
        response = await ctx.http.get(...)
        ...
        return {"city": city, "summary": "..."}

The schema the LLM sees is built by Pipecat's own direct-function machinery (the first
parameter, ``ctx``, is left out). Arguments are validated against the annotations before the
function runs. The function returns a JSON-able dict (what the LLM reads) or raises
``ToolError`` with a sentence the assistant can say; anything else it raises becomes a generic
"that didn't work" result. Side-effecting tools are declared with ``confirm=...``: MindBot then
asks the caller first and runs them only after a spoken yes (see ``mindbot.tools.session``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pipecat.adapters.llm.schemas.direct_function import BaseDirectFunctionWrapper
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from mindbot.tools.settings import ToolSettings

ErrorKind = Literal[
    "unknown_tool",
    "bad_arguments",
    "unavailable",
    "timeout",
    "not_found",
    "rejected",
    "not_confirmed",
    "failed",
]

#: Argument names whose values never reach logs, storage or the audit trail.
SECRET_ARGUMENT_WORDS = ("password", "secret", "token", "api_key", "apikey", "authorization")


def finite_number(value: Any) -> float | None:
    """``value`` as a float, when a service's answer holds a real number there; else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class ToolError(Exception):
    """A failure the assistant can speak about.

    Args:
        message: One sentence for the LLM to pass on, e.g. "I couldn't reach the calendar."
        kind: What went wrong, for analytics.
        retryable: Whether trying again may help (only read-only tools are retried).
    """

    def __init__(self, message: str, *, kind: ErrorKind = "failed", retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind
        self.retryable = retryable


class ToolUnavailable(ToolError):
    """The service behind a tool could not be reached or failed (worth a retry)."""

    def __init__(self, message: str):
        super().__init__(message, kind="unavailable", retryable=True)


@dataclass
class ToolContext:
    """What a running tool may use: its settings, a shared HTTP client, who is calling.

    Args:
        settings: All tools' settings; a tool reads its own section.
        http: An ``httpx.AsyncClient`` shared by the process (connection pooling).
        timezone: The caller's time zone (their preference, else the configured default).
        session_id: The session the call belongs to, if any.
        user_id: The caller's stored user id, if known.
        resources: Extra objects a pipeline hands to its own tools, by name.
        user_turns: What the caller has said this session, most recent last (set per call).
    """

    settings: ToolSettings
    http: httpx.AsyncClient
    timezone: str = "UTC"
    session_id: str | None = None
    user_id: int | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    user_turns: tuple[str, ...] = ()


ToolFunction = Callable[..., Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class Tool:
    """A registered tool: its schema for the LLM and how to run it.

    Build one with ``@tool`` (from a function) or ``Tool.from_schema`` (e.g. a YAML connector).

    Args:
        name: What the LLM calls it.
        description: What it does, for the LLM.
        properties: JSON schema of each argument.
        required: The required arguments.
        run: ``await run(ctx, **arguments)`` → a JSON-able mapping.
        arguments: Validates and converts the LLM's arguments.
        label: How the assistant names the service in an error ("the calendar").
        read_only: Whether the tool only reads (then it is retried on transient errors).
        confirm: For side-effecting tools: ``confirm(arguments)`` says the action aloud, e.g.
            "send an email to Sam about lunch"; the action runs only after a spoken yes.
        timeout_secs: Per-attempt timeout; default: ``ToolSettings.timeout_secs``.
        available: Whether the settings allow this tool (e.g. an SMTP host is configured).
        secret_arguments: Argument names redacted from the audit trail.
    """

    name: str
    description: str
    properties: Mapping[str, Any]
    required: tuple[str, ...]
    run: ToolFunction
    arguments: type[BaseModel]
    label: str = "that service"
    read_only: bool = True
    confirm: Callable[[Mapping[str, Any]], str] | None = None
    timeout_secs: float | None = None
    available: Callable[[ToolSettings], bool] = lambda settings: True
    secret_arguments: frozenset[str] = frozenset()

    def schema(self, handler: Any = None) -> FunctionSchema:
        """The tool as Pipecat's ``FunctionSchema`` (with ``handler`` attached, if given)."""
        return FunctionSchema(
            name=self.name,
            description=self.description,
            properties=dict(self.properties),
            required=list(self.required),
            handler=handler,
        )

    def validate(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The LLM's arguments, checked and converted.

        Raises:
            ToolError: ``bad_arguments``, naming each problem (never echoing secret values).
        """
        if not isinstance(raw, Mapping):
            raise ToolError("The arguments must be an object.", kind="bad_arguments")
        try:
            model = self.arguments.model_validate(dict(raw))
        except ValidationError as e:
            problems = []
            for error in e.errors():
                where = ".".join(str(part) for part in error["loc"]) or "arguments"
                problems.append(f"{where}: {error['msg'].lower()}")
            raise ToolError(
                f"Invalid arguments for {self.name}: {'; '.join(problems)}.", kind="bad_arguments"
            ) from None
        return {name: getattr(model, name) for name in type(model).model_fields}

    def redact(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments with secret values replaced, for logs and the audit trail."""
        return {
            name: "[redacted]" if self._is_secret(name) else value
            for name, value in arguments.items()
        }

    def _is_secret(self, name: str) -> bool:
        lowered = name.lower()
        return name in self.secret_arguments or any(w in lowered for w in SECRET_ARGUMENT_WORDS)

    @classmethod
    def from_schema(
        cls,
        *,
        name: str,
        description: str,
        properties: Mapping[str, Any],
        required: tuple[str, ...],
        arguments: type[BaseModel],
        run: ToolFunction,
        **options: Any,
    ) -> Tool:
        """A tool whose schema is given rather than read from a function signature."""
        return cls(
            name=name,
            description=description,
            properties=properties,
            required=required,
            run=run,
            arguments=arguments,
            **options,
        )


class _ToolSignature(BaseDirectFunctionWrapper):
    """Pipecat's direct-function schema reader, for functions whose first parameter is ``ctx``."""

    @classmethod
    def special_first_param_name(cls) -> str:
        return "ctx"


def tool(
    fn: ToolFunction | None = None,
    *,
    name: str | None = None,
    label: str = "that service",
    read_only: bool = True,
    confirm: Callable[[Mapping[str, Any]], str] | None = None,
    timeout_secs: float | None = None,
    available: Callable[[ToolSettings], bool] | None = None,
    secret_arguments: tuple[str, ...] = (),
) -> Any:
    """Make a typed async function a ``Tool`` (see the module docstring for an example).

    Args:
        fn: ``async def f(ctx: ToolContext, arg: type, ...) -> dict`` with a Google-style docstring.
        name: What the LLM calls it; default: the function's name.
        label: How the assistant names the service in an error ("the calendar").
        read_only: Whether it only reads; read-only tools are retried on transient errors.
        confirm: Says a side-effecting action aloud; the tool then runs only after a spoken yes.
            Implies ``read_only=False``.
        timeout_secs: Per-attempt timeout.
        available: Whether the settings allow the tool (default: always).
        secret_arguments: Argument names to redact from the audit trail.
    """

    def wrap(function: ToolFunction) -> Tool:
        try:
            signature = _ToolSignature(function)
        except Exception as e:  # Pipecat raises a bare Exception for a malformed function
            raise TypeError(f"@tool {getattr(function, '__name__', function)!r}: {e}") from None
        if not signature.description:
            raise TypeError(f"@tool {function.__name__!r} needs a docstring: it is the LLM's guide")
        return Tool(
            name=name or function.__name__,
            description=signature.description,
            properties=signature.properties,
            required=tuple(signature.required),
            run=function,
            arguments=_arguments_model(function),
            label=label,
            read_only=read_only and confirm is None,
            confirm=confirm,
            timeout_secs=timeout_secs,
            available=available or (lambda settings: True),
            secret_arguments=frozenset(secret_arguments),
        )

    return wrap(fn) if fn is not None else wrap


def _arguments_model(function: ToolFunction) -> type[BaseModel]:
    """A pydantic model of the function's parameters after ``ctx`` (extra arguments rejected)."""
    hints = inspect.get_annotations(function, eval_str=True)
    fields: dict[str, Any] = {}
    for param in list(inspect.signature(function).parameters.values())[1:]:
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    return create_model(
        f"{function.__name__}_arguments",
        __config__=ConfigDict(extra="forbid", str_strip_whitespace=True),
        **fields,
    )
