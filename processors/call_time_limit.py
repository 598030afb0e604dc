"""Ends a call politely once it has lasted too long."""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    EndWorkerFrame,
    Frame,
    StartFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class CallTimeLimitProcessor(FrameProcessor):
    """Says goodbye and ends the call when it reaches ``max_secs``.

    The limit is checked by a timer started with the pipeline. When it fires, the processor
    speaks ``goodbye`` (not interruptible) and asks the worker to end the session once the
    goodbye has been played; on Twilio that hangs up the call. Place it before the TTS.

    Consumes: nothing.
    Emits: ``TTSSpeakFrame(goodbye)`` then ``EndWorkerFrame``, downstream.
    Passes on: every frame, unchanged and in order.

    Args:
        max_secs: How long a call may last.
        goodbye: What the bot says before hanging up.
    """

    def __init__(
        self, *, max_secs: float, goodbye: str = "We've reached our time limit. Goodbye!", **kwargs
    ):
        super().__init__(**kwargs)
        if max_secs <= 0:
            raise ValueError("max_secs must be positive")
        self._max_secs = max_secs
        self._goodbye = goodbye
        self._timer: asyncio.Task | None = None
        self._saying_goodbye = False

    @property
    def expired(self) -> bool:
        """Whether the limit was reached."""
        return self._saying_goodbye

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Start the timer with the pipeline and end the session after the goodbye."""
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._timer = self.create_task(self._expire())
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop_timer()
        await self.push_frame(frame, direction)

    async def _expire(self):
        await asyncio.sleep(self._max_secs)
        self._saying_goodbye = True
        goodbye = TTSSpeakFrame(self._goodbye)
        goodbye.interruptible = False
        await self.push_frame(goodbye)
        # Downstream, behind the goodbye: the worker ends once it has been played.
        await self.push_frame(EndWorkerFrame(reason="call time limit"))

    async def _stop_timer(self):
        if self._timer:
            await self.cancel_task(self._timer)
            self._timer = None

    async def cleanup(self):
        """Stop the timer."""
        await super().cleanup()
        await self._stop_timer()
