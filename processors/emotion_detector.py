"""Emotion detection: the caller's emotion per turn, from their words and their voice.

Two processors, each usable alone::

    Pipeline([transport.input(), stt, EmotionDetector(analyzer=EmotionAnalyzer()), user,
              EmotionHint(tracker=EmotionTracker(), hint_for=hint_for, style_for=bot_style),
              llm, voice_style, tts, transport.output(), assistant])

- The **detector** (after the STT, before the user aggregator) keeps the audio of the caller's
  turn, measures its prosody in a thread as soon as the VAD says the caller stopped, and, just
  before the turn's final transcription, pushes an ``EmotionFrame`` from the audio and the words.
  The user aggregator broadcasts ``VADUserStarted/StoppedSpeakingFrame`` and
  ``UserStarted/StoppedSpeakingFrame`` upstream, so the detector sees them where it sits.
- The **hint** (after the user aggregator, before the LLM) settles the emotion over turns and
  keeps one developer message named ``emotion`` in the context, replaced each turn and removed
  when the caller sounds neutral; when the settled emotion changes it asks the voice style
  controller for the bot's matching style (``VoiceStyleFrame(source="emotion")``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    LLMContextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.frames import EmotionFrame, VoiceStyleFrame

MESSAGE_NAME = "emotion"
"""The ``name`` of the developer message that holds the hint (one per context)."""


class Analyzer(Protocol):
    """What the detector needs (e.g. MindBot's ``EmotionAnalyzer``)."""

    def measure(self, pcm: bytes, sample_rate: int) -> Any:
        """Read a turn's audio (called in a thread)."""
        ...

    def estimate(self, prosody: Any, text: str) -> Any:
        """An estimate with ``label, valence, arousal, confidence, cues``."""
        ...


class EmotionDetector(FrameProcessor):
    """Estimates the caller's emotion once per turn.

    Consumes: nothing (reads ``InputAudioRawFrame``, the VAD and user-turn frames and
    ``TranscriptionFrame``). Emits: ``EmotionFrame``, downstream, just before the turn's final
    ``TranscriptionFrame`` (``finalized``, or any after the caller stopped when the STT never
    finalizes); a turn whose words arrive in several pieces after silences gets one per piece,
    each covering the whole turn so far: the last one stands. Passes on: every frame, in order.

    Args:
        analyzer: Measures audio and estimates (one per caller: it learns their baseline).
        on_emotion: Told each ``EmotionFrame`` as it is emitted (e.g. to store with the turn).
        wait_secs: The longest the final transcription waits for the audio measurement;
            past it, the estimate uses the words alone.
        max_turn_secs: Audio kept per turn (the start of a longer turn is kept).
    """

    def __init__(
        self,
        *,
        analyzer: Analyzer,
        on_emotion: Callable[[EmotionFrame], None] | None = None,
        wait_secs: float = 0.3,
        max_turn_secs: float = 30.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._analyzer = analyzer
        self._on_emotion = on_emotion
        self._wait_secs = wait_secs
        self._max_secs = max_turn_secs
        self._preroll = bytearray()  # the latest half second, for the start of the next turn
        self._audio = bytearray()
        self._rate = 0
        self._texts: list[str] = []
        self._vad_seen = self._speaking = self._in_turn = self._finalizes = False
        self._unsaid = False  # words heard this turn that no EmotionFrame covers yet
        self._turn_frames = False  # whether the user aggregator sends UserStarted/Stopped
        self._paused = False  # the VAD stopped within the current turn
        self._measuring: asyncio.Task | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Collect the turn's audio and words; emit the estimate before the final words."""
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._hear(frame)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._start_turn(vad=True)
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._turn_frames = True
            self._start_turn(vad=False)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking, self._paused = False, True
            self._measuring = self._measure_in_thread()
            if self._unsaid and self._texts:
                # Words came while the caller still spoke and no final follows them (the
                # finalize answer was empty): estimate now, before the turn can end.
                await self._emit()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._in_turn = False
        elif isinstance(frame, TranscriptionFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._heard_words(frame)
        elif isinstance(frame, (EndFrame, CancelFrame)):
            self._cancel()
        await self.push_frame(frame, direction)

    def _hear(self, frame: InputAudioRawFrame) -> None:
        audio = _mono(frame)
        if not audio or frame.sample_rate <= 0:
            return
        if frame.sample_rate != self._rate:
            self._rate, self._audio, self._preroll = frame.sample_rate, bytearray(), bytearray()
        self._preroll += audio
        del self._preroll[: max(0, len(self._preroll) - self._rate)]  # half a second
        if self._vad_seen and not self._speaking:
            return
        limit = int(self._max_secs * self._rate) * 2
        if len(self._audio) < limit:
            self._audio += audio[: limit - len(self._audio)]
        elif not self._vad_seen:  # no VAD: keep the latest seconds instead
            self._audio = self._audio[len(audio) :] + audio

    def _start_turn(self, *, vad: bool) -> None:
        if not self._in_turn:
            self._in_turn = True
            self._texts = []
            self._unsaid = False
            self._audio = bytearray(self._preroll)
            self._cancel()
        elif vad and self._paused:  # the caller goes on after a pause in the same turn
            self._audio += self._preroll
        self._paused = False
        if vad:
            self._vad_seen = self._speaking = True

    async def _heard_words(self, frame: TranscriptionFrame) -> None:
        self._finalizes |= frame.finalized
        text = frame.text if isinstance(frame.text, str) else ""
        if text.strip():
            self._texts.append(text)
            self._unsaid = True
        # An STT that finalizes (Deepgram) may still send a final transcript of its own, by
        # endpointing, before the VAD stops; after the stop, that one is the turn's last.
        final = frame.finalized or not self._finalizes or not self._speaking
        if final and self._texts:
            await self._emit()

    async def _emit(self) -> None:
        """Estimate the turn so far and push the ``EmotionFrame`` downstream."""
        self._unsaid = False
        words = " ".join(self._texts)
        prosody = await self._prosody()
        try:
            estimate = self._analyzer.estimate(prosody, words)
            emotion = EmotionFrame(
                label=estimate.label,
                valence=estimate.valence,
                arousal=estimate.arousal,
                confidence=estimate.confidence,
                cues=dict(estimate.cues),
            )
        except Exception as e:
            logger.warning(f"{self}: emotion estimate failed ({type(e).__name__})")
            return
        logger.debug(f"{self}: {emotion} {emotion.cues}")
        await self.push_frame(emotion)
        if self._on_emotion is not None:
            try:
                self._on_emotion(emotion)
            except Exception:
                logger.exception(f"{self}: the emotion listener failed")
        if not self._turn_frames:
            self._in_turn = False
        if not self._vad_seen:
            self._audio = bytearray()
            self._texts = []

    async def _prosody(self) -> Any:
        task = self._measuring or self._measure_in_thread()
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._wait_secs)
        except asyncio.CancelledError:
            # A new turn cancelled the measurement; only our own cancellation goes on.
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                raise
        except TimeoutError:
            logger.warning(f"{self}: the audio measurement was late; using the words alone")
        except Exception as e:
            logger.warning(f"{self}: the audio measurement failed ({type(e).__name__})")
        return None

    def _measure_in_thread(self) -> asyncio.Task:
        self._cancel()
        audio, rate = bytes(self._audio), self._rate
        measuring = asyncio.to_thread(self._analyzer.measure, audio, rate)
        task = asyncio.get_running_loop().create_task(measuring)
        task.add_done_callback(_quiet)
        self._measuring = task
        return task

    def _cancel(self) -> None:
        if self._measuring is not None and not self._measuring.done():
            self._measuring.cancel()
        self._measuring = None


def _quiet(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug(f"emotion: a measurement failed ({type(task.exception()).__name__})")


def _mono(frame: InputAudioRawFrame) -> bytes:
    """The first channel of 16-bit PCM (an odd trailing byte dropped)."""
    audio = frame.audio or b""
    channels = frame.num_channels if frame.num_channels and frame.num_channels > 0 else 1
    audio = audio[: len(audio) - len(audio) % (2 * channels)]
    if channels == 1:
        return bytes(audio)
    view = memoryview(audio).cast("h")
    return view[::channels].tobytes()


class Tracker(Protocol):
    """What the hint needs (e.g. MindBot's ``EmotionTracker``)."""

    label: str

    def update(self, label: str, confidence: float) -> str:
        """Add a turn's estimate; returns the settled label."""
        ...


class EmotionHint(FrameProcessor):
    """Tells the LLM, hedged, how the caller seems to feel, once it has settled.

    Consumes: nothing (reads ``EmotionFrame``). Emits: ``VoiceStyleFrame(source="emotion")``
    downstream before the ``LLMContextFrame`` when the settled emotion changes the bot's style.
    Passes on: every frame in order; an ``LLMContextFrame`` after its context's ``emotion``
    developer message is replaced (or removed when the caller is neutral).

    Args:
        tracker: Settles the per-turn estimates (hysteresis).
        hint_for: The note for a settled label (``None``: no note).
        style_for: The bot's style for a settled label (an object with ``emotion``, ``speed``
            and ``volume``), or ``None`` to leave the voice alone.
    """

    def __init__(
        self,
        *,
        tracker: Tracker,
        hint_for: Callable[[str], str | None],
        style_for: Callable[[str], Any] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._tracker = tracker
        self._hint_for = hint_for
        self._style_for = style_for
        self._latest: EmotionFrame | None = None
        self._styled = "neutral"

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Note each turn's emotion; set the hint when the turn reaches the LLM."""
        await super().process_frame(frame, direction)
        if isinstance(frame, EmotionFrame):
            self._latest = frame
        elif isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._settle_and_hint(frame)
        await self.push_frame(frame, direction)

    async def _settle_and_hint(self, frame: LLMContextFrame) -> None:
        if self._latest is not None:  # one update per turn, from its last estimate
            self._tracker.update(self._latest.label, self._latest.confidence)
            self._latest = None
        label = self._tracker.label
        if self._style_for is not None and label != self._styled:
            self._styled = label
            style = self._style_for(label)
            await self.push_frame(
                VoiceStyleFrame(
                    source="emotion",
                    emotion=style.emotion or "neutral",
                    speed=style.speed,
                    volume=style.volume,
                )
            )
        messages = [m for m in frame.context.get_messages() if not _is_ours(m)]
        hint = self._hint_for(label)
        if hint:
            last = next(
                (i for i in range(len(messages) - 1, -1, -1) if _role(messages[i]) == "user"),
                len(messages),
            )
            messages.insert(last, {"role": "developer", "name": MESSAGE_NAME, "content": hint})
        frame.context.set_messages(messages)


def _is_ours(message: Any) -> bool:
    return isinstance(message, dict) and message.get("name") == MESSAGE_NAME


def _role(message: Any) -> str | None:
    return message.get("role") if isinstance(message, dict) else None
