"""The ``mindbot eval suite`` command line.

mindbot eval suite [SCENARIOS ...] [--live] [--json FILE] [-k NAME] [--pipeline NAME] [-v]

Prints each scenario's result as it finishes, then the metrics table; exits 1 when a scenario
failed, 0 when all passed or a ``--live`` run was skipped (the reason is printed).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipecat.evals.results import EvalScriptTurnProgress

    from mindbot.evals.catalog import SuiteScenario


def add_suite_eval(evals: argparse._SubParsersAction) -> None:
    """Add ``suite`` to the ``mindbot eval`` subcommands.

    Args:
        evals: The ``mindbot eval`` subparsers.
    """
    suite = evals.add_parser(
        "suite", help="conversation scenarios through Pipecat's eval transport, and the metrics"
    )
    suite.add_argument(
        "scenarios", nargs="*", help="scenario files or folders (default: the packaged ones)"
    )
    suite.add_argument(
        "--live",
        action="store_true",
        help="against the configured providers (needs a tool-calling LLM's key), not the "
        "offline stack with the scripted LLM",
    )
    suite.add_argument("--json", help="also write the report to this file")
    suite.add_argument("-k", "--only", help="run only the scenarios whose name contains this")
    suite.add_argument("--pipeline", default="assistant", help="the pipeline under test")
    suite.add_argument(
        "--turn-timeout", type=float, default=30.0, help="seconds a turn's expectations may take"
    )
    suite.add_argument("--voice-cache", help="folder for the caller's synthesized turns")
    suite.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print each turn and expectation as it resolves",
    )
    suite.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> None:
    """Run ``mindbot eval suite`` (the handler ``add_suite_eval`` registers)."""
    import asyncio

    from mindbot.logs import configure_logging

    configure_logging("WARNING")
    if not asyncio.run(_run(args)):
        raise SystemExit(1)


async def _run(args: argparse.Namespace) -> bool:
    import contextlib
    import tempfile

    from pipecat.evals.session import EvalSessionParams

    from mindbot.cli import load_pipeline
    from mindbot.evals.catalog import load_scenarios
    from mindbot.evals.runner import default_voice_cache
    from mindbot.evals.suite import (
        ci_settings,
        eval_bot,
        format_line,
        format_report,
        live_settings,
        run_suite,
        write_json,
    )

    scenarios = load_scenarios([Path(p) for p in args.scenarios], only=args.only)
    if not scenarios:
        print("No scenarios to run.")
        return False
    run = load_pipeline(args.pipeline)
    voices = Path(args.voice_cache) if args.voice_cache else default_voice_cache()
    params = EvalSessionParams(
        connect_timeout_s=10.0,
        bot_ready_timeout_s=60.0,
        default_timeout_ms=int(args.turn_timeout * 1000),
        cache_dir=str(voices),
    )
    with tempfile.TemporaryDirectory(prefix="mindbot-eval-") as folder:
        scratch = Path(folder)
        if args.live:
            settings = live_settings(scratch)
            if isinstance(settings, str):
                print(f"skipped: {settings}")
                return True
            profile = contextlib.nullcontext(settings)
        else:
            profile = ci_settings(scratch)
        async with profile as settings, eval_bot(settings) as bot:
            print(f"Running {len(scenarios)} scenarios ({'live' if args.live else 'ci'})")
            report = await run_suite(
                bot,
                run,
                scenarios,
                profile="live" if args.live else "ci",
                params=params,
                on_done=lambda r: print(format_line(r), flush=True),
                on_progress=_print_progress if args.verbose else None,
            )
    print()
    print(format_report(report))
    if args.json:
        write_json(report, Path(args.json))
        print(f"wrote {args.json}")
    return report.passed


def _print_progress(item: SuiteScenario, record: EvalScriptTurnProgress) -> None:
    """One line per turn sent and per expectation resolved (``--verbose``)."""
    what = "says" if record.status == "turn" else f"{record.status} {record.event_name}:"
    detail = record.event_name if record.status == "turn" else record.detail
    print(f"      {item.name} turn {record.turn_index} {what} {detail}", flush=True)
