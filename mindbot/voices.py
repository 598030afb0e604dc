"""The voice catalog: the voices of each TTS provider, by names a caller can say.

MindBot ships one YAML file per provider in ``mindbot/voices/`` (Cartesia's voices with their
real ids, the offline Piper voice); a deployment adds or replaces voices with its own file of the
same format, where a voice with the same id or name replaces the shipped one::

    catalog = VoiceCatalog.load(user_file=Path("my-voices.yaml"))
    catalog.resolve("the british reading lady", "cartesia").id   # '71a7ad14-…'
    catalog.for_language("es", "cartesia").name                  # 'Spanish-speaking Lady'
    resolve_voice = catalog.resolver("cartesia")                 # name -> id | None

A file maps each provider to its voices::

    cartesia:
      default: f786b574-daa5-4673-aa0c-cbe3e8534c02   # a voice's id or name
      languages: [en, es]     # what the provider speaks with any voice (its language setting)
      voices:
        - name: Katie         # what a caller says
          id: f786b574-daa5-4673-aa0c-cbe3e8534c02
          languages: [en]     # what it sounds native in; the first voice of a language is its pick
          gender: female
          description: Warm, conversational American English.
          aliases: [default]

A mistake in a file is one ``ConfigError`` line naming the file and the field.

This module also holds what a session needs at its start: ``catalog_speech_style()`` (the
caller's preferred voice, said by name, resolved through the catalog) and
``language_switching()`` (whether the session can follow a caller into another language, with the
line to log).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any, Literal

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mindbot.errors import ConfigError
from mindbot.preferences import LANGUAGES, VOICE_PREFERENCE, SpeechStyle, speech_style
from mindbot.yamlfile import read_yaml_mapping

SHIPPED_DIR = Path(__file__).parent / "voices"
"""The folder of the voice files that ship with MindBot (one ``<provider>.yaml`` each)."""

MAX_NAME_CHARS = 200
"""Longer input is not a voice name (``resolve`` returns ``None`` without looking)."""

FUZZY_CUTOFF = 0.8
"""How close (difflib ratio) a misspelt name must be to a known one to match it."""

_LANGUAGE = re.compile(r"[a-z]{2,3}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# Words a caller wraps a name in ("the British lady voice, please") that never tell voices apart.
_FILLER = frozenset({"the", "a", "an", "voice", "please"})
# Providers whose voice ids have a recognizable shape, so an id missing from the catalog (a
# cloned voice) can still be used.
_ID_SHAPES = {"cartesia": _UUID}


class Voice(BaseModel):
    """One voice of one provider.

    Strings are stripped of surrounding whitespace; ``languages`` are ISO 639-1 codes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100, description="What a caller says.")
    id: str = Field(min_length=1, max_length=200, description="The provider's voice id.")
    languages: tuple[str, ...] = Field(min_length=1, description="Where it sounds native.")
    gender: Literal["female", "male", "neutral"] | None = None
    description: str | None = Field(default=None, min_length=1)
    aliases: tuple[str, ...] = Field(default=(), description="Other names a caller may say.")

    @field_validator("name", "id")
    @classmethod
    def _check_printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable text on one line")
        return value

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_codes(value)

    @field_validator("aliases")
    @classmethod
    def _check_aliases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if bad := [alias for alias in value if not alias.strip() or not alias.isprintable()]:
            raise ValueError(f"aliases must be non-empty printable text, got {bad[0]!r}")
        return tuple(alias.strip() for alias in value)

    def speaks(self, language: str) -> bool:
        """Whether the voice sounds native in ``language`` (an ISO 639-1 code)."""
        return language in self.languages


class ProviderVoices(BaseModel):
    """The voices of one provider, as a voices file lists them."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    default: str | None = Field(default=None, min_length=1, description="A voice's id or name.")
    languages: tuple[str, ...] = Field(
        default=(), description="Languages the provider speaks with any of its voices."
    )
    voices: tuple[Voice, ...] = ()

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_codes(value)


class VoiceCatalog:
    """The known voices of every provider, looked up by a name a caller says or by id.

    Args:
        providers: Each provider's voices (``load()`` builds them from the voice files).

    Raises:
        ConfigError: A provider's default is not one of its voices, or two voices share an id
            or a name.
    """

    def __init__(self, providers: Mapping[str, ProviderVoices]):
        self._providers = dict(providers)
        self._by_key: dict[str, dict[str, Voice]] = {}
        self._by_id: dict[str, dict[str, Voice]] = {}
        self._defaults: dict[str, Voice | None] = {}
        for provider, entry in self._providers.items():
            self._index(provider, entry)

    @classmethod
    def load(
        cls, user_file: Path | None = None, *, shipped_dir: Path = SHIPPED_DIR
    ) -> VoiceCatalog:
        """The shipped voices, with a deployment's own voices file applied over them.

        Args:
            user_file: More voices (same format). A voice with the id or the name of a shipped
                voice replaces it; its ``default`` and ``languages`` replace the shipped ones.
            shipped_dir: The folder of the shipped ``<provider>.yaml`` files.

        Raises:
            ConfigError: A file is missing, unreadable or invalid (one line naming the file and
                the field).
        """
        providers: dict[str, ProviderVoices] = {}
        for path in sorted(shipped_dir.glob("*.yaml")):
            providers.update(load_voices_file(path))
        if user_file is not None:
            for provider, entry in load_voices_file(user_file).items():
                providers[provider] = _merge(providers.get(provider), entry)
        try:
            return cls(providers)
        except ConfigError as e:
            where = user_file if user_file is not None else shipped_dir
            raise ConfigError(f"{where}: {e}") from None

    def __repr__(self) -> str:
        """The catalog and how many voices each provider has, for logs."""
        counts = ", ".join(f"{p}: {len(e.voices)}" for p, e in self._providers.items())
        return f"VoiceCatalog({counts})"

    def providers(self) -> list[str]:
        """The providers the catalog has voices for, sorted."""
        return sorted(self._providers)

    def default(self, provider: str) -> Voice | None:
        """The provider's default voice (``None`` for a provider with no voices)."""
        return self._defaults.get(provider)

    def get(self, voice_id: str, provider: str) -> Voice | None:
        """The voice with this exact id (case-insensitive), or ``None``."""
        if not isinstance(voice_id, str):
            return None
        return self._by_id.get(provider, {}).get(voice_id.strip().casefold())

    def resolve(self, name_or_id: str, provider: str) -> Voice | None:
        """The voice a caller means, or ``None`` when no voice (or more than one) fits.

        It tolerates case, accents, punctuation and spacing ("barber shop man"), the words
        around a name ("the Katie voice, please") and small misspellings ("Jaqueline"), by
        difflib similarity of at least ``FUZZY_CUTOFF`` with one clear best match. An id
        matches too.

        Args:
            name_or_id: What the caller said (or a voice id).
            provider: The TTS provider whose voices to search.
        """
        if not isinstance(name_or_id, str) or len(name_or_id) > MAX_NAME_CHARS:
            return None
        if voice := self.get(name_or_id, provider):
            return voice
        keys = self._by_key.get(provider, {})
        key = _key(name_or_id)
        if not key:
            return None
        if voice := keys.get(key):
            return voice
        if len(key) < 4:  # too short to tell a misspelling from another word
            return None
        return _closest(key, keys)

    def resolver(self, provider: str) -> Callable[[str], str | None]:
        """``resolve_voice(name) -> id | None`` for one provider (for the voice commands)."""

        def resolve_voice(name: str) -> str | None:
            voice = self.resolve(name, provider)
            return voice.id if voice else None

        return resolve_voice

    def for_language(self, language: str, provider: str) -> Voice | None:
        """The voice to speak ``language`` with, or ``None`` when the provider cannot speak it.

        The provider's default voice when it is native in the language, else the first voice
        listed for it; with no native voice, the default voice when the provider speaks the
        language with any voice (Cartesia's language setting).

        Args:
            language: An ISO 639-1 code; a region (``es-MX``) is ignored.
            provider: The TTS provider.
        """
        code = base_language(language)
        entry = self._providers.get(provider)
        if code is None or entry is None:
            return None
        default = self._defaults.get(provider)
        if default is not None and default.speaks(code):
            return default
        if native := next((v for v in entry.voices if v.speaks(code)), None):
            return native
        return default if code in entry.languages else None

    def languages(self, provider: str) -> list[str]:
        """Every language the provider can speak with some voice, sorted."""
        entry = self._providers.get(provider)
        if entry is None:
            return []
        codes = set(entry.languages)
        for voice in entry.voices:
            codes.update(voice.languages)
        return sorted(codes)

    def _index(self, provider: str, entry: ProviderVoices) -> None:
        by_key: dict[str, Voice] = {}
        by_id: dict[str, Voice] = {}
        for voice in entry.voices:
            voice_id = voice.id.casefold()
            if voice_id in by_id:
                raise ConfigError(f"{provider}: the id {voice.id!r} is listed twice")
            by_id[voice_id] = voice
            for said in (voice.name, *voice.aliases):
                key = _key(said)
                if not key:
                    raise ConfigError(f"{provider}: {said!r} has no letters or digits to say")
                other = by_key.get(key)
                if other is not None and other is not voice:
                    raise ConfigError(
                        f"{provider}: the name {said!r} is used by both {other.name!r} and "
                        f"{voice.name!r}"
                    )
                by_key[key] = voice
        self._by_key[provider] = by_key
        self._by_id[provider] = by_id
        default = None
        if entry.default is not None:
            default = by_id.get(entry.default.casefold()) or by_key.get(_key(entry.default))
            if default is None:
                raise ConfigError(f"{provider}: default {entry.default!r} is not one of its voices")
        elif entry.voices:
            default = entry.voices[0]
        self._defaults[provider] = default

    # Last in the class body, so the ``list`` in the annotations above is the builtin.
    def list(self, provider: str) -> list[Voice]:
        """The provider's voices, in the files' order (empty for an unknown provider)."""
        entry = self._providers.get(provider)
        return list(entry.voices) if entry else []


def load_voices_file(path: Path) -> dict[str, ProviderVoices]:
    """Read and validate one voices file.

    Args:
        path: A YAML file mapping provider names to their voices.

    Raises:
        ConfigError: The file is missing, unreadable, not YAML or invalid; the message is one
            line naming the file and the field (e.g. ``cartesia.voices[2].id``).
    """
    data = read_yaml_mapping(
        path,
        "voices file",
        expected="a mapping of providers",
        empty="providers and their voices",
    )
    providers: dict[str, ProviderVoices] = {}
    for provider, entry in data.items():
        if not isinstance(provider, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", provider):
            raise ConfigError(f"{path}: {provider!r} is not a provider name (e.g. cartesia)")
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: {provider}: expected default, languages and voices")
        try:
            providers[provider] = ProviderVoices.model_validate(entry)
        except ValidationError as e:
            raise ConfigError(f"{path}: {_describe(provider, e)}") from None
    return providers


def base_language(code: Any) -> str | None:
    """The ISO 639-1 (or 639-3) code of a language tag, lowercase; ``None`` if it is not one.

    ``"es-MX"``, ``"ES"``, ``"es_419"`` and ``Language.ES`` all give ``"es"``; ``""``,
    ``"multi"`` and ``"español"`` give ``None``.
    """
    if code is None:
        return None
    text = str(code).strip().lower().replace("_", "-")
    base = text.split("-", 1)[0]
    return base if _LANGUAGE.fullmatch(base) else None


def catalog_speech_style(
    voices: Mapping[str, str],
    language: str,
    preferences: Mapping[str, Any],
    provider: str,
    catalog: VoiceCatalog,
) -> SpeechStyle:
    """``preferences.speech_style()``, with voice names resolved through the catalog.

    The caller's preferred voice may be a name ("Jacqueline", "the British lady"): it becomes
    the provider's id. A preference the catalog does not know and that is not shaped like the
    provider's ids is dropped for the persona's voice (a name the TTS does not know would leave
    the bot silent). When the caller chose no voice and the persona's voice is not native in
    the session's language, the catalog's voice for that language is used.

    Args:
        voices: The persona's voice per TTS provider (ids or names).
        language: The persona's language.
        preferences: The caller's stored preferences.
        provider: The session's TTS provider.
        catalog: The voice catalog.
    """
    style = speech_style(voices, language, preferences, provider)
    preferred = preferences.get(VOICE_PREFERENCE)
    chosen: str | None = None
    if preferred:
        chosen = _usable_id(str(preferred), provider, catalog)
        if chosen is None:
            logger.info(f"The caller's preferred {provider} voice is not in the catalog")
            logger.debug(f"Unknown preferred voice: {preferred!r}")
    if chosen is None and (persona_voice := voices.get(provider)):
        chosen = _usable_id(persona_voice, provider, catalog) or persona_voice
        voice = catalog.get(chosen, provider)
        code = base_language(style.language)
        if code and voice is not None and not voice.speaks(code):
            if (native := catalog.for_language(code, provider)) and native.speaks(code):
                chosen = native.id
    others = {p: v for p, v in style.voices.items() if p != provider}
    # No usable voice: leave the provider out, so the service uses its configured default.
    return replace(style, voices=others if chosen is None else {**others, provider: chosen})


@dataclass(frozen=True)
class LanguageSwitching:
    """Whether a session can follow its caller into another language.

    Args:
        enabled: Whether to add the language switcher to the pipeline.
        languages: The languages it may switch between (ISO 639-1 codes).
        message: One line for the log at session start, saying what happens and why.
    """

    enabled: bool
    languages: tuple[str, ...]
    message: str


def language_switching(
    stt: str,
    tts: str,
    catalog: VoiceCatalog,
    *,
    supported: Iterable[str] = LANGUAGES,
    env_var: str = "MINDBOT_DEEPGRAM_API_KEY",
) -> LanguageSwitching:
    """Decide whether a session's services can follow the caller's language, and say why.

    Only Deepgram detects the spoken language (with ``language=multi``); the offline Whisper
    model is English-only. The TTS must have a voice for a language to switch to it.

    Args:
        stt: The session's STT provider (``deepgram`` or ``whisper``).
        tts: The session's TTS provider (``cartesia`` or ``piper``).
        catalog: The voice catalog (which languages the TTS provider can speak).
        supported: The languages MindBot supports (ISO 639-1 codes).
        env_var: The variable that enables Deepgram, named in the offline message.
    """
    allowed = set(supported)
    spoken = [code for code in catalog.languages(tts) if code in allowed]
    if stt != "deepgram":
        return LanguageSwitching(
            False,
            ("en",),
            "Language switching is off: the offline speech recognizer (Whisper tiny.en) "
            "understands English only, so callers are heard and answered in English; set "
            f"{env_var} to follow callers who speak another language.",
        )
    if len(spoken) < 2:
        names = ", ".join(LANGUAGES.get(code, code) for code in spoken) or "no language"
        return LanguageSwitching(
            False,
            tuple(spoken),
            f"Language switching is off: the {tts} voices speak {names} only; "
            "add voices for other languages to the voices file or use Cartesia.",
        )
    return LanguageSwitching(
        True,
        tuple(spoken),
        "Language switching is on: Deepgram detects the caller's language and MindBot "
        f"answers in it ({', '.join(spoken)}).",
    )


def _usable_id(value: str, provider: str, catalog: VoiceCatalog) -> str | None:
    if voice := catalog.resolve(value, provider):
        return voice.id
    shape = _ID_SHAPES.get(provider)
    if shape is not None and shape.fullmatch(value.strip()):
        return value.strip()
    return None


def _merge(shipped: ProviderVoices | None, user: ProviderVoices) -> ProviderVoices:
    """The shipped voices with the user's over them: same id or same name replaces."""
    if shipped is None:
        return user
    by_id = {v.id.casefold(): v for v in user.voices}
    by_name = {_key(v.name): v for v in user.voices}
    kept: list[Voice] = []
    replaced: dict[str, Voice] = {}
    for voice in shipped.voices:
        if replacement := by_id.get(voice.id.casefold()) or by_name.get(_key(voice.name)):
            replaced[voice.id.casefold()] = replacement
            replaced[_key(voice.name)] = replacement
        else:
            kept.append(voice)
    fields = user.model_fields_set
    default = shipped.default
    if "default" in fields:
        default = user.default
    elif default is not None:
        # The shipped default was replaced: its replacement is the default now.
        if replacement := replaced.get(default.casefold()) or replaced.get(_key(default)):
            default = replacement.id
    return ProviderVoices(
        default=default,
        languages=user.languages if "languages" in fields else shipped.languages,
        voices=(*kept, *user.voices),
    )


def _key(text: str) -> str:
    """A name as compared: no accents, case, punctuation, spaces or filler words."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    words = re.findall(r"[^\W_]+", plain)
    kept = [w for w in words if w not in _FILLER]
    return "".join(kept or words)


def _closest(key: str, keys: Mapping[str, Voice]) -> Voice | None:
    # A misspelling changes a name's length by a letter or two; more is another phrase.
    scored = sorted(
        (
            (SequenceMatcher(None, key, known).ratio(), voice)
            for known, voice in keys.items()
            if abs(len(key) - len(known)) <= max(2, len(known) // 5)
        ),
        key=lambda pair: pair[0],
        reverse=True,
    )
    if not scored or scored[0][0] < FUZZY_CUTOFF:
        return None
    best_score, best = scored[0]
    runner_up = next((score for score, voice in scored[1:] if voice is not best), 0.0)
    return best if best_score - runner_up >= 0.05 else None


def _check_codes(value: Collection[str]) -> tuple[str, ...]:
    codes = tuple(str(code).strip().lower() for code in value)
    if bad := [code for code in codes if not _LANGUAGE.fullmatch(code)]:
        raise ValueError(f"must be ISO 639-1 codes such as 'en' or 'es', got {bad[0]!r}")
    return codes


def _describe(provider: str, error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join([provider, *(_part(p) for p in problem["loc"])]).replace(".[", "[")
    kind = problem["type"]
    if kind == "missing":
        return f"{where} is required"
    if kind == "extra_forbidden":
        return f"unknown field {where}"
    message = problem["msg"].removeprefix("Value error, ")
    return f"{where}: {message[:1].lower()}{message[1:]}"


def _part(loc: int | str) -> str:
    return f"[{loc}]" if isinstance(loc, int) else str(loc)
