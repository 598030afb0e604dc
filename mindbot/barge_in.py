"""The barge-in pause: the bot falls silent the moment the caller may be talking over it.

Pipecat interrupts the bot when its VAD declares the caller's speech: ``audio.vad_start_secs``
(0.2 s) of Silero windows above ``audio.vad_confidence`` and above a volume gate on a smoothed
loudness that takes a while to climb, so the bot goes on talking for about 0.4 s of the
caller's first words (``mindbot bench bargein``). A faster VAD interrupts sooner, and also for
a throat clear, which then cuts the bot's answer off for good (``mindbot bench
falsebargein``).

The pause separates hearing from deciding. On the first ``ONSET_WINDOWS`` Silero windows that
sound like a voice (``SpeechOnset``: the VAD's own confidence on each window, and the window's
level), the output transport stops sending the bot's audio and holds the chunk it had in hand
(``BargeInPause.admit``). Then, unchanged:

- Pipecat's turn start interrupts the bot: the held chunk is dropped with the rest of its
  queued audio (``BargeInPause.interrupted``), and the caller stopped hearing the bot when it
  paused, about a tenth of a second after their first word;
- or no turn starts (a throat clear, a cough with a voiced burst): once the caller has been
  quiet ``RESUME_QUIET_SECS``, the bot goes on from where it stopped. What a false alarm costs
  is a gap in the bot's speech, not its answer.

Turn decisions stay Pipecat's, so false barge-ins are as before. A pause lasts at most
``MAX_PAUSE_SECS``: a voice the VAD never takes for the caller's (a television, a quiet
talker under the volume gate) lets the bot go on, and then pauses it no more until the bot's
audio stops (the end of its answer).

The Silero analyzer feeds ``BargeInPause.heard`` once per input frame; the transport calls
``admit`` before writing each chunk and ``interrupted`` after handling an
``InterruptionFrame``. MindBot wires them for phone (Twilio) and WebRTC calls when
``audio.barge_in_pause`` is on and ``audio.barge_in`` is ``always``, with no wake phrase
(``mindbot.transports`` and ``MindBot.context_aggregators``). Daily's transport has no pause.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
from loguru import logger
from pipecat.frames.frames import OutputAudioRawFrame

ONSET_CONFIDENCE = 0.5
"""Silero's confidence that a window is speech, at least (Pipecat's turn start needs 0.7)."""

ONSET_WINDOWS = 2
"""Consecutive voice-like windows (32 ms each at 16 kHz) that pause the bot."""

ONSET_MIN_DBFS = -35.0
"""The quietest window (RMS, dB below full scale) that counts: the caller's words through a
phone line reach -15 to -25 dBFS, a television 20 dB below them stays under -30."""

RESUME_QUIET_SECS = 0.3
"""Quiet after the last voice-like window that resumes a paused bot no turn started for."""

MAX_PAUSE_SECS = 1.0
"""The longest pause: by then Pipecat's VAD would have declared any speech it will."""

SPEAKING_SECS = 0.2
"""The bot counts as speaking while its last chunk was written this recently."""


class SpeechOnset:
    """Whether the last ``windows`` VAD windows sounded like a voice.

    Fed each window's Silero confidence and audio, on the analyzer's own thread.

    Args:
        confidence: The least confidence that counts (``ONSET_CONFIDENCE``).
        windows: Consecutive voice-like windows needed (``ONSET_WINDOWS``).
        min_dbfs: The quietest window that counts (``ONSET_MIN_DBFS``).
    """

    def __init__(
        self,
        *,
        confidence: float = ONSET_CONFIDENCE,
        windows: int = ONSET_WINDOWS,
        min_dbfs: float = ONSET_MIN_DBFS,
    ):
        self._confidence = confidence
        self._windows = windows
        self._min_rms = 32768 * 10 ** (min_dbfs / 20)
        self._run = 0

    @property
    def voice(self) -> bool:
        """Whether the last ``windows`` windows all sounded like a voice."""
        return self._run >= self._windows

    def update(self, confidence: float, audio: bytes) -> None:
        """Take one window: its Silero confidence and its 16-bit PCM."""
        samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32)
        rms = float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0
        if confidence >= self._confidence and rms >= self._min_rms:
            self._run += 1
        else:
            self._run = 0


class BargeInPause:
    """Holds the bot's audio while the caller may be talking over it (module docstring).

    One per session, shared by its VAD analyzer (``heard``) and its output transport
    (``admit``, ``interrupted``), all on the session's event loop.

    Args:
        resume_quiet_secs: Quiet that resumes the bot (``RESUME_QUIET_SECS``).
        max_pause_secs: The longest pause (``MAX_PAUSE_SECS``).
        clock: Monotonic seconds (the tests' own clock).
    """

    def __init__(
        self,
        *,
        resume_quiet_secs: float = RESUME_QUIET_SECS,
        max_pause_secs: float = MAX_PAUSE_SECS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._resume_quiet_secs = resume_quiet_secs
        self._max_pause_secs = max_pause_secs
        self._clock = clock
        self._open = asyncio.Event()
        self._open.set()
        self._paused_at: float | None = None
        self._last_write = -math.inf
        self._last_voice = -math.inf
        self._held_off = False
        self._waiting = False
        self._dropped = False
        self.outcomes: Counter[str] = Counter()
        """How each pause ended: ``interrupted`` (a turn started), ``resumed`` (the caller
        was quiet again) or ``expired`` (``max_pause_secs``)."""
        self.on_outcome: Callable[[str], None] | None = None
        """Called with each pause's outcome (MindBot reports it to its listeners)."""

    @property
    def paused(self) -> bool:
        """Whether the bot's audio is held now."""
        return self._paused_at is not None

    def heard(self, voice: bool) -> None:
        """Take what the VAD heard in one input frame: a voice or not (``SpeechOnset``)."""
        now = self._clock()
        if voice:
            self._last_voice = now
        if self._paused_at is None:
            speaking = now - self._last_write <= SPEAKING_SECS
            if voice and speaking and not self._held_off:
                self._paused_at = now
                self._open.clear()
                logger.debug("Barge-in pause: the caller may be talking over the bot")
        elif now - self._last_voice >= self._resume_quiet_secs:
            self._end("resumed")
        elif now - self._paused_at >= self._max_pause_secs:
            self._end("expired")

    async def admit(self, frame: OutputAudioRawFrame) -> bool:
        """Wait, before writing a chunk of the bot's audio, while the bot is paused.

        Audio that cannot be interrupted is never held.

        Returns:
            Whether to write it: ``False`` for the held chunk of an interrupted bot.
        """
        if self._paused_at is not None and frame.interruptible:
            remaining = self._paused_at + self._max_pause_secs - self._clock()
            self._waiting = True
            try:
                await asyncio.wait_for(self._open.wait(), max(0.0, remaining))
            except TimeoutError:
                # The caller's audio stopped arriving, so ``heard`` could not end it.
                self._end("expired")
            finally:
                self._waiting = False
            if self._dropped:
                self._dropped = False
                return False
        now = self._clock()
        if now - self._last_write > SPEAKING_SECS:
            self._held_off = False  # the bot starts speaking again after a silence
        self._last_write = now
        return True

    def interrupted(self) -> None:
        """The transport handled an interruption: drop the chunk held, if any."""
        if self._paused_at is None:
            return
        self._dropped = self._waiting
        self._end("interrupted")

    def _end(self, outcome: str) -> None:
        self._paused_at = None
        if outcome == "expired":
            self._held_off = True
            # The pause is not a gap in the bot's speech, which would lift the hold-off
            # (``admit``) as soon as the bot goes on.
            self._last_write = self._clock()
        self._open.set()
        self.outcomes[outcome] += 1
        logger.debug(f"Barge-in pause ended: {outcome}")
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception:
                logger.exception("Barge-in pause: reporting an outcome failed")
