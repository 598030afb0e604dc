"""Leading-silence trimming: the bot's first word reaches the caller without the quiet the TTS
puts before it.

TTS engines start an utterance with tens of milliseconds of near silence (Piper's voice: 3 to
90 ms, depending on the sentence); Pipecat measures it as the ``leading_silence`` of its TTFA
metric but plays it. Played before the bot's first word, it is pure latency: the caller hears
nothing either way. ``LeadingSilenceTrimmer`` sits after the TTS and drops it, keeping a short
pre-roll so the first sound's attack is not clipped::

    Pipeline([..., llm, tts, LeadingSilenceTrimmer(), transport.output(), assistant])

Only the silence before the bot starts speaking is trimmed (after it stopped, or was
interrupted); pauses between its sentences are its rhythm and are left alone. While it looks
for the first sound it holds the frames that follow the audio, so their order is kept; it
gives up after ``max_trim_secs`` of audio without a clear onset and plays everything as it was.
"""

from __future__ import annotations

from pipecat.audio.utils import detect_speech_onset
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    SystemFrame,
    TTSAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class LeadingSilenceTrimmer(FrameProcessor):
    """Drops the TTS's silence before the bot's first sound of each turn.

    Args:
        preroll_secs: Audio kept before the detected onset (the attack of the first sound).
        max_trim_secs: Most audio held while looking for the onset; past it, nothing is
            trimmed.
        threshold_db: Energy below which audio counts as silence (Pipecat's TTFA gate).
        **kwargs: Passed to ``FrameProcessor``.
    """

    def __init__(
        self,
        *,
        preroll_secs: float = 0.01,
        max_trim_secs: float = 0.5,
        threshold_db: float = -40.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._preroll_secs = preroll_secs
        self._max_trim_secs = max_trim_secs
        self._threshold_db = threshold_db
        self._armed = True  # the bot is silent: its next audio starts a turn
        self._held: list[Frame] = []
        self._audio = b""
        self.trimmed_secs = 0.0
        """Silence dropped so far (for tests and benchmarks)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            self._held.clear()  # the transport would drop this audio anyway
            self._audio = b""
            self._armed = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._armed = True
        if direction == FrameDirection.UPSTREAM or isinstance(frame, SystemFrame):
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, EndFrame):
            await self._release()
        elif self._held or (self._armed and isinstance(frame, TTSAudioRawFrame)):
            self._held.append(frame)
            if isinstance(frame, TTSAudioRawFrame):
                await self._look_for_onset(frame)
            return
        await self.push_frame(frame, direction)

    async def _look_for_onset(self, frame: TTSAudioRawFrame) -> None:
        self._audio += frame.audio
        rate, channels = frame.sample_rate, frame.num_channels
        onset = detect_speech_onset(self._audio, rate, channels, threshold_db=self._threshold_db)
        held_secs = len(self._audio) / (2 * channels * rate)
        if onset is None and held_secs < self._max_trim_secs:
            return
        if onset is not None:
            start = max(0, onset - round(self._preroll_secs * rate))
            self._trim(start * 2 * channels)
        await self._release()

    def _trim(self, drop: int) -> None:
        """Drop the first ``drop`` bytes of the held audio, frame by frame."""
        kept: list[Frame] = []
        for frame in self._held:
            if drop > 0 and isinstance(frame, TTSAudioRawFrame):
                cut = min(drop, len(frame.audio))
                drop -= cut
                self.trimmed_secs += cut / (2 * frame.num_channels * frame.sample_rate)
                if cut == len(frame.audio):
                    continue
                frame.audio = frame.audio[cut:]
                frame.num_frames = len(frame.audio) // (2 * frame.num_channels)
            kept.append(frame)
        self._held = kept

    async def _release(self) -> None:
        held, self._held = self._held, []
        self._audio = b""
        self._armed = False
        for frame in held:
            await self.push_frame(frame, FrameDirection.DOWNSTREAM)
