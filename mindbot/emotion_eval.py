"""The emotion analyzer measured on a labelled set of spoken utterances (``mindbot eval emotion``).

Each utterance of the set (``tests/fixtures/emotion/eval.yaml``) is synthesized with the offline
Piper voice and delivered as the set says: its speaking rate (Piper's length scale), its energy
(a gain on a phone line's level) and optionally its pitch (a resampling shift, with the length
scale compensated so the rate stays as asked). Each is analyzed as a turn of a caller whose
calm calibration turns the analyzer heard first.

Printed: accuracy overall and per label, a confusion table, the accuracy from the words alone
(no audio), and on a line 12 dB quieter (the baseline should make that no different). The audio
has no emotional prosody of its own (one neutral synthetic voice): the figures measure the words
plus the delivery written into the set, not emotion in real voices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mindbot.audio import resample
from mindbot.emotion import ANALYSIS_RATE, LABELS, EmotionAnalyzer, Estimate, measure

DEFAULT_PATH = (
    Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "emotion" / "eval.yaml"
)
"""The evaluation set in a source checkout."""

RATES = {"slow": 1.35, "normal": 1.0, "fast": 0.7}
"""Named speaking rates, as Piper length scales."""

ENERGIES = {"soft": -8.0, "normal": 0.0, "loud": 7.0}
"""Named energies, dB relative to the line's level."""

PITCHES = {"low": -2.0, "normal": 0.0, "high": 2.0}
"""Named pitch shifts, semitones."""

LINE_DB = -6.0
"""The line's level: gain in dB applied to Piper's peak-normalized speech."""


@dataclass(frozen=True)
class EvalItem:
    """One labelled utterance and how it is delivered.

    Parameters:
        text: What the caller says.
        label: The emotion meant (one of ``LABELS``).
        length_scale: Piper's length scale (above 1 slower).
        gain_db: Gain relative to the line's level.
        pitch: Pitch shift, semitones.
    """

    text: str
    label: str
    length_scale: float = 1.0
    gain_db: float = 0.0
    pitch: float = 0.0


@dataclass(frozen=True)
class ItemResult:
    """What the analyzer made of one utterance."""

    item: EvalItem
    estimate: Estimate
    text_only: str
    quiet_line: str

    @property
    def correct(self) -> bool:
        """Whether the fused estimate has the intended label."""
        return self.estimate.label == self.item.label


@dataclass(frozen=True)
class EvalResult:
    """The analyzer's accuracy over the evaluation set.

    Attributes:
        items: Every utterance's result.
        seconds: Wall time of the run (synthesis included).
    """

    items: tuple[ItemResult, ...]
    seconds: float

    @property
    def accuracy(self) -> float:
        """Share of utterances labelled as intended (words and voice)."""
        return _share(r.correct for r in self.items)

    @property
    def text_only_accuracy(self) -> float:
        """The same from the words alone."""
        return _share(r.text_only == r.item.label for r in self.items)

    @property
    def quiet_line_accuracy(self) -> float:
        """The same on a line 12 dB quieter (calibration included)."""
        return _share(r.quiet_line == r.item.label for r in self.items)

    @property
    def per_label(self) -> dict[str, tuple[int, int]]:
        """For each label: (correct, total)."""
        counts = {label: [0, 0] for label in LABELS}
        for r in self.items:
            counts[r.item.label][1] += 1
            counts[r.item.label][0] += int(r.correct)
        return {label: (c, n) for label, (c, n) in counts.items() if n}

    @property
    def confusion(self) -> dict[str, dict[str, int]]:
        """``confusion[intended][estimated]`` counts."""
        table = {a: dict.fromkeys(LABELS, 0) for a in LABELS}
        for r in self.items:
            table[r.item.label][r.estimate.label] += 1
        return table


def load_eval(path: Path | str | None = None) -> tuple[list[str], list[EvalItem]]:
    """Read an evaluation set: its calibration sentences and its items.

    Raises:
        ValueError: The file is malformed (the message names the entry).
    """
    data = yaml.safe_load(Path(path or DEFAULT_PATH).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise ValueError("an emotion eval file needs an `items` list")
    calibration = [str(t) for t in data.get("calibration") or []]
    items = []
    for n, entry in enumerate(data["items"], 1):
        if not isinstance(entry, dict) or not entry.get("text") or entry.get("label") not in LABELS:
            raise ValueError(f"item {n}: needs `text` and a `label` among {', '.join(LABELS)}")
        items.append(
            EvalItem(
                text=str(entry["text"]),
                label=entry["label"],
                length_scale=_value(entry.get("rate", "normal"), RATES, n, "rate"),
                gain_db=_value(entry.get("energy", "normal"), ENERGIES, n, "energy"),
                pitch=_value(entry.get("pitch", "normal"), PITCHES, n, "pitch"),
            )
        )
    return calibration, items


def deliver(
    text: str,
    *,
    length_scale: float = 1.0,
    gain_db: float = 0.0,
    pitch: float = 0.0,
    line_db: float = LINE_DB,
    cache_dir: Path | None = None,
) -> bytes:
    """Speak ``text`` with the offline voice, delivered as asked, as 16 kHz 16-bit PCM.

    Args:
        text: What to say.
        length_scale: Piper's length scale (above 1 slower).
        gain_db: Gain relative to the line.
        pitch: Pitch shift in semitones (the speed is kept).
        line_db: The line's level.
        cache_dir: Where synthesized speech is cached.
    """
    from mindbot.speech import synthesize

    shift = 2.0 ** (pitch / 12.0)
    # Played back ``shift`` times faster, speech rises by ``pitch`` and shortens by ``shift``;
    # speaking ``shift`` times slower first keeps the asked-for rate.
    pcm, rate = synthesize(text, cache_dir=cache_dir, length_scale=round(length_scale * shift, 3))
    pcm = resample(pcm, rate, round(ANALYSIS_RATE / shift))
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    samples *= 10.0 ** ((line_db + gain_db) / 20.0)
    return np.clip(samples, -32768, 32767).astype(np.int16).tobytes()


def run_eval(path: Path | str | None = None, cache_dir: Path | None = None) -> EvalResult:
    """Run the analyzer over an evaluation set.

    Args:
        path: The set (the checkout's ``tests/fixtures/emotion/eval.yaml`` if ``None``).
        cache_dir: Where synthesized speech is cached between runs (none if ``None``).
    """
    started = time.monotonic()
    calibration, items = load_eval(path)
    lines = {}
    for name, line_db in (("line", LINE_DB), ("quiet", LINE_DB - 12.0)):
        analyzer = EmotionAnalyzer()
        for text in calibration:
            analyzer.estimate(
                measure(deliver(text, line_db=line_db, cache_dir=cache_dir), 16000), text
            )
        lines[name] = analyzer
    results = []
    for item in items:
        delivery = {"length_scale": item.length_scale, "gain_db": item.gain_db, "pitch": item.pitch}
        heard = measure(deliver(item.text, cache_dir=cache_dir, **delivery), ANALYSIS_RATE)
        quiet = measure(
            deliver(item.text, line_db=LINE_DB - 12.0, cache_dir=cache_dir, **delivery),
            ANALYSIS_RATE,
        )
        results.append(
            ItemResult(
                item=item,
                estimate=lines["line"].estimate(heard, item.text, learn=False),
                text_only=lines["line"].estimate(None, item.text, learn=False).label,
                quiet_line=lines["quiet"].estimate(quiet, item.text, learn=False).label,
            )
        )
    return EvalResult(items=tuple(results), seconds=round(time.monotonic() - started, 1))


def print_report(result: EvalResult) -> None:
    """Print accuracy overall and per label, the confusion table and the comparisons."""
    n = len(result.items)
    print(f"Emotion evaluation: {n} utterances, offline Piper voice, {result.seconds} s")
    print(f"  accuracy (words + voice): {result.accuracy:.1%}")
    print(f"  accuracy (words only):    {result.text_only_accuracy:.1%}")
    print(f"  accuracy, line 12 dB quieter: {result.quiet_line_accuracy:.1%}")
    print("  per label:")
    for label, (correct, total) in result.per_label.items():
        print(f"    {label:<11}{correct:>3}/{total:<3} {correct / total:6.1%}")
    short = [label[:5] for label in LABELS]
    print("  confusion (rows: intended, columns: estimated):")
    print("    " + " " * 11 + "".join(f"{s:>7}" for s in short))
    for label, row in result.confusion.items():
        if any(row.values()):
            print(f"    {label:<11}" + "".join(f"{row[c]:>7}" for c in LABELS))
    print(
        "  Note: one synthetic voice with no emotional prosody of its own; only the rate, energy "
        "and pitch written into the set vary. Not a measure of emotion in real voices."
    )


def _value(value: Any, names: dict[str, float], n: int, field: str) -> float:
    if isinstance(value, str) and value in names:
        return names[value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"item {n}: {field} must be one of {', '.join(names)} or a number")


def _share(flags: Any) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else 0.0


if __name__ == "__main__":
    print_report(run_eval(cache_dir=Path("tests/.artifacts/caller-voices")))
