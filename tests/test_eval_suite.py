"""The eval suite (``mindbot eval suite``): Pipecat's scenario format, harness and matcher against
the assistant through Pipecat's eval transport.

In the ci profile (offline Whisper and Piper, the scripted LLM) the packaged scenarios pass and
the metrics come out of the calls; a scenario with a wrong expectation fails with Pipecat's
reason; the metrics are computed as documented from results built by hand; ``--live`` without
keys is skipped with the reason.
"""

from __future__ import annotations

import json
import os

import pytest
import pytest_asyncio
from pipecat.evals.results import (
    EvalAssertionFailure,
    EvalExpectationResult,
    EvalScriptResult,
    EvalScriptTurnResult,
)
from pipecat.evals.script import (
    EvalExpectation,
    EvalFunctionCall,
    EvalScriptScenario,
    EvalScriptTurn,
)
from pipecat.evals.session import EvalSessionParams

from mindbot.evals.catalog import SCENARIOS_DIR, load_scenarios
from mindbot.evals.metrics import (
    ScenarioOutcome,
    compute_metrics,
    normalize,
    percentile,
    response_latencies,
)
from mindbot.evals.suite import (
    ci_settings,
    eval_bot,
    format_line,
    format_report,
    run_suite,
    write_json,
)
from pipelines.assistant import run

from conftest import ARTIFACTS, mindbot

PACKAGED = {
    "commands/repeat_that",
    "conversation/remembers_the_name_said_earlier",
    "greeting/first_call",
    "knowledge/answer_with_its_source",
    "memory/first_call",
    "memory/second_call",
    "tools/calculator",
    "tools/clock",
}

WRONG = """\
name: wrong
user: !include {dir}/caller.yaml
judge: !include {dir}/judge.yaml
scenarios:
  - name: greeting_and_tool
    turns:
      - expect:
          - event: tts_response
            text_contains: "I'm HAL"
            within_ms: 6000
      - user: "What is twelve times seven"
        expect:
          - event: function_call
            calls:
              - name: calculate
"""


def params() -> EvalSessionParams:
    return EvalSessionParams(
        connect_timeout_s=10.0,
        bot_ready_timeout_s=60.0,
        default_timeout_ms=30000,
        cache_dir=str(ARTIFACTS / "eval-voices"),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def eval_bot_ci(tmp_path_factory):
    """A MindBot in the ci profile (no developer MINDBOT_* settings), for the module."""
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("MINDBOT_")]:
            env.delenv(name)
        scratch = tmp_path_factory.mktemp("eval")
        async with ci_settings(scratch, _env_file=None) as settings, eval_bot(settings) as bot:
            yield bot


@pytest.mark.asyncio(loop_scope="module")
async def test_the_packaged_scenarios_pass_in_the_ci_profile(eval_bot_ci, tmp_path):
    report = await run_suite(eval_bot_ci, run, load_scenarios(), profile="ci", params=params())

    lines = "\n".join(format_line(r) for r in report.runs)
    assert report.passed, lines
    assert {r.item.name for r in report.runs} == PACKAGED
    m = report.metrics
    assert (m.scenarios, m.scenarios_passed, m.turns, m.turns_failed) == (8, 8, 11, 0)
    assert (m.calls_expected, m.calls_made, m.tool_runs, m.tool_runs_ok) == (2, 2, 2, 2)
    # A reply for every spoken turn, measured by the harness and by MindBot alike.
    said = [t.user for s in load_scenarios() for t in s.scenario.turns if t.user]
    assert len(m.latencies) == len(said) == 9 and all(x > 0 for x in m.latencies)
    assert len(m.bot_latencies) == len(said)
    assert m.stt_utterances == len(said)
    assert m.stt_words == sum(len(normalize(text).split()) for text in said)
    assert m.word_error_rate is not None and m.word_error_rate < 0.2
    assert m.pipeline_errors == 0

    by_name = {r.item.name: r for r in report.runs}
    assert by_name["commands/repeat_that"].report.commands == ["repeat"]
    assert (
        "Office Handbook, section Guest Wi-Fi"
        in by_name["knowledge/answer_with_its_source"].report.sources
    )
    calls = by_name["tools/clock"].report.tool_calls
    assert calls == [("current_time", "ok")]

    table = format_report(report)
    assert "scenarios passed            8/8" in table
    assert "function call success rate  100.0% (2/2 expected calls made" in table
    write_json(report, tmp_path / "report.json")
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["passed"] is True and saved["profile"] == "ci"
    assert saved["metrics"]["function_call_success_rate"] == 1.0
    assert saved["metrics"]["latency_p50"] == m.latency(0.5)
    assert [s["status"] for s in saved["scenarios"]] == ["pass"] * 8


@pytest.mark.asyncio(loop_scope="module")
async def test_a_wrong_expectation_fails_with_a_clear_message(eval_bot_ci, tmp_path):
    path = tmp_path / "wrong.yaml"
    path.write_text(WRONG.format(dir=SCENARIOS_DIR))
    report = await run_suite(
        eval_bot_ci, run, load_scenarios([path]), profile="ci", params=params()
    )

    (result,) = [r.result for r in report.runs]
    assert not report.passed and not result.passed
    (failure,) = result.failures
    assert (failure.turn_index, failure.event_name, failure.kind) == (
        0,
        "tts_response",
        "text_mismatch",
    )
    assert 'does not contain "I\'m HAL"' in failure.reason
    assert [t.status for t in result.turns] == ["failed", "not_run"]
    line = format_line(report.runs[0])
    assert line.startswith("FAIL  wrong/greeting_and_tool") and "I'm HAL" in line
    m = report.metrics
    assert (m.error_rate, m.turn_error_rate, m.function_call_success_rate) == (1.0, 1.0, 0.0)


def test_metrics_are_computed_from_the_results():
    calls = EvalExpectation("function_call", calls=[EvalFunctionCall("a"), EvalFunctionCall("b")])
    other_call = EvalExpectation("function_call", calls=[EvalFunctionCall("c")])
    scenario = EvalScriptScenario(
        "s/one",
        turns=[
            EvalScriptTurn(
                "What is twelve times seven", expect=[calls, EvalExpectation("llm_response")]
            ),
            EvalScriptTurn("My name is Grace", expect=[other_call]),
            EvalScriptTurn("Never said", expect=[EvalExpectation("llm_response")]),
        ],
        user_audio=True,
    )
    events = [
        {"type": "bot_started_speaking", "at": 0.5},  # the greeting: no caller speech before it
        {"type": "vad_user_stopped_speaking", "at": 2.0},
        {"type": "user_transcription", "transcript": " What is 12 times 7? ", "at": 2.1},
        {"type": "bot_started_speaking", "at": 2.8},
        {"type": "vad_user_stopped_speaking", "at": 5.0},  # a pause mid-sentence
        {"type": "vad_user_stopped_speaking", "at": 6.0},
        {"type": "user_transcription", "transcript": "My name is Grey.", "at": 6.1},
        {"type": "bot_started_speaking", "at": 7.7},
    ]
    failure = EvalAssertionFailure(
        1, 0, "function_call", "function call 'c' not seen", "missing_function_call"
    )
    result = EvalScriptResult(
        "s/one",
        passed=False,
        failures=[failure],
        turns=[
            EvalScriptTurnResult(
                0,
                "passed",
                expectations=[
                    EvalExpectationResult(0, "function_call", True),
                    EvalExpectationResult(1, "llm_response", True),
                ],
            ),
            EvalScriptTurnResult(
                1, "failed", [failure], [EvalExpectationResult(0, "function_call", False)]
            ),
            EvalScriptTurnResult(2, "not_run"),
        ],
        events_seen=events,
    )
    broken = EvalScriptResult(
        "s/two",
        passed=False,
        failures=[EvalAssertionFailure(-1, -1, "<connect>", "refused", "connect_failed")],
        turns=[EvalScriptTurnResult(0, "not_run")],
    )
    outcomes = [
        ScenarioOutcome(scenario, result, tool_statuses=["ok", "error"], bot_latencies=[0.9]),
        ScenarioOutcome(
            EvalScriptScenario(
                "s/two", turns=[EvalScriptTurn("Hi", expect=[other_call])], user_audio=True
            ),
            broken,
            pipeline_errors=1,
        ),
    ]

    m = compute_metrics(outcomes, vad_stop_secs=0.2)

    assert (m.scenarios, m.scenarios_failed, m.scenarios_errored, m.scenarios_passed) == (
        2,
        1,
        1,
        0,
    )
    assert m.error_rate == 1.0
    assert (m.turns, m.turns_failed, m.turns_not_run) == (4, 1, 2)
    assert m.turn_error_rate == 0.75
    # Two calls made by the passed expectation; "c" missing twice (failed, and never reached).
    assert (m.calls_expected, m.calls_made) == (4, 2) and m.function_call_success_rate == 0.5
    assert (m.tool_runs, m.tool_runs_ok, m.tool_success_rate) == (2, 1, 0.5)
    # 2.8 - (2.0 - 0.2) and 7.7 - (6.0 - 0.2): the latest stop before the bot speaks.
    assert m.latencies == [1.0, 1.9]
    assert m.bot_latencies == [0.9] and m.pipeline_errors == 1
    # Turns 0 and 1 were spoken ("12 times 7" is "twelve times seven"; "Grey" is one error);
    # turn 2 never was, and the broken call spoke nothing.
    assert (m.stt_utterances, m.stt_words, m.stt_errors) == (2, 9, 1)
    assert m.word_error_rate == pytest.approx(1 / 9)


def test_the_pieces_of_the_metrics():
    assert normalize("What's 84 + 12? Wi-Fi!") == "whats eighty four twelve wi fi"
    assert percentile([2.0, 0.5, 1.5, 1.0], 0.5) == pytest.approx(1.25)
    assert percentile([2.0, 0.5, 1.5, 1.0], 0.95) == pytest.approx(1.925)
    assert percentile([], 0.5) is None
    assert response_latencies([{"type": "bot_started_speaking", "at": 1.0}]) == []


def test_live_without_keys_is_skipped_with_the_reason(tmp_path):
    done = mindbot(tmp_path, "eval", "suite", "--live")
    assert done.returncode == 0, done.stderr
    assert "skipped: --live needs an LLM that can call tools" in done.stdout
    assert "MINDBOT_OPENAI_API_KEY" in done.stdout
