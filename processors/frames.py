"""The frames MindBot's processors tell each other inside a pipeline.

Processors are building blocks that do not know each other; they talk through these frames,
so any of them can be left out of a pipeline and the rest still work. Like every processor,
this module imports Pipecat only.

- ``EmotionFrame``: the caller's estimated emotion for one user turn (the emotion detector
  emits it, downstream, just before the turn's final transcription).
- ``VoiceStyleFrame``: a request to change how the bot sounds (speed, volume, emotion, voice,
  language). Emotion detection, voice commands and language switching emit it; the voice
  style controller in front of the TTS applies it at the next utterance boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import DataFrame, SystemFrame


@dataclass
class EmotionFrame(DataFrame):
    """The caller's estimated emotion in one user turn.

    Parameters:
        label: One of ``neutral``, ``happy``, ``excited``, ``frustrated``, ``angry``, ``sad``,
            ``anxious``.
        valence: How pleasant, from -1 (very unpleasant) to 1 (very pleasant).
        arousal: How activated, from -1 (very calm) to 1 (very agitated).
        confidence: 0..1, how sure the estimate is.
        cues: What the estimate rests on (e.g. ``{"text_valence": -0.6, "pitch_var": 1.4}``),
            for logs at DEBUG and for evaluation; never the words themselves.
    """

    label: str
    valence: float
    arousal: float
    confidence: float
    cues: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.name}({self.label}, v={self.valence:+.2f}, a={self.arousal:+.2f})"

    def as_record(self) -> dict[str, Any]:
        """The estimate as stored with the turn: rounded numbers, never words."""
        return {
            "label": self.label,
            "valence": round(self.valence, 3),
            "arousal": round(self.arousal, 3),
            "confidence": round(self.confidence, 3),
            "cues": {k: round(float(v), 3) for k, v in self.cues.items()},
        }


@dataclass
class VoiceStyleFrame(SystemFrame):
    """Asks the voice style controller to change how the bot sounds.

    A system frame, so that an interruption never drops a request; the controller applies it
    at the start of the bot's next utterance, never in the middle of one. Every field left
    ``None`` keeps its current value.

    Parameters:
        source: Who asks: ``emotion``, ``command``, ``language`` or ``preference``.
        emotion: The bot's emotion for the next replies (Cartesia emotion names, e.g.
            ``calm``, ``content``, ``sympathetic``); ``"neutral"`` clears it.
        speed: Speaking rate as a multiple: of normal (0.6 to 1.5) from commands, preferences
            and language switching, which set the base; of that base from ``emotion``, which
            only nudges around what the caller asked for.
        speed_step: Speaking rate relative to the current one (e.g. 1.15 faster, 0.87 slower).
        volume: Output volume as a multiple, like ``speed`` (0.5 to 2.0).
        volume_step: Volume relative to the current one.
        voice: A TTS provider voice id.
        language: ISO 639-1 code the bot speaks in.
    """

    source: str
    emotion: str | None = None
    speed: float | None = None
    speed_step: float | None = None
    volume: float | None = None
    volume_step: float | None = None
    voice: str | None = None
    language: str | None = None
