"""``mindbot bench bargein`` and ``mindbot bench cutoff``: turn taking over simulated phone calls.

Both place calls over the Twilio Media Streams websocket on loopback (``mindbot.callsim``,
real-time paced Piper speech), alternating between MindBot's pipeline and a bare Pipecat bot
with the same services (``mindbot.bench.bare_pipecat_app``), each server on its own event
loop in its own thread. Both measure from the call's two-channel recording (the caller's
frames where they were spoken, the bot's where they arrived) and the Twilio messages received.

**Barge-in.** The caller asks for a long story and, about ``talk_secs`` into the answer, talks
over the bot with a sentence that is not a voice command. Measured from the first voiced 10 ms
of the interruption as the caller sent it:

- ``clear``: the Twilio ``clear`` message (Twilio drops the bot audio it holds);
- ``audio``: the end of the last voiced bot audio that reached the caller;
- ``silent``: when the caller stops hearing the bot: the end of its audio if that came
  first (MindBot's barge-in pause, ``mindbot.barge_in``: the transport paces its audio in real
  time, so Twilio holds no more than what arrived), else the clear (audio ending within one
  chunk, ``CHUNK_SECS``, of the clear arrived before it and was dropped with Twilio's buffer),
  or the audio's end if audio still came after the clear. The issue's target: within 0.25 s.

What bounds the figure, in both systems:

- Twilio's 20 ms frames: the bot hears a sample once its frame is sent (up to 20 ms later);
- the VAD, by far the largest share. Silero reads 512-sample windows (32 ms at 16 kHz), and
  Pipecat declares speech only after ``audio.vad_start_secs`` (0.2 s) of windows both above
  ``audio.vad_confidence`` and above a minimum volume (``VADParams.min_volume`` 0.6, on an
  exponentially smoothed loudness that takes a while to climb). Fed the interruption alone
  (Piper's voice through mu-law, as the bot receives it), the VAD says "speaking" 0.35 s after
  its first voiced 10 ms with Pipecat's defaults; 0.23 s with ``min_volume`` 0; 0.13 s with
  ``vad_start_secs`` 0.1 and ``min_volume`` 0. So the 0.25 s target needs a shorter start
  time and a lower volume gate (at the price of coughs and background voices interrupting
  the bot), and ``barge_in=min_words`` adds the STT's time on top;
- then the ``InterruptionFrame`` crosses the pipeline, the output transport drops its queued
  audio and the serializer sends ``clear``: milliseconds;
- the output transport sends 40 ms chunks paced in real time (send, then wait the chunk's
  length), so at most about one chunk is on its way when the clear leaves.

**False cut-offs.** Each call says one sentence with a natural mid-sentence pause
(``PAUSED_UTTERANCES``: two halves synthesized apart and joined by ``pause`` seconds of
silence). A false cut-off is the bot starting to answer before the caller's second half
ended: its first voiced audio, or a chat request at the LLM stand-in, before the end of the
second half. The rate, per system and per pause length, is the behaviour guard for every
latency optimization of the end of turn (VAD stop time, smart-turn): rerun it with MindBot's
audio settings changed (``--set vad_stop_secs=0.1``) and compare with bare Pipecat, which keeps
Pipecat's defaults (Silero VAD, smart-turn v3). ``--sentences held-out`` says
``HELD_OUT_PAUSED_UTTERANCES`` instead, sentences written after the end-of-turn text check
(``mindbot.turn_text``) was tuned on the first set.

Profiles: ``cloud``, the Deepgram and Cartesia stand-ins of ``mindbot.bench.cloud_profile``
with the providers' published latencies injected (Deepgram is handed the words the caller
says, so its timing is the injected one); ``offline``, the packaged Whisper and Piper. In both
the LLM is a scripted OpenAI-compatible stand-in (``CloudLatencies.llm_first_token`` to its
first token) that notes when each request arrived: what is measured is turn taking, and a
local LLM's answer would change nothing but the run time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shlex
import sys
import tempfile
import time
import wave
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from loguru import logger

from mindbot.audio import (
    SILENCE_RMS,
    first_voiced_offset,
    last_voiced_end,
    resample,
    window_rms,
)
from mindbot.audio_settings import AudioSettings
from mindbot.callsim import RATE, PhoneCall
from mindbot.config import Settings
from mindbot.errors import ConfigError

if TYPE_CHECKING:
    from mindbot.runtime import MindBot, PipelineRun

# The benchmark machinery (mindbot.bench, mindbot.command_bench, Pipecat) is imported where it
# is used: the `mindbot` command builds its parser from this module on every run.

INTERRUPTION = "I have a different question about the weather."
"""What the caller says over the bot: no voice command, no comma (Piper pauses at commas)."""

PAUSED_UTTERANCES: list[tuple[str, str]] = [
    ("I would like to book a table for", "four people tomorrow evening"),
    ("Can you remind me to call the", "dentist tomorrow morning"),
    ("What is the weather going to be like in", "Chicago this weekend"),
    ("I need to move my appointment because", "I have to work late on Friday"),
    ("Can you find me a flight from Boston to", "Denver next Monday"),
    ("My order number is", "four five seven two nine"),
    ("I was wondering if you could help me find", "a good Italian restaurant nearby"),
    ("Please add milk and eggs and", "a loaf of bread to my shopping list"),
    ("I want to send a message to", "my brother about the party"),
    ("I bought a new phone last week and the", "screen is already cracked"),
]
"""Sentences people pause in the middle of, split where the pause falls: after a preposition,
an article, a conjunction or before a number, where a speaker looks for the next word."""

HELD_OUT_PAUSED_UTTERANCES: list[tuple[str, str]] = [
    ("Could you tell me how long it takes to drive to", "the airport from here"),
    ("I'd like to cancel my subscription to", "the weekly newsletter"),
    ("The package was supposed to arrive on", "Tuesday but it never came"),
    ("Set an alarm for", "six thirty tomorrow morning"),
    ("Remind me to water the plants", "every Sunday evening"),
    ("What's the best way to get from the station to", "the museum"),
    ("I'm looking for a recipe that uses", "chicken and rice"),
    ("Can you play some music by", "the Beatles"),
    ("My flight got delayed so I", "need a later hotel check in"),
    ("Please turn off the lights in the", "living room"),
]
"""More paused sentences, written after the end-of-turn text check's thresholds were set on
``PAUSED_UTTERANCES`` (``mindbot.turn_text``), so its cut-off rate on these is a held-out
figure. One first half is a finished sentence ("Remind me to water the plants"), where no
text check can tell a pause from an end."""

SENTENCE_SETS = {
    "tuning": PAUSED_UTTERANCES,
    "held-out": HELD_OUT_PAUSED_UTTERANCES,
    "all": PAUSED_UTTERANCES + HELD_OUT_PAUSED_UTTERANCES,
}

DEFAULT_PAUSES = (0.6, 0.9, 1.2)
"""Silence (seconds) put between the two halves of each sentence."""

WINDOW_SECS = 0.01
"""The measurement's resolution: speech is found in 10 ms windows (``mindbot.audio``)."""

REPLY_TIMEOUT = 15.0
"""How long a caller waits for the bot to speak (the greeting, an answer)."""

SYSTEMS = ("mindbot", "bare")
BENCH_KEY = "bench-key"
_M = TypeVar("_M")


class NotMeasured(Exception):
    """A call did not go as the benchmark needs (e.g. the bot was not speaking)."""


# --- Settings -----------------------------------------------------------------------------------


def audio_overrides(pairs: list[str]) -> dict[str, Any]:
    """MindBot's audio settings from ``--set KEY=VALUE`` pairs.

    A key is an ``AudioSettings`` field, written as the field (``vad_stop_secs``), as in YAML
    (``audio.vad_stop_secs``) or as its variable (``MINDBOT_AUDIO__VAD_STOP_SECS``). A value is
    read as JSON when it can be (numbers, ``true``, lists), else kept as text (``min_words``);
    ``Settings.load`` validates it.

    Raises:
        ConfigError: A pair has no ``=`` or names no audio setting.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name = key.strip().lower().removeprefix("mindbot_")
        for prefix in ("audio__", "audio."):
            name = name.removeprefix(prefix)
        if not sep or name not in AudioSettings.model_fields:
            known = ", ".join(AudioSettings.model_fields)
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with KEY one of: {known}")
        try:
            overrides[name] = json.loads(value)
        except ValueError:
            overrides[name] = value.strip()
    return overrides


# --- Services -----------------------------------------------------------------------------------


class _TimedReplies:
    """The LLM stand-in's reply, noting when each streamed chat request arrived."""

    def __init__(self, reply: str):
        from mindbot.standins import Text

        self.reply = Text(reply)
        self.times: list[float] = []
        """``time.monotonic()`` of each streamed request."""
        self.user_turns: list[int] = []
        """How many user messages each streamed request's context held."""

    def __call__(self, body: dict[str, Any]) -> Any:
        if body.get("stream"):
            self.times.append(time.monotonic())
            messages = body.get("messages") or []
            self.user_turns.append(sum(m.get("role") == "user" for m in messages))
        return self.reply


@dataclass
class _Systems:
    """A running benchmark: the profile's stand-ins, MindBot, and both systems' servers."""

    profile: str
    llm: _TimedReplies
    expect: Callable[[list[str]], None]
    """Tell the STT stand-in what the caller will say next (a no-op offline)."""
    bot: MindBot
    urls: dict[str, str] = field(default_factory=dict)
    """Each system's Twilio websocket URL, by name (``SYSTEMS``)."""
    deepgram: Any = None
    """The cloud profile's Deepgram stand-in (``None`` offline)."""

    async def alternate(
        self, count: int, warmup: int, call: Callable[[str, int], Awaitable[_M]]
    ) -> AsyncIterator[tuple[str, _M | Exception]]:
        """Run ``call(url, n)`` for n in range(warmup + count), each n on every system in turn.

        Yields:
            ``(system, measurement)`` of each call after the first ``warmup`` rounds, or
            ``(system, error)`` for a call that timed out or could not be measured.
        """
        for n in range(warmup + count):
            for system, url in self.urls.items():
                try:
                    outcome: _M | Exception = await call(url, n)
                except (TimeoutError, NotMeasured) as e:
                    logger.warning(f"bench: a {system} call was not measured: {e}")
                    outcome = e
                if n >= warmup:
                    yield system, outcome


@asynccontextmanager
async def _systems(
    profile: str,
    reply: str,
    run: PipelineRun,
    audio: dict[str, Any],
    make_settings: Callable[..., Settings],
) -> AsyncIterator[_Systems]:
    """The profile's stand-ins, a started MindBot on them and both systems' servers.

    The LLM stand-in answers ``reply`` and notes when each request arrived. MindBot runs
    with memory off (it would learn between calls and ask the LLM stand-in for summaries) and
    no idle prompt (it would speak into a pause).
    """
    from mindbot.bench import CloudLatencies, cloud_profile
    from mindbot.runtime import MindBot
    from mindbot.standins import ScriptedLLMServer

    if profile not in ("cloud", "offline"):
        raise ConfigError(f"unknown profile {profile!r}: cloud or offline")
    latencies = CloudLatencies()
    timed = _TimedReplies(reply)
    async with AsyncExitStack() as stack:
        llm = await stack.enter_async_context(
            ScriptedLLMServer(
                default_reply=timed, first_token_delay=latencies.llm_first_token, token_delay=0.01
            )
        )
        settings: dict[str, Any] = {
            "llm": "openai",
            "openai_api_key": BENCH_KEY,
            "llm_base_url": llm.base_url,
            "llm_model": "gpt-bench",
            "memory": False,
            "user_idle_secs": 0,
            "audio": audio,
        }
        if profile == "cloud":
            cloud = await stack.enter_async_context(cloud_profile(latencies, reply=reply))
            settings = {**cloud.settings, **settings, "stt": "deepgram", "tts": "cartesia"}
            name, expect = "cloud stand-ins (Deepgram, Cartesia; scripted LLM)", cloud.expect
            deepgram = cloud.deepgram
        else:
            settings |= {"stt": "whisper", "tts": "piper"}
            name, expect = "offline (Whisper, Piper; scripted LLM)", _no_words
            deepgram = None
        bot = MindBot(make_settings(**settings))
        await asyncio.to_thread(bot.start)
        stack.push_async_callback(asyncio.to_thread, bot.stop)
        systems = _Systems(name, timed, expect, bot, deepgram=deepgram)
        systems.urls = await stack.enter_async_context(_serving(bot, run))
        yield systems


def _no_words(_utterances: list[str]) -> None:
    """The offline profile's STT hears the audio itself."""


@asynccontextmanager
async def _serving(bot: MindBot, run: PipelineRun) -> AsyncIterator[dict[str, str]]:
    """MindBot and bare Pipecat, each on its own server thread; yields their websocket URLs.

    The servers start and stop in a worker thread: the stand-ins they talk to run on this loop.
    """
    from mindbot.bench import _LatencyLog, _ThreadedServer, bare_pipecat_app
    from mindbot.harness import free_port
    from mindbot.server import create_app

    instruction = bot.personas.get(bot.settings.persona).system_instruction()
    apps = {
        "mindbot": create_app(bot, run),
        "bare": bare_pipecat_app(bot, _LatencyLog(), instruction),
    }
    servers = {
        name: _ThreadedServer(app, free_port(), bot.settings, bare=name == "bare")
        for name, app in apps.items()
    }
    started = []
    try:
        for server in servers.values():
            started.append(await asyncio.to_thread(server.__enter__))
        yield {name: server.url for name, server in servers.items()}
    finally:
        for server in started:
            await asyncio.to_thread(server.__exit__)


async def _speech(text: str, cache_dir: Path | None) -> bytes:
    """``text`` in the caller's voice, as 8 kHz 16-bit PCM (the call's own rate).

    ``cache_dir`` ``None`` is the call simulator's cache (``harness.DEFAULT_VOICE_CACHE``).
    """
    from mindbot.harness import DEFAULT_VOICE_CACHE
    from mindbot.speech import synthesize

    cache_dir = cache_dir or DEFAULT_VOICE_CACHE
    pcm, rate = await asyncio.to_thread(synthesize, text, cache_dir=cache_dir)
    return resample(pcm, rate, RATE)


def _channels(recording: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The caller and bot channels of a call's two-channel recording."""
    with wave.open(io.BytesIO(recording), "rb") as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    stereo = frames.reshape(-1, 2)
    return stereo[:, 0].copy(), stereo[:, 1].copy()


def _first_voiced(channel: np.ndarray, after: float) -> float | None:
    """Seconds from the call's start to the first voiced 10 ms of ``channel`` after ``after``."""
    start = max(0, int(after * RATE))
    offset = first_voiced_offset(channel[start:].tobytes(), RATE)
    return None if offset is None else start / RATE + offset


# --- Barge-in -----------------------------------------------------------------------------------


@dataclass
class BargeIn:
    """One interruption, in seconds from its first voiced sample (``None``: did not happen)."""

    system: str
    clear: float | None
    audio: float | None
    silent: float | None
    """When the caller stopped hearing the bot; ``None`` without a ``clear`` (the buffered
    audio would go on playing)."""


def measure_bargein(
    recording: bytes, clears: list[float], *, after: float, system: str = ""
) -> BargeIn:
    """Time an interruption from a call's recording and the ``clear`` messages it received.

    Args:
        recording: The call's two-channel WAV (``PhoneCall.recording()``).
        clears: Arrival times (seconds from the call's start) of the ``clear`` messages.
        after: A time after the caller's question and before the interruption (e.g. the
            start of the bot's answer): the caller's first voiced audio after it starts the
            interruption, and only ``clear`` messages after it count.
        system: Which system answered the call.

    Raises:
        NotMeasured: The caller never spoke after ``after``, or the bot was not speaking then.
    """
    from mindbot.command_bench import CHUNK_SECS, _speech_end

    caller, bot = _channels(recording)
    onset = _first_voiced(caller, after)
    if onset is None:
        raise NotMeasured("the caller did not interrupt")
    audio_end = _speech_end(bot, onset)
    if audio_end is None:
        raise NotMeasured("the bot was not speaking when the caller interrupted")
    clear = min((at for at in clears if at >= after), default=None)
    if clear is None:
        silent = None
    elif audio_end <= clear:
        # The bot stopped sending before the clear (MindBot's barge-in pause): the transport
        # paces its audio in real time, so what had arrived was all Twilio had to play.
        silent = audio_end
    else:
        # A chunk that arrived before the clear ends up to CHUNK_SECS after it, plus one
        # 10 ms window of the measurement's own rounding; the clear dropped it from Twilio's
        # buffer. Audio ending later still came after the clear, and was heard.
        dropped = audio_end <= clear + CHUNK_SECS + WINDOW_SECS
        silent = clear if dropped else audio_end
    return BargeIn(
        system=system,
        clear=None if clear is None else clear - onset,
        audio=audio_end - onset,
        silent=None if silent is None else silent - onset,
    )


@dataclass
class BargeInResult:
    """Every measured interruption and every call that could not be measured."""

    profile: str
    audio_settings: dict[str, Any] = field(default_factory=dict)
    """MindBot's audio settings in this run (bare Pipecat keeps Pipecat's defaults)."""
    barge_ins: list[BargeIn] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """p50/p95 in milliseconds per system, the MindBot/bare ratios, the counts."""
        from mindbot.bench import _pct
        from mindbot.command_bench import _ms

        systems: dict[str, Any] = {}
        for system in SYSTEMS:
            mine = [b for b in self.barge_ins if b.system == system]
            figures: dict[str, Any] = {
                "calls": len(mine),
                "failures": sum(f["system"] == system for f in self.failures),
                "no_clear": sum(b.clear is None for b in mine),
            }
            for name in ("silent", "clear", "audio"):
                values = [getattr(b, name) for b in mine if getattr(b, name) is not None]
                figures[f"{name}_ms_p50"] = _ms(_pct(values, 50))
                figures[f"{name}_ms_p95"] = _ms(_pct(values, 95))
            systems[system] = figures
        mindbot, bare = systems["mindbot"], systems["bare"]
        ratios = {
            key: round(mindbot[key] / bare[key], 2) if mindbot[key] and bare[key] else None
            for key in mindbot
            if key.endswith(("_p50", "_p95"))
        }
        return {"profile": self.profile, "systems": systems, "ratios": ratios}

    def as_dict(self) -> dict[str, Any]:
        """The summary, the raw timings and the failures (for ``record_json``)."""
        return {
            "summary": self.summary(),
            "audio_settings": self.audio_settings,
            "barge_ins": [asdict(b) for b in self.barge_ins],
            "failures": self.failures,
        }


async def run_bargein_bench(
    run: PipelineRun,
    *,
    profile: str = "cloud",
    calls: int = 10,
    warmup_calls: int = 1,
    talk_secs: float = 1.0,
    settle_secs: float = 1.0,
    audio: dict[str, Any] | None = None,
    make_settings: Callable[..., Settings] = Settings.load,
    cache_dir: Path | None = None,
) -> BargeInResult:
    """Place ``calls`` calls to each system, alternating, in which the caller barges in.

    Args:
        run: MindBot's pipeline (bare Pipecat is built from the same services).
        profile: ``cloud`` or ``offline`` (see the module docstring).
        calls: Measured calls per system.
        warmup_calls: Unmeasured calls per system first, so no figure pays for first use.
        talk_secs: How long the bot talks before the caller starts talking over it.
        settle_secs: How long the caller listens after the interruption.
        audio: MindBot's audio settings to change (``audio_overrides``).
        make_settings: Builds MindBot's settings from overrides (``Settings.load``).
        cache_dir: Where synthesized caller utterances are cached (default: the call
            simulator's cache).
    """
    from mindbot.command_bench import LONG_REPLY, QUESTION

    question = await _speech(QUESTION, cache_dir)
    interruption = await _speech(INTERRUPTION, cache_dir)
    async with _systems(profile, LONG_REPLY, run, audio or {}, make_settings) as systems:
        result = BargeInResult(systems.profile, systems.bot.settings.audio.model_dump())

        async def call(url: str, n: int) -> BargeIn:
            systems.expect([QUESTION, INTERRUPTION])
            return await _bargein_call(url, question, interruption, talk_secs, settle_secs, n)

        async for system, outcome in systems.alternate(calls, warmup_calls, call):
            if isinstance(outcome, Exception):
                result.failures.append({"system": system, "why": str(outcome)})
                continue
            outcome.system = system
            result.barge_ins.append(outcome)
            print(f"  {_bargein_line(outcome)}", flush=True)
    return result


async def _bargein_call(
    url: str, question: bytes, interruption: bytes, talk_secs: float, settle_secs: float, n: int
) -> BargeIn:
    onset = first_voiced_offset(interruption, RATE) or 0.0
    async with PhoneCall(url, from_number=f"+1555300{n:04d}") as call:
        await call.wait_for_bot_speech(timeout=REPLY_TIMEOUT)
        asked = await call.say(question, RATE)
        reply = await call.wait_for_bot_speech(after=asked, quiet=0, timeout=REPLY_TIMEOUT)
        await asyncio.sleep(max(0.0, reply.start + talk_secs - onset - call.now()))
        await call.say(interruption, RATE)
        await asyncio.sleep(settle_secs)
        clears = call.clears_between(reply.start, call.now())
        recording = call.recording()
    return measure_bargein(recording, clears, after=reply.start)


def _bargein_line(b: BargeIn) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f} ms"

    return f"{b.system:8s} silent {ms(b.silent)} (clear {ms(b.clear)}, audio {ms(b.audio)})"


def format_bargein_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of a barge-in benchmark's summary."""
    m, b, ratios = summary["systems"]["mindbot"], summary["systems"]["bare"], summary["ratios"]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    lines = [
        f"profile {summary['profile']}: {m['calls']} MindBot calls ({m['failures']} not "
        f"measured), {b['calls']} bare Pipecat calls ({b['failures']} not measured)",
        f"{'from the interruption onset to':36s}{'MindBot':>10s}{'bare':>10s}{'ratio':>8s}",
    ]
    for label, key in (
        ("bot silent for the caller", "silent"),
        ("Twilio clear received", "clear"),
        ("last bot audio received", "audio"),
    ):
        for pct in ("p50", "p95"):
            figure = f"{key}_ms_{pct}"
            ratio = ratios.get(figure)
            lines.append(
                f"{f'{label} {pct}':36s}{cell(m[figure]):>10s}{cell(b[figure]):>10s}"
                f"{(f'{ratio:.2f}' if ratio else '-'):>8s}"
            )
    if m["no_clear"] or b["no_clear"]:
        lines.append(f"calls without a clear: MindBot {m['no_clear']}, bare {b['no_clear']}")
    lines.append("target (issue 7): the bot silent within 250 ms of the caller starting to talk")
    return "\n".join(lines)


# --- False cut-offs -----------------------------------------------------------------------------


@dataclass
class PausedSpeech:
    """A sentence with a pause in it, as the caller sends it, and where its halves lie.

    Args:
        index: The sentence's place in ``PAUSED_UTTERANCES``.
        pause: The silence (seconds) put between the halves.
        pcm: The whole sentence, 8 kHz 16-bit PCM.
        first_end: Seconds from the start of ``pcm`` to the end of the first half's speech.
        second_start: ... to the start of the second half's speech.
        second_end: ... to the end of the second half's speech.
    """

    index: int
    pause: float
    pcm: bytes
    first_end: float
    second_start: float
    second_end: float

    @property
    def gap(self) -> float:
        """The silence between the halves' speech (the pause plus Piper's own edges)."""
        return self.second_start - self.first_end


def paused_speech(index: int, first: bytes, second: bytes, pause: float) -> PausedSpeech:
    """Join two 8 kHz halves with ``pause`` seconds of silence.

    Raises:
        ValueError: A half holds no speech.
    """
    first_end = last_voiced_end(first, RATE)
    second_start = first_voiced_offset(second, RATE)
    second_end = last_voiced_end(second, RATE)
    if first_end is None or second_start is None or second_end is None:
        raise ValueError("a half of the sentence holds no speech")
    silence = b"\x00\x00" * int(pause * RATE)
    offset = (len(first) + len(silence)) / 2 / RATE
    return PausedSpeech(
        index=index,
        pause=pause,
        pcm=first + silence + second,
        first_end=first_end,
        second_start=offset + second_start,
        second_end=offset + second_end,
    )


@dataclass
class CutOff:
    """How the bot took one paused sentence; times in seconds from the end of its second half
    (negative: before the caller finished)."""

    system: str
    utterance: int
    pause: float
    gap: float
    cut_off: bool
    bot_audio: float | None
    """The bot's first voiced audio after the sentence began (``None``: it never spoke)."""
    llm_request: float | None
    """The first chat request after the sentence began (``None``: none)."""
    split: bool = False
    """The first half became a user turn of its own (a later request's context holds the
    sentence as two user messages)."""


def judge_cutoff(
    recording: bytes,
    llm_requests: list[float],
    speech: PausedSpeech,
    *,
    began: float,
    system: str = "",
    user_turns: list[int] | None = None,
) -> CutOff:
    """Whether the bot started answering a paused sentence before the caller finished it.

    Either the bot's voice came before the end of the sentence, or the first half was taken
    as a turn of its own: some chat request's context holds the sentence as two user
    messages. A chat request during the pause alone is not enough: MindBot asks the LLM
    speculatively while smart-turn waits (``mindbot.speculation``) and withdraws the answer
    when the caller goes on.

    Args:
        recording: The call's two-channel WAV (``PhoneCall.recording()``).
        llm_requests: When chat requests reached the LLM (seconds from the call's start).
        speech: The sentence the caller said.
        began: When the caller began sending it (seconds from the call's start); bot audio
            and requests before it belong to earlier turns.
        system: Which system answered the call.
        user_turns: How many user messages each request's context held (parallel to
            ``llm_requests``); the call's only user speech is this sentence.
    """
    ended = began + speech.second_end
    _, bot = _channels(recording)
    voiced = np.nonzero(window_rms(bot.tobytes(), RATE) > SILENCE_RMS)[0] / 100
    bot_at = next((float(t) for t in voiced if t >= began), None)
    llm_at = min((t for t in llm_requests if t >= began), default=None)
    counts = user_turns or []
    split = any(n >= 2 for t, n in zip(llm_requests, counts, strict=False) if t >= began)
    return CutOff(
        system=system,
        utterance=speech.index,
        pause=speech.pause,
        gap=round(speech.gap, 3),
        cut_off=split or (bot_at is not None and bot_at < ended),
        bot_audio=None if bot_at is None else round(bot_at - ended, 3),
        llm_request=None if llm_at is None else round(llm_at - ended, 3),
        split=split,
    )


@dataclass
class CutOffResult:
    """Every paused sentence each system took, and the calls that could not be judged."""

    profile: str
    audio_settings: dict[str, Any] = field(default_factory=dict)
    """MindBot's audio settings in this run (bare Pipecat keeps Pipecat's defaults)."""
    utterances: list[str] = field(default_factory=list)
    """The sentences said, the pause shown as "...", by ``CutOff.utterance``."""
    cutoffs: list[CutOff] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """False cut-off rates per system, overall and per pause length."""
        systems: dict[str, Any] = {}
        for system in SYSTEMS:
            mine = [c for c in self.cutoffs if c.system == system]
            by_pause: dict[float, list[CutOff]] = defaultdict(list)
            for c in mine:
                by_pause[c.pause].append(c)
            systems[system] = {
                "sentences": len(mine),
                "failures": sum(f["system"] == system for f in self.failures),
                "rate": _rate(mine),
                "cut_offs": sum(c.cut_off for c in mine),
                "split_only": sum(
                    c.cut_off and (c.bot_audio is None or c.bot_audio >= 0) for c in mine
                ),
                "unanswered": sum(c.bot_audio is None for c in mine),
                "by_pause": {
                    f"{pause:g}": {
                        "sentences": len(cs),
                        "cut_offs": sum(c.cut_off for c in cs),
                        "rate": _rate(cs),
                    }
                    for pause, cs in sorted(by_pause.items())
                },
            }
        mindbot, bare = systems["mindbot"]["rate"], systems["bare"]["rate"]
        return {
            "profile": self.profile,
            "systems": systems,
            "not_worse_than_bare": None if mindbot is None or bare is None else mindbot <= bare,
        }

    def as_dict(self) -> dict[str, Any]:
        """The summary, every sentence's outcome and the failures (for ``record_json``)."""
        return {
            "summary": self.summary(),
            "audio_settings": self.audio_settings,
            "utterances": self.utterances,
            "cutoffs": [asdict(c) for c in self.cutoffs],
            "failures": self.failures,
        }


def _rate(cutoffs: list[CutOff]) -> float | None:
    return round(sum(c.cut_off for c in cutoffs) / len(cutoffs), 3) if cutoffs else None


async def run_cutoff_bench(
    run: PipelineRun,
    *,
    profile: str = "cloud",
    pauses: tuple[float, ...] = DEFAULT_PAUSES,
    utterances: int | None = None,
    sentences: str = "tuning",
    filler: str = "",
    warmup_calls: int = 1,
    audio: dict[str, Any] | None = None,
    make_settings: Callable[..., Settings] = Settings.load,
    cache_dir: Path | None = None,
) -> CutOffResult:
    """Say each paused sentence at each pause length to each system, alternating.

    Args:
        run: MindBot's pipeline (bare Pipecat is built from the same services).
        profile: ``cloud`` or ``offline`` (see the module docstring).
        pauses: The pause lengths, in seconds.
        utterances: Use only the first this many sentences (default: all).
        sentences: Which sentences: ``tuning`` (``PAUSED_UTTERANCES``), ``held-out``
            (``HELD_OUT_PAUSED_UTTERANCES``) or ``all``.
        filler: A hesitation said at the end of each first half (e.g. ``um``), as people
            often do when they pause to find a word; none by default.
        warmup_calls: Unmeasured calls per system first, so no figure pays for first use.
        audio: MindBot's audio settings to change (``audio_overrides``).
        make_settings: Builds MindBot's settings from overrides (``Settings.load``).
        cache_dir: Where synthesized caller utterances are cached (default: the call
            simulator's cache).
    """
    from mindbot.bench import CLOUD_REPLY

    chosen = [
        (f"{first} {filler}" if filler else first, second)
        for first, second in SENTENCE_SETS[sentences][:utterances]
    ]
    halves = [(await _speech(a, cache_dir), await _speech(b, cache_dir)) for a, b in chosen]
    paused = [
        paused_speech(i, first, second, pause)
        for pause in pauses
        for i, (first, second) in enumerate(halves)
    ]
    async with _systems(profile, CLOUD_REPLY, run, audio or {}, make_settings) as systems:
        result = CutOffResult(
            systems.profile,
            systems.bot.settings.audio.model_dump(),
            [" ... ".join(u) for u in chosen],
        )

        async def call(url: str, n: int) -> CutOff:
            speech = paused[max(0, n - warmup_calls)]
            systems.expect(list(chosen[speech.index]))
            return await _cutoff_call(url, speech, systems.llm, n)

        async for system, outcome in systems.alternate(len(paused), warmup_calls, call):
            if isinstance(outcome, Exception):
                result.failures.append({"system": system, "why": str(outcome)})
                continue
            outcome.system = system
            result.cutoffs.append(outcome)
            print(f"  {_cutoff_line(outcome)}", flush=True)
    return result


async def _cutoff_call(url: str, speech: PausedSpeech, llm: _TimedReplies, n: int) -> CutOff:
    async with PhoneCall(url, from_number=f"+1555400{n:04d}") as call:
        await call.wait_for_bot_speech(timeout=REPLY_TIMEOUT)
        ended = await call.say(speech.pcm, RATE)
        began = ended - speech.second_end
        try:
            await call.wait_for_bot_speech(after=ended, quiet=0, timeout=REPLY_TIMEOUT)
        except TimeoutError:
            pass  # no answer after the sentence: judged on what came before
        t0 = time.monotonic() - call.now()
        recording = call.recording()
    requests = [at - t0 for at in llm.times]
    return judge_cutoff(recording, requests, speech, began=began, user_turns=llm.user_turns)


def _cutoff_line(c: CutOff) -> str:
    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:+.2f} s"

    verdict = "CUT OFF" if c.cut_off else "waited"
    return (
        f"{c.system:8s} sentence {c.utterance} pause {c.pause:g} s: {verdict} "
        f"(LLM request {s(c.llm_request)}, bot audio {s(c.bot_audio)} from the end)"
    )


def format_cutoff_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of a false cut-off benchmark's summary."""
    m, b = summary["systems"]["mindbot"], summary["systems"]["bare"]

    def cell(figures: dict[str, Any]) -> str:
        rate = figures.get("rate")
        if rate is None:
            return "-"
        return f"{rate:.0%} ({figures['cut_offs']}/{figures['sentences']})"

    lines = [
        f"profile {summary['profile']}: false cut-offs (the bot answering before the caller "
        "finished a sentence with a pause in it)",
        f"{'pause':20s}{'MindBot':>16s}{'bare':>16s}",
    ]
    for pause in dict.fromkeys([*m["by_pause"], *b["by_pause"]]):
        lines.append(
            f"{pause + ' s':20s}{cell(m['by_pause'].get(pause, {})):>16s}"
            f"{cell(b['by_pause'].get(pause, {})):>16s}"
        )
    lines.append(f"{'all':20s}{cell(m):>16s}{cell(b):>16s}")
    lines.append(
        f"cut off with no bot audio before the end (the first half taken as a turn, its answer "
        f"interrupted): MindBot {m['split_only']}, bare {b['split_only']}; never answered: "
        f"MindBot {m['unanswered']}, bare {b['unanswered']}"
    )
    if m["failures"] or b["failures"]:
        lines.append(f"calls not judged: MindBot {m['failures']}, bare {b['failures']}")
    verdict = summary["not_worse_than_bare"]
    lines.append(
        "MindBot not worse than bare Pipecat: "
        + ("-" if verdict is None else "yes" if verdict else "NO")
    )
    return "\n".join(lines)


# --- The command line ---------------------------------------------------------------------------


def add_turn_benches(benches: argparse._SubParsersAction) -> None:
    """Add ``bargein``, ``cutoff`` and ``falsebargein`` to the ``mindbot bench`` subcommands."""
    bargein = benches.add_parser(
        "bargein", help="how fast the bot falls silent when the caller talks over it"
    )
    _common_arguments(bargein)
    bargein.add_argument("--calls", type=int, default=10, help="measured calls per system")
    bargein.add_argument(
        "--talk-secs", type=float, default=1.0, help="how long the bot talks before the caller"
    )
    bargein.set_defaults(handler=_bench_bargein)

    cutoff = benches.add_parser(
        "cutoff", help="false cut-offs: the bot answering into a caller's mid-sentence pause"
    )
    _common_arguments(cutoff)
    cutoff.add_argument(
        "--pauses",
        default=",".join(f"{p:g}" for p in DEFAULT_PAUSES),
        help="pause lengths in seconds, comma-separated",
    )
    cutoff.add_argument(
        "--utterances",
        type=int,
        default=None,
        help="use the first N sentences of the set",
    )
    cutoff.add_argument(
        "--sentences",
        choices=sorted(SENTENCE_SETS),
        default="tuning",
        help=f"which paused sentences: tuning ({len(PAUSED_UTTERANCES)}, the default), "
        f"held-out ({len(HELD_OUT_PAUSED_UTTERANCES)}, written after the end-of-turn text "
        "check was tuned), or all",
    )
    cutoff.add_argument(
        "--filler", default="", help="a hesitation at the end of each first half, e.g. um"
    )
    cutoff.set_defaults(handler=_bench_cutoff)
    from mindbot.falsebargein_bench import add_falsebargein_bench

    add_falsebargein_bench(benches)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", nargs="?", default="assistant")
    parser.add_argument(
        "--profile",
        choices=["cloud", "offline"],
        default="cloud",
        help="cloud: Deepgram and Cartesia stand-ins with published latencies; offline: "
        "Whisper and Piper (the LLM is a scripted stand-in in both)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured calls per system")
    parser.add_argument(
        "--set",
        dest="audio",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a MindBot audio setting for this run, e.g. vad_stop_secs=0.1 (repeatable); "
        "bare Pipecat keeps Pipecat's defaults",
    )
    parser.add_argument("--json", help="write the results to this file")


def run_bench_command(
    args: argparse.Namespace,
    bench: Callable[..., Awaitable[Any]],
    format_summary: Callable[[dict[str, Any]], str],
    **options: Any,
) -> None:
    """Run a turn bench from its command line (``_common_arguments``): MindBot's pipeline with
    the ``--set`` audio settings on scratch data, then print the summary and write ``--json``.

    Args:
        args: The parsed command line.
        bench: The bench's ``run_..._bench`` coroutine function.
        format_summary: Formats the result's ``summary()``.
        **options: The bench's own arguments.
    """
    from mindbot.cli import load_pipeline

    audio = audio_overrides(args.audio)
    run = load_pipeline(args.pipeline)
    with _scratch_settings() as make_settings:
        result = asyncio.run(
            bench(
                run,
                profile=args.profile,
                warmup_calls=args.warmup,
                audio=audio,
                make_settings=make_settings,
                **options,
            )
        )
    print(format_summary(result.summary()))
    _write(args, result.as_dict())


def _bench_bargein(args: argparse.Namespace) -> None:
    run_bench_command(
        args,
        run_bargein_bench,
        format_bargein_summary,
        calls=args.calls,
        talk_secs=args.talk_secs,
    )


def _bench_cutoff(args: argparse.Namespace) -> None:
    try:
        pauses = tuple(float(p) for p in args.pauses.split(",") if p.strip())
    except ValueError:
        raise ConfigError(f"--pauses {args.pauses!r}: expected seconds, e.g. 0.6,0.9") from None
    run_bench_command(
        args,
        run_cutoff_bench,
        format_cutoff_summary,
        pauses=pauses,
        utterances=args.utterances,
        sentences=args.sentences,
        filler=args.filler,
    )


@contextmanager
def _scratch_settings() -> Iterator[Callable[..., Settings]]:
    """``Settings.load`` with the data in a scratch folder: bench calls are not real users."""
    from mindbot.logs import configure_logging

    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="mindbot-bench-") as scratch:
        yield lambda **overrides: Settings.load(**overrides, data_dir=Path(scratch))


def _write(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from mindbot.bench import record_json

    if args.json:
        command = shlex.join(["mindbot", *sys.argv[1:]])
        record_json(Path(args.json), command=command, bench=args.bench, **results)
        print(f"wrote {args.json}")
