"""Language switching: the bot follows a caller who changes language mid-call.

One ``LanguageSwitcher`` gives two processors that work together::

    switcher = LanguageSwitcher(language="en", voice=voice_id, voice_for=pick_voice,
                                names={"en": "English", "es": "Spanish"})
    Pipeline([transport.input(), stt, switcher.listener(), user, switcher.injector(), llm,
              voice_style, tts, transport.output(), assistant])

- The **listener** (after the STT, before the user aggregator) reads each final transcript's
  ``language``. Deepgram fills it with ``language=multi``: ``TranscriptionFrame.language`` is
  ``Language(alternatives[0].languages[0])``, the language with the most words in the
  utterance. When the caller has clearly changed language, it emits
  ``VoiceStyleFrame(source="language", language=code, voice=...)`` downstream, which the voice
  style controller in front of the TTS applies at the next utterance.
- The **injector** (after the user aggregator, before the LLM) keeps one developer message
  named ``language`` in the context, asking the LLM to reply in the caller's language; it
  replaces the previous one each turn (the injection pattern of PIPECAT_NOTES.md).

A change needs evidence, so a stray word does not flip the call: ``min_words`` words in the new
language, in one final transcript or in consecutive ones (any transcript in the current
language resets the count), each with at least ``min_confidence`` where the STT reports one.
With an English-only STT (offline Whisper) transcripts carry English or no language, and
nothing happens.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Mapping
from typing import Any

from loguru import logger
from pipecat.frames.frames import Frame, LLMContextFrame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.frames import VoiceStyleFrame

MESSAGE_NAME = "language"
"""The ``name`` of the developer message that holds the reply-language instruction."""

INSTRUCTION = (
    "The caller is now speaking {name}. Reply only in {name}, in natural spoken {name}, until "
    "the caller changes language again."
)

_CODE = re.compile(r"[a-z]{2,3}")
# Scripts written without spaces between words: about two characters make a word.
_UNSPACED = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR")


class LanguageSwitcher:
    """Language state shared by a listener and an injector (see the module docstring).

    Args:
        language: The language the session starts in (ISO 639-1).
        voice: The session's starting voice id, restored when the caller comes back to
            ``language``; ``None``: whatever ``voice_for`` picks.
        voice_for: The TTS voice id for a language, or ``None`` to keep the current voice
            with the new language setting (e.g. ``catalog.for_language`` for the provider).
        names: Language names by code, for the LLM instruction (``{"es": "Spanish"}``).
        languages: The languages it may switch to; ``None``: any.
        min_words: Words in the new language needed to switch.
        min_confidence: Transcripts the STT is less sure of are not counted.
        on_switch: Told ``(old, new)`` after each switch (e.g. to record it).
    """

    def __init__(
        self,
        *,
        language: str = "en",
        voice: str | None = None,
        voice_for: Callable[[str], str | None] | None = None,
        names: Mapping[str, str] | None = None,
        languages: Collection[str] | None = None,
        min_words: int = 3,
        min_confidence: float = 0.6,
        on_switch: Callable[[str, str], None] | None = None,
    ):
        start = language_code(language)
        if start is None:
            raise ValueError(f"not a language code: {language!r}")
        if min_words < 1:
            raise ValueError("min_words must be at least 1")
        self._language = start
        self._voices: dict[str, str] = {start: voice} if voice else {}
        self._voice_for = voice_for
        self._names = dict(names or {})
        self._allowed = {c for c in map(language_code, languages)} if languages else None
        self._min_words = min_words
        self._min_confidence = min_confidence
        self._on_switch = on_switch
        self._pending: tuple[str, int] | None = None
        self._switched = False

    @property
    def language(self) -> str:
        """The language the caller speaks now (ISO 639-1)."""
        return self._language

    def listener(self) -> FrameProcessor:
        """The processor to place after the STT, before the user aggregator."""
        return _Listener(self)

    def injector(self) -> FrameProcessor:
        """The processor to place after the user aggregator, before the LLM."""
        return _Injector(self)

    def heard(
        self, language: Any, text: str, *, words: int | None = None, confidence: float | None = None
    ) -> str | None:
        """Take one final transcript into account.

        Args:
            language: The transcript's language as the STT reports it (``None``: unknown).
            text: The transcript.
            words: How many of its words are in ``language`` (default: all of them).
            confidence: The STT's confidence in the transcript, if it reports one.

        Returns:
            The new language code when the caller has switched to it, else ``None``.
        """
        code = language_code(language)
        if code is None:
            return None
        if code == self._language:
            self._pending = None
            return None
        if self._allowed is not None and code not in self._allowed:
            logger.debug(f"language: ignoring {code!r}, which this session cannot speak")
            return None
        if confidence is not None and confidence < self._min_confidence:
            return None
        count = word_count(text) if words is None else max(0, words)
        pending_code, pending = self._pending or (code, 0)
        pending = pending + count if pending_code == code else count
        if pending < self._min_words:
            self._pending = (code, pending)
            return None
        old, self._language, self._pending, self._switched = self._language, code, None, True
        if self._on_switch is not None:
            try:
                self._on_switch(old, code)
            except Exception:
                logger.exception("language: the on_switch listener failed")
        return code

    def voice(self, language: str) -> str | None:
        """The voice to speak ``language`` with (remembered, else ``voice_for``'s pick)."""
        if language not in self._voices and self._voice_for is not None:
            try:
                if picked := self._voice_for(language):
                    self._voices[language] = picked
            except Exception:
                logger.exception(f"language: no voice for {language!r}")
        return self._voices.get(language)

    def chose(self, voice: str) -> None:
        """Remember a voice chosen for the current language (e.g. by a voice command)."""
        self._voices[self._language] = voice

    def instruction(self) -> str | None:
        """The reply-language instruction for the LLM, once the caller has switched."""
        if not self._switched:
            return None
        return INSTRUCTION.format(name=self._names.get(self._language, self._language))


class _Listener(FrameProcessor):
    """Watches final transcripts for a change of language.

    Consumes: nothing.
    Emits: ``VoiceStyleFrame(source="language", language=..., voice=...)``, downstream, just
    before the transcription that completed a switch.
    Passes on: every frame, unchanged and in order. A ``VoiceStyleFrame`` with a voice from
    upstream (a voice command) is remembered as the current language's voice.
    """

    def __init__(self, switcher: LanguageSwitcher):
        super().__init__()
        self._switcher = switcher

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and direction == FrameDirection.DOWNSTREAM:
            language, words, confidence = _evidence(frame)
            text = frame.text if isinstance(frame.text, str) else ""
            switched = self._switcher.heard(language, text, words=words, confidence=confidence)
            if switched is not None:
                logger.info(f"{self}: the caller switched language; replies now in {switched!r}")
                voice = self._switcher.voice(switched)
                style = VoiceStyleFrame(source="language", language=switched, voice=voice)
                await self.push_frame(style, direction)
        elif isinstance(frame, VoiceStyleFrame) and frame.voice and frame.source != "language":
            self._switcher.chose(frame.voice)
        await self.push_frame(frame, direction)


class _Injector(FrameProcessor):
    """Keeps the reply-language instruction in the context.

    Consumes: nothing. Emits: nothing.
    Passes on: every frame in order; an ``LLMContextFrame`` after its context's ``language``
    developer message is replaced (or removed, before any switch).
    """

    def __init__(self, switcher: LanguageSwitcher):
        super().__init__()
        self._switcher = switcher

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            self._inject(frame)
        await self.push_frame(frame, direction)

    def _inject(self, frame: LLMContextFrame) -> None:
        context = frame.context
        before = context.get_messages()
        messages = [m for m in before if not _is_ours(m)]
        instruction = self._switcher.instruction()
        if instruction is None and len(messages) == len(before):
            return
        if instruction is not None:
            roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
            last = max((i for i, role in enumerate(roles) if role == "user"), default=None)
            message = {"role": "developer", "name": MESSAGE_NAME, "content": instruction}
            messages.insert(len(messages) if last is None else last, message)
        context.set_messages(messages)


def language_code(value: Any) -> str | None:
    """The lowercase ISO 639 code of a language tag (``es-MX``, ``Language.ES``), or ``None``."""
    if value is None:
        return None
    base = str(value).strip().lower().replace("_", "-").split("-", 1)[0]
    return base if _CODE.fullmatch(base) else None


def word_count(text: str) -> int:
    """About how many words ``text`` has, counting two characters a word where words are not
    separated by spaces (Chinese, Japanese, Thai)."""
    if not isinstance(text, str):
        return 0
    unspaced = 0
    spaced: list[str] = []
    for char in text[:10_000]:
        if char.isalpha() and unicodedata.name(char, "").startswith(_UNSPACED):
            unspaced += 1
            spaced.append(" ")
        else:
            spaced.append(char)
    words = [w for w in "".join(spaced).split() if any(c.isalnum() for c in w)]
    return len(words) + (unspaced + 1) // 2


def _evidence(frame: TranscriptionFrame) -> tuple[Any, int | None, float | None]:
    """The frame's language, the words in it and the STT's confidence, from the raw result.

    Deepgram's result (``frame.result``) tags each word with its language under
    ``language=multi``; other STTs leave ``words`` and ``confidence`` unknown.
    """
    try:
        alternative = frame.result.channel.alternatives[0]
    except (AttributeError, IndexError, TypeError):
        return frame.language, None, None
    confidence = getattr(alternative, "confidence", None)
    confidence = float(confidence) if isinstance(confidence, int | float) else None
    code = language_code(frame.language)
    tagged = [getattr(w, "language", None) for w in getattr(alternative, "words", None) or []]
    if code is None or not any(tagged):
        return frame.language, None, confidence
    return frame.language, sum(1 for t in tagged if language_code(t) == code), confidence


def _is_ours(message: Any) -> bool:
    return isinstance(message, dict) and message.get("name") == MESSAGE_NAME
