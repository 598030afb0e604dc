"""Personas: who the bot is on a call, as one YAML file each.

A persona holds the system instruction, the greeting, an optional speaking style, voices per TTS
provider and the tools it may use. MindBot ships three in ``mindbot/personas/`` (``mindbot``,
``receptionist``, ``tutor``); a deployment adds or replaces personas with its own folder, listed
after the shipped one:

    library = PersonaLibrary([SHIPPED_DIR, Path("my-personas")])
    persona = library.get("receptionist")
    greeting = persona.greeting_for(caller_name)

Every file is validated when the library loads, and a mistake is one ``ConfigError`` line naming
the file and the field, e.g. ``personas/tutor.yaml: field 'greeting' is required``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mindbot.errors import ConfigError
from mindbot.yamlfile import one_line, read_yaml_mapping

SHIPPED_DIR = Path(__file__).parent / "personas"
"""The folder of the personas that ship with MindBot."""

DEFAULT_PERSONA = "mindbot"

VoiceProvider = Literal["cartesia", "piper"]

_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_TOOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
# Spoken verbatim by the TTS, so these would be read out or mangled.
_NOT_SPOKEN = set("*_#`[]<>|")


class Persona(BaseModel):
    """One persona: what the bot is told, what it says first and how it sounds.

    Strings are stripped of surrounding whitespace; required strings must not be empty.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    name: str = Field(description="Identifier: lowercase letters, digits and single dashes.")
    display_name: str = Field(min_length=1)
    instructions: str = Field(min_length=1, description="The system instruction.")
    greeting: str = Field(min_length=1, description="What the bot says first; no placeholders.")
    greeting_returning: str | None = Field(
        default=None,
        min_length=1,
        description="Greeting for a returning caller whose name is known; may use {name}.",
    )
    voices: dict[VoiceProvider, str] = Field(
        default_factory=dict, description="Voice id per TTS provider."
    )
    speaking_style: str | None = Field(
        default=None, min_length=1, description="Appended to the instructions."
    )
    tools: tuple[str, ...] = Field(default=(), description="Names of the tools it may use.")
    knowledge_base: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="The knowledge-base collection it answers from (one per persona or tenant).",
    )
    language: str = "en"
    emotional: bool = Field(
        default=True,
        description="Whether the caller's emotion shapes the bot's voice (and hints the LLM).",
    )
    voice_emotion: str | None = Field(
        default=None,
        min_length=1,
        description="The voice's own emotion with Cartesia (e.g. 'content'); default: none.",
    )
    emotion_styles: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="How the bot sounds per caller emotion, e.g. "
        "{sad: {emotion: sympathetic, speed: 0.85}} (see mindbot/emotion.py).",
    )

    @field_validator("emotion_styles")
    @classmethod
    def _check_emotion_styles(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from mindbot.emotion import check_styles

        check_styles(value)
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("must be lowercase letters, digits and dashes, e.g. 'front-desk'")
        return value

    @field_validator("greeting")
    @classmethod
    def _check_greeting(cls, value: str) -> str:
        if placeholders := _PLACEHOLDER.findall(value):
            hint = (
                "; put {name} in 'greeting_returning' instead" if "{name}" in placeholders else ""
            )
            raise ValueError(f"must have no placeholders, found {', '.join(placeholders)}{hint}")
        if "{" in value or "}" in value:
            raise ValueError("must have no braces")
        _check_spoken(value)
        return value

    @field_validator("greeting_returning")
    @classmethod
    def _check_greeting_returning(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if others := [p for p in _PLACEHOLDER.findall(value) if p != "{name}"]:
            raise ValueError(f"may use only {{name}}, found {', '.join(others)}")
        if "{" in value.replace("{name}", "") or "}" in value.replace("{name}", ""):
            raise ValueError("has a brace that is not part of {name}")
        _check_spoken(value)
        return value

    @field_validator("voices")
    @classmethod
    def _check_voices(cls, value: dict[VoiceProvider, str]) -> dict[VoiceProvider, str]:
        if empty := [provider for provider, voice in value.items() if not voice.strip()]:
            raise ValueError(f"the voice id for {', '.join(empty)} is empty")
        return {provider: voice.strip() for provider, voice in value.items()}

    @field_validator("tools")
    @classmethod
    def _check_tools(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if bad := [tool for tool in value if not _TOOL.fullmatch(tool)]:
            raise ValueError(f"tool names must be identifiers, got {', '.join(map(repr, bad))}")
        if len(set(value)) != len(value):
            raise ValueError("lists a tool more than once")
        return value

    @field_validator("language")
    @classmethod
    def _check_language(cls, value: str) -> str:
        if not _LANGUAGE.fullmatch(value):
            raise ValueError("must be a language code such as 'en' or 'en-GB'")
        return value

    def system_instruction(self) -> str:
        """The system instruction for the LLM: the instructions, then the speaking style."""
        if self.speaking_style:
            return f"{self.instructions}\n\n{self.speaking_style}"
        return self.instructions

    def greeting_for(self, name: str | None) -> str:
        """What the bot says first to this caller.

        Args:
            name: The caller's name when known (e.g. remembered from an earlier call), else None.

        Returns:
            ``greeting_returning`` with ``{name}`` filled in when a name is given and the persona
            has one; otherwise ``greeting``, which never needs a name.
        """
        name = " ".join(name.split()) if name else ""
        if name and self.greeting_returning:
            return self.greeting_returning.replace("{name}", name)
        return self.greeting


def _check_spoken(text: str) -> None:
    if "\n" in text:
        raise ValueError("it is spoken aloud, so it must be a single line")
    if found := sorted(_NOT_SPOKEN & set(text)):
        raise ValueError(f"it is spoken aloud, so it must be plain words (found {''.join(found)})")


def load_persona(path: Path) -> Persona:
    """Read and validate one persona file.

    Args:
        path: A ``.yaml`` file whose ``name`` equals its stem (``tutor.yaml`` holds ``tutor``).

    Returns:
        The validated persona.

    Raises:
        ConfigError: The file is missing, unreadable, not YAML, not a mapping, or a field is
            unknown, missing or invalid. The message is one line naming the file and field.
    """
    data = read_yaml_mapping(path, "persona file", expected="a mapping of fields")
    try:
        persona = Persona.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_describe_validation_error(e)}") from None
    if persona.name != path.stem:
        raise ConfigError(
            f"{path}: field 'name' is {persona.name!r} but the file is {path.name}; "
            f"name the file {persona.name}.yaml or set name: {path.stem}"
        )
    return persona


class PersonaLibrary:
    """The personas of the given folders, validated at load, looked up by name.

    A later folder's persona replaces an earlier folder's persona of the same name, so a
    deployment lists ``SHIPPED_DIR`` first and its own folder after it.
    """

    def __init__(self, dirs: Sequence[Path]):
        """Load every ``*.yaml`` file in ``dirs``.

        Args:
            dirs: Folders to read, in order of increasing precedence.

        Raises:
            ConfigError: A folder is missing or a file is invalid (the first bad one is named).
        """
        self._personas: dict[str, Persona] = {}
        self._sources: dict[str, Path] = {}
        for folder in dirs:
            if not folder.is_dir():
                raise ConfigError(f"{folder}: persona folder not found")
            for path in sorted(folder.glob("*.yaml")):
                persona = load_persona(path)
                if persona.name in self._sources:
                    logger.debug(f"{self}: {path} overrides {self._sources[persona.name]}")
                self._personas[persona.name] = persona
                self._sources[persona.name] = path

    def __repr__(self) -> str:
        """The library and the names it knows, for logs."""
        return f"PersonaLibrary({', '.join(self.names())})"

    def names(self) -> list[str]:
        """The names of the known personas, sorted."""
        return sorted(self._personas)

    def get(self, name: str) -> Persona:
        """The persona called ``name``.

        Raises:
            ConfigError: No persona has that name; the message lists the known ones.
        """
        try:
            return self._personas[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown persona {name!r}; known personas: {known}") from None

    def source(self, name: str) -> Path:
        """The file the persona called ``name`` was loaded from.

        Raises:
            ConfigError: No persona has that name.
        """
        self.get(name)
        return self._sources[name]

    @property
    def default(self) -> Persona:
        """The ``mindbot`` persona, MindBot's general assistant.

        Raises:
            ConfigError: None of the folders has it.
        """
        return self.get(DEFAULT_PERSONA)


def _describe_validation_error(error: ValidationError) -> str:
    problems = []
    for problem in error.errors():
        field = _field_path(problem["loc"])
        kind = problem["type"]
        if kind == "missing":
            problems.append(f"field {field!r} is required")
        elif kind == "extra_forbidden":
            allowed = ", ".join(Persona.model_fields)
            problems.append(f"unknown field {field!r} (allowed: {allowed})")
        elif kind == "string_too_short":
            problems.append(f"field {field!r} must not be empty")
        else:
            message = problem["msg"].removeprefix("Value error, ")
            message = message[:1].lower() + message[1:]
            if kind == "tuple_type":  # YAML has lists; the tuple only keeps the persona frozen
                message = "input should be a list"
            if kind.endswith("_type") or kind in ("literal_error", "enum"):
                message += f" (got {_short_repr(problem.get('input'))})"
            if kind == "string_type" and isinstance(problem.get("input"), bool):
                message += "; YAML reads yes, no, on and off as true or false, so quote it"
            problems.append(f"field {field!r}: {message}")
    return one_line("; ".join(problems))


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int) and path:
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "?"


def _short_repr(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
