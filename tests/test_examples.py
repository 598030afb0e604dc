"""Every example runs on its own, offline, and does what its docstring says."""

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINDBOT_")}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_hello_greets_and_answers(tmp_path):
    out = run_example("01-hello.py", "What is the capital of France?", cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("MindBot: ") and "help" in lines[0].lower()
    assert lines[1] == "Caller:  What is the capital of France?"
    assert lines[2].startswith("MindBot: ") and len(lines[2]) > len("MindBot: ") + 5


def test_the_custom_pipeline_ends_the_call_at_its_time_limit(tmp_path):
    out = run_example("02-custom-pipeline.py", "5", cwd=tmp_path)
    assert "MindBot greeted the caller" in out
    ended = next(line for line in out.splitlines() if "ended the call" in line)
    assert float(ended.split()[0]) >= 5.0


def test_the_new_processor_speaks_its_notice(tmp_path):
    out = run_example("03-new-processor.py", cwd=tmp_path)
    heard = out.splitlines()[-1].lower()
    assert "emergency" in heard and "nine one one" in heard or "911" in heard


def test_the_custom_tool_asks_before_it_cancels(tmp_path):
    out = run_example("04-custom-tool.py", cwd=tmp_path)
    assert '"status": "shipped on Monday"' in out
    assert '"needs_confirmation": true, "action": "cancel order A200"' in out
    assert "The caller has not answered yet" in out
    assert out.strip().endswith("Order A200 is now cancelled.")
