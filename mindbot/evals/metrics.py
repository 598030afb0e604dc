"""The seed's success metrics, measured from the suite's calls.

- **Function call success rate**: of the calls the scenarios expect (``function_call``
  expectations, each call of their ``calls:``), the share the LLM made with the expected name
  and arguments; beside it, the share of the tool runs MindBot reported ``ok``.
- **Response latency**: for each reply, from the end of the caller's speech as the bot's VAD
  detected it (``vad_user_stopped_speaking``, less the VAD's stop time) to the bot's first
  audio (``bot_started_speaking``), both read by the harness off the eval transport; p50 and
  p95 over every reply of the suite (MindBot's own pipeline-side figure beside it).
- **STT word error rate**: the caller's spoken turns (Piper-synthesized) against what the bot's
  STT transcribed (``user_transcription``), corpus-level over the suite (jiwer), after the same
  normalization as the noise tests (case, punctuation) and numbers read as words.
- **Error rate**: the share of scenarios that failed or errored, and of turns that failed or
  were never played because an earlier turn failed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pipecat.evals.results import EvalScriptResult
from pipecat.evals.script import EvalScriptScenario

from mindbot.evals.responder import number_words

HARNESS_ERRORS = frozenset({"connect_failed", "closed_before_ready", "handshake_timeout", "error"})
"""Failure kinds that mean the call itself broke, not an expectation."""


@dataclass
class ScenarioOutcome:
    """What one scenario's call produced, as the metrics read it.

    Parameters:
        scenario: The scenario as Pipecat parsed it.
        result: The harness's result.
        tool_statuses: The status of each tool run MindBot reported.
        pipeline_errors: How many pipeline errors MindBot reported.
        bot_latencies: Voice-to-voice seconds as MindBot measured them (pipeline side).
    """

    scenario: EvalScriptScenario
    result: EvalScriptResult
    tool_statuses: list[str] = field(default_factory=list)
    pipeline_errors: int = 0
    bot_latencies: list[float] = field(default_factory=list)


@dataclass
class Metrics:
    """The suite's figures (counts, from which the rates follow).

    Parameters:
        scenarios: Scenarios run.
        scenarios_failed: Scenarios with a failed expectation.
        scenarios_errored: Scenarios whose call broke (no connection, no bot-ready, an error).
        turns: Turns in the scenarios run.
        turns_failed: Turns with a failed expectation.
        turns_not_run: Turns never played because an earlier turn failed.
        calls_expected: Function calls the scenarios expect.
        calls_made: Of those, the ones made as expected.
        tool_runs: Tool runs MindBot reported.
        tool_runs_ok: Of those, the ones that succeeded.
        latencies: Response latencies, seconds, as the harness measured them.
        bot_latencies: Voice-to-voice latencies, seconds, as MindBot measured them.
        stt_words: Words in the caller's spoken turns.
        stt_errors: Substituted, deleted and inserted words in their transcriptions.
        stt_utterances: Spoken turns.
        pipeline_errors: Pipeline errors MindBot reported.
    """

    scenarios: int = 0
    scenarios_failed: int = 0
    scenarios_errored: int = 0
    turns: int = 0
    turns_failed: int = 0
    turns_not_run: int = 0
    calls_expected: int = 0
    calls_made: int = 0
    tool_runs: int = 0
    tool_runs_ok: int = 0
    latencies: list[float] = field(default_factory=list)
    bot_latencies: list[float] = field(default_factory=list)
    stt_words: int = 0
    stt_errors: int = 0
    stt_utterances: int = 0
    pipeline_errors: int = 0

    @property
    def scenarios_passed(self) -> int:
        """Scenarios whose every expectation passed."""
        return self.scenarios - self.scenarios_failed - self.scenarios_errored

    @property
    def error_rate(self) -> float | None:
        """Share of scenarios that failed or errored."""
        return _ratio(self.scenarios_failed + self.scenarios_errored, self.scenarios)

    @property
    def turn_error_rate(self) -> float | None:
        """Share of turns that failed or were not played."""
        return _ratio(self.turns_failed + self.turns_not_run, self.turns)

    @property
    def function_call_success_rate(self) -> float | None:
        """Share of the expected function calls that were made as expected."""
        return _ratio(self.calls_made, self.calls_expected)

    @property
    def tool_success_rate(self) -> float | None:
        """Share of the tool runs that succeeded."""
        return _ratio(self.tool_runs_ok, self.tool_runs)

    @property
    def word_error_rate(self) -> float | None:
        """The STT's corpus-level word error rate."""
        return _ratio(self.stt_errors, self.stt_words)

    def latency(self, quantile: float, *, bot: bool = False) -> float | None:
        """A latency percentile, seconds (``bot``: MindBot's own measurement)."""
        return percentile(self.bot_latencies if bot else self.latencies, quantile)

    def as_dict(self) -> dict[str, Any]:
        """The counts and the rates, for the JSON report."""
        return asdict(self) | {
            "scenarios_passed": self.scenarios_passed,
            "error_rate": self.error_rate,
            "turn_error_rate": self.turn_error_rate,
            "function_call_success_rate": self.function_call_success_rate,
            "tool_success_rate": self.tool_success_rate,
            "word_error_rate": self.word_error_rate,
            "latency_p50": self.latency(0.5),
            "latency_p95": self.latency(0.95),
            "bot_latency_p50": self.latency(0.5, bot=True),
            "bot_latency_p95": self.latency(0.95, bot=True),
        }


def compute_metrics(outcomes: Iterable[ScenarioOutcome], *, vad_stop_secs: float = 0.0) -> Metrics:
    """The suite's metrics from its scenarios' outcomes.

    Args:
        outcomes: One per scenario run.
        vad_stop_secs: The bot's VAD stop time (see ``response_latencies``).
    """
    m = Metrics()
    references: list[str] = []
    hypotheses: list[str] = []
    for outcome in outcomes:
        result = outcome.result
        m.scenarios += 1
        if errored(result):
            m.scenarios_errored += 1
        elif not result.passed:
            m.scenarios_failed += 1
        m.turns += len(result.turns)
        m.turns_failed += sum(t.status == "failed" for t in result.turns)
        m.turns_not_run += sum(t.status == "not_run" for t in result.turns)
        expected, made = function_calls(outcome.scenario, result)
        m.calls_expected += expected
        m.calls_made += made
        m.tool_runs += len(outcome.tool_statuses)
        m.tool_runs_ok += sum(s == "ok" for s in outcome.tool_statuses)
        m.latencies.extend(response_latencies(result.events_seen, vad_stop_secs))
        m.bot_latencies.extend(outcome.bot_latencies)
        m.pipeline_errors += outcome.pipeline_errors
        said = spoken_turns(outcome.scenario, result)
        if said:
            references.append(" ".join(said))
            hypotheses.append(" ".join(heard(result.events_seen)))
            m.stt_utterances += len(said)
    m.stt_words, m.stt_errors = word_errors(references, hypotheses)
    return m


def errored(result: EvalScriptResult) -> bool:
    """Whether the call itself broke (rather than an expectation failing)."""
    return any(f.kind in HARNESS_ERRORS for f in result.failures)


def function_calls(scenario: EvalScriptScenario, result: EvalScriptResult) -> tuple[int, int]:
    """How many function calls the scenario expects, and how many were made as expected.

    A ``function_call`` expectation passes only when all its calls were made, so its calls
    count as made together; an expectation that failed or was never reached made none.
    """
    passed = {
        (turn.turn_index, e.expectation_index)
        for turn in result.turns
        for e in turn.expectations
        if e.passed
    }
    expected = made = 0
    for t, turn in enumerate(scenario.turns):
        for e, expectation in enumerate(turn.expect):
            if expectation.event != "function_call" or expectation.absent:
                continue
            calls = len(expectation.calls or [None])
            expected += calls
            made += calls if (t, e) in passed else 0
    return expected, made


def response_latencies(events: Sequence[dict[str, Any]], vad_stop_secs: float = 0.0) -> list[float]:
    """Seconds from each end of the caller's speech to the bot's next first audio.

    The caller's end of speech is the bot's raw VAD stop (``vad_user_stopped_speaking``) less
    the VAD's stop time, the silence it waits for, as Pipecat's ``UserBotLatencyObserver``
    counts it; the latest stop before the bot speaks, when the caller paused mid-sentence.
    Both events carry the harness's arrival time (``at``). Bot speech with no caller speech
    before it (the greeting) is not a response.

    Args:
        events: A call's events, in order (``EvalScriptResult.events_seen``).
        vad_stop_secs: The bot's VAD stop time (``audio.vad_stop_secs``).
    """
    latencies = []
    stopped: float | None = None
    for event in events:
        kind, at = event.get("type"), event.get("at")
        if kind == "vad_user_stopped_speaking" and at is not None:
            stopped = at - vad_stop_secs
        elif kind == "bot_started_speaking" and stopped is not None and at is not None:
            latencies.append(round(at - stopped, 3))
            stopped = None
    return latencies


def spoken_turns(scenario: EvalScriptScenario, result: EvalScriptResult) -> list[str]:
    """The caller's turns that were spoken to the bot (audio scenarios, turns that were played)."""
    if not scenario.user_audio:
        return []
    played = {t.turn_index for t in result.turns if t.status != "not_run"}
    return [
        turn.user
        for i, turn in enumerate(scenario.turns)
        if i in played and turn.user and turn.audio is None
    ]


def heard(events: Sequence[dict[str, Any]]) -> list[str]:
    """What the bot's STT transcribed, in order (its final transcriptions)."""
    return [str(e.get("transcript") or "") for e in events if e.get("type") == "user_transcription"]


def normalize(text: str) -> str:
    """Words only: lower case, no punctuation, numbers as words ("84" → "eighty four")."""
    text = re.sub(r"(?<=\w)['’](?=\w)", "", text.lower()).replace("-", " ")
    words = re.sub(r"[^\w\s]", " ", text).split()
    return " ".join(number_words(int(w)) if w.isdigit() else w for w in words)


def word_errors(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[int, int]:
    """Reference words and word errors (substitutions, deletions, insertions), corpus-level."""
    pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return 0, 0
    import jiwer

    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    words = sum(len(r.split()) for r, _ in pairs)
    return words, out.substitutions + out.deletions + out.insertions


def percentile(values: Sequence[float], quantile: float) -> float | None:
    """The ``quantile`` (0..1) of ``values`` by linear interpolation; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * quantile
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None
