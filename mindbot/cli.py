"""The ``mindbot`` command: the composition root that reads the settings and wires everything.

mindbot run [PIPELINE] [--transport webrtc|daily|twilio] [--host H] [--port P]
mindbot pipelines
mindbot keys create NAME --scopes read,write [--rate N] | keys list | keys revoke ID|PREFIX
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from mindbot.config import Settings
from mindbot.errors import ConfigError, MindBotError
from mindbot.logs import configure_logging

if TYPE_CHECKING:
    from mindbot.runtime import PipelineRun

PIPELINE_GROUP = "mindbot.pipelines"


def available_pipelines() -> dict[str, str]:
    """Pipeline names → modules, from the ``mindbot.pipelines`` entry points."""
    return {ep.name: ep.value for ep in entry_points(group=PIPELINE_GROUP)}


def load_pipeline(name: str) -> PipelineRun:
    """The ``run`` entry point of the pipeline called ``name``.

    Raises:
        ConfigError: No pipeline has that name.
    """
    return _pipeline_module(name).run


def _pipeline_module(name: str):
    for ep in entry_points(group=PIPELINE_GROUP):
        if ep.name == name:
            return ep.load()
    known = ", ".join(sorted(available_pipelines())) or "none"
    raise ConfigError(f"Unknown pipeline {name!r}; known pipelines: {known}")


def _run(args: argparse.Namespace) -> None:
    import uvicorn

    from mindbot.runtime import MindBot
    from mindbot.server import create_app, freeze_heap, server_config

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings.load(**overrides)
    configure_logging(settings.log_level)
    run = load_pipeline(args.pipeline)
    bot = MindBot(settings)
    bot.start()
    try:
        app = create_app(bot, run, join_daily=args.transport == "daily")
        base = f"http://{settings.host}:{settings.port}"
        if args.transport == "webrtc":
            print(
                f"MindBot ({args.pipeline}) is ready: open {base}/ and press Connect.", flush=True
            )
        elif args.transport == "twilio":
            public = settings.public_url or "https://<your public host>"
            print(
                f"MindBot ({args.pipeline}) is ready for Twilio: set your number's voice webhook "
                f"to POST {public}/twilio (media stream on {public}/ws).",
                flush=True,
            )
        config = server_config(app, settings, host=settings.host, port=settings.port)
        freeze_heap()
        uvicorn.Server(config).run()
    finally:
        bot.stop()


def _call(args: argparse.Namespace) -> None:
    import asyncio

    from mindbot.harness import simulated_call

    configure_logging("WARNING")
    report = asyncio.run(simulated_call(args.url, args.utterances, from_number=args.from_number))
    print(f"bot ({report.greeting.latency:.2f} s after start): {report.greeting.heard}")
    for turn in report.turns:
        print(f"caller: {turn.said}")
        print(f"bot ({turn.latency:.2f} s after the caller stopped): {turn.heard}")


def _bench_latency(args: argparse.Namespace) -> None:
    import asyncio

    asyncio.run(_bench_latency_run(args))


SCRIPTED_REPLY = "Here is a short answer to your question, and I hope it helps."


async def _bench_latency_run(args: argparse.Namespace) -> None:
    import asyncio
    import tempfile
    from contextlib import AsyncExitStack
    from pathlib import Path

    from mindbot.bench import (
        KB_OFF,
        STORAGE_OFF,
        cloud_profile,
        format_summary,
        run_latency_bench,
        write_json,
    )
    from mindbot.runtime import MindBot

    overrides: dict = {
        "llm_temperature": args.temperature,
        "llm_max_tokens": args.max_tokens,
        "user_idle_secs": 0,
    }
    configure_logging("WARNING")
    module = _pipeline_module(args.pipeline)
    started: list[MindBot] = []

    async def start(settings: Settings) -> MindBot:
        bot = MindBot(settings)
        await asyncio.to_thread(bot.start)
        started.append(bot)
        return bot

    async with AsyncExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mindbot-bench-")))
        cloud = None
        if args.profile == "cloud":
            cloud = await stack.enter_async_context(cloud_profile())
            overrides |= cloud.settings | {"stt": "deepgram", "tts": "cartesia"}
        settings = Settings.load(**overrides)
        if args.scripted_llm and cloud is None:
            from mindbot.standins import ScriptedLLMServer, Text

            llm = ScriptedLLMServer(
                default_reply=Text(SCRIPTED_REPLY), first_token_delay=args.llm_delay
            )
            await stack.enter_async_context(llm)
            settings = settings.model_copy(
                update={"llm_base_url": llm.base_url, "llm_model": "scripted"}
            )
        if args.storage_off_too or args.kb_off_too or cloud is not None:
            # Memory learns between calls on the shared LLM (or would ask the scripted one);
            # off, so that only one feature differs.
            settings = settings.model_copy(update={"memory": False})
        if args.kb_off_too:
            kb_settings = settings.kb.model_copy(
                update={"folder": scratch / "kb", "watch_dirs": []}
            )
            settings = settings.model_copy(update={"kb": kb_settings})
        questions = None
        try:
            bot = await start(settings)
            twin_settings = settings.model_copy(
                update={"llm_base_url": bot.services.llm_endpoint.base_url}
            )
            variants = {}
            if args.storage_off_too:
                variants[STORAGE_OFF] = await start(
                    twin_settings.model_copy(update={"storage": False})
                )
            if args.kb_off_too:
                kb = await asyncio.to_thread(bot.knowledge_base, "default", create=True)
                await asyncio.to_thread(kb.add, [Path(args.kb_corpus)])
                questions = _spoken_questions(Path(args.kb_eval))
                empty = settings.kb.model_copy(update={"folder": scratch / "no-kb"})
                variants[KB_OFF] = await start(twin_settings.model_copy(update={"kb": empty}))
            result = await run_latency_bench(
                bot,
                module.run,
                system_instruction=bot.personas.get(settings.persona).system_instruction(),
                calls=args.calls,
                turns_per_call=args.turns,
                baseline=not args.no_baseline,
                warmup_calls=args.warmup,
                variants=variants,
                questions=questions,
                cloud=cloud,
            )
        finally:
            for each in reversed(started):
                await asyncio.to_thread(each.stop)
    print(format_summary(result.summary()))
    if args.json:
        write_json(result, Path(args.json))
        print(f"wrote {args.json}")


def _bench_plot(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mindbot.bench_plots import load_results, plot_results

    try:
        data = load_results(Path(args.results))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    for path in plot_results(data, Path(args.out)):
        print(f"wrote {path}")


def _bench_capacity(args: argparse.Namespace) -> None:
    # The bench imports the whole runtime; other commands should not pay for it.
    from mindbot.capacity_bench import bench_capacity

    bench_capacity(args)


def _bench_table(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mindbot.bench import machine_description
    from mindbot.bench_table import run_table

    try:
        block = run_table(
            Path(args.results), Path(args.write) if args.write else None, machine_description
        )
    except (OSError, ValueError) as e:
        raise SystemExit(f"mindbot bench table: {e}") from None
    print(block)


def _bench_commands(args: argparse.Namespace) -> None:
    import asyncio

    asyncio.run(_bench_commands_run(args))


async def _bench_commands_run(args: argparse.Namespace) -> None:
    import asyncio
    from pathlib import Path

    from mindbot.bench import CloudLatencies, cloud_profile, record_json
    from mindbot.command_bench import LONG_REPLY, format_command_summary, run_command_bench
    from mindbot.runtime import MindBot

    configure_logging("WARNING")
    run = _pipeline_module(args.pipeline).run
    # The cloud profile's stand-ins; the caller's "stop" is transcribed by Whisper (the
    # Deepgram stand-in's fallback), whose time counts as the STT's share.
    latencies = CloudLatencies(stt_final=args.stt_delay)
    async with cloud_profile(latencies, reply=LONG_REPLY) as cloud:
        settings = Settings.load(
            **cloud.settings,
            stt="deepgram",
            tts="cartesia",
            memory=False,
            user_idle_secs=0,
            audio={"barge_in": args.barge_in},
        )
        bot = MindBot(settings)
        await asyncio.to_thread(bot.start)
        try:
            result = await run_command_bench(bot, run, calls=args.calls)
        finally:
            await asyncio.to_thread(bot.stop)
    print(format_command_summary(result.summary()))
    if args.json:
        record_json(Path(args.json), barge_in=args.barge_in, **result.as_dict())
        print(f"wrote {args.json}")


def _eval_emotion(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mindbot.emotion_eval import print_report, run_eval

    configure_logging("WARNING")
    print_report(run_eval(args.set, cache_dir=Path(args.cache) if args.cache else None))


def _spoken_questions(eval_file) -> list[str]:
    """The evaluation set's answerable questions, as a caller would say them in one breath."""
    from mindbot.kb.knowledge import load_eval_items

    items = load_eval_items(eval_file)
    return [
        item["question"]
        for item in items
        if item.get("expected") != "none" and "," not in item["question"]
    ]


def _open_storage():
    from mindbot.storage import SQLiteStorage

    settings = Settings.load()
    configure_logging("WARNING")
    return SQLiteStorage(settings.database_path or settings.data_dir / "mindbot.db")


def _find_user(storage, who: str):
    """A user by id (digits) or by any identity (a phone number, a client user id)."""
    from mindbot.storage import StorageError

    user = storage.get_user(int(who)) if who.isdigit() else None
    user = user or storage.find_user(who)
    if user is None:
        raise StorageError(f"No user {who!r} in {storage.path}")
    return user


def _export(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mindbot.export import render

    storage = _open_storage()
    try:
        user = _find_user(storage, args.user)
        text = render(storage.export_user(user.id), args.format)
        storage.add_event("user.exported", {"format": args.format})
        storage.add_access_audit(
            "cli", "user.exported", user_id=user.id, detail={"format": args.format}
        )
    finally:
        storage.close()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)


def _forget(args: argparse.Namespace) -> None:
    storage = _open_storage()
    try:
        user = _find_user(storage, args.user)
        storage.add_access_audit("cli", "user.erased", user_id=user.id)
        storage.erase_user(user.id)
    finally:
        storage.close()
    print("Erased everything stored about that user.")


def _bench_memory(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from mindbot.bench import run_memory_bench

    configure_logging("WARNING")
    with tempfile.TemporaryDirectory() as folder:
        result = run_memory_bench(
            Path(folder) / "bench.db",
            turns=args.turns,
            memories=args.memories,
            recalls=args.recalls,
        )
    print(
        f"{result['turns']:,} turns, {result['memories']:,} memories for the caller "
        f"(built in {result['build_secs']:.0f} s); {result['recalled']} memories recalled\n"
        f"session-start memory load: p50 {result['load_ms_p50']:.2f} ms, "
        f"p95 {result['load_ms_p95']:.2f} ms, max {result['load_ms_max']:.2f} ms"
    )


def _bench_tools(args: argparse.Namespace) -> None:
    import asyncio
    from pathlib import Path

    from mindbot.tool_bench import format_tool_summary, run_tool_bench, write_tool_json

    configure_logging("WARNING")
    result = asyncio.run(run_tool_bench(args.rounds))
    print(format_tool_summary(result.summary()))
    if args.json:
        write_tool_json(result, Path(args.json))
        print(f"wrote {args.json}")


def _kb(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from mindbot.kb import commands
    from mindbot.kb.embeddings import embedding_model
    from mindbot.kb.knowledge import KnowledgeBase

    settings = Settings.load()
    configure_logging("WARNING")
    embedder = embedding_model(
        settings.kb, openai_api_key=settings.openai_api_key, cache_dir=settings.data_dir / "models"
    )
    with tempfile.TemporaryDirectory() as scratch:
        # eval indexes its corpus into a scratch collection, never into the real one
        folder = (
            Path(scratch) if args.kb == "eval" else settings.kb.folder or settings.data_dir / "kb"
        )
        with KnowledgeBase(
            folder, collection=args.collection, settings=settings.kb, embed_model=embedder
        ) as kb:
            status = {
                "add": lambda: commands.kb_add(kb, args.sources),
                "list": lambda: commands.kb_list(kb),
                "remove": lambda: commands.kb_remove(kb, args.doc),
                "reindex": lambda: commands.kb_reindex(kb),
                "search": lambda: commands.kb_search(kb, " ".join(args.query)),
                "eval": lambda: commands.kb_eval(kb, Path(args.eval_file), Path(args.corpus)),
            }[args.kb]()
    if status:
        raise SystemExit(status)


def _bench_kb(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mindbot.bench import record_json
    from mindbot.kb.bench import format_kb_summary, run_kb_bench

    configure_logging("WARNING")
    result = run_kb_bench(Path(args.eval), Path(args.corpus), chunks=args.chunks)
    print(format_kb_summary(result))
    if args.json:
        record_json(Path(args.json), result=result.as_dict())
        print(f"wrote {args.json}")


def _keys(args: argparse.Namespace) -> None:
    from mindbot.api.auth import create_key, find_key

    storage = _open_storage()
    try:
        if args.keys == "create":
            try:
                key, record = create_key(storage, args.name, args.scopes, args.rate)
            except ValueError as e:
                raise ConfigError(str(e)) from None
            print(
                f"Created key {record.id} ({record.prefix}…) with scopes "
                f"{','.join(record.scopes)}. Keep it now: it is not shown again."
            )
            print(key)
        elif args.keys == "list":
            for k in storage.api_keys():
                state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
                rate = f"{k.rate_per_minute}/min" if k.rate_per_minute else "default rate"
                used = k.last_used_at or "never used"
                print(
                    f"{k.id}\t{k.prefix}…\t{k.name}\t{','.join(k.scopes)}\t{rate}\t{used}\t{state}"
                )
        else:
            found = find_key(storage, args.key)
            if found is None:
                raise ConfigError(f"No API key {args.key!r} (see `mindbot keys list`)")
            storage.revoke_api_key(found.id)
            print(f"Revoked key {found.id} ({found.prefix}…, {found.name}).")
    finally:
        storage.close()


def _pipelines(_args: argparse.Namespace) -> None:
    for name, module in sorted(available_pipelines().items()):
        print(f"{name}\t{module}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mindbot`` command."""
    parser = argparse.ArgumentParser(prog="mindbot", description="MindBot voice assistant.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve a pipeline over WebRTC, Daily or Twilio")
    run.add_argument("pipeline", nargs="?", default="assistant")
    run.add_argument("-t", "--transport", choices=["webrtc", "daily", "twilio"], default="webrtc")
    run.add_argument("--host", default=None, help="bind address (MINDBOT_HOST)")
    run.add_argument("--port", type=int, default=None, help="port (MINDBOT_PORT)")
    run.set_defaults(handler=_run)

    call = commands.add_parser("call", help="phone a running bot with the call simulator")
    call.add_argument("url", help="the bot's Media Streams websocket, e.g. ws://localhost:7860/ws")
    call.add_argument("utterances", nargs="*", help="what the caller says, in order")
    call.add_argument("--from-number", default="+15550100001")
    call.set_defaults(handler=_call)

    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True)
    latency = benches.add_parser("latency", help="voice-to-voice latency against bare Pipecat")
    latency.add_argument("pipeline", nargs="?", default="assistant")
    latency.add_argument("--calls", type=int, default=5, help="calls per system")
    latency.add_argument("--turns", type=int, default=2, help="questions per call")
    latency.add_argument("--temperature", type=float, default=0.0, help="LLM temperature")
    latency.add_argument(
        "--max-tokens", type=int, default=48, help="reply length cap (only shortens the calls)"
    )
    latency.add_argument("--warmup", type=int, default=1, help="unmeasured calls per system")
    latency.add_argument("--no-baseline", action="store_true", help="skip bare Pipecat")
    latency.add_argument(
        "--storage-off-too",
        action="store_true",
        help="also MindBot with storage off, in the same run (memory off for both)",
    )
    latency.add_argument(
        "--profile",
        choices=["offline", "cloud"],
        default="offline",
        help="offline: the configured services (offline by default); cloud: Deepgram, OpenAI and "
        "Cartesia stand-ins on loopback with the providers' published latencies injected",
    )
    latency.add_argument(
        "--kb-off-too",
        action="store_true",
        help="ask knowledge-base questions, and also call MindBot without the knowledge base",
    )
    latency.add_argument("--kb-corpus", default="tests/fixtures/kb/corpus")
    latency.add_argument("--kb-eval", default="tests/fixtures/kb/eval.yaml")
    latency.add_argument(
        "--scripted-llm",
        action="store_true",
        help="a scripted OpenAI-compatible LLM on loopback instead of the configured one",
    )
    latency.add_argument(
        "--llm-delay", type=float, default=0.35, help="the scripted LLM's time to first token"
    )
    latency.add_argument("--json", help="write the raw results to this file")
    latency.set_defaults(handler=_bench_latency)
    stop = benches.add_parser("commands", help='how fast "stop" silences the bot, on a call')
    stop.add_argument("pipeline", nargs="?", default="assistant")
    stop.add_argument("--calls", type=int, default=10, help="measured calls")
    stop.add_argument(
        "--barge-in",
        choices=["always", "min_words", "never"],
        default="never",
        help="never: the command alone stops the bot (the command path's own figure)",
    )
    stop.add_argument(
        "--stt-delay", type=float, default=0.15, help="the Deepgram stand-in's final delay"
    )
    stop.add_argument("--json", help="write the results to this file")
    stop.set_defaults(handler=_bench_commands)
    capacity = benches.add_parser(
        "capacity", help="ramp concurrent calls until latency degrades: sessions per core"
    )
    capacity.add_argument("--profile", choices=["cloud", "offline"], default="cloud")
    capacity.add_argument("--start", type=int, default=1, help="the first level (calls)")
    capacity.add_argument("--step", type=int, default=2, help="calls added per level")
    capacity.add_argument("--max-sessions", type=int, default=40, help="the last level at most")
    capacity.add_argument(
        "--calls-per-level", type=int, default=1, help="calls each concurrent caller places"
    )
    capacity.add_argument(
        "--turns", type=int, default=4, help="questions per call (4: every level asks each alike)"
    )
    capacity.add_argument("--systems", default="mindbot,bare", help="mindbot, bare or both")
    capacity.add_argument("--pipeline", default="assistant", help="MindBot's pipeline")
    capacity.add_argument("--json", help="write the results to this file")
    capacity.add_argument("--plot", help="draw latency against concurrent calls to this PNG")
    capacity.add_argument(
        "--short", action="store_true", help="CI: levels 1 and 2, one short call each"
    )
    capacity.set_defaults(handler=_bench_capacity)
    evals = commands.add_parser("eval", help="evaluations").add_subparsers(
        dest="eval", required=True
    )
    emotion = evals.add_parser("emotion", help="emotion detection accuracy on a labelled set")
    emotion.add_argument("--set", default=None, help="default: tests/fixtures/emotion/eval.yaml")
    emotion.add_argument(
        "--cache", default=None, help="a folder to cache the synthesized utterances in"
    )
    emotion.set_defaults(handler=_eval_emotion)
    from mindbot.evals.command import add_suite_eval

    add_suite_eval(evals)
    plot = benches.add_parser("plot", help="PNG plots of a latency run's --json results")
    plot.add_argument("results", help="the JSON written by `mindbot bench latency --json`")
    plot.add_argument("--out", default="bench-results/plots", help="folder for the PNG files")
    plot.set_defaults(handler=_bench_plot)
    from mindbot.turn_bench import add_turn_benches

    add_turn_benches(benches)
    table = benches.add_parser("table", help="the runs' headline figures as BENCHMARKS.md's table")
    table.add_argument("results", nargs="?", default="bench-results", help="folder of JSON runs")
    table.add_argument("--write", metavar="FILE", help="rewrite the table block in FILE")
    table.set_defaults(handler=_bench_table)
    from mindbot.api_load_bench import add_api_load_bench

    add_api_load_bench(benches)

    export = commands.add_parser("export", help="export everything stored about a user")
    export.add_argument("--user", required=True, help="user id, phone number or client user id")
    export.add_argument("--format", choices=["json", "md", "csv"], default="json")
    export.add_argument("--output", "-o", help="write to this file instead of stdout")
    export.set_defaults(handler=_export)

    forget = commands.add_parser("forget", help="erase everything stored about a user")
    forget.add_argument("--user", required=True, help="user id, phone number or client user id")
    forget.set_defaults(handler=_forget)

    memory = benches.add_parser("memory", help="memory load at session start, large database")
    memory.add_argument("--turns", type=int, default=1_000_000)
    memory.add_argument("--memories", type=int, default=10_000)
    memory.add_argument("--recalls", type=int, default=200)
    memory.set_defaults(handler=_bench_memory)

    kbench = benches.add_parser("kb", help="knowledge base: ingestion, hit rate, search at scale")
    kbench.add_argument("--chunks", type=int, default=50_000, help="collection size for search")
    kbench.add_argument("--eval", default="tests/fixtures/kb/eval.yaml")
    kbench.add_argument("--corpus", default="tests/fixtures/kb/corpus")
    kbench.add_argument("--json", help="write the results to this file")
    kbench.set_defaults(handler=_bench_kb)

    tools = benches.add_parser("tools", help="tool calls with injected faults, through Pipecat")
    tools.add_argument("--rounds", type=int, default=10, help="rounds of 11 scripted calls")
    tools.add_argument("--json", help="write the raw results to this file")
    tools.set_defaults(handler=_bench_tools)

    kb = commands.add_parser("kb", help="the knowledge base: add, list, remove, reindex, eval")
    kb.add_argument("--collection", default="default", help="one knowledge base per persona")
    kbs = kb.add_subparsers(dest="kb", required=True)
    add = kbs.add_parser("add", help="ingest files, folders and URLs")
    add.add_argument("sources", nargs="+", metavar="PATH|URL")
    kbs.add_parser("list", help="the documents, one a line")
    remove = kbs.add_parser("remove", help="remove a document (doc id, title or file name)")
    remove.add_argument("doc")
    kbs.add_parser("reindex", help="re-read every document; vanished files drop out")
    search = kbs.add_parser("search", help="the passages a question retrieves")
    search.add_argument("query", nargs="+")
    evaluate = kbs.add_parser("eval", help="hit@1, hit@3 and MRR on an evaluation set")
    evaluate.add_argument("eval_file", help="e.g. tests/fixtures/kb/eval.yaml")
    evaluate.add_argument("corpus", help="its documents, e.g. tests/fixtures/kb/corpus")
    kb.set_defaults(handler=_kb)

    keys = commands.add_parser("keys", help="API keys: create, list, revoke")
    keyss = keys.add_subparsers(dest="keys", required=True)
    create = keyss.add_parser("create", help="a new key (printed once)")
    create.add_argument("name", help="what the key is for, e.g. crm-sync")
    create.add_argument("--scopes", default="read", help="read, write, admin (comma-separated)")
    create.add_argument("--rate", type=int, default=None, help="requests per minute")
    keyss.add_parser("list", help="the keys, one a line (never the secrets)")
    revoke = keyss.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key", metavar="ID|PREFIX")
    keys.set_defaults(handler=_keys)
    from mindbot.analytics import add_report_command

    add_report_command(commands)

    pipelines = commands.add_parser("pipelines", help="list the pipelines")
    pipelines.set_defaults(handler=_pipelines)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mindbot`` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except MindBotError as e:
        print(f"mindbot: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
