"""Running a pipeline file the Pipecat way: ``python pipelines/NAME.py -t webrtc|daily|twilio``.

Pipecat's development runner serves the routes and calls the module's ``bot(runner_args)`` for
each session; these helpers give that ``bot`` the same process-wide MindBot runtime, transports
and session handling as ``mindbot run``.
"""

from __future__ import annotations

import atexit
import sys

from loguru import logger
from pipecat.runner.types import (
    DailyRunnerArguments,
    RunnerArguments,
    SmallWebRTCRunnerArguments,
    WebSocketRunnerArguments,
)

from mindbot.config import Settings
from mindbot.errors import MindBotError
from mindbot.logs import configure_logging
from mindbot.runtime import MindBot, PipelineRun
from mindbot.session import Call
from mindbot.transports import (
    accept_twilio_call,
    daily_transport,
    twilio_transport,
    webrtc_transport,
)

_runtime: MindBot | None = None


def main() -> None:
    """Start MindBot, then hand over to Pipecat's runner (which parses ``sys.argv``)."""
    global _runtime
    try:
        settings = Settings.load()
        configure_logging(settings.log_level)
        _runtime = MindBot(settings)
        _runtime.start()
    except MindBotError as e:
        print(f"mindbot: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    atexit.register(_runtime.stop)
    from pipecat.runner.run import main as pipecat_main

    pipecat_main()


async def run_from_runner(run: PipelineRun, runner_args: RunnerArguments) -> None:
    """Run one session that Pipecat's runner started."""
    if _runtime is None:
        raise RuntimeError("run the pipeline file as a script, which starts MindBot first")
    body = runner_args.body if isinstance(runner_args.body, dict) else {}
    user_id = body.get("user_id") if isinstance(body.get("user_id"), str) else None
    if isinstance(runner_args, SmallWebRTCRunnerArguments):
        transport = webrtc_transport(runner_args.webrtc_connection, _runtime.settings.audio)
        call = Call(transport="webrtc", user_id=user_id, body=body)
    elif isinstance(runner_args, DailyRunnerArguments):
        transport = daily_transport(
            runner_args.room_url, runner_args.token, _runtime.settings.audio
        )
        call = Call(transport="daily", user_id=user_id, body=body)
    elif isinstance(runner_args, WebSocketRunnerArguments):
        twilio_call = await accept_twilio_call(runner_args.websocket)
        if twilio_call is None:
            await runner_args.websocket.close(code=1008)
            return
        call = twilio_call
        transport = twilio_transport(runner_args.websocket, call, _runtime.settings)
    else:
        logger.error(f"Unsupported runner arguments {type(runner_args).__name__}")
        return
    await _runtime.run_session(run, transport, call)
