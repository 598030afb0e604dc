"""Shared fixtures: clean settings, the offline MindBot runtime, cached caller voices."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# Nothing may reach a model hub; set before any hub-aware library is imported.
os.environ["HF_HUB_OFFLINE"] = "1"

from mindbot.config import Settings  # noqa: E402
from mindbot.logs import configure_logging  # noqa: E402

ARTIFACTS = Path(__file__).parent / ".artifacts"
VOICE_CACHE = ARTIFACTS / "caller-voices"
DATA_ROOT = Path(tempfile.mkdtemp(prefix="mindbot-tests-"))
atexit.register(shutil.rmtree, DATA_ROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """No developer's MINDBOT_* variables leak into a test."""
    for name in list(os.environ):
        if name.startswith("MINDBOT_"):
            monkeypatch.delenv(name)


def make_settings(**overrides) -> Settings:
    """Settings for a test: no .env file, quiet defaults, then ``overrides``."""
    values = {"log_level": "DEBUG", "user_idle_secs": 0, "host": "127.0.0.1", "port": 0}
    values["data_dir"] = Path(tempfile.mkdtemp(dir=DATA_ROOT))
    values.update(overrides)
    audio = values.get("audio") or {}
    if isinstance(audio, dict) and "speculative_llm" not in audio:
        # The scripted LLM stand-in answers requests in order, one scripted reply per turn;
        # a speculative request (mindbot.speculation) would take the turn's reply and, if
        # withdrawn, shift every reply after it. Speculation's own tests turn it on.
        values["audio"] = {**audio, "speculative_llm": False}
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def offline_bot():
    """A started MindBot with the whole offline stack (Whisper, SmolLM2, Piper), per run."""
    from mindbot.runtime import MindBot

    configure_logging("DEBUG")
    bot = MindBot(make_settings())
    bot.start()
    yield bot
    bot.stop()


@pytest.fixture(scope="session")
def voice_cache() -> Path:
    """Where synthesized caller utterances are kept between runs."""
    VOICE_CACHE.mkdir(parents=True, exist_ok=True)
    return VOICE_CACHE


@pytest.fixture
def warnings_logged():
    """Loguru messages at WARNING and above, as ``(level, message)``, during the test."""
    from loguru import logger

    lines: list[tuple[str, str]] = []
    sink = logger.add(
        lambda message: lines.append((message.record["level"].name, message.record["message"])),
        level="WARNING",
    )
    yield lines
    logger.remove(sink)


def mindbot(data_dir, *args):
    """Run the ``mindbot`` command as its own process, on ``data_dir``, with no MINDBOT_*
    variables but that one; returns the finished process (its output captured)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MINDBOT_")}
    env["MINDBOT_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "mindbot", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true, failing the test after ``timeout`` seconds."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
async def cloud_services():
    """The Deepgram, OpenAI and Cartesia stand-ins, and the settings that point at them.

    The Deepgram stand-in transcribes what it hears with the offline Whisper model, so the
    cloud code path carries real words end to end.
    """
    from mindbot.speech import transcribe
    from mindbot.standins import CartesiaStandIn, DeepgramStandIn, ScriptedLLMServer

    async with (
        DeepgramStandIn(transcriber=transcribe, api_key="dg-test") as deepgram,
        ScriptedLLMServer(api_key="sk-test") as llm,
        CartesiaStandIn(api_key="ca-test") as cartesia,
    ):
        settings = {
            "deepgram_api_key": "dg-test",
            "deepgram_base_url": deepgram.url,
            "openai_api_key": "sk-test",
            "llm_base_url": llm.base_url,
            "llm_model": "gpt-test",
            "cartesia_api_key": "ca-test",
            "cartesia_url": cartesia.url,
        }
        yield CloudServices(deepgram, llm, cartesia, settings)


class CloudServices:
    """The stand-ins of a cloud test and the settings overrides that use them."""

    def __init__(self, deepgram, llm, cartesia, settings):
        self.deepgram = deepgram
        self.llm = llm
        self.cartesia = cartesia
        self.settings = settings

    def bot(self, **overrides):
        """A started MindBot on the stand-ins (stop it when done)."""
        from mindbot.runtime import MindBot

        bot = MindBot(make_settings(**self.settings, **overrides))
        bot.start()
        return bot


class ServerProcess:
    """A MindBot server started as its own process (``mindbot run`` or a pipeline file)."""

    def __init__(self, args: list[str], settings: dict[str, str], port: int):
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if not k.startswith("MINDBOT_")}
        env.update({f"MINDBOT_{k.upper()}": str(v) for k, v in settings.items()})
        env.setdefault("MINDBOT_AUDIO__SPECULATIVE_LLM", "false")  # as in make_settings
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = ARTIFACTS / f"server-{port}.log"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parent.parent,
        )

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the server accepts TCP connections."""
        import asyncio
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log.read_text()[-3000:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.2)
        raise AssertionError(f"server not ready:\n{self.log.read_text()[-3000:]}")

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) by its PID.

        It waits without blocking the event loop: the stand-ins the server talks to run on it.
        """
        import asyncio
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                await asyncio.to_thread(self.process.wait, timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, timeout=5)
        self._log_file.close()


@pytest.fixture
def started():
    """Processes a test starts (the benches' servers, stand-ins, load); any still running at
    the end is stopped by its PID."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
