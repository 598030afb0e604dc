"""The caller's emotion in a turn, from what they say and how they say it; the bot's answer to it.

Pure analysis, no frames and no network (``processors/emotion_detector.py`` is the pipeline
adapter):

- ``measure(pcm, sample_rate)`` reads the prosody of a turn's audio: speech level, pitch (a
  YIN tracker on 16 kHz PCM, numpy only) and its spread, a syllable-like onset rate, clipping.
- ``read_text(text)`` reads the words: VADER's valence plus a small cue list per emotion
  (arousal words, intensifiers, exclamations).
- ``EmotionAnalyzer`` (one per caller) compares the prosody with the caller's own running
  baseline, since phone lines and voices differ in level and pitch, and fuses it with the words
  into an ``Estimate``: a label (``LABELS``), valence and arousal in -1..1, and a confidence.
- ``EmotionTracker`` settles the label over turns (hysteresis), so one odd turn does not swing
  the conversation; ``hint_for`` words the settled label as a short, hedged note for the LLM.
- ``bot_style`` maps the caller's settled emotion to how the bot should sound (an emotion name
  for Cartesia, speed and volume nudges), with a persona's overrides as a plain dict.

The estimate is a guess from weak signals: the words carry most of it; prosody mostly says how
aroused the caller is, relative to how they sounded before.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mindbot.audio import resample

LABELS = ("neutral", "happy", "excited", "frustrated", "angry", "sad", "anxious")
"""The emotions the analyzer tells apart."""

ANALYSIS_RATE = 16000
"""Audio is analyzed at this sample rate (resampled when it arrives at another)."""

MAX_SECS = 30.0
"""Only the first ``MAX_SECS`` of a turn's audio are analyzed."""

# Where each label sits in valence/arousal (a circumplex): the fusion scores distance to these.
_PROTOTYPES: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happy": (0.55, 0.1),
    "excited": (0.65, 0.65),
    "frustrated": (-0.45, 0.3),
    "angry": (-0.7, 0.7),
    "sad": (-0.5, -0.45),
    "anxious": (-0.4, 0.45),
}


# --- Prosody ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prosody:
    """How a turn sounds, in absolute terms (the analyzer makes it relative to the caller).

    Parameters:
        speech_secs: Seconds of audible speech (10 ms windows near the turn's loudest).
        level_db: Speech level, dB relative to full scale.
        pitch_hz: Median pitch of the voiced windows, or ``None`` when too few were voiced.
        pitch_spread: Pitch variability, semitones (a robust standard deviation), or ``None``.
        onset_rate: Energy peaks (roughly syllables) per second of speech.
        clipped: Fraction of samples at or near full scale.
    """

    speech_secs: float
    level_db: float
    pitch_hz: float | None
    pitch_spread: float | None
    onset_rate: float
    clipped: float


def measure(pcm: bytes, sample_rate: int) -> Prosody | None:
    """Read the prosody of one turn's 16-bit mono PCM.

    Any sample rate from 4 kHz up is accepted (resampled to 16 kHz); only the first
    ``MAX_SECS`` are read. Never raises on odd input.

    Returns:
        The prosody, or ``None`` when there is too little speech to read (empty, silent, or
        shorter than a fifth of a second of sound).
    """
    if not pcm or not isinstance(sample_rate, int) or not 4000 <= sample_rate <= 192000:
        return None
    pcm = bytes(pcm[: len(pcm) - len(pcm) % 2][: int(MAX_SECS * sample_rate) * 2])
    if not pcm:
        return None
    if sample_rate != ANALYSIS_RATE:
        pcm = resample(pcm, sample_rate, ANALYSIS_RATE)
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
    hop = ANALYSIS_RATE // 100
    count = len(x) // hop
    if count < 20:
        return None
    power = np.mean(x[: count * hop].reshape(count, hop) ** 2, axis=1)
    db = 10.0 * np.log10(power + 1e-12)
    peak = float(db.max())
    if peak < -55.0:
        return None
    active = db > max(-55.0, peak - 30.0)
    if active.sum() < 20:
        return None
    level = float(10.0 * np.log10(np.mean(power[active]) + 1e-12))
    clipped = float(np.mean(np.abs(x) >= 0.985))
    pitch = _pitch_track(x, active)
    pitch_hz, spread = _pitch_stats(pitch)
    return Prosody(
        speech_secs=round(float(active.sum()) * 0.01, 3),
        level_db=round(level, 2),
        pitch_hz=pitch_hz,
        pitch_spread=spread,
        onset_rate=round(_onsets(db, active) / (float(active.sum()) * 0.01), 3),
        clipped=round(clipped, 4),
    )


def _pitch_track(x: np.ndarray, active: np.ndarray) -> np.ndarray:
    """YIN pitch per 10 ms window (0 where unvoiced), on the signal low-passed at 1 kHz."""
    fmin, fmax, window = 60.0, 400.0, 400
    min_lag, max_lag = int(ANALYSIS_RATE / fmax), int(ANALYSIS_RATE / fmin)
    size = window + max_lag
    hop = ANALYSIS_RATE // 100
    spectrum = np.fft.rfft(x)
    spectrum[np.fft.rfftfreq(len(x), 1.0 / ANALYSIS_RATE) > 1000.0] = 0
    low = np.fft.irfft(spectrum, len(x)).astype(np.float32)
    starts = np.nonzero(active)[0] * hop
    starts = starts[starts + size <= len(low)]
    pitch = np.zeros(len(active), dtype=np.float32)
    if len(starts) == 0:
        return pitch
    frames = low[starts[:, None] + np.arange(size)[None, :]]
    nfft = 2048
    corr = np.fft.irfft(
        np.conj(np.fft.rfft(frames[:, :window], nfft)) * np.fft.rfft(frames, nfft), nfft
    )[:, : max_lag + 1]
    squares = np.concatenate(
        [np.zeros((len(frames), 1), np.float32), np.cumsum(frames**2, axis=1)], axis=1
    )
    lags = np.arange(max_lag + 1)
    diff = squares[:, window : window + 1] + squares[:, lags + window] - squares[:, lags]
    diff = diff - 2.0 * corr
    diff[:, 0] = 0.0
    running = np.cumsum(diff[:, 1:], axis=1)
    cmnd = diff[:, 1:] * lags[1:] / np.maximum(running, 1e-9)  # cmnd[:, k] is lag k + 1
    seg = cmnd[:, min_lag - 1 :]
    dips = (seg[:, 1:-1] < 0.2) & (seg[:, 1:-1] <= seg[:, :-2]) & (seg[:, 1:-1] <= seg[:, 2:])
    found = dips.any(axis=1)
    first = np.argmax(dips, axis=1) + 1
    rows = np.arange(len(seg))
    a, b, c = seg[rows, first - 1], seg[rows, first], seg[rows, first + 1]
    bend = a - 2.0 * b + c
    shift = np.where(np.abs(bend) > 1e-9, 0.5 * (a - c) / np.where(bend == 0, 1, bend), 0.0)
    lag = first + min_lag + np.clip(shift, -0.5, 0.5)
    pitch[starts[found] // hop] = ANALYSIS_RATE / lag[found]
    return pitch


def _pitch_stats(pitch: np.ndarray) -> tuple[float | None, float | None]:
    voiced = pitch[pitch > 0]
    if len(voiced) < 5:
        return None, None
    median = float(np.median(voiced))
    semitones = 12.0 * np.log2(voiced / median)
    semitones = semitones[np.abs(semitones) < 10.0]  # octave jumps are tracker errors
    if len(semitones) < 5:
        return round(median, 1), None
    mad = float(np.median(np.abs(semitones - np.median(semitones))))
    return round(median, 1), round(1.4826 * mad, 3)


def _onsets(db: np.ndarray, active: np.ndarray) -> int:
    """Syllable-like energy peaks: local maxima 3 dB above the dips on both sides, 100 ms apart."""
    smooth = np.convolve(db, np.ones(5) / 5.0, mode="same")
    count, last = 0, -100
    for i in np.nonzero(active)[0]:
        if i - last < 10 or smooth[i] < smooth[max(0, i - 5) : i + 6].max():
            continue
        dip = max(smooth[max(0, i - 15) : i + 1].min(), smooth[i : i + 16].min())
        if smooth[i] - dip >= 3.0:
            count, last = count + 1, i
    return count


# --- Words ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextCues:
    """What the words of a turn suggest.

    Parameters:
        valence: -1..1 (VADER's compound score, corrected by the cue list).
        arousal: -1..1, from arousal words, intensifiers and exclamations.
        evidence: 0..1 per label, from its cue words and phrases.
        words: How many words the turn had.
        syllables: An estimate of its syllables (Latin script only; 0 otherwise).
    """

    valence: float
    arousal: float
    evidence: dict[str, float]
    words: int
    syllables: int


# Cue words and phrases per label, with weights. Matched on whole words after lower-casing; a
# cue within three words after a negation ("not worried") does not count.
_CUES: dict[str, dict[str, float]] = {
    label: {cue.rsplit(" ", 1)[0]: float(cue.rsplit(" ", 1)[1]) for cue in cues.split("|")}
    for label, cues in {
        "angry": (
            "furious 1|outrageous 1|ridiculous 0.8|unacceptable 1|disgusting 0.9|pissed 1|"
            "fed up 0.9|sick of 0.8|hate 0.7|how dare 1|incompetent 1|useless 0.8|liar 1|"
            "lied 0.8|scam 0.9|rip off 0.9|ripped off 1|worst 0.7|absurd 0.8|a joke 0.7|"
            "a manager 0.8|shut up 1|damn 0.7|stupid 0.7|idiot 0.9|idiots 0.9|angry 1|"
            "so mad 1|livid 1|enough 0.4|sue 0.8|cancel my 0.5|demand 0.7|right now 0.4"
        ),
        "frustrated": (
            "again 0.5|still 0.4|keeps 0.6|keep getting 0.7|not working 0.8|doesn't work 0.8|"
            "does not work 0.8|won't work 0.8|isn't working 0.8|broken 0.5|third time 0.9|"
            "second time 0.6|already 0.4|on hold 0.7|waiting 0.4|waited 0.5|every time 0.6|"
            "why can't 0.7|why won't 0.7|why does 0.5|annoying 0.9|annoyed 0.9|"
            "frustrated 1|frustrating 1|confusing 0.6|stuck 0.6|makes no sense 0.8|"
            "tried everything 0.9|for hours 0.6|an hour 0.4|what's the point 0.7|"
            "seriously 0.5|come on 0.5|ugh 0.9|nobody 0.4|no one 0.4|same problem 0.8|"
            "told me 0.3|hang up 0.4"
        ),
        "sad": (
            "sad 1|unhappy 0.9|lonely 1|alone 0.7|miss her 0.9|miss him 0.9|miss them 0.9|"
            "miss my 0.9|passed away 1|died 1|funeral 0.9|grief 1|depressed 1|hopeless 1|"
            "cry 0.8|crying 0.9|cried 0.8|heartbroken 1|broke up 0.8|divorce 0.7|give up 0.6|"
            "gave up 0.7|empty 0.6|hurts 0.6|lost my 0.8|nobody cares 1|"
            "tired of everything 1|don't know anymore 0.8|disappointed 0.6|down lately 0.8|"
            "feel down 0.9|so tired 0.5|no point 0.6|by myself 0.6|rough 0.4|bad news 0.7"
        ),
        "anxious": (
            "worried 1|worry 0.8|worrying 0.9|nervous 1|anxious 1|scared 1|afraid 0.9|"
            "frightened 1|panic 1|panicking 1|terrified 1|what if 0.7|urgent 0.7|"
            "emergency 0.8|help me 0.6|hurry 0.6|as soon as possible 0.5|deadline 0.5|"
            "stressed 0.9|overwhelmed 0.9|can't sleep 0.8|shaking 0.8|is it safe 0.8|"
            "going to be okay 0.8|going to be ok 0.8|am i going to 0.6|"
            "i don't know what to do 0.8|freaking out 1|tomorrow 0.2|exam 0.4|interview 0.3|"
            "results 0.3|what do i do 0.7|is that bad 0.7"
        ),
        "excited": (
            "amazing 0.9|awesome 0.9|incredible 0.9|fantastic 0.8|wow 0.9|yay 1|woohoo 1|"
            "can't wait 1|so excited 1|excited 0.9|thrilled 1|best day 1|got the job 1|"
            "i did it 1|we did it 1|i won 1|we won 1|omg 0.9|oh my god 0.7|guess what 0.8|"
            "unbelievable 0.5|finally 0.4|so happy 0.6|engaged 0.7|promoted 0.9|passed 0.4"
        ),
        "happy": (
            "thanks 0.6|thank you 0.7|great 0.6|glad 0.8|happy 0.8|nice 0.5|lovely 0.7|"
            "good 0.3|perfect 0.6|wonderful 0.7|appreciate 0.7|pleased 0.8|enjoy 0.6|"
            "enjoyed 0.7|fun 0.5|love 0.5|cheers 0.5|helpful 0.6|relieved 0.6|that helps 0.7|"
            "brilliant 0.6|sweet 0.4|cool 0.4|beautiful 0.6"
        ),
    }.items()
}
_CUE_VALENCE = {
    "angry": -0.8, "frustrated": -0.6, "sad": -0.7, "anxious": -0.55,
    "excited": 0.75, "happy": 0.6,
}  # fmt: skip
_CUE_AROUSAL = {
    "angry": 0.9, "frustrated": 0.4, "sad": -0.7, "anxious": 0.6,
    "excited": 0.9, "happy": 0.1,
}  # fmt: skip
_INTENSIFIERS = frozenset(
    "so really very extremely absolutely totally completely utterly such too incredibly "
    "seriously literally".split()
)
_NEGATIONS = frozenset("not no never don't doesn't didn't isn't wasn't aren't can't won't".split())
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def read_text(text: str) -> TextCues:
    """Read the emotion cues of a transcript (any language; the cue list is English).

    Never raises: empty, odd or very long text gives neutral cues. Only the first 2,000
    characters are read.
    """
    if not isinstance(text, str):
        text = ""
    text = unicodedata.normalize("NFKC", text.replace("\x00", ""))[:2000]
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    raw_words = _WORD.findall(text)
    words = [w.lower() for w in raw_words]
    evidence = _cue_evidence(words)
    compound = _vader().polarity_scores(text)["compound"] if words else 0.0
    cue_valence = sum(evidence[label] * _CUE_VALENCE[label] for label in _CUE_VALENCE)
    valence = float(np.clip(0.55 * compound + 0.75 * cue_valence, -1.0, 1.0))
    exclaims = min(text.count("!"), 3)
    shouted = sum(1 for w in raw_words if len(w) > 1 and w.isupper() and w.isalpha())
    stretched = sum(1 for w in words if re.search(r"(\w)\1\1", w))
    intensity = sum(1 for w in words if w in _INTENSIFIERS)
    cue_arousal = sum(evidence[label] * _CUE_AROUSAL[label] for label in _CUE_AROUSAL)
    arousal = math.tanh(
        0.35 * exclaims + 0.3 * min(shouted, 3) + 0.2 * min(stretched, 2) + 0.15 * min(intensity, 3)
        + cue_arousal
    )  # fmt: skip
    return TextCues(
        valence=round(valence, 3),
        arousal=round(arousal, 3),
        evidence={label: round(value, 3) for label, value in evidence.items()},
        words=len(words),
        syllables=sum(_syllables(w) for w in words),
    )


def _cue_evidence(words: list[str]) -> dict[str, float]:
    padded = f" {' '.join(words)} "
    evidence: dict[str, float] = {}
    for label, cues in _CUES.items():
        total = 0.0
        for cue, weight in cues.items():
            for match in re.finditer(rf"(?<= ){re.escape(cue)}(?= )", padded):
                before = padded[: match.start()].split()[-3:]
                if not _NEGATIONS.intersection(before):
                    total += weight
        evidence[label] = 1.0 - math.exp(-total)
    return evidence


def _syllables(word: str) -> int:
    word = word.replace("'", "")
    if not word.isascii() or not word.isalpha():
        return 0
    groups = len(re.findall(r"[aeiouy]+", word))
    if word.endswith("e") and not word.endswith(("le", "ee")) and groups > 1:
        groups -= 1
    return max(1, groups)


_VADER: Any = None


def _vader() -> Any:
    global _VADER
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER = SentimentIntensityAnalyzer()
    return _VADER


# --- Fusion -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """The caller's estimated emotion in one turn (the fields of an ``EmotionFrame``).

    Parameters:
        label: One of ``LABELS``.
        valence: -1 (very unpleasant) .. 1 (very pleasant).
        arousal: -1 (very calm) .. 1 (very agitated).
        confidence: 0..1.
        cues: The numbers behind the estimate (never the words).
    """

    label: str
    valence: float
    arousal: float
    confidence: float
    cues: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Reference:
    level_db: float | None
    pitch_hz: float | None
    pitch_spread: float
    rate: float
    turns: int


class Baseline:
    """How one caller usually sounds: the medians of their last turns, with population priors.

    Level and pitch have no prior (lines and voices differ too much), so they count only once
    the caller has spoken; rate and pitch spread start from typical values.

    Args:
        history: How many past turns make the baseline.
        rate: The prior speaking rate, syllables per second.
        pitch_spread: The prior pitch variability, semitones.
        prior_weight: How many turns the priors weigh.
    """

    def __init__(
        self,
        *,
        history: int = 8,
        rate: float = 6.0,
        pitch_spread: float = 2.0,
        prior_weight: float = 2.0,
    ):
        self._turns: deque[tuple[Prosody, float]] = deque(maxlen=history)
        self._rate = rate
        self._spread = pitch_spread
        self._weight = prior_weight

    def __len__(self) -> int:
        return len(self._turns)

    def add(self, prosody: Prosody, rate: float) -> None:
        """Remember a turn as part of how the caller sounds."""
        self._turns.append((prosody, rate))

    def reference(self) -> _Reference:
        """The caller's usual level, pitch, pitch spread and rate."""
        n = len(self._turns)
        levels = [p.level_db for p, _ in self._turns]
        pitches = [p.pitch_hz for p, _ in self._turns if p.pitch_hz]
        spreads = [p.pitch_spread for p, _ in self._turns if p.pitch_spread is not None]
        rates = [r for _, r in self._turns if r > 0]

        def blend(values: list[float], prior: float) -> float:
            if not values:
                return prior
            return (self._weight * prior + len(values) * float(np.median(values))) / (
                self._weight + len(values)
            )

        return _Reference(
            level_db=float(np.median(levels)) if levels else None,
            pitch_hz=float(np.median(pitches)) if pitches else None,
            pitch_spread=blend(spreads, self._spread),
            rate=blend(rates, self._rate),
            turns=n,
        )


class EmotionAnalyzer:
    """Estimates the caller's emotion in each turn; one analyzer per caller (it learns them).

    ``measure`` (stateless, safe in a thread) reads a turn's audio; ``estimate`` fuses it with
    the turn's words, relative to the caller's baseline, and then adds the turn to it.

    Args:
        baseline: The caller's baseline (a fresh one if ``None``).
        text_weight: How much the words count against prosody for arousal (0..1).
    """

    def __init__(self, *, baseline: Baseline | None = None, text_weight: float = 0.45):
        self.baseline = baseline or Baseline()
        self._text_weight = text_weight

    @staticmethod
    def measure(pcm: bytes, sample_rate: int) -> Prosody | None:
        """``measure``: the prosody of a turn's audio (``None`` without speech)."""
        return measure(pcm, sample_rate)

    def analyze(self, pcm: bytes, sample_rate: int, text: str) -> Estimate:
        """Measure and estimate in one call (blocking: about 10 ms per second of audio)."""
        return self.estimate(measure(pcm, sample_rate), text)

    def estimate(self, prosody: Prosody | None, text: str, *, learn: bool = True) -> Estimate:
        """Fuse a turn's prosody and words into an estimate.

        Args:
            prosody: From ``measure``; ``None`` when the turn had no usable audio.
            text: What the caller said.
            learn: Add the turn to the caller's baseline afterwards.
        """
        words = read_text(text)
        cues: dict[str, float] = {"text_valence": words.valence, "text_arousal": words.arousal}
        ref = self.baseline.reference()
        voice = 0.0
        rate = 0.0
        if prosody is not None:
            rate = _rate(prosody, words)
            voice, relative = _voice_arousal(prosody, rate, ref)
            cues.update(relative)
            cues["voice_arousal"] = round(voice, 3)
        if prosody is None:
            arousal = words.arousal
        else:
            w = self._text_weight if words.words else 0.0
            arousal = float(np.clip(w * words.arousal + (1.0 - w) * voice, -1.0, 1.0))
        valence = words.valence
        scores = {
            label: _score(label, valence, arousal, words.evidence.get(label, 0.0), cues)
            for label in LABELS
        }
        top = np.array([scores[label] for label in LABELS])
        probs = np.exp(top - top.max())
        probs /= probs.sum()
        best = int(np.argmax(probs))
        quality = _quality(prosody, words)
        confidence = float(probs[best]) * quality
        if prosody is not None and learn:
            self.baseline.add(prosody, rate)
        return Estimate(
            label=LABELS[best],
            valence=round(valence, 3),
            arousal=round(arousal, 3),
            confidence=round(confidence, 3),
            cues=cues,
        )


def _rate(prosody: Prosody, words: TextCues) -> float:
    """Syllables per second of speech: from the transcript when it has enough Latin words."""
    if words.syllables >= 4 and prosody.speech_secs > 0:
        return words.syllables / prosody.speech_secs
    return prosody.onset_rate


def _voice_arousal(prosody: Prosody, rate: float, ref: _Reference) -> tuple[float, dict]:
    """Arousal from the voice (-1..1), relative to the caller's baseline, and its parts."""
    known = ref.turns / (ref.turns + 1.0)  # trust level and pitch more as the caller talks
    level = (prosody.level_db - ref.level_db) / 6.0 if ref.level_db is not None else 0.0
    pitch = 0.0
    if prosody.pitch_hz and ref.pitch_hz:
        pitch = 12.0 * math.log2(prosody.pitch_hz / ref.pitch_hz) / 3.0
    spread = 0.0
    if prosody.pitch_spread is not None:
        spread = (prosody.pitch_spread - ref.pitch_spread) / 1.5
    speed = math.log(max(rate, 0.1) / ref.rate) / math.log(1.35) if rate > 0 else 0.0
    clip = min(prosody.clipped / 0.01, 1.0)  # sustained clipping: shouting into the phone
    parts = {
        "level": float(np.clip(level, -3, 3)),
        "pitch": float(np.clip(pitch, -3, 3)),
        "pitch_var": float(np.clip(spread, -3, 3)),
        "rate": float(np.clip(speed, -3, 3)),
    }
    raw = (
        0.5 * known * parts["level"]
        + 0.25 * known * parts["pitch"]
        + 0.2 * parts["pitch_var"]
        + 0.4 * parts["rate"]
        + 0.5 * clip
    )
    relative = {f"{k}_z": round(v, 3) for k, v in parts.items()}
    relative["clipped"] = round(prosody.clipped, 4)
    return math.tanh(raw), relative


def _score(label: str, valence: float, arousal: float, evidence: float, cues: dict) -> float:
    v0, a0 = _PROTOTYPES[label]
    score = -0.5 * ((valence - v0) / 0.35) ** 2 - 0.5 * ((arousal - a0) / 0.4) ** 2
    score += 2.2 * evidence
    # Among the unpleasant states, loudness points to anger, a raised pitch without loudness
    # to anxiety, and a quiet, low, slow voice to sadness.
    level, pitch, rate = cues.get("level_z", 0.0), cues.get("pitch_z", 0.0), cues.get("rate_z", 0.0)
    if label == "angry":
        score += 0.4 * max(level, 0.0)
    elif label == "anxious":
        score += 0.3 * max(pitch, 0.0) + 0.2 * max(rate, 0.0) - 0.35 * max(level, 0.0)
    elif label == "sad":
        score += 0.4 * max(-level, 0.0) + 0.3 * max(-pitch, 0.0) + 0.25 * max(-rate, 0.0)
    return score


def _quality(prosody: Prosody | None, words: TextCues) -> float:
    """How much the turn can tell: some words and a second of speech give full weight."""
    text = min(words.words / 4.0, 1.0)
    if prosody is None:
        return 0.35 + 0.5 * text
    audio = min(prosody.speech_secs / 1.0, 1.0) * (0.8 if prosody.clipped > 0.05 else 1.0)
    return 0.25 + 0.5 * text + 0.25 * audio


# --- Over turns -------------------------------------------------------------------------------

_FAMILY = {
    "neutral": "neutral",
    "happy": "upbeat",
    "excited": "upbeat",
    "frustrated": "upset",
    "angry": "upset",
    "sad": "sad",
    "anxious": "anxious",
}


class EmotionTracker:
    """Settles the caller's emotion over turns, so one odd turn does not swing the call.

    The settled label changes only when at least ``min_turns`` of the last ``window`` turns
    agree on a new one (frustrated and angry count together, as do happy and excited) with a
    mean confidence of at least ``min_confidence`` (back to neutral needs only the agreement).
    Within a family the settled label is the one with the most confidence in the window.

    Args:
        window: How many recent turns are weighed.
        min_turns: How many of them must agree.
        min_confidence: The least mean confidence of the agreeing turns.
    """

    def __init__(self, *, window: int = 3, min_turns: int = 2, min_confidence: float = 0.35):
        if not 1 <= min_turns <= window:
            raise ValueError("min_turns must be between 1 and window")
        self._recent: deque[tuple[str, float]] = deque(maxlen=window)
        self._min_turns = min_turns
        self._min_confidence = min_confidence
        self.label = "neutral"

    def update(self, label: str, confidence: float) -> str:
        """Add one turn's estimate; returns the settled label."""
        if label not in _FAMILY:
            label, confidence = "neutral", 0.0
        self._recent.append((label, max(0.0, min(float(confidence), 1.0))))
        by_family: dict[str, list[tuple[str, float]]] = {}
        for turn in self._recent:
            by_family.setdefault(_FAMILY[turn[0]], []).append(turn)
        current = _FAMILY[self.label]
        for family, turns in by_family.items():
            agree = len(turns) >= self._min_turns
            # Calm needs no confidence to come back: it is where a call rests.
            mean = sum(c for _, c in turns) / len(turns)
            sure = family == "neutral" or mean >= self._min_confidence
            if family != current and agree and sure:
                self.label = _strongest(turns)
                return self.label
        if current in by_family and len(by_family[current]) >= self._min_turns:
            self.label = _strongest(by_family[current], prefer=self.label)
        return self.label

    def reset(self) -> None:
        """Forget the turns so far (a new caller)."""
        self._recent.clear()
        self.label = "neutral"


def _strongest(turns: list[tuple[str, float]], prefer: str | None = None) -> str:
    totals: dict[str, float] = {}
    for label, confidence in turns:
        totals[label] = totals.get(label, 0.0) + confidence
    best = max(totals.values())
    if prefer in totals and totals[prefer] >= best - 1e-9:
        return prefer
    return max(totals, key=lambda label: totals[label])


_HINTS = {
    "happy": "The caller sounds happy. Match their warmth; keep it natural.",
    "excited": "The caller sounds excited. Share their enthusiasm briefly, then stay useful.",
    "frustrated": (
        "The caller sounds frustrated. Acknowledge the trouble in a few words, skip small talk "
        "and go straight to a concrete next step."
    ),
    "angry": (
        "The caller sounds angry. Stay calm and respectful, acknowledge the problem without "
        "arguing or over-apologizing, and offer a concrete next step."
    ),
    "sad": (
        "The caller sounds sad. Be gentle and patient, acknowledge how they feel, and do not "
        "rush them or turn cheerful."
    ),
    "anxious": (
        "The caller sounds anxious. Be calm and reassuring, give clear, simple steps one at a "
        "time, and avoid alarming words."
    ),
}


def hint_for(label: str) -> str | None:
    """A short, hedged note for the LLM about the caller's settled emotion (``None``: neutral)."""
    hint = _HINTS.get(label)
    if hint is None:
        return None
    return (
        f"{hint} (This is a guess from their words and tone and may be wrong: let it shape your "
        "tone, but never mention this note.)"
    )


# --- The bot's answer -------------------------------------------------------------------------


@dataclass(frozen=True)
class BotStyle:
    """How the bot sounds in answer to the caller's emotion.

    Parameters:
        emotion: A Cartesia emotion name (e.g. ``calm``, ``sympathetic``, ``content``), or
            ``None`` for the persona's own.
        speed: A nudge to the speaking rate, as a multiple of the caller's chosen rate.
        volume: A nudge to the volume, as a multiple of the chosen volume.
    """

    emotion: str | None = None
    speed: float = 1.0
    volume: float = 1.0


DEFAULT_BOT_STYLES: dict[str, BotStyle] = {
    "neutral": BotStyle(),
    "happy": BotStyle("content", 1.03, 1.0),
    "excited": BotStyle("enthusiastic", 1.06, 1.05),
    "frustrated": BotStyle("calm", 0.95, 0.95),
    "angry": BotStyle("calm", 0.92, 0.92),
    "sad": BotStyle("sympathetic", 0.9, 0.88),
    "anxious": BotStyle("calm", 0.92, 0.95),
}
"""The bot's style for each caller emotion, unless a persona overrides it."""


def bot_style(label: str, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> BotStyle:
    """The bot's style for the caller's settled emotion.

    Args:
        label: The caller's settled emotion (unknown labels count as neutral).
        overrides: A persona's changes, e.g. ``{"sad": {"emotion": "sympathetic",
            "speed": 0.85}, "neutral": {"emotion": "content"}}``; unnamed fields keep their
            defaults. Check them once with ``check_styles``.
    """
    style = DEFAULT_BOT_STYLES.get(label, DEFAULT_BOT_STYLES["neutral"])
    change = (overrides or {}).get(label if label in DEFAULT_BOT_STYLES else "neutral")
    if change:
        style = replace(style, **{k: v for k, v in change.items() if k in _STYLE_FIELDS})
    return style


_STYLE_FIELDS = {"emotion": (str, type(None)), "speed": (int, float), "volume": (int, float)}


def check_styles(overrides: Mapping[str, Mapping[str, Any]]) -> None:
    """Validate a persona's style overrides.

    Raises:
        ValueError: With one sentence naming the bad entry.
    """
    for label, change in overrides.items():
        if label not in DEFAULT_BOT_STYLES:
            raise ValueError(f"unknown emotion {label!r}; expected one of {', '.join(LABELS)}")
        if not isinstance(change, Mapping):
            raise ValueError(f"the style for {label!r} must be a mapping")
        for name, value in change.items():
            if name not in _STYLE_FIELDS:
                raise ValueError(f"unknown style field {name!r} for {label!r}")
            if not isinstance(value, _STYLE_FIELDS[name]) or isinstance(value, bool):
                raise ValueError(f"{label}.{name} has the wrong type")
            if name == "speed" and not 0.7 <= value <= 1.3:
                raise ValueError(f"{label}.speed must be between 0.7 and 1.3")
            if name == "volume" and not 0.6 <= value <= 1.5:
                raise ValueError(f"{label}.volume must be between 0.6 and 1.5")
