"""The latency instrument checked against the call's recording: the simulator's figures (RMS
windows over arrival times) and a second measurement from the two-channel WAV alone (sample
by sample) agree within 50 ms."""

from __future__ import annotations

import io
import wave

import numpy as np

from mindbot.audio import wav_bytes
from mindbot.bench import latencies_from_recording
from mindbot.harness import serve, simulated_call, ws_url
from mindbot.standins import Text
from pipelines.assistant import run


async def test_reported_latencies_agree_with_the_recording(cloud_services, voice_cache):
    cloud_services.llm.script(Text("Paris is the capital of France."), Text("About two hours."))
    bot = cloud_services.bot(memory=False)
    try:
        async with serve(bot, run) as base_url:
            report = await simulated_call(
                ws_url(base_url),
                ["What is the capital of France?", "How long is the train ride from London?"],
                cache_dir=voice_cache,
                transcribe_replies=False,
                keep_recording=True,
            )
    finally:
        bot.stop()
    reported = [turn.latency for turn in report.turns]
    recorded = latencies_from_recording(report.recording)
    print(f"\nreported {reported}\nrecorded {recorded}")
    assert len(recorded) == 2
    for said, heard in zip(reported, recorded, strict=True):
        assert said is not None and abs(said - heard) < 0.05

    with wave.open(io.BytesIO(report.recording), "rb") as recording:
        assert recording.getnchannels() == 2 and recording.getframerate() == 8000


def test_latencies_from_recording_on_a_made_up_call():
    rate = 8000
    stereo = np.zeros((rate * 6, 2), dtype=np.int16)
    tone = (3000 * np.sin(np.arange(rate) / rate * 2 * np.pi * 200)).astype(np.int16)
    stereo[rate : 2 * rate, 0] = tone  # the caller: 1.0-2.0 s
    stereo[int(2.8 * rate) : int(3.8 * rate), 1] = tone  # the bot answers 0.8 s later
    stereo[4 * rate : 5 * rate, 0] = tone  # the caller again, and no answer
    latencies = latencies_from_recording(wav_bytes(stereo.tobytes(), rate, channels=2))
    assert len(latencies) == 1 and abs(latencies[0] - 0.8) < 0.01
    assert (
        latencies_from_recording(wav_bytes(np.zeros((800, 2), np.int16).tobytes(), rate, 2)) == []
    )
