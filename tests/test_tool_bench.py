"""The tool benchmark's short mode: one round of every case, through Pipecat's function calling."""

from mindbot.cli import main
from mindbot.tool_bench import run_tool_bench


async def test_one_round_of_the_tool_suite():
    result = await run_tool_bench(rounds=1)
    summary = result.summary()
    assert summary["calls"] == 11 and summary["faulted"] == 5
    assert summary["non_faulted_succeeded"] == summary["non_faulted"] == 6
    assert summary["faulted_answered"] == 5 and summary["silent_or_crashed"] == 0
    assert summary["fillers_spoken"] >= 1  # the slow weather call got one
    assert summary["tool_reports"] == 11
    by_name = {case.name: case.result for case in result.cases}
    assert by_name["weather, slow"]["error"] == "timeout"
    assert by_name["note confirmed"] == {"ok": True, "result": {"saved": "note 0"}}


def test_the_command_prints_the_figures(capsys, tmp_path):
    main(["bench", "tools", "--rounds", "1", "--json", str(tmp_path / "tools.json")])
    out = capsys.readouterr().out
    assert "11 tool calls: 6/6 without faults succeeded; 5/5" in out
    assert "tool layer overhead per call" in out
    assert (tmp_path / "tools.json").read_text().startswith("{")
