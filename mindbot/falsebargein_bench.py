"""``mindbot bench falsebargein``: how often a sound that is not speech interrupts the bot.

A faster VAD (``audio.vad_start_secs``, ``audio.vad_min_volume``) silences the bot sooner when
the caller talks over it (``mindbot bench bargein``, issue 7), and may also let a cough or a
door knock cut the bot off mid-answer. This benchmark counts those false barge-ins, so the two
are weighed together before a faster VAD becomes the default.

Each call goes as in ``mindbot bench bargein`` (``mindbot.turn_bench``): the caller asks for a
long story and, about ``talk_secs`` into the answer, makes ONE sound that is not words (a
cough, a knock, keyboard typing, a television in the room: ``SOUNDS``), then listens
``settle_secs`` more. Calls alternate between MindBot and a bare Pipecat bot on the same
services; ``--set`` changes MindBot's audio settings only (bare Pipecat keeps Pipecat's
defaults, which MindBot's defaults equal). Judged from the call's two-channel recording, from
the onset of the sound (its first audible 10 ms as the caller sent it):

- a false barge-in is a Twilio ``clear`` after the onset, or the bot's audio stopping within
  ``STOP_WINDOW_SECS`` of it for good (the scripted answer is far longer than the call);
- a pause is the bot's audio stopping and going on within ``RESUME_WINDOW_SECS``, with no
  clear between: MindBot's barge-in pause (``mindbot.barge_in``) on a false alarm, counted
  apart (what it costs the caller is a gap in the bot's speech, not its answer);
- a turn is a chat request reaching the LLM after the onset: the bot took the sound for words.

The sounds are synthesized with numpy from fixed seeds (the television is the Piper voice,
20 dB down), so every run plays the same audio. What is measured is the VAD's share: in the
cloud profile the Deepgram stand-in finds no words in the sound (it is deaf while the sound
plays, as Deepgram finds none in a cough; a real recognizer may transcribe the television),
because its fallback transcriber, Whisper tiny.en, hears "Okay." in a noise burst and that
transcript would interrupt both systems whatever their VAD settings. The offline profile's
Whisper hears everything, hallucinations included.

Fed to Pipecat's Silero VAD alone (through mu-law, at 16 kHz), the noise bursts (cough,
knock, breath, typing) never pass 0.15 confidence, so only the speech-like sounds can start a
turn: the throat clear (glottal pulses) and the television. A real cough often opens with a
voiced burst that the synthesized one lacks: these figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mindbot.audio import first_voiced_offset
from mindbot.callsim import RATE, PhoneCall
from mindbot.config import Settings
from mindbot.errors import ConfigError
from mindbot.turn_bench import (
    REPLY_TIMEOUT,
    SYSTEMS,
    NotMeasured,
    _channels,
    _common_arguments,
    _speech,
    _Systems,
    _systems,
    run_bench_command,
)

if TYPE_CHECKING:
    from mindbot.runtime import PipelineRun

# Like mindbot.turn_bench, this module is imported to build the `mindbot` command's parser:
# the benchmark machinery (mindbot.bench, mindbot.command_bench, Pipecat) is imported where used.

STOP_WINDOW_SECS = 1.0
"""Bot audio ending this soon after the sound's onset was cut off by it."""

RESUME_WINDOW_SECS = 2.0
"""Bot audio starting again this soon after it stopped, with no clear, went on: a pause."""

ONSET_RMS = 30.0
"""RMS (16-bit scale, about -61 dBFS) of the first 10 ms window that counts as the sound's
onset: far below the speech threshold (``mindbot.audio.SILENCE_RMS``), so a breath's fade-in
starts it, and far above the caller's silence (mu-law silence decodes to zeros)."""

TV_LINE = "And now the weather for the weekend across the region"
"""What the television in the room says (no comma: Piper pauses at commas)."""

TV_ATTENUATION_DB = 20.0
"""How far below the caller's own voice the television is."""


# --- The sounds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sound:
    """One sound the caller makes, as the call carries it (8 kHz 16-bit mono PCM).

    Args:
        name: Its name in ``SOUNDS``.
        pcm: The audio, at the call's rate (``mindbot.callsim.RATE``).
    """

    name: str
    pcm: bytes

    @property
    def secs(self) -> float:
        """Its length in seconds."""
        return len(self.pcm) / 2 / RATE

    @property
    def onset(self) -> float:
        """Seconds from its start to its first audible 10 ms (``ONSET_RMS``)."""
        return first_voiced_offset(self.pcm, RATE, threshold=ONSET_RMS) or 0.0

    @property
    def level_dbfs(self) -> float:
        """Its RMS level over its whole length, in dB below a full-scale square wave."""
        samples = np.frombuffer(self.pcm, dtype=np.int16).astype(np.float64)
        rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
        return 20 * np.log10(max(rms, 1e-9) / 32768)


def _seconds(secs: float) -> int:
    return int(round(secs * RATE))


def _band(noise: np.ndarray, low: float, high: float) -> np.ndarray:
    """``noise`` with everything outside ``low``-``high`` Hz removed (an FFT mask)."""
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(len(noise), 1 / RATE)
    spectrum[(freqs < low) | (freqs > high)] = 0
    return np.fft.irfft(spectrum, len(noise))


def _burst(rng: np.random.Generator, secs: float, attack: float, decay: float) -> np.ndarray:
    """Band-passed noise (150 Hz-3 kHz, a cough's breadth) with a linear attack and an
    exponential decay of time constant ``decay`` seconds."""
    t = np.arange(_seconds(secs)) / RATE
    envelope = np.minimum(t / attack, 1.0) * np.exp(-np.maximum(t - attack, 0) / decay)
    return _band(rng.standard_normal(len(t)), 150, 3000) * envelope


def _at_level(signal: np.ndarray, dbfs: float) -> np.ndarray:
    """``signal`` scaled so that its RMS over its whole length is ``dbfs``."""
    rms = float(np.sqrt(np.mean(signal**2)))
    return signal * (32768 * 10 ** (dbfs / 20) / rms)


def cough(rng: np.random.Generator) -> np.ndarray:
    """A cough close to the phone: 0.25 s, -18 dBFS RMS (peaks near -2 dBFS), louder than the
    caller's voice (Piper's, about -20 dBFS).

    Noise across 150 Hz-3 kHz, 10 ms attack, then a 50 ms exponential decay.
    """
    return _at_level(_burst(rng, 0.25, 0.01, 0.05), -18.0)


def double_cough(rng: np.random.Generator) -> np.ndarray:
    """Two coughs, the second softer: 0.62 s, -21 dBFS RMS (peaks near -1.5 dBFS).

    Each as ``cough``, 0.12 s apart, the second at 70% of the first's amplitude.
    """
    first = _burst(rng, 0.25, 0.01, 0.05)
    second = _burst(rng, 0.25, 0.01, 0.05) * 0.7
    return _at_level(np.concatenate([first, np.zeros(_seconds(0.12)), second]), -21.0)


def knock(rng: np.random.Generator) -> np.ndarray:
    """Three knocks on a door or a table: 0.5 s, -25 dBFS RMS (each knock peaks near -2 dBFS).

    Knocks 0.18 s apart, each a 2 ms click of noise on two damped resonances (170 Hz and
    900 Hz, 20 ms and 8 ms time constants), as wood sounds when struck.
    """
    out = np.zeros(_seconds(0.5))
    t = np.arange(_seconds(0.12)) / RATE
    for n in range(3):
        body = np.sin(2 * np.pi * 170 * t) * np.exp(-t / 0.02)
        body += 0.6 * np.sin(2 * np.pi * 900 * t + rng.uniform(0, np.pi)) * np.exp(-t / 0.008)
        click = np.zeros_like(t)
        click[: _seconds(0.002)] = rng.standard_normal(_seconds(0.002)) * 0.8
        start = _seconds(0.18 * n)
        out[start : start + len(t)] += body + click
    return _at_level(out, -25.0)


def breath(rng: np.random.Generator) -> np.ndarray:
    """A sigh or a breath into the phone: 0.6 s, -38 dBFS RMS (peaks near -23 dBFS).

    Noise across 400 Hz-2.5 kHz under a raised-cosine swell.
    """
    n = _seconds(0.6)
    swell = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    return _at_level(_band(rng.standard_normal(n), 400, 2500) * swell, -38.0)


def throat_clear(rng: np.random.Generator) -> np.ndarray:
    """Clearing the throat: 0.4 s, -20 dBFS RMS (peaks near -4 dBFS).

    A rasp: glottal-like pulses about 90 Hz apart (jittered by 15%) exciting noise, under
    800 Hz, in two swells (a short one, then a longer one).
    """
    n = _seconds(0.4)
    pulses = np.zeros(n)
    at = 0.0
    while at < 0.4:
        pulses[min(n - 1, _seconds(at))] = 1.0
        at += (1 / 90) * rng.uniform(0.85, 1.15)
    decay = np.exp(-np.arange(_seconds(0.006)) / (0.002 * RATE))
    rasp = np.convolve(pulses, decay)[:n] * (0.5 + rng.standard_normal(n))
    t = np.arange(n) / RATE
    swells = np.exp(-(((t - 0.08) / 0.04) ** 2)) * 0.6 + np.exp(-(((t - 0.26) / 0.07) ** 2))
    return _at_level(_band(rasp, 60, 800) * swells, -20.0)


def typing(rng: np.random.Generator) -> np.ndarray:
    """Typing on a keyboard near the phone: 1 s, -33 dBFS RMS (clicks peak near -7 dBFS).

    Eleven key strokes 70-110 ms apart, each a 3 ms press click (noise over 1.5-3.8 kHz) and a
    softer release click 35 ms later.
    """
    out = np.zeros(_seconds(1.0))
    click = _seconds(0.003)
    envelope = np.exp(-np.arange(click) / (0.001 * RATE))
    at = 0.02
    for _ in range(11):
        for offset, gain in ((0.0, 1.0), (0.035, 0.4)):
            start = _seconds(at + offset)
            noise = _band(rng.standard_normal(64), 1500, 3800)[:click]
            out[start : start + click] += noise * envelope * gain
        at += rng.uniform(0.07, 0.11)
    return _at_level(out, -33.0)


SYNTHESIZED: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "cough": cough,
    "double_cough": double_cough,
    "knock": knock,
    "breath": breath,
    "throat_clear": throat_clear,
    "typing": typing,
}

SOUNDS = (*SYNTHESIZED, "tv")
"""Every sound, in the order a run plays them. ``tv``: ``TV_LINE`` in the Piper voice,
``TV_ATTENUATION_DB`` down (about 2.5 s and -40 dBFS RMS, peaks near -20 dBFS; Piper's
timing varies a little between syntheses): a television in the room."""


def synthesize_sound(name: str) -> Sound:
    """One of the numpy-made sounds (``SYNTHESIZED``), the same on every call.

    Each sound has its own seed, taken from its name, so adding a sound changes no other.

    Raises:
        ConfigError: ``name`` is not a synthesized sound.
    """
    make = SYNTHESIZED.get(name)
    if make is None:
        raise ConfigError(f"unknown sound {name!r}: one of {', '.join(SYNTHESIZED)}")
    signal = make(np.random.default_rng(zlib.crc32(name.encode())))
    pcm = np.clip(np.round(signal), -32768, 32767).astype(np.int16).tobytes()
    return Sound(name, pcm)


async def load_sounds(names: list[str], cache_dir: Path | None = None) -> list[Sound]:
    """The sounds called ``names``, in that order.

    Args:
        names: Names from ``SOUNDS``.
        cache_dir: Where the television's Piper line is cached (default: the call
            simulator's cache).

    Raises:
        ConfigError: A name is not in ``SOUNDS``.
    """
    sounds = []
    for name in names:
        if name == "tv":
            speech = np.frombuffer(await _speech(TV_LINE, cache_dir), dtype=np.int16)
            quiet = speech.astype(np.float64) * 10 ** (-TV_ATTENUATION_DB / 20)
            sounds.append(Sound(name, np.round(quiet).astype(np.int16).tobytes()))
        else:
            sounds.append(synthesize_sound(name))
    return sounds


def parse_sounds(text: str) -> list[str]:
    """``--sounds cough,knock`` as a list of names, checked against ``SOUNDS``.

    Raises:
        ConfigError: A name is unknown, or none is given.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SOUNDS]
    if unknown or not names:
        raise ConfigError(f"--sounds {text!r}: expected names from {', '.join(SOUNDS)}")
    return names


# --- The judgement ------------------------------------------------------------------------------


@dataclass
class SoundOutcome:
    """What one sound did to the bot; times in seconds from the sound's onset."""

    system: str
    sound: str
    interrupted: bool
    """A false barge-in: a ``clear``, or the bot's audio stopping within ``STOP_WINDOW_SECS``
    and not going on."""
    clear: float | None
    """The first ``clear`` after the onset (``None``: none)."""
    audio_end: float
    """The end of the stretch of bot speech going on at the onset."""
    llm_request: float | None
    """The first chat request after the onset (``None``: none, the sound was not a turn)."""
    pause: float | None = None
    """How long the bot's audio stopped before it went on without a clear (``None``: it did
    not stop, or stopped for good)."""

    @property
    def turn(self) -> bool:
        """Whether the bot took the sound for words and asked its LLM for an answer."""
        return self.llm_request is not None


def judge_sound(
    recording: bytes,
    clears: list[float],
    llm_requests: list[float],
    *,
    after: float,
    sound: str = "",
    system: str = "",
) -> SoundOutcome:
    """Whether a sound the caller made interrupted the bot's answer.

    Args:
        recording: The call's two-channel WAV (``PhoneCall.recording()``).
        clears: Arrival times (seconds from the call's start) of the ``clear`` messages.
        llm_requests: When chat requests reached the LLM (seconds from the call's start).
        after: A time after the caller's question and before the sound (the start of the
            bot's answer): the caller's first audible 10 ms after it is the sound's onset.
        sound: Which sound it was.
        system: Which system answered the call.

    Raises:
        NotMeasured: The caller made no sound after ``after``, or the bot was not speaking
            at its onset.
    """
    from mindbot.command_bench import QUIET_GAP, _speech_end
    from mindbot.turn_bench import _first_voiced

    caller, bot = _channels(recording)
    start = max(0, int(after * RATE))
    offset = first_voiced_offset(caller[start:].tobytes(), RATE, threshold=ONSET_RMS)
    if offset is None:
        raise NotMeasured("the caller made no sound")
    onset = start / RATE + offset
    audio_end = _speech_end(bot, onset)
    if audio_end is None:
        raise NotMeasured("the bot was not speaking when the sound started")
    clear = min((at for at in clears if at >= onset), default=None)
    # Only a silence the recording goes on past is a stop; audio running to the hang-up is not.
    stopped = audio_end - onset < STOP_WINDOW_SECS and audio_end + QUIET_GAP <= len(bot) / RATE
    request = min((at for at in llm_requests if at >= onset), default=None)
    pause = None
    if stopped and clear is None:
        # The bot going on with its answer, before any new one was asked for, was a pause.
        again = _first_voiced(bot, audio_end)
        limit = audio_end + RESUME_WINDOW_SECS
        if request is not None:
            limit = min(limit, request)
        if again is not None and again <= limit:
            pause = round(again - audio_end, 3)
    return SoundOutcome(
        system=system,
        sound=sound,
        interrupted=clear is not None or (stopped and pause is None),
        clear=None if clear is None else round(clear - onset, 3),
        audio_end=round(audio_end - onset, 3),
        llm_request=None if request is None else round(request - onset, 3),
        pause=pause,
    )


# --- Results ------------------------------------------------------------------------------------


@dataclass
class FalseBargeInResult:
    """Every sound each system heard, and the calls that could not be judged."""

    profile: str
    audio_settings: dict[str, Any] = field(default_factory=dict)
    """MindBot's audio settings in this run (bare Pipecat keeps Pipecat's defaults)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """The ``--set`` changes among them."""
    sounds: dict[str, dict[str, float]] = field(default_factory=dict)
    """Each sound played: its length and level (``secs``, ``dbfs``)."""
    outcomes: list[SoundOutcome] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """False barge-in rates per system, overall and per sound, and the comparison."""
        systems = {system: self._figures(system) for system in SYSTEMS}
        mindbot, bare = systems["mindbot"]["rate"], systems["bare"]["rate"]
        both = mindbot is not None and bare is not None
        return {
            "profile": self.profile,
            "overrides": self.overrides,
            "systems": systems,
            "difference": round(mindbot - bare, 3) if both else None,
            "not_worse_than_bare": mindbot <= bare if both else None,
        }

    def _figures(self, system: str) -> dict[str, Any]:
        mine = [o for o in self.outcomes if o.system == system]
        by_sound: dict[str, list[SoundOutcome]] = defaultdict(list)
        for outcome in mine:
            by_sound[outcome.sound].append(outcome)
        order = [*self.sounds, *(name for name in by_sound if name not in self.sounds)]
        return {
            **_counts(mine),
            "failures": sum(f["system"] == system for f in self.failures),
            "turns": sum(o.turn for o in mine),
            "by_sound": {name: _counts(by_sound[name]) for name in order if by_sound[name]},
        }

    def headline(self) -> list[dict[str, str]]:
        """The row ``mindbot bench table`` shows for this run."""
        systems = self.summary()["systems"]
        settings = ", ".join(f"{k}={v}" for k, v in self.overrides.items())
        label = f" ({settings})" if settings else ""
        return [
            {
                "measure": f"false barge-ins on {len(self.sounds)} non-speech sounds{label}",
                "mindbot": _cell(systems["mindbot"]),
                "bare": _cell(systems["bare"]),
                "target": "≤ bare",
            }
        ]

    def as_dict(self) -> dict[str, Any]:
        """The summary, every call's outcome and the failures (for ``record_json``)."""
        return {
            "summary": self.summary(),
            "headline": self.headline(),
            "audio_settings": self.audio_settings,
            "sounds": self.sounds,
            "outcomes": [{**asdict(o), "turn": o.turn} for o in self.outcomes],
            "failures": self.failures,
        }


def _counts(outcomes: list[SoundOutcome]) -> dict[str, Any]:
    interrupted = sum(o.interrupted for o in outcomes)
    return {
        "calls": len(outcomes),
        "interrupted": interrupted,
        "rate": round(interrupted / len(outcomes), 3) if outcomes else None,
        "paused": sum(o.pause is not None for o in outcomes),
    }


def _cell(figures: dict[str, Any]) -> str:
    """``25% (1/4)``, or ``-`` when nothing was judged."""
    if figures.get("rate") is None:
        return "-"
    return f"{figures['rate']:.0%} ({figures['interrupted']}/{figures['calls']})"


def format_falsebargein_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of a false barge-in benchmark's summary."""
    m, b = summary["systems"]["mindbot"], summary["systems"]["bare"]
    overrides = ", ".join(f"{k}={v}" for k, v in summary.get("overrides", {}).items())
    lines = [
        f"profile {summary['profile']}: false barge-ins (the bot interrupted by a sound that is "
        "not speech)",
        f"MindBot audio settings: {overrides or 'defaults'}; bare Pipecat: Pipecat's defaults",
        f"{'sound':20s}{'MindBot':>16s}{'bare':>16s}",
    ]
    for sound in dict.fromkeys([*m["by_sound"], *b["by_sound"]]):
        lines.append(
            f"{sound:20s}{_cell(m['by_sound'].get(sound, {})):>16s}"
            f"{_cell(b['by_sound'].get(sound, {})):>16s}"
        )
    lines.append(f"{'all':20s}{_cell(m):>16s}{_cell(b):>16s}")
    lines.append(
        f"taken as a turn (an LLM request after the sound): MindBot {m['turns']}, bare {b['turns']}"
    )
    lines.append(
        "paused and went on (no clear; a gap in the bot's speech): "
        f"MindBot {m.get('paused', 0)}, bare {b.get('paused', 0)}"
    )
    if m["failures"] or b["failures"]:
        lines.append(f"calls not judged: MindBot {m['failures']}, bare {b['failures']}")
    verdict = summary["not_worse_than_bare"]
    difference = summary["difference"]
    lines.append(
        "MindBot interrupted no more often than bare Pipecat: "
        + ("-" if verdict is None else "yes" if verdict else "NO")
        + ("" if difference is None else f" (difference {difference * 100:+.0f} points)")
    )
    return "\n".join(lines)


# --- The run ------------------------------------------------------------------------------------


async def run_falsebargein_bench(
    run: PipelineRun,
    *,
    profile: str = "cloud",
    sounds: list[str] | None = None,
    calls: int = 2,
    warmup_calls: int = 1,
    talk_secs: float = 1.0,
    settle_secs: float = 1.5,
    audio: dict[str, Any] | None = None,
    make_settings: Callable[..., Settings] = Settings.load,
    cache_dir: Path | None = None,
) -> FalseBargeInResult:
    """Play each sound over the bot's answer ``calls`` times on each system, alternating.

    Args:
        run: MindBot's pipeline (bare Pipecat is built from the same services).
        profile: ``cloud`` or ``offline`` (see ``mindbot.turn_bench``).
        sounds: Names from ``SOUNDS`` (default: all).
        calls: Measured calls per sound per system.
        warmup_calls: Unmeasured calls per system first (with the first sound), so no
            figure pays for first use.
        talk_secs: How long the bot talks before the sound.
        settle_secs: How long the caller listens after the sound.
        audio: MindBot's audio settings to change (``audio_overrides``).
        make_settings: Builds MindBot's settings from overrides (``Settings.load``).
        cache_dir: Where synthesized caller utterances are cached (default: the call
            simulator's cache).
    """
    from mindbot.command_bench import LONG_REPLY, QUESTION

    played = await load_sounds(list(sounds or SOUNDS), cache_dir)
    schedule = [sound for _ in range(calls) for sound in played]
    question = await _speech(QUESTION, cache_dir)
    async with _systems(profile, LONG_REPLY, run, audio or {}, make_settings) as systems:
        result = FalseBargeInResult(
            systems.profile,
            systems.bot.settings.audio.model_dump(),
            dict(audio or {}),
            {s.name: {"secs": round(s.secs, 3), "dbfs": round(s.level_dbfs, 1)} for s in played},
        )

        async def call(url: str, n: int) -> SoundOutcome:
            sound = schedule[max(0, n - warmup_calls)]
            systems.expect([QUESTION])
            return await _sound_call(url, question, sound, systems, talk_secs, settle_secs, n)

        async for system, outcome in systems.alternate(len(schedule), warmup_calls, call):
            if isinstance(outcome, Exception):
                result.failures.append({"system": system, "why": str(outcome)})
                continue
            outcome.system = system
            result.outcomes.append(outcome)
            print(f"  {_outcome_line(outcome)}", flush=True)
    return result


async def _sound_call(
    url: str,
    question: bytes,
    sound: Sound,
    systems: _Systems,
    talk_secs: float,
    settle_secs: float,
    n: int,
) -> SoundOutcome:
    async with PhoneCall(url, from_number=f"+1555600{n:04d}") as call:
        await call.wait_for_bot_speech(timeout=REPLY_TIMEOUT)
        asked = await call.say(question, RATE)
        reply = await call.wait_for_bot_speech(after=asked, quiet=0, timeout=REPLY_TIMEOUT)
        # The bot answers: the question's transcript is out, and the caller says nothing more.
        with _no_words_heard(systems):
            await asyncio.sleep(max(0.0, reply.start + talk_secs - sound.onset - call.now()))
            await call.say(sound.pcm, RATE)
            await asyncio.sleep(settle_secs)
            clears = call.clears_between(reply.start, call.now())
            t0 = time.monotonic() - call.now()
            recording = call.recording()
    requests = [at - t0 for at in systems.llm.times]
    return judge_sound(recording, clears, requests, after=reply.start, sound=sound.name)


@contextmanager
def _no_words_heard(systems: _Systems) -> Iterator[None]:
    """The cloud profile's Deepgram stand-in hears no speech while this lasts.

    Its speech threshold goes above any 16-bit level, so a sound starts no utterance: no
    transcript, no fallback to Whisper. The offline profile's Whisper is left to hear it.
    """
    deepgram = systems.deepgram
    if deepgram is None:
        yield
        return
    threshold = deepgram.speech_threshold
    deepgram.speech_threshold = float("inf")
    try:
        yield
    finally:
        deepgram.speech_threshold = threshold


def _outcome_line(o: SoundOutcome) -> str:
    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:+.2f} s"

    if o.interrupted:
        verdict = "INTERRUPTED"
    elif o.pause is not None:
        verdict = f"paused {o.pause:.2f} s, went on"
    else:
        verdict = "kept talking"
    return (
        f"{o.system:8s} {o.sound:14s} {verdict} (clear {s(o.clear)}, bot audio ended "
        f"{s(o.audio_end)}, LLM request {s(o.llm_request)} from the onset)"
    )


# --- The command line ---------------------------------------------------------------------------


def add_falsebargein_bench(benches: argparse._SubParsersAction) -> None:
    """Add ``falsebargein`` to the ``mindbot bench`` subcommands."""
    parser = benches.add_parser(
        "falsebargein", help="false barge-ins: the bot interrupted by a cough, a knock, typing"
    )
    _common_arguments(parser)
    parser.add_argument("--calls", type=int, default=2, help="measured calls per sound per system")
    parser.add_argument(
        "--sounds", default=",".join(SOUNDS), help="the sounds to play, comma-separated"
    )
    parser.set_defaults(handler=_bench_falsebargein)


def _bench_falsebargein(args: argparse.Namespace) -> None:
    run_bench_command(
        args,
        run_falsebargein_bench,
        format_falsebargein_summary,
        sounds=parse_sounds(args.sounds),
        calls=args.calls,
    )
