"""``mindbot bench commands``: how fast "stop" silences the bot, over simulated phone calls.

Each call goes over the Twilio Media Streams websocket on loopback (``mindbot.harness.serve``,
``mindbot.callsim.PhoneCall``): the caller asks a question whose answer is long, lets the bot
talk for a while, then says "Please stop." (a Piper voice, paced in real time). Measured from
the end of the word "stop" (the last voiced sample the caller sent):

- ``clear``: the Twilio ``clear`` message, which makes Twilio drop the bot audio it holds;
- ``audio``: the end of the last non-silent bot audio that reached the caller;
- ``stop``: the later of the two: when the caller stops hearing the bot (the headline figure);
- ``stt``: when the pipeline recognized the command (the session listeners' ``on_command``),
  i.e. the STT's share, which includes the transcriber's own latency; ``after_stt`` is
  ``stop`` minus it: what the command path adds beyond the STT.

Figures can be negative: with barge-in on, the caller's voice interrupts the bot before the
word is over, and the command only confirms it (``barge_in_first`` counts those calls). Run
the pipeline with barge-in off to time the command path alone.

The bot's LLM must answer ``QUESTION`` at length (the OpenAI stand-in:
``ScriptedLLMServer(default_reply=Text(LONG_REPLY))``), and the pipeline must report commands
to the session listeners as ``on_command(call, action)``.
"""

from __future__ import annotations

import asyncio
import io
import math
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from mindbot.audio import first_voiced_offset, resample, window_rms
from mindbot.callsim import RATE, PhoneCall
from mindbot.harness import DEFAULT_VOICE_CACHE, serve, ws_url
from mindbot.runtime import MindBot, PipelineRun
from mindbot.session import Call

QUESTION = "Tell me a long story about the sea."
STOP = "Please stop."
"""What the caller says; it ends with the word "stop" (a bare "Stop." starts with a quiet
fricative that a stand-in STT, which keeps no audio before the speech threshold, clips)."""
LONG_REPLY = " ".join(
    f"This is sentence number {n} of a long story about the sea." for n in range(40)
)
QUIET_GAP = 0.3
"""Silence (seconds) that ends a stretch of bot speech."""
SILENCE_RMS = 300.0
CHUNK_SECS = 0.04
"""The longest audio chunk Pipecat's output transport sends (four 10 ms pieces)."""


@dataclass
class StopTiming:
    """One "stop", in seconds from the end of the word (``None``: did not happen)."""

    clear: float | None
    audio: float | None
    stop: float | None
    stt: float | None
    after_stt: float | None
    barge_in_first: bool


@dataclass
class CommandBenchResult:
    """Every measured "stop" and every call that could not be measured, with why."""

    profile: str
    stops: list[StopTiming] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """p50/p95 in milliseconds of each figure, and the counts."""
        figures: dict[str, Any] = {
            "profile": self.profile,
            "calls": len(self.stops),
            "failures": len(self.failures),
            "barge_in_first": sum(s.barge_in_first for s in self.stops),
        }
        for name in ("stop", "clear", "audio", "stt", "after_stt"):
            values = [getattr(s, name) for s in self.stops if getattr(s, name) is not None]
            figures[f"{name}_ms_p50"] = _ms(_percentile(values, 50))
            figures[f"{name}_ms_p95"] = _ms(_percentile(values, 95))
        return figures

    def as_dict(self) -> dict[str, Any]:
        """The summary, the raw timings and the failures (for ``record_json``)."""
        return {
            "summary": self.summary(),
            "stops": [asdict(s) for s in self.stops],
            "failures": self.failures,
        }


class _CommandClock:
    """A session listener that notes when each command was recognized (monotonic time)."""

    def __init__(self):
        self.recognized: list[tuple[float, str]] = []

    def on_command(self, _call: Call, action: str) -> None:
        self.recognized.append((time.monotonic(), action))


async def run_command_bench(
    bot: MindBot,
    run: PipelineRun,
    *,
    calls: int = 10,
    warmup_calls: int = 1,
    talk_secs: float = 1.5,
    settle_secs: float = 2.5,
    cache_dir: Path | None = DEFAULT_VOICE_CACHE,
) -> CommandBenchResult:
    """Place ``calls`` simulated calls in which the caller says "stop" over a long answer.

    Args:
        bot: A started MindBot whose LLM answers ``QUESTION`` at length.
        run: The pipeline to call (it must carry the voice-command processors).
        calls: Measured calls, one after the other.
        warmup_calls: Unmeasured calls first, so no figure pays for first use.
        talk_secs: How long the bot talks before the caller says "stop".
        settle_secs: How long the caller then listens (the bot must stay silent).
        cache_dir: Where synthesized caller utterances are cached.
    """
    from mindbot.speech import synthesize

    question = await asyncio.to_thread(synthesize, QUESTION, cache_dir=cache_dir)
    stop = await asyncio.to_thread(synthesize, STOP, cache_dir=cache_dir)
    providers = bot.providers
    result = CommandBenchResult(profile=f"{providers.stt}/{providers.llm}/{providers.tts}")
    clock = _CommandClock()
    bot.listeners.append(clock)
    try:
        async with serve(bot, run) as base_url:
            for n in range(warmup_calls + calls):
                try:
                    timing = await _one_call(
                        ws_url(base_url), question, stop, clock, talk_secs, settle_secs
                    )
                except (TimeoutError, _Unmeasurable) as e:
                    logger.warning(f"bench commands: call {n + 1} not measured: {e}")
                    if n >= warmup_calls:
                        result.failures.append(str(e))
                    continue
                if n >= warmup_calls:
                    result.stops.append(timing)
                    print(f"  call {n + 1 - warmup_calls}/{calls}: {_line(timing)}", flush=True)
    finally:
        bot.listeners.remove(clock)
    return result


class _Unmeasurable(Exception):
    """The call did not go as the benchmark needs (the bot was silent, or it answered "stop")."""


async def _one_call(
    url: str,
    question: tuple[bytes, int],
    stop: tuple[bytes, int],
    clock: _CommandClock,
    talk_secs: float,
    settle_secs: float,
) -> StopTiming:
    pcm, rate = stop
    onset = first_voiced_offset(resample(pcm, rate, RATE), RATE) or 0.0
    async with PhoneCall(url) as call:
        await call.wait_for_bot_speech(timeout=15)
        asked = await call.say(*question)
        await call.wait_for_bot_speech(after=asked, quiet=0, timeout=15)
        await asyncio.sleep(talk_secs)
        began = call.now() + onset  # the caller is silent now, so the word starts this soon
        said = await call.say(pcm, rate)
        await asyncio.sleep(settle_secs)
        t0 = time.monotonic() - call.now()
        recognized = next(
            (at - t0 for at, action in clock.recognized if action == "stop" and at - t0 >= began),
            None,
        )
        clears = call.clears_between(began - 0.05, call.now())
        bot = _bot_channel(call.recording())
    speaking_until = _speech_end(bot, began)
    if speaking_until is None:
        raise _Unmeasurable("the bot was not speaking when the caller said stop")
    if _voiced_after(bot, speaking_until + QUIET_GAP):
        raise _Unmeasurable("the bot spoke again after stop (it answered the command)")
    clear = clears[0] if clears else None
    # The transport sends each chunk in real time and Twilio buffers what has arrived: a clear
    # drops that, so the caller hears the bot until the clear, unless audio still came after it
    # (a chunk lasts up to CHUNK_SECS past its arrival), or stopped before it (MindBot's
    # barge-in pause, mindbot.barge_in). Without a clear, the caller goes on hearing the
    # buffer, and the bot's silence has no time.
    if clear is None:
        heard_until = None
    elif speaking_until <= clear:
        heard_until = speaking_until
    else:
        heard_until = clear if speaking_until <= clear + CHUNK_SECS else speaking_until
    return StopTiming(
        clear=None if clear is None else clear - said,
        audio=speaking_until - said,
        stop=None if heard_until is None else heard_until - said,
        stt=None if recognized is None else recognized - said,
        after_stt=None if heard_until is None or recognized is None else heard_until - recognized,
        barge_in_first=clear is not None and (recognized is None or clear < recognized),
    )


def _bot_channel(recording: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(recording), "rb") as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return frames.reshape(-1, 2)[:, 1].copy()


def _voiced_windows(bot: np.ndarray) -> np.ndarray:
    """Which 10 ms windows of the bot channel hold sound."""
    return window_rms(bot.tobytes(), RATE) > SILENCE_RMS


def _speech_end(bot: np.ndarray, at: float) -> float | None:
    """The end of the stretch of bot speech going on at ``at`` (seconds), if any."""
    voiced = _voiced_windows(bot)
    i = int(at * 100)
    if i >= len(voiced) or not voiced[max(0, i - int(QUIET_GAP * 100)) : i + 1].any():
        return None
    gap, last = int(QUIET_GAP * 100), i
    while i < len(voiced) and i - last < gap:
        if voiced[i]:
            last = i
        i += 1
    return (last + 1) / 100


def _voiced_after(bot: np.ndarray, at: float) -> bool:
    return bool(_voiced_windows(bot)[int(at * 100) :].any())


def _percentile(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _line(t: StopTiming) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:+.0f} ms"

    return (
        f"stop {ms(t.stop)} (clear {ms(t.clear)}, audio {ms(t.audio)}; "
        f"STT {ms(t.stt)}, after STT {ms(t.after_stt)})"
        + (" barge-in first" if t.barge_in_first else "")
    )


def format_command_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of a command benchmark's summary."""

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:+.0f} ms"

    rows = [
        ("bot silent (later of clear and audio)", "stop"),
        ("Twilio clear sent", "clear"),
        ("last bot audio", "audio"),
        ("command recognized (STT share)", "stt"),
        ("beyond the STT (stop - recognized)", "after_stt"),
    ]
    lines = [
        f"profile {summary['profile']}: {summary['calls']} calls measured, "
        f"{summary['failures']} not; barge-in stopped the bot first in "
        f"{summary['barge_in_first']}",
        f"{'from the end of the word stop to':40s}{'p50':>10s}{'p95':>10s}",
    ]
    for label, key in rows:
        lines.append(
            f"{label:40s}{cell(summary[f'{key}_ms_p50']):>10s}{cell(summary[f'{key}_ms_p95']):>10s}"
        )
    return "\n".join(lines)
