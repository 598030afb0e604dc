"""The barge-in pause (``mindbot.barge_in``): the bot falls silent the moment the caller may be
talking over it, and goes on where it stopped when no turn starts.

The onset detector runs inside MindBot's Silero analyzer on real audio (the caller's Piper
voice, the false barge-in bench's synthesized sounds); the pause's rules run on their own
clock; then a phone call on the cloud stand-ins plays a throat clear over the bot's answer.
(The interrupted case, the bot silent before Pipecat's clear, is
``test_turn_bench.test_a_barge_in_run_times_both_systems_after_the_interruption``.)
"""

from __future__ import annotations

import asyncio

import httpx
from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import OutputAudioRawFrame
from prometheus_client.parser import text_string_to_metric_families

from mindbot.audio import first_voiced_offset
from mindbot.barge_in import MAX_PAUSE_SECS, RESUME_QUIET_SECS, SPEAKING_SECS, BargeInPause
from mindbot.callsim import RATE, PhoneCall
from mindbot.falsebargein_bench import (
    format_falsebargein_summary,
    load_sounds,
    run_falsebargein_bench,
)
from mindbot.harness import serve, ws_url
from mindbot.local_services import SharedSileroVADAnalyzer
from mindbot.turn_bench import INTERRUPTION, _speech
from pipelines.assistant import run

from conftest import make_settings

FRAME = 320  # 20 ms at 16 kHz, as Twilio's frames reach the VAD


async def onsets(pcm_8k: bytes) -> list[float]:
    """Seconds into ``pcm_8k`` (a call's 8 kHz audio, fed as 20 ms frames at 16 kHz) at which
    the onset listener heard a voice."""
    audio = await SOXRStreamAudioResampler().resample(pcm_8k + bytes(16000), 8000, 16000)
    vad = SharedSileroVADAnalyzer(session=SileroVADAnalyzer()._model.session)
    vad.set_sample_rate(16000)
    heard: list[float] = []
    position = 0.0
    vad.listen_for_onset(lambda voice: heard.append(position) if voice else None)
    for start in range(0, len(audio) - 2 * FRAME + 1, 2 * FRAME):
        position = (start + 2 * FRAME) / 32000
        await vad.analyze_audio(audio[start : start + 2 * FRAME])
    return heard


async def test_the_callers_voice_sounds_like_one_within_a_few_windows(voice_cache):
    speech = await _speech(INTERRUPTION, voice_cache)
    first_word = first_voiced_offset(speech, 8000)
    heard = await onsets(speech)
    assert heard, "the caller's sentence never sounded like a voice"
    # Two 32 ms windows after the first voiced 10 ms, plus the frame and window they fall in:
    # long before Pipecat's VAD (0.2 s of speech above a slow volume gate).
    assert 0 < heard[0] - first_word < 0.2, (first_word, heard[0])


async def test_noise_bursts_and_silence_never_sound_like_a_voice(voice_cache):
    for sound in await load_sounds(["cough", "double_cough", "knock", "breath", "typing"]):
        assert await onsets(sound.pcm) == [], sound.name
    assert await onsets(bytes(16000)) == []


# --- The pause's rules, on their own clock --------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def chunk(interruptible: bool = True) -> OutputAudioRawFrame:
    frame = OutputAudioRawFrame(audio=bytes(640), sample_rate=8000, num_channels=1)
    frame.interruptible = interruptible
    return frame


async def test_a_voice_pauses_a_speaking_bot_until_the_caller_is_quiet_again():
    clock = Clock()
    pause = BargeInPause(clock=clock)
    reported: list[str] = []
    pause.on_outcome = reported.append
    # The bot is silent: a voice changes nothing.
    pause.heard(True)
    assert not pause.paused
    assert await pause.admit(chunk())  # the bot starts speaking
    clock.now += 0.04
    pause.heard(True)
    assert pause.paused
    write = asyncio.create_task(pause.admit(chunk()))
    await asyncio.sleep(0.02)
    assert not write.done()  # the chunk is held
    # Not quiet for long enough yet: still held.
    clock.now += RESUME_QUIET_SECS / 2
    pause.heard(False)
    await asyncio.sleep(0.02)
    assert not write.done()
    clock.now += RESUME_QUIET_SECS
    pause.heard(False)
    assert await asyncio.wait_for(write, 1) is True  # the bot goes on with that chunk
    assert not pause.paused and reported == ["resumed"] and pause.outcomes["resumed"] == 1


async def test_an_interruption_drops_the_held_chunk_and_nothing_after_it():
    clock = Clock()
    pause = BargeInPause(clock=clock)
    assert await pause.admit(chunk())
    pause.heard(True)
    write = asyncio.create_task(pause.admit(chunk()))
    await asyncio.sleep(0.02)
    pause.interrupted()
    assert await asyncio.wait_for(write, 1) is False
    assert pause.outcomes == {"interrupted": 1}
    # The bot's next answer is written whole, and a voice during the silence before it
    # (the caller's turn going on) pauses nothing.
    clock.now += 1.0
    pause.heard(True)
    assert not pause.paused
    assert await pause.admit(chunk())
    # An interruption with nothing paused does nothing.
    pause.interrupted()
    assert pause.outcomes == {"interrupted": 1}


async def test_an_interruption_with_no_chunk_held_drops_nothing():
    pause = BargeInPause(clock=Clock())
    assert await pause.admit(chunk())
    pause.heard(True)  # paused at the end of the bot's audio: nothing waits
    pause.interrupted()
    assert await pause.admit(chunk())


async def test_audio_that_cannot_be_interrupted_is_never_held():
    pause = BargeInPause(clock=Clock())
    assert await pause.admit(chunk())
    pause.heard(True)
    assert pause.paused
    assert await asyncio.wait_for(pause.admit(chunk(interruptible=False)), 0.5)


async def test_a_voice_that_outlasts_the_pause_lets_the_bot_go_on_and_pause_no_more():
    clock = Clock()
    pause = BargeInPause(clock=clock)
    assert await pause.admit(chunk())
    pause.heard(True)
    write = asyncio.create_task(pause.admit(chunk()))
    await asyncio.sleep(0.02)
    clock.now += MAX_PAUSE_SECS
    pause.heard(True)  # a television: a voice on and on that never becomes a turn
    assert await asyncio.wait_for(write, 1) is True
    assert pause.outcomes == {"expired": 1}
    # The bot talks on through it...
    for _ in range(5):
        clock.now += 0.04
        assert await pause.admit(chunk())
        pause.heard(True)
        assert not pause.paused
    # ...until its answer ends; the next one can be paused again.
    clock.now += SPEAKING_SECS * 2
    assert await pause.admit(chunk())
    pause.heard(True)
    assert pause.paused


async def test_a_pause_ends_by_itself_when_the_callers_audio_stops_arriving():
    pause = BargeInPause(max_pause_secs=0.05)
    assert await pause.admit(chunk())
    pause.heard(True)
    assert await asyncio.wait_for(pause.admit(chunk()), 1) is True
    assert pause.outcomes == {"expired": 1}


# --- On a phone call ------------------------------------------------------------------------------


async def throat_clear_call(voice_cache, **audio):
    """One throat clear over the bot's long answer, on MindBot (and bare Pipecat), with
    ``vad_start_secs`` longer than the sound: Pipecat's VAD never takes it for speech (at the
    default 0.2 s it does one time in three), so it is a false alarm every time."""
    result = await run_falsebargein_bench(
        run,
        sounds=["throat_clear"],
        calls=1,
        warmup_calls=0,
        audio={"vad_start_secs": 0.6, **audio},
        make_settings=make_settings,
        cache_dir=voice_cache,
    )
    print("\n" + format_falsebargein_summary(result.summary()), result.outcomes, result.failures)
    (mindbot,) = [o for o in result.outcomes if o.system == "mindbot"]
    return result, mindbot


async def test_a_throat_clear_pauses_the_bot_which_then_goes_on(voice_cache):
    result, mindbot = await throat_clear_call(voice_cache)
    assert not mindbot.interrupted and mindbot.clear is None and not mindbot.turn
    # The bot stopped within a few windows of the sound and went on once it was over.
    assert mindbot.audio_end < 0.3
    assert mindbot.pause is not None and 0.2 < mindbot.pause < 1.5
    assert result.summary()["systems"]["mindbot"]["paused"] == 1


async def test_with_the_pause_off_the_bot_talks_through_the_throat_clear(voice_cache):
    result, mindbot = await throat_clear_call(voice_cache, barge_in_pause=False)
    assert result.audio_settings["barge_in_pause"] is False
    assert not mindbot.interrupted and mindbot.pause is None and mindbot.audio_end > 1.0


async def test_the_servers_metrics_count_how_each_pause_ended(cloud_services, voice_cache):
    from mindbot.command_bench import LONG_REPLY, QUESTION
    from mindbot.standins import Text

    (throat_clear,) = await load_sounds(["throat_clear"])
    question = await _speech(QUESTION, voice_cache)
    cloud_services.deepgram.add_transcripts(QUESTION)
    bot = await asyncio.to_thread(
        cloud_services.bot,
        memory=False,
        audio={"vad_start_secs": 0.6},
        monitoring={"metrics_public": True},
    )
    try:
        async with serve(bot, run) as url:
            async with PhoneCall(ws_url(url), from_number="+15550003333") as call:
                await call.wait_for_bot_speech(timeout=15)
                cloud_services.llm.script(Text(LONG_REPLY))
                ended = await call.say(question, RATE)
                await call.wait_for_bot_speech(after=ended, quiet=0, timeout=20)
                await asyncio.sleep(1.0)
                # Deepgram hears no words in a throat clear (the stand-in's fallback, Whisper
                # tiny.en, might hear "Okay."): only the VAD hears it.
                cloud_services.deepgram.speech_threshold = float("inf")
                await call.say(throat_clear.pcm, RATE)
                await asyncio.sleep(1.5)
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"{url}/metrics")).text
    finally:
        await asyncio.to_thread(bot.stop)
    outcomes = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "mindbot_barge_in_pauses_total"
    }
    assert outcomes == {"resumed": 1.0}, outcomes
