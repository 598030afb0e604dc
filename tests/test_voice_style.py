"""Voice style: changes wait for the next utterance; Cartesia gets whole configs, Piper speed."""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.cartesia.tts import CartesiaTTSService, GenerationConfig
from pipecat.tests.utils import SleepFrame, run_test

from mindbot.local_services import SharedPiperTTSService
from mindbot.services import SharedModels
from processors.frames import VoiceStyleFrame
from processors.voice_style import VoiceStyleController, scale

from conftest import make_settings

pytestmark = pytest.mark.timeout(120)

CARTESIA = CartesiaTTSService.Settings
PIPER = SharedPiperTTSService.Settings
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


def audio(ms: int = 20, level: int = 8000) -> TTSAudioRawFrame:
    samples = (np.sin(np.arange(16 * ms) / 3.0) * level).astype(np.int16)
    return TTSAudioRawFrame(audio=samples.tobytes(), sample_rate=16000, num_channels=1)


def reply(text: str = "Sure.") -> list:
    return [LLMFullResponseStartFrame(), LLMTextFrame(text), LLMFullResponseEndFrame()]


def updates(frames) -> list:
    return [f.delta for f in frames if isinstance(f, TTSUpdateSettingsFrame)]


async def test_a_change_mid_utterance_waits_for_the_next_one():
    controller = VoiceStyleController(settings_type=CARTESIA)
    down, _ = await run_test(
        controller,
        frames_to_send=[
            TTSStartedFrame(),
            audio(),
            SleepFrame(0.05),
            VoiceStyleFrame(source="emotion", emotion="calm", speed=0.9, volume=0.9),
            SleepFrame(0.05),
            audio(),
            TTSStoppedFrame(),
            SleepFrame(0.05),
            TTSStartedFrame(),
            audio(),
            TTSStoppedFrame(),
        ],
        expected_down_frames=[
            TTSStartedFrame,
            TTSAudioRawFrame,
            TTSAudioRawFrame,
            TTSStoppedFrame,
            TTSUpdateSettingsFrame,
            TTSStartedFrame,
            TTSAudioRawFrame,
            TTSStoppedFrame,
        ],
    )
    delta = down[4].delta
    assert isinstance(delta, CARTESIA)
    assert delta.generation_config == GenerationConfig(volume=0.9, speed=0.9, emotion="calm")
    assert controller.style.emotion == "calm"


class Output(FrameProcessor):
    """Sends bot speaking frames back upstream, as the output transport does."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, (BotStartedSpeakingFrame, BotStoppedSpeakingFrame)):
            direction = FrameDirection.UPSTREAM
        await self.push_frame(frame, direction)


async def test_while_the_bot_speaks_or_a_reply_streams_nothing_changes():
    controller = VoiceStyleController(settings_type=CARTESIA)
    style = VoiceStyleFrame(source="command", speed_step=1.2)
    down, up = await run_test(
        Pipeline([controller, Output()]),
        frames_to_send=[
            LLMFullResponseStartFrame(),
            SleepFrame(0.05),
            style,
            SleepFrame(0.05),
            LLMTextFrame("One."),
            LLMFullResponseEndFrame(),
            # Still playing the first reply when a second one (after a tool call) starts.
            BotStartedSpeakingFrame(),
            SleepFrame(0.05),
            *reply("Two."),
            SleepFrame(0.05),
            BotStoppedSpeakingFrame(),
            SleepFrame(0.05),
            *reply("Three."),
        ],
    )
    assert [type(f) for f in up] == [BotStartedSpeakingFrame, BotStoppedSpeakingFrame]
    kinds = [type(f) for f in down]
    starts = [i for i, k in enumerate(kinds) if k is LLMFullResponseStartFrame]
    assert kinds.count(TTSUpdateSettingsFrame) == 1
    assert kinds.index(TTSUpdateSettingsFrame) == starts[2] - 1  # before "Three." only
    assert updates(down)[0].generation_config.speed == 1.2


async def test_cartesia_always_gets_the_whole_generation_config():
    controller = VoiceStyleController(settings_type=CARTESIA, speed=1.1, emotion="content")
    down, _ = await run_test(
        controller,
        frames_to_send=[
            *reply(),  # the persona's emotion goes out with the first reply
            SleepFrame(0.05),
            VoiceStyleFrame(source="emotion", emotion="sympathetic", speed=0.9, volume=0.88),
            *reply(),
            SleepFrame(0.05),
            VoiceStyleFrame(source="command", volume_step=1.25),  # "louder"
            *reply(),
            SleepFrame(0.05),
            VoiceStyleFrame(source="emotion", emotion="neutral", speed=1.0, volume=1.0),
            *reply(),
        ],
    )
    configs = [d.generation_config for d in updates(down)]
    assert configs == [
        GenerationConfig(speed=1.1, volume=1.0, emotion="content"),
        GenerationConfig(speed=0.99, volume=0.88, emotion="sympathetic"),
        GenerationConfig(speed=0.99, volume=1.1, emotion="sympathetic"),  # emotion kept
        GenerationConfig(speed=1.1, volume=1.25, emotion="content"),  # back to the base
    ]


async def test_commands_set_the_base_and_emotion_only_nudges_within_range():
    controller = VoiceStyleController(settings_type=CARTESIA)
    frames = [VoiceStyleFrame(source="command", speed_step=1.3)] * 3  # "faster" three times
    frames += [VoiceStyleFrame(source="emotion", emotion="enthusiastic", speed=1.2, volume=3.0)]
    frames += [VoiceStyleFrame(source="language", language="es", voice="es-voice-id")]
    await run_test(controller, frames_to_send=[*frames, SleepFrame(0.05), *reply()])
    assert controller.style.speed == 1.5 and controller.style.volume == 2.0
    assert (controller.style.voice, controller.style.language) == ("es-voice-id", "es")


async def test_emotion_can_be_switched_off_without_losing_commands():
    controller = VoiceStyleController(settings_type=CARTESIA, emotional=False)
    down, _ = await run_test(
        controller,
        frames_to_send=[
            VoiceStyleFrame(source="emotion", emotion="calm", speed=0.9),
            VoiceStyleFrame(source="command", speed=0.8),
            SleepFrame(0.05),
            *reply(),
        ],
    )
    assert [d.generation_config for d in updates(down)] == [
        GenerationConfig(speed=0.8, volume=1.0, emotion=None)
    ]


async def test_piper_gets_its_speed_and_the_volume_is_applied_after_the_tts():
    controller = VoiceStyleController(settings_type=PIPER, volume=1.0)
    assert not controller.volume_in_tts
    sent = audio(level=8000)
    loud = np.abs(np.frombuffer(sent.audio, np.int16)).max()
    down, _ = await run_test(
        Pipeline([controller, controller.output_volume()]),
        frames_to_send=[
            VoiceStyleFrame(source="emotion", emotion="sympathetic", speed=0.9, volume=0.5),
            SleepFrame(0.05),
            *reply(),
            TTSStartedFrame(),
            sent,
            TTSStoppedFrame(),
        ],
    )
    (delta,) = updates(down)
    assert isinstance(delta, PIPER) and delta.speed == 0.9
    assert delta.given_fields() == {"speed": 0.9}  # Piper has no emotion or volume control
    (out,) = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert np.abs(np.frombuffer(out.audio, np.int16)).max() == pytest.approx(loud * 0.5, abs=2)


def test_scaling_clips_instead_of_wrapping_around():
    pcm = np.array([30000, -30000, 100], np.int16).tobytes() + b"\x01"
    assert np.frombuffer(scale(pcm, 2.0), np.int16).tolist() == [32767, -32768, 200]
    assert scale(b"", 2.0) == b""


async def test_piper_speaks_the_same_sentence_faster_or_slower_at_runtime():
    voice = SharedModels(make_settings()).piper()
    tts = SharedPiperTTSService(voice=voice, voice_name="en_US-joe-medium", sample_rate=16000)
    controller = VoiceStyleController(settings_type=type(tts).Settings)
    frames = [TTSSpeakFrame(SENTENCE), SleepFrame(0.6)]
    for speed in (1.4, 0.7):
        frames += [VoiceStyleFrame(source="command", speed=speed), SleepFrame(0.05)]
        frames += [TTSSpeakFrame(SENTENCE), SleepFrame(0.6)]
    down, _ = await run_test(Pipeline([controller, tts]), frames_to_send=frames)
    seconds: dict[str, float] = {}
    for frame in down:
        if isinstance(frame, TTSAudioRawFrame):
            heard = len(frame.audio) / 32000
            seconds[frame.context_id] = seconds.get(frame.context_id, 0.0) + heard
    normal, fast, slow = seconds.values()
    print(f"Piper, the same sentence: {normal:.2f} s, {fast:.2f} s at 1.4, {slow:.2f} s at 0.7")
    assert fast < 0.85 * normal and slow > 1.2 * normal
    assert tts._settings.speed == 0.7
