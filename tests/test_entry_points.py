"""Both ways to run a pipeline: ``mindbot run`` and ``python pipelines/assistant.py -t twilio``."""

import pytest

from mindbot.harness import free_port, simulated_call, ws_url
from mindbot.standins import Text

from conftest import ServerProcess


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "mindbot", "run", "assistant", "--transport", "twilio", "--host", "127.0.0.1"],
        ["pipelines/assistant.py", "-t", "twilio", "--host", "127.0.0.1"],
    ],
    ids=["mindbot-run", "pipecat-runner"],
)
async def test_a_phone_call_to_a_separately_started_server(
    cloud_services, voice_cache, command, tmp_path
):
    cloud_services.llm.script(Text("Paris is the capital of France."))
    port = free_port()
    settings = cloud_services.settings | {"data_dir": tmp_path}
    server = ServerProcess([*command, "--port", str(port)], settings, port)
    try:
        await server.wait_ready()
        report = await simulated_call(
            ws_url(server.base_url),
            ["What is the capital of France?"],
            cache_dir=voice_cache,
            transcribe_replies=False,
        )
    finally:
        await server.stop()
    assert report.greeting.speech is not None
    assert report.turns[0].latency is not None
    user = [m["content"] for m in cloud_services.llm.requests[0]["messages"] if m["role"] == "user"]
    assert "capital of france" in user[-1].lower()
    assert server.process.returncode in (0, -15)
