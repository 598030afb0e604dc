"""Answer while smart-turn waits: a speculative LLM response for a turn judged unfinished.

When smart-turn judges a caller's turn incomplete, Pipecat waits up to
``audio.smart_turn_stop_secs`` (3 s) of silence before ending it anyway. On a turn the model
misjudged (a finished question in an unusual voice), the caller hears that wait plus the whole
LLM and TTS latency. ``SpeculativeTurnStopStrategy`` starts the LLM as soon as the transcript
is in, during the wait, through Pipecat's own speculation machinery (the one Deepgram Flux's
eager end of turn drives):

- the inference runs against a provisional copy of the context, so nothing is written;
- the LLM service's ``SpeculationGate`` holds the response until the turn ends;
- the turn ending with the same words releases it at once (``confirms_speculation``), so no
  second request is made;
- the caller speaking again, or the words changing, withdraws it
  (``EagerEndOfTurnCancelFrame``: the LLM stream is cancelled, nothing was heard);
- an inference that wants a tool is withdrawn by the LLM service (a tool's side effects cannot
  be held back); the committed turn runs the tool, and the same words are not speculated on
  again.

The price is an LLM request for each pause smart-turn judges mid-sentence; speculating changes
no turn decision (the text check it builds on, ``mindbot.turn_text``, does).
``audio.speculative_llm`` turns it off.
"""

from __future__ import annotations

import asyncio

from loguru import logger
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import EagerMatchPolicy, NormalizedMatch

from mindbot.turn_text import TextCheckedTurnStopStrategy

SPECULATION_TIMEOUT_SECS = 10.0
"""A held response nobody resolved is withdrawn after this long (a safety net: every turn
ends through smart-turn's own silence limit or the aggregator's stop timeout first)."""


class SpeculativeTurnStopStrategy(TextCheckedTurnStopStrategy):
    """Smart-turn end of turn that answers speculatively while a turn is judged unfinished.

    Args:
        turn_analyzer: The end-of-turn model (smart-turn).
        match_policy: Whether the turn's final words still match the speculated ones
            (default ``NormalizedMatch``: case and punctuation aside).
        speculation_timeout: Seconds before an unresolved speculation is withdrawn.
        **kwargs: Passed to ``TextCheckedTurnStopStrategy`` (``text_model``) and Pipecat's
            ``TurnAnalyzerUserTurnStopStrategy``.
    """

    def __init__(
        self,
        *,
        match_policy: EagerMatchPolicy | None = None,
        speculation_timeout: float = SPECULATION_TIMEOUT_SECS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._match_policy = match_policy or NormalizedMatch()
        self._speculation_timeout = speculation_timeout
        self._speculation: UserTurnSpeculation | None = None
        self._withdrawn: str | None = None
        """Words whose speculation the LLM withdrew (it wanted a tool): not tried again."""
        self._speculation_timer: asyncio.Task | None = None
        self._heard_since_speech = False
        """Whether a transcript arrived since the caller last started speaking: until one
        does, the words so far miss the speech that just ended."""

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        """Follow the turn as Pipecat's strategy does, then speculate if the wait began.

        Args:
            frame: The frame to be analyzed.

        Returns:
            Always ``CONTINUE``, so later stop strategies are evaluated.
        """
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._heard_since_speech = True
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._heard_since_speech = False
            await self._withdraw("the caller went on speaking")
        elif isinstance(frame, EagerEndOfTurnCancelFrame):
            # The LLM service withdrew it (a tool call); its frame reaches everyone else.
            if self._speculation is not None:
                self._withdrawn = self._speculation.text
            await self._take_speculation()
        result = await super().process_frame(frame)
        if isinstance(frame, (TranscriptionFrame, VADUserStoppedSpeakingFrame)):
            await self._maybe_speculate()
        return result

    async def trigger_user_turn_stopped(self, *, enable_user_speaking_frames: bool | None = None):
        """End the turn, keeping the speculative response if it answered the same words.

        Args:
            enable_user_speaking_frames: Whether to emit ``UserStoppedSpeakingFrame``.
        """
        speculation = await self._take_speculation()
        if speculation is not None:
            if self._match_policy.matches(speculation.text, self._turn_text()):
                logger.debug(f"{self}: turn ended as speculated, releasing the held response")
                # The UserStoppedSpeakingFrame this emits releases the held response, and
                # the flag stops a second inference answering the same turn.
                await self.trigger_user_turn_finalized(
                    enable_user_speaking_frames=enable_user_speaking_frames,
                    confirms_speculation=True,
                )
                return
            logger.debug(f"{self}: the turn's words changed, discarding the speculation")
            await self.trigger_user_turn_speculation_cancelled()
        await super().trigger_user_turn_stopped(
            enable_user_speaking_frames=enable_user_speaking_frames
        )

    async def _reset(self):
        """Clear the turn's state at both turn boundaries, withdrawing what is unresolved."""
        await self._withdraw("the turn ended another way")
        self._withdrawn = None
        await super()._reset()

    async def cleanup(self):
        """Stop the speculation's timer."""
        await self._take_speculation()
        await super().cleanup()

    # -- speculation ------------------------------------------------------------------------

    async def _maybe_speculate(self) -> None:
        """Speculate once the caller stopped, smart-turn said unfinished and the words of the
        speech that just ended are in."""
        if self._vad_user_speaking or not self._vad_stopped or self._turn_complete:
            return
        if not self._heard_since_speech:
            return
        text = self._turn_text()
        if not text or text == self._withdrawn:
            return
        if self._speculation is not None:
            if self._speculation.text == text:
                return
            await self._withdraw("more words arrived")
        speculation = UserTurnSpeculation(text=text)
        self._speculation = speculation
        self._speculation_timer = self.task_manager.create_task(
            self._expire(speculation), f"{self}::speculation_timeout"
        )
        logger.debug(f"{self}: smart-turn judged the turn unfinished, answering speculatively")
        await self.trigger_user_turn_inference_triggered(speculation=speculation)

    async def _withdraw(self, why: str) -> None:
        if await self._take_speculation() is not None:
            logger.debug(f"{self}: withdrawing the speculative response ({why})")
            await self.trigger_user_turn_speculation_cancelled()

    async def _take_speculation(self) -> UserTurnSpeculation | None:
        """Take the speculation in flight and stop its timer (the one way one ends)."""
        speculation, self._speculation = self._speculation, None
        if self._speculation_timer is not None:
            task, self._speculation_timer = self._speculation_timer, None
            await self.task_manager.cancel_task(task)
        return speculation

    async def _expire(self, speculation: UserTurnSpeculation) -> None:
        await asyncio.sleep(self._speculation_timeout)
        self._speculation_timer = None
        if self._speculation is speculation:
            self._speculation = None
            logger.debug(f"{self}: speculation unresolved, withdrawing it")
            await self.trigger_user_turn_speculation_cancelled()
