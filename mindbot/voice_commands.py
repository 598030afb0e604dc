"""Voice commands: what a caller can say to control the call, recognized without the LLM.

Each language has a YAML file (``mindbot/voice_commands/en.yaml``, ``es.yaml``) that lists, per
action, the phrases that trigger it, the filler words and politeness a caller wraps them in,
the bot's names, the number words, and what the bot says back::

    commands = load_commands("en")
    commands.match("Um, could you repeat that please?")   # Command(action='repeat')
    commands.match("Switch voice to Joe")                  # Command('switch_voice', 'joe')
    commands.match("Don't stop the music")                 # None: not the whole utterance

A transcript is a command only when the WHOLE utterance, once normalized (case, punctuation,
accents, digits as words) and stripped of fillers, is one of the phrases: a phrase inside a
longer sentence is the caller talking to the bot, not a command. Matching is a dictionary
lookup (plus a few anchored patterns for ``switch_voice``); a transcript longer than
``MAX_COMMAND_CHARS`` is never a command and costs nothing to reject.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mindbot.errors import ConfigError
from mindbot.yamlfile import one_line, read_yaml_mapping

COMMANDS_DIR = Path(__file__).parent / "voice_commands"
"""Where the shipped per-language command files live."""

ACTIONS = (
    "stop",
    "repeat",
    "slower",
    "faster",
    "louder",
    "quieter",
    "start_over",
    "goodbye",
    "mute",
    "unmute",
    "switch_voice",
)
"""Every action a command can ask for."""

REPLIES = (
    "slower",
    "faster",
    "louder",
    "quieter",
    "start_over",
    "goodbye",
    "mute",
    "unmute",
    "switch_voice",
    "unknown_voice",
    "nothing_to_repeat",
)
"""What the bot may say back; ``switch_voice`` and ``unknown_voice`` may use ``{voice}``."""

VOICE_SLOT = "{voice}"
MAX_COMMAND_CHARS = 200
"""Longer transcripts are never commands (a command is a few words, even with fillers)."""
MAX_VOICE_WORDS = 4

_SPACES = re.compile(r"\s+")
_NOT_WORD = re.compile(r"[^\w\s]|_")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


@dataclass(frozen=True)
class Command:
    """A recognized command.

    Parameters:
        action: One of ``ACTIONS``.
        argument: What the action is about, as the caller said it (normalized): the voice
            name for ``switch_voice``; ``None`` otherwise.
    """

    action: str
    argument: str | None = None


class _CommandsFile(BaseModel):
    """The schema of a command file (see ``en.yaml`` for a commented example)."""

    model_config = ConfigDict(extra="forbid")

    language: str = Field(pattern=r"^[a-z]{2}$")
    fillers: list[str] = Field(default_factory=list)
    bot_names: list[str] = Field(default_factory=list)
    numbers: list[str] = Field(default_factory=list)
    commands: dict[str, list[str]]
    replies: dict[str, str] = Field(default_factory=dict)


@dataclass
class CommandSet:
    """One language's voice commands, ready to match transcripts.

    Build it with ``load_commands`` (or ``CommandSet.from_mapping`` for data already parsed).

    Parameters:
        language: ISO 639-1 code.
        phrases: Normalized phrase → action.
        patterns: ``(regex, action)`` for phrases with a ``{voice}`` slot.
        fillers: Normalized filler words and phrases (as tuples of words), longest first.
        numbers: Number words by value (``numbers[2] == "two"``).
        replies: What the bot says back, by reply name (see ``REPLIES``).
    """

    language: str
    phrases: dict[str, str]
    patterns: list[tuple[re.Pattern[str], str]]
    fillers: list[tuple[str, ...]]
    numbers: list[str] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "<voice commands>") -> CommandSet:
        """Validate parsed YAML and build the matcher.

        Args:
            data: The parsed file.
            source: How errors name the file.

        Raises:
            ConfigError: A field is missing, unknown or invalid; one line naming the file and
                the field.
        """
        if not isinstance(data, dict):
            kind = "nothing" if data is None else type(data).__name__
            raise ConfigError(
                f"{source}: expected a mapping of fields at the top level, got {kind}"
            )
        try:
            spec = _CommandsFile.model_validate(data)
        except ValidationError as e:
            raise ConfigError(f"{source}: {_describe(e)}") from None
        numbers = [_plain(n) for n in spec.numbers]
        fillers = [tuple(_plain(f).split()) for f in [*spec.fillers, *spec.bot_names]]
        if any(not words for words in fillers):
            raise ConfigError(f"{source}: field 'fillers': a filler must have words")
        commands = cls(
            language=spec.language,
            phrases={},
            patterns=[],
            fillers=sorted(set(fillers), key=len, reverse=True),
            numbers=numbers,
        )
        for action, phrases in spec.commands.items():
            where = f"commands.{action}"
            if action not in ACTIONS:
                raise ConfigError(
                    f"{source}: unknown action {where!r} (known: {', '.join(ACTIONS)})"
                )
            if not phrases:
                raise ConfigError(f"{source}: field {where!r} must list at least one phrase")
            for phrase in phrases:
                commands._add(action, phrase, f"{source}: field {where!r}")
        for name, text in spec.replies.items():
            if name not in REPLIES:
                raise ConfigError(
                    f"{source}: unknown reply 'replies.{name}' (known: {', '.join(REPLIES)})"
                )
            if "\n" in text.strip():
                raise ConfigError(f"{source}: field 'replies.{name}' must be a single line")
            commands.replies[name] = text.strip()
        return commands

    def _add(self, action: str, phrase: str, where: str) -> None:
        if VOICE_SLOT in phrase:
            if action != "switch_voice" or phrase.count(VOICE_SLOT) != 1:
                raise ConfigError(f"{where}: only switch_voice phrases take one {VOICE_SLOT}")
            before, after = (self.normalize(part) for part in phrase.split(VOICE_SLOT))
            if not before and not after:
                raise ConfigError(f"{where}: {phrase!r} needs words around {VOICE_SLOT}")
            voice = rf"(?P<voice>\S+(?: \S+){{0,{MAX_VOICE_WORDS - 1}}})"
            regex = " ".join(filter(None, [re.escape(before), voice, re.escape(after)]))
            self.patterns.append((re.compile(f"^{regex}$"), action))
            return
        if action == "switch_voice":
            raise ConfigError(f"{where}: {phrase!r} needs a {VOICE_SLOT} slot")
        key = self.normalize(phrase)
        if not key:
            raise ConfigError(f"{where}: {phrase!r} has no words once fillers are removed")
        if self.phrases.get(key, action) != action:
            raise ConfigError(f"{where}: {phrase!r} is also a phrase of {self.phrases[key]!r}")
        self.phrases[key] = action

    def normalize(self, text: str) -> str:
        """Case, accents, punctuation and digits folded; fillers and repeated words removed.

        ``"Um, STOP — stop talking, please!"`` → ``"stop talking"``.
        """
        words = _plain(text, self.numbers).split()
        kept: list[str] = []
        i = 0
        while i < len(words):
            filler = next((f for f in self.fillers if tuple(words[i : i + len(f)]) == f), None)
            if filler:
                i += len(filler)
                continue
            if not kept or kept[-1] != words[i]:  # "stop stop stop" is one "stop"
                kept.append(words[i])
            i += 1
        return " ".join(kept)

    def match(self, text: Any) -> Command | None:
        """The command ``text`` is, when the whole of it is one; otherwise ``None``.

        Never raises: anything that is not a short string is simply not a command.
        """
        if not isinstance(text, str) or not text or len(text) > MAX_COMMAND_CHARS:
            return None
        key = self.normalize(text)
        if not key:
            return None
        if action := self.phrases.get(key):
            return Command(action)
        for pattern, action in self.patterns:
            if found := pattern.match(key):
                return Command(action, found.group("voice"))
        return None

    def reply(self, name: str, **values: str) -> str:
        """What the bot says back for ``name`` (``""``: nothing), with ``{voice}`` filled in."""
        text = self.replies.get(name, "")
        try:
            return text.format(**values)
        except (KeyError, IndexError, ValueError):
            return text


def load_commands(language: str = "en", *, folder: Path | None = None) -> CommandSet:
    """Read and validate the command file of ``language``.

    Args:
        language: ISO 639-1 code; the file is ``<folder>/<language>.yaml``.
        folder: Where the files are (default: the shipped ``COMMANDS_DIR``).

    Raises:
        ConfigError: No file for the language (the message lists those there are), or the
            file is unreadable, not YAML, or invalid; one line naming the file and the field.
    """
    folder = folder or COMMANDS_DIR
    if not re.fullmatch(r"[a-z]{2}", language or ""):
        raise ConfigError(f"voice commands: {language!r} is not an ISO 639-1 language code")
    path = folder / f"{language}.yaml"
    if not path.is_file():
        known = ", ".join(available_languages(folder)) or "none"
        raise ConfigError(f"{path}: no voice commands for {language!r} (available: {known})")
    return load_commands_file(path)


def load_commands_file(path: Path) -> CommandSet:
    """Read and validate one command file.

    Raises:
        ConfigError: One line naming the file and what is wrong.
    """
    data = read_yaml_mapping(path, "voice commands file", expected="a mapping of fields")
    return CommandSet.from_mapping(data, source=str(path))


def available_languages(folder: Path | None = None) -> list[str]:
    """The languages that have a command file in ``folder`` (default: the shipped ones)."""
    return sorted(p.stem for p in (folder or COMMANDS_DIR).glob("*.yaml"))


def _plain(text: str, numbers: list[str] | None = None) -> str:
    """Lower-case words without accents, punctuation, apostrophes or control characters."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.replace("'", "")  # "let's" and "lets" are the same word to a transcriber
    text = _NOT_WORD.sub(" ", text)
    words = []
    for word in text.split():
        if word.isdecimal():  # int() reads every decimal digit, "٣" too; "²" is no decimal
            value = int(word) if len(word) < 6 else -1
            word = numbers[value] if numbers and 0 <= value < len(numbers) else word
        words.append(word)
    return _SPACES.sub(" ", " ".join(words)).strip()


def _describe(error: ValidationError) -> str:
    problems = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "?"
        if problem["type"] == "missing":
            problems.append(f"field {where!r} is required")
        elif problem["type"] == "extra_forbidden":
            allowed = ", ".join(_CommandsFile.model_fields)
            problems.append(f"unknown field {where!r} (allowed: {allowed})")
        else:
            problems.append(f"field {where!r}: {problem['msg'][:1].lower()}{problem['msg'][1:]}")
    return one_line("; ".join(problems))
