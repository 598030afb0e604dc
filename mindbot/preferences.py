"""A caller's speech preferences: the voice, speaking rate and language MindBot uses with them.

They are stored per user (``storage.preferences``), set by voice through the ``set_preference``
tool or through the API, and applied when a session starts: ``speech_style()`` merges them with
the persona's defaults into the ``SpeechStyle`` the session's STT, LLM and TTS are built with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

VOICE_PREFERENCE = "voice"
RATE_PREFERENCE = "speaking_rate"
LANGUAGE_PREFERENCE = "language"
WAKE_PHRASE_PREFERENCE = "wake_phrase"

#: Languages a caller may choose, by ISO 639-1 code (Deepgram, OpenAI and Cartesia speak them).
LANGUAGES = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "pl": "Polish",
    "sv": "Swedish",
    "tr": "Turkish",
    "ru": "Russian",
    "hi": "Hindi",
    "ja": "Japanese",
    "ko": "Korean",
    "zh": "Chinese",
}

#: Spoken rates, as multiples of the voice's normal speed.
RATES = {"slow": 0.85, "slower": 0.85, "normal": 1.0, "fast": 1.15, "faster": 1.15}
MIN_RATE, MAX_RATE = 0.6, 1.5  # Cartesia's range for generation_config.speed
MAX_VOICE_CHARS = 100
MAX_WAKE_PHRASE_CHARS = 60


@dataclass(frozen=True)
class SpeechStyle:
    """How one session sounds and which language it speaks.

    Args:
        voices: Voice per TTS provider.
        speed: Speaking rate as a multiple of normal (``None``: the voice's own).
        language: ISO 639-1 code.
    """

    voices: Mapping[str, str] = field(default_factory=dict)
    speed: float | None = None
    language: str = "en"

    @property
    def language_name(self) -> str:
        return LANGUAGES.get(self.language, self.language)


def parse_rate(value: Any) -> float | None:
    """A speaking rate from "slow", "normal", "fast" or a number in [0.6, 1.5]; else None."""
    text = str(value).strip().lower()
    if text in RATES:
        return RATES[text]
    try:
        rate = float(text.rstrip("x"))
    except ValueError:
        return None
    return round(rate, 2) if MIN_RATE <= rate <= MAX_RATE else None


def parse_language(value: Any) -> str | None:
    """The ISO code of a supported language named by code or English name; else None."""
    text = str(value).strip().lower()
    if text in LANGUAGES:
        return text
    for code, name in LANGUAGES.items():
        if name.lower() == text:
            return code
    return None


def parse_voice(value: Any) -> str | None:
    """A voice: a provider's id or a name from the voice catalog ("British Reading Lady").

    Printable, at most 100 characters, spaces collapsed; else None. Whether the TTS knows it is
    decided when a session starts (``mindbot.voices.catalog_speech_style``): an unknown name
    falls back to the persona's voice.
    """
    text = " ".join(str(value).split())
    if not text or len(text) > MAX_VOICE_CHARS or not text.isprintable():
        return None
    return text


def parse_wake_phrase(value: Any) -> str | None:
    """A wake phrase: two to six words, printable, at most 60 characters; else None.

    One word ("computer") wakes the bot on too much ordinary speech; more than six is not a
    phrase anyone says to wake a device.
    """
    text = " ".join(str(value).split())
    words = text.split()
    if not 2 <= len(words) <= 6 or len(text) > MAX_WAKE_PHRASE_CHARS or not text.isprintable():
        return None
    return text


def speech_style(
    voices: Mapping[str, str],
    language: str,
    preferences: Mapping[str, Any],
    provider: str,
) -> SpeechStyle:
    """The persona's voices and language, with the caller's preferences applied.

    Args:
        voices: The persona's voice per TTS provider.
        language: The persona's language.
        preferences: The caller's stored preferences.
        provider: The session's TTS provider (the one a preferred voice is for).
    """
    chosen = dict(voices)
    if voice := preferences.get(VOICE_PREFERENCE):
        chosen[provider] = str(voice)
    rate = preferences.get(RATE_PREFERENCE)
    return SpeechStyle(
        voices=chosen,
        speed=float(rate) if isinstance(rate, int | float) else None,
        language=str(preferences.get(LANGUAGE_PREFERENCE) or language),
    )
