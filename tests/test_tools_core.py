"""The tool system itself: schemas, validation, timeouts, retries, filler, confirmation, audit."""

from __future__ import annotations

import asyncio
import json
import textwrap

import httpx
import pytest

from mindbot.errors import ConfigError
from mindbot.tools import ToolContext, ToolError, ToolRegistry, ToolSession, ToolSettings, tool
from mindbot.tools.calculator import calculate, evaluate
from mindbot.tools.clock import current_time
from mindbot.tools.session import MAX_RESULT_CHARS, is_no, is_yes


class Flaky:
    """A service that fails ``failures`` times before it answers."""

    def __init__(self, failures: int, error: Exception):
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> dict:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return {"answer": 42}


def make_tools(service: Flaky, sent: list[str], delay: list[float]):
    @tool(label="the test service")
    async def lookup(ctx: ToolContext, query: str, limit: int = 3) -> dict:
        """Look something up.

        Args:
            query: What to look up.
            limit: How many answers.
        """
        await asyncio.sleep(delay[0])
        return await service()

    @tool(label="the outbox", confirm=lambda a: f"send {a['text']!r} to {a['to']}")
    async def send(ctx: ToolContext, to: str, text: str, api_token: str = "") -> dict:
        """Send a message.

        Args:
            to: Who gets it.
            text: The message.
            api_token: A credential for the outbox.
        """
        await asyncio.sleep(delay[0])
        await service()
        sent.append(f"{to}: {text}")
        return {"sent": True}

    return [lookup, send]


@pytest.fixture
async def tools():
    service, sent, delay, reports, spoken = Flaky(0, OSError()), [], [0.0], [], []
    settings = ToolSettings(timeout_secs=0.5, retries=2, filler_after_secs=0.2)
    async with httpx.AsyncClient() as http:
        session = ToolSession(
            make_tools(service, sent, delay),
            ToolContext(settings=settings, http=http),
            on_call=reports.append,
        )

        async def invoke(name, arguments, turns=("look it up",)):
            async def say(text):
                spoken.append(text)

            return await session.invoke(name, arguments, user_turns=list(turns), say=say)

        yield type(
            "Tools",
            (),
            dict(
                session=session,
                invoke=staticmethod(invoke),
                service=service,
                sent=sent,
                delay=delay,
                reports=reports,
                spoken=spoken,
            ),
        )


def test_schema_comes_from_the_signature_and_docstring():
    schema = calculate.schema().to_default_dict()
    assert schema["name"] == "calculate"
    assert schema["description"].startswith("Work out an arithmetic expression")
    assert schema["parameters"]["required"] == ["expression"]
    assert schema["parameters"]["properties"]["expression"]["type"] == "string"
    assert "timezone" not in current_time.required  # it has a default


def test_a_tool_without_a_docstring_is_refused():
    async def undocumented(ctx: ToolContext, x: int) -> dict:
        return {}

    with pytest.raises(TypeError, match="docstring"):
        tool(undocumented)


async def test_results_are_structured(tools):
    assert await tools.invoke("lookup", {"query": "x"}) == {"ok": True, "result": {"answer": 42}}
    assert tools.reports[-1].status == "ok" and tools.reports[-1].attempts == 1


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, "query: field required"),
        ({"query": 7}, "query: input should be a valid string"),
        ({"query": "x", "limit": "many"}, "limit: input should be a valid integer"),
        ({"query": "x", "extra": 1}, "extra: extra inputs are not permitted"),
        ("not an object", "must be an object"),
    ],
)
async def test_bad_arguments_are_refused_before_the_tool_runs(tools, arguments, problem):
    result = await tools.invoke("lookup", arguments)
    assert result["ok"] is False and result["error"] == "bad_arguments"
    assert problem in result["message"]
    assert tools.service.calls == 0


async def test_an_unknown_tool_is_a_clear_error(tools):
    result = await tools.invoke("rm_rf", {"path": "/"})
    assert result == {
        "ok": False,
        "error": "unknown_tool",
        "message": "There is no tool called 'rm_rf'.",
    }
    assert tools.reports[-1].name == "rm_rf" and tools.reports[-1].status == "error"


async def test_read_only_tools_are_retried_on_transient_errors(tools):
    tools.service.failures = 2
    result = await tools.invoke("lookup", {"query": "x"})
    assert result["ok"] is True
    assert tools.service.calls == 3 and tools.reports[-1].attempts == 3


async def test_retries_are_bounded(tools):
    tools.service.failures = 10
    result = await tools.invoke("lookup", {"query": "x"})
    assert result == {
        "ok": False,
        "error": "unavailable",
        "message": "I couldn't reach the test service.",
    }
    assert tools.service.calls == 3  # one try and settings.retries retries


async def test_errors_that_retrying_cannot_fix_are_not_retried(tools):
    tools.service.failures, tools.service.error = 5, ToolError("No such thing.", kind="not_found")
    result = await tools.invoke("lookup", {"query": "x"})
    assert result == {"ok": False, "error": "not_found", "message": "No such thing."}
    assert tools.service.calls == 1


async def test_a_crashing_tool_gives_a_generic_spoken_error(tools):
    tools.service.failures, tools.service.error = 1, KeyError("secret detail")
    result = await tools.invoke("lookup", {"query": "x"})
    assert result == {
        "ok": False,
        "error": "failed",
        "message": "Something went wrong with the test service.",
    }


async def test_a_slow_tool_times_out_with_a_filler_first(tools):
    tools.delay[0] = 5.0
    result = await tools.invoke("lookup", {"query": "x"})
    assert tools.reports[-1].attempts == 1  # a timeout is not retried
    assert result["error"] == "timeout"
    assert result["message"] == "The test service took too long to answer."
    assert tools.spoken == ["One moment, let me check."]


async def test_a_quick_tool_gets_no_filler(tools):
    await tools.invoke("lookup", {"query": "x"})
    await asyncio.sleep(0.3)  # past filler_after_secs: a forgotten timer would speak now
    assert tools.spoken == []


async def test_a_side_effect_waits_for_a_spoken_yes(tools):
    proposal = await tools.invoke("send", {"to": "Sam", "text": "running late"})
    assert proposal["needs_confirmation"] is True
    assert proposal["action"] == "send 'running late' to Sam"
    assert tools.sent == [] and tools.service.calls == 0
    assert tools.session.pending_action == "send 'running late' to Sam"

    # The LLM confirming on its own, before the caller answered, changes nothing.
    early = await tools.invoke("confirm_action", {})
    assert early["error"] == "not_confirmed" and tools.sent == []

    done = await tools.invoke("confirm_action", {}, turns=["look it up", "Yes, please send it."])
    assert done == {"ok": True, "result": {"sent": True}}
    assert tools.sent == ["Sam: running late"]
    assert tools.reports[-1].name == "send" and tools.reports[-1].confirmed is True

    again = await tools.invoke("confirm_action", {}, turns=["look it up", "Yes", "yes"])
    assert again["error"] == "not_confirmed" and tools.sent == ["Sam: running late"]


@pytest.mark.parametrize("answer", ["No, don't send it.", "Wait.", "Yes. Actually no."])
async def test_a_no_drops_the_action(tools, answer):
    await tools.invoke("send", {"to": "Sam", "text": "hi"})
    result = await tools.invoke("confirm_action", {}, turns=["look it up", answer])
    assert result["error"] == "not_confirmed" and "said no" in result["message"]
    assert tools.reports[-1].status == "declined"
    assert tools.session.pending_action is None and tools.sent == []


async def test_an_unclear_answer_asks_again(tools):
    await tools.invoke("send", {"to": "Sam", "text": "hi"})
    result = await tools.invoke("confirm_action", {}, turns=["look it up", "What's the weather?"])
    assert "did not clearly say yes" in result["message"]
    assert tools.session.pending_action is not None and tools.sent == []


async def test_the_llm_cannot_change_what_was_confirmed(tools):
    await tools.invoke("send", {"to": "Sam", "text": "hi"})
    sneaky = await tools.invoke("confirm_action", {"to": "Eve"}, turns=["x", "yes"])
    assert sneaky["error"] == "bad_arguments" and tools.sent == []
    await tools.invoke("confirm_action", {}, turns=["x", "yes"])
    assert tools.sent == ["Sam: hi"]


async def test_a_proposal_expires(tools):
    tools.session._settings = ToolSettings(confirm_within_secs=0.01)
    await tools.invoke("send", {"to": "Sam", "text": "hi"})
    await asyncio.sleep(0.05)
    result = await tools.invoke("confirm_action", {}, turns=["x", "yes"])
    assert "expired" in result["message"] and tools.sent == []


async def test_cancel_drops_the_proposal(tools):
    await tools.invoke("send", {"to": "Sam", "text": "hi"})
    result = await tools.invoke("cancel_action", {})
    assert result == {"ok": True, "result": {"cancelled": "send 'hi' to Sam"}}
    assert (await tools.invoke("confirm_action", {}, turns=["x", "yes"]))["ok"] is False
    assert tools.sent == []


async def test_secret_arguments_never_reach_the_audit_trail(tools):
    await tools.invoke("send", {"to": "Sam", "text": "hi", "api_token": "tok-123"})
    await tools.invoke("confirm_action", {}, turns=["x", "yes"])
    for report in tools.reports:
        assert "tok-123" not in json.dumps(report.as_record())
    assert tools.reports[-1].arguments["api_token"] == "[redacted]"


async def test_long_results_are_cut(tools):
    @tool
    async def dump(ctx: ToolContext) -> dict:
        """Return a lot."""
        return {"rows": ["x" * 100] * 200}

    async with httpx.AsyncClient() as http:
        session = ToolSession([dump], ToolContext(settings=ToolSettings(), http=http))
        result = await session.invoke("dump", {})
    assert result["result"]["truncated"] is True
    assert len(result["result"]["text"]) == MAX_RESULT_CHARS


def test_yes_and_no():
    for words in ("Yes", "yeah go ahead", "Sure, do it.", "OK", "yes please", "Yes, cancel it."):
        assert is_yes(words), words
    for words in ("No", "no thanks", "don't", "wait", "yes no", "not yet", "hold on"):
        assert not is_yes(words), words
        assert is_no(words), words
    assert not is_yes("what's the time") and not is_no("what's the time")


@pytest.mark.parametrize(
    ("expression", "value"),
    [("2 + 2 * 3", 8), ("(12.5 * 3) + 4", 41.5), ("2 ** 10", 1024), ("17 % 5", 2), ("-3", -3)],
)
def test_the_calculator(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "9 ** 9 ** 9",
        "(10 ** 100) ** 2",
        "__import__('os').system('id')",
        "open('/etc/passwd')",
        "[1] * 10",
        "x",
        "1 / 0",
        "lambda: 1",
        "2 +",
        "1" * 300,
    ],
)
async def test_the_calculator_refuses_anything_but_arithmetic(expression):
    async with httpx.AsyncClient() as http:
        session = ToolSession([calculate], ToolContext(settings=ToolSettings(), http=http))
        result = await session.invoke("calculate", {"expression": expression})
    assert result["ok"] is False and result["error"] == "bad_arguments"


async def test_the_clock_uses_the_callers_time_zone():
    async with httpx.AsyncClient() as http:
        context = ToolContext(settings=ToolSettings(), http=http, timezone="Asia/Tokyo")
        session = ToolSession([current_time], context)
        own = await session.invoke("current_time", {})
        there = await session.invoke("current_time", {"timezone": "america/new_york"})
        bad = await session.invoke("current_time", {"timezone": "Mars/Olympus"})
    assert own["result"]["timezone"] == "Asia/Tokyo" and own["result"]["utc_offset"] == "+0900"
    assert there["result"]["timezone"] == "America/New_York"
    assert bad["error"] == "bad_arguments" and "Mars/Olympus" in bad["message"]


def test_a_tool_file_loads_into_the_registry(tmp_path):
    path = tmp_path / "crm.py"
    path.write_text(
        textwrap.dedent(
            '''
            from mindbot.tools import ToolContext, tool

            @tool(label="the CRM")
            async def find_customer(ctx: ToolContext, name: str) -> dict:
                """Find a customer by name.

                Args:
                    name: The customer's name.
                """
                return {"name": name}
            '''
        )
    )
    registry = ToolRegistry.default(ToolSettings(modules=[str(path)]))
    assert registry.get("find_customer") is not None
    assert [t.name for t in registry.select(["crm"])] == ["find_customer"]
    assert [t.name for t in registry.select(["calculator", "clock"])] == [
        "calculate",
        "current_time",
    ]
    assert registry.unknown(["crm", "calendar", "teleport"]) == ["teleport"]


def test_tools_that_need_settings_are_left_out_until_configured():
    registry = ToolRegistry.default(ToolSettings())
    assert registry.get("send_email") is not None
    assert "send_email" not in [t.name for t in registry.select(["email"])]
    configured = ToolRegistry.default(ToolSettings(email={"smtp_host": "localhost"}))
    assert "send_email" in [t.name for t in configured.select(["email"])]


def test_bad_tool_modules_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot load tool module 'no.such.module'"):
        ToolRegistry.default(ToolSettings(modules=["no.such.module"]))
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(ConfigError, match="defines no @tool functions"):
        ToolRegistry.default(ToolSettings(modules=[str(empty)]))
    clash = tmp_path / "clash.py"
    clash.write_text(
        "from mindbot.tools import tool\n"
        "@tool\nasync def calculate(ctx, x: str) -> dict:\n"
        '    """Shadow the calculator.\n\n    Args:\n        x: x.\n    """\n'
        "    return {}\n"
    )
    with pytest.raises(ConfigError, match="two tools are called 'calculate'"):
        ToolRegistry.default(ToolSettings(modules=[str(clash)]))
