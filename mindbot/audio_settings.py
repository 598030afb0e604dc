"""Audio settings in one place: turn taking, barge-in, noise, wake phrases, vocabulary, volume.

They live under ``Settings.audio``, so they come from the same places as every other setting:
``MINDBOT_AUDIO__<FIELD>`` environment variables (a list is JSON), or the ``audio:`` section of
the YAML settings file::

    audio:
      vad_stop_secs: 0.3
      barge_in: min_words          # the caller must say 3 words to interrupt the bot
      barge_in_min_words: 3
      noise_filter: rnnoise
      wake_phrases: [hey mindbot]  # always-on rooms: nothing is answered before the phrase
      wake_timeout_secs: 20
      vocabulary: [Harbor Lane, TrailSync, Bellport]

A bad value is reported once per field, naming the variable (``MINDBOT_AUDIO__BARGE_IN: ...``).

The module also holds the pure helpers that turn wake phrases into what Pipecat's
``WakePhraseUserTurnStartStrategy`` can match against a transcript.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_PHRASE_CHARS = 60
"""The longest wake phrase or vocabulary term, in characters."""

MAX_PHRASE_WORDS = 6
"""The most words in a wake phrase or vocabulary term."""

MAX_DEPLOYMENT_TERMS = 100
"""The most vocabulary terms a deployment may list (Deepgram accepts 100 keyterms in all)."""

_PUNCTUATION = re.compile(r"[^\w\s]")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_CONTROL = {"Cc", "Cf", "Cs", "Co", "Cn"}


class AudioSettings(BaseModel):
    """How MindBot listens and speaks: VAD, end of turn, barge-in, noise, wake phrases."""

    model_config = ConfigDict(extra="forbid")

    vad_confidence: float = Field(
        default=0.7, gt=0.0, le=1.0, description="Silero VAD: how sure it must be of speech."
    )
    vad_start_secs: float = Field(
        default=0.2, ge=0.0, le=2.0, description="Speech this long starts a VAD segment."
    )
    vad_min_volume: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="Silero VAD: quietest audio counted as speech (Pipecat's default 0.6). Lower "
        "hears a caller talking over the bot sooner (mindbot bench bargein), and more noise.",
    )
    vad_stop_secs: float = Field(
        default=0.2, ge=0.0, le=2.0, description="Silence this long ends a VAD segment."
    )
    smart_turn: bool = Field(
        default=True,
        description="Decide the end of a turn with the smart-turn model; off: after a silence.",
    )
    smart_turn_stop_secs: float = Field(
        default=3.0,
        ge=0.3,
        le=10.0,
        description="When smart-turn judges a turn incomplete, end it anyway after this much "
        "silence (Pipecat's default: 3 s). Lower answers sooner after a misjudged turn; it "
        "also cuts off callers who pause longer mid-sentence (mindbot bench cutoff).",
    )
    speculative_llm: bool = Field(
        default=True,
        description="While smart-turn waits on a turn it judged unfinished, start the LLM on "
        "the words so far and hold its answer; release it if the turn ends with the same words, "
        "drop it if the caller goes on. An LLM request per such pause; turn decisions unchanged.",
    )
    text_turn_check: bool = Field(
        default=True,
        description="Check smart-turn's end of turn against the caller's words (English): a "
        "small language model (the packaged SmolLM2, in-process) holds a turn whose words end "
        "mid-sentence ('a table for') and ends one whose words end a sentence without waiting "
        "out smart_turn_stop_secs. Needs the local extra; smart-turn decides alone without it.",
    )
    user_turn_stop_timeout: float = Field(
        default=5.0,
        gt=0.0,
        le=60.0,
        description="End a user turn after this long even if no end of turn was detected.",
    )
    barge_in: Literal["always", "min_words", "never"] = Field(
        default="always",
        description="When the caller may interrupt the bot: always (as soon as they speak), "
        "min_words (once they said barge_in_min_words words), never.",
    )
    barge_in_min_words: int = Field(
        default=3, ge=1, le=20, description="Words needed to interrupt with barge_in=min_words."
    )
    barge_in_pause: bool = Field(
        default=True,
        description="On a phone or WebRTC call, stop sending the bot's audio the moment the "
        "caller may be talking over it (two Silero windows that sound like a voice), then let "
        "the VAD decide: a turn start interrupts the bot as before; otherwise it goes on from "
        "where it stopped once the caller is quiet. Only with barge_in=always and no wake "
        "phrases.",
    )
    output_volume: float = Field(
        default=1.0,
        gt=0.0,
        le=4.0,
        description="Multiplier on the bot's audio, applied by the output transport.",
    )
    output_sample_rate: Literal[16000, 24000, 48000] = Field(
        default=24000,
        description="The pipeline's output rate for WebRTC and Daily (Twilio is always 8 kHz). "
        "The input stays 16 kHz: Whisper, Silero and smart-turn all read 16 kHz.",
    )
    noise_filter: Literal["none", "rnnoise"] = Field(
        default="none",
        description="Input noise suppression: rnnoise (Pipecat's RNNoiseFilter) or none.",
    )
    wake_phrases: list[str] = Field(
        default_factory=list,
        description="When set, the bot answers only after one of these phrases (JSON list).",
    )
    wake_timeout_secs: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        description="After a wake phrase, listen this long without activity, then wait for "
        "the phrase again.",
    )
    vocabulary: list[str] = Field(
        default_factory=list,
        description="Names, places and product terms the speech recognizer should expect "
        "(JSON list); Deepgram keyterms or Whisper hotwords.",
    )

    @field_validator("wake_phrases")
    @classmethod
    def _check_wake_phrases(cls, phrases: list[str]) -> list[str]:
        return _check_phrases(phrases, "wake phrase")

    @field_validator("vocabulary")
    @classmethod
    def _check_vocabulary(cls, terms: list[str]) -> list[str]:
        terms = _check_phrases(terms, "vocabulary term")
        if len(terms) > MAX_DEPLOYMENT_TERMS:
            raise ValueError(
                f"{len(terms)} terms; at most {MAX_DEPLOYMENT_TERMS} (Deepgram's keyterm limit)"
            )
        return terms

    @model_validator(mode="after")
    def _stop_before_timeout(self) -> AudioSettings:
        if self.vad_stop_secs >= self.user_turn_stop_timeout:
            raise ValueError(
                f"audio.vad_stop_secs ({self.vad_stop_secs}) must be less than "
                f"audio.user_turn_stop_timeout ({self.user_turn_stop_timeout})"
            )
        return self


def clean_phrase(text: object) -> str | None:
    """A wake phrase or vocabulary term, tidied, or ``None`` when it cannot be one.

    Unicode is NFKC-normalized, control characters (NUL, bidi marks...) are dropped and
    whitespace is collapsed. A phrase with no letter or digit, longer than ``MAX_PHRASE_CHARS``
    or with more than ``MAX_PHRASE_WORDS`` words is refused.

    Args:
        text: The candidate (anything; only a ``str`` can be a phrase).
    """
    if not isinstance(text, str):
        return None
    text = unicodedata.normalize("NFKC", text[: MAX_PHRASE_CHARS * 4])
    text = "".join(c for c in text if unicodedata.category(c) not in _CONTROL or c.isspace())
    text = " ".join(text.split())
    if not text or len(text) > MAX_PHRASE_CHARS or len(text.split()) > MAX_PHRASE_WORDS:
        return None
    if not any(c.isalnum() for c in text):
        return None
    return text


def clean_phrases(phrases: Iterable[object]) -> list[str]:
    """The usable phrases of ``phrases``, tidied, in order, without case-insensitive repeats.

    Unusable entries are dropped silently: this is for lists that come from callers' data,
    where a bad entry must not stop the session.
    """
    seen: set[str] = set()
    kept = []
    for phrase in phrases:
        cleaned = clean_phrase(phrase)
        if cleaned is not None and cleaned.casefold() not in seen:
            seen.add(cleaned.casefold())
            kept.append(cleaned)
    return kept


def matchable_wake_phrases(phrases: Iterable[object]) -> list[str]:
    """Wake phrases as Pipecat's ``WakePhraseUserTurnStartStrategy`` should be given them.

    The strategy strips punctuation from the transcript but not from its phrases, and joins
    a phrase's words with optional whitespace: so punctuation is removed here, and camel-case
    names are split ("Hey MindBot" becomes "Hey Mind Bot"), which then matches both "hey
    mindbot" and "hey mind bot", as Whisper may write it.

    Args:
        phrases: Wake phrases (invalid ones are dropped).
    """
    # "hey mind bot" matches all that "hey mindbot" does: keep the phrase with most words.
    by_letters: dict[str, list[str]] = {}
    for phrase in clean_phrases(phrases):
        words = _CAMEL.sub(" ", _PUNCTUATION.sub(" ", phrase)).split()
        key = "".join(words).casefold()
        if words and len(words) > len(by_letters.get(key, ())):
            by_letters[key] = words
    return [" ".join(words) for words in by_letters.values()]


def _check_phrases(phrases: list[str], what: str) -> list[str]:
    for phrase in phrases:
        if clean_phrase(phrase) is None:
            raise ValueError(
                f"{what} {phrase[:80]!r} is not usable: it needs a letter or digit, at most "
                f"{MAX_PHRASE_WORDS} words and {MAX_PHRASE_CHARS} characters"
            )
    return clean_phrases(phrases)
