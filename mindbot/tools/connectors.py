r"""HTTP connectors: a tool declared in a YAML file, with no code.

Every ``*.yaml`` in ``mindbot/tools/connectors/`` (the shipped templates) and then in each of
``tools.connectors.dirs`` becomes one tool; a later file with the same file name replaces an
earlier one. A connector reads::

    name: get_home_assistant_state          # what the LLM calls (snake_case, a verb)
    description: Get the state of a Home Assistant entity.
    label: Home Assistant                   # how the assistant names the service aloud
    method: GET                             # GET POST PUT PATCH DELETE
    url: "{values.home_assistant_url}/api/states/{entity_id}"
    query: {units: metric, q: "{city}"}     # name → template
    headers: {Authorization: "Bearer {secrets.home_assistant_token}"}
    json: {entity_id: "{entity_id}"}        # the body (a map of templates), e.g. for POST
    parameters:
      entity_id:
        type: string                        # string integer number boolean
        description: The entity, e.g. "sensor.kitchen_temperature".
        pattern: '^[a-z_]+\.[a-z0-9_]+$'     # also enum, minimum, maximum, min_length,
                                            # max_length, default, required: false
    response:
      speak: {state: state, unit: attributes.unit_of_measurement}   # field → dotted path
      items: {path: results, name: results, fields: {title: title}, limit: 3}
      ok: ok                                # a path that must be true (Slack: 200 + ok:false)
      error: error                          # the reason to speak when it is not
    timeout_secs: 5
    confirm: "post {text} to the team channel"   # required unless GET: said aloud first
    values: {home_assistant_url: "http://homeassistant.local:8123"}   # defaults

Templates hold ``{parameter}``, ``{values.NAME}`` and ``{secrets.NAME}`` placeholders (``{{``
and ``}}`` are literal braces); ``values`` and ``secrets`` come from ``tools.connectors`` in the
settings (``values`` also from the file's own defaults). A connector is offered only when every
value and secret it names is set. Anything else in braces is an error when the file is loaded.

Safety: a parameter fills in a URL path only as one percent-encoded segment (it cannot add
``/``, ``?``, ``#`` or ``..``), and only after the host, so the request always goes to the
template's own scheme, host and port; query values go through httpx's encoding. Redirects are
not followed. Secrets are unwrapped only while the request is built, and are scrubbed from
results; errors and logs never carry the URL, headers or body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit

import httpx
import yaml
from loguru import logger
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from mindbot.errors import ConfigError
from mindbot.tools.base import Tool, ToolContext, ToolError, ToolUnavailable
from mindbot.tools.settings import ConnectorSettings, ToolSettings

#: Where the shipped connector templates live.
SHIPPED_DIR = Path(__file__).parent / "connectors"

#: A response body larger than this is refused rather than read.
MAX_RESPONSE_BYTES = 1_000_000
#: Spoken strings are cut to this length.
MAX_TEXT_CHARS = 300
#: Lists inside a spoken field are cut to this many items.
MAX_LIST_ITEMS = 5
#: The longest string parameter unless the file sets ``max_length``.
DEFAULT_MAX_LENGTH = 500

_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_CONFIG_REF = re.compile(r"(values|secrets)\.([A-Za-z_][A-Za-z0-9_]*)")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
_TYPES: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}
_A_TYPE = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "a bool"}
_READ_METHODS = ("GET",)

# --- The YAML file's shape -----------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Scalar = str | int | float | bool


class ParameterSpec(_Strict):
    """One argument the LLM fills in."""

    type: Literal["string", "integer", "number", "boolean"]
    description: str = ""
    required: bool | None = None
    default: Scalar | None = None
    enum: list[Scalar] | None = Field(default=None, min_length=1)
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=1)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"not a regular expression ({e})") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ParameterSpec:
        numeric = self.type in ("integer", "number")
        if not numeric and (self.minimum is not None or self.maximum is not None):
            raise ValueError("minimum and maximum are for integer and number parameters")
        textual = self.type == "string"
        if not textual and (self.pattern or self.min_length is not None or self.max_length):
            raise ValueError("pattern, min_length and max_length are for string parameters")
        for value in [self.default, *(self.enum or [])]:
            if value is not None and not _is_type(value, self.type):
                raise ValueError(f"{value!r} is not {_A_TYPE[self.type]}")
        if self.required and self.default is not None:
            raise ValueError("a parameter with a default is not required")
        return self

    @property
    def is_required(self) -> bool:
        """Whether the LLM must give it (yes, unless it has a default or ``required: false``)."""
        return self.required is not False and self.default is None


class ItemsSpec(_Strict):
    """A list in the response, spoken as a few items."""

    path: str = Field(default="", description="Dotted path to the list; empty: the response.")
    name: str = Field(default="items", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    fields: dict[str, str] = Field(default_factory=dict, description="Field → path in an item.")
    limit: int = Field(default=5, ge=1, le=20)


class ResponseSpec(_Strict):
    """Which parts of a JSON response the assistant gets to speak."""

    speak: dict[str, str] = Field(default_factory=dict, description="Field → dotted path.")
    items: ItemsSpec | None = None
    ok: str | None = Field(default=None, description="A path whose value must be true.")
    error: str | None = Field(default=None, description="The reason, when ``ok`` is not true.")
    round: int = Field(default=2, ge=0, le=6, description="Decimal places of spoken numbers.")

    @property
    def reads_json(self) -> bool:
        """Whether anything is read from the body (else a success is just ``done``)."""
        return bool(self.speak or self.items or self.ok)


class ConnectorSpec(_Strict):
    """One connector file, as written."""

    name: str = Field(pattern=_NAME)
    description: str = Field(min_length=1)
    label: str = "that service"
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str = Field(min_length=1)
    query: dict[str, Scalar] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] | None = Field(default=None, alias="json")
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    response: ResponseSpec = Field(default_factory=ResponseSpec)
    timeout_secs: float | None = Field(default=None, gt=0, le=120)
    confirm: str | None = None
    values: dict[str, str] = Field(default_factory=dict, description="Defaults of {values.X}.")

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


def _is_type(value: Any, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, int | float)
    return isinstance(value, str)


# --- Templates -----------------------------------------------------------------------------------


class _SpecError(Exception):
    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class _Template:
    """A parsed template: ``(kind, text)`` parts, kind one of text, param, values, secrets."""

    parts: tuple[tuple[str, str], ...]

    def names(self, kind: str) -> set[str]:
        return {text for k, text in self.parts if k == kind}

    @property
    def single(self) -> tuple[str, str] | None:
        """The one placeholder the template is made of, if that is all it is."""
        return self.parts[0] if len(self.parts) == 1 and self.parts[0][0] != "text" else None


def _parse(text: str, where: str, parameters: Mapping[str, ParameterSpec]) -> _Template:
    parts: list[tuple[str, str]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append(("text", text[position : match.start()]))
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append(("text", token[0]))
            continue
        inner = match.group(1)
        if inner is None:
            raise _SpecError(where, f"a lone {token!r}: write {token * 2} for a literal brace")
        inner = inner.strip()
        if config := _CONFIG_REF.fullmatch(inner):
            parts.append((config.group(1), config.group(2)))
        elif _IDENTIFIER.fullmatch(inner) and inner in parameters:
            parts.append(("param", inner))
        else:
            raise _SpecError(
                where,
                f"unknown placeholder {{{inner}}}: use a declared parameter, "
                "{values.NAME} or {secrets.NAME}",
            )
    if position < len(text):
        parts.append(("text", text[position:]))
    merged: list[tuple[str, str]] = []
    for kind, value in parts:
        if kind == "text" and merged and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + value)
        else:
            merged.append((kind, value))
    return _Template(tuple(merged))


@dataclass
class _Config:
    """The values and (unwrapped) secrets of one request; never kept past it."""

    values: dict[str, str]
    secrets: dict[str, str]

    @classmethod
    def of(cls, settings: ConnectorSettings, defaults: Mapping[str, str]) -> _Config:
        values = {**defaults, **{k: v for k, v in settings.values.items() if v}}
        secrets = {k: v.get_secret_value() for k, v in settings.secrets.items()}
        return cls(values, {k: v for k, v in secrets.items() if v})


class _Missing(Exception):
    """An optional parameter without a value: the query key or body field is left out."""


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _render(
    template: _Template,
    arguments: Mapping[str, Any],
    config: _Config,
    *,
    encode: Callable[[str, str], str] | None = None,
) -> str:
    out = []
    for i, (kind, name) in enumerate(template.parts):
        if kind == "text":
            out.append(name)
            continue
        if kind == "param":
            value = arguments.get(name)
            if value is None:
                raise _Missing(name)
            text = _as_text(value)
            out.append(encode(name, text) if encode else text)
            continue
        text = (config.values if kind == "values" else config.secrets)[name]
        following = template.parts[i + 1] if i + 1 < len(template.parts) else None
        if following and following[0] == "text" and following[1].startswith("/"):
            text = text.rstrip("/")  # "http://ha:8123/" + "/api/..." must not make "//api"
        out.append(text)
    return "".join(out)


# --- Loading -------------------------------------------------------------------------------------


def make_tools(settings: ToolSettings) -> list[Tool]:
    """One tool per connector file: the shipped ones, then those in ``connectors.dirs``.

    Raises:
        ConfigError: A folder is missing, or a file is invalid (the message names the file
            and the field), or two connectors share a name.
    """
    files: dict[str, Path] = {}
    for folder in [SHIPPED_DIR, *settings.connectors.dirs]:
        if not Path(folder).is_dir():
            raise ConfigError(f"tools.connectors.dirs: {folder} is not a folder")
        for path in sorted(Path(folder).glob("*.yaml")):
            files[path.name] = path
    tools: list[Tool] = []
    names: dict[str, Path] = {}
    for path in files.values():
        tool = load_connector(path)
        if tool.name in names:
            raise ConfigError(
                f"{path}: name: {tool.name!r} is already the name of the connector in "
                f"{names[tool.name]}; rename one of them"
            )
        names[tool.name] = path
        tools.append(tool)
    return tools


def load_connector(path: Path) -> Tool:
    """The tool a connector file declares.

    Raises:
        ConfigError: One line naming the file, the field and the problem, e.g.
            ``connectors/x.yaml: parameters.city.type: input should be 'string', ...``.
    """
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"{path}: not valid YAML{line}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of fields (name, url, ...)")
    try:
        spec = ConnectorSpec.model_validate(raw)
    except ValidationError as e:
        problems = []
        for error in e.errors():
            where = ".".join(str(part) for part in error["loc"]) or "connector"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message[:1].lower()}{message[1:]}")
        raise ConfigError(f"{path}: {'; '.join(problems)}") from None
    try:
        return _Connector(spec).tool()
    except _SpecError as e:
        raise ConfigError(f"{path}: {e}") from None


class _Connector:
    """A checked connector: its parsed templates and how to run one call."""

    def __init__(self, spec: ConnectorSpec):
        self.spec = spec
        params = spec.parameters
        for name in params:
            if not _IDENTIFIER.fullmatch(name) or name == "ctx" or hasattr(BaseModel, name):
                raise _SpecError(f"parameters.{name}", "not a usable parameter name")
        self.url = _parse(spec.url, "url", params)
        self.query = {k: _parse(_as_text(v), f"query.{k}", params) for k, v in spec.query.items()}
        self.headers = {k: _parse(v, f"headers.{k}", params) for k, v in spec.headers.items()}
        self.body = _parse_body(spec.body, "json", params) if spec.body is not None else None
        if spec.method not in _READ_METHODS and not (spec.confirm and spec.confirm.strip()):
            raise _SpecError(
                "confirm",
                f"is required for {spec.method}: the action said aloud before it runs, "
                "e.g. 'post {text} to the team channel'",
            )
        self.confirm = _parse(spec.confirm, "confirm", params) if spec.confirm else None
        if self.confirm and (self.confirm.names("values") or self.confirm.names("secrets")):
            raise _SpecError("confirm", "may name parameters only, never values or secrets")
        self.prefix = self._check_url()
        templates = [self.url, *self.query.values(), *self.headers.values()]
        templates += _body_templates(self.body)
        used = set().union(*(t.names("param") for t in templates))
        for name in params:
            if name not in used:
                raise _SpecError(f"parameters.{name}", "not used by url, query, headers or json")
        self.value_names = set().union(*(t.names("values") for t in templates))
        self.secret_names = set().union(*(t.names("secrets") for t in templates))
        if spec.method in _READ_METHODS and not spec.response.reads_json:
            raise _SpecError("response", "say which fields to speak (speak or items)")
        if spec.response.error and not spec.response.ok:
            raise _SpecError("response.error", "needs response.ok, the path that must be true")

    def _check_url(self) -> int:
        """Where the parameters start in the URL; they may only fill in its path."""
        parts = self.url.parts
        first_kind, first_text = parts[0]
        if first_kind == "param" or (
            first_kind == "text" and not first_text.lower().startswith(("http://", "https://"))
        ):
            raise _SpecError("url", "must start with http://, https:// or {values.NAME}")
        for kind, text in parts:
            if kind == "text" and ("?" in text or "#" in text):
                raise _SpecError("url", "put the query under query:, not in the url")
        first = next((i for i, (kind, _) in enumerate(parts) if kind == "param"), len(parts))
        if first < len(parts):
            sample = "".join(
                text if kind == "text" else ("http://config.invalid" if i == 0 else "x")
                for i, (kind, text) in enumerate(parts[:first])
            )
            shape = urlsplit(sample)
            if not (shape.scheme and shape.netloc and shape.path.startswith("/")):
                raise _SpecError(
                    "url",
                    f"{{{parts[first][1]}}} comes before the path: parameters may only fill "
                    "in the path, after the host and a /",
                )
        for kind, name in parts:
            param = self.spec.parameters.get(name)
            if kind == "param" and param and not param.is_required and param.default is None:
                raise _SpecError(
                    f"parameters.{name}", "is in the url, so it must be required or have a default"
                )
        return first

    # --- The tool ------------------------------------------------------------------------------

    def tool(self) -> Tool:
        spec = self.spec
        properties: dict[str, Any] = {}
        fields: dict[str, Any] = {}
        for name, param in spec.parameters.items():
            properties[name] = _json_schema(param)
            fields[name] = _field(param)
        arguments = create_model(
            f"{spec.name}_arguments",
            __config__=ConfigDict(extra="forbid", str_strip_whitespace=True),
            **fields,
        )
        confirm = None
        if self.confirm is not None:
            template = self.confirm

            def confirm(arguments: Mapping[str, Any]) -> str:
                return _say_action(template, arguments)

        value_names, secret_names = frozenset(self.value_names), frozenset(self.secret_names)
        defaults = dict(spec.values)

        def available(settings: ToolSettings) -> bool:
            config = _Config.of(settings.connectors, defaults)
            return value_names <= config.values.keys() and secret_names <= config.secrets.keys()

        return Tool.from_schema(
            name=spec.name,
            description=spec.description.strip(),
            properties=properties,
            required=tuple(n for n, p in spec.parameters.items() if p.is_required),
            arguments=arguments,
            run=self.run,
            label=spec.label,
            read_only=spec.method in _READ_METHODS and confirm is None,
            confirm=confirm,
            timeout_secs=spec.timeout_secs,
            available=available,
        )

    # --- One call ------------------------------------------------------------------------------

    async def run(self, ctx: ToolContext, **arguments: Any) -> dict[str, Any]:
        spec = self.spec
        config = _Config.of(ctx.settings.connectors, spec.values)
        if not (self.value_names <= config.values.keys()) or not (
            self.secret_names <= config.secrets.keys()
        ):
            raise ToolError(f"{_capital(spec.label)} isn't set up.", kind="unavailable")
        url = self._url(arguments, config)
        query = self._fields(self.query, arguments, config)
        headers = self._fields(self.headers, arguments, config)
        for value in headers.values():
            if not _HEADER_VALUE.fullmatch(value):
                raise ToolError(
                    f"That can't be sent to {spec.label}: it has characters a header can't carry.",
                    kind="bad_arguments",
                )
        body = _render_body(self.body, arguments, config) if self.body is not None else None
        timeout = spec.timeout_secs or ctx.settings.timeout_secs
        try:
            async with ctx.http.stream(
                spec.method,
                url,
                params=query or None,
                headers=headers,
                json=body,
                timeout=timeout,
                follow_redirects=False,
            ) as response:
                status = response.status_code
                content = await _read(response, spec.label)
        except httpx.TimeoutException:
            logger.debug(f"connector {spec.name}: timed out")
            message = f"{_capital(spec.label)} took too long to answer."
            raise ToolError(message, kind="timeout") from None
        except httpx.HTTPError as e:
            # The error's text holds the URL, which may hold a secret: keep only its type.
            logger.debug(f"connector {spec.name}: {type(e).__name__}")
            raise ToolUnavailable(f"I couldn't reach {spec.label}.") from None
        logger.debug(f"connector {spec.name}: {spec.method} answered {status}")
        self._check_status(status)
        # Longest first, so a secret containing another is replaced whole; a value of a few
        # characters is no secret, and replacing it everywhere would garble the result.
        secrets = sorted((v for v in config.secrets.values() if len(v) >= 4), key=len, reverse=True)
        return _scrub(self._result(content, secrets), secrets)

    def _url(self, arguments: Mapping[str, Any], config: _Config) -> httpx.URL:
        label = self.spec.label

        def segment(name: str, value: str) -> str:
            if not value.strip():
                raise ToolError(f"The {name} can't be empty.", kind="bad_arguments")
            return quote(value, safe="")

        parts = self.url.parts
        base_text = _render(_Template(parts[: self.prefix]), arguments, config)
        text = base_text + _render(
            _Template(parts[self.prefix :]), arguments, config, encode=segment
        )
        # Only the segments a parameter touched: "." or ".." there would climb the path.
        touched = urlsplit(text).path[urlsplit(base_text).path.rfind("/") :]
        if any(unquote(s) in (".", "..") for s in touched.split("/")):
            raise ToolError("That isn't a valid name for it.", kind="bad_arguments")
        try:
            url, base = httpx.URL(text), httpx.URL(base_text)
        except (httpx.InvalidURL, ValueError):
            raise ToolError(f"{_capital(label)} isn't set up right.", kind="unavailable") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ToolError(f"{_capital(label)} isn't set up right.", kind="unavailable")
        same_origin = (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)
        if not same_origin or not url.raw_path.startswith(base.raw_path.split(b"?")[0]):
            raise ToolError("That isn't a valid name for it.", kind="bad_arguments")
        return url

    @staticmethod
    def _fields(
        templates: Mapping[str, _Template], arguments: Mapping[str, Any], config: _Config
    ) -> dict[str, str]:
        out = {}
        for key, template in templates.items():
            try:
                out[key] = _render(template, arguments, config)
            except _Missing:
                continue
        return out

    def _check_status(self, status: int) -> None:
        label = _capital(self.spec.label)
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            raise ToolError(f"{label} sent me somewhere else, so I stopped.", kind="failed")
        if status in (401, 403):
            raise ToolError(
                f"{label} refused the request: the connector's credentials may be wrong.",
                kind="rejected",
            )
        if status in (404, 410):
            raise ToolError(f"{label} found nothing for that.", kind="not_found")
        if status == 429 or status >= 500:
            raise ToolUnavailable(f"{label} is having problems right now.")
        raise ToolError(f"{label} refused the request.", kind="rejected")

    def _result(self, content: bytes, secrets: list[str]) -> dict[str, Any]:
        response = self.spec.response
        if not response.reads_json:
            return {"done": True}
        label = _capital(self.spec.label)
        unreadable = ToolError(f"{label} sent an answer I couldn't read.", kind="failed")
        try:
            data = json.loads(content)
        except ValueError:
            raise unreadable from None
        if response.ok is not None and _lookup(data, response.ok) is not True:
            reason = _lookup(data, response.error) if response.error else None
            if isinstance(reason, str) and reason.strip():
                reason = _scrub(" ".join(reason.replace("_", " ").split()), secrets)
                reason = reason[:MAX_TEXT_CHARS]
                raise ToolError(f"{label} refused the request: {reason}.", kind="rejected")
            raise ToolError(f"{label} refused the request.", kind="rejected")
        result: dict[str, Any] = {}
        for field, path in response.speak.items():
            value = _lookup(data, path)
            if value is not None:
                result[field] = _shape(value, response.round)
        if response.items is not None:
            items = response.items
            found = _lookup(data, items.path)
            if not isinstance(found, list):
                raise unreadable
            shaped = []
            for item in found[: items.limit]:
                if items.fields:
                    entry = {
                        f: _shape(v, response.round)
                        for f, p in items.fields.items()
                        if (v := _lookup(item, p)) is not None
                    }
                    if entry:
                        shaped.append(entry)
                elif item is not None:
                    shaped.append(_shape(item, response.round))
            result[items.name] = shaped
            if len(found) > items.limit:
                result["more"] = len(found) - items.limit
        elif response.speak and not result:
            raise unreadable
        return result or {"done": True}


# --- Helpers ------------------------------------------------------------------------------------


def _field(param: ParameterSpec) -> tuple[Any, Any]:
    """The pydantic field of one parameter: type, constraints, default."""
    kind = _TYPES[param.type]
    if param.enum:
        annotation: Any = Literal[tuple(param.enum)]  # type: ignore[valid-type]
    else:
        constraints: dict[str, Any] = {}
        if param.type == "string":
            constraints["max_length"] = param.max_length or DEFAULT_MAX_LENGTH
            if param.min_length is not None:
                constraints["min_length"] = param.min_length
            if param.pattern:
                constraints["pattern"] = param.pattern
        if param.minimum is not None:
            constraints["ge"] = param.minimum
        if param.maximum is not None:
            constraints["le"] = param.maximum
        annotation = Annotated[kind, Field(**constraints)] if constraints else kind
    if param.is_required:
        return annotation, ...
    if param.default is None:
        return annotation | None, None
    return annotation, param.default


def _json_schema(param: ParameterSpec) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": param.type}
    if param.description:
        schema["description"] = param.description.strip()
    for key, value in (
        ("enum", param.enum),
        ("pattern", param.pattern),
        ("minimum", param.minimum),
        ("maximum", param.maximum),
        ("minLength", param.min_length),
        ("maxLength", param.max_length),
        ("default", param.default),
    ):
        if value is not None:
            schema[key] = value
    return schema


def _parse_body(value: Any, where: str, params: Mapping[str, ParameterSpec]) -> Any:
    if isinstance(value, str):
        return _parse(value, where, params)
    if isinstance(value, dict):
        return {str(k): _parse_body(v, f"{where}.{k}", params) for k, v in value.items()}
    if isinstance(value, list):
        return [_parse_body(v, f"{where}.{i}", params) for i, v in enumerate(value)]
    return value


def _body_templates(value: Any) -> list[_Template]:
    if isinstance(value, _Template):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _body_templates(v)]
    if isinstance(value, list):
        return [t for v in value for t in _body_templates(v)]
    return []


def _render_body(value: Any, arguments: Mapping[str, Any], config: _Config) -> Any:
    """The JSON body; a template that is one parameter keeps the argument's type."""
    if isinstance(value, _Template):
        single = value.single
        if single and single[0] == "param":
            if arguments.get(single[1]) is None:
                raise _Missing(single[1])
            return arguments[single[1]]
        return _render(value, arguments, config)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            try:
                out[key] = _render_body(item, arguments, config)
            except _Missing:
                continue
        return out
    if isinstance(value, list):
        out_list = []
        for item in value:
            try:
                out_list.append(_render_body(item, arguments, config))
            except _Missing:
                continue
        return out_list
    return value


def _say_action(template: _Template, arguments: Mapping[str, Any]) -> str:
    out = []
    for kind, text in template.parts:
        if kind == "text":
            out.append(text)
        elif (value := arguments.get(text)) is not None:
            out.append(_as_text(value)[:MAX_TEXT_CHARS])
    return " ".join("".join(out).split())


async def _read(response: httpx.Response, label: str) -> bytes:
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise ToolError(f"{_capital(label)} sent far too much to read out.", kind="failed")
        chunks.append(chunk)
    return b"".join(chunks)


def _lookup(data: Any, path: str) -> Any:
    """The value at a dotted path ("weather.0.description"); ``None`` if it isn't there."""
    if not path:
        return data
    for step in path.split("."):
        if isinstance(data, dict):
            data = data.get(step)
        elif isinstance(data, list) and re.fullmatch(r"-?\d+", step):
            index = int(step)
            data = data[index] if -len(data) <= index < len(data) else None
        else:
            return None
        if data is None:
            return None
    return data


def _shape(value: Any, digits: int) -> Any:
    """A value fit to be read aloud: rounded numbers, short plain strings, short lists."""
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, str):
        text = " ".join(value.split())
        return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"
    if isinstance(value, list):
        return [_shape(item, digits) for item in value[:MAX_LIST_ITEMS]]
    if isinstance(value, dict):
        return {str(k): _shape(v, digits) for k, v in list(value.items())[:10]}
    return str(value)[:MAX_TEXT_CHARS]


def _scrub(value: Any, secrets: list[str]) -> Any:
    """The result with every secret replaced (a service may echo a token back)."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "[redacted]")
        return value
    if isinstance(value, list):
        return [_scrub(item, secrets) for item in value]
    if isinstance(value, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    return value


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
