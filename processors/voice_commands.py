"""Voice commands: "stop", "repeat that", "slower", "goodbye"... acted on at once, without the LLM.

One ``VoiceCommands`` gives the pieces that work together::

    commands = VoiceCommands(command_set.match, replies=command_set.replies,
                             resolve_voice=catalog.resolve, on_command=report)
    user_params.user_mute_strategies.append(commands.mute_strategy())
    user_params.user_turn_strategies.stop.append(commands.turn_end_strategy())
    Pipeline([transport.input(), stt, commands.listener(), user, llm, tts,
              commands.player(), transport.output(), assistant])

- The **listener** (after STT, before the user aggregator) matches each transcript. A command's
  words go no further (the LLM never sees them as a user turn); it acts instead: it broadcasts
  an interruption for "stop" as soon as an interim transcript is the whole command, asks the
  player to replay the last utterance, emits ``VoiceStyleFrame`` for speed, volume and voice,
  resets the LLM context, says goodbye and ends the call, mutes and unmutes the caller. Then it
  sends ``VoiceCommandFrame`` downstream, once the caller has stopped speaking.
- The **turn-end strategy** (a user-turn stop strategy) ends the command's user turn when that
  frame reaches the user aggregator: the turn has no words, so no other strategy would end it.
- The **mute strategy** mutes the user aggregator between "mute" and "unmute" (no turns, no
  barge-in, no replies; the listener still hears "unmute"), and for the one frame that ends a
  command's turn, so that the aggregator does not answer the empty turn (Pipecat's empty-turn
  recovery asks the caller to repeat a turn that interrupted the bot, unless the user is muted).
- The **player** (after the TTS, before the transport output) keeps the audio of the bot's last
  complete utterance and replays it on request, with no TTS and no LLM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from loguru import logger
from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMMessagesUpdateFrame,
    StartFrame,
    SystemFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_mute import BaseUserMuteStrategy
from pipecat.turns.user_stop import BaseUserTurnStopStrategy

from processors.frames import VoiceStyleFrame

SPEED_STEPS = {"slower": 0.87, "faster": 1.15}
VOLUME_STEPS = {"quieter": 0.8, "louder": 1.25}
MAX_REPLAY_SECS = 120.0
"""The longest utterance kept for "repeat that" (its first two minutes, beyond that)."""


class CommandLike(Protocol):
    """What a match returns (e.g. MindBot's voice-commands ``Command``)."""

    @property
    def action(self) -> str:
        """One of ``stop``, ``repeat``, ``slower``, ``faster``, ``louder``, ``quieter``,
        ``start_over``, ``goodbye``, ``mute``, ``unmute``, ``switch_voice``."""
        ...

    @property
    def argument(self) -> str | None:
        """The voice name for ``switch_voice``."""
        ...


@dataclass
class VoiceCommandFrame(SystemFrame):
    """The caller's utterance was a voice command, acted on: its user turn ends unanswered.

    Parameters:
        action: The command's action (e.g. ``stop``).
    """

    action: str


@dataclass
class _ReplayFrame(SystemFrame):
    """Asks the player to replay the last complete utterance."""


class VoiceCommands:
    """The state the listener, the player and the two strategies share (see the module).

    Args:
        match: Finds the command a transcript is, if the whole of it is one.
        replies: What the bot says back, by name (``start_over``, ``goodbye``, ``mute``,
            ``unmute``, ``slower``..., ``switch_voice``, ``unknown_voice``,
            ``nothing_to_repeat``); ``{voice}`` is filled in. A missing one says nothing.
        resolve_voice: The TTS voice id for a voice name, or ``None`` if unknown; without
            it, "switch voice to ..." is not a command.
        on_command: Told each action taken, by name (``unknown_voice`` for a voice that
            does not resolve); never any words.
    """

    def __init__(
        self,
        match: Callable[[str], CommandLike | None],
        *,
        replies: Mapping[str, str] | None = None,
        resolve_voice: Callable[[str], str | None] | None = None,
        on_command: Callable[[str], None] | None = None,
    ):
        self._match = match
        self._replies = dict(replies or {})
        self._resolve_voice = resolve_voice
        self._on_command = on_command
        self.muted = False
        self.last_utterance: list[tuple[bytes, int, int]] = []
        self.strategies_ready = {"mute": False, "turn_end": False}

    def listener(self) -> FrameProcessor:
        """The processor to place after the STT, before the user aggregator."""
        return _Listener(self)

    def player(self) -> FrameProcessor:
        """The processor to place after the TTS, before the transport output."""
        return _Player(self)

    def mute_strategy(self) -> BaseUserMuteStrategy:
        """The mute strategy to add to ``LLMUserAggregatorParams.user_mute_strategies``."""
        return _MuteStrategy(self)

    def turn_end_strategy(self) -> BaseUserTurnStopStrategy:
        """A user-turn stop strategy that ends command turns (add it to the stop strategies)."""
        return _TurnEndStrategy(self)

    # --- Used by the processors ------------------------------------------------------------

    def match(self, text: str) -> CommandLike | None:
        try:
            command = self._match(text)
        except Exception:
            logger.exception("voice commands: matching a transcript failed")
            return None
        if command is None or command.action == "switch_voice" and self._resolve_voice is None:
            return None
        if command.action in ("mute", "unmute") and not self.strategies_ready["mute"]:
            return None  # nothing would mute the aggregator: let the LLM hear it
        return command

    def resolve_voice(self, name: str) -> str | None:
        try:
            return self._resolve_voice(name) if self._resolve_voice and name else None
        except Exception:
            logger.exception("voice commands: resolving a voice failed")
            return None

    def reply(self, name: str, **values: str) -> str:
        text = self._replies.get(name) or ""
        try:
            return text.format(**values)
        except (KeyError, IndexError, ValueError):
            return text

    def report(self, action: str) -> None:
        logger.info(f"voice command: {action}")
        if self._on_command is not None:
            try:
                self._on_command(action)
            except Exception:
                logger.exception("voice commands: the on_command callback failed")


class _Listener(FrameProcessor):
    """Acts on transcripts that are voice commands.

    Consumes: ``TranscriptionFrame`` and ``InterimTranscriptionFrame`` that are whole commands
    (while muted, only "unmute" is one). Emits, downstream: ``InterruptionFrame`` (both ways),
    ``VoiceStyleFrame``, ``LLMMessagesUpdateFrame``, ``TTSSpeakFrame``, ``EndWorkerFrame``, a
    replay request for the player, then ``VoiceCommandFrame`` once VAD says the caller stopped
    speaking (it watches the user aggregator's upstream VAD frames). Passes on: every other
    frame, unchanged and in order.
    """

    def __init__(self, commands: VoiceCommands):
        super().__init__()
        self._commands = commands
        self._speaking = False
        self._stopped_on_interim = False
        self._turn_end: VoiceCommandFrame | None = None
        self._ended = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        downstream = direction == FrameDirection.DOWNSTREAM
        if isinstance(frame, StartFrame) and not all(self._commands.strategies_ready.values()):
            logger.warning(
                f"{self}: the voice-command mute and turn-end strategies are not in the user "
                "aggregator's params; mute is off and command turns may get a reply"
            )
        elif downstream and isinstance(frame, InterimTranscriptionFrame):
            if await self._interim(frame.text):
                return
        elif downstream and isinstance(frame, TranscriptionFrame):
            if await self._final(frame.text):
                return
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking = True
            self._stopped_on_interim = False  # a new utterance (its interim may never be final)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking = False
            await self.push_frame(frame, direction)
            if self._turn_end is not None:
                await self.push_frame(self._turn_end)
                self._turn_end = None
            return
        await self.push_frame(frame, direction)

    async def _interim(self, text: str) -> bool:
        if self._ended or self._commands.muted:
            return False
        command = self._commands.match(text)
        if command is None:
            return False
        if command.action == "stop" and not self._stopped_on_interim:
            # Stopping is safe to do early: were the final words not a command, the caller
            # was talking over the bot anyway, which barge-in answers the same way.
            self._stopped_on_interim = True
            await self.broadcast_interruption()
            self._commands.report("stop")
        return True

    async def _final(self, text: str) -> bool:
        stopped, self._stopped_on_interim = self._stopped_on_interim, False
        if self._ended:
            return False
        command = self._commands.match(text)
        if command is not None and self._commands.muted and command.action != "unmute":
            command = None
        if command is None:
            self._turn_end = None  # the caller went on talking: the turn ends as any turn does
            return False
        logger.debug(f"{self}: {text!r} is the command {command.action}")
        await self._act(command, stopped)
        turn_end = VoiceCommandFrame(action=command.action)
        if self._speaking:
            self._turn_end = turn_end
        else:
            await self.push_frame(turn_end)
        return True

    async def _act(self, command: CommandLike, stopped: bool) -> None:
        action = command.action
        if action == "stop":
            if stopped:
                return  # done, and reported, on the interim transcript
            await self.broadcast_interruption()
        elif action == "repeat":
            await self.broadcast_interruption()
            if self._commands.last_utterance:
                await self.push_frame(_ReplayFrame())
            else:
                await self._say("nothing_to_repeat")
        elif action in SPEED_STEPS or action in VOLUME_STEPS:
            await self.push_frame(
                VoiceStyleFrame(
                    source="command",
                    speed_step=SPEED_STEPS.get(action),
                    volume_step=VOLUME_STEPS.get(action),
                )
            )
            await self._say(action)
        elif action == "switch_voice":
            name = command.argument or ""
            voice = self._commands.resolve_voice(name)
            if voice is None:
                action = "unknown_voice"
                await self._say("unknown_voice", voice=name)
            else:
                await self.push_frame(VoiceStyleFrame(source="command", voice=voice))
                await self._say("switch_voice", voice=name)
        elif action == "start_over":
            await self.broadcast_interruption()
            await self.push_frame(LLMMessagesUpdateFrame(messages=[], run_llm=False))
            await self._say("start_over")
        elif action == "goodbye":
            self._ended = True
            await self.broadcast_interruption()
            await self._say("goodbye", interruptible=False)
            # Downstream, behind the goodbye: the worker ends once it has been spoken.
            await self.push_frame(EndWorkerFrame(reason="the caller said goodbye"))
        elif action in ("mute", "unmute"):
            self._commands.muted = action == "mute"
            await self._say(action)
        self._commands.report(action)

    async def _say(self, name: str, *, interruptible: bool = True, **values: str) -> None:
        text = self._commands.reply(name, **values)
        if text:
            speech = TTSSpeakFrame(text, append_to_context=False)
            speech.interruptible = interruptible
            await self.push_frame(speech)


class _Player(FrameProcessor):
    """Keeps the audio of the bot's last complete utterance and replays it on request.

    An utterance is the TTS audio between ``TTSStartedFrame`` and ``TTSStoppedFrame``; one cut
    by an ``InterruptionFrame`` is not complete and is not kept.

    Consumes: the listener's replay request (it pushes the kept audio, then a
    ``TTSStoppedFrame``, downstream) and ``VoiceCommandFrame``. Passes on: every other frame,
    unchanged and in order.
    """

    def __init__(self, commands: VoiceCommands):
        super().__init__()
        self._commands = commands
        self._audio: list[tuple[bytes, int, int]] | None = None
        self._secs = 0.0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, _ReplayFrame):
            await self._replay()
            return
        if isinstance(frame, VoiceCommandFrame):
            return  # it was for the user aggregator; nothing after it needs it
        if direction == FrameDirection.DOWNSTREAM:
            self._keep(frame)
        await self.push_frame(frame, direction)

    def _keep(self, frame: Frame) -> None:
        if isinstance(frame, TTSStartedFrame):
            self._audio, self._secs = [], 0.0
        elif isinstance(frame, TTSAudioRawFrame) and frame.audio and frame.sample_rate > 0:
            if self._audio is None:
                self._audio, self._secs = [], 0.0
            if self._secs < MAX_REPLAY_SECS:
                self._audio.append((frame.audio, frame.sample_rate, frame.num_channels))
                self._secs += len(frame.audio) / (2 * frame.sample_rate * frame.num_channels)
        elif isinstance(frame, TTSStoppedFrame):
            if self._audio:
                self._commands.last_utterance = self._audio
            self._audio = None
        elif isinstance(frame, InterruptionFrame):
            self._audio = None

    async def _replay(self) -> None:
        for audio, rate, channels in self._commands.last_utterance:
            # Fresh frames: the output transport rewrites the audio of the frames it plays.
            await self.push_frame(TTSAudioRawFrame(audio, rate, channels))
        await self.push_frame(TTSStoppedFrame())


class _MuteStrategy(BaseUserMuteStrategy):
    """Mutes the user aggregator between "mute" and "unmute", and while a command's turn ends."""

    def __init__(self, commands: VoiceCommands):
        super().__init__()
        self._commands = commands
        self._muted = False

    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        self._commands.strategies_ready["mute"] = True

    async def process_frame(self, frame: Frame) -> bool:
        await super().process_frame(frame)
        if isinstance(frame, VoiceCommandFrame):
            # The mute state flips with the frame that ends the turn, never mid-turn (a muted
            # aggregator drops the VAD frames that would end it). And the aggregator reads the
            # state before handling the frame, so the empty turn this frame ends is not
            # "recovered" by asking the caller to repeat.
            if frame.action in ("mute", "unmute"):
                self._muted = frame.action == "mute"
            return True
        return self._muted


class _TurnEndStrategy(BaseUserTurnStopStrategy):
    """Ends the user turn of a voice command, which has no words for other strategies to see."""

    def __init__(self, commands: VoiceCommands):
        super().__init__()
        self._commands = commands

    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        self._commands.strategies_ready["turn_end"] = True

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        await super().process_frame(frame)
        if isinstance(frame, VoiceCommandFrame):
            await self.trigger_user_turn_stopped()
        return ProcessFrameResult.CONTINUE
